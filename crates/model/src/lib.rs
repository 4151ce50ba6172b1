//! # delineate-model
//!
//! The learning part of the paper: networks, losses and patch sampling,
//! generic over burn backends (`Flex` on CPU, `Cuda` on GPU). The only crate
//! that depends on burn.

pub mod candidates;
pub mod classifier;
pub mod contract;
pub mod data;
pub mod deepmedic;
pub mod engine;
pub mod fast;
pub mod infer;
pub mod intracranial;
pub mod lesion_features;
pub mod losses;
pub mod mining;
pub mod modelfile;
pub mod network;
pub mod onnx;
pub mod pipeline;
pub mod result;
pub mod sampling;
pub mod second_stage;
pub mod segment;
pub mod split;
pub mod train;
pub mod trainer;
pub mod unet;
pub mod validate;
pub mod vnet;

/// The backends: `Flex` on CPU; `Cuda` with the `cuda` feature.
pub mod backend {
    pub use burn::tensor::backend::{AutodiffBackend, Backend};
    pub type Cpu = burn::backend::Flex;
    pub type CpuTrain = burn::backend::Autodiff<Cpu>;
    #[cfg(feature = "cuda")]
    pub type Gpu = burn::backend::Cuda;
    #[cfg(feature = "cuda")]
    pub type GpuTrain = burn::backend::Autodiff<Gpu>;
}

/// Errors name the file or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Imaging(#[from] delineate_imaging::Error),
    #[error(transparent)]
    Dicom(#[from] delineate_dicom::Error),
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] delineate_imaging::IoFailure),
    /// A step on one case or file failed; the cause says why.
    #[error("{}: {what}", path.display())]
    Case {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// A JSON file is not what it should be.
    #[error("{}: not a valid {what}", path.display())]
    Json {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
