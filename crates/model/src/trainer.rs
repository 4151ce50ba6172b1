//! The training loop behind `delineate train`: background patch loading,
//! seeded batches, Adam or SGD with a learning-rate drop, JSON-lines
//! metrics, checkpoints that resume exactly, validation-based best model.
//! The optimiser steps run on an [`Engine`] (the native CPU engine or
//! burn); checkpoints are the same for both, so `--resume` may switch.
//!
//! **Model selection.** Every `val_every` epochs (and after the last) the
//! caller's validation runs the deployment pipeline on held-out cases and
//! returns a score (higher is better) and the operating threshold it chose
//! on those cases; a score at least as good as the best so far makes the
//! current weights `best.dlm` (ties go to the later, longer-trained
//! model), with that threshold in its contract. `model.dlm` (the final
//! weights) carries the threshold of the last validation.
//!
//! Batch *t* is a function of the seed and *t* only (its own ChaCha8
//! stream), so a run resumed from a checkpoint sees the same batches as an
//! uninterrupted one and ends with the same weights.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::Cpu;
use crate::contract::{Contract, Preprocessing};
use crate::data::{patch, Augment, Case};
use crate::engine::{Engine, EngineKind, HostBatch, OptimizerChoice};
use crate::modelfile::{self, ModelInfo};
use crate::network::{Network, NetworkConfig};
use crate::sampling::{Negatives, PatchSampler, Sampling};
use crate::split::Split;
use crate::train::LossKind;
use crate::Error;

const CHECKPOINT_MAGIC: &[u8; 16] = b"DELINEATE-CKPT1\n";
/// Batches prepared ahead of the optimiser.
const PREFETCH: usize = 4;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub network: NetworkConfig,
    pub loss: LossKind,
    pub sampling: Sampling,
    /// Patch size (x, y, z voxels).
    pub patch: [usize; 3],
    pub batch: usize,
    pub epochs: usize,
    pub iterations_per_epoch: usize,
    pub optimizer: OptimizerChoice,
    /// The engine that ran the steps (informative: a checkpoint resumes on
    /// either; runs from before this field read as the fast engine).
    #[serde(default)]
    pub engine: EngineKind,
    pub lr: f64,
    /// From this epoch on (0-based) the rate is multiplied by `lr_drop_factor`.
    pub lr_drop_epoch: Option<usize>,
    pub lr_drop_factor: f64,
    pub seed: u64,
    /// Iterations between checkpoints.
    pub checkpoint_every: usize,
    pub augment: Augment,
    pub preprocessing: Preprocessing,
    /// Validate every this many epochs (and after the last).
    #[serde(default = "one")]
    pub val_every: usize,
    /// Hard-negative sampling.
    #[serde(default)]
    pub negatives: Negatives,
    /// What the network learns to segment (runs from before this field
    /// learned lesions).
    #[serde(default)]
    pub target: crate::intracranial::Target,
}

fn one() -> usize {
    1
}

impl TrainOptions {
    /// The contract of models from this run (threshold not yet chosen).
    pub fn contract(&self) -> Contract {
        Contract::new(self.preprocessing.clone(), self.patch)
    }
}

/// What a validation found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Validation {
    /// Model-selection score: higher is better.
    pub score: f64,
    /// The operating threshold chosen on the validation cases.
    pub threshold: f32,
    /// Figures to record (recall, false positives, AP, ...).
    pub summary: serde_json::Value,
}

/// What the loop reports after each iteration.
pub struct Progress {
    pub iteration: usize,
    pub total: usize,
    pub epoch: usize,
    pub loss: f32,
    /// Validation score at the end of an epoch.
    pub score: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub iterations: usize,
    pub seconds: f64,
    pub iterations_per_second: f64,
    pub final_loss: f32,
    pub best_score: Option<f64>,
    /// Mean time the optimiser waited for a batch (ms): ~0 when loading keeps up.
    pub mean_wait_ms: f64,
    pub model: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    next_iteration: usize,
    best_score: Option<f64>,
    /// The latest validation (for model.dlm's threshold after a resume).
    #[serde(default)]
    last_validation: Option<Validation>,
    options: TrainOptions,
}

/// Runs a network under the run's contract on held-out cases.
pub type Validate<'a> = &'a dyn Fn(&Network<Cpu>, &Contract) -> Result<Validation, Error>;

fn batch_seed(seed: u64, t: usize) -> u64 {
    let mut z = seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

struct CpuBatch {
    t: usize,
    batch: HostBatch,
}

/// Prepares batches `from..to` on a background thread.
fn loader(
    cases: Arc<Vec<Case>>,
    opts: &TrainOptions,
    from: usize,
    to: usize,
    false_positives: Arc<Vec<Vec<usize>>>,
) -> mpsc::Receiver<CpuBatch> {
    let (tx, rx) = mpsc::sync_channel(PREFETCH);
    let o = opts.clone();
    std::thread::spawn(move || {
        let sampler = PatchSampler::with_negatives(
            cases
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut l = c.lesions.clone();
                    l.false_positives = false_positives.get(i).cloned().unwrap_or_default();
                    l
                })
                .collect(),
            o.sampling,
            o.negatives,
            o.patch,
        );
        let n: usize = o.patch.iter().product();
        for t in from..to {
            let mut rng = ChaCha8Rng::seed_from_u64(batch_seed(o.seed, t));
            let mut b = HostBatch {
                image: Vec::with_capacity(n * o.batch),
                target: Vec::with_capacity(n * o.batch),
                weights: Vec::with_capacity(n * o.batch),
                batch: o.batch,
                patch: o.patch,
            };
            for _ in 0..o.batch {
                let Some(d) = sampler.draw(&mut rng) else {
                    return;
                };
                let (img, tgt) = patch(&cases[d.case], d.corner, o.patch, &o.augment, &mut rng);
                let w = o.loss.voxel_weights(&tgt, o.patch);
                b.image.extend(img);
                b.target.extend(tgt.iter().map(|&v| v as f32));
                b.weights.extend(w);
            }
            if tx.send(CpuBatch { t, batch: b }).is_err() {
                return;
            }
        }
    });
    rx
}

fn checkpoint_path(run: &Path) -> PathBuf {
    run.join("checkpoint.bin")
}

fn write_checkpoint(
    run: &Path,
    (model, optim): (Vec<u8>, Vec<u8>),
    header: &CheckpointHeader,
) -> Result<(), Error> {
    let json = serde_json::to_vec(header).map_err(|e| Error::Input(e.to_string()))?;
    let mut out = Vec::new();
    out.extend_from_slice(CHECKPOINT_MAGIC);
    for part in [&json, &model] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&optim);
    let path = checkpoint_path(run);
    delineate_imaging::atomic::write_atomically(&path, ".bin", |p, _| {
        std::fs::write(p, &out).map_err(|e| e.to_string())
    })?;
    Ok(())
}

/// The header and the model and optimiser records of `run/checkpoint.bin`.
fn read_checkpoint(run: &Path) -> Result<(CheckpointHeader, Vec<u8>, Vec<u8>), Error> {
    let path = checkpoint_path(run);
    let bytes = std::fs::read(&path).map_err(delineate_imaging::IoFailure::on(
        "read the checkpoint",
        &path,
    ))?;
    let bad = || {
        Error::Input(format!(
            "{}: not a delineate checkpoint (or corrupt)",
            path.display()
        ))
    };
    if bytes.len() < 32 || &bytes[..16] != CHECKPOINT_MAGIC {
        return Err(bad());
    }
    let mut at = 16usize;
    let mut part = || -> Result<&[u8], Error> {
        let len = u64::from_le_bytes(
            bytes
                .get(at..at + 8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let s = bytes
            .get(at + 8..at.saturating_add(8).saturating_add(len))
            .ok_or_else(bad)?;
        at += 8 + len;
        Ok(s)
    };
    let header: CheckpointHeader = serde_json::from_slice(part()?).map_err(|_| bad())?;
    let model = part()?.to_vec();
    let optim = bytes[at..].to_vec();
    Ok((header, model, optim))
}

/// Where a run lives and how it starts.
#[derive(Clone, Copy, Debug)]
pub struct RunDir<'a> {
    /// The run folder (created).
    pub path: &'a Path,
    /// Continue from `path/checkpoint.bin`.
    pub resume: bool,
    /// The run's split, bound to the folder as `splits.json`: a resume with
    /// another split is refused ([`Split::bind`]).
    pub split: Option<&'a Split>,
}

/// Trains on `cases` into `run` with `engine` (its initial weights from
/// the seed). With `run.resume`, continues from `checkpoint.bin`, which
/// must come from the same options (either engine may have written it)
/// and the same split.
pub fn train(
    engine: Box<dyn Engine>,
    cases: Arc<Vec<Case>>,
    opts: &TrainOptions,
    run: RunDir<'_>,
    validate: Option<Validate<'_>>,
    on_progress: &dyn Fn(&Progress),
) -> Result<TrainSummary, Error> {
    run_loop(Session {
        engine,
        cases,
        opts,
        run: run.path,
        resume: run.resume,
        split: run.split,
        validate,
        on_progress,
    })
}

/// Everything a training run needs.
struct Session<'a> {
    engine: Box<dyn Engine>,
    cases: Arc<Vec<Case>>,
    opts: &'a TrainOptions,
    run: &'a Path,
    resume: bool,
    split: Option<&'a Split>,
    validate: Option<Validate<'a>>,
    on_progress: &'a dyn Fn(&Progress),
}

fn run_loop(session: Session<'_>) -> Result<TrainSummary, Error> {
    let Session {
        mut engine,
        cases,
        opts,
        run,
        resume,
        split,
        validate,
        on_progress,
    } = session;
    if cases.is_empty() {
        return Err(Error::Input("no training cases".into()));
    }
    if opts.batch == 0 || opts.iterations_per_epoch == 0 || opts.patch.contains(&0) {
        return Err(Error::Input(
            "batch, iterations per epoch and patch size must be positive".into(),
        ));
    }
    let cfg = opts.network.clone();
    let m = cfg.size_multiple();
    if opts.patch.iter().any(|p| p % m != 0) {
        return Err(Error::Input(format!(
            "--patch: each size must be a multiple of {m} for this {} ({} widths)",
            cfg.name(),
            cfg.widths().len()
        )));
    }
    std::fs::create_dir_all(run).map_err(delineate_imaging::IoFailure::on(
        "create the run folder",
        run,
    ))?;
    let total = opts.epochs * opts.iterations_per_epoch;
    let (mut start, mut best) = (0usize, None::<f64>);
    let mut last_validation: Option<Validation> = None;
    if resume {
        let (h, model, optim) = read_checkpoint(run)?;
        if h.options.network != opts.network
            || h.options.patch != opts.patch
            || h.options.seed != opts.seed
            || h.options.loss != opts.loss
            || h.options.target != opts.target
            || h.options.preprocessing != opts.preprocessing
        {
            return Err(Error::Input(format!(
                "{}: the checkpoint was made with other options (architecture, patch, loss, seed, target or spacing)",
                checkpoint_path(run).display()
            )));
        }
        engine
            .load_records(model, optim)
            .map_err(|e| Error::Input(format!("{}: {e}", checkpoint_path(run).display())))?;
        start = h.next_iteration;
        best = h.best_score;
        last_validation = h.last_validation;
    } else if checkpoint_path(run).exists() {
        return Err(Error::Input(format!(
            "{}: a run is already here; use --resume to continue it, or another --out",
            run.display()
        )));
    }
    if let Some(split) = split {
        split.bind(run, resume)?;
    }
    let engine_kind = engine.kind();
    let opts_run = TrainOptions {
        engine: engine_kind,
        ..opts.clone()
    };
    let opts = &opts_run;
    let opts_json = serde_json::to_string_pretty(opts).map_err(|e| Error::Input(e.to_string()))?;
    delineate_imaging::atomic::write_atomically(&run.join("options.json"), ".json", |p, _| {
        std::fs::write(p, opts_json.as_bytes()).map_err(|e| e.to_string())
    })?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("metrics.jsonl"))
        .map_err(|source| {
            Error::Io(delineate_imaging::IoFailure {
                what: "open the metrics log",
                path: run.join("metrics.jsonl"),
                source,
            })
        })?;
    let info = |iterations: usize, loss: f32, v: Option<&Validation>| ModelInfo {
        format_version: modelfile::FORMAT_VERSION,
        delineate_version: env!("CARGO_PKG_VERSION").into(),
        network: cfg.clone(),
        contract: Contract {
            operating_threshold: v.map_or(opts.contract().operating_threshold, |v| v.threshold),
            ..opts.contract()
        },
        training: serde_json::json!({
            "loss": opts.loss, "sampling": opts.sampling, "negatives": opts.negatives,
            "iterations": iterations,
            "batch": opts.batch, "optimizer": opts.optimizer, "lr": opts.lr, "seed": opts.seed,
            "engine": opts.engine, "target": opts.target,
            "cases": cases.len(), "final_loss": loss,
            "validation": v.map(|v| serde_json::json!({"score": v.score, "threshold": v.threshold, "summary": v.summary})),
        }),
        weights_bytes: None,
        stages: Vec::new(),
    };
    // Hard negatives mined from the model's own false positives (when the
    // mode is on): the latest list from before the start of this session.
    let mining = opts.negatives.false_positive > 0.0;
    let mut false_positives = Arc::new(vec![Vec::new(); cases.len()]);
    if mining && resume {
        let latest = crate::mining::load_latest(run, start)?
            .filter(|m| m.false_positives.len() == cases.len());
        let epoch_done = start > 0 && start % opts.iterations_per_epoch == 0;
        let due_at_start =
            epoch_done && (start / opts.iterations_per_epoch) % opts.val_every.max(1) == 0;
        match latest {
            // The session that wrote the checkpoint ended where an
            // uninterrupted run would have mined: mine now, with the same
            // weights it would have used.
            _ if due_at_start && latest.as_ref().is_none_or(|m| m.iteration != start) => {
                let which = crate::mining::choose(cases.len(), opts.seed, start);
                let m = crate::mining::Mined {
                    iteration: start,
                    false_positives: crate::mining::mine(
                        &engine.network()?,
                        &cases,
                        &which,
                        opts.patch,
                    )?,
                };
                crate::mining::save(run, &m)?;
                false_positives = Arc::new(m.false_positives);
            }
            Some(m) => false_positives = Arc::new(m.false_positives),
            None => {}
        }
    }
    let mut rx = loader(cases.clone(), opts, start, total, false_positives.clone());
    let t0 = Instant::now();
    let (mut wait, mut last_loss) = (0.0f64, f32::NAN);
    for t in start..total {
        let w0 = Instant::now();
        let cb = rx
            .recv()
            .map_err(|_| Error::Input("the patch loader stopped".into()))?;
        let waited = w0.elapsed().as_secs_f64();
        wait += waited;
        debug_assert_eq!(cb.t, t);
        let epoch = t / opts.iterations_per_epoch;
        let lr = match opts.lr_drop_epoch {
            Some(e) if epoch >= e => opts.lr * opts.lr_drop_factor,
            _ => opts.lr,
        };
        let l = engine.step(&cb.batch, opts.loss, lr)?;
        last_loss = l;
        let end_of_epoch = (t + 1) % opts.iterations_per_epoch == 0;
        let due = end_of_epoch && ((epoch + 1) % opts.val_every.max(1) == 0 || t + 1 == total);
        let validation = match (due, validate) {
            (true, Some(v)) => Some(v(&engine.network()?, &opts.contract())?),
            _ => None,
        };
        let score = validation.as_ref().map(|v| v.score);
        let mut mined_voxels = None;
        if due && mining && t + 1 < total {
            let which = crate::mining::choose(cases.len(), opts.seed, t + 1);
            let m = crate::mining::Mined {
                iteration: t + 1,
                false_positives: crate::mining::mine(
                    &engine.network()?,
                    &cases,
                    &which,
                    opts.patch,
                )?,
            };
            crate::mining::save(run, &m)?;
            mined_voxels = Some(m.false_positives.iter().map(Vec::len).sum::<usize>());
            false_positives = Arc::new(m.false_positives);
            // Batches from the next iteration on come from the new lists
            // (the prefetched ones are dropped), as in a resumed run.
            rx = loader(cases.clone(), opts, t + 1, total, false_positives.clone());
        }
        let line = serde_json::json!({"iteration": t + 1, "epoch": epoch, "loss": l, "lr": lr,
            "seconds": t0.elapsed().as_secs_f64(), "wait_ms": waited * 1e3, "validation": score,
            "mined_false_positive_voxels": mined_voxels});
        let _ = writeln!(metrics, "{line}");
        if let Some(v) = validation {
            if best.is_none_or(|b| v.score >= b) {
                best = Some(v.score);
                modelfile::save(
                    &run.join("best.dlm"),
                    &engine.network()?,
                    &info(t + 1, l, Some(&v)),
                )?;
            }
            last_validation = Some(v);
            // The learning curves so far, beside the metrics they show.
            let _ = metrics.flush();
            if let Err(e) = read_curve(run, "this run").and_then(|c| {
                delineate_eval::curves_plot::write_learning_curves(run, &[c])
                    .map_err(|e| Error::Input(e.to_string()))
            }) {
                tracing::warn!("learning curves: {e}");
            }
        }
        if (t + 1) % opts.checkpoint_every.max(1) == 0 || t + 1 == total {
            write_checkpoint(
                run,
                engine.records()?,
                &CheckpointHeader {
                    next_iteration: t + 1,
                    best_score: best,
                    last_validation: last_validation.clone(),
                    options: opts.clone(),
                },
            )?;
        }
        on_progress(&Progress {
            iteration: t + 1,
            total,
            epoch,
            loss: l,
            score,
        });
    }
    let model = run.join("model.dlm");
    modelfile::save(
        &model,
        &engine.network()?,
        &info(total, last_loss, last_validation.as_ref()),
    )?;
    let done = total.saturating_sub(start).max(1);
    let secs = t0.elapsed().as_secs_f64();
    Ok(TrainSummary {
        iterations: total,
        seconds: secs,
        iterations_per_second: done as f64 / secs.max(1e-9),
        final_loss: last_loss,
        best_score: best,
        mean_wait_ms: wait * 1e3 / done as f64,
        model,
    })
}

/// A run's learning curve from its `metrics.jsonl`: the loss of every
/// iteration and the validation scores. A resumed run logs again the
/// iterations after its last checkpoint; the later line of an iteration
/// counts.
pub fn read_curve(run: &Path, name: &str) -> Result<delineate_eval::curves_plot::RunCurve, Error> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(delineate_imaging::IoFailure::on(
        "read the metrics log",
        &path,
    ))?;
    let mut by_it: std::collections::BTreeMap<u64, (f64, Option<f64>)> = Default::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Input(format!("{}: line {}: {e}", path.display(), n + 1)))?;
        let (Some(it), Some(loss)) = (v["iteration"].as_u64(), v["loss"].as_f64()) else {
            continue;
        };
        by_it.insert(it, (loss, v["validation"].as_f64()));
    }
    if by_it.is_empty() {
        return Err(Error::Input(format!(
            "{}: no iterations recorded",
            path.display()
        )));
    }
    Ok(delineate_eval::curves_plot::RunCurve {
        name: name.to_string(),
        loss: by_it.iter().map(|(&i, &(l, _))| (i as f64, l)).collect(),
        validation: by_it
            .iter()
            .filter_map(|(&i, &(_, s))| s.map(|s| (i as f64, s)))
            .collect(),
    })
}
