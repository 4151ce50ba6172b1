//! A direct AVX2/FMA kernel for 3×3×3 convolutions with 8 or 16 output
//! channels, where GEMM libraries do worst: with n = 8 the `gemm` crate's
//! microkernels run at a third of their speed (measured: 20 vs 60+ GFLOP/s
//! per core), and these layers are the full-resolution ones, where a U-Net
//! spends most of its time.
//!
//! Same layout and tap merging as [`super::kernels::conv3`]: for each
//! (kz, ky), k = 3·cin consecutive input floats per position. A block of
//! `PB` positions keeps `PB × NV` 8-wide accumulators in registers; each
//! weight row (NV vectors) is loaded once per block and each input value is
//! broadcast once, so the loop issues PB·NV FMAs per PB + NV loads.
//! Selected at run time (`is_x86_feature_detected!`); other machines and
//! other widths use the GEMM path.

#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// True when this machine can run the kernel (and
/// `DELINEATE_FAST_KERNEL=gemm` does not ask for the GEMM path, for
/// comparisons).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var("DELINEATE_FAST_KERNEL").as_deref() != Ok("gemm")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `block[p, :] = (block[p, :] if accumulate) + bias + Σ_t Σ_k
/// input[(p0 + p + offs[t])·cin + k] · w[t][k][:]` for the `block.len() /
/// cout` positions of `block`; cout = 8·NV.
///
/// # Safety
/// AVX2 and FMA must be available ([`available`]); every input row read
/// (`(p0 + p + offs[t])·cin .. + 3·cin`) must lie inside `input`, and `w`
/// must hold 9·3·cin·cout floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
// Register-blocked loops read best with explicit indices.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn conv_block<const NV: usize, const PB: usize>(
    input: *const f32,
    cin: usize,
    offs: &[isize; 9],
    w: &[f32],
    bias: &[f32],
    accumulate: bool,
    block: &mut [f32],
    p0: usize,
) {
    let cout = 8 * NV;
    let k = 3 * cin;
    let m = block.len() / cout;
    let out = block.as_mut_ptr();
    let mut p = 0;
    // Full blocks of PB positions, then single positions.
    while p < m {
        let pb = if p + PB <= m { PB } else { 1 };
        let mut acc = [[_mm256_setzero_ps(); NV]; PB];
        for q in 0..pb {
            for v in 0..NV {
                let b = _mm256_loadu_ps(bias.as_ptr().add(v * 8));
                acc[q][v] = if accumulate {
                    _mm256_add_ps(_mm256_loadu_ps(out.add((p + q) * cout + v * 8)), b)
                } else {
                    b
                };
            }
        }
        for (t, &off) in offs.iter().enumerate() {
            let base = input.offset(((p0 + p) as isize + off) * cin as isize);
            let wt = w.as_ptr().add(t * k * cout);
            for kk in 0..k {
                let mut wv = [_mm256_setzero_ps(); NV];
                for (v, r) in wv.iter_mut().enumerate() {
                    *r = _mm256_loadu_ps(wt.add(kk * cout + v * 8));
                }
                if pb == PB {
                    for q in 0..PB {
                        let b = _mm256_broadcast_ss(&*base.add(q * cin + kk));
                        for v in 0..NV {
                            acc[q][v] = _mm256_fmadd_ps(b, wv[v], acc[q][v]);
                        }
                    }
                } else {
                    let b = _mm256_broadcast_ss(&*base.add(kk));
                    for v in 0..NV {
                        acc[0][v] = _mm256_fmadd_ps(b, wv[v], acc[0][v]);
                    }
                }
            }
        }
        for q in 0..pb {
            for v in 0..NV {
                _mm256_storeu_ps(out.add((p + q) * cout + v * 8), acc[q][v]);
            }
        }
        p += pb;
    }
}

/// Weight gradient of one merged (kz, ky) tap group for 8·NV output
/// channels: `dst[i][:] += Σ_{p < m} x[p·cin + i] · dy[p·cout ..][:]` for
/// the k = 3·cin rows `i` of `dst` (row-major, k × cout). Rows are taken
/// in blocks that keep 12 accumulators in registers (12 rows × 8 channels,
/// or 6 rows × 16); each dy row is loaded once per block and each input
/// value broadcast once, so the loop issues 12 FMAs per 13 (or 8) loads.
///
/// # Safety
/// AVX2 and FMA must be available ([`available`]); `x` must be readable
/// for `(m − 1)·cin + 3·cin` floats, `dy` for `m·cout`, and `dst` must hold
/// 3·cin·cout floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn wgrad_block<const NV: usize>(
    x: *const f32,
    cin: usize,
    dy: *const f32,
    m: usize,
    dst: &mut [f32],
) {
    let k = 3 * cin;
    debug_assert_eq!(dst.len(), k * 8 * NV);
    let rows = if NV == 1 { 12 } else { 6 };
    let mut i0 = 0;
    while i0 < k {
        if i0 + rows <= k {
            if NV == 1 {
                wgrad_rows::<NV, 12>(x, cin, dy, m, dst, i0);
            } else {
                wgrad_rows::<NV, 6>(x, cin, dy, m, dst, i0);
            }
            i0 += rows;
        } else {
            wgrad_rows::<NV, 1>(x, cin, dy, m, dst, i0);
            i0 += 1;
        }
    }
}

/// Rows `i0 .. i0 + R` of [`wgrad_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn wgrad_rows<const NV: usize, const R: usize>(
    x: *const f32,
    cin: usize,
    dy: *const f32,
    m: usize,
    dst: &mut [f32],
    i0: usize,
) {
    let cout = 8 * NV;
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    for p in 0..m {
        let mut g = [_mm256_setzero_ps(); NV];
        for (v, r) in g.iter_mut().enumerate() {
            *r = _mm256_loadu_ps(dy.add(p * cout + v * 8));
        }
        let xr = x.add(p * cin + i0);
        for r in 0..R {
            let b = _mm256_broadcast_ss(&*xr.add(r));
            for v in 0..NV {
                acc[r][v] = _mm256_fmadd_ps(b, g[v], acc[r][v]);
            }
        }
    }
    let out = dst.as_mut_ptr();
    for r in 0..R {
        for v in 0..NV {
            let o = out.add((i0 + r) * cout + v * 8);
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), acc[r][v]));
        }
    }
}
