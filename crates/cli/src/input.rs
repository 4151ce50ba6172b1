//! Recognising and loading an input image: a NIfTI file or a DICOM folder.

use std::path::Path;

use anyhow::{bail, Context, Result};
use delineate_dicom::{ReadOptions, SeriesSelector};
pub use delineate_model::pipeline::{detect, InputKind, Source};
use delineate_model::pipeline::{read_input, ReadInput};

/// Options that choose and check a DICOM series.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SeriesArgs {
    /// DICOM: read the series with this SeriesInstanceUID.
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// DICOM: read the one series whose description contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT", conflicts_with = "series")]
    pub series_description: Option<String>,
    /// DICOM: resample missing or unevenly spaced slices to the median spacing
    /// instead of failing.
    #[arg(long)]
    pub allow_irregular_spacing: bool,
    /// DICOM: resample a gantry-tilted (sheared) stack onto an orthogonal grid
    /// instead of failing.
    #[arg(long)]
    pub allow_tilt: bool,
    /// DICOM: ignore files that start like DICOM but cannot be parsed.
    #[arg(long)]
    pub skip_unreadable: bool,
}

impl SeriesArgs {
    pub fn options(&self) -> ReadOptions {
        let selector = match (&self.series, &self.series_description) {
            (Some(uid), _) => SeriesSelector::Uid(uid.clone()),
            (None, Some(d)) => SeriesSelector::Description(d.clone()),
            _ => SeriesSelector::Auto,
        };
        ReadOptions {
            selector,
            allow_irregular_spacing: self.allow_irregular_spacing,
            allow_tilt: self.allow_tilt,
            skip_unreadable: self.skip_unreadable,
        }
    }
}

/// Reads a NIfTI file or the chosen DICOM series, with a progress bar.
pub fn load(path: &Path, series: &SeriesArgs) -> Result<ReadInput> {
    let pb = crate::progress::bar("reading", "files");
    let r = read_input(path, &series.options(), Some(&pb))?;
    pb.finish_and_clear();
    Ok(r)
}

/// Creates an output folder that must not exist yet or be empty.
pub fn fresh_output_dir(dir: &Path) -> Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{}: the output folder exists and is not empty",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))
}

/// Which ROIs of a structure set are lesions (`train`, `evaluate`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RoiArgs {
    /// Structure sets: ROIs whose name matches this regular expression
    /// are lesions (`(?i)` for any case). With it, any interpreted type
    /// unless --roi-type is given too.
    #[arg(long, value_name = "REGEX")]
    pub roi: Option<String>,
    /// Structure sets: RT ROI Interpreted Types that are lesions,
    /// comma-separated, or `any`. Default: GTV (BODY, organs at risk,
    /// PTVs and the rest are listed and ignored).
    #[arg(long, value_name = "TYPES")]
    pub roi_type: Option<String>,
    /// How the contours of one ROI on one slice combine: even-odd (a
    /// contour inside another is a hole; DICOM's intent) or union.
    #[arg(long, default_value = "even-odd", value_parser = ["even-odd", "union"])]
    pub contours: String,
}

impl RoiArgs {
    pub fn selection(&self) -> Result<delineate_dicom::RoiSelection> {
        let combine = self
            .contours
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--contours: {e}"))?;
        delineate_dicom::RoiSelection::parse(self.roi.as_deref(), self.roi_type.as_deref(), combine)
            .map_err(|e| anyhow::anyhow!("--roi/--roi-type: {e}"))
    }
}
