//! The fast CPU inference path for the 3D U-Net: the same weights and the
//! same arithmetic as [`crate::unet::UNet::forward`], on channels-last
//! activations with convolutions as GEMMs ([`kernels`]).
//!
//! One source of truth for the architecture: [`FastUNet::from_unet`] reads
//! the burn module (loaded from the model file as for any backend) and
//! packs its weights once; the layer sequence mirrors `UNet::forward` line
//! for line, and tests compare the two on random weights and inputs.
//! Fused where the arithmetic allows: bias into the output initialisation,
//! the residual addition into the second convolution's accumulator, the
//! skip addition into the transposed convolution's scatter, group norm +
//! ReLU into one pass, and the head's norm, ReLU, 1×1×1 convolution and
//! sigmoid into another. Buffers are reused across levels: the encoder
//! output of each level is the skip that the decoder adds into in place.

pub mod grad;
pub mod kernels;
pub mod narrow;
pub mod train;

use burn::module::Param;
use burn::nn::conv::{Conv3d, ConvTranspose3d};
use burn::nn::GroupNorm;
use burn::tensor::{backend::Backend, Tensor};
use rayon::prelude::*;

use kernels::{conv3, down, gn_relu, up_add, Act};

use crate::unet::{ResBlock, UNet};
use crate::Error;

fn values<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Result<Vec<f32>, Error> {
    p.val()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Input(format!("cannot read a weight tensor: {e:?}")))
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    groups: usize,
    eps: f64,
}

impl Norm {
    fn from<B: Backend>(n: &GroupNorm<B>) -> Result<Self, Error> {
        let c = n.num_channels;
        Ok(Self {
            gamma: n
                .gamma
                .as_ref()
                .map(values)
                .transpose()?
                .unwrap_or_else(|| vec![1.0; c]),
            beta: n
                .beta
                .as_ref()
                .map(values)
                .transpose()?
                .unwrap_or_else(|| vec![0.0; c]),
            groups: n.num_groups,
            eps: n.epsilon,
        })
    }
}

/// A convolution with packed weights and its bias.
struct Conv {
    w: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
}

impl Conv {
    /// 3×3×3 (or 2×2×2) convolution: burn's `[cout, cin, kz, ky, kx]` to
    /// `[tap][cin][cout]`.
    fn from_conv<B: Backend>(c: &Conv3d<B>) -> Result<Self, Error> {
        let d = c.weight.val().dims();
        let (cout, cin, taps) = (d[0], d[1], d[2] * d[3] * d[4]);
        let w = pack(&values(&c.weight)?, [cout, cin, taps], |co, ci, t| {
            (t * cin + ci) * cout + co
        });
        Self::with_bias(w, c.bias.as_ref(), cin, cout)
    }

    /// Transposed 2×2×2: burn's `[cin, cout, kz, ky, kx]` to
    /// `[cin][tap·cout + co]`.
    fn from_transposed<B: Backend>(c: &ConvTranspose3d<B>) -> Result<Self, Error> {
        let d = c.weight.val().dims();
        let (cin, cout, taps) = (d[0], d[1], d[2] * d[3] * d[4]);
        let w = pack(&values(&c.weight)?, [cin, cout, taps], |ci, co, t| {
            ci * taps * cout + t * cout + co
        });
        Self::with_bias(w, c.bias.as_ref(), cin, cout)
    }

    fn with_bias<B: Backend>(
        w: Vec<f32>,
        bias: Option<&Param<Tensor<B, 1>>>,
        cin: usize,
        cout: usize,
    ) -> Result<Self, Error> {
        let bias = bias
            .map(values)
            .transpose()?
            .unwrap_or_else(|| vec![0.0; cout]);
        Ok(Self { w, bias, cin, cout })
    }
}

/// Moves element `[a][b][t]` of `src` (dims `[na, nb, nt]`) to `to(a, b, t)`.
fn pack(
    src: &[f32],
    [na, nb, nt]: [usize; 3],
    to: impl Fn(usize, usize, usize) -> usize,
) -> Vec<f32> {
    let mut w = vec![0f32; src.len()];
    for a in 0..na {
        for b in 0..nb {
            for t in 0..nt {
                w[to(a, b, t)] = src[(a * nb + b) * nt + t];
            }
        }
    }
    w
}

struct Block {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
}

impl Block {
    fn from<B: Backend>(b: &ResBlock<B>) -> Result<Self, Error> {
        Ok(Self {
            norm1: Norm::from(&b.norm1)?,
            conv1: Conv::from_conv(&b.conv1)?,
            norm2: Norm::from(&b.norm2)?,
            conv2: Conv::from_conv(&b.conv2)?,
        })
    }

    /// x ← x + conv2(relu(norm2(conv1(relu(norm1(x)))))); `t` and `h` are
    /// scratch buffers of x's shape (`t`'s pads zero).
    fn forward(&self, x: &mut Act, t: &mut Act, h: &mut Act) {
        let n = &self.norm1;
        gn_relu(x, &n.gamma, &n.beta, n.groups, n.eps, t);
        conv3(t, &self.conv1.w, &self.conv1.bias, h, false);
        let n = &self.norm2;
        gn_relu(h, &n.gamma, &n.beta, n.groups, n.eps, t);
        conv3(t, &self.conv2.w, &self.conv2.bias, x, true);
    }
}

/// The U-Net with packed weights, ready for fast CPU inference.
pub struct FastUNet {
    stem: Conv,
    encoders: Vec<Block>,
    downs: Vec<Conv>,
    ups: Vec<Conv>,
    decoders: Vec<Block>,
    head_norm: Norm,
    head: Conv,
}

impl FastUNet {
    /// Packs the weights of a burn U-Net (any backend).
    pub fn from_unet<B: Backend>(net: &UNet<B>) -> Result<Self, Error> {
        Ok(Self {
            stem: Conv::from_conv(&net.stem)?,
            encoders: net
                .encoders
                .iter()
                .map(Block::from)
                .collect::<Result<_, _>>()?,
            downs: net
                .downs
                .iter()
                .map(Conv::from_conv)
                .collect::<Result<_, _>>()?,
            ups: net
                .ups
                .iter()
                .map(Conv::from_transposed)
                .collect::<Result<_, _>>()?,
            decoders: net
                .decoders
                .iter()
                .map(Block::from)
                .collect::<Result<_, _>>()?,
            head_norm: Norm::from(&net.head_norm)?,
            head: Conv::from_conv(&net.head)?,
        })
    }

    /// Sizes must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << self.downs.len()
    }

    /// Multiply–adds of one forward pass over `dims` voxels (convolutions
    /// only), for GFLOP/s figures.
    pub fn macs(&self, dims: [usize; 3]) -> f64 {
        let mut v = (dims[0] * dims[1] * dims[2]) as f64;
        let c3 = |c: &Conv| 27.0 * (c.cin * c.cout) as f64;
        let mut total = v * c3(&self.stem);
        for (l, e) in self.encoders.iter().enumerate() {
            total += v * (c3(&e.conv1) + c3(&e.conv2));
            if let Some(d) = self.decoders.get(l) {
                total += v * (c3(&d.conv1) + c3(&d.conv2));
            }
            if let Some(d) = self.downs.get(l) {
                // Down (v/8 outputs × 8 taps) and up (v/8 inputs × 8 taps):
                // v·cin·cout multiply-adds each.
                total += 2.0 * v * (d.cin * d.cout) as f64;
            }
            v /= 8.0;
        }
        total + (dims[0] * dims[1] * dims[2] * self.head.cin) as f64
    }

    /// Sigmoid probabilities of a single-channel image (x-fastest, sizes
    /// multiples of [`Self::size_multiple`]), x-fastest.
    pub fn predict(&self, image: &[f32], dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        let [nx, ny, nz] = dims;
        let m = self.size_multiple();
        if image.len() != nx * ny * nz || dims.iter().any(|&d| d == 0 || d % m != 0) {
            return Err(Error::Input(format!(
                "a window of {} values for {dims:?} voxels (sizes must be multiples of {m})",
                image.len()
            )));
        }
        let mut input = Act::zeros(1, dims);
        for z in 0..nz {
            for y in 0..ny {
                let p = input.pos(0, y, z);
                input.data[p..p + nx].copy_from_slice(&image[nx * (y + ny * z)..][..nx]);
            }
        }
        let mut x = Act::zeros(self.stem.cout, dims);
        conv3(&input, &self.stem.w, &self.stem.bias, &mut x, false);
        drop(input);
        // Encoder: each level's output stays as the skip of that level.
        let mut skips: Vec<Act> = Vec::new();
        // Scratch buffers per level, kept for the decoder (t's pads stay
        // zero: only interiors are written).
        let mut scratch: Vec<(Act, Act)> = Vec::new();
        for (l, enc) in self.encoders.iter().enumerate() {
            let mut t = Act::zeros(x.c, x.dims);
            let mut h = Act::zeros(x.c, x.dims);
            enc.forward(&mut x, &mut t, &mut h);
            scratch.push((t, h));
            if let Some(d) = self.downs.get(l) {
                let next = down(&x, &d.w, &d.bias, d.cout);
                skips.push(std::mem::replace(&mut x, next));
            }
        }
        // Decoder: up-sample into the skip buffer, then the block.
        for l in (0..self.ups.len()).rev() {
            let mut s = skips
                .pop()
                .unwrap_or_else(|| unreachable!("one skip per level"));
            let u = &self.ups[l];
            up_add(&x, &u.w, &u.bias, &mut s);
            x = s;
            let (t, h) = &mut scratch[l];
            self.decoders[l].forward(&mut x, t, h);
        }
        let t = scratch.swap_remove(0).0;
        Ok(self.head_probabilities(&x, t))
    }

    /// sigmoid(head(relu(head_norm(x)))) over the interior, x-fastest.
    fn head_probabilities(&self, x: &Act, mut t: Act) -> Vec<f32> {
        let [nx, ny, nz] = x.dims;
        let c = x.c;
        let n = &self.head_norm;
        gn_relu(x, &n.gamma, &n.beta, n.groups, n.eps, &mut t);
        let w = &self.head.w; // [1 tap][cin][1]
        let b = self.head.bias[0];
        let mut out = vec![0f32; nx * ny * nz];
        out.par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(z, plane)| {
                for y in 0..ny {
                    let p = t.pos(0, y, z) * c;
                    for (xo, px) in t.data[p..p + nx * c].chunks_exact(c).enumerate() {
                        let logit: f32 = px.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b;
                        plane[xo + nx * y] = 1.0 / (1.0 + (-logit).exp());
                    }
                }
            });
        out
    }
}
