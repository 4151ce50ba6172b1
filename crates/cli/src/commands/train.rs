//! `delineate train`: train the segmentation network on a folder of cases.

use std::path::PathBuf;

use anyhow::{bail, Result};
use delineate_eval::layout::Layout;
use delineate_model::contract::Preprocessing;
use delineate_model::data::Augment;
use delineate_model::engine::{Device, EngineKind, OptimizerChoice};
use delineate_model::intracranial::Target;
use delineate_model::network::{Arch, NetworkConfig};
use delineate_model::pipeline::train::{self as pipeline, CacheChoice, DataSpec, RunSpec};
use delineate_model::sampling::{Sampling, SamplingKind};
use delineate_model::split::SplitConfig;
use delineate_model::train::LossKind;
use delineate_model::trainer::TrainOptions;
use delineate_model::validate::TARGET_FP_PER_CASE;

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
        target: a.target,
    };
    let spec = DataSpec {
        data: a.data.clone(),
        layout: a.layout,
        labels: a.labels.clone(),
        channel: a.channel,
        rois: a.rois.selection()?,
        target: a.target,
        allow_test_background: a.allow_test_background,
    };
    let cases = pipeline::cases(&spec)?;
    let cache = match (&a.cache, a.no_cache) {
        (_, true) => CacheChoice::Off,
        (Some(p), false) => CacheChoice::At(p.clone()),
        (None, false) => CacheChoice::Beside,
    };
    let split = SplitConfig {
        seed: a.seed,
        folds: a.folds,
        fold: a.fold,
        holdout: a.holdout,
    };
    let pb = crate::progress::bar("loading", "cases");
    let prepared = pipeline::prepare(&cases, split, &opts, &cache, &a.data, &|done, n| {
        pb.set_length(n as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    println!(
        "{} training cases ({} lesions), {} validation cases ({} read from the cache)",
        prepared.train.len(),
        prepared
            .train
            .iter()
            .map(|c| c.lesions.lesions.len())
            .sum::<usize>(),
        prepared.validation.len(),
        prepared.cached
    );
    let bar = crate::progress::bar("training", "iterations");
    bar.set_length((a.epochs * a.iterations) as u64);
    let run = RunSpec {
        dir: &a.out,
        resume: a.resume,
        device,
        target_fp: a.target_fp,
        intracranial: a.intracranial.as_deref(),
    };
    let summary = pipeline::train_run(prepared, &opts, &run, &|p| {
        bar.set_position(p.iteration as u64);
        bar.set_message(format!("loss {:.4}", p.loss));
        if let Some(s) = p.score {
            bar.println(format!(
                "epoch {}: validation average precision {s:.3}",
                p.epoch + 1
            ));
        }
    })?;
    bar.finish_and_clear();
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
