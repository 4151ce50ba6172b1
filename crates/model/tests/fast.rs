//! The fast CPU path against the burn model (flex): same weights, same
//! probabilities.

use burn::tensor::{activation::sigmoid, Tensor, TensorData};
use delineate_model::backend::{Backend, Cpu};
use delineate_model::fast::FastUNet;
use delineate_model::network::{Network, NetworkConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-2.0f32..3.0)).collect()
}

/// burn's probabilities for a batch of images of `dims` (x-fastest each).
fn burn_probs(net: &Network<Cpu>, images: &[Vec<f32>], dims: [usize; 3]) -> Vec<Vec<f32>> {
    let dev = Default::default();
    let n = dims[0] * dims[1] * dims[2];
    let flat: Vec<f32> = images.concat();
    let x = Tensor::<Cpu, 5>::from_data(
        TensorData::new(flat, [images.len(), 1, dims[2], dims[1], dims[0]]),
        &dev,
    );
    let p = sigmoid(net.forward(x))
        .into_data()
        .to_vec::<f32>()
        .expect("f32");
    p.chunks(n).map(|c| c.to_vec()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn unet(widths: &[usize], seed: u64) -> (Network<Cpu>, FastUNet) {
    let dev = Default::default();
    Cpu::seed(&dev, seed);
    let net: Network<Cpu> = NetworkConfig::new("unet3d", Some(widths.to_vec()))
        .expect("config")
        .init(&dev);
    let Network::UNet(u) = &net else {
        panic!("a U-Net")
    };
    let fast = FastUNet::from_unet(u).expect("packed");
    (net, fast)
}

#[test]
fn random_weights_odd_sizes_batch_of_two() {
    let (net, fast) = unet(&[8, 16, 32], 3);
    // Sizes: multiples of 4, different on each axis.
    let dims = [20, 12, 28];
    let n = dims.iter().product();
    let images = vec![random(n, 1), random(n, 2)];
    let want = burn_probs(&net, &images, dims);
    for (img, w) in images.iter().zip(&want) {
        let got = fast.predict(img, dims).expect("prediction");
        let d = max_abs_diff(&got, w);
        assert!(d < 1e-4, "max abs diff {d}");
        // Not trivially equal: the network's output varies over the volume.
        let spread =
            w.iter().cloned().fold(0f32, f32::max) - w.iter().cloned().fold(1f32, f32::min);
        assert!(spread > 1e-3, "spread {spread}");
    }
}

#[test]
fn default_widths_and_single_level_sizes() {
    let (net, fast) = unet(&[16, 32, 64, 128], 5);
    for dims in [[8, 8, 8], [16, 24, 8]] {
        let n = dims.iter().product();
        let img = random(n, 9);
        let want = burn_probs(&net, std::slice::from_ref(&img), dims);
        let d = max_abs_diff(&fast.predict(&img, dims).expect("prediction"), &want[0]);
        assert!(d < 1e-4, "{dims:?}: max abs diff {d}");
    }
}

#[test]
fn shipped_model_with_trained_norms() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/unet-synth.dlm");
    let dev = Default::default();
    let (net, _) = delineate_model::modelfile::load::<Cpu>(&path, &dev).expect("shipped model");
    let Network::UNet(u) = &net else {
        panic!("the shipped model is a U-Net")
    };
    let fast = FastUNet::from_unet(u).expect("packed");
    let dims = [32, 24, 16];
    let n = dims.iter().product();
    let img = random(n, 11);
    let want = burn_probs(&net, std::slice::from_ref(&img), dims);
    let d = max_abs_diff(&fast.predict(&img, dims).expect("prediction"), &want[0]);
    assert!(d < 1e-4, "max abs diff {d}");
}

/// The kernels' buffers are public: a buffer of the wrong size is refused
/// with a panic naming it in release builds too, never read out of bounds.
#[test]
fn kernels_refuse_buffers_of_the_wrong_size() {
    use delineate_model::fast::grad::conv3_wgrad;
    use delineate_model::fast::kernels::{conv3, Act};
    let run = |f: Box<dyn FnOnce() + std::panic::UnwindSafe>| {
        let e = std::panic::catch_unwind(f).expect_err("accepted");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let mut short = Act::zeros(4, [6, 6, 6]);
    short.data.truncate(100);
    let out = Act::zeros(4, [6, 6, 6]);
    let w = vec![0f32; 27 * 16];
    let e = run(Box::new({
        let mut out = out.clone();
        move || conv3(&short, &w, &[0.0; 4], &mut out, false)
    }));
    assert!(e.contains("conv3 input"), "{e}");
    let e = run(Box::new({
        let (x, mut out) = (Act::zeros(4, [6, 6, 6]), out);
        move || conv3(&x, &[0f32; 10], &[0.0; 4], &mut out, false)
    }));
    assert!(e.contains("conv3 weights"), "{e}");
    let e = run(Box::new(move || {
        let (mut gw, mut gb) = (vec![0f32; 27 * 16], vec![0f32; 4]);
        conv3_wgrad(
            &Act::zeros(4, [6, 6, 6]),
            &Act::zeros(4, [6, 6, 8]),
            &mut gw,
            &mut gb,
        )
    }));
    assert!(e.contains("grids differ"), "{e}");
}
