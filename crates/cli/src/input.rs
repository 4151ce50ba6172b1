//! Recognising and loading an input image: a NIfTI file or a DICOM folder.

use std::path::Path;

use anyhow::{bail, Context, Result};
use delineate_dicom::{ReadOptions, SeriesMeta, SeriesSelector};
use delineate_imaging::{read_nifti_any, AnyVolume, NiftiInfo};

/// What kind of input a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Nifti,
    Dicom,
}

/// Decides from the path and the first bytes, never from the name alone
/// when the content says otherwise.
pub fn detect(path: &Path) -> Result<InputKind> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.is_dir() {
        return Ok(InputKind::Dicom);
    }
    if delineate_dicom::header::has_dicm_magic(path)? {
        return Ok(InputKind::Dicom);
    }
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") || name.ends_with(".gz") {
        return Ok(InputKind::Nifti);
    }
    let mut head = [0u8; 4];
    let n = std::io::Read::read(&mut std::fs::File::open(path)?, &mut head).unwrap_or(0);
    if n == 4
        && (head[..2] == [0x1f, 0x8b]
            || i32::from_le_bytes(head) == 348
            || i32::from_be_bytes(head) == 348)
    {
        return Ok(InputKind::Nifti);
    }
    bail!(
        "{}: neither a NIfTI file (.nii, .nii.gz) nor a DICOM file or folder",
        path.display()
    )
}

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

/// Where a loaded volume came from.
pub enum Source {
    Nifti(NiftiInfo),
    Dicom(Box<SeriesMeta>),
}

/// A loaded input.
pub struct Loaded {
    /// Float32 for DICOM (rescaled values); the stored type for NIfTI.
    pub volume: AnyVolume,
    pub source: Source,
}

/// Loads a NIfTI file or the chosen DICOM series.
pub fn load(path: &Path, series: &SeriesArgs) -> Result<Loaded> {
    match detect(path)? {
        InputKind::Nifti => {
            let (volume, info) = read_nifti_any(path)?;
            Ok(Loaded {
                volume,
                source: Source::Nifti(info),
            })
        }
        InputKind::Dicom => {
            let pb = crate::progress::bar("reading", "files");
            let s = delineate_dicom::read_series(path, &series.options(), Some(&pb))?;
            pb.finish_and_clear();
            Ok(Loaded {
                volume: AnyVolume::Float32(s.volume),
                source: Source::Dicom(Box::new(s.meta)),
            })
        }
    }
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
