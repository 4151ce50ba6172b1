//! Reading a DICOM image series into a [`Volume`]: scan, select, plan,
//! then decode every slice in parallel (rescale slope/intercept applied,
//! signed and unsigned 8/16-bit data).
//!
//! Transfer syntaxes: implicit and explicit VR little endian, explicit VR
//! big endian, deflated explicit VR little endian, and — decoded in pure
//! Rust by dicom-pixeldata — JPEG baseline, extended and lossless, and RLE
//! lossless. JPEG-LS, JPEG 2000, HTJ2K and JPEG XL are refused with an
//! error naming the transfer syntax (they would need C/C++ codecs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use delineate_imaging::{resample_linear, Volume};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use crate::header::{open_full, transfer_syntax_name, InstanceHeader, Patient, Study};
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
    tracing::info!(seconds = t.elapsed().as_secs_f64(), files = report.instances.len(), "scanned and planned");
    let t = std::time::Instant::now();
    let mut warnings = p.warnings.clone();
    if opts.skip_unreadable {
        for (path, m) in &report.unreadable {
            warnings.push(format!("skipped unreadable file {}: {m}", path.display()));
        }
    }
    for h in &p.slices {
        check_transfer_syntax(h)?;
        check_photometric(h, &mut warnings)?;
    }
    if let Some(pb) = progress {
        pb.set_position(0);
        pb.set_length(p.slices.len() as u64);
    }
    let [nx, ny, _] = p.stack_geometry.size;
    // Each slice is decoded straight into its place in the stack.
    let mut stack = vec![0.0f32; nx * ny * p.slices.len()];
    stack
        .par_chunks_mut(nx * ny)
        .zip(p.slices.par_iter())
        .try_for_each(|(out, h)| {
            let v = decode_slice(h, nx, ny)?;
            out.copy_from_slice(&v);
            if let Some(pb) = progress {
                pb.inc(1);
            }
            Ok::<(), Error>(())
        })?;
    tracing::info!(seconds = t.elapsed().as_secs_f64(), slices = p.slices.len(), "decoded pixel data");
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
            })
            .collect(),
        slices_are_instances: p.slices_are_instances(),
        transfer_syntaxes: ts.into_iter().collect(),
        integer_valued,
        warnings,
    };
    Ok(DicomSeries { volume, meta })
}

/// Refuses transfer syntaxes whose pixel data dicom-rs cannot decode here.
pub fn check_transfer_syntax(h: &InstanceHeader) -> Result<(), Error> {
    let uid = h.transfer_syntax_uid.as_str();
    match TransferSyntaxRegistry.get(uid) {
        None => Err(Error::file(&h.path, format!("unknown transfer syntax {uid}"))),
        Some(ts) if !ts.can_decode_all() => Err(Error::file(
            &h.path,
            format!(
                "transfer syntax {} ({uid}) cannot be decoded by delineate (no pure-Rust codec); \
                 decompress the series first, e.g. with `gdcmconv --raw` or dcmtk's dcmdjpls/dcmdjp2k",
                ts.name()
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn check_photometric(h: &InstanceHeader, warnings: &mut Vec<String>) -> Result<(), Error> {
    match h.photometric_interpretation.as_str() {
        "MONOCHROME2" | "" => Ok(()),
        "MONOCHROME1" => {
            if !warnings.iter().any(|w| w.contains("MONOCHROME1")) {
                warnings.push("MONOCHROME1 images: values are kept as stored (display inversion is not applied)".into());
            }
            Ok(())
        }
        other => Err(Error::file(&h.path, format!("photometric interpretation {other}: only greyscale (MONOCHROME1/2) images are read"))),
    }
}

/// Decodes one slice to `nx·ny` float32 values (modality rescale applied).
fn decode_slice(h: &InstanceHeader, nx: usize, ny: usize) -> Result<Vec<f32>, Error> {
    let obj = open_full(&h.path)?;
    decode_object(&obj, &h.path, nx, ny)
}

/// Decodes the first frame of a parsed object, checking its size.
pub fn decode_object(
    obj: &dicom_object::DefaultDicomObject,
    path: &Path,
    nx: usize,
    ny: usize,
) -> Result<Vec<f32>, Error> {
    let ts = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    let h = crate::header::extract(obj, path);
    let samples = h.samples_per_pixel.unwrap_or(1) as usize;
    let bits = h.bits_allocated.unwrap_or(0) as usize;
    crate::rle_guard::check(obj, ny, nx, samples, bits).map_err(|m| Error::file(path, m))?;
    // Frame 0 only: series are single-frame, and this bounds the work.
    let pd = obj.decode_pixel_data_frame(0).map_err(|e| {
        Error::file(
            path,
            format!(
                "cannot decode pixel data ({}): {e}",
                transfer_syntax_name(ts)
            ),
        )
    })?;
    if pd.rows() as usize != ny || pd.columns() as usize != nx {
        return Err(Error::file(
            path,
            format!(
                "pixel data is {}x{}, expected {ny}x{nx}",
                pd.rows(),
                pd.columns()
            ),
        ));
    }
    if pd.samples_per_pixel() != 1 {
        return Err(Error::file(
            path,
            "colour pixel data: only greyscale images are read",
        ));
    }
    let v: Vec<f32> = pd
        .to_vec_frame(0)
        .map_err(|e| Error::file(path, format!("cannot convert pixel data: {e}")))?;
    if v.len() != nx * ny {
        return Err(Error::file(
            path,
            format!("pixel data holds {} values, expected {}", v.len(), nx * ny),
        ));
    }
    Ok(v)
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
