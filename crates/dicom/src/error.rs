//! Errors of the DICOM crate. Every message names the file or folder.

use std::path::{Path, PathBuf};

/// A DICOM error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One file is malformed or unsupported.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// An operating-system error on a path.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// The slices of a series do not form one regular volume, or the
    /// folder does not hold the series asked for. The message lists the
    /// files or candidates involved.
    #[error("{}: {message}", path.display())]
    Series { path: PathBuf, message: String },
    /// A geometry or volume error from the imaging crate.
    #[error(transparent)]
    Imaging(#[from] delineate_imaging::Error),
}

impl Error {
    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn series(path: &Path, message: impl Into<String>) -> Self {
        Self::Series {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, action: &str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            action: action.to_string(),
            source,
        }
    }
}
