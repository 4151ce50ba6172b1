//! # delineate-synth
//!
//! Synthetic radiosurgery cases: metastases, meningiomas and vestibular
//! schwannomas, with the enhancing structures that mimic them, inserted
//! into a real brain MRI (Colin27) under a random smooth deformation, and
//! scanned onto a realistic grid with bias field and Rician noise. Every
//! case comes with an instance-labelled truth mask on the image grid and a
//! lesion list. The same seed and version give byte-identical files.
//!
//! Stages, in order: [`template`] (anatomy and tissue classes) →
//! [`deform`] (this case's brain) → [`lesions`] and [`lookalikes`] (what
//! enhances) → [`acquire`] (the scanner) → [`output`] and [`preview`];
//! [`dataset`] writes many cases and their manifest.

pub mod acquire;
pub mod backgrounds;
pub mod case;
pub mod dataset;
pub mod deform;
pub mod lesions;
pub mod lookalikes;
pub mod output;
pub mod params;
mod phantom;
pub mod preview;
pub mod randomise;
pub mod sample;
pub mod shapes;
pub mod template;

pub use case::{case_seed, generate_case, CaseRecord, LesionRecord, SynthCase};
pub use output::{write_case, Manifest};
pub use params::{GridSpec, Kind, MetCount, SynthParams};
pub use template::{Template, TemplateSource};

use std::path::Path;

/// Errors name the file or the parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Imaging(#[from] delineate_imaging::Error),
    #[error(transparent)]
    Dicom(#[from] delineate_dicom::Error),
    #[error("{0}")]
    Input(String),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Version written into manifests; with the seed it fixes the output.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
