//! Training-step timing of one U-Net, for bench/training.py: the native
//! engine (`fast/train`) and burn flex (autodiff), same network, same
//! batch, Adam, iwBCE.
//!
//! `cargo run --release -p delineate-model --example train_step -- \
//!     --widths 8,16,32,64 --patch 48 --batch 2 --steps 10 --warmup 2 \
//!     [--engine fast|burn|both]`
//!
//! Prints one JSON line per engine: {"engine", "widths", "patch", "batch",
//! "ms_min", "ms_median", "steps", "gflop" (per step: 3 × the forward
//! convolutions' multiply-adds × 2), "loss_first", "loss_last"}.

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use delineate_model::backend::{Backend, CpuTrain};
use delineate_model::fast::train::params::OptimizerKind;
use delineate_model::fast::train::TrainUNet;
use delineate_model::fast::FastUNet;
use delineate_model::losses::inverse_weights;
use delineate_model::network::{Network, NetworkConfig};
use delineate_model::train::{loss, Batch, LossKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

/// Images with bright blobs and their targets, x-fastest, one patch after
/// the other.
fn data(batch: usize, p: [usize; 3], seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = p.iter().product();
    let (mut img, mut tgt, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batch {
        let mut t = vec![0u8; n];
        for _ in 0..3 {
            let c = p.map(|s| r.random_range(0.0..s as f64));
            let rad: f64 = r.random_range(1.5..6.0);
            for z in 0..p[2] {
                for y in 0..p[1] {
                    for x in 0..p[0] {
                        let d = (x as f64 - c[0]).powi(2)
                            + (y as f64 - c[1]).powi(2)
                            + (z as f64 - c[2]).powi(2);
                        if d <= rad * rad {
                            t[x + p[0] * (y + p[1] * z)] = 1;
                        }
                    }
                }
            }
        }
        img.extend((0..n).map(|i| r.random_range(-1.0f32..1.0) + 2.0 * t[i] as f32));
        w.extend(inverse_weights(&t, p));
        tgt.extend(t.iter().map(|&v| v as f32));
    }
    (img, tgt, w)
}

fn summary(engine: &str, times: &mut [f64], a: &Setup, losses: (f32, f32), gflop: f64) {
    times.sort_by(f64::total_cmp);
    let line = serde_json::json!({
        "engine": engine, "widths": a.widths, "patch": a.patch, "batch": a.batch,
        "ms_min": times[0] * 1e3, "ms_median": times[times.len() / 2] * 1e3,
        "steps": times.len(), "gflop": gflop,
        "loss_first": losses.0, "loss_last": losses.1,
    });
    println!("{line}");
}

struct Setup {
    widths: Vec<usize>,
    patch: [usize; 3],
    batch: usize,
    steps: usize,
    warmup: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let widths = list(&arg(&args, "--widths").unwrap_or_else(|| "8,16,32,64".into()));
    let p = list(&arg(&args, "--patch").unwrap_or_else(|| "48".into()));
    let patch = match p[..] {
        [a] => [a; 3],
        [a, b, c] => [a, b, c],
        _ => panic!("--patch: one or three sizes"),
    };
    let s = Setup {
        widths,
        patch,
        batch: arg(&args, "--batch")
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
        steps: arg(&args, "--steps")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
        warmup: arg(&args, "--warmup")
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
    };
    let engine = arg(&args, "--engine").unwrap_or_else(|| "both".into());
    let lr = 1e-3;
    let dev = Default::default();
    CpuTrain::seed(&dev, 1);
    let net: Network<CpuTrain> = NetworkConfig::new("unet3d", Some(s.widths.clone()))
        .expect("widths")
        .init(&dev);
    let Network::UNet(u) = &net else {
        unreachable!()
    };
    let macs = FastUNet::from_unet(u).expect("packed").macs(s.patch) * s.batch as f64;
    let gflop = 3.0 * 2.0 * macs / 1e9;
    let batches: Vec<_> = (0..s.warmup + s.steps)
        .map(|i| data(s.batch, s.patch, i as u64))
        .collect();
    if engine == "fast" || engine == "both" {
        let mut e = TrainUNet::from_unet(u, OptimizerKind::ADAM).expect("engine");
        let mut times = Vec::new();
        let (mut first, mut last) = (f32::NAN, f32::NAN);
        for (i, (img, tgt, w)) in batches.iter().enumerate() {
            let t = Instant::now();
            let l = e
                .step(LossKind::IwBce, img, tgt, w, s.batch, s.patch, lr)
                .expect("step");
            if i >= s.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
            if i == 0 {
                first = l;
            }
            last = l;
        }
        summary("fast", &mut times, &s, (first, last), gflop);
    }
    if engine == "burn" || engine == "both" {
        let mut opt = AdamConfig::new().init::<CpuTrain, Network<CpuTrain>>();
        let mut net = net.clone();
        let mut times = Vec::new();
        let (mut first, mut last) = (f32::NAN, f32::NAN);
        let [px, py, pz] = s.patch;
        let t5 = |v: &Vec<f32>| {
            Tensor::<CpuTrain, 5>::from_data(
                TensorData::new(v.clone(), [s.batch, 1, pz, py, px]),
                &dev,
            )
        };
        for (i, (img, tgt, w)) in batches.iter().enumerate() {
            let t = Instant::now();
            let b = Batch {
                image: t5(img),
                target: t5(tgt),
                weights: t5(w),
            };
            let l = loss(LossKind::IwBce, net.forward(b.image.clone()), &b);
            let v = l.clone().into_data().to_vec::<f32>().expect("f32")[0];
            let g = GradientsParams::from_grads(l.backward(), &net);
            net = opt.step(lr, net, g);
            if i >= s.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
            if i == 0 {
                first = v;
            }
            last = v;
        }
        summary("burn", &mut times, &s, (first, last), gflop);
    }
}
