#![allow(clippy::unwrap_used, clippy::needless_range_loop)]
//! Losses against hand-computed values and finite differences, inverse
//! weights on a known mask, U-Net shapes and gradients, and sampling
//! statistics.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use delineate_imaging::{Geometry, Volume};
use delineate_model::losses::{bce, dice, inverse_weights, weighted_bce, weighted_dice};
use delineate_model::sampling::{CaseLesions, PatchSampler, Sampling};
use delineate_model::unet::UNetConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod support;
use support::tiny_dataset;

type B = Flex;
type AD = Autodiff<Flex>;

/// burn's random initialisation draws from one global generator; tests that
/// seed it and expect the same weights run one at a time.
static BURN_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn burn_rng() -> std::sync::MutexGuard<'static, ()> {
    BURN_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn t5<Bk: Backend>(v: &[f32], shape: [usize; 5]) -> Tensor<Bk, 5> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f64 {
    t.into_data().to_vec::<f32>().unwrap()[0] as f64
}

const X: [f32; 4] = [2.0, -1.0, 0.5, -3.0];
const T: [f32; 4] = [1.0, 0.0, 0.0, 1.0];
const W: [f32; 4] = [0.5, 1.0, 1.0, 4.0];

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn bce_hand(i: usize) -> f64 {
    let p = sig(X[i] as f64);
    -(T[i] as f64 * p.ln() + (1.0 - T[i] as f64) * (1.0 - p).ln())
}

#[test]
fn losses_match_hand_computed_values() {
    let shape = [1, 1, 4, 1, 1];
    let mean: f64 = (0..4).map(bce_hand).sum::<f64>() / 4.0;
    assert!((scalar(bce::<B>(t5(&X, shape), t5(&T, shape))) - mean).abs() < 1e-5);
    let wsum: f64 = W.iter().map(|&w| w as f64).sum();
    let wmean: f64 = (0..4).map(|i| W[i] as f64 * bce_hand(i)).sum::<f64>() / wsum;
    assert!(
        (scalar(weighted_bce::<B>(
            t5(&X, shape),
            t5(&T, shape),
            t5(&W, shape)
        )) - wmean)
            .abs()
            < 1e-5
    );
    // Milletari Dice: 1 - 2 Σ p t / (Σ p² + Σ t²).
    let p: Vec<f64> = X.iter().map(|&x| sig(x as f64)).collect();
    let inter: f64 = (0..4).map(|i| p[i] * T[i] as f64).sum();
    let den: f64 =
        p.iter().map(|v| v * v).sum::<f64>() + T.iter().map(|&v| (v * v) as f64).sum::<f64>();
    let d = 1.0 - (2.0 * inter + 1e-6) / (den + 1e-6);
    assert!((scalar(dice::<B>(t5(&X, shape), t5(&T, shape))) - d).abs() < 1e-5);
    let winter: f64 = (0..4).map(|i| W[i] as f64 * p[i] * T[i] as f64).sum();
    let wden: f64 = (0..4)
        .map(|i| W[i] as f64 * (p[i] * p[i] + (T[i] * T[i]) as f64))
        .sum();
    let wd = 1.0 - (2.0 * winter + 1e-6) / (wden + 1e-6);
    assert!(
        (scalar(weighted_dice::<B>(
            t5(&X, shape),
            t5(&T, shape),
            t5(&W, shape)
        )) - wd)
            .abs()
            < 1e-5
    );
}

#[test]
fn gradients_match_finite_differences() {
    let shape = [1, 1, 4, 1, 1];
    type L = fn(Tensor<AD, 5>, Tensor<AD, 5>, Tensor<AD, 5>) -> Tensor<AD, 1>;
    let losses: [(&str, L); 4] = [
        ("bce", |x, t, _| bce(x, t)),
        ("iwbce", weighted_bce),
        ("dice", |x, t, _| dice(x, t)),
        ("iwdice", weighted_dice),
    ];
    for (name, f) in losses {
        let x = t5::<AD>(&X, shape).require_grad();
        let loss = f(x.clone(), t5(&T, shape), t5(&W, shape));
        let grads = loss.backward();
        let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        for i in 0..4 {
            let e = 1e-2f32;
            let mut plus = X;
            plus[i] += e;
            let mut minus = X;
            minus[i] -= e;
            let fp = scalar(f(t5(&plus, shape), t5(&T, shape), t5(&W, shape)));
            let fm = scalar(f(t5(&minus, shape), t5(&T, shape), t5(&W, shape)));
            let fd = (fp - fm) / (2.0 * e as f64);
            assert!(
                (g[i] as f64 - fd).abs() < 2e-3 * (1.0 + fd.abs()),
                "{name} voxel {i}: autodiff {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn inverse_weights_on_a_known_mask() {
    // 4×4×4 patch: a 2×2×2 lesion (8 voxels) and a single voxel.
    let mut m = vec![0u8; 64];
    for k in 0..2 {
        for j in 0..2 {
            for i in 0..2 {
                m[i + 4 * j + 16 * k] = 1;
            }
        }
    }
    m[3 + 4 * 3 + 16 * 3] = 1;
    let w = inverse_weights(&m, [4, 4, 4]);
    // N+ = 9, K = 2: 9 / (2·8) and 9 / (2·1).
    assert!((w[0] - 9.0 / 16.0).abs() < 1e-6);
    assert!((w[63] - 4.5).abs() < 1e-6);
    assert_eq!(w[2], 1.0);
    // Each lesion carries N+/K in total.
    let big: f32 = m
        .iter()
        .zip(&w)
        .take(63)
        .filter(|(&v, _)| v > 0)
        .map(|(_, &x)| x)
        .sum();
    assert!((big - 4.5).abs() < 1e-5);
    assert!(inverse_weights(&[0u8; 8], [2, 2, 2])
        .iter()
        .all(|&x| x == 1.0));
}

/// Counts parameters and those with a non-zero gradient.
struct GradCheck<'a> {
    grads: &'a <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
    total: usize,
    with_grad: usize,
}

impl ModuleVisitor<AD> for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        self.total += 1;
        if let Some(g) = param.val().grad(self.grads) {
            let norm: f32 = g.abs().sum().into_data().to_vec::<f32>().unwrap()[0];
            if norm > 0.0 {
                self.with_grad += 1;
            }
        }
    }
}

#[test]
fn unet_shapes_receptive_field_and_gradients() {
    let cfg = UNetConfig::new().with_widths(vec![4, 8, 16]);
    assert_eq!(cfg.size_multiple(), 4);
    // stem 3 + level0 4 + down 1 + level1 8 + down 2 + level2 16 + up: level1 8 + level0 4 = 46.
    assert_eq!(cfg.receptive_field(), 46);
    let net = cfg.init::<AD>(&Default::default());
    let x = Tensor::<AD, 5>::random(
        [2, 1, 16, 12, 8],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    let y = net.forward(x);
    assert_eq!(y.dims(), [2, 1, 16, 12, 8]);
    let target = Tensor::<AD, 5>::random(
        [2, 1, 16, 12, 8],
        burn::tensor::Distribution::Bernoulli(0.1),
        &Default::default(),
    );
    let loss = bce(y, target);
    let grads = loss.backward();
    let mut check = GradCheck {
        grads: &grads,
        total: 0,
        with_grad: 0,
    };
    net.visit(&mut check);
    assert!(check.total > 20, "{} parameters", check.total);
    assert_eq!(check.with_grad, check.total, "parameters without gradient");
    let default = UNetConfig::new();
    assert_eq!(default.widths, vec![16, 32, 64, 128]);
    assert_eq!(default.receptive_field(), 98);
    let _ = Volume::<u8>::filled(
        Geometry {
            size: [1, 1, 1],
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: Geometry::IDENTITY,
        },
        0,
    );
}

fn case(size: [usize; 3], lesions: &[Vec<usize>]) -> CaseLesions {
    CaseLesions {
        size,
        lesions: lesions.to_vec(),
        lookalikes: [Vec::new(), Vec::new()],
        false_positives: Vec::new(),
    }
}

/// Look-alike sampling puts its documented share of centres on recorded
/// look-alikes (classes half and half where a case has both), the rest
/// follow Tumor Sampling.
#[test]
fn lookalike_sampling_gives_the_documented_shares() {
    use delineate_model::sampling::Negatives;
    let mut with = case([40, 40, 40], &[vec![100]]);
    with.lookalikes = [vec![7, 8, 9], (1000..1100).collect()];
    let without = case([40, 40, 40], &[vec![30_000]]);
    let s = PatchSampler::with_negatives(
        vec![with.clone(), without],
        Sampling::Tumor { p: 0.5 },
        Negatives {
            lookalike: 0.3,
            false_positive: 0.0,
        },
        [16, 16, 16],
    );
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 20_000;
    let (mut looks, mut classes, mut lesions) = (0usize, [0usize; 2], 0usize);
    for _ in 0..n {
        let d = s.draw(&mut rng).unwrap();
        if let Some(c) = d.lookalike {
            looks += 1;
            classes[c] += 1;
            assert_eq!(d.case, 0, "only case 0 has look-alikes");
            let lin = d.centre[0] + 40 * (d.centre[1] + 40 * d.centre[2]);
            assert!(
                with.lookalikes[c].contains(&lin),
                "centre off the look-alike"
            );
        }
        lesions += usize::from(d.lesion.is_some());
    }
    let f = |k: usize| k as f64 / n as f64;
    assert!((f(looks) - 0.3).abs() < 0.015, "{looks}");
    assert!(
        (classes[0] as f64 / looks as f64 - 0.5).abs() < 0.03,
        "{classes:?}"
    );
    // (1 − h)·p of the draws aim at a lesion.
    assert!((f(lesions) - 0.7 * 0.5).abs() < 0.015, "{lesions}");
}

/// Mined false positives get their documented share: h on look-alikes,
/// (1 − h)·f on false positives, (1 − h)(1 − f)·p on lesions; a run
/// without mining draws exactly as before.
#[test]
fn false_positive_sampling_gives_the_documented_shares() {
    use delineate_model::sampling::Negatives;
    let mut a = case([40, 40, 40], &[vec![100]]);
    a.lookalikes = [vec![7, 8, 9], Vec::new()];
    let mut b = case([40, 40, 40], &[vec![30_000]]);
    b.false_positives = (5000..5400).collect();
    let neg = |f| Negatives {
        lookalike: 0.2,
        false_positive: f,
    };
    let s = PatchSampler::with_negatives(
        vec![a.clone(), b.clone()],
        Sampling::Tumor { p: 0.5 },
        neg(0.25),
        [16, 16, 16],
    );
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 20_000;
    let (mut looks, mut fps, mut lesions) = (0usize, 0usize, 0usize);
    for _ in 0..n {
        let d = s.draw(&mut rng).unwrap();
        looks += usize::from(d.lookalike.is_some());
        lesions += usize::from(d.lesion.is_some());
        if d.false_positive {
            fps += 1;
            assert_eq!(d.case, 1);
            let lin = d.centre[0] + 40 * (d.centre[1] + 40 * d.centre[2]);
            assert!(b.false_positives.contains(&lin));
        }
    }
    let f = |k: usize| k as f64 / n as f64;
    assert!((f(looks) - 0.2).abs() < 0.015, "{looks}");
    assert!((f(fps) - 0.8 * 0.25).abs() < 0.015, "{fps}");
    assert!((f(lesions) - 0.8 * 0.75 * 0.5).abs() < 0.015, "{lesions}");
    // With no false positive mined yet, the draws are those of a sampler
    // without the mode.
    b.false_positives.clear();
    let (s1, s2) = (
        PatchSampler::with_negatives(
            vec![a.clone(), b.clone()],
            Sampling::Tumor { p: 0.5 },
            neg(0.25),
            [16, 16, 16],
        ),
        PatchSampler::with_negatives(
            vec![a, b],
            Sampling::Tumor { p: 0.5 },
            neg(0.0),
            [16, 16, 16],
        ),
    );
    let (mut r1, mut r2) = (ChaCha8Rng::seed_from_u64(3), ChaCha8Rng::seed_from_u64(3));
    for _ in 0..500 {
        assert_eq!(s1.draw(&mut r1), s2.draw(&mut r2));
    }
}

#[test]
fn tumor_sampling_gives_every_lesion_the_same_chance() {
    // Case 0: one big lesion of 1000 voxels; case 1: three one-voxel lesions.
    let big: Vec<usize> = (0..1000).collect();
    let cases = vec![
        case([40, 40, 40], std::slice::from_ref(&big)),
        case([40, 40, 40], &[vec![5000], vec![9000], vec![20000]]),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n = 20_000;
    let count = |sampling: Sampling, rng: &mut ChaCha8Rng| {
        let s = PatchSampler::new(cases.clone(), sampling, [16, 16, 16]);
        let mut hits = [0usize; 4];
        for _ in 0..n {
            let d = s.draw(rng).unwrap();
            match d.lesion {
                Some((0, 0)) => hits[0] += 1,
                Some((1, l)) => hits[1 + l] += 1,
                _ => {}
            }
        }
        hits
    };
    let tumor = count(Sampling::Tumor { p: 1.0 }, &mut rng);
    for h in tumor {
        assert!((h as f64 / n as f64 - 0.25).abs() < 0.02, "{tumor:?}");
    }
    // Voxel-uniform foreground sampling: the small lesions are ~1/1003 each.
    let fg = count(Sampling::Foreground { p: 1.0 }, &mut rng);
    assert!(fg[0] as f64 / n as f64 > 0.99, "{fg:?}");
    // p = 0.5: half the draws target a lesion.
    let half = count(Sampling::Tumor { p: 0.5 }, &mut rng);
    let targeted: usize = half.iter().sum();
    assert!((targeted as f64 / n as f64 - 0.5).abs() < 0.02);
    // Uniform: patients equally often, centres spread evenly (mean at the
    // image centre, each octant about 1/8).
    let u = PatchSampler::new(cases.clone(), Sampling::Uniform, [16, 16, 16]);
    let (mut per_case, mut octant, mut sum) = ([0usize; 2], [0usize; 8], [0f64; 3]);
    for _ in 0..n {
        let d = u.draw(&mut rng).unwrap();
        assert!(d.lesion.is_none());
        per_case[d.case] += 1;
        let o = (0..3)
            .map(|a| usize::from(d.centre[a] >= 20) << a)
            .sum::<usize>();
        octant[o] += 1;
        for a in 0..3 {
            sum[a] += d.centre[a] as f64;
        }
    }
    assert!(
        (per_case[0] as f64 / n as f64 - 0.5).abs() < 0.02,
        "{per_case:?}"
    );
    for o in octant {
        assert!((o as f64 / n as f64 - 0.125).abs() < 0.015, "{octant:?}");
    }
    for a in sum {
        assert!((a / n as f64 - 19.5).abs() < 0.5);
    }
    // Corners keep the patch inside the image.
    let s = PatchSampler::new(cases, Sampling::Uniform, [16, 16, 16]);
    for _ in 0..1000 {
        let d = s.draw(&mut rng).unwrap();
        assert!(d.corner.iter().all(|&c| c + 16 <= 40));
    }
}

/// The U-Net overfits one small synthetic case (a bright cube in noise):
/// Dice > 0.9 on it after a short Adam run, for BCE and iwBCE.
#[test]
fn unet_overfits_one_small_case() {
    let _guard = burn_rng();
    use burn::optim::AdamConfig;
    use delineate_model::train::{step, Batch, LossKind};
    use rand_distr_free::normalish;
    let n = 16usize;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut img = vec![0f32; n * n * n];
    let mut tgt = vec![0f32; n * n * n];
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                let lin = i + n * j + n * n * k;
                let inside = (3..11).contains(&i) && (4..12).contains(&j) && (4..12).contains(&k)
                    || (12..14).contains(&i) && (2..4).contains(&j) && (11..13).contains(&k);
                tgt[lin] = f32::from(inside);
                img[lin] = if inside { 1.0 } else { 0.0 } + 0.3 * normalish(&mut rng);
            }
        }
    }
    // Burn's layout: [batch, channel, x, y, z] with z fastest; our volumes
    // are x fastest, so hand the axes over reversed (the net is symmetric).
    let shape = [1, 1, n, n, n];
    for (kind, seed) in [
        (LossKind::Bce, 1),
        (LossKind::IwBce, 1),
        (LossKind::IwBce, 2),
    ] {
        let u8t: Vec<u8> = tgt.iter().map(|&v| v as u8).collect();
        let w = if kind.weighted() {
            delineate_model::losses::inverse_weights(&u8t, [n, n, n])
        } else {
            vec![1.0; n * n * n]
        };
        let batch = Batch::<AD> {
            image: t5(&img, shape),
            target: t5(&tgt, shape),
            weights: t5(&w, shape),
        };
        let mut net = delineate_model::network::Network::UNet(
            UNetConfig::new()
                .with_widths(vec![8, 16])
                .init::<AD>(&Default::default()),
        );
        let mut opt = AdamConfig::new().init();
        let mut last = f32::NAN;
        for _ in 0..200 {
            let (next, l) = step(net, &mut opt, kind, &batch, 3e-3);
            net = next;
            last = l;
        }
        let pred = net
            .forward(batch.image.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let (mut both, mut a, mut b) = (0.0, 0.0, 0.0);
        for (p, t) in pred.iter().zip(&tgt) {
            let p = f32::from(*p > 0.0);
            both += p * t;
            a += p;
            b += t;
        }
        let d = 2.0 * both / (a + b);
        assert!(
            d > 0.9,
            "{kind:?}, seed {seed}: Dice {d} after training (loss {last})"
        );
    }
}

mod rand_distr_free {
    use rand::Rng;
    /// A cheap standard-normal-ish draw (sum of uniforms).
    pub fn normalish(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
        (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0
    }
}

/// V-Net and DeepMedic: same interface, shapes kept, every parameter gets a
/// gradient.
#[test]
fn vnet_and_deepmedic_shapes_and_gradients() {
    use delineate_model::network::NetworkConfig;
    let dev = Default::default();
    for (arch, widths, size) in [
        ("vnet", vec![4, 8], [8, 12, 16]),
        ("deepmedic", vec![4, 4, 8], [9, 12, 15]),
    ] {
        let cfg = NetworkConfig::new(arch, Some(widths)).unwrap();
        assert!(size.iter().all(|s| s % cfg.size_multiple() == 0));
        let net = cfg.init::<AD>(&dev);
        let x = Tensor::<AD, 5>::random(
            [2, 1, size[0], size[1], size[2]],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let y = net.forward(x);
        assert_eq!(y.dims(), [2, 1, size[0], size[1], size[2]], "{arch}");
        let t = Tensor::<AD, 5>::random(y.dims(), burn::tensor::Distribution::Bernoulli(0.2), &dev);
        let grads = bce(y, t).backward();
        let mut check = GradCheck {
            grads: &grads,
            total: 0,
            with_grad: 0,
        };
        net.visit(&mut check);
        assert!(check.total > 10, "{arch}: {} parameters", check.total);
        assert_eq!(
            check.with_grad, check.total,
            "{arch}: parameters without gradient"
        );
    }
    // Receptive fields: V-Net 4-8 with 1, 2 convs: 5 + 4 + 1 + 16 + 4 = 30.
    assert_eq!(
        NetworkConfig::new("vnet", Some(vec![4, 8]))
            .unwrap()
            .receptive_field(),
        30
    );
    assert_eq!(
        NetworkConfig::new("deepmedic", None)
            .unwrap()
            .receptive_field(),
        39
    );
    assert!(NetworkConfig::new("resnet", None).is_none());
}

/// Spatial augmentation keeps lesions in place and about their size.
#[test]
fn spatial_augmentation_keeps_lesions() {
    use delineate_model::contract::Preprocessing;
    use delineate_model::data::{case_folders, load_case, patch, Augment};
    let tmp = tempfile::tempdir().unwrap();
    tiny_dataset(tmp.path(), 1);
    let (name, dir) = &case_folders(tmp.path()).unwrap()[0];
    let case = load_case(name, dir, &Preprocessing::default()).unwrap();
    let plain = Augment {
        flips: false,
        spatial: false,
        intensity: false,
        noise: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (_, t0) = patch(&case, [0, 0, 0], [24, 24, 24], &plain, &mut rng);
    assert_eq!(
        t0,
        case.truth.as_slice().to_vec(),
        "without augmentation a patch is a copy"
    );
    let n0 = t0.iter().filter(|&&v| v > 0).count() as f64;
    let spatial = Augment {
        spatial: true,
        ..plain
    };
    let mut moved = 0;
    for _ in 0..20 {
        let (img, t) = patch(&case, [0, 0, 0], [24, 24, 24], &spatial, &mut rng);
        let n = t.iter().filter(|&&v| v > 0).count() as f64;
        assert!((n / n0 - 1.0).abs() < 0.45, "lesion voxels {n} vs {n0}");
        // Lesion voxels stay bright.
        let bright = t
            .iter()
            .zip(&img)
            .filter(|(&v, _)| v > 0)
            .map(|(_, &x)| x)
            .sum::<f32>()
            / n as f32;
        let dark = t
            .iter()
            .zip(&img)
            .filter(|(&v, _)| v == 0)
            .map(|(_, &x)| x)
            .sum::<f32>()
            / (t.len() as f64 - n) as f32;
        assert!(bright > dark + 1.0, "{bright} vs {dark}");
        moved += usize::from(t != t0);
    }
    assert!(moved >= 5, "only {moved} of 20 patches were transformed");
}

/// Damaged model files give errors naming the file, not panics.
#[test]
fn damaged_model_files_are_refused() {
    use delineate_model::modelfile;
    let _guard = burn_rng();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.dlm");
    let net = delineate_model::network::NetworkConfig::new("unet3d", Some(vec![4, 8])).unwrap();
    let info = modelfile::ModelInfo {
        format_version: modelfile::FORMAT_VERSION,
        delineate_version: "test".into(),
        network: net.clone(),
        contract: delineate_model::contract::Contract::new(Default::default(), [16, 16, 16]),
        training: serde_json::json!({}),
        weights_bytes: None,
        stages: Vec::new(),
    };
    let bytes = modelfile::to_bytes(&net.init::<B>(&Default::default()), &info).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert!(modelfile::load::<B>(&path, &Default::default()).is_ok());
    // An unknown or missing contract value is refused, by name.
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let json = String::from_utf8(bytes[24..24 + header_len].to_vec()).unwrap();
    for (from, to, named) in [
        ("\"orientation\":\"ras\"", "\"orientation\":\"lip\"", "lip"),
        ("zscore-head", "zscore-brain", "zscore-brain"),
        ("\"overlap\":0.25,", "", "overlap"),
        ("\"overlap\":0.25", "\"overlap\":0.99", "overlap"),
        ("\"crop\":{", "\"crop\":{\"shrink\":2,", "shrink"),
    ] {
        assert!(json.contains(from), "{from} in {json}");
        let j = json.replacen(from, to, 1);
        let mut b = bytes[..16].to_vec();
        b.extend_from_slice(&(j.len() as u64).to_le_bytes());
        b.extend_from_slice(j.as_bytes());
        b.extend_from_slice(&bytes[24 + header_len..]);
        std::fs::write(&path, &b).unwrap();
        let e = modelfile::load::<B>(&path, &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("m.dlm") && e.contains("contract") && e.contains(named),
            "{from} -> {to}: {e}"
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for cut in [0, 10, 23, 40, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = modelfile::load::<B>(&path, &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("m.dlm"), "cut at {cut}: {e}");
    }
    for _ in 0..20 {
        let mut b = bytes.clone();
        for _ in 0..8 {
            let i = rand::Rng::random_range(&mut rng, 0..b.len());
            b[i] = rand::Rng::random(&mut rng);
        }
        std::fs::write(&path, &b).unwrap();
        // Either still loadable (a flipped weight) or a clean error.
        if let Err(e) = modelfile::load::<B>(&path, &Default::default()) {
            assert!(e.to_string().contains("m.dlm"), "{e}");
        }
    }
}
