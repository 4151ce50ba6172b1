//! Errors of the imaging crate. File errors always carry the path.

use std::path::{Path, PathBuf};

/// An imaging error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A grid or geometry is invalid or two grids do not fit together.
    #[error("{0}")]
    Geometry(String),
    /// A file is unreadable or malformed.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// An operating-system error while doing something to a file.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A problem with the content of `path`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: &Path, action: &str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            action: action.to_string(),
            source,
        }
    }
}
