//! `delineate review`: the review page for one segmented case.

use std::path::PathBuf;

use anyhow::Result;

/// Review proposed lesions in a browser: accept or reject each, export the
/// accepted ones as an RT Structure Set.
///
/// CASE_DIR is an output folder of `delineate segment` (mask.nii.gz,
/// lesions.json). The image is the input recorded in lesions.json, or
/// --image. Prints a link (127.0.0.1 only, with a one-time token); the page
/// shows axial, coronal and sagittal views with the contours (scroll:
/// wheel; zoom: Ctrl+wheel or +/-; window/level: right-drag), the lesions
/// by confidence, and keys for triage: j/k or arrows to move, a accept,
/// r reject, e export. Decisions are saved to CASE_DIR/review.json and
/// logged in CASE_DIR/review-audit.jsonl; the export is
/// CASE_DIR/reviewed/rtstruct.dcm (DICOM input only). The same page is
/// served per job by `delineate serve` (docs/review.md).
#[derive(clap::Args)]
pub struct ReviewArgs {
    /// A `delineate segment` output folder.
    pub case_dir: PathBuf,
    /// The image (DICOM folder or NIfTI file) the case was segmented from.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Who reviews: recorded with every decision and in the exported
    /// structure set. Default: the login name ($USER).
    #[arg(long)]
    pub reviewer: Option<String>,
}

pub fn run(a: &ReviewArgs) -> Result<()> {
    let reviewer = a
        .reviewer
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("--reviewer: who reviews? ($USER is not set)"))?;
    Ok(delineate_service::run_review(
        &a.case_dir,
        a.image.as_deref(),
        a.port,
        &reviewer,
    )?)
}
