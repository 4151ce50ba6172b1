//! Forward-pass timing of one U-Net on one input, for bench/inference.py:
//! the fast CPU path and burn flex, same weights, same input.
//!
//! `cargo run --release -p delineate-model --example forward -- \
//!     --model M.dlm | --widths 16,32,64,128 --seed 0 \
//!     --dims 64,64,64 --reps 3 [--skip-burn] [--export DIR]`
//!
//! Prints one JSON line per engine: {"engine", "dims", "seconds" (best of
//! reps), "macs", "gflops"}. With --export, writes DIR/weights.json (every
//! parameter: name, shape, offset into weights.bin), DIR/weights.bin
//! (little-endian f32), DIR/input.bin and DIR/fast_output.bin, for building
//! the same network in ONNX and checking its output.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{activation::sigmoid, Tensor, TensorData};
use delineate_model::backend::{Backend, Cpu};
use delineate_model::fast::FastUNet;
use delineate_model::network::{Network, NetworkConfig};
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

/// Collects every float parameter with its path-like name.
struct Export {
    names: Vec<(String, Vec<usize>, usize)>,
    data: Vec<f32>,
}

impl<B: Backend> ModuleVisitor<B> for Export {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let v = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        self.names
            .push((format!("p{}", self.names.len()), dims, self.data.len()));
        self.data.extend_from_slice(&v);
    }
}

/// SGEMM 2048³ with the gemm crate on all rayon threads: the practical
/// FMA peak of this machine, measured.
#[allow(unsafe_code)]
fn peak() {
    let n = 2048;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        // SAFETY: three n × n row-major matrices.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert!((c[0] - 1024.0).abs() < 1e-3);
    let gflops = 2.0 * (n * n * n) as f64 / best / 1e9;
    println!(
        "{}",
        serde_json::json!({"sgemm": n, "seconds": best, "gflops": gflops, "threads": rayon::current_num_threads()})
    );
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--peak") {
        peak();
        return Ok(());
    }
    let dev = Default::default();
    let (net, widths): (Network<Cpu>, Vec<usize>) = if let Some(m) = arg(&args, "--model") {
        let (net, info) = delineate_model::modelfile::load::<Cpu>(std::path::Path::new(&m), &dev)
            .map_err(|e| e.to_string())?;
        (net, info.network.widths().to_vec())
    } else {
        let widths = list(&arg(&args, "--widths").unwrap_or("16,32,64,128".into()));
        let seed: u64 = arg(&args, "--seed")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Cpu::seed(&dev, seed);
        let net = NetworkConfig::new("unet3d", Some(widths.clone()))
            .ok_or_else(|| format!("--widths {widths:?}: not a U-Net configuration"))?
            .init(&dev);
        (net, widths)
    };
    let dims: Vec<usize> = list(&arg(&args, "--dims").unwrap_or("64,64,64".into()));
    let &[x, y, z] = dims.as_slice() else {
        return Err(format!("--dims: three sizes x,y,z, got {dims:?}"));
    };
    let dims = [x, y, z];
    let reps: usize = arg(&args, "--reps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let n = dims[0] * dims[1] * dims[2];
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let image: Vec<f32> = (0..n).map(|_| r.random_range(-2.0f32..3.0)).collect();
    let Network::UNet(u) = &net else {
        return Err("the fast path covers the U-Net only".into());
    };
    if dims
        .iter()
        .any(|&d| d == 0 || d % (1 << (widths.len() - 1)) != 0)
    {
        return Err(format!(
            "--dims {dims:?}: multiples of {} are needed",
            1 << (widths.len() - 1)
        ));
    }
    let t = Instant::now();
    let fast = FastUNet::from_unet(u).map_err(|e| e.to_string())?;
    let pack_s = t.elapsed().as_secs_f64();
    let macs = fast.macs(dims);
    let report = |engine: &str, s: f64| {
        println!(
            "{}",
            serde_json::json!({"engine": engine, "dims": dims, "seconds": s, "macs": macs,
                "gflops": 2.0 * macs / s / 1e9, "pack_seconds": pack_s})
        );
    };
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        out = fast.predict(&image, dims).map_err(|e| e.to_string())?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    report("fast", best);
    if !args.iter().any(|a| a == "--skip-burn") {
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let x = Tensor::<Cpu, 5>::from_data(
                TensorData::new(image.clone(), [1, 1, dims[2], dims[1], dims[0]]),
                &dev,
            );
            let t = Instant::now();
            let p = sigmoid(net.forward(x)).into_data();
            best = best.min(t.elapsed().as_secs_f64());
            let p = p.to_vec::<f32>().unwrap_or_default();
            let d = p
                .iter()
                .zip(&out)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("burn vs fast: max abs diff {d:.2e}");
        }
        report("burn-flex", best);
    }
    if let Some(dir) = arg(&args, "--export") {
        let dir = std::path::PathBuf::from(dir);
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes)
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut e = Export {
            names: Vec::new(),
            data: Vec::new(),
        };
        net.visit(&mut e);
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        write("weights.bin", &bytes(&e.data))?;
        write("input.bin", &bytes(&image))?;
        write("fast_output.bin", &bytes(&out))?;
        let meta = serde_json::json!({
            "widths": widths,
            "dims_xyz": dims,
            "params": e.names.iter().map(|(n, s, o)| serde_json::json!({"name": n, "shape": s, "offset": o})).collect::<Vec<_>>(),
        });
        write("weights.json", meta.to_string().as_bytes())?;
    }
    Ok(())
}
