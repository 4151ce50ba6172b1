#![allow(clippy::unwrap_used)]
//! The training loop on both engines: exact resume, the same run from the
//! same seed on either engine, and checkpoints that resume on the other.

mod support;

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use delineate_model::backend::Cpu;
use delineate_model::contract::Preprocessing;
use delineate_model::data::{case_folders, load_case, Case};
use delineate_model::engine::{engine_for, Device, EngineKind, OptimizerChoice};
use delineate_model::trainer::{train, RunDir, TrainOptions, TrainSummary};
use support::{tiny_dataset, tiny_options};

fn cases(dir: &Path, n: usize) -> Arc<Vec<Case>> {
    tiny_dataset(dir, n);
    Arc::new(
        case_folders(dir)
            .unwrap()
            .iter()
            .map(|(n, d)| load_case(n, d, &Preprocessing::default()).unwrap())
            .collect(),
    )
}

fn run(
    engine: EngineKind,
    cases: &Arc<Vec<Case>>,
    opts: &TrainOptions,
    out: &Path,
    resume: bool,
) -> Result<TrainSummary, delineate_model::Error> {
    let e = engine_for(
        engine,
        Device::Cpu,
        &opts.network,
        opts.optimizer,
        opts.seed,
    )?;
    train(
        e,
        cases.clone(),
        opts,
        RunDir {
            path: out,
            resume,
            split: None,
        },
        None,
        &|_| {},
    )
}

/// Logits of a fixed input through a run's model file.
fn outputs(model: &Path) -> Vec<f32> {
    let dev = Default::default();
    let (net, _) = delineate_model::modelfile::load::<Cpu>(model, &dev).unwrap();
    let v: Vec<f32> = (0..16 * 16 * 16)
        .map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0)
        .collect();
    let x = Tensor::<Cpu, 5>::from_data(TensorData::new(v, [1, 1, 16, 16, 16]), &dev);
    net.forward(x).into_data().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["loss"].as_f64().unwrap()
        })
        .collect()
}

/// Training 2 epochs straight and 1 epoch + resume for the second give the
/// same weights (same seed: the same batches, restored optimiser state), on
/// each engine and with each optimiser.
#[test]
fn resume_gives_the_same_weights_on_each_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases(&tmp.path().join("data"), 3);
    assert_eq!(cases[0].lesions.lesions.len(), 2);
    for engine in [EngineKind::Fast, EngineKind::Burn] {
        for optimizer in [OptimizerChoice::Adam, OptimizerChoice::Sgd] {
            let tag = format!("{engine:?}-{optimizer:?}");
            let opts = |epochs| TrainOptions {
                optimizer,
                ..tiny_options(epochs)
            };
            let straight = tmp.path().join(format!("straight-{tag}"));
            run(engine, &cases, &opts(2), &straight, false).unwrap();
            let split = tmp.path().join(format!("split-{tag}"));
            run(engine, &cases, &opts(1), &split, false).unwrap();
            // Refuses to overwrite a run without --resume.
            assert!(run(engine, &cases, &opts(2), &split, false).is_err());
            let s = run(engine, &cases, &opts(2), &split, true).unwrap();
            assert_eq!(s.iterations, 6);
            let d = max_diff(
                &outputs(&straight.join("model.dlm")),
                &outputs(&split.join("model.dlm")),
            );
            assert!(d < 1e-5, "{tag}: resumed run differs by {d}");
            // One metrics line per iteration across both sessions.
            assert_eq!(losses(&split).len(), 6, "{tag}");
            let o: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(split.join("options.json")).unwrap())
                    .unwrap();
            assert_eq!(o["engine"], serde_json::json!(engine), "{tag}");
        }
    }
}

/// With hard negatives mined from the model's own false positives: the
/// lists are mined at each validation and written beside the run, patches
/// are drawn from them, and a resumed run (which takes the latest list
/// from before its checkpoint) ends with the same weights.
#[test]
fn mined_false_positives_are_used_and_resume_exactly() {
    use delineate_model::sampling::Negatives;
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases(&tmp.path().join("data"), 3);
    let opts = |epochs| TrainOptions {
        negatives: Negatives {
            lookalike: 0.0,
            false_positive: 0.5,
        },
        ..tiny_options(epochs)
    };
    let straight = tmp.path().join("straight");
    run(EngineKind::Fast, &cases, &opts(3), &straight, false).unwrap();
    let split = tmp.path().join("split");
    run(EngineKind::Fast, &cases, &opts(2), &split, false).unwrap();
    run(EngineKind::Fast, &cases, &opts(3), &split, true).unwrap();
    // Mined after epochs 1 and 2 (not after the last).
    let mined: Vec<String> = std::fs::read_dir(straight.join("hard_negatives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(mined.len(), 2, "{mined:?}");
    let m = delineate_model::mining::load_latest(&straight, 6)
        .unwrap()
        .unwrap();
    assert_eq!(m.iteration, 6);
    assert_eq!(m.false_positives.len(), 3);
    // An untrained network calls much of the head lesion: the lists are
    // there to be drawn from.
    assert!(
        m.false_positives.iter().any(|l| !l.is_empty()),
        "nothing mined"
    );
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.matches("\"mined_false_positive_voxels\":").count(),
        9
    );
    assert_eq!(
        metrics
            .matches("\"mined_false_positive_voxels\":null")
            .count(),
        7
    );
    let d = max_diff(
        &outputs(&straight.join("model.dlm")),
        &outputs(&split.join("model.dlm")),
    );
    assert!(d < 1e-5, "resumed run with mining differs by {d}");
    // The same run without mining ends elsewhere: the mined patches mattered.
    let plain = tmp.path().join("plain");
    run(EngineKind::Fast, &cases, &tiny_options(3), &plain, false).unwrap();
    let d = max_diff(
        &outputs(&straight.join("model.dlm")),
        &outputs(&plain.join("model.dlm")),
    );
    assert!(d > 1e-4, "mining changed nothing ({d})");
}

/// The same options and seed on the two engines: the same initial weights
/// and batches, so the loss curves agree to float noise over 100 steps, and
/// the final networks are close.
#[test]
fn both_engines_follow_the_same_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases(&tmp.path().join("data"), 2);
    let opts = TrainOptions {
        iterations_per_epoch: 50,
        lr_drop_epoch: None,
        ..tiny_options(2)
    };
    let (fast, burn) = (tmp.path().join("fast"), tmp.path().join("burn"));
    run(EngineKind::Fast, &cases, &opts, &fast, false).unwrap();
    run(EngineKind::Burn, &cases, &opts, &burn, false).unwrap();
    let (a, b) = (losses(&fast), losses(&burn));
    assert_eq!(a.len(), 100);
    // The first steps agree to float precision, later ones to float noise
    // amplified by 100 Adam steps.
    assert!(
        (a[0] - b[0]).abs() < 1e-5 * b[0].abs().max(1.0),
        "{} vs {}",
        a[0],
        b[0]
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let tol = if i < 10 { 1e-3 } else { 2e-2 };
        assert!(
            (x - y).abs() <= tol * y.abs().max(0.1),
            "iteration {}: fast {x} vs burn {y}",
            i + 1
        );
    }
    // And the loss fell on both.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&a[90..]) < 0.9 * mean(&a[..10]),
        "fast did not learn: {a:?}"
    );
    let d = max_diff(
        &outputs(&fast.join("model.dlm")),
        &outputs(&burn.join("model.dlm")),
    );
    let scale = outputs(&burn.join("model.dlm"))
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        d < 0.05 * scale,
        "final logits differ by {d} (scale {scale})"
    );
}

/// A checkpoint written by one engine resumes on the other: the resumed run
/// ends where the straight run on one engine ends, to float noise.
#[test]
fn a_checkpoint_resumes_on_the_other_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases(&tmp.path().join("data"), 3);
    for (first, second) in [
        (EngineKind::Fast, EngineKind::Burn),
        (EngineKind::Burn, EngineKind::Fast),
    ] {
        let tag = format!("{first:?}-then-{second:?}");
        let straight = tmp.path().join(format!("straight-{tag}"));
        run(first, &cases, &tiny_options(2), &straight, false).unwrap();
        let split = tmp.path().join(format!("split-{tag}"));
        run(first, &cases, &tiny_options(1), &split, false).unwrap();
        run(second, &cases, &tiny_options(2), &split, true).unwrap();
        let (a, b) = (
            outputs(&straight.join("model.dlm")),
            outputs(&split.join("model.dlm")),
        );
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_diff(&a, &b);
        assert!(d < 1e-3 * scale.max(1.0), "{tag}: differs by {d}");
        // Not trivially equal to a fresh network: the resumed run kept the
        // optimiser's moments (a fresh Adam would take a full-size first step).
        let (la, lb) = (losses(&straight), losses(&split));
        assert!(
            (la[5] - lb[5]).abs() < 1e-3 * la[5].abs().max(1.0),
            "{tag}: {la:?} vs {lb:?}"
        );
    }
}
