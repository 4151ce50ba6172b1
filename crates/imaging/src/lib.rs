//! # delineate-imaging
//!
//! One job: hold a 3-D image together with the exact position of every voxel
//! in the patient (DICOM LPS millimetres), and do the geometric work that
//! everything downstream needs — NIfTI I/O, exact reorientation, resampling
//! (including label maps that never lose a one-voxel lesion), crop/pad,
//! connected components and binary morphology.
//!
//! No deep-learning or DICOM dependencies live here, so this crate builds
//! and tests in seconds.

pub mod any_volume;
pub mod atomic;
pub mod blobs;
pub mod components;
pub mod distance;
mod error;
pub mod geometry;
pub mod measure;
pub mod morphology;
pub mod nifti_io;
pub mod nifti_write;
mod nifti_xform;
pub mod orient;
pub mod resample;
pub mod volume;

pub use any_volume::{AnyVolume, DataType};
pub use components::{connected_components, label_components, Component, Components, Connectivity};
pub use error::{Error, IoFailure};
pub use geometry::Geometry;
pub use nifti_io::{
    read_nifti, read_nifti_any, read_nifti_any_from_memory, read_nifti_f32, read_nifti_header,
    write_nifti, write_nifti_any, NiftiInfo, NiftiWriteOptions, TransformSource,
};
pub use resample::{resample_labels, resample_linear, resample_nearest};
pub use volume::Volume;
