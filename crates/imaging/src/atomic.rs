//! Atomic output files: written to a temporary file beside the target,
//! synced, then renamed, so a reader never sees a partial file and a failed
//! write leaves nothing behind.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::Error;

/// Writes `path` through `write(temp_path, temp_file)`; `suffix` is the
/// temporary file's extension (some writers choose the format from it).
/// `write`'s error message is reported against `path`.
pub fn write_atomically(
    path: &Path,
    suffix: &str,
    write: impl FnOnce(&Path, &File) -> Result<(), String>,
) -> Result<(), Error> {
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".delineate-")
        .suffix(suffix)
        .tempfile_in(&dir)
        .map_err(|e| Error::io(path, "cannot create a temporary file next to", e))?;
    write(tmp.path(), tmp.as_file()).map_err(|m| Error::file(path, m))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(path, "cannot sync", e))?;
    // Temporary files are private (0600); outputs are ordinary files, with
    // the modes the process's umask gives them.
    ordinary_mode(tmp.path(), false)
        .map_err(|e| Error::io(path, "cannot set permissions of", e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(path, "cannot rename into", e.error))?;
    Ok(())
}

/// The folder `path` lies in: its parent, or the current folder for a bare
/// file name (whose parent is the empty path, which no system call opens).
/// Every writer that makes a temporary file beside its target, or syncs the
/// target's folder, asks this.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Gives a file (0666) or folder (0777) made through a private temporary
/// one the mode an ordinary `create` would have given it: less the process's
/// umask. A service that sets umask 077 thus gets private outputs from the
/// same writers (no-op off Unix).
pub fn ordinary_mode(path: &Path, dir: bool) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let full = if dir { 0o777 } else { 0o666 };
        let mode = full & !process_umask();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, dir);
        Ok(())
    }
}

/// The process's umask, read without changing it (`Umask:` of
/// /proc/self/status, Linux ≥ 4.7); where that cannot be read, the
/// strictest answer, 077, so that nothing is made more readable than asked.
pub fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o077)
}

/// Writes an 8-bit RGB image as PNG, atomically.
pub fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), Error> {
    write_atomically(path, ".png", |_, file| {
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| format!("cannot write PNG: {e}"))?;
        w.write_image_data(rgb)
            .map_err(|e| format!("cannot write PNG: {e}"))?;
        w.finish().map_err(|e| format!("cannot write PNG: {e}"))
    })
}
