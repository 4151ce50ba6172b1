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

/// An operating-system error met while trying to `what` to `path`, with
/// its cause kept: the I/O error that the model and evaluation crates wrap
/// (one type, so that each states the operation and the file the same way).
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot {what}", path.display())]
pub struct IoFailure {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoFailure {
    /// Maps an I/O error on `path`, met while trying to `what`.
    pub fn on<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
