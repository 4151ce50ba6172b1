//! Files that are on disk before we say so: write, fsync the file, rename,
//! fsync the folder. A C-STORE success is only answered after this.

//!
//! A bare file name (`users.toml`) lies in the current folder: its parent
//! is the empty path, which no system call opens, so every folder here comes
//! from [`parent_dir`].

use std::io::Write;
use std::path::Path;

use delineate_imaging::atomic::parent_dir;

use crate::Error;

/// Writes `bytes` to a temporary file in `dir` and fsyncs it; returns the
/// kept temporary path (rename it into place with [`rename_durably`]).
pub fn spool(dir: &Path, bytes: &[u8]) -> Result<std::path::PathBuf, Error> {
    let mut f = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "create a temporary file in", e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io(f.path(), "write", e))?;
    f.as_file()
        .sync_all()
        .map_err(|e| Error::io(f.path(), "sync", e))?;
    let (_, p) = f
        .keep()
        .map_err(|e| Error::io(dir, "keep a temporary file in", e.error))?;
    Ok(p)
}

/// Renames and fsyncs the target's folder, so the new name survives a crash.
/// A failure of that last sync is [`Error::NotSynced`]: the file is in
/// place by then.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, "rename into place", e))?;
    sync_dir(&parent_dir(to)).map_err(|e| match e {
        Error::Io { source, .. } => Error::NotSynced {
            path: to.to_path_buf(),
            source,
        },
        other => other,
    })
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "sync the folder", e))
}

/// Writes a whole file durably (temporary file, fsync, rename, fsync
/// folder). Before the rename nothing has changed at `path`; an error
/// after it is [`Error::NotSynced`].
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = spool(&parent_dir(path), bytes)?;
    if let Err(e) = rename_durably(&tmp, path) {
        if !matches!(e, Error::NotSynced { .. }) {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e);
    }
    Ok(())
}

/// Makes `path` readable by its owner only (0600 for a file, 0700 for a
/// folder): received series and results are patient data.
pub fn private(path: &Path, dir: bool) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if dir { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, "set the permissions of", e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, dir);
    Ok(())
}

/// [`private`] for a folder and everything in it (what a `delineate
/// segment` process wrote with its own modes); errors are logged, not fatal.
pub fn private_tree(dir: &Path) {
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if let Err(err) = private(e.path(), e.file_type().is_dir()) {
            tracing::warn!("{err}");
        }
    }
}

/// A file name from a UID or identifier sent by a peer: only `[0-9A-Za-z.-]`
/// survive, so nothing a sender writes can leave the folder.
pub fn safe_file_name(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let t = t.trim_start_matches('.');
    if t.is_empty() {
        "unnamed".into()
    } else {
        t.chars().take(128).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape() {
        assert_eq!(safe_file_name("1.2.840.10008"), "1.2.840.10008");
        assert_eq!(safe_file_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_name(".."), "unnamed");
        assert_eq!(safe_file_name(""), "unnamed");
    }
}
