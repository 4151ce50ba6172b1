//! Kernels of the fast CPU path on channels-last activations padded by one
//! voxel on every side.
//!
//! **Layout.** An activation of `c` channels on an interior grid
//! `[nx, ny, nz]` is stored as `(nz+2) × (ny+2) × (nx+2)` positions of `c`
//! contiguous floats (x fastest, then y, then z); position `(x, y, z)` of
//! the interior sits at padded `(x+1, y+1, z+1)`.
//!
//! **3×3×3 convolution as shifted GEMMs.** In this layout, the input
//! position read by tap `(dx, dy, dz)` for output position `p` is `p +
//! off(dx, dy, dz)` for *every* `p`, so the whole convolution is 27 GEMMs
//! `out[p, :] += in[p + off, :] · W_tap` over runs of consecutive positions,
//! with no im2col copy: each run's lhs is a plain row-major matrix (row
//! stride = channels). The three x-taps of a (kz, ky) pair are adjacent
//! positions, so they merge into one GEMM with k = 3·channels whose lhs
//! rows overlap in memory: 9 GEMMs per convolution. Pad positions get garbage outputs that are never
//! read; inputs of convolutions (outputs of [`gn_relu`]) keep their pads
//! at zero, which is the convolution's zero padding. Runs of
//! [`CHUNK`] positions keep the output block in cache across the 27 taps
//! and are the unit of rayon parallelism. GEMMs are the `gemm` crate's
//! (runtime-dispatched AVX2/AVX-512 microkernels, the one burn's flex uses
//! for matmul); what we write by hand is only the layout trick, which no
//! crate provides for 3-D convolutions.
//!
//! The only `unsafe` code of the workspace: the `gemm` crate takes raw
//! pointers and strides; every call states why its extents are in bounds.
#![allow(unsafe_code)]

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Positions per GEMM run (the output block: CHUNK × c floats).
pub const CHUNK: usize = 512;

/// An activation: `c` channels on an interior grid `dims`, padded layout.
#[derive(Clone, Debug)]
pub struct Act {
    pub c: usize,
    pub dims: [usize; 3],
    pub data: Vec<f32>,
}

impl Act {
    pub fn zeros(c: usize, dims: [usize; 3]) -> Self {
        let n = (dims[0] + 2) * (dims[1] + 2) * (dims[2] + 2) * c;
        Self {
            c,
            dims,
            data: vec![0.0; n],
        }
    }

    /// Padded position of interior voxel (x, y, z).
    #[inline]
    pub fn pos(&self, x: usize, y: usize, z: usize) -> usize {
        ((z + 1) * (self.dims[1] + 2) + (y + 1)) * (self.dims[0] + 2) + (x + 1)
    }

    /// Number of padded positions.
    pub fn positions(&self) -> usize {
        (self.dims[0] + 2) * (self.dims[1] + 2) * (self.dims[2] + 2)
    }
}

/// `dst (m × n, row stride n) = [dst +] lhs (m × k, row stride lhs_rs) ·
/// rhs (k × n, row-major)`, single-threaded (callers parallelise).
///
/// # Safety
/// `dst` must hold m·n floats, `lhs` rows `0..m` of `k` floats at stride
/// `lhs_rs`, and `rhs` k·n floats.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
) {
    gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        1,
        n as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// `out = bias + conv3x3x3(input)`, or with `accumulate` `out += bias +
/// conv3x3x3(input)` (the residual addition, fused); weights packed
/// `[tap][cin][cout]` with tap = (kz·3 + ky)·3 + kx. `input` must have zero
/// pads. The bias is applied per block while it is in cache.
pub fn conv3(input: &Act, w: &[f32], bias: &[f32], out: &mut Act, accumulate: bool) {
    let (cin, cout) = (input.c, out.c);
    debug_assert_eq!(input.dims, out.dims);
    debug_assert_eq!(w.len(), 27 * cin * cout);
    let [nx, ny, _] = input.dims;
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    let start = plane + px + 1;
    let end = input.positions() - plane - px - 1;
    if end <= start {
        return;
    }
    // The three x-taps of one (kz, ky) read three consecutive positions,
    // i.e. 3·cin consecutive floats: one GEMM with k = 3·cin per (kz, ky)
    // (rows overlap in memory, which GEMM reads allow), 9 GEMMs in all.
    let offs: Vec<isize> = (0..9)
        .map(|t| {
            let (kz, ky) = (t / 3, t % 3);
            (kz as isize - 1) * plane as isize + (ky as isize - 1) * px as isize - 1
        })
        .collect();
    let k = 3 * cin;
    let inp = input.data.as_ptr() as usize;
    #[cfg(target_arch = "x86_64")]
    if (cout == 8 || cout == 16) && super::narrow::available() {
        let offs: [isize; 9] = std::array::from_fn(|t| offs[t]);
        out.data[start * cout..end * cout]
            .par_chunks_mut(CHUNK * cout)
            .enumerate()
            .for_each(|(ci, block)| {
                let p0 = start + ci * CHUNK;
                let inp = inp as *const f32;
                // SAFETY: AVX2+FMA checked above; rows read are inside the
                // padded input (same bounds as the GEMM path below); w holds
                // 27·cin·cout floats.
                unsafe {
                    if cout == 8 {
                        super::narrow::conv_block::<1, 8>(
                            inp, cin, &offs, w, bias, accumulate, block, p0,
                        );
                    } else {
                        super::narrow::conv_block::<2, 4>(
                            inp, cin, &offs, w, bias, accumulate, block, p0,
                        );
                    }
                }
            });
        return;
    }
    out.data[start * cout..end * cout]
        .par_chunks_mut(CHUNK * cout)
        .enumerate()
        .for_each(|(ci, block)| {
            let p0 = start + ci * CHUNK;
            let m = block.len() / cout;
            for px in block.chunks_exact_mut(cout) {
                if accumulate {
                    px.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                } else {
                    px.copy_from_slice(bias);
                }
            }
            for (t, &off) in offs.iter().enumerate() {
                let src = (p0 as isize + off) as usize * cin;
                // SAFETY: rows p0+off .. p0+off+m (+2 positions for the
                // x-taps) of `input` are inside the buffer (start/end keep
                // every tap inside the padding), the weights hold
                // 27·cin·cout floats, and `block` is m × cout.
                unsafe {
                    gemm_rm(
                        m,
                        cout,
                        k,
                        block.as_mut_ptr(),
                        true,
                        (inp as *const f32).add(src),
                        cin,
                        w.as_ptr().add(t * k * cout),
                    );
                }
            }
        });
}

/// Group normalisation (biased variance, as burn) then ReLU, from `x`'s
/// interior into `t`'s interior; `t`'s pads are left as they are (zero).
pub fn gn_relu(x: &Act, gamma: &[f32], beta: &[f32], groups: usize, eps: f64, t: &mut Act) {
    let c = x.c;
    let [nx, ny, nz] = x.dims;
    let per = c / groups;
    // Per z-plane partial sums, then per group.
    let partial: Vec<Vec<(f64, f64)>> = (0..nz)
        .into_par_iter()
        .map(|z| {
            let mut s = vec![(0f64, 0f64); groups];
            let mut row = vec![(0f32, 0f32); c];
            for y in 0..ny {
                let p = x.pos(0, y, z) * c;
                for r in row.iter_mut() {
                    *r = (0.0, 0.0);
                }
                for px in x.data[p..p + nx * c].chunks_exact(c) {
                    for (r, &v) in row.iter_mut().zip(px) {
                        r.0 += v;
                        r.1 += v * v;
                    }
                }
                for (ch, r) in row.iter().enumerate() {
                    s[ch / per].0 += r.0 as f64;
                    s[ch / per].1 += r.1 as f64;
                }
            }
            s
        })
        .collect();
    let n = (nx * ny * nz * per) as f64;
    let mut scale = vec![0f32; c];
    let mut shift = vec![0f32; c];
    for g in 0..groups {
        let (s, ss) = partial
            .iter()
            .fold((0f64, 0f64), |a, p| (a.0 + p[g].0, a.1 + p[g].1));
        let mean = s / n;
        let var = (ss / n - mean * mean).max(0.0);
        let inv = 1.0 / (var + eps).sqrt();
        for ch in g * per..(g + 1) * per {
            scale[ch] = (inv * gamma[ch] as f64) as f32;
            shift[ch] = (beta[ch] as f64 - mean * inv * gamma[ch] as f64) as f32;
        }
    }
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    t.data
        .par_chunks_mut(plane * c)
        .enumerate()
        .filter(|(z, _)| *z >= 1 && *z <= nz)
        .for_each(|(zp, out_plane)| {
            for y in 0..ny {
                let o = ((y + 1) * px + 1) * c;
                let i = x.pos(0, y, zp - 1) * c;
                let src = &x.data[i..i + nx * c];
                let dst = &mut out_plane[o..o + nx * c];
                for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                    for ch in 0..c {
                        d[ch] = (s[ch] * scale[ch] + shift[ch]).max(0.0);
                    }
                }
            }
        });
}

/// Strided 2×2×2 convolution (stride 2): weights packed `[tap·cin +
/// ci][cout]`, tap = (kz·2 + ky)·2 + kx. Returns the half-size activation.
pub fn down(x: &Act, w: &[f32], bias: &[f32], cout: usize) -> Act {
    let cin = x.c;
    let d = x.dims.map(|n| n / 2);
    let mut out = Act::zeros(cout, d);
    let k = 8 * cin;
    let (opx, oplane) = (d[0] + 2, (d[0] + 2) * (d[1] + 2));
    out.data
        .par_chunks_mut(oplane * cout)
        .enumerate()
        .filter(|(z, _)| *z >= 1 && *z <= d[2])
        .for_each(|(zp, plane)| {
            let z = zp - 1;
            let m = d[0];
            let mut cols = vec![0f32; m * k];
            let mut res = vec![0f32; m * cout];
            for y in 0..d[1] {
                for xo in 0..m {
                    for t in 0..8 {
                        let (kz, ky, kx) = (t / 4, (t / 2) % 2, t % 2);
                        let p = x.pos(2 * xo + kx, 2 * y + ky, 2 * z + kz) * cin;
                        cols[xo * k + t * cin..xo * k + (t + 1) * cin]
                            .copy_from_slice(&x.data[p..p + cin]);
                    }
                }
                for r in res.chunks_exact_mut(cout) {
                    r.copy_from_slice(bias);
                }
                // SAFETY: cols is m × k, w is k × cout, res is m × cout.
                unsafe {
                    gemm_rm(
                        m,
                        cout,
                        k,
                        res.as_mut_ptr(),
                        true,
                        cols.as_ptr(),
                        k,
                        w.as_ptr(),
                    );
                }
                let o = ((y + 1) * opx + 1) * cout;
                plane[o..o + m * cout].copy_from_slice(&res);
            }
        });
    out
}

/// Transposed 2×2×2 convolution (stride 2) of `x`, **added** into `skip`
/// (twice `x`'s size): weights packed `[cin][tap·cout + co]`.
pub fn up_add(x: &Act, w: &[f32], bias: &[f32], skip: &mut Act) {
    let (cin, cout) = (x.c, skip.c);
    let d = x.dims;
    let n = 8 * cout;
    let [fx, fy, _] = skip.dims;
    let (fpx, fplane) = (fx + 2, (fx + 2) * (fy + 2));
    // Two fine planes per coarse plane: split the skip buffer by fine z
    // planes and let each task own the pair of its coarse plane.
    let body = &mut skip.data[fplane * cout..];
    body.par_chunks_mut(2 * fplane * cout)
        .take(d[2])
        .enumerate()
        .for_each(|(z, pair)| {
            let m = d[0];
            let mut res = vec![0f32; m * n];
            for y in 0..d[1] {
                let p = x.pos(0, y, z) * cin;
                // SAFETY: x's row is m × cin, w is cin × n, res is m × n.
                unsafe {
                    gemm_rm(
                        m,
                        n,
                        cin,
                        res.as_mut_ptr(),
                        false,
                        x.data.as_ptr().add(p),
                        cin,
                        w.as_ptr(),
                    );
                }
                for xo in 0..m {
                    for t in 0..8 {
                        let (kz, ky, kx) = (t / 4, (t / 2) % 2, t % 2);
                        let fpos = ((2 * y + ky + 1) * fpx + (2 * xo + kx + 1)) + kz * fplane;
                        let dst = &mut pair[fpos * cout..(fpos + 1) * cout];
                        let src = &res[xo * n + t * cout..xo * n + (t + 1) * cout];
                        for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                            *d += s + b;
                        }
                    }
                }
            }
        });
}
