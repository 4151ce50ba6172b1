//! The native training engine against burn autodiff and burn's
//! optimisers: same gradients (every parameter and the input), same
//! updated weights; and finite differences on a tiny network.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{backend::AutodiffBackend, Tensor, TensorData};
use delineate_model::backend::CpuTrain;
use delineate_model::fast::train::params::OptimizerKind;
use delineate_model::fast::train::TrainUNet;
use delineate_model::losses::inverse_weights;
use delineate_model::network::{Network, NetworkConfig};
use delineate_model::train::{loss, Batch, LossKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type B = CpuTrain;

/// Weights from the test's own ChaCha8 stream, in burn's visiting order:
/// burn initialises parameters lazily from one global RNG, which tests
/// running in parallel would share. Convolutions U(±1/√fan-in) (burn's
/// default bound), biases U(±0.1), γ U(0.8, 1.2), β U(±0.1).
struct Seeded(ChaCha8Rng);

impl ModuleMapper<B> for Seeded {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, _) = p.consume();
        let dims = t.dims();
        let n: usize = dims.iter().product();
        let v: Vec<f32> = if D == 5 {
            let fan_in = (dims[1] * dims[2] * dims[3] * dims[4]) as f32;
            let a = 1.0 / fan_in.sqrt();
            (0..n).map(|_| self.0.random_range(-a..a)).collect()
        } else {
            // γ comes before β in a group norm; a bias has no partner: all
            // rank-1 tensors get values near their typical scale.
            (0..n).map(|_| self.0.random_range(-0.1f32..0.1)).collect()
        };
        let t = Tensor::from_data(TensorData::new(v, dims.to_vec()), &Default::default());
        Param::initialized(id, t.require_grad())
    }
}

/// Group-norm γ near 1 (a rank-1 tensor followed by its β in visiting
/// order is a γ).
struct GammaNearOne(ChaCha8Rng, Vec<ParamId>);

impl ModuleMapper<B> for GammaNearOne {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.1.contains(&p.id) {
            return p;
        }
        let (id, t, _) = p.consume();
        let dims = t.dims();
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.0.random_range(0.8f32..1.2)).collect();
        let t = Tensor::from_data(TensorData::new(v, dims.to_vec()), &Default::default());
        Param::initialized(id, t.require_grad())
    }
}

fn net(widths: &[usize], seed: u64) -> Network<B> {
    let n: Network<B> = NetworkConfig::new("unet3d", Some(widths.to_vec()))
        .expect("config")
        .init(&Default::default());
    let n = n.map(&mut Seeded(ChaCha8Rng::seed_from_u64(seed)));
    let Network::UNet(u) = &n else {
        panic!("a U-Net")
    };
    let mut gammas = vec![u.head_norm.gamma.as_ref().expect("affine").id];
    for b in u.encoders.iter().chain(&u.decoders) {
        for g in [&b.norm1.gamma, &b.norm2.gamma] {
            gammas.push(g.as_ref().expect("affine").id);
        }
    }
    n.map(&mut GammaNearOne(
        ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
        gammas,
    ))
}

fn unet(n: &Network<B>) -> &delineate_model::unet::UNet<B> {
    match n {
        Network::UNet(u) => u,
        _ => panic!("a U-Net"),
    }
}

/// Random images, targets with a few blobs (two lesions per patch), and
/// inverse weights: x-fastest patches one after the other.
fn batch_data(batch: usize, dims: [usize; 3], seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let (mut img, mut tgt, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batch {
        let mut t = vec![0u8; n];
        for (cx, cy, cz, rad) in [(0.3, 0.4, 0.5, 2.5f64), (0.75, 0.7, 0.3, 1.2)] {
            let c = [
                cx * dims[0] as f64,
                cy * dims[1] as f64,
                cz * dims[2] as f64,
            ];
            for z in 0..dims[2] {
                for y in 0..dims[1] {
                    for x in 0..dims[0] {
                        let d2 = (x as f64 - c[0]).powi(2)
                            + (y as f64 - c[1]).powi(2)
                            + (z as f64 - c[2]).powi(2);
                        if d2 <= rad * rad {
                            t[x + dims[0] * (y + dims[1] * z)] = 1;
                        }
                    }
                }
            }
        }
        img.extend((0..n).map(|i| r.random_range(-1.5f32..1.5) + 2.0 * t[i] as f32));
        w.extend(inverse_weights(&t, dims));
        tgt.extend(t.iter().map(|&v| v as f32));
    }
    (img, tgt, w)
}

fn tensor(v: &[f32], batch: usize, d: [usize; 3]) -> Tensor<B, 5> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), [batch, 1, d[2], d[1], d[0]]),
        &Default::default(),
    )
}

/// The same values in f64 (burn flex computes in the tensor's dtype).
fn tensor64(v: &[f32], batch: usize, d: [usize; 3]) -> Tensor<B, 5> {
    let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    Tensor::from_data(
        TensorData::new(v, [batch, 1, d[2], d[1], d[0]]),
        &Default::default(),
    )
}

/// Every parameter of a network converted to f64: burn autodiff then
/// computes the exact gradients up to f64 rounding, the reference both
/// f32 engines are measured against.
struct ToF64;

impl ModuleMapper<B> for ToF64 {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, _) = p.consume();
        let data = t.into_data().convert::<f64>();
        Param::initialized(
            id,
            Tensor::from_data(data, &Default::default()).require_grad(),
        )
    }
}

/// Every parameter's gradient by id, in burn's order.
struct Grads<'a> {
    grads: &'a <B as AutodiffBackend>::Gradients,
    out: HashMap<ParamId, Vec<f32>>,
}

impl ModuleVisitor<B> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let g = p
            .val()
            .grad(self.grads)
            .expect("a gradient for every parameter");
        let v = g.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        self.out.insert(p.id, v);
    }
}

/// max |a − b| / max |b|.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .map(|v| v.abs() as f64)
        .fold(0.0, f64::max)
        .max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
        / scale
}

/// burn's weights (or gradients) by parameter id.
struct Values(HashMap<ParamId, Vec<f32>>);

impl ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0
            .insert(p.id, p.val().into_data().to_vec::<f32>().expect("f32"));
    }
}

/// burn autodiff's loss, parameter gradients (by id) and input gradient,
/// computed in f64.
#[allow(clippy::type_complexity)]
fn burn_grads(
    net: &Network<B>,
    (img, tgt, w): (&[f32], &[f32], &[f32]),
    batch: usize,
    dims: [usize; 3],
    kind: LossKind,
) -> (f32, HashMap<ParamId, Vec<f32>>, Vec<f32>) {
    let net = net.clone().map(&mut ToF64);
    let x = tensor64(img, batch, dims).require_grad();
    let b = Batch {
        image: x.clone(),
        target: tensor64(tgt, batch, dims),
        weights: tensor64(w, batch, dims),
    };
    let l = loss(kind, net.forward(x.clone()), &b);
    let value = l
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32")[0];
    let grads = l.backward();
    let mut v = Grads {
        grads: &grads,
        out: HashMap::new(),
    };
    net.visit(&mut v);
    let dx = x.grad(&grads).expect("input gradient");
    let dx = dx
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32");
    (value, v.out, dx)
}

/// Compares the engine's gradients (parameters and input) with burn
/// autodiff's, computed in f64 on the same weights and data.
fn check(widths: &[usize], dims: [usize; 3], batch: usize, kind: LossKind, seed: u64) {
    let burn_net = net(widths, seed);
    let mut engine = TrainUNet::from_unet(unet(&burn_net), OptimizerKind::ADAM).expect("engine");
    let (img, tgt, w) = batch_data(batch, dims, seed + 100);
    let (want_loss, by_id, dx) = burn_grads(&burn_net, (&img, &tgt, &w), batch, dims, kind);
    let v = Values(by_id);
    // The engine.
    engine.keep_input_gradients(batch, dims);
    let got_loss = engine
        .gradients(kind, &img, &tgt, &w, batch, dims)
        .expect("gradients");
    let what = format!("{widths:?} {dims:?} batch {batch} {kind:?}");
    // A pre-activation within f32 rounding of a ReLU kink may fall on the
    // other side in f64, which moves that voxel's gradient by O(1): the
    // data must keep clear of kinks for the comparison to mean anything
    // (seed 0 of the narrow case, for one, puts a value at 1.7e-7).
    let kink = engine.closest_to_kink();
    assert!(
        kink > 1e-6,
        "{what}: a pre-activation at {kink:.1e}: choose another seed"
    );
    assert!(
        (got_loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
        "{what}: loss {got_loss} vs burn {want_loss}"
    );
    // Relative error per layer: a layer's two learnables (weight and bias,
    // or γ and β) against the layer's largest gradient, or 1 % of the
    // network's largest where a layer's gradients are tiny sums that
    // nearly cancel (a convolution followed by a group norm: the norm
    // removes constant shifts, so a group's bias gradients sum to zero);
    // both engines then differ only by float noise (~1e-7 of the summands).
    let global =
        v.0.values()
            .flat_map(|g| g.iter().map(|x| x.abs() as f64))
            .fold(0.0, f64::max);
    let params = engine.params();
    let ids = engine.ids();
    assert_eq!(v.0.len(), params.len(), "{what}: parameter count");
    for (k, pair) in params.chunks(2).enumerate() {
        assert_eq!(pair.len(), 2, "learnables come in layer pairs");
        assert_eq!(
            pair[1].shape.len(),
            1,
            "the second of a pair is a bias or β"
        );
        let want: Vec<&Vec<f32>> = (0..2).map(|j| &v.0[&ids[2 * k + j]]).collect();
        let own = want
            .iter()
            .flat_map(|g| g.iter().map(|x| x.abs() as f64))
            .fold(0.0, f64::max);
        assert!(own > 0.0, "{what}: layer {k} has no gradient");
        let scale = own.max(1e-2 * global);
        for (j, l) in pair.iter().enumerate() {
            let d = l
                .burn_grad()
                .iter()
                .zip(want[j])
                .map(|(a, b)| (a - b).abs() as f64)
                .fold(0.0, f64::max);
            assert!(
                d <= 1e-3 * scale,
                "{what}: layer {k}, {:?}: relative error {:.2e}",
                l.shape,
                d / scale
            );
        }
    }
    let n: usize = dims.iter().product();
    for (s, got) in engine.input_gradients().iter().enumerate() {
        let r = rel(got, &dx[s * n..(s + 1) * n]);
        assert!(r <= 1e-3, "{what}: input gradient of sample {s}: {r:.2e}");
    }
}

#[test]
fn gradients_equal_burn_autodiff_narrow_widths_each_loss() {
    // Seeds whose data keep every pre-activation > 3e-6 from a kink.
    let kinds = [
        LossKind::Bce,
        LossKind::IwBce,
        LossKind::Dice,
        LossKind::IwDice,
    ];
    for (kind, seed) in kinds.into_iter().zip([1, 5, 6, 7]) {
        check(&[8, 16, 32, 64], [16, 24, 8], 2, kind, seed);
    }
    check(&[8, 16, 32, 64], [8, 16, 24], 1, LossKind::IwBce, 2);
}

#[test]
fn gradients_equal_burn_autodiff_default_widths() {
    check(&[16, 32, 64, 128], [16, 8, 16], 2, LossKind::IwBce, 8);
    check(&[16, 32, 64, 128], [16, 8, 16], 1, LossKind::Dice, 1);
}

#[test]
fn gradients_equal_burn_autodiff_other_depths_and_widths() {
    // Two and three levels, widths the narrow kernels do not cover.
    check(&[4, 12], [6, 10, 4], 2, LossKind::Bce, 21);
    check(&[24, 8, 40], [12, 8, 4], 1, LossKind::IwDice, 20);
}

/// Central differences of the loss with respect to single weights of a
/// tiny network agree with the engine's analytic gradient.
#[test]
fn finite_differences_on_a_tiny_network() {
    let dims = [4, 4, 6];
    let (img, tgt, w) = batch_data(1, dims, 5);
    let base = net(&[2, 4], 3);
    let mut engine = TrainUNet::from_unet(unet(&base), OptimizerKind::ADAM).expect("engine");
    engine
        .gradients(LossKind::IwBce, &img, &tgt, &w, 1, dims)
        .expect("gradients");
    let analytic: Vec<Vec<f32>> = engine.params().iter().map(|l| l.burn_grad()).collect();
    let loss_with = |pi: usize, ei: usize, delta: f32| -> f64 {
        let mut e = TrainUNet::from_unet(unet(&base), OptimizerKind::ADAM).expect("engine");
        e.perturb(pi, ei, delta);
        e.gradients(LossKind::IwBce, &img, &tgt, &w, 1, dims)
            .expect("loss") as f64
    };
    let mut checked = 0;
    for (pi, g) in analytic.iter().enumerate() {
        // The largest-gradient element of every tensor.
        let (ei, &gv) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .expect("non-empty");
        // Float noise of the f32 loss is ~1e-7: only gradients large enough
        // for a clean central difference are checked.
        if gv.abs() < 5e-3 {
            continue;
        }
        let h = 2e-3f32;
        let fd = (loss_with(pi, ei, h) - loss_with(pi, ei, -h)) / (2.0 * h as f64);
        let err = (fd - gv as f64).abs() / gv.abs().max(1e-3) as f64;
        assert!(
            err < 0.05,
            "parameter {pi} element {ei}: analytic {gv}, numeric {fd}"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} tensors had a usable gradient");
}

/// Adam and SGD (Nesterov) on the same gradients give burn's weights, over
/// two steps (the second uses the moments of the first).
#[test]
fn optimiser_steps_equal_burns() {
    let dims = [8, 8, 8];
    let lr = 3e-3;
    for optim in ["adam", "sgd"] {
        let mut burn_net = net(&[8, 16], 9);
        let kind = match optim {
            "adam" => OptimizerKind::ADAM,
            _ => OptimizerKind::SGD_NESTEROV,
        };
        let mut engine = TrainUNet::from_unet(unet(&burn_net), kind).expect("engine");
        let mut adam = AdamConfig::new().init::<B, Network<B>>();
        let mut sgd = SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(0.9)
                    .with_dampening(0.0)
                    .with_nesterov(true),
            ))
            .init::<B, Network<B>>();
        for step in 0..2 {
            let (img, tgt, w) = batch_data(2, dims, 40 + step);
            let b = Batch {
                image: tensor(&img, 2, dims),
                target: tensor(&tgt, 2, dims),
                weights: tensor(&w, 2, dims),
            };
            let l = loss(LossKind::IwBce, burn_net.forward(b.image.clone()), &b);
            let raw = l.backward();
            let by_id = {
                let mut gv = Grads {
                    grads: &raw,
                    out: HashMap::new(),
                };
                burn_net.visit(&mut gv);
                gv.out
            };
            let g = GradientsParams::from_grads(raw, &burn_net);
            burn_net = match optim {
                "adam" => adam.step(lr, burn_net, g),
                _ => sgd.step(lr, burn_net, g),
            };
            let ids = engine.ids().to_vec();
            for (i, id) in ids.iter().enumerate() {
                engine.set_burn_grad(i, &by_id[id]);
            }
            engine.apply(lr);
        }
        let mut v = Values(HashMap::new());
        burn_net.visit(&mut v);
        let mut moved = 0;
        for (l, id) in engine.params().iter().zip(engine.ids()) {
            let want = &v.0[id];
            let got = l.burn_values();
            let d = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                d <= 1e-5,
                "{optim}: {:?}: max abs difference {d:.2e}",
                l.shape
            );
            moved += usize::from(l.time == 2);
        }
        assert_eq!(
            moved,
            engine.params().len(),
            "{optim}: every tensor stepped twice"
        );
    }
}
