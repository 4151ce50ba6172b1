//! Forward pass with the activations backward needs, and the backward
//! pass, of the residual U-Net ([`crate::unet::UNet`]) on one sample.
//!
//! The layer sequence mirrors `UNet::forward` line for line; every buffer
//! lives in a [`Workspace`] that is allocated once per patch size and
//! reused by every step. Per level the encoder block keeps its input, both
//! group-norm outputs, the first convolution's output and its own output
//! (the skip); the decoder block the same; gradients flow through three
//! scratch buffers per level, the block's gradient buffer being updated in
//! place (the residual: ∂L/∂in = ∂L/∂out + the branch's contribution).

use crate::fast::grad::{
    conv3_wgrad, down_backward, gn_relu_backward, head_backward, head_forward, up_backward,
};
use crate::fast::kernels::{
    conv3, down_into, gn_relu_with, group_stats, up_add, zero_pads, Act, GroupStat,
};

use super::params::Learnable;

/// A convolution: indices of its weight and bias among the learnables.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv {
    pub w: usize,
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
}

/// A group norm: indices of γ and β.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Norm {
    pub gamma: usize,
    pub beta: usize,
    pub groups: usize,
    pub eps: f64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub norm1: Norm,
    pub conv1: Conv,
    pub norm2: Norm,
    pub conv2: Conv,
}

/// The U-Net's layers as indices into the learnables.
#[derive(Clone, Debug)]
pub(crate) struct Arch {
    pub stem: Conv,
    pub encoders: Vec<Block>,
    pub downs: Vec<Conv>,
    pub ups: Vec<Conv>,
    pub decoders: Vec<Block>,
    pub head_norm: Norm,
    pub head: Conv,
}

/// Saved activations of one residual block.
struct BlockSaved {
    input: Act,
    t1: Act,
    h: Act,
    t2: Act,
    out: Act,
    stats1: Vec<GroupStat>,
    stats2: Vec<GroupStat>,
}

impl BlockSaved {
    fn new(c: usize, dims: [usize; 3]) -> Self {
        Self {
            input: Act::zeros(c, dims),
            t1: Act::zeros(c, dims),
            h: Act::zeros(c, dims),
            t2: Act::zeros(c, dims),
            out: Act::zeros(c, dims),
            stats1: Vec::new(),
            stats2: Vec::new(),
        }
    }
}

struct Level {
    enc: BlockSaved,
    dec: Option<BlockSaved>,
    /// Gradient flowing through the level (block output → block input).
    g: Act,
    s1: Act,
    s2: Act,
}

/// Every buffer of one sample's forward and backward pass.
pub(crate) struct Workspace {
    pub dims: [usize; 3],
    input: Act,
    levels: Vec<Level>,
    head_t: Act,
    head_stats: Vec<GroupStat>,
    pub logits: Vec<f32>,
    /// ∂L/∂image, computed only when present (tests compare it with burn).
    pub dinput: Option<Act>,
    /// Gradients of every learnable from this sample.
    pub grads: Vec<Vec<f32>>,
}

impl Workspace {
    pub fn new(arch: &Arch, params: &[Learnable], dims: [usize; 3]) -> Self {
        let levels = arch.encoders.len();
        let mut d = dims;
        let mut lv = Vec::with_capacity(levels);
        for l in 0..levels {
            let c = arch.encoders[l].conv1.cin;
            lv.push(Level {
                enc: BlockSaved::new(c, d),
                dec: (l + 1 < levels).then(|| BlockSaved::new(c, d)),
                g: Act::zeros(c, d),
                s1: Act::zeros(c, d),
                s2: Act::zeros(c, d),
            });
            d = d.map(|n| n / 2);
        }
        Self {
            dims,
            input: Act::zeros(1, dims),
            levels: lv,
            head_t: Act::zeros(arch.head.cin, dims),
            head_stats: Vec::new(),
            logits: vec![0.0; dims.iter().product()],
            dinput: None,
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
        }
    }
}

/// Two distinct elements of a slice, mutably.
fn two<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "two distinct indices");
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

fn block_forward(b: &Block, p: &[Learnable], s: &mut BlockSaved) {
    let n = &b.norm1;
    s.stats1 = group_stats(&s.input, n.groups, n.eps);
    gn_relu_with(
        &s.input,
        &p[n.gamma].value,
        &p[n.beta].value,
        &s.stats1,
        &mut s.t1,
    );
    conv3(
        &s.t1,
        &p[b.conv1.w].value,
        &p[b.conv1.b].value,
        &mut s.h,
        false,
    );
    let n = &b.norm2;
    s.stats2 = group_stats(&s.h, n.groups, n.eps);
    gn_relu_with(
        &s.h,
        &p[n.gamma].value,
        &p[n.beta].value,
        &s.stats2,
        &mut s.t2,
    );
    s.out.data.copy_from_slice(&s.input.data);
    conv3(
        &s.t2,
        &p[b.conv2.w].value,
        &p[b.conv2.b].value,
        &mut s.out,
        true,
    );
}

/// `g` holds ∂L/∂out on entry and ∂L/∂input on return.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    b: &Block,
    p: &[Learnable],
    flipped: &[Vec<f32>],
    s: &BlockSaved,
    g: &mut Act,
    s1: &mut Act,
    s2: &mut Act,
    grads: &mut [Vec<f32>],
) {
    let zero = vec![0f32; b.conv2.cin];
    zero_pads(g);
    let (gw, gb) = two(grads, b.conv2.w, b.conv2.b);
    conv3_wgrad(&s.t2, g, gw, gb);
    conv3(g, &flipped[b.conv2.w], &zero, s1, false);
    let (gg, gbe) = two(grads, b.norm2.gamma, b.norm2.beta);
    gn_relu_backward(
        &s.h,
        &s.t2,
        &s.stats2,
        &p[b.norm2.gamma].value,
        s1,
        s2,
        false,
        gg,
        gbe,
    );
    zero_pads(s2);
    let (gw, gb) = two(grads, b.conv1.w, b.conv1.b);
    conv3_wgrad(&s.t1, s2, gw, gb);
    conv3(s2, &flipped[b.conv1.w], &zero, s1, false);
    let (gg, gbe) = two(grads, b.norm1.gamma, b.norm1.beta);
    gn_relu_backward(
        &s.input,
        &s.t1,
        &s.stats1,
        &p[b.norm1.gamma].value,
        s1,
        g,
        true,
        gg,
        gbe,
    );
}

/// Smallest |group-norm output| before a ReLU over `x`'s interior.
fn closest_to_kink(x: &Act, n: &Norm, p: &[Learnable], stats: &[GroupStat]) -> f32 {
    let c = x.c;
    let per = c / stats.len().max(1);
    let [nx, ny, nz] = x.dims;
    let mut best = f32::INFINITY;
    for z in 0..nz {
        for y in 0..ny {
            let at = x.pos(0, y, z) * c;
            for px in x.data[at..at + nx * c].chunks_exact(c) {
                for ch in 0..c {
                    let s = stats[ch / per];
                    let v = ((px[ch] as f64 - s.mean) * s.rstd * p[n.gamma].value[ch] as f64
                        + p[n.beta].value[ch] as f64) as f32;
                    best = best.min(v.abs());
                }
            }
        }
    }
    best
}

impl Arch {
    /// The smallest |pre-activation| of every ReLU in the last forward
    /// pass: where it is within float rounding of 0, f32 and f64
    /// arithmetic may take different sides of the kink (checks against a
    /// reference need data that keep away from it).
    pub fn closest_to_kink(&self, p: &[Learnable], ws: &Workspace) -> f32 {
        let mut best = f32::INFINITY;
        let blocks = ws.levels.iter().enumerate().flat_map(|(l, lv)| {
            let enc = std::iter::once((&self.encoders[l], &lv.enc));
            enc.chain(lv.dec.as_ref().map(|d| (&self.decoders[l], d)))
        });
        for (b, s) in blocks {
            best = best.min(closest_to_kink(&s.input, &b.norm1, p, &s.stats1));
            best = best.min(closest_to_kink(&s.h, &b.norm2, p, &s.stats2));
        }
        let top = ws.levels[0].dec.as_ref().unwrap_or(&ws.levels[0].enc);
        best.min(closest_to_kink(
            &top.out,
            &self.head_norm,
            p,
            &ws.head_stats,
        ))
    }

    /// Logits of one image (x-fastest, `ws.dims`) into `ws.logits`.
    pub fn forward(&self, p: &[Learnable], ws: &mut Workspace, image: &[f32]) {
        let [nx, ny, nz] = ws.dims;
        for z in 0..nz {
            for y in 0..ny {
                let at = ws.input.pos(0, y, z);
                ws.input.data[at..at + nx].copy_from_slice(&image[nx * (y + ny * z)..][..nx]);
            }
        }
        let l0 = &mut ws.levels[0].enc.input;
        conv3(
            &ws.input,
            &p[self.stem.w].value,
            &p[self.stem.b].value,
            l0,
            false,
        );
        let n = self.encoders.len();
        for l in 0..n {
            block_forward(&self.encoders[l], p, &mut ws.levels[l].enc);
            if l + 1 < n {
                let (a, b) = ws.levels.split_at_mut(l + 1);
                let d = &self.downs[l];
                down_into(
                    &a[l].enc.out,
                    &p[d.w].value,
                    &p[d.b].value,
                    &mut b[0].enc.input,
                );
            }
        }
        for l in (0..n - 1).rev() {
            let (a, b) = ws.levels.split_at_mut(l + 1);
            let x = match &b[0].dec {
                Some(d) => &d.out,
                None => &b[0].enc.out,
            };
            let lv = &mut a[l];
            let dec = lv
                .dec
                .as_mut()
                .unwrap_or_else(|| unreachable!("upper levels decode"));
            dec.input.data.copy_from_slice(&lv.enc.out.data);
            let u = &self.ups[l];
            up_add(x, &p[u.w].value, &p[u.b].value, &mut dec.input);
            block_forward(&self.decoders[l], p, dec);
        }
        let top = ws.levels[0].dec.as_ref().unwrap_or(&ws.levels[0].enc);
        let hn = &self.head_norm;
        ws.head_stats = group_stats(&top.out, hn.groups, hn.eps);
        gn_relu_with(
            &top.out,
            &p[hn.gamma].value,
            &p[hn.beta].value,
            &ws.head_stats,
            &mut ws.head_t,
        );
        head_forward(
            &ws.head_t,
            &p[self.head.w].value,
            p[self.head.b].value[0],
            &mut ws.logits,
        );
    }

    /// Accumulates ∂L/∂θ into `ws.grads` from ∂L/∂logits of this sample
    /// (after [`Self::forward`] on the same workspace). `flipped[i]` is the
    /// input-gradient kernel of 3×3×3 convolution weight `i`.
    pub fn backward(
        &self,
        p: &[Learnable],
        flipped: &[Vec<f32>],
        ws: &mut Workspace,
        dlogits: &[f32],
    ) {
        let n = self.encoders.len();
        let Workspace {
            input,
            levels,
            head_t,
            head_stats,
            grads,
            dinput,
            ..
        } = ws;
        // Head: ∂L/∂head_t into s1, then through its norm into g of level 0.
        {
            let lv = &mut levels[0];
            let (gw, gb) = two(grads, self.head.w, self.head.b);
            head_backward(
                head_t,
                &p[self.head.w].value,
                dlogits,
                gw,
                &mut gb[0],
                &mut lv.s1,
            );
            let top = lv.dec.as_ref().unwrap_or(&lv.enc);
            let hn = &self.head_norm;
            let (gg, gbe) = two(grads, hn.gamma, hn.beta);
            gn_relu_backward(
                &top.out,
                head_t,
                head_stats,
                &p[hn.gamma].value,
                &lv.s1,
                &mut lv.g,
                false,
                gg,
                gbe,
            );
        }
        // Decoder, top level first: block, then the skip keeps the
        // gradient and the transposed convolution passes it down.
        for l in 0..n - 1 {
            let (a, b) = levels.split_at_mut(l + 1);
            let lv = &mut a[l];
            let dec = lv
                .dec
                .as_ref()
                .unwrap_or_else(|| unreachable!("upper levels decode"));
            block_backward(
                &self.decoders[l],
                p,
                flipped,
                dec,
                &mut lv.g,
                &mut lv.s1,
                &mut lv.s2,
                grads,
            );
            let below = &mut b[0];
            let x = below.dec.as_ref().unwrap_or(&below.enc);
            let u = &self.ups[l];
            let (gw, gb) = two(grads, u.w, u.b);
            up_backward(&x.out, &p[u.w].value, &lv.g, gw, gb, &mut below.g);
        }
        // Encoder, bottom level first; the strided convolution adds its
        // input gradient to the skip's.
        for l in (0..n).rev() {
            let (a, b) = levels.split_at_mut(l);
            let lv = &mut b[0];
            block_backward(
                &self.encoders[l],
                p,
                flipped,
                &lv.enc,
                &mut lv.g,
                &mut lv.s1,
                &mut lv.s2,
                grads,
            );
            if l > 0 {
                let above = &mut a[l - 1];
                let d = &self.downs[l - 1];
                let (gw, gb) = two(grads, d.w, d.b);
                down_backward(&above.enc.out, &p[d.w].value, &lv.g, gw, gb, &mut above.g);
            } else {
                zero_pads(&mut lv.g);
                let (gw, gb) = two(grads, self.stem.w, self.stem.b);
                conv3_wgrad(input, &lv.g, gw, gb);
                if let Some(di) = dinput {
                    conv3(&lv.g, &flipped[self.stem.w], &[0.0], di, false);
                }
            }
        }
    }
}
