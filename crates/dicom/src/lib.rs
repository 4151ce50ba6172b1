//! # delineate-dicom
//!
//! One job: move images and contours between delineate and the hospital's
//! DICOM world without losing a millimetre. This first part reads image
//! series: it finds the instances in a folder (recursively, any names),
//! picks the 3-D series, orders the slices along their normal, refuses
//! anything that is not one regular volume (or resamples it when asked), and
//! keeps the UIDs and patient/study attributes that RTSTRUCT writing needs.
//!
//! ```no_run
//! use delineate_dicom::{read_series, ReadOptions};
//! let series = read_series("study/".as_ref(), &ReadOptions::default(), None)?;
//! println!("{:?} voxels, {} slices", series.volume.geometry().size, series.meta.slices.len());
//! # Ok::<(), delineate_dicom::Error>(())
//! ```

mod codec_guard;
mod error;
pub mod header;
mod length_guard;
pub mod pixels;
pub mod read;
pub mod scan;
pub mod series;

pub use error::Error;
pub use header::{InstanceHeader, Patient, Study};
pub use pixels::{check_transfer_syntax, decode_into, decode_object};
pub use read::{plan_folder, read_series, DicomSeries, SeriesMeta, SliceRef};
pub use scan::{scan, ScanReport};
pub use series::{plan, select, summarize, ReadOptions, SeriesPlan, SeriesSelector, SeriesSummary};
