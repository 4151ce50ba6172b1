//! The native CPU training engine for the residual 3D U-Net: the fast
//! inference path's kernels and layout, plus a backward pass for every
//! layer ([`crate::fast::grad`]) and the optimisers ([`params`]).
//!
//! **One source of truth.** [`TrainUNet::from_unet`] reads a burn module
//! (fresh from `UNetConfig::init`, or loaded from a model file or
//! checkpoint) and [`TrainUNet::write_unet`] writes the weights back into
//! one, keeping each parameter's id: model files and checkpoints are
//! burn's records, so a run can switch engines and still `--resume`
//! ([`record`] converts the optimiser state the same way).
//!
//! **A step** ([`TrainUNet::step`]): every sample of the batch runs its
//! forward pass in parallel (rayon; each kernel is itself parallel, and
//! rayon's work stealing shares the two levels), the loss and its
//! gradient are taken over the whole batch ([`loss`]), then every sample
//! runs its backward pass into its own gradient buffers, which are summed,
//! and the optimiser updates the packed weights in place. Buffers are
//! allocated once per patch size ([`net::Workspace`]) and reused.

pub mod loss;
mod net;
pub mod params;
pub mod record;

use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv3d, ConvTranspose3d};
use burn::nn::GroupNorm;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rayon::prelude::*;

use crate::fast::grad::flip_transpose;
use crate::train::LossKind;
use crate::unet::{ResBlock, UNet};
use crate::Error;

use net::{Arch, Block, Conv, Norm, Workspace};
use params::{Layout, Learnable, OptimizerKind};

/// Reads a burn parameter's values (row-major, f32).
fn values<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Result<Vec<f32>, Error> {
    p.val()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Input(format!("cannot read a weight tensor: {e:?}")))
}

/// The U-Net with packed weights, gradients and optimiser state.
pub struct TrainUNet {
    arch: Arch,
    params: Vec<Learnable>,
    /// burn's id of each learnable (checkpoints key optimiser state by it).
    ids: Vec<ParamId>,
    /// Input-gradient kernels of the 3×3×3 convolutions (empty for others).
    flipped: Vec<Vec<f32>>,
    optimizer: OptimizerKind,
    workspaces: Vec<Workspace>,
}

/// Collects learnables while the layer structure is read from burn.
struct Builder {
    params: Vec<Learnable>,
    ids: Vec<ParamId>,
}

impl Builder {
    fn push<B: Backend, const D: usize>(
        &mut self,
        p: &Param<Tensor<B, D>>,
        layout: Layout,
    ) -> Result<usize, Error> {
        let shape = p.val().dims().to_vec();
        self.params.push(Learnable::new(layout, shape, &values(p)?));
        self.ids.push(p.id);
        Ok(self.params.len() - 1)
    }

    fn conv<B: Backend>(&mut self, c: &Conv3d<B>) -> Result<Conv, Error> {
        let d = c.weight.val().dims();
        let (cout, cin, taps) = (d[0], d[1], d[2] * d[3] * d[4]);
        let w = self.push(&c.weight, Layout::Conv { cout, cin, taps })?;
        let b = self.bias(c.bias.as_ref())?;
        Ok(Conv { w, b, cin, cout })
    }

    fn transposed<B: Backend>(&mut self, c: &ConvTranspose3d<B>) -> Result<Conv, Error> {
        let d = c.weight.val().dims();
        let (cin, cout, taps) = (d[0], d[1], d[2] * d[3] * d[4]);
        let w = self.push(&c.weight, Layout::Transposed { cin, cout, taps })?;
        let b = self.bias(c.bias.as_ref())?;
        Ok(Conv { w, b, cin, cout })
    }

    fn bias<B: Backend>(&mut self, b: Option<&Param<Tensor<B, 1>>>) -> Result<usize, Error> {
        let b =
            b.ok_or_else(|| Error::Input("the training engine needs convolution biases".into()))?;
        self.push(b, Layout::Plain)
    }

    fn norm<B: Backend>(&mut self, n: &GroupNorm<B>) -> Result<Norm, Error> {
        let (Some(g), Some(b)) = (n.gamma.as_ref(), n.beta.as_ref()) else {
            return Err(Error::Input(
                "the training engine needs affine group norms".into(),
            ));
        };
        Ok(Norm {
            gamma: self.push(g, Layout::Plain)?,
            beta: self.push(b, Layout::Plain)?,
            groups: n.num_groups,
            eps: n.epsilon,
        })
    }

    fn block<B: Backend>(&mut self, b: &ResBlock<B>) -> Result<Block, Error> {
        Ok(Block {
            norm1: self.norm(&b.norm1)?,
            conv1: self.conv(&b.conv1)?,
            norm2: self.norm(&b.norm2)?,
            conv2: self.conv(&b.conv2)?,
        })
    }
}

/// Replaces a burn parameter's value, keeping its id (and whether it
/// requires a gradient).
fn set<B: Backend, const D: usize>(
    p: Param<Tensor<B, D>>,
    l: &Learnable,
    id: ParamId,
) -> Param<Tensor<B, D>> {
    let old = p.val();
    let device = old.device();
    let grad = old.is_require_grad();
    let mut t = Tensor::from_data(TensorData::new(l.burn_values(), l.shape.clone()), &device);
    if grad {
        t = t.require_grad();
    }
    Param::initialized(id, t)
}

impl TrainUNet {
    /// Packs a burn U-Net for training with `optimizer` (fresh state).
    pub fn from_unet<B: Backend>(net: &UNet<B>, optimizer: OptimizerKind) -> Result<Self, Error> {
        let mut b = Builder {
            params: Vec::new(),
            ids: Vec::new(),
        };
        let stem = b.conv(&net.stem)?;
        let encoders = net
            .encoders
            .iter()
            .map(|e| b.block(e))
            .collect::<Result<Vec<_>, _>>()?;
        let downs = net
            .downs
            .iter()
            .map(|d| b.conv(d))
            .collect::<Result<Vec<_>, _>>()?;
        let ups = net
            .ups
            .iter()
            .map(|u| b.transposed(u))
            .collect::<Result<Vec<_>, _>>()?;
        let decoders = net
            .decoders
            .iter()
            .map(|d| b.block(d))
            .collect::<Result<Vec<_>, _>>()?;
        let head_norm = b.norm(&net.head_norm)?;
        let head = b.conv(&net.head)?;
        let arch = Arch {
            stem,
            encoders,
            downs,
            ups,
            decoders,
            head_norm,
            head,
        };
        let mut me = Self {
            arch,
            params: b.params,
            ids: b.ids,
            flipped: Vec::new(),
            optimizer,
            workspaces: Vec::new(),
        };
        me.refresh_flipped();
        Ok(me)
    }

    /// Writes the weights into `net` (same architecture), keeping the ids
    /// this engine was built with.
    pub fn write_unet<B: Backend>(&self, mut net: UNet<B>) -> UNet<B> {
        let p = &self.params;
        let ids = &self.ids;
        let conv = |mut c: Conv3d<B>, k: &Conv| {
            c.weight = set(c.weight, &p[k.w], ids[k.w]);
            c.bias = c.bias.map(|b| set(b, &p[k.b], ids[k.b]));
            c
        };
        let norm = |mut n: GroupNorm<B>, k: &Norm| {
            n.gamma = n.gamma.map(|g| set(g, &p[k.gamma], ids[k.gamma]));
            n.beta = n.beta.map(|b| set(b, &p[k.beta], ids[k.beta]));
            n
        };
        let block = |mut r: ResBlock<B>, k: &Block| {
            r.norm1 = norm(r.norm1, &k.norm1);
            r.conv1 = conv(r.conv1, &k.conv1);
            r.norm2 = norm(r.norm2, &k.norm2);
            r.conv2 = conv(r.conv2, &k.conv2);
            r
        };
        let a = &self.arch;
        net.stem = conv(net.stem, &a.stem);
        net.encoders = net
            .encoders
            .into_iter()
            .zip(&a.encoders)
            .map(|(r, k)| block(r, k))
            .collect();
        net.downs = net
            .downs
            .into_iter()
            .zip(&a.downs)
            .map(|(c, k)| conv(c, k))
            .collect();
        net.ups = net
            .ups
            .into_iter()
            .zip(&a.ups)
            .map(|(mut c, k)| {
                c.weight = set(c.weight, &p[k.w], ids[k.w]);
                c.bias = c.bias.map(|b| set(b, &p[k.b], ids[k.b]));
                c
            })
            .collect();
        net.decoders = net
            .decoders
            .into_iter()
            .zip(&a.decoders)
            .map(|(r, k)| block(r, k))
            .collect();
        net.head_norm = norm(net.head_norm, &a.head_norm);
        net.head = conv(net.head, &a.head);
        net
    }

    pub fn optimizer(&self) -> OptimizerKind {
        self.optimizer
    }

    /// Sizes must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << self.arch.downs.len()
    }

    /// The learnables (burn's visiting order is not implied).
    pub fn params(&self) -> &[Learnable] {
        &self.params
    }

    fn refresh_flipped(&mut self) {
        let mut flipped = std::mem::take(&mut self.flipped);
        flipped.resize(self.params.len(), Vec::new());
        let a = &self.arch;
        let convs = a
            .encoders
            .iter()
            .chain(&a.decoders)
            .flat_map(|b| [b.conv1, b.conv2])
            .chain([a.stem]);
        for c in convs {
            flip_transpose(&self.params[c.w].value, c.cin, c.cout, &mut flipped[c.w]);
        }
        self.flipped = flipped;
    }

    fn check(&self, batch: usize, dims: [usize; 3], lens: [usize; 3]) -> Result<usize, Error> {
        let m = self.size_multiple();
        if batch == 0 || dims.iter().any(|&d| d == 0 || d % m != 0) {
            return Err(Error::Input(format!(
                "patch {dims:?} × batch {batch}: sizes must be positive multiples of {m}"
            )));
        }
        let n: usize = dims.iter().product();
        if lens.iter().any(|&l| l != n * batch) {
            return Err(Error::Input(format!(
                "batch buffers of {lens:?} values for {batch} patches of {dims:?}"
            )));
        }
        Ok(n)
    }

    /// Loss of a batch and the gradients of every learnable, accumulated
    /// into each [`Learnable::grad`] (no update). Patches are x-fastest,
    /// one after the other.
    pub fn gradients(
        &mut self,
        kind: LossKind,
        image: &[f32],
        target: &[f32],
        weights: &[f32],
        batch: usize,
        dims: [usize; 3],
    ) -> Result<f32, Error> {
        let n = self.check(batch, dims, [image.len(), target.len(), weights.len()])?;
        if self.workspaces.first().is_some_and(|w| w.dims != dims) {
            self.workspaces.clear();
        }
        while self.workspaces.len() < batch {
            self.workspaces
                .push(Workspace::new(&self.arch, &self.params, dims));
        }
        let Self {
            arch,
            params,
            flipped,
            workspaces,
            ..
        } = self;
        let ws = &mut workspaces[..batch];
        ws.par_iter_mut()
            .zip(image.par_chunks(n))
            .for_each(|(w, img)| arch.forward(params, w, img));
        let logits: Vec<f32> = ws.iter().flat_map(|w| w.logits.iter().copied()).collect();
        let mut dlogits = vec![0f32; logits.len()];
        let value = loss::loss_and_grad(kind, &logits, target, weights, &mut dlogits);
        ws.par_iter_mut()
            .zip(dlogits.par_chunks(n))
            .for_each(|(w, g)| {
                for v in w.grads.iter_mut() {
                    v.fill(0.0);
                }
                arch.backward(params, flipped, w, g);
            });
        for (i, p) in params.iter_mut().enumerate() {
            for w in ws.iter() {
                p.grad
                    .iter_mut()
                    .zip(&w.grads[i])
                    .for_each(|(a, b)| *a += b);
            }
        }
        Ok(value)
    }

    /// One optimiser step with the accumulated gradients (then zeroed).
    pub fn apply(&mut self, lr: f64) {
        let kind = self.optimizer;
        for p in &mut self.params {
            p.step(kind, lr);
        }
        self.refresh_flipped();
    }

    /// Forward, loss, backward and one optimiser step; returns the loss.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        kind: LossKind,
        image: &[f32],
        target: &[f32],
        weights: &[f32],
        batch: usize,
        dims: [usize; 3],
        lr: f64,
    ) -> Result<f32, Error> {
        let l = self.gradients(kind, image, target, weights, batch, dims)?;
        self.apply(lr);
        Ok(l)
    }

    /// The smallest |pre-activation| of any ReLU in the last forward pass
    /// (see `Arch::closest_to_kink`), for checks against a reference.
    pub fn closest_to_kink(&self) -> f32 {
        self.workspaces
            .iter()
            .map(|w| self.arch.closest_to_kink(&self.params, w))
            .fold(f32::INFINITY, f32::min)
    }

    /// ∂L/∂image of each patch of the last [`Self::gradients`] call
    /// (x-fastest), when [`Self::keep_input_gradients`] was set before it.
    pub fn input_gradients(&self) -> Vec<Vec<f32>> {
        self.workspaces
            .iter()
            .filter_map(|w| {
                let a = w.dinput.as_ref()?;
                let [nx, ny, nz] = a.dims;
                let mut out = Vec::with_capacity(nx * ny * nz);
                for z in 0..nz {
                    for y in 0..ny {
                        let p = a.pos(0, y, z);
                        out.extend_from_slice(&a.data[p..p + nx]);
                    }
                }
                Some(out)
            })
            .collect()
    }

    /// Makes the next [`Self::gradients`] also compute ∂L/∂image (for
    /// checks against burn; training does not need it).
    pub fn keep_input_gradients(&mut self, batch: usize, dims: [usize; 3]) {
        self.workspaces.clear();
        for _ in 0..batch {
            let mut w = Workspace::new(&self.arch, &self.params, dims);
            w.dinput = Some(crate::fast::kernels::Act::zeros(1, dims));
            self.workspaces.push(w);
        }
    }

    /// Adds `delta` to element `i` (burn's order) of learnable `p`, for
    /// finite-difference checks.
    pub fn perturb(&mut self, p: usize, i: usize, delta: f32) {
        let l = &mut self.params[p];
        let mut v = l.burn_values();
        v[i] += delta;
        l.value = l.layout.pack(&v);
        self.refresh_flipped();
    }

    /// Sets the accumulated gradient of learnable `p` from burn-ordered
    /// values (to check the optimisers on given gradients).
    pub fn set_burn_grad(&mut self, p: usize, g: &[f32]) {
        let l = &mut self.params[p];
        l.grad = l.layout.pack(g);
    }

    /// Logits of one image (x-fastest), for tests and checks.
    pub fn logits(&mut self, image: &[f32], dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        let n = self.check(1, dims, [image.len(); 3])?;
        let mut ws = Workspace::new(&self.arch, &self.params, dims);
        self.arch.forward(&self.params, &mut ws, image);
        debug_assert_eq!(ws.logits.len(), n);
        Ok(ws.logits)
    }
}
