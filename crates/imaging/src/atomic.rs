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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".delineate-")
        .suffix(suffix)
        .tempfile_in(&dir)
        .map_err(|e| Error::io(path, "cannot create a temporary file next to", e))?;
    write(tmp.path(), tmp.as_file()).map_err(|m| Error::file(path, m))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(path, "cannot sync", e))?;
    // Temporary files are private (0600); outputs are ordinary files.
    set_mode(tmp.path(), 0o644).map_err(|e| Error::io(path, "cannot set permissions of", e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(path, "cannot rename into", e.error))?;
    Ok(())
}

/// Sets Unix permission bits (no-op elsewhere): outputs made through
/// temporary files and folders get the modes of ordinary ones.
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
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
