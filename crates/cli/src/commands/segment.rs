//! `delineate segment`: contours for a brain MRI (DICOM series, NIfTI file,
//! or a folder of cases).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use delineate_model::backend::Backend;
use delineate_model::engine::{Device, EngineKind};
use delineate_model::pipeline::{
    batch_cases, load_model, predict_case, CaseOutput, LoadedModel, PredictOptions,
};
use delineate_model::segment::SegmentOptions;

use crate::input::SeriesArgs;

/// Contour lesions on a contrast-enhanced T1 MRI.
///
/// INPUT is a DICOM folder (one series, or choose with --series), a NIfTI
/// file, or a folder of cases (CASE/dicom/, CASE/image.nii.gz, or *.nii.gz
/// files) for batch mode, which writes OUT/CASE/ for each.
///
/// Steps, all as the model file's contract says (the same code that
/// validated the model during training): reorient exactly to the model's
/// axes, resample to its spacing, normalise; sliding windows of the
/// training patch with Gaussian weighting, optionally with mirror
/// test-time augmentation (--tta); lesions are the 26-connected components
/// above the contract's extent threshold on the model grid, their
/// confidence the maximum probability; their labels go back to the input
/// grid exactly (no lesion is lost or diluted by a coarse input grid);
/// lesions with confidence ≥ the operating threshold are delivered,
/// numbered by decreasing confidence.
///
/// OUT gets probability.nii.gz (float32, input grid), mask.nii.gz (label n
/// = lesion n), lesions.json (volume, equivalent diameter, LPS centroid,
/// max and mean probability per lesion; timings; the result's id), and for
/// DICOM input rtstruct.dcm on the input series: an unreviewed AI draft,
/// labelled so in its structure set label, ROI names ("AI draft L1") and
/// descriptions (model, confidence, warnings); --seg adds seg.dcm. With
/// --dicom-out a NIfTI input is also written as a DICOM series (OUT/dicom/)
/// that the RTSTRUCT references. OUT is one whole result: it appears only
/// when all files are complete, and replaces an earlier OUT only with
/// --force.
#[derive(clap::Args)]
pub struct SegmentArgs {
    /// DICOM folder, NIfTI file, or folder of cases.
    pub input: PathBuf,
    /// Output folder: created; one that is not empty is refused unless
    /// --force, which replaces it as a whole.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder (all of it: no file of an earlier
    /// result survives).
    #[arg(long)]
    pub force: bool,
    /// Model file (.dlm from `delineate train`); default: the built-in model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// CPU network engine: fast (channels-last GEMM convolutions,
    /// docs/inference.md; U-Net only) or burn (burn's flex backend, the
    /// reference). Default: fast for a U-Net on CPU.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// Deliver lesions whose confidence (maximum probability) is at least
    /// this; default: the model's operating threshold (chosen on its
    /// validation cases, stored in the model file).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Mirror test-time augmentation: average over the 8 flips (8× slower).
    #[arg(long)]
    pub tta: bool,
    /// Do not run the model's intracranial-mask stage (by default, when the
    /// model file has one, candidates lying mostly outside the cranial
    /// cavity are removed and the mask is written as intracranial.nii.gz).
    #[arg(long)]
    pub no_intracranial_mask: bool,
    /// Do not run the model's lesion classifier (by default, when the model
    /// file has one, candidates are scored by it and lesions are ranked and
    /// delivered by its score).
    #[arg(long)]
    pub no_classifier: bool,
    /// Also write seg.dcm (DICOM Segmentation) for DICOM output.
    #[arg(long)]
    pub seg: bool,
    /// NIfTI input: also write it as a DICOM MR series (OUT/dicom/) with an
    /// RTSTRUCT referencing it.
    #[arg(long)]
    pub dicom_out: bool,
    /// Fixed UID root for the RTSTRUCT (Series ROOT.2, SOP Instance
    /// ROOT.1.REVISION): the service sets it per job so a re-run after a
    /// crash sends the same object, and a later result on the same series
    /// is the next revision. Default: a new root.
    #[arg(long, hide = true, value_name = "ROOT")]
    pub uid_root: Option<String>,
    /// Revision of the result under --uid-root (its Instance Number).
    #[arg(long, hide = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub revision: u32,
    #[command(flatten)]
    pub series: SeriesArgs,
}

pub fn run(a: &SegmentArgs) -> Result<()> {
    if a.device == Device::Cuda && !cfg!(feature = "cuda") {
        bail!("--device cuda: this build has no CUDA backend (build with --features cuda); see docs/training.md");
    }
    match a.device {
        #[cfg(feature = "cuda")]
        Device::Cuda => run_on::<delineate_model::backend::Gpu>(a, &Default::default()),
        _ => run_on::<delineate_model::backend::Cpu>(a, &Default::default()),
    }
}

fn run_on<B: Backend>(a: &SegmentArgs, device: &B::Device) -> Result<()> {
    let t = Instant::now();
    let fast = a.device == Device::Cpu && a.engine != Some(EngineKind::Burn);
    let model = load_model::<B>(a.model.as_deref(), device, fast)?;
    if a.engine == Some(EngineKind::Fast) && model.fast.is_none() {
        bail!(
            "--engine fast: covers the U-Net on CPU; this model is a {} (use --engine burn)",
            model.info.network.name()
        );
    }
    let load_s = t.elapsed().as_secs_f64();
    tracing::info!(seconds = load_s, model = %model.name, "loaded the model");
    let batch = if a.input.is_dir() {
        batch_cases(&a.input)?
    } else {
        None
    };
    let Some(cases) = batch else {
        let name = a
            .input
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "input".into());
        let out = segment_case::<B>(a, &model, &name, &a.input, &a.out)?;
        print_case(&out, &model.name);
        return Ok(());
    };
    for (name, _) in &cases {
        delineate_model::result::check_out(&a.out.join(name), a.force)?;
    }
    println!(
        "{}: {} cases (batch mode); model {}",
        a.input.display(),
        cases.len(),
        model.name
    );
    let mut failed = Vec::new();
    for (name, path) in &cases {
        match segment_case::<B>(a, &model, name, path, &a.out.join(name)) {
            Ok(o) => println!(
                "  {name}: {} lesion(s) in {:.1} s -> {}",
                o.lesions.len(),
                o.seconds,
                o.out.display()
            ),
            Err(e) => {
                eprintln!("error: {name}: {e:#}");
                failed.push(name.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} cases failed: {}",
            failed.len(),
            cases.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn print_case(o: &CaseOutput, model: &str) {
    println!(
        "{}: {} lesion(s) in {:.1} s (model {model})",
        o.name,
        o.lesions.len(),
        o.seconds
    );
    for l in &o.lesions {
        println!(
            "  lesion {:>2}  p {:.2}  {:>9.1} mm3  {:>5.1} mm  at ({:.1}, {:.1}, {:.1}) mm LPS",
            l.id,
            l.confidence,
            l.volume_mm3,
            l.equivalent_diameter_mm,
            l.centroid_lps_mm[0],
            l.centroid_lps_mm[1],
            l.centroid_lps_mm[2]
        );
    }
    if let Some(r) = &o.intracranial {
        if r.applied {
            println!(
                "  intracranial mask: {:.0} ml; {} candidate(s) outside it removed ({} above the threshold)",
                r.volume_ml, r.removed_candidates, r.removed_delivered
            );
        } else {
            println!(
                "  intracranial mask NOT applied: {}",
                r.warning.as_deref().unwrap_or("")
            );
        }
    }
    let stages: Vec<String> = o
        .timings
        .iter()
        .map(|(s, t)| format!("{s} {t:.2} s"))
        .collect();
    println!("  stages: {}", stages.join(", "));
    if let Some(rt) = &o.rtstruct {
        println!("  wrote {}", rt.display());
    }
    println!("  outputs in {}", o.out.display());
}

/// The prediction options from the command line.
pub fn options(a: &SegmentArgs) -> Result<PredictOptions> {
    if let Some(t) = a.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold: must lie in [0, 1]");
        }
    }
    Ok(PredictOptions {
        segment: SegmentOptions {
            operating_threshold: a.threshold,
            mirror: a.tta,
            no_intracranial_mask: a.no_intracranial_mask,
            no_classifier: a.no_classifier,
        },
        series: a.series.options(),
        seg: a.seg,
        dicom_out: a.dicom_out,
        uid_root: a.uid_root.clone(),
        revision: a.revision,
        force: a.force,
    })
}

/// One case through [`predict_case`] with progress bars and warnings.
fn segment_case<B: Backend>(
    a: &SegmentArgs,
    model: &LoadedModel<B>,
    name: &str,
    input: &Path,
    out: &Path,
) -> Result<CaseOutput> {
    let opts = options(a)?;
    let read = crate::progress::bar("reading", "files");
    let bar = crate::progress::bar("segmenting", "windows");
    let o = predict_case(
        model,
        name,
        input,
        out,
        &opts,
        Some(&read),
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    read.finish_and_clear();
    bar.finish_and_clear();
    for w in &o.warnings {
        eprintln!("warning: {}: {w}", input.display());
    }
    if o.no_rtstruct {
        eprintln!("note: no lesion found: no RTSTRUCT written (an empty structure set is refused by planning systems)");
    }
    Ok(o)
}
