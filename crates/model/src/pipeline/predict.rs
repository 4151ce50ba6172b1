//! Predict: one input (a DICOM series or NIfTI file) through a loaded
//! model into one whole result folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use delineate_dicom::ReadOptions;

use super::input::{read_input, Source};
use super::loaded::LoadedModel;
use crate::backend::Backend;
use crate::intracranial::IntracranialReport;
use crate::result::{check_out, write_result, ResultInfo, ResultOptions};
use crate::segment::{segment_staged, Lesion, SegmentOptions};
use crate::Error;

/// How a case is predicted and written.
#[derive(Clone, Debug, Default)]
pub struct PredictOptions {
    pub segment: SegmentOptions,
    /// Which DICOM series, and what irregularities to accept.
    pub series: ReadOptions,
    /// Also write a DICOM SEG (DICOM input, or `dicom_out`).
    pub seg: bool,
    /// A NIfTI input is also written as a DICOM series for the RTSTRUCT.
    pub dicom_out: bool,
    /// UID root of the structure set (`None`: a new one) and its revision.
    pub uid_root: Option<String>,
    pub revision: u32,
    /// Replace a result folder that holds something.
    pub force: bool,
}

/// What one case produced.
pub struct CaseOutput {
    pub name: String,
    pub out: PathBuf,
    pub lesions: Vec<Lesion>,
    /// What the intracranial stage did, when it ran.
    pub intracranial: Option<IntracranialReport>,
    /// Seconds per stage, reading and writing included.
    pub timings: Vec<(String, f64)>,
    pub seconds: f64,
    pub rtstruct: Option<PathBuf>,
    /// The segmentation's warnings (also in the result's manifest).
    pub warnings: Vec<String>,
    /// DICOM output was asked for but no lesion was found: no structure
    /// set (planning systems refuse empty ones).
    pub no_rtstruct: bool,
}

/// Segments `input` (named `name`) with `model` into the result folder
/// `out`, whose files appear together at the end or not at all.
/// `read_progress` counts DICOM files; `progress` gets (done, total)
/// windows.
pub fn predict_case<B: Backend>(
    model: &LoadedModel<B>,
    name: &str,
    input: &Path,
    out: &Path,
    opts: &PredictOptions,
    read_progress: Option<&indicatif::ProgressBar>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CaseOutput, Error> {
    let t0 = Instant::now();
    if let Some(r) = &opts.uid_root {
        delineate_dicom::check_uid_root(r).map_err(|e| Error::Input(format!("--uid-root: {e}")))?;
    }
    let loaded = read_input(input, &opts.series, read_progress)?;
    let mut timings = vec![("read".to_string(), t0.elapsed().as_secs_f64())];
    let (image, meta) = match loaded.source {
        Source::Dicom(m) => (loaded.volume.into_f32(), Some(*m)),
        Source::Nifti(_) => (loaded.volume.into_f32(), None),
    };
    if meta.is_none() && opts.seg && !opts.dicom_out {
        return Err(Error::Input(
            "--seg: a NIfTI input needs --dicom-out (a DICOM SEG references a DICOM series)".into(),
        ));
    }
    check_out(out, opts.force)?;
    let dicom_output = meta.is_some() || opts.dicom_out;
    let engines = model.engines();
    let seg = segment_staged(
        engines.lesion.as_ref(),
        &model.info,
        model.stages(&engines),
        &image,
        &opts.segment,
        progress,
    )
    .map_err(|e| Error::Case {
        what: "segmenting",
        path: input.to_path_buf(),
        source: Box::new(e),
    })?;
    for (s, secs) in &seg.timings {
        tracing::info!(stage = s, seconds = secs, "segment");
        timings.push((s.to_string(), *secs));
    }
    let t = Instant::now();
    let info = ResultInfo {
        name,
        input_path: input,
        model: &model.id,
        engine: model.engine(),
        model_info: &model.info,
        tta: opts.segment.mirror,
    };
    let ropts = ResultOptions {
        seg: opts.seg,
        dicom_out: opts.dicom_out,
        uid_root: opts
            .uid_root
            .clone()
            .unwrap_or_else(delineate_dicom::build::new_uid),
        revision: opts.revision,
        force: opts.force,
    };
    let written =
        write_result(out, &image, meta, &seg, &info, &ropts).map_err(|e| Error::Case {
            what: "writing the result",
            path: out.to_path_buf(),
            source: Box::new(e),
        })?;
    timings.push(("write".into(), t.elapsed().as_secs_f64()));
    tracing::info!(seconds = t.elapsed().as_secs_f64(), "wrote the outputs");
    Ok(CaseOutput {
        name: name.to_string(),
        out: out.to_path_buf(),
        no_rtstruct: seg.delivered.list.is_empty() && dicom_output,
        lesions: seg.delivered.list,
        intracranial: seg.intracranial.map(|i| i.report),
        timings,
        seconds: t0.elapsed().as_secs_f64(),
        rtstruct: written.rtstruct,
        warnings: seg.warnings,
    })
}

/// The inputs of a batch folder, by name: CASE/dicom/, CASE/image.nii.gz
/// (or .nii), or *.nii.gz files. `None`: the folder is one DICOM series
/// (it has DICOM files of its own), or holds no case.
pub fn batch_cases(dir: &Path) -> Result<Option<Vec<(String, PathBuf)>>, Error> {
    let mut cases = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|source| {
        Error::Io(delineate_imaging::IoFailure {
            what: "list the input folder",
            path: dir.to_path_buf(),
            source,
        })
    })?;
    let mut dicom_files = 0;
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            if p.join("dicom").is_dir() {
                cases.push((name, p.join("dicom")));
            } else if p.join("image.nii.gz").is_file() {
                cases.push((name, p.join("image.nii.gz")));
            } else if p.join("image.nii").is_file() {
                cases.push((name, p.join("image.nii")));
            }
        } else if let Some(stem) = name
            .strip_suffix(".nii.gz")
            .or_else(|| name.strip_suffix(".nii"))
        {
            cases.push((stem.to_string(), p.clone()));
        } else if delineate_dicom::header::has_dicm_magic(&p).unwrap_or(false) {
            dicom_files += 1;
        }
    }
    // A folder with DICOM files of its own is one series, not a batch
    // (other files, such as a manifest, do not count).
    if cases.is_empty() || dicom_files > 0 {
        return Ok(None);
    }
    cases.sort();
    Ok(Some(cases))
}
