//! The paper's final network: a residual 3D U-Net with pre-activation
//! blocks (norm → ReLU → conv, twice, plus the input), strided 2×2×2
//! convolutions down, transposed 2×2×2 convolutions up, and **additive**
//! skips (the decoder adds the encoder's features instead of
//! concatenating them), as in the authors' public variant.
//!
//! Normalisation is group norm (8 groups, fewer for narrow layers): it does
//! not depend on the batch, so batches of 1–4 patches train as well as large
//! ones (batch norm's statistics are noisy there); instance norm is group
//! norm with one channel per group.
//!
//! Valid input sizes: every spatial size divisible by 2^(levels − 1).
//! Receptive field ([`UNetConfig::receptive_field`]): each level adds two
//! 3×3×3 convolutions at its resolution on the way down and two on the way
//! up; with the default widths 16–32–64–128 (4 levels) an output voxel sees
//! 98 voxels along each axis (98 mm at 1 mm spacing), enough for a 3 cm
//! lesion and its surroundings.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig3d};
use burn::tensor::{activation::relu, backend::Backend, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Groups of the group norm (capped by the channel count).
pub const NORM_GROUPS: usize = 8;

#[derive(Config, Debug, PartialEq)]
pub struct UNetConfig {
    #[config(default = 1)]
    pub in_channels: usize,
    /// Channels per level, top to bottom (the authors' default starts at 16).
    #[config(default = "vec![16, 32, 64, 128]")]
    pub widths: Vec<usize>,
}

pub(crate) fn groups(channels: usize) -> usize {
    let mut g = NORM_GROUPS.min(channels).max(1);
    while channels % g != 0 {
        g -= 1;
    }
    g
}

pub(crate) fn conv3(c_in: usize, c_out: usize) -> Conv3dConfig {
    Conv3dConfig::new([c_in, c_out], [3, 3, 3]).with_padding(PaddingConfig3d::Explicit(1, 1, 1))
}

/// Strided 2×2×2 convolutions from each level to the next (widths[i] → widths[i+1]).
pub(crate) fn downsamplers<B: Backend>(w: &[usize], device: &B::Device) -> Vec<Conv3d<B>> {
    w.windows(2)
        .map(|p| {
            Conv3dConfig::new([p[0], p[1]], [2, 2, 2])
                .with_stride([2, 2, 2])
                .init(device)
        })
        .collect()
}

/// Transposed 2×2×2 convolutions back up (widths[i+1] → widths[i]).
pub(crate) fn upsamplers<B: Backend>(w: &[usize], device: &B::Device) -> Vec<ConvTranspose3d<B>> {
    w.windows(2)
        .map(|p| {
            ConvTranspose3dConfig::new([p[1], p[0]], [2, 2, 2])
                .with_stride([2, 2, 2])
                .init(device)
        })
        .collect()
}

/// Pre-activation residual block.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv3d<B>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv3d<B>,
}

impl<B: Backend> ResBlock<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            norm1: GroupNormConfig::new(groups(channels), channels).init(device),
            conv1: conv3(channels, channels).init(device),
            norm2: GroupNormConfig::new(groups(channels), channels).init(device),
            conv2: conv3(channels, channels).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let h = self.conv1.forward(relu(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(relu(self.norm2.forward(h)));
        x + h
    }
}

#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    pub stem: Conv3d<B>,
    pub encoders: Vec<ResBlock<B>>,
    pub downs: Vec<Conv3d<B>>,
    pub ups: Vec<ConvTranspose3d<B>>,
    pub decoders: Vec<ResBlock<B>>,
    pub head_norm: GroupNorm<B>,
    pub head: Conv3d<B>,
}

impl UNetConfig {
    pub fn levels(&self) -> usize {
        self.widths.len()
    }

    /// Spatial sizes must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << (self.levels().saturating_sub(1))
    }

    /// Receptive field in voxels along each axis: the stem and every 3×3×3
    /// convolution add 2 voxels at their level's scale; downsampling by 2
    /// adds 1 voxel at the finer scale and doubles later contributions.
    pub fn receptive_field(&self) -> usize {
        let mut rf = 3usize; // stem
        let mut jump = 1usize;
        let n = self.levels();
        for level in 0..n {
            rf += 2 * 2 * jump; // encoder block: two 3×3×3
            if level + 1 < n {
                rf += jump; // 2×2×2 stride-2 convolution
                jump *= 2;
            }
        }
        for _ in 1..n {
            jump /= 2;
            rf += 2 * 2 * jump; // decoder block
        }
        rf
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet<B> {
        let w = &self.widths;
        let n = w.len().max(1);
        let top = w.first().copied().unwrap_or(16);
        UNet {
            stem: conv3(self.in_channels, top).init(device),
            encoders: (0..n).map(|i| ResBlock::new(w[i], device)).collect(),
            downs: downsamplers(w, device),
            ups: upsamplers(w, device),
            decoders: (0..n - 1).map(|i| ResBlock::new(w[i], device)).collect(),
            head_norm: GroupNormConfig::new(groups(top), top).init(device),
            head: Conv3dConfig::new([top, 1], [1, 1, 1]).init(device),
        }
    }
}

/// Draws a parameter's values U(±bound) from `rng` (keeping its id).
fn uniform<B: Backend, const D: usize>(
    p: Param<Tensor<B, D>>,
    bound: f64,
    rng: &mut ChaCha8Rng,
) -> Param<Tensor<B, D>> {
    let t = p.val();
    let (dims, device) = (t.dims(), t.device());
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    let t = Tensor::from_data(TensorData::new(v, dims.to_vec()), &device);
    Param::initialized(p.id, t.require_grad())
}

/// burn's default initialisation of a convolution (either kind): weights
/// and bias U(±1/√fan_in), fan_in = weight dims[1] × kernel volume
/// (Kaiming uniform with gain 1/√3, as `Conv3dConfig` and
/// `ConvTranspose3dConfig` do).
fn seeded_weight_and_bias<B: Backend>(
    w: Param<Tensor<B, 5>>,
    b: Option<Param<Tensor<B, 1>>>,
    rng: &mut ChaCha8Rng,
) -> (Param<Tensor<B, 5>>, Option<Param<Tensor<B, 1>>>) {
    let d = w.val().dims();
    let bound = 1.0 / ((d[1] * d[2] * d[3] * d[4]) as f64).sqrt();
    let w = uniform(w, bound, rng);
    (w, b.map(|b| uniform(b, bound, rng)))
}

impl UNetConfig {
    /// [`UNetConfig::init`] with weights drawn from a ChaCha8 stream of
    /// `seed` (burn's default distributions; group norms γ = 1, β = 0), in
    /// a fixed order: the same seed gives the same network on every
    /// backend and engine, whatever else draws from burn's global RNG.
    pub fn init_seeded<B: Backend>(&self, device: &B::Device, seed: u64) -> UNet<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = self.init::<B>(device);
        let r = &mut rng;
        let conv = |mut c: Conv3d<B>, r: &mut ChaCha8Rng| {
            (c.weight, c.bias) = seeded_weight_and_bias(c.weight, c.bias, r);
            c
        };
        net.stem = conv(net.stem, r);
        for b in net.encoders.iter_mut().chain(net.decoders.iter_mut()) {
            b.conv1 = conv(b.conv1.clone(), r);
            b.conv2 = conv(b.conv2.clone(), r);
        }
        net.downs = net.downs.into_iter().map(|c| conv(c, r)).collect();
        net.ups = net
            .ups
            .into_iter()
            .map(|mut c| {
                (c.weight, c.bias) = seeded_weight_and_bias(c.weight, c.bias, r);
                c
            })
            .collect();
        net.head = conv(net.head, r);
        net
    }
}

impl<B: Backend> UNet<B> {
    /// `[batch, channels, x, y, z]` → logits `[batch, 1, x, y, z]`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let mut h = self.stem.forward(x);
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (i, enc) in self.encoders.iter().enumerate() {
            h = enc.forward(h);
            if i < self.downs.len() {
                skips.push(h.clone());
                h = self.downs[i].forward(h);
            }
        }
        for i in (0..self.ups.len()).rev() {
            let skip = skips.pop().unwrap_or_else(|| h.clone());
            h = self.ups[i].forward(h) + skip;
            h = self.decoders[i].forward(h);
        }
        self.head.forward(relu(self.head_norm.forward(h)))
    }
}
