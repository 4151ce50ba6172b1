//! V-Net (Milletari et al. 2016), compared in the paper: stages of 1, 2, 3,
//! 3 convolutions of 5×5×5 with PReLU, each stage residual (its input is
//! added to its output), strided 2×2×2 convolutions down, transposed
//! convolutions up, and skips by **concatenation** (reduced back by a
//! 1×1×1 convolution before the decoder stage). Group norm before each
//! activation (the original had none; it steadies training with batches of
//! 1–4). Valid sizes: multiples of 2^(levels − 1).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d};
use burn::nn::{GroupNorm, GroupNormConfig, PRelu, PReluConfig, PaddingConfig3d};
use burn::tensor::{backend::Backend, Tensor};

use crate::unet::{downsamplers, groups, upsamplers};

#[derive(Config, Debug, PartialEq)]
pub struct VNetConfig {
    #[config(default = 1)]
    pub in_channels: usize,
    #[config(default = "vec![16, 32, 64, 128]")]
    pub widths: Vec<usize>,
    /// 5×5×5 convolutions per stage, top to bottom (the paper: 1, 2, 3, 3, 3).
    #[config(default = "vec![1, 2, 3, 3]")]
    pub convs: Vec<usize>,
}

fn conv5(c_in: usize, c_out: usize) -> Conv3dConfig {
    Conv3dConfig::new([c_in, c_out], [5, 5, 5]).with_padding(PaddingConfig3d::Explicit(2, 2, 2))
}

#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    norms: Vec<GroupNorm<B>>,
    acts: Vec<PRelu<B>>,
    convs: Vec<Conv3d<B>>,
}

impl<B: Backend> Stage<B> {
    fn new(c: usize, n: usize, device: &B::Device) -> Self {
        Self {
            norms: (0..n)
                .map(|_| GroupNormConfig::new(groups(c), c).init(device))
                .collect(),
            acts: (0..n).map(|_| PReluConfig::new().init(device)).collect(),
            convs: (0..n).map(|_| conv5(c, c).init(device)).collect(),
        }
    }

    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let mut h = x.clone();
        for ((n, a), c) in self.norms.iter().zip(&self.acts).zip(&self.convs) {
            h = c.forward(a.forward(n.forward(h)));
        }
        x + h
    }
}

#[derive(Module, Debug)]
pub struct VNet<B: Backend> {
    input: Conv3d<B>,
    encoders: Vec<Stage<B>>,
    downs: Vec<Conv3d<B>>,
    ups: Vec<ConvTranspose3d<B>>,
    merges: Vec<Conv3d<B>>,
    decoders: Vec<Stage<B>>,
    head: Conv3d<B>,
}

impl VNetConfig {
    pub fn levels(&self) -> usize {
        self.widths.len()
    }

    pub fn size_multiple(&self) -> usize {
        1 << self.levels().saturating_sub(1)
    }

    fn convs_at(&self, level: usize) -> usize {
        self.convs.get(level).copied().unwrap_or(3).max(1)
    }

    /// Receptive field (voxels per axis): each 5×5×5 convolution adds 4
    /// voxels at its scale, each downsampling 1.
    pub fn receptive_field(&self) -> usize {
        let n = self.levels();
        let (mut rf, mut jump) = (5usize, 1usize);
        for level in 0..n {
            rf += 4 * self.convs_at(level) * jump;
            if level + 1 < n {
                rf += jump;
                jump *= 2;
            }
        }
        for level in (0..n.saturating_sub(1)).rev() {
            jump /= 2;
            rf += 4 * self.convs_at(level) * jump;
        }
        rf
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> VNet<B> {
        let w = &self.widths;
        let n = w.len().max(1);
        VNet {
            input: conv5(self.in_channels, w[0]).init(device),
            encoders: (0..n)
                .map(|i| Stage::new(w[i], self.convs_at(i), device))
                .collect(),
            downs: downsamplers(w, device),
            ups: upsamplers(w, device),
            merges: (0..n - 1)
                .map(|i| Conv3dConfig::new([2 * w[i], w[i]], [1, 1, 1]).init(device))
                .collect(),
            decoders: (0..n - 1)
                .map(|i| Stage::new(w[i], self.convs_at(i), device))
                .collect(),
            head: Conv3dConfig::new([w[0], 1], [1, 1, 1]).init(device),
        }
    }
}

impl<B: Backend> VNet<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let mut h = self.input.forward(x);
        let mut skips = Vec::new();
        for (i, enc) in self.encoders.iter().enumerate() {
            h = enc.forward(h);
            if i < self.downs.len() {
                skips.push(h.clone());
                h = self.downs[i].forward(h);
            }
        }
        for i in (0..self.ups.len()).rev() {
            let up = self.ups[i].forward(h);
            let skip = skips.pop().unwrap_or_else(|| up.clone());
            h = self.merges[i].forward(Tensor::cat(vec![up, skip], 1));
            h = self.decoders[i].forward(h);
        }
        self.head.forward(h)
    }
}
