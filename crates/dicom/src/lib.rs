//! # delineate-dicom
//!
//! One job: move images and contours between delineate and the hospital's
//! DICOM world without losing a millimetre.
//!
//! * Reading image series: find the instances in a folder (recursively, any
//!   names), pick the 3-D series, order the slices along their normal,
//!   refuse anything that is not one regular volume (or resample it when
//!   asked), and keep the UIDs and patient/study attributes.
//! * RT Structure Sets: write contours traced on voxel edges, read them back
//!   with the even-odd rule (`rtstruct_write`, `rtstruct_read`, `contour`).
//! * Which ROIs of a planning system's structure set are lesions
//!   (`roi_select`), and what a delivered structure set says about its
//!   provenance: unreviewed AI draft or reviewed (`provenance`).
//! * DICOM SEG writing, binary, one segment per ROI (`seg_write`).
//! * MR acquisition attributes for routing (`acquisition`).
//! * Writing a volume as an MR image series (`series_write`).
//!
//! ```no_run
//! use delineate_dicom::{read_series, ReadOptions};
//! let series = read_series("study/".as_ref(), &ReadOptions::default(), None)?;
//! println!("{:?} voxels, {} slices", series.volume.geometry().size, series.meta.slices.len());
//! # Ok::<(), delineate_dicom::Error>(())
//! ```

pub mod acquisition;
pub mod build;
mod codec_guard;
pub mod contour;
mod error;
pub mod header;
mod length_guard;
pub mod manifest;
pub mod multiframe;
pub mod pixels;
pub mod provenance;
pub mod read;
pub mod roi_select;
pub mod rois;
pub mod rtstruct_read;
pub mod rtstruct_write;
pub mod scan;
pub mod seg_write;
pub mod series;
pub mod series_write;

pub use acquisition::Acquisition;
pub use error::Error;
pub use header::{InstanceHeader, Patient, Study};
pub use manifest::ResultManifest;
pub use pixels::{check_transfer_syntax, decode_into, decode_object};
pub use provenance::{LesionSummary, ModelId, Provenance};
pub use read::{plan_folder, read_series, DicomSeries, SeriesMeta, SliceRef};
pub use roi_select::{Combine, RoiSelection, Selected};
pub use rtstruct_read::{read_rtstruct, read_rtstruct_with, RoiInfo, RtStructMasks};
pub use rtstruct_write::{
    build_rtstruct, check_uid_root, write_rtstruct, FixedUids, RoiSpec, RtStructOptions,
};
pub use scan::{scan, ScanReport};
pub use seg_write::{build_seg, write_seg};
pub use series::{plan, select, summarize, ReadOptions, SeriesPlan, SeriesSelector, SeriesSummary};
pub use series_write::{write_mr_series, SeriesWriteOptions};
