//! `delineate train`: train the segmentation network on a folder of cases.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use delineate_eval::layout::Layout;
use delineate_model::backend::Cpu;
use delineate_model::contract::{Contract, Preprocessing};
use delineate_model::data::{
    dataset, load_case_ref, load_case_ref_cached, on_test_background, read_case, Augment,
};
use delineate_model::engine::{engine_for, Device, EngineKind, OptimizerChoice};
use delineate_model::intracranial::Target;
use delineate_model::network::{Arch, Network, NetworkConfig};
use delineate_model::sampling::{Sampling, SamplingKind};
use delineate_model::split::{Role, Split, SplitConfig};
use delineate_model::train::LossKind;
use delineate_model::trainer::{train, RunDir, TrainOptions, TrainSummary, Validate};
use delineate_model::validate::{validate, ValCase, ValidationOptions, TARGET_FP_PER_CASE};

/// Train the 3D U-Net, V-Net or DeepMedic on cases (NIfTI or DICOM + RTSTRUCT).
///
/// DATA holds one folder per case: image.nii.gz + truth.nii.gz, as
/// `delineate synth` writes, or dicom/ + rtstruct.dcm; or is an nnU-Net raw
/// dataset (dataset.json, imagesTr/, labelsTr/) or a BraTS folder
/// (CASE/CASE-t1c.nii.gz + CASE-seg.nii.gz), detected or given by
/// --layout, with --labels the lesion label values (BraTS: 1,3, the
/// tumour core). Cases go onto the
/// model grid as the model's contract says, by the code `delineate
/// segment` runs: exact reorientation to RAS, resampling to --spacing,
/// z-score over the head (no brain mask at either end). Patches
/// are drawn by Tumor Sampling (a lesion chosen uniformly, so small lesions
/// count) or uniformly, and the loss is iwBCE (lesion voxels weighted
/// inversely to their lesion's volume) or BCE/Dice/iwDice.
///
/// On CPU the U-Net trains on the native engine (`--engine fast`, at
/// about twice PyTorch's speed on the same cores; docs/training.md);
/// `--engine burn` runs burn autodiff (flex on CPU, or CUDA with
/// `--device cuda`), which the V-Net and DeepMedic always use. Both write
/// the same checkpoints: a run may be resumed on the other engine.
///
/// One fold of a patient-wise K-fold split (--folds, --fold) is held out for
/// validation, which is deployment: every --val-every epochs each held-out
/// case goes through the `delineate segment` pipeline as acquired, its
/// lesions are scored lesion-wise, and the model with the best average
/// precision is kept as best.dlm, with the operating threshold chosen on
/// those cases (the lowest confidence with at most --target-fp false
/// positives per case). OUT gets options.json, metrics.jsonl (one line per
/// iteration), checkpoint.bin (--resume continues exactly, on either
/// engine), best.dlm and model.dlm: self-describing model files
/// (architecture, contract, weights), and validation/CASE/ with the latest
/// validation probability maps, candidate lesions and truths.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Dataset folder: one subfolder per case, an nnU-Net raw dataset or a
    /// BraTS folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Dataset layout (default: detected).
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Label values that are lesion (default: any non-zero; BraTS: 1,3).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<u32>>,
    /// nnU-Net channel of the contrast-enhanced T1.
    #[arg(long, default_value_t = 0)]
    pub channel: usize,
    #[command(flatten)]
    pub rois: crate::input::RoiArgs,
    /// What the network learns: lesions (the truth of each case), or the
    /// intracranial cavity (CASE/intracranial.nii.gz of `delineate synth`):
    /// the mask stage that `delineate model attach --intracranial` puts
    /// into a lesion model (docs/model-card.md).
    #[arg(long, value_enum, default_value_t = Target::Lesions)]
    pub target: Target,
    /// An intracranial-mask model (`--target intracranial`): validation runs
    /// it as `segment` will, and best.dlm and model.dlm carry it as their
    /// intracranial stage.
    #[arg(long, value_name = "MASK.dlm")]
    pub intracranial: Option<PathBuf>,
    /// Run folder (created; --resume to continue a run there).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Arch::Unet3d)]
    pub arch: Arch,
    /// Channels per level (U-Net, V-Net: 16,32,64,128) or per layer of each
    /// pathway (DeepMedic: 16,16,32,32,32,32).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<usize>>,
    /// bce, iwbce (the paper's), dice, iwdice, or swbce (lesion voxels
    /// weighted by size against a 10 mm lesion, up to 50×).
    #[arg(long, value_enum, default_value_t = LossKind::IwBce)]
    pub loss: LossKind,
    #[arg(long, value_enum, default_value_t = SamplingKind::Tumor)]
    pub sampling: SamplingKind,
    /// Probability that a patch is centred on a lesion (tumor and fg sampling).
    #[arg(long, default_value_t = 0.5)]
    pub lesion_p: f64,
    /// Probability that a patch is centred on a recorded look-alike
    /// (vessel, sinus, plexus, dura: CASE/lookalikes.nii.gz from `delineate
    /// synth`), before lesion sampling: hard negatives.
    #[arg(long, default_value_t = 0.0)]
    pub lookalike_p: f64,
    /// Share of the other patches centred where the current model gives a
    /// false positive on a training case: at each validation the network
    /// runs over 8 training cases and records voxels it calls lesion more
    /// than 2 voxels from any lesion (RUN/hard_negatives/); hard negatives
    /// of this model, not only the recorded look-alikes.
    #[arg(long, default_value_t = 0.0)]
    pub fp_p: f64,
    /// Patch size in voxels (x,y,z): multiples of 2^(levels-1) for U-Net and
    /// V-Net, of 3 for DeepMedic.
    #[arg(long, default_value = "64,64,64", value_delimiter = ',')]
    pub patch: Vec<usize>,
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Iterations per epoch (the paper: 200).
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Adam)]
    pub optimizer: OptimizerChoice,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Epoch from which the learning rate is multiplied by --lr-drop-factor.
    #[arg(long)]
    pub lr_drop_epoch: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub lr_drop_factor: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Patient-wise folds (0: no validation, train on everything).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// The fold held out for validation (0-based).
    #[arg(long, default_value_t = 0)]
    pub fold: usize,
    /// Cases kept out of training and validation altogether (a test set,
    /// chosen by the seed). The whole split is written to OUT/splits.json,
    /// and --resume with another split is refused.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    /// False positives per case allowed at the operating threshold chosen
    /// on the validation cases.
    #[arg(long, default_value_t = TARGET_FP_PER_CASE)]
    pub target_fp: f64,
    /// Validate every this many epochs (and after the last).
    #[arg(long, default_value_t = 1)]
    pub val_every: usize,
    /// Target voxel spacing (mm).
    #[arg(long, default_value = "1,1,1", value_delimiter = ',')]
    pub spacing: Vec<f64>,
    #[arg(long)]
    pub no_augment: bool,
    /// Where preprocessed cases are cached (default DATA/.delineate-cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    #[arg(long)]
    pub resume: bool,
    /// Train even on cases synthesised on the MNI152 background, which is
    /// the held-out test background of the model card (refused by default).
    #[arg(long)]
    pub allow_test_background: bool,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Training engine (default: fast for a U-Net on the CPU, burn
    /// otherwise).
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
}

/// The cases with their intracranial cavity as the truth.
fn intracranial_cases(
    folders: Vec<delineate_model::data::CaseRef>,
) -> Result<Vec<delineate_model::data::CaseRef>> {
    use delineate_model::data::CaseSource;
    folders
        .into_iter()
        .map(|c| match &c.source {
            CaseSource::Folder(d) if d.join("intracranial.nii.gz").is_file() => {
                Ok(delineate_model::data::CaseRef {
                    source: CaseSource::Files {
                        image: d.join("image.nii.gz"),
                        truth: d.join("intracranial.nii.gz"),
                        lesions: delineate_eval::layout::LesionLabels(None),
                    },
                    ..c
                })
            }
            CaseSource::Folder(d) => bail!(
                "{}: no intracranial.nii.gz: --target intracranial needs cases from \
                 `delineate synth` (which writes the target)",
                d.display()
            ),
            CaseSource::Files { image, .. } => bail!(
                "{}: --target intracranial needs delineate case folders from `delineate synth`",
                image.display()
            ),
        })
        .collect()
}

fn three<T: Copy>(v: &[T], what: &str) -> Result<[T; 3]> {
    match v {
        [a] => Ok([*a; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => bail!("--{what}: give one value or three (x,y,z)"),
    }
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let device = a.device;
    let patch = three(&a.patch, "patch")?;
    let spacing = three(&a.spacing, "spacing")?;
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("--spacing must be positive");
    }
    let loss = a.loss;
    let sampling = Sampling::of(a.sampling, a.lesion_p);
    let pre = Preprocessing {
        spacing,
        ..Default::default()
    };
    if a.target_fp.is_nan() || a.target_fp < 0.0 || a.val_every == 0 {
        bail!("--target-fp must be ≥ 0 and --val-every ≥ 1");
    }
    if !(0.0..=1.0).contains(&a.lookalike_p)
        || !(0.0..=1.0).contains(&a.lesion_p)
        || !(0.0..=1.0).contains(&a.fp_p)
    {
        bail!("--lookalike-p, --fp-p and --lesion-p must lie in 0-1");
    }
    let folders = dataset(
        &a.data,
        a.layout,
        a.labels.clone(),
        a.channel,
        &a.rois.selection()?,
    )?;
    let leaked = on_test_background(&folders)?;
    let target = a.target;
    let folders = match target {
        Target::Lesions => folders,
        Target::Intracranial => intracranial_cases(folders)?,
    };
    if !leaked.is_empty() && !a.allow_test_background {
        bail!(
            "{}: {} case(s) were synthesised on the {} background, the held-out test \
             background ({}{}); draw training data on another (synth --background) or pass \
             --allow-test-background",
            a.data.display(),
            leaked.len(),
            delineate_model::data::TEST_BACKGROUND,
            leaked[..leaked.len().min(3)].join(", "),
            if leaked.len() > 3 { ", …" } else { "" }
        );
    }
    let names: Vec<String> = folders.iter().map(|c| c.name.clone()).collect();
    let split = Split::draw(
        &names,
        SplitConfig {
            seed: a.seed,
            folds: a.folds,
            fold: a.fold,
            holdout: a.holdout,
        },
    )
    .with_context(|| format!("splitting {}", a.data.display()))?;
    let cache = a
        .cache
        .clone()
        .unwrap_or_else(|| a.data.join(".delineate-cache"));
    let mut cached = 0usize;
    let pb = crate::progress::bar("loading", "cases");
    pb.set_length(folders.len() as u64);
    let mut train_cases = Vec::new();
    let mut val_cases = Vec::new();
    for case in &folders {
        let name = &case.name;
        let role = split.role(name);
        if role == Some(Role::Test) {
            pb.inc(1);
            continue;
        }
        if role == Some(Role::Validation) {
            // Validation is deployment: the case as acquired.
            let raw = read_case(case).with_context(|| format!("case {name}"))?;
            val_cases.push(ValCase {
                name: name.clone(),
                image: raw.image,
                truth: raw.truth,
            });
            pb.inc(1);
            continue;
        }
        let c = if a.no_cache {
            load_case_ref(case, &pre)
        } else {
            load_case_ref_cached(case, &pre, &cache).map(|(c, hit)| {
                cached += usize::from(hit);
                c
            })
        }
        .with_context(|| format!("case {name}"))?;
        train_cases.push(c);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if a.widths
        .as_ref()
        .is_some_and(|w| w.is_empty() || w.contains(&0))
    {
        bail!("--widths: give positive channel counts");
    }
    let network = NetworkConfig::of(a.arch, a.widths.clone());
    let engine = match (a.engine, &network, device) {
        (Some(e), _, _) => e,
        (None, _, Device::Cuda) => EngineKind::Burn,
        (None, NetworkConfig::UNet(_), _) => EngineKind::Fast,
        (None, _, _) => EngineKind::Burn,
    };
    let opts = TrainOptions {
        network,
        loss,
        sampling,
        patch,
        batch: a.batch,
        epochs: a.epochs,
        iterations_per_epoch: a.iterations,
        optimizer: a.optimizer,
        engine,
        lr: a.lr,
        lr_drop_epoch: a.lr_drop_epoch,
        lr_drop_factor: a.lr_drop_factor,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        val_every: a.val_every,
        negatives: delineate_model::sampling::Negatives {
            lookalike: a.lookalike_p,
            false_positive: a.fp_p,
        },
        augment: if a.no_augment {
            Augment {
                flips: false,
                spatial: false,
                intensity: false,
                noise: false,
            }
        } else {
            Augment::default()
        },
        preprocessing: pre,
        target,
    };
    println!(
        "{} training cases ({} lesions), {} validation cases ({cached} read from the cache)",
        train_cases.len(),
        train_cases
            .iter()
            .map(|c| c.lesions.lesions.len())
            .sum::<usize>(),
        val_cases.len()
    );
    let engine = engine_for(
        opts.engine,
        device,
        &opts.network,
        opts.optimizer,
        opts.seed,
    )?;
    let summary = fit(engine, a, &opts, &split, train_cases, &val_cases)?;
    println!(
        "{} iterations in {:.0} s ({:.2} it/s, waited {:.1} ms per batch for data); final loss {:.4}{}; model {}",
        summary.iterations,
        summary.seconds,
        summary.iterations_per_second,
        summary.mean_wait_ms,
        summary.final_loss,
        summary.best_score.map(|s| format!("; best validation AP {s:.3}")).unwrap_or_default(),
        summary.model.display()
    );
    Ok(())
}

/// Trains with a progress bar and validation.
fn fit(
    engine: Box<dyn delineate_model::engine::Engine>,
    a: &TrainArgs,
    opts: &TrainOptions,
    split: &Split,
    train_cases: Vec<delineate_model::data::Case>,
    val_cases: &[ValCase],
) -> Result<TrainSummary> {
    let bar = crate::progress::bar("training", "iterations");
    bar.set_length((a.epochs * a.iterations) as u64);
    let stage = match &a.intracranial {
        Some(p) => {
            let (net, info) = delineate_model::modelfile::load::<Cpu>(p, &Default::default())?;
            if info.training.get("target").and_then(|t| t.as_str()) != Some("intracranial") {
                bail!(
                    "--intracranial {}: not an intracranial-mask model (delineate train --target intracranial)",
                    p.display()
                );
            }
            Some(Arc::new(delineate_model::validate::StageNet { net, info }))
        }
        None => None,
    };
    let vopts = ValidationOptions {
        target_fp_per_case: a.target_fp,
        save: Some(a.out.join("validation")),
        intracranial: stage,
    };
    let val = |net: &Network<Cpu>, contract: &Contract| {
        validate(net, &opts.network, contract, val_cases, &vopts)
    };
    let validate: Option<Validate> = if val_cases.is_empty() {
        None
    } else {
        Some(&val)
    };
    let summary = train(
        engine,
        Arc::new(train_cases),
        opts,
        RunDir {
            path: &a.out,
            resume: a.resume,
            split: Some(split),
        },
        validate,
        &|p| {
            bar.set_position(p.iteration as u64);
            bar.set_message(format!("loss {:.4}", p.loss));
            if let Some(s) = p.score {
                bar.println(format!(
                    "epoch {}: validation average precision {s:.3}",
                    p.epoch + 1
                ));
            }
        },
    )?;
    bar.finish_and_clear();
    if let Some(p) = &a.intracranial {
        let mask = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
        for f in ["best.dlm", "model.dlm"] {
            let path = a.out.join(f);
            if !path.is_file() {
                continue;
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            let both = delineate_model::modelfile::attach(
                &bytes,
                &path,
                delineate_model::modelfile::StageKind::Intracranial,
                &mask,
                p,
            )?;
            delineate_imaging::atomic::write_atomically(&path, ".dlm", |t, _| {
                std::fs::write(t, &both).map_err(|e| e.to_string())
            })?;
        }
    }
    Ok(summary)
}
