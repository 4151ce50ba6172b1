//! The clinical pipeline as library stages with typed inputs and outputs,
//! called by the command line, the demo and (through `delineate segment`)
//! the service's workers:
//!
//! | stage | input | output |
//! |---|---|---|
//! | split | case names, [`SplitConfig`](crate::split::SplitConfig) | [`Split`](crate::split::Split), `RUN/splits.json` |
//! | prepare | [`CaseRef`](crate::data::CaseRef) | [`Case`](crate::data::Case) (cached) |
//! | train | cases, [`TrainOptions`](crate::trainer::TrainOptions) | [`TrainSummary`](crate::trainer::TrainSummary), `RUN/model.dlm` |
//! | load | a model file or the built-in one | [`LoadedModel`] |
//! | read | a DICOM folder or NIfTI file | [`ReadInput`] |
//! | predict | [`LoadedModel`], [`PredictOptions`] | [`CaseOutput`], a result folder with its [`ResultManifest`](delineate_dicom::ResultManifest) |
//! | evaluate | result folders, truths | `delineate_eval::evaluate` |
//!
//! docs/pipeline.md draws the same map for a newcomer.

pub mod input;
pub mod loaded;
pub mod predict;
pub mod train;

pub use input::{detect, read_input, InputKind, ReadInput, Source};
pub use loaded::{load_model, LoadedModel, StageNet, SHIPPED_MODEL, SHIPPED_MODEL_NAME};
pub use predict::{batch_cases, predict_case, CaseOutput, PredictOptions};
