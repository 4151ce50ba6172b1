//! Reading a DICOM image series into a [`Volume`]: scan, select, plan,
//! then decode every slice in parallel straight into the stack (see
//! [`crate::pixels`] for decoding and the transfer syntaxes).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use delineate_imaging::{resample_linear, Volume};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use crate::header::{Patient, Study};
use crate::scan::{scan, ScanReport};
use crate::series::{plan, select, ReadOptions, SeriesPlan};
use crate::Error;

/// One source instance of the volume, in slice order.
#[derive(Clone, Debug, Serialize)]
pub struct SliceRef {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub image_position: [f64; 3],
    /// Position along the slice normal (mm).
    pub position_mm: f64,
    pub instance_number: Option<i64>,
    /// The frame (0-based) when the image is one frame of a multi-frame
    /// instance (Enhanced MR).
    pub frame: Option<u32>,
}

/// Everything besides the voxels that later steps (RTSTRUCT, SEG, reports)
/// need from the source series.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesMeta {
    pub patient: Patient,
    pub study: Study,
    pub series_instance_uid: String,
    pub series_description: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub manufacturer: String,
    pub frame_of_reference_uid: String,
    pub sop_class_uid: String,
    /// Source instances in slice order.
    pub slices: Vec<SliceRef>,
    /// True when voxel slice k is instance `slices[k]` (no resampling).
    pub slices_are_instances: bool,
    /// Transfer syntaxes met, by name.
    pub transfer_syntaxes: Vec<String>,
    /// All stored values are integers after rescaling (slope 1, integral
    /// intercept), so an integer output type loses nothing.
    pub integer_valued: bool,
    /// Non-fatal findings (duplicates dropped, resampling done, ...).
    pub warnings: Vec<String>,
}

/// A series read into memory.
#[derive(Clone, Debug)]
pub struct DicomSeries {
    pub volume: Volume<f32>,
    pub meta: SeriesMeta,
}

/// Scans `root`, chooses the series and plans it, without decoding pixels.
pub fn plan_folder(
    root: &Path,
    opts: &ReadOptions,
    progress: Option<&ProgressBar>,
) -> Result<(ScanReport, SeriesPlan), Error> {
    let report = scan(root, progress)?;
    let chosen = select(&report, opts)?;
    let p = plan(root, &chosen, opts)?;
    Ok((report, p))
}

/// Reads the chosen series of `root` into a volume.
pub fn read_series(
    root: &Path,
    opts: &ReadOptions,
    progress: Option<&ProgressBar>,
) -> Result<DicomSeries, Error> {
    let t = std::time::Instant::now();
    let (report, p) = plan_folder(root, opts, progress)?;
    tracing::info!(
        seconds = t.elapsed().as_secs_f64(),
        files = report.instances.len(),
        "scanned and planned"
    );
    let t = std::time::Instant::now();
    let mut warnings = p.warnings.clone();
    if opts.skip_unreadable {
        for (path, m) in &report.unreadable {
            warnings.push(format!("skipped unreadable file {}: {m}", path.display()));
        }
    }
    for h in &p.slices {
        crate::pixels::check_transfer_syntax(h)?;
        crate::pixels::check_photometric(h, &mut warnings)?;
    }
    if let Some(pb) = progress {
        pb.set_position(0);
        pb.set_length(p.slices.len() as u64);
    }
    let [nx, ny, _] = p.stack_geometry.size;
    // Multi-frame instances are parsed once; their frames decode from it.
    let mut multi = std::collections::HashMap::new();
    for h in p.slices.iter().filter(|h| h.frame.is_some()) {
        if !multi.contains_key(&h.path) {
            multi.insert(h.path.clone(), crate::header::open_full(&h.path)?);
        }
    }
    // Each slice is decoded straight into its place in the stack.
    let mut stack = vec![0.0f32; nx * ny * p.slices.len()];
    stack
        .par_chunks_mut(nx * ny)
        .zip(p.slices.par_iter())
        .try_for_each(|(out, h)| {
            match (h.frame, multi.get(&h.path)) {
                (Some(k), Some(obj)) => {
                    crate::pixels::decode_frame_into(obj, &h.path, k, nx, ny, out)?
                }
                _ => crate::pixels::decode_file_into(h, nx, ny, out)?,
            }
            if let Some(pb) = progress {
                pb.inc(1);
            }
            Ok::<(), Error>(())
        })?;
    tracing::info!(
        seconds = t.elapsed().as_secs_f64(),
        slices = p.slices.len(),
        "decoded pixel data"
    );
    let volume = assemble(&p, stack)?;
    let first = &p.slices[0];
    let ts: BTreeSet<String> = p.slices.iter().map(|h| h.transfer_syntax_name()).collect();
    let integer_valued = p
        .slices
        .iter()
        .all(|h| h.rescale_slope == 1.0 && h.rescale_intercept.fract() == 0.0)
        && p.slices_are_instances();
    let meta = SeriesMeta {
        patient: first.patient.clone(),
        study: first.study.clone(),
        series_instance_uid: first.series_instance_uid.clone(),
        series_description: first.series_description.clone(),
        series_number: first.series_number,
        modality: first.modality.clone(),
        manufacturer: first.manufacturer.clone(),
        frame_of_reference_uid: first.frame_of_reference_uid.clone(),
        sop_class_uid: first.sop_class_uid.clone(),
        slices: p
            .slices
            .iter()
            .zip(&p.positions)
            .map(|(h, pos)| SliceRef {
                path: h.path.clone(),
                sop_class_uid: h.sop_class_uid.clone(),
                sop_instance_uid: h.sop_instance_uid.clone(),
                image_position: h.image_position.unwrap_or_default(),
                position_mm: *pos,
                instance_number: h.instance_number,
                frame: h.frame,
            })
            .collect(),
        slices_are_instances: p.slices_are_instances(),
        transfer_syntaxes: ts.into_iter().collect(),
        integer_valued,
        warnings,
    };
    Ok(DicomSeries { volume, meta })
}

/// Stacks decoded slices into the planned volume, resampling when the plan
/// says so.
fn assemble(p: &SeriesPlan, decoded: Vec<f32>) -> Result<Volume<f32>, Error> {
    let g = &p.stack_geometry;
    let plane = g.size[0] * g.size[1];
    let data = if p.resample_spacing {
        let mut data = vec![0.0f32; g.len()];
        // Linear interpolation along the normal between bracketing slices.
        let step = p.slice_spacing;
        let mut lower = 0usize;
        for (m, out) in data.chunks_mut(plane).enumerate() {
            let pos = p.positions[0] + m as f64 * step;
            while lower + 2 < p.positions.len() && p.positions[lower + 1] <= pos {
                lower += 1;
            }
            let (a, b) = (p.positions[lower], p.positions[lower + 1]);
            let t = ((pos - a) / (b - a)).clamp(0.0, 1.0) as f32;
            let sa = &decoded[lower * plane..(lower + 1) * plane];
            let sb = &decoded[(lower + 1) * plane..(lower + 2) * plane];
            for ((o, x), y) in out.iter_mut().zip(sa).zip(sb) {
                *o = x * (1.0 - t) + y * t;
            }
        }
        data
    } else {
        decoded
    };
    let stack = Volume::from_vec(g.clone(), data)?;
    if p.tilt_degrees.is_some() {
        let fill = stack
            .as_slice()
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        return Ok(resample_linear(&stack, &p.geometry, fill)?);
    }
    Ok(stack)
}
