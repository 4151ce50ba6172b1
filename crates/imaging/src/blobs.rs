//! Bright blobs at several scales: local maxima of the scale-normalised
//! Laplacian of Gaussian (Lindeberg 1998), the classical detector of
//! round spots that computer-aided detection of lung nodules and brain
//! metastases starts from (Dikici et al., IEEE TMI 2020, used LoG
//! candidates before a crop classifier).
//!
//! A sphere of radius r gives its strongest response at σ ≈ r/√3, so the
//! scales 0.7–2.8 mm cover lesions of about 2.5–10 mm across; larger ones
//! are the segmentation network's. The Gaussian derivatives are
//! ndarray-ndimage's (`gaussian_filter1d` of order 0 and 2, SciPy's
//! definitions); the scale-space maxima are ours (no crate finds them).

use ndarray::{Array3, Axis};
use ndarray_ndimage::{gaussian_filter1d, BorderMode};
use rayon::prelude::*;

use crate::Volume;

/// Default scales (σ, mm): spheres of about 2.5 to 10 mm across.
pub const BLOB_SIGMAS_MM: [f64; 5] = [0.7, 1.0, 1.4, 2.0, 2.8];
/// Gaussian kernels are cut at this many σ.
const TRUNCATE: usize = 4;

/// One blob: where it peaks, at which scale, and how strongly.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Blob {
    /// Voxel index of the peak.
    pub ijk: [usize; 3],
    /// The scale of its strongest response (mm).
    pub sigma_mm: f64,
    /// −σ²∇²(G_σ ∗ I) at the peak, in the image's units (a bright spot
    /// gives a positive response).
    pub response: f32,
}

/// −σ²·LoG of `image` at one scale (σ in mm along each axis by the grid's
/// spacing), computed separably: Gxx·Gy·Gz + Gx·Gyy·Gz + Gx·Gy·Gzz.
pub fn normalised_log(image: &Volume<f32>, sigma_mm: f64) -> Array3<f32> {
    let g = image.geometry();
    let data = image.data();
    let s = [0, 1, 2].map(|a| (sigma_mm / g.spacing[a]) as f32);
    // Each pass needs the axis to be longer than the kernel's half-width.
    let fits = |a: usize| data.len_of(Axis(a)) as f32 > TRUNCATE as f32 * s[a] + 0.5;
    if !(fits(0) && fits(1) && fits(2)) {
        return Array3::zeros(data.raw_dim());
    }
    let f = |x: &Array3<f32>, a: usize, order: usize| {
        gaussian_filter1d(x, s[a], Axis(a), order, BorderMode::Reflect, TRUNCATE)
    };
    let gx = f(data, 0, 0);
    let dx = f(data, 0, 2);
    let gxgy = f(&gx, 1, 0);
    let gxdy = f(&gx, 1, 2);
    drop(gx);
    let dxgy = f(&dx, 1, 0);
    drop(dx);
    let mut log = f(&gxgy, 2, 2);
    drop(gxgy);
    log += &f(&gxdy, 2, 0);
    drop(gxdy);
    log += &f(&dxgy, 2, 0);
    let norm = (sigma_mm * sigma_mm) as f32;
    log.mapv_inplace(|v| -norm * v);
    log
}

/// `image` smoothed with a Gaussian of σ = `sigma_mm` (per axis by the
/// grid's spacing; reflecting borders), for derivatives by differences.
pub fn smoothed(image: &Volume<f32>, sigma_mm: f64) -> Array3<f32> {
    let g = image.geometry();
    let mut out = image.data().clone();
    for a in 0..3 {
        let s = (sigma_mm / g.spacing[a]) as f32;
        if out.len_of(Axis(a)) as f32 > TRUNCATE as f32 * s + 0.5 {
            out = gaussian_filter1d(&out, s, Axis(a), 0, BorderMode::Reflect, TRUNCATE);
        }
    }
    out
}

/// Local maxima (over the 26 neighbours and over `sigmas_mm`) of the
/// scale-normalised LoG above `min_response`, inside `within` when given
/// (non-zero voxels; same grid), strongest first.
pub fn bright_blobs(
    image: &Volume<f32>,
    sigmas_mm: &[f64],
    min_response: f32,
    within: Option<&Volume<u8>>,
) -> Vec<Blob> {
    let dim = image.data().raw_dim();
    let mut best = Array3::<f32>::from_elem(dim, f32::NEG_INFINITY);
    let mut scale = Array3::<u8>::zeros(dim);
    // The scales in parallel (each map is independent; the maximum over
    // scales is taken in order below, so the result does not depend on
    // the threads).
    let maps: Vec<Array3<f32>> = sigmas_mm
        .par_iter()
        .map(|&sigma| normalised_log(image, sigma))
        .collect();
    for (n, r) in maps.into_iter().enumerate() {
        ndarray::Zip::from(&mut best)
            .and(&mut scale)
            .and(&r)
            .for_each(|b, sc, &v| {
                if v > *b {
                    *b = v;
                    *sc = n as u8;
                }
            });
    }
    let [nx, ny, nz] = image.geometry().size;
    let inside = |i: usize, j: usize, k: usize| {
        within.is_none_or(|m| m.as_slice()[i + nx * (j + ny * k)] > 0)
    };
    let best = &best;
    let mut blobs: Vec<Blob> = (1..nz.saturating_sub(1))
        .into_par_iter()
        .flat_map_iter(|k| {
            let mut out = Vec::new();
            for j in 1..ny.saturating_sub(1) {
                for i in 1..nx.saturating_sub(1) {
                    let v = best[[i, j, k]];
                    if v < min_response || !inside(i, j, k) {
                        continue;
                    }
                    let mut peak = true;
                    'n: for dk in 0..3 {
                        for dj in 0..3 {
                            for di in 0..3 {
                                let w = best[[i + di - 1, j + dj - 1, k + dk - 1]];
                                // Ties go to the first in raster order.
                                let later = (dk, dj, di) > (1, 1, 1);
                                if w > v || (w == v && !later && (dk, dj, di) != (1, 1, 1)) {
                                    peak = false;
                                    break 'n;
                                }
                            }
                        }
                    }
                    if peak {
                        out.push(Blob {
                            ijk: [i, j, k],
                            sigma_mm: sigmas_mm[scale[[i, j, k]] as usize],
                            response: v,
                        });
                    }
                }
            }
            out
        })
        .collect();
    blobs.sort_by(|a, b| b.response.total_cmp(&a.response).then(a.ijk.cmp(&b.ijk)));
    blobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    #[test]
    fn a_sphere_peaks_at_its_centre_at_the_matching_scale() {
        let g = Geometry::new([40, 40, 40], [1.0; 3], [0.0; 3], Geometry::IDENTITY)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut v = Volume::filled(g, 0f32);
        // Spheres of radius 1.5 mm (3 mm across) and 4 mm (8 mm across),
        // and a rod (a vessel) that must not give a stronger blob.
        for (c, r) in [([10.0, 10.0, 10.0], 1.5f64), ([28.0, 26.0, 24.0], 4.0)] {
            for k in 0..40 {
                for j in 0..40 {
                    for i in 0..40 {
                        let d = ((i as f64 - c[0]).powi(2)
                            + (j as f64 - c[1]).powi(2)
                            + (k as f64 - c[2]).powi(2))
                        .sqrt();
                        if d <= r {
                            v.as_mut_slice()[i + 40 * (j + 40 * k)] = 1.0;
                        }
                    }
                }
            }
        }
        let b = bright_blobs(&v, &BLOB_SIGMAS_MM, 0.05, None);
        assert!(b.len() >= 2, "{b:?}");
        let near = |p: [usize; 3], c: [usize; 3]| (0..3).all(|a| p[a].abs_diff(c[a]) <= 1);
        let small = b
            .iter()
            .find(|x| near(x.ijk, [10, 10, 10]))
            .expect("small sphere");
        let large = b
            .iter()
            .find(|x| near(x.ijk, [28, 26, 24]))
            .expect("large sphere");
        assert!(small.sigma_mm <= 1.0, "{small:?}");
        assert!(large.sigma_mm >= 2.0, "{large:?}");
    }
}
