//! `delineate segment`: contours for a brain MRI (DICOM series, NIfTI file,
//! or a folder of cases).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use delineate_dicom::ModelId;
use delineate_model::backend::Backend;
use delineate_model::classifier::LesionClassifier;
use delineate_model::engine::{Device, EngineKind};
use delineate_model::fast::FastUNet;
use delineate_model::infer::{BurnPredictor, TilePredictor};
use delineate_model::intracranial::IntracranialReport;
use delineate_model::modelfile::{self, ModelInfo, StageKind};
use delineate_model::network::Network;
use delineate_model::result::{model_id, write_result, ResultInfo, ResultOptions};
use delineate_model::segment::{segment_staged, Lesion, SegmentOptions, Stage, Stages};

use crate::input::{self, SeriesArgs, Source};

/// The model shipped with delineate (docs/model-card.md): a 3D U-Net
/// trained on synthetic cases; research use only.
pub static SHIPPED_MODEL: &[u8] = include_bytes!("../../../../models/unet-synth.dlm");
pub const SHIPPED_MODEL_NAME: &str = "models/unet-synth.dlm (built in)";

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

/// What one case produced (for batch summaries and the demo).
pub struct CaseOutput {
    pub name: String,
    pub out: PathBuf,
    pub lesions: Vec<Lesion>,
    /// What the intracranial stage did, when it ran.
    pub intracranial: Option<IntracranialReport>,
    pub timings: Vec<(String, f64)>,
    pub seconds: f64,
    pub rtstruct: Option<PathBuf>,
}

/// A loaded model on some backend (with its packed fast CPU form when that
/// is the engine).
pub struct Loaded<B: Backend> {
    pub net: Network<B>,
    pub info: ModelInfo,
    pub name: String,
    /// Name, SHA-256 and whether it is the built-in research model.
    pub id: ModelId,
    pub fast: Option<FastUNet>,
    pub device: B::Device,
    /// The intracranial-mask stage, when the model file has one.
    pub intracranial: Option<StageNet<B>>,
    /// The second-stage lesion classifier, when the model file has one.
    pub classifier: Option<LesionClassifier>,
    /// SHA-256 of the lesion network's weights.
    pub lesion_network_sha256: String,
}

/// A stage's network, loaded like the lesion network.
pub struct StageNet<B: Backend> {
    pub net: Network<B>,
    pub info: ModelInfo,
    pub fast: Option<FastUNet>,
}

fn predictor_for<'a, B: Backend>(
    net: &'a Network<B>,
    fast: Option<&'a FastUNet>,
    device: &'a B::Device,
) -> Box<dyn TilePredictor + 'a> {
    match fast {
        Some(f) => Box::new(f),
        None => Box::new(BurnPredictor { net, device }),
    }
}

impl<B: Backend> Loaded<B> {
    /// The engine that runs the windows.
    pub fn predictor(&self) -> Box<dyn TilePredictor + '_> {
        predictor_for(&self.net, self.fast.as_ref(), &self.device)
    }

    /// The engine that runs the intracranial stage's windows.
    pub fn intracranial_predictor(&self) -> Option<Box<dyn TilePredictor + '_>> {
        self.intracranial
            .as_ref()
            .map(|s| predictor_for(&s.net, s.fast.as_ref(), &self.device))
    }

    pub fn engine(&self) -> &'static str {
        if self.fast.is_some() {
            "fast CPU"
        } else {
            "burn"
        }
    }
}

/// Loads the model; `fast` packs a U-Net for the fast CPU engine.
pub fn load_model<B: Backend>(
    path: Option<&Path>,
    device: &B::Device,
    fast: bool,
) -> Result<Loaded<B>> {
    let read;
    let (bytes, file, name, id): (&[u8], &Path, String, ModelId) = match path {
        Some(p) => {
            read = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            let short = p.file_name().map_or_else(
                || p.display().to_string(),
                |f| f.to_string_lossy().to_string(),
            );
            let id = model_id(&short, &read, false);
            (&read, p, p.display().to_string(), id)
        }
        None => (
            SHIPPED_MODEL,
            Path::new(SHIPPED_MODEL_NAME),
            SHIPPED_MODEL_NAME.to_string(),
            model_id("unet-synth.dlm (built in)", SHIPPED_MODEL, true),
        ),
    };
    let (net, info) = modelfile::from_bytes::<B>(bytes, file, device)?;
    let pack = |net: &Network<B>| -> Result<Option<FastUNet>> {
        Ok(match (net, fast) {
            (Network::UNet(u), true) => Some(FastUNet::from_unet(u)?),
            _ => None,
        })
    };
    let intracranial = match modelfile::stage(bytes, file, StageKind::Intracranial)? {
        Some(b) => {
            let where_ = PathBuf::from(format!("{} (intracranial stage)", file.display()));
            let (net, info) = modelfile::from_bytes::<B>(b, &where_, device)?;
            let fast = pack(&net)?;
            Some(StageNet { net, info, fast })
        }
        None => None,
    };
    let classifier = match modelfile::stage(bytes, file, StageKind::LesionClassifier)? {
        Some(b) => {
            let where_ = PathBuf::from(format!("{} (lesion-classifier stage)", file.display()));
            Some(LesionClassifier::from_bytes(b, &where_)?)
        }
        None => None,
    };
    let fast = pack(&net)?;
    Ok(Loaded {
        net,
        info,
        name,
        id,
        fast,
        device: device.clone(),
        intracranial,
        classifier,
        lesion_network_sha256: modelfile::lesion_network_sha256(bytes, file)?,
    })
}

/// One input of a batch: its name and path.
fn batch_cases(dir: &Path) -> Result<Option<Vec<(String, PathBuf)>>> {
    let mut cases = Vec::new();
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?;
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

/// The segmentation options from the command line.
pub fn options(a: &SegmentArgs) -> Result<SegmentOptions> {
    if let Some(t) = a.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold: must lie in [0, 1]");
        }
    }
    if let Some(r) = &a.uid_root {
        delineate_dicom::check_uid_root(r).map_err(|e| anyhow::anyhow!("--uid-root: {e}"))?;
    }
    Ok(SegmentOptions {
        operating_threshold: a.threshold,
        mirror: a.tta,
        no_intracranial_mask: a.no_intracranial_mask,
        no_classifier: a.no_classifier,
    })
}

/// Segments one input into `out` (all files appear at the end, together).
pub fn segment_case<B: Backend>(
    a: &SegmentArgs,
    model: &Loaded<B>,
    name: &str,
    input_path: &Path,
    out: &Path,
) -> Result<CaseOutput> {
    let t0 = Instant::now();
    let opts = options(a)?;
    let t = Instant::now();
    let loaded = input::load(input_path, &a.series)?;
    let mut timings = vec![("read".to_string(), t.elapsed().as_secs_f64())];
    let (image, meta) = match loaded.source {
        Source::Dicom(m) => (loaded.volume.into_f32(), Some(*m)),
        Source::Nifti(_) => (loaded.volume.into_f32(), None),
    };
    if meta.is_none() && a.seg && !a.dicom_out {
        bail!("--seg: a NIfTI input needs --dicom-out (a DICOM SEG references a DICOM series)");
    }
    delineate_model::result::check_out(out, a.force)?;
    let dicom_output = meta.is_some() || a.dicom_out;
    let bar = crate::progress::bar("segmenting", "windows");
    let predictor = model.predictor();
    let mask_predictor = model.intracranial_predictor();
    let stages = Stages {
        intracranial: match (&mask_predictor, &model.intracranial) {
            (Some(p), Some(s)) => Some(Stage {
                predictor: p.as_ref(),
                info: &s.info,
            }),
            _ => None,
        },
        classifier: model.classifier.as_ref(),
    };
    let seg = segment_staged(
        predictor.as_ref(),
        &model.info,
        stages,
        &image,
        &opts,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .with_context(|| format!("{}", input_path.display()))?;
    bar.finish_and_clear();
    for w in &seg.warnings {
        eprintln!("warning: {}: {w}", input_path.display());
    }
    for (s, secs) in &seg.timings {
        tracing::info!(stage = s, seconds = secs, "segment");
        timings.push((s.to_string(), *secs));
    }
    let t = Instant::now();
    let info = ResultInfo {
        name,
        input_path,
        model: &model.id,
        engine: model.engine(),
        model_info: &model.info,
        tta: a.tta,
    };
    let ropts = ResultOptions {
        seg: a.seg,
        dicom_out: a.dicom_out,
        uid_root: a
            .uid_root
            .clone()
            .unwrap_or_else(delineate_dicom::build::new_uid),
        revision: a.revision,
        force: a.force,
    };
    let written = write_result(out, &image, meta, &seg, &info, &ropts).with_context(|| {
        format!(
            "writing the result of {} to {}",
            input_path.display(),
            out.display()
        )
    })?;
    if seg.delivered.list.is_empty() && dicom_output {
        eprintln!("note: no lesion found: no RTSTRUCT written (an empty structure set is refused by planning systems)");
    }
    timings.push(("write".into(), t.elapsed().as_secs_f64()));
    tracing::info!(seconds = t.elapsed().as_secs_f64(), "wrote the outputs");
    Ok(CaseOutput {
        name: name.to_string(),
        out: out.to_path_buf(),
        lesions: seg.delivered.list,
        intracranial: seg.intracranial.map(|i| i.report),
        timings,
        seconds: t0.elapsed().as_secs_f64(),
        rtstruct: written.rtstruct,
    })
}
