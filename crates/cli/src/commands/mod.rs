//! One module per subcommand.

pub mod convert;
pub mod dicom;
pub mod info;
pub mod rtstruct;
pub mod synth;
