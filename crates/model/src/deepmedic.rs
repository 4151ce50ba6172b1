//! DeepMedic (Kamnitsas et al. 2017), compared in the paper: a normal
//! pathway of 3×3×3 convolutions at full resolution and a low-resolution
//! pathway on the input averaged over 3×3×3 blocks, upsampled back ×3
//! (nearest), concatenated, then two fully connected layers (1×1×1
//! convolutions) and the output. Here every convolution pads to keep the
//! size ("patch in, logits out" like the other networks; the original shrinks
//! its input), with group norm and ReLU. Valid sizes: multiples of 3.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::{activation::relu, backend::Backend, Tensor};

use crate::unet::{conv3, groups};

/// Down/upsampling factor of the low-resolution pathway (the paper: 3).
pub const LOW_RES_FACTOR: usize = 3;

#[derive(Config, Debug, PartialEq)]
pub struct DeepMedicConfig {
    #[config(default = 1)]
    pub in_channels: usize,
    /// Channels of the convolutions of each pathway (the original: 30, 30,
    /// 40, 40, 40, 40, 50, 50).
    #[config(default = "vec![16, 16, 32, 32, 32, 32]")]
    pub widths: Vec<usize>,
    /// Channels of the fully connected layers (the original: 150).
    #[config(default = 64)]
    pub fc: usize,
}

#[derive(Module, Debug)]
pub struct Pathway<B: Backend> {
    convs: Vec<Conv3d<B>>,
    norms: Vec<GroupNorm<B>>,
}

impl<B: Backend> Pathway<B> {
    fn new(c_in: usize, widths: &[usize], device: &B::Device) -> Self {
        let mut prev = c_in;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for &w in widths {
            convs.push(conv3(prev, w).init(device));
            norms.push(GroupNormConfig::new(groups(w), w).init(device));
            prev = w;
        }
        Self { convs, norms }
    }

    fn forward(&self, mut h: Tensor<B, 5>) -> Tensor<B, 5> {
        for (c, n) in self.convs.iter().zip(&self.norms) {
            h = relu(n.forward(c.forward(h)));
        }
        h
    }
}

#[derive(Module, Debug)]
pub struct DeepMedic<B: Backend> {
    normal: Pathway<B>,
    low: Pathway<B>,
    fc1: Conv3d<B>,
    fc2: Conv3d<B>,
    head: Conv3d<B>,
}

impl DeepMedicConfig {
    pub fn size_multiple(&self) -> usize {
        LOW_RES_FACTOR
    }

    /// Receptive field (voxels per axis): the low pathway's, which sees
    /// 3 × (1 + 2·layers) voxels.
    pub fn receptive_field(&self) -> usize {
        LOW_RES_FACTOR * (1 + 2 * self.widths.len())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> DeepMedic<B> {
        let last = self.widths.last().copied().unwrap_or(self.in_channels);
        DeepMedic {
            normal: Pathway::new(self.in_channels, &self.widths, device),
            low: Pathway::new(self.in_channels, &self.widths, device),
            fc1: Conv3dConfig::new([2 * last, self.fc], [1, 1, 1]).init(device),
            fc2: Conv3dConfig::new([self.fc, self.fc], [1, 1, 1]).init(device),
            head: Conv3dConfig::new([self.fc, 1], [1, 1, 1]).init(device),
        }
    }
}

/// Mean over 3×3×3 blocks.
fn down<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    let [b, c, d, h, w] = x.dims();
    let f = LOW_RES_FACTOR;
    x.reshape([b * c, d / f, f, h / f, f, w / f, f])
        .mean_dim(2)
        .mean_dim(4)
        .mean_dim(6)
        .reshape([b, c, d / f, h / f, w / f])
}

/// Nearest-neighbour upsampling ×3.
fn up<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    let [b, c, d, h, w] = x.dims();
    let f = LOW_RES_FACTOR;
    x.reshape([b * c, d, 1, h, 1, w, 1])
        .expand([b * c, d, f, h, f, w, f])
        .reshape([b, c, d * f, h * f, w * f])
}

impl<B: Backend> DeepMedic<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let n = self.normal.forward(x.clone());
        let l = up(self.low.forward(down(x)));
        let h = relu(self.fc1.forward(Tensor::cat(vec![n, l], 1)));
        let h = relu(self.fc2.forward(h));
        self.head.forward(h)
    }
}
