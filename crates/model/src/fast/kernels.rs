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

    /// Panics unless `data` holds exactly `c` floats per padded position.
    /// The fields are public, so every safe function whose GEMM calls read
    /// raw pointers checks this (and the weights' sizes) in release builds
    /// too: a wrong size is a panic, never an out-of-bounds read.
    pub fn check(&self, what: &str) {
        assert_eq!(
            self.data.len(),
            self.positions() * self.c,
            "{what}: {} floats for {} channels on {:?}",
            self.data.len(),
            self.c,
            self.dims
        );
    }
}

/// Panics unless `v` holds `n` floats (see [`Act::check`]).
pub fn check_len(v: &[f32], n: usize, what: &str) {
    assert_eq!(v.len(), n, "{what}: {} floats, {n} expected", v.len());
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
    sgemm(m, n, k, dst, n, accumulate, lhs, [lhs_rs, 1], rhs, [n, 1]);
}

/// `dst (m × n, row stride dst_rs) = [dst +] lhs (m × k) · rhs (k × n)`
/// with any element strides (`[row stride, column stride]`, in floats),
/// single-threaded (callers parallelise).
///
/// # Safety
/// Every element addressed by the extents and strides must lie inside the
/// buffers behind the pointers.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: *const f32,
    [rhs_rs, rhs_cs]: [usize; 2],
) {
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
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
    input.check("conv3 input");
    out.check("conv3 output");
    assert_eq!(input.dims, out.dims, "conv3: input and output grids differ");
    check_len(w, 27 * cin * cout, "conv3 weights");
    check_len(bias, cout, "conv3 bias");
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

/// Mean and reciprocal standard deviation of each group of channels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupStat {
    pub mean: f64,
    pub rstd: f64,
}

/// `v` (one value per channel) repeated along a row of `nx` positions, so
/// that per-channel arithmetic becomes a flat loop the compiler vectorises
/// whatever the channel count.
pub fn along_row(v: &[f32], nx: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(v.len() * nx);
    for _ in 0..nx {
        out.extend_from_slice(v);
    }
    out
}

/// Per-channel sums (f64) of a flat per-position accumulator of a row.
pub fn fold_channels(acc: &[f32], c: usize, out: &mut [f64]) {
    for px in acc.chunks_exact(c) {
        for (o, &v) in out.iter_mut().zip(px) {
            *o += v as f64;
        }
    }
}

/// Group statistics over `x`'s interior (biased variance, as burn).
///
/// Accurate when a channel's mean is large against its spread (E[x²] − μ²
/// in f32 would cancel catastrophically): per z-plane, each channel's mean
/// (pass 1) and its sum of squared deviations from that mean (pass 2,
/// while the plane is still in cache); planes and channels are then
/// combined exactly in f64 (Chan, Golub & LeVeque's pairwise update:
/// M2 = Σ M2ᵢ + Σ nᵢ (μᵢ − μ)²). Within a plane the sums run over a flat
/// per-position accumulator (vectorised), folded per channel at its end.
pub fn group_stats(x: &Act, groups: usize, eps: f64) -> Vec<GroupStat> {
    let c = x.c;
    let [nx, ny, nz] = x.dims;
    let per = c / groups;
    let plane_n = (nx * ny) as f64;
    let w = nx * c;
    // Per z-plane, per channel: (mean, M2).
    let partial: Vec<Vec<(f64, f64)>> = (0..nz)
        .into_par_iter()
        .map(|z| {
            let mut acc = vec![0f32; w];
            for y in 0..ny {
                let p = x.pos(0, y, z) * c;
                acc.iter_mut()
                    .zip(&x.data[p..p + w])
                    .for_each(|(a, &v)| *a += v);
            }
            let mut sum = vec![0f64; c];
            fold_channels(&acc, c, &mut sum);
            let mean: Vec<f32> = sum.iter().map(|&s| (s / plane_n) as f32).collect();
            let mean_row = along_row(&mean, nx);
            acc.fill(0.0);
            for y in 0..ny {
                let p = x.pos(0, y, z) * c;
                acc.iter_mut()
                    .zip(&x.data[p..p + w])
                    .zip(&mean_row)
                    .for_each(|((a, &v), &m)| {
                        let d = v - m;
                        *a += d * d;
                    });
            }
            let mut m2 = vec![0f64; c];
            fold_channels(&acc, c, &mut m2);
            // M2 about the f64 plane mean (the f32 mean differs by δ:
            // Σ(x − m32)² = M2 + n·δ²).
            (0..c)
                .map(|ch| {
                    let m = sum[ch] / plane_n;
                    let delta = mean[ch] as f64 - m;
                    (m, (m2[ch] - plane_n * delta * delta).max(0.0))
                })
                .collect()
        })
        .collect();
    let n = (nx * ny * nz * per) as f64;
    (0..groups)
        .map(|g| {
            let chans = g * per..(g + 1) * per;
            let mean = partial
                .iter()
                .flat_map(|p| p[chans.clone()].iter().map(|v| v.0))
                .sum::<f64>()
                * plane_n
                / n;
            let m2: f64 = partial
                .iter()
                .flat_map(|p| p[chans.clone()].iter())
                .map(|&(m, m2)| m2 + plane_n * (m - mean) * (m - mean))
                .sum();
            GroupStat {
                mean,
                rstd: 1.0 / (m2 / n + eps).sqrt(),
            }
        })
        .collect()
}

/// Group normalisation (biased variance, as burn) then ReLU, from `x`'s
/// interior into `t`'s interior; `t`'s pads are left as they are (zero).
pub fn gn_relu(x: &Act, gamma: &[f32], beta: &[f32], groups: usize, eps: f64, t: &mut Act) {
    let stats = group_stats(x, groups, eps);
    gn_relu_with(x, gamma, beta, &stats, t);
}

/// [`gn_relu`] with statistics already computed ([`group_stats`]).
pub fn gn_relu_with(x: &Act, gamma: &[f32], beta: &[f32], stats: &[GroupStat], t: &mut Act) {
    let c = x.c;
    let [nx, ny, nz] = x.dims;
    let per = c / stats.len().max(1);
    // (x − μ)·(γ·rstd) + β: the subtraction first, so that a large mean
    // does not cancel against a large shift.
    let scale: Vec<f32> = (0..c)
        .map(|ch| (stats[ch / per].rstd * gamma[ch] as f64) as f32)
        .collect();
    let mean: Vec<f32> = (0..c).map(|ch| stats[ch / per].mean as f32).collect();
    let (scale, mean, beta) = (
        along_row(&scale, nx),
        along_row(&mean, nx),
        along_row(beta, nx),
    );
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    let w = nx * c;
    t.data
        .par_chunks_mut(plane * c)
        .enumerate()
        .filter(|(z, _)| *z >= 1 && *z <= nz)
        .for_each(|(zp, out_plane)| {
            for y in 0..ny {
                let o = ((y + 1) * px + 1) * c;
                let i = x.pos(0, y, zp - 1) * c;
                out_plane[o..o + w]
                    .iter_mut()
                    .zip(&x.data[i..i + w])
                    .zip(scale.iter().zip(&mean).zip(&beta))
                    .for_each(|((d, &s), ((&sc, &m), &b))| *d = ((s - m) * sc + b).max(0.0));
            }
        });
}

/// Sets every pad position of `a` to zero (a gradient that feeds a
/// convolution's backward pass must be zero outside the interior).
pub fn zero_pads(a: &mut Act) {
    let c = a.c;
    let [nx, ny, nz] = a.dims;
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    a.data
        .par_chunks_mut(plane * c)
        .enumerate()
        .for_each(|(z, pl)| {
            if z == 0 || z == nz + 1 {
                pl.fill(0.0);
                return;
            }
            pl[..px * c].fill(0.0);
            pl[(ny + 1) * px * c..].fill(0.0);
            for y in 1..=ny {
                let r = y * px * c;
                pl[r..r + c].fill(0.0);
                pl[r + (nx + 1) * c..r + (nx + 2) * c].fill(0.0);
            }
        });
}

/// Strided 2×2×2 convolution (stride 2): weights packed `[tap·cin +
/// ci][cout]`, tap = (kz·2 + ky)·2 + kx. Returns the half-size activation.
pub fn down(x: &Act, w: &[f32], bias: &[f32], cout: usize) -> Act {
    let mut out = Act::zeros(cout, x.dims.map(|n| n / 2));
    down_into(x, w, bias, &mut out);
    out
}

/// [`down`] into an existing half-size activation (its interior is
/// overwritten, its pads are left as they are).
pub fn down_into(x: &Act, w: &[f32], bias: &[f32], out: &mut Act) {
    let (cin, cout) = (x.c, out.c);
    let d = out.dims;
    x.check("down input");
    out.check("down output");
    assert_eq!(
        d,
        x.dims.map(|n| n / 2),
        "down: output is not half the input"
    );
    check_len(w, 8 * cin * cout, "down weights");
    check_len(bias, cout, "down bias");
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
                gather_down(x, y, z, m, &mut cols);
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
}

/// The 2×2×2 input blocks of output row (y, z) of a strided convolution,
/// as `m` rows of `8·cin` floats (tap-major).
pub fn gather_down(x: &Act, y: usize, z: usize, m: usize, cols: &mut [f32]) {
    let cin = x.c;
    let k = 8 * cin;
    for xo in 0..m {
        for t in 0..8 {
            let (kz, ky, kx) = (t / 4, (t / 2) % 2, t % 2);
            let p = x.pos(2 * xo + kx, 2 * y + ky, 2 * z + kz) * cin;
            cols[xo * k + t * cin..xo * k + (t + 1) * cin].copy_from_slice(&x.data[p..p + cin]);
        }
    }
}

/// Transposed 2×2×2 convolution (stride 2) of `x`, **added** into `skip`
/// (twice `x`'s size): weights packed `[cin][tap·cout + co]`.
pub fn up_add(x: &Act, w: &[f32], bias: &[f32], skip: &mut Act) {
    let (cin, cout) = (x.c, skip.c);
    let d = x.dims;
    let n = 8 * cout;
    x.check("up input");
    skip.check("up skip");
    assert_eq!(
        skip.dims,
        d.map(|n| 2 * n),
        "up: skip is not twice the input"
    );
    check_len(w, cin * n, "up weights");
    check_len(bias, cout, "up bias");
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
