//! `delineate rtstruct write|read`: RT Structure Sets from and to label maps.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use delineate_dicom::rois::{labels_on_grid, roi_specs, RoiPer};
use delineate_dicom::{write_rtstruct, DicomSeries, RtStructOptions};
use delineate_imaging::{write_nifti, NiftiWriteOptions};

use crate::input::SeriesArgs;

/// RT Structure Sets: write contours for a label map, or read them back.
#[derive(clap::Subcommand)]
pub enum RtstructCommand {
    Write(WriteArgs),
    Read(ReadArgs),
}

/// Write an RTSTRUCT for a label map (NIfTI) on the grid of a DICOM series.
///
/// Every non-zero label becomes one ROI (or, with --per-lesion, every
/// 26-connected lesion). Contours are CLOSED_PLANAR polygons along voxel
/// edges in patient coordinates, one per boundary loop; the even-odd rule
/// gives back exactly the voxels of the mask (holes included). The mask
/// must lie on the reference series' grid (any axis order: it is reoriented
/// exactly when needed). The file appears only when complete.
#[derive(clap::Args)]
pub struct WriteArgs {
    /// Label map or binary mask (.nii/.nii.gz): 0 = background.
    #[arg(long)]
    pub mask: PathBuf,
    /// The DICOM series the contours are drawn on.
    #[arg(long)]
    pub reference: PathBuf,
    /// The RTSTRUCT file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// One ROI per 26-connected lesion ("Lesion 1" = largest), each with its
    /// volume and equivalent diameter in the ROI description.
    #[arg(long)]
    pub per_lesion: bool,
    /// ROI names, comma-separated, for the labels in increasing order (or
    /// the lesions in order with --per-lesion).
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// Also write a DICOM SEG (binary, one segment per ROI) to this file.
    #[arg(long, value_name = "FILE")]
    pub seg: Option<PathBuf>,
    /// RT ROI Interpreted Type of every ROI.
    #[arg(long = "type", default_value = "GTV")]
    pub interpreted_type: String,
    #[command(flatten)]
    pub series: SeriesArgs,
}

/// Read an RTSTRUCT onto its reference series' grid as a label map.
///
/// Contours are rasterised with the even-odd rule at voxel centres. Label n
/// is the n-th ROI of the file (where ROIs overlap, the later one wins); a
/// JSON file next to the output lists labels, names and voxel counts.
#[derive(clap::Args)]
pub struct ReadArgs {
    /// The RTSTRUCT file.
    pub rtstruct: PathBuf,
    /// The DICOM series it references.
    #[arg(long)]
    pub reference: PathBuf,
    /// The label map to write (.nii/.nii.gz).
    #[arg(long)]
    pub out: PathBuf,
    /// Only ROIs whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub roi: Option<String>,
    /// Only ROIs of these RT ROI Interpreted Types (comma-separated), or any.
    #[arg(long, value_name = "TYPES", default_value = "any")]
    pub roi_type: String,
    /// How the contours of one ROI on one slice combine: even-odd or union.
    #[arg(long, default_value = "even-odd", value_parser = ["even-odd", "union"])]
    pub contours: String,
    #[command(flatten)]
    pub series: SeriesArgs,
}

pub fn run(cmd: &RtstructCommand) -> Result<()> {
    match cmd {
        RtstructCommand::Write(a) => write(a),
        RtstructCommand::Read(a) => read(a),
    }
}

fn load_reference(path: &Path, series: &SeriesArgs) -> Result<DicomSeries> {
    let pb = crate::progress::bar("reading", "files");
    let s = delineate_dicom::read_series(path, &series.options(), Some(&pb))?;
    pb.finish_and_clear();
    Ok(s)
}

fn write(a: &WriteArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let reference = load_reference(&a.reference, &a.series)?;
    tracing::info!(seconds = t.elapsed().as_secs_f64(), "read reference series");
    let grid = reference.volume.geometry().clone();
    let t = std::time::Instant::now();
    let labels = labels_on_grid(&a.mask, &grid)?;
    tracing::info!(seconds = t.elapsed().as_secs_f64(), "read mask");
    let per = if a.per_lesion {
        RoiPer::Lesion
    } else {
        RoiPer::Label
    };
    let (labels, rois) = roi_specs(&labels, per, &a.names, &a.interpreted_type);
    if rois.is_empty() {
        bail!(
            "{}: the mask is empty: there is nothing to contour (no RTSTRUCT written)",
            a.mask.display()
        );
    }
    let t = std::time::Instant::now();
    write_rtstruct(
        &a.out,
        &labels,
        &grid,
        &reference.meta,
        &rois,
        &RtStructOptions::default(),
    )
    .with_context(|| format!("writing {}", a.out.display()))?;
    tracing::info!(
        seconds = t.elapsed().as_secs_f64(),
        rois = rois.len(),
        "traced and wrote the structure set"
    );
    println!("wrote {} ({} ROI(s))", a.out.display(), rois.len());
    if let Some(seg) = &a.seg {
        delineate_dicom::write_seg(seg, &labels, &grid, &reference.meta, &rois)
            .with_context(|| format!("writing {}", seg.display()))?;
        println!("wrote {} ({} segment(s))", seg.display(), rois.len());
    }
    for r in &rois {
        println!("  {:<12} label {:>3}  {}", r.name, r.label, r.description);
    }
    Ok(())
}

fn read(a: &ReadArgs) -> Result<()> {
    let reference = load_reference(&a.reference, &a.series)?;
    let grid = reference.volume.geometry().clone();
    let sel = delineate_dicom::RoiSelection::parse(
        a.roi.as_deref(),
        Some(&a.roi_type),
        a.contours.parse().map_err(anyhow::Error::msg)?,
    )
    .map_err(anyhow::Error::msg)?;
    let rt = delineate_dicom::read_rtstruct_with(
        &a.rtstruct,
        &grid,
        &reference.meta.frame_of_reference_uid,
        sel.combine,
    )?;
    let selected = rt.select(&sel, &grid, &a.rtstruct)?;
    if let Some(note) = selected.ignored_note() {
        eprintln!("note: {}: {note}", a.rtstruct.display());
    }
    for w in &rt.warnings {
        eprintln!("warning: {}: {w}", a.rtstruct.display());
    }
    let known: std::collections::BTreeSet<&str> = reference
        .meta
        .slices
        .iter()
        .map(|s| s.sop_instance_uid.as_str())
        .collect();
    let missing = rt
        .referenced_images
        .iter()
        .filter(|u| !known.contains(u.as_str()))
        .count();
    if missing > 0 {
        eprintln!(
            "warning: {}: contours reference {missing} image(s) that are not in the reference series \
             (drawn on another series of the same Frame of Reference?); they were placed by their coordinates",
            a.rtstruct.display()
        );
    }
    let labels = selected.labels;
    let name = a.out.to_string_lossy().to_string();
    let sidecar = PathBuf::from(format!(
        "{}.json",
        name.trim_end_matches(".gz").trim_end_matches(".nii")
    ));
    if selected.chosen.len() <= u16::MAX as usize {
        write_nifti(
            &a.out,
            &labels.map(|&l| l as u16),
            &NiftiWriteOptions::default(),
        )?;
    } else {
        write_nifti(&a.out, &labels, &NiftiWriteOptions::default())?;
    }
    let listing: Vec<serde_json::Value> = selected
        .chosen
        .iter()
        .enumerate()
        .map(|(n, r)| serde_json::json!({"label": n + 1, "roi_number": r.number, "name": r.name, "type": r.interpreted_type, "description": r.description, "contours": r.contours, "voxels": r.voxels}))
        .collect();
    let tmp = sidecar.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&listing)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &sidecar).with_context(|| format!("writing {}", sidecar.display()))?;
    println!("wrote {} and {}", a.out.display(), sidecar.display());
    for (n, r) in selected.chosen.iter().enumerate() {
        println!(
            "  label {:>3}  {:<16} {:>8} voxels  {} contour(s)",
            n + 1,
            r.name,
            r.voxels,
            r.contours
        );
    }
    Ok(())
}
