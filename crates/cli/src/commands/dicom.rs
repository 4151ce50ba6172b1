//! `delineate dicom write`: a NIfTI image as a DICOM MR series.

use std::path::PathBuf;

use anyhow::Result;
use delineate_dicom::{write_mr_series, Patient, SeriesWriteOptions};
use delineate_imaging::read_nifti_any;

/// DICOM series tools.
#[derive(clap::Subcommand)]
pub enum DicomCommand {
    Write(WriteArgs),
}

/// Write a NIfTI image as a DICOM MR Image Storage series (one file per
/// slice, Explicit VR Little Endian), keeping its geometry exactly, so that
/// images and an RTSTRUCT can be imported into a planning system or PACS.
///
/// Integer images are stored as they are; others are scaled to 16 bits with
/// Rescale Slope/Intercept. The folder appears only when complete.
#[derive(clap::Args)]
pub struct WriteArgs {
    /// The image (.nii/.nii.gz).
    pub image: PathBuf,
    /// The folder to create (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "DELINEATE")]
    pub patient_id: String,
    #[arg(long, default_value = "ANONYMOUS")]
    pub patient_name: String,
    #[arg(long, default_value = "delineate")]
    pub series_description: String,
}

pub fn run(cmd: &DicomCommand) -> Result<()> {
    let DicomCommand::Write(a) = cmd;
    let (vol, _) = read_nifti_any(&a.image)?;
    let opts = SeriesWriteOptions {
        patient: Patient {
            name: a.patient_name.clone(),
            id: a.patient_id.clone(),
            ..Default::default()
        },
        series_description: a.series_description.clone(),
        ..Default::default()
    };
    let meta = write_mr_series(&vol.into_f32(), &a.out, &opts)?;
    println!(
        "wrote {} ({} slices, series {})",
        a.out.display(),
        meta.slices.len(),
        meta.series_instance_uid
    );
    Ok(())
}
