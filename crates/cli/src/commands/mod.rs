//! One module per subcommand.

pub mod candidates;
pub mod convert;
pub mod curves;
pub mod demo;
pub mod dicom;
pub mod evaluate;
pub mod export;
pub mod info;
pub mod model;
pub mod review;
pub mod rtstruct;
pub mod segment;
pub mod serve;
pub mod study;
pub mod synth;
pub mod train;
pub mod user;
