//! Backward kernels of the training engine ([`super::train`]), on the same
//! padded channels-last layout as the forward kernels ([`super::kernels`]).
//!
//! - **3×3×3 convolution, input gradient**: the forward convolution of
//!   the output gradient with the kernel flipped in space and transposed
//!   in channels ([`flip_transpose`]), i.e. [`super::kernels::conv3`]
//!   itself (shifted GEMMs, the narrow AVX2 kernel for 8/16 channels).
//!   The output gradient must have zero pads ([`super::kernels::zero_pads`]).
//! - **3×3×3 convolution, weight gradient** ([`conv3_wgrad`]): for each
//!   (kz, ky) the merged x-taps give `dW[(kz,ky)] (3·cin × cout) = Σ_p
//!   x[p + off .. +3 positions]ᵀ · dy[p]`, a GEMM whose inner dimension runs
//!   over positions: its left matrix is the input read column-wise with no
//!   copy. Runs of positions are split over the threads, each with its own
//!   accumulator, summed at the end. Narrow layers (cout 8 or 16) use a
//!   direct AVX2 kernel ([`super::narrow::wgrad_block`]).
//! - **Strided 2×2×2 and transposed 2×2×2 convolutions**: per output row,
//!   the same gathered blocks as the forward pass, one GEMM for the weight
//!   gradient and one for the input gradient.
//! - **Group norm + ReLU** ([`gn_relu_backward`]): two passes (per-channel
//!   sums of dy and dy·x̂, then dx = rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂))
//!   per group), the ReLU mask read from the saved output.
//!
//! `unsafe` only around the `gemm` calls and the AVX2 kernel, each with its
//! bounds argument.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::kernels::{along_row, check_len, fold_channels, gather_down, sgemm, Act, GroupStat};

/// Positions per task of a weight gradient: large enough that a GEMM's
/// packing is amortised, small enough for both threads to get several.
pub const WGRAD_CHUNK: usize = 128;

/// Weights of the input-gradient convolution: `[tap][cin][cout]` (forward)
/// to `[26 − tap][cout][cin]`.
pub fn flip_transpose(w: &[f32], cin: usize, cout: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(w.len(), 0.0);
    for t in 0..27 {
        for ci in 0..cin {
            for co in 0..cout {
                out[((26 - t) * cout + co) * cin + ci] = w[(t * cin + ci) * cout + co];
            }
        }
    }
}

fn add_into(acc: &mut [f32], v: &[f32]) {
    acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
}

/// Per-task partial gradients: weights in f32, bias sums in f64 (a bias
/// gradient is a sum over every position that often nearly cancels).
type Partial = (Vec<f32>, Vec<f64>);

/// Adds one row of an output gradient to f64 bias sums.
fn add_row(acc: &mut [f64], row: &[f32]) {
    acc.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
}

/// Sums per-task gradients into `gw`, `gb`.
fn reduce_into(parts: Partial, gw: &mut [f32], gb: &mut [f32]) {
    add_into(gw, &parts.0);
    gb.iter_mut()
        .zip(&parts.1)
        .for_each(|(a, &b)| *a = (*a as f64 + b) as f32);
}

fn sum_pairs(mut a: Partial, b: Partial) -> Partial {
    if a.0.is_empty() {
        return b;
    }
    if !b.0.is_empty() {
        add_into(&mut a.0, &b.0);
        a.1.iter_mut().zip(&b.1).for_each(|(x, y)| *x += y);
    }
    a
}

/// Weight and bias gradients of a 3×3×3 convolution: `gw += ∂L/∂W`
/// (packed `[tap][cin][cout]`), `gb += ∂L/∂b`, from its input `x` and the
/// gradient of its output `dy`. Both must have zero pads.
pub fn conv3_wgrad(x: &Act, dy: &Act, gw: &mut [f32], gb: &mut [f32]) {
    let (cin, cout) = (x.c, dy.c);
    x.check("conv3 input");
    dy.check("conv3 output gradient");
    assert_eq!(x.dims, dy.dims, "conv3 gradient: grids differ");
    check_len(gw, 27 * cin * cout, "conv3 weight gradient");
    assert_eq!(gb.len(), cout, "conv3 bias gradient");
    let [nx, ny, _] = x.dims;
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    let start = plane + px + 1;
    let end = x.positions() - plane - px - 1;
    if end <= start {
        return;
    }
    let offs: [isize; 9] = std::array::from_fn(|t| {
        let (kz, ky) = (t / 3, t % 3);
        (kz as isize - 1) * plane as isize + (ky as isize - 1) * px as isize - 1
    });
    let k = 3 * cin;
    let (xp, dyp) = (x.data.as_ptr() as usize, dy.data.as_ptr() as usize);
    let narrow = (cout == 8 || cout == 16) && super::narrow::available();
    let chunks = (end - start).div_ceil(WGRAD_CHUNK);
    let parts = (0..chunks)
        .into_par_iter()
        .fold(
            || (Vec::new(), Vec::new()),
            |(mut w, mut b): Partial, ci| {
                if w.is_empty() {
                    w = vec![0f32; 27 * cin * cout];
                    b = vec![0f64; cout];
                }
                let p0 = start + ci * WGRAD_CHUNK;
                let m = WGRAD_CHUNK.min(end - p0);
                for row in dy.data[p0 * cout..(p0 + m) * cout].chunks_exact(cout) {
                    add_row(&mut b, row);
                }
                for (t, &off) in offs.iter().enumerate() {
                    let src = (p0 as isize + off) as usize * cin;
                    let dst = &mut w[t * k * cout..(t + 1) * k * cout];
                    #[cfg(target_arch = "x86_64")]
                    if narrow {
                        // SAFETY: AVX2+FMA checked; input rows p0+off ..
                        // p0+off+m (+2 positions) and dy rows p0 .. p0+m lie
                        // inside the padded buffers (start/end keep every
                        // tap inside the padding); dst is k × cout.
                        unsafe {
                            let xin = (xp as *const f32).add(src);
                            let g = (dyp as *const f32).add(p0 * cout);
                            if cout == 8 {
                                super::narrow::wgrad_block::<1>(xin, cin, g, m, dst);
                            } else {
                                super::narrow::wgrad_block::<2>(xin, cin, g, m, dst);
                            }
                        }
                        continue;
                    }
                    // SAFETY: as above; lhs is xᵀ (k × m, column stride
                    // cin), rhs is dy (m × cout, row-major), dst k × cout.
                    unsafe {
                        sgemm(
                            k,
                            cout,
                            m,
                            dst.as_mut_ptr(),
                            cout,
                            true,
                            (xp as *const f32).add(src),
                            [1, cin],
                            (dyp as *const f32).add(p0 * cout),
                            [cout, 1],
                        );
                    }
                }
                (w, b)
            },
        )
        .reduce(|| (Vec::new(), Vec::new()), sum_pairs);
    if !parts.0.is_empty() {
        reduce_into(parts, gw, gb);
    }
}

/// Backward of the strided 2×2×2 convolution: `gw += ∂L/∂W` (packed
/// `[tap·cin + ci][cout]`), `gb += ∂L/∂b`, and `dx += ∂L/∂x` (interior).
pub fn down_backward(x: &Act, w: &[f32], dout: &Act, gw: &mut [f32], gb: &mut [f32], dx: &mut Act) {
    let (cin, cout) = (x.c, dout.c);
    let d = dout.dims;
    let k = 8 * cin;
    x.check("down input");
    dout.check("down output gradient");
    dx.check("down input gradient");
    assert_eq!(
        d,
        x.dims.map(|n| n / 2),
        "down gradient: output is not half the input"
    );
    assert!(
        dx.dims == x.dims && dx.c == cin,
        "down gradient: dx is not shaped as x"
    );
    check_len(w, k * cout, "down weights");
    check_len(gw, k * cout, "down weight gradient");
    assert_eq!(gb.len(), cout, "down bias gradient");
    let [fx, fy, _] = x.dims;
    let (fpx, fplane) = (fx + 2, (fx + 2) * (fy + 2));
    let m = d[0];
    let body = &mut dx.data[fplane * cin..];
    let parts = body
        .par_chunks_mut(2 * fplane * cin)
        .take(d[2])
        .enumerate()
        .fold(
            || (Vec::new(), Vec::new()),
            |(mut gwl, mut gbl): Partial, (z, pair)| {
                if gwl.is_empty() {
                    gwl = vec![0f32; k * cout];
                    gbl = vec![0f64; cout];
                }
                let mut cols = vec![0f32; m * k];
                let mut dcols = vec![0f32; m * k];
                for y in 0..d[1] {
                    gather_down(x, y, z, m, &mut cols);
                    let g = dout.pos(0, y, z) * cout;
                    let grow = &dout.data[g..g + m * cout];
                    for r in grow.chunks_exact(cout) {
                        add_row(&mut gbl, r);
                    }
                    // SAFETY: cols is m × k, grow m × cout, gwl k × cout,
                    // w k × cout, dcols m × k.
                    unsafe {
                        sgemm(
                            k,
                            cout,
                            m,
                            gwl.as_mut_ptr(),
                            cout,
                            true,
                            cols.as_ptr(),
                            [1, k],
                            grow.as_ptr(),
                            [cout, 1],
                        );
                        sgemm(
                            m,
                            k,
                            cout,
                            dcols.as_mut_ptr(),
                            k,
                            false,
                            grow.as_ptr(),
                            [cout, 1],
                            w.as_ptr(),
                            [1, cout],
                        );
                    }
                    for xo in 0..m {
                        for t in 0..8 {
                            let (kz, ky, kx) = (t / 4, (t / 2) % 2, t % 2);
                            let fpos = (2 * y + ky + 1) * fpx + (2 * xo + kx + 1) + kz * fplane;
                            let dst = &mut pair[fpos * cin..(fpos + 1) * cin];
                            add_into(dst, &dcols[xo * k + t * cin..xo * k + (t + 1) * cin]);
                        }
                    }
                }
                (gwl, gbl)
            },
        )
        .reduce(|| (Vec::new(), Vec::new()), sum_pairs);
    if !parts.0.is_empty() {
        reduce_into(parts, gw, gb);
    }
}

/// Backward of the transposed 2×2×2 convolution `fine += up(x)`: `gw +=
/// ∂L/∂W` (packed `[cin][tap·cout + co]`), `gb += ∂L/∂b`, and `dx = ∂L/∂x`
/// (interior of the coarse `dx` overwritten), from `dfine`, the gradient
/// of the fine sum.
pub fn up_backward(x: &Act, w: &[f32], dfine: &Act, gw: &mut [f32], gb: &mut [f32], dx: &mut Act) {
    let (cin, cout) = (x.c, dfine.c);
    let d = x.dims;
    let n = 8 * cout;
    let m = d[0];
    x.check("up input");
    dfine.check("up output gradient");
    dx.check("up input gradient");
    assert_eq!(
        dfine.dims,
        d.map(|n| 2 * n),
        "up gradient: output is not twice the input"
    );
    assert!(
        dx.dims == d && dx.c == cin,
        "up gradient: dx is not shaped as x"
    );
    check_len(w, cin * n, "up weights");
    check_len(gw, cin * n, "up weight gradient");
    assert_eq!(gb.len(), cout, "up bias gradient");
    let (px, plane) = (d[0] + 2, (d[0] + 2) * (d[1] + 2));
    let parts = dx
        .data
        .par_chunks_mut(plane * cin)
        .enumerate()
        .filter(|(z, _)| *z >= 1 && *z <= d[2])
        .fold(
            || (Vec::new(), Vec::new()),
            |(mut gwl, mut gbl): Partial, (zp, dplane)| {
                if gwl.is_empty() {
                    gwl = vec![0f32; cin * n];
                    gbl = vec![0f64; cout];
                }
                let z = zp - 1;
                let mut g = vec![0f32; m * n];
                for y in 0..d[1] {
                    for xo in 0..m {
                        for t in 0..8 {
                            let (kz, ky, kx) = (t / 4, (t / 2) % 2, t % 2);
                            let f = dfine.pos(2 * xo + kx, 2 * y + ky, 2 * z + kz) * cout;
                            let src = &dfine.data[f..f + cout];
                            g[xo * n + t * cout..xo * n + (t + 1) * cout].copy_from_slice(src);
                            add_row(&mut gbl, src);
                        }
                    }
                    let p = x.pos(0, y, z) * cin;
                    let o = ((y + 1) * px + 1) * cin;
                    // SAFETY: x's row is m × cin, g m × n, gwl cin × n, w
                    // cin × n, the dx row m × cin inside this plane.
                    unsafe {
                        sgemm(
                            cin,
                            n,
                            m,
                            gwl.as_mut_ptr(),
                            n,
                            true,
                            x.data.as_ptr().add(p),
                            [1, cin],
                            g.as_ptr(),
                            [n, 1],
                        );
                        sgemm(
                            m,
                            cin,
                            n,
                            dplane.as_mut_ptr().add(o),
                            cin,
                            false,
                            g.as_ptr(),
                            [n, 1],
                            w.as_ptr(),
                            [1, n],
                        );
                    }
                }
                (gwl, gbl)
            },
        )
        .reduce(|| (Vec::new(), Vec::new()), sum_pairs);
    if !parts.0.is_empty() {
        reduce_into(parts, gw, gb);
    }
}

/// Backward of `t = relu(groupnorm(x))`: from `dt` (interior), with the
/// statistics of the forward pass and its output `t` (the ReLU mask),
/// `dx = ∂L/∂x` (or `dx += ∂L/∂x` with `accumulate`; interior only),
/// `ggamma += ∂L/∂γ`, `gbeta += ∂L/∂β`.
#[allow(clippy::too_many_arguments)]
pub fn gn_relu_backward(
    x: &Act,
    t: &Act,
    stats: &[GroupStat],
    gamma: &[f32],
    dt: &Act,
    dx: &mut Act,
    accumulate: bool,
    ggamma: &mut [f32],
    gbeta: &mut [f32],
) {
    let c = x.c;
    let [nx, ny, nz] = x.dims;
    let groups = stats.len().max(1);
    let per = c / groups;
    let mean: Vec<f32> = (0..c).map(|ch| stats[ch / per].mean as f32).collect();
    let rstd: Vec<f32> = (0..c).map(|ch| stats[ch / per].rstd as f32).collect();
    let (mean_r, rstd_r) = (along_row(&mean, nx), along_row(&rstd, nx));
    let w = nx * c;
    // Pass 1: per-channel Σ dy and Σ dy·x̂ (dy = dt where t > 0), over
    // flat per-position accumulators folded per channel once per plane.
    let partial: Vec<(Vec<f64>, Vec<f64>)> = (0..nz)
        .into_par_iter()
        .map(|z| {
            let (mut a1, mut a2) = (vec![0f32; w], vec![0f32; w]);
            for y in 0..ny {
                let p = x.pos(0, y, z) * c;
                let rows = x.data[p..p + w]
                    .iter()
                    .zip(&t.data[p..p + w])
                    .zip(&dt.data[p..p + w])
                    .zip(mean_r.iter().zip(&rstd_r))
                    .zip(a1.iter_mut().zip(a2.iter_mut()));
                for ((((&xv, &tv), &gv), (&m, &r)), (s1, s2)) in rows {
                    let dy = if tv > 0.0 { gv } else { 0.0 };
                    *s1 += dy;
                    *s2 += dy * (xv - m) * r;
                }
            }
            let (mut s1, mut s2) = (vec![0f64; c], vec![0f64; c]);
            fold_channels(&a1, c, &mut s1);
            fold_channels(&a2, c, &mut s2);
            (s1, s2)
        })
        .collect();
    let mut s1 = vec![0f64; c];
    let mut s2 = vec![0f64; c];
    for (a, b) in &partial {
        for ch in 0..c {
            s1[ch] += a[ch];
            s2[ch] += b[ch];
        }
    }
    let n = (nx * ny * nz * per) as f64;
    let mut ga = vec![0f64; groups];
    let mut gb2 = vec![0f64; groups];
    for ch in 0..c {
        gbeta[ch] += s1[ch] as f32;
        ggamma[ch] += s2[ch] as f32;
        ga[ch / per] += gamma[ch] as f64 * s1[ch] / n;
        gb2[ch / per] += gamma[ch] as f64 * s2[ch] / n;
    }
    // Pass 2: dx = rstd·(γ·dy − A − x̂·B) = (rstd·γ)·dy − rstd·A − (x − μ)·rstd²·B.
    let rg: Vec<f32> = (0..c).map(|ch| rstd[ch] * gamma[ch]).collect();
    let ra: Vec<f32> = (0..c)
        .map(|ch| (stats[ch / per].rstd * ga[ch / per]) as f32)
        .collect();
    let rrb: Vec<f32> = (0..c)
        .map(|ch| (stats[ch / per].rstd * stats[ch / per].rstd * gb2[ch / per]) as f32)
        .collect();
    let (rg, ra, rrb) = (along_row(&rg, nx), along_row(&ra, nx), along_row(&rrb, nx));
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    dx.data
        .par_chunks_mut(plane * c)
        .enumerate()
        .filter(|(z, _)| *z >= 1 && *z <= nz)
        .for_each(|(zp, out)| {
            for y in 0..ny {
                let o = ((y + 1) * px + 1) * c;
                let p = x.pos(0, y, zp - 1) * c;
                let rows = out[o..o + w]
                    .iter_mut()
                    .zip(&x.data[p..p + w])
                    .zip(&t.data[p..p + w])
                    .zip(&dt.data[p..p + w])
                    .zip(mean_r.iter().zip(&rg))
                    .zip(ra.iter().zip(&rrb));
                for (((((d, &xv), &tv), &gv), (&m, &g)), (&a, &b)) in rows {
                    let dy = if tv > 0.0 { gv } else { 0.0 };
                    let v = g * dy - a - (xv - m) * b;
                    *d = if accumulate { *d + v } else { v };
                }
            }
        });
}

/// The head's 1×1×1 convolution to one logit per interior voxel
/// (x-fastest), from `t` = relu(norm(x)).
pub fn head_forward(t: &Act, w: &[f32], b: f32, logits: &mut [f32]) {
    let [nx, ny, _] = t.dims;
    let c = t.c;
    logits
        .par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(z, plane)| {
            for y in 0..ny {
                let p = t.pos(0, y, z) * c;
                for (xo, px) in t.data[p..p + nx * c].chunks_exact(c).enumerate() {
                    plane[xo + nx * y] = px.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b;
                }
            }
        });
}

/// Backward of [`head_forward`]: `gw += Σ dlogit·t`, `gb += Σ dlogit`,
/// `dt = dlogit·w` (interior).
pub fn head_backward(
    t: &Act,
    w: &[f32],
    dlogits: &[f32],
    gw: &mut [f32],
    gb: &mut f32,
    dt: &mut Act,
) {
    let [nx, ny, nz] = t.dims;
    let c = t.c;
    let (px, plane) = (nx + 2, (nx + 2) * (ny + 2));
    let parts: Vec<(Vec<f64>, f64)> = dt
        .data
        .par_chunks_mut(plane * c)
        .enumerate()
        .filter(|(z, _)| *z >= 1 && *z <= nz)
        .map(|(zp, out)| {
            let z = zp - 1;
            let mut sw = vec![0f64; c];
            let mut sb = 0f64;
            let mut row = vec![0f32; c];
            for y in 0..ny {
                let o = ((y + 1) * px + 1) * c;
                let p = t.pos(0, y, z) * c;
                let g = &dlogits[nx * (y + ny * z)..][..nx];
                row.fill(0.0);
                let mut rb = 0f32;
                let rows = out[o..o + nx * c]
                    .chunks_exact_mut(c)
                    .zip(t.data[p..p + nx * c].chunks_exact(c))
                    .zip(g);
                for ((d, tv), &gl) in rows {
                    rb += gl;
                    for ch in 0..c {
                        row[ch] += gl * tv[ch];
                        d[ch] = gl * w[ch];
                    }
                }
                sb += rb as f64;
                for ch in 0..c {
                    sw[ch] += row[ch] as f64;
                }
            }
            (sw, sb)
        })
        .collect();
    for (sw, sb) in parts {
        for ch in 0..c {
            gw[ch] += sw[ch] as f32;
        }
        *gb += sb as f32;
    }
}
