//! What the second stage knows of a candidate: a fixed vector of
//! measurements around it on the model grid, in the units of the
//! network's input (the contract's normalisation), so that they mean the
//! same on any scanner the normalisation copes with.
//!
//! The measurements are the classical ones of computer-aided detection of
//! spots (Lindeberg's scale space, Frangi et al. 1998 for vessels):
//! - the scale-normalised Laplacian at every scale (how big it is);
//! - the Hessian's eigenvalues at its best scale, σ²-normalised, and their
//!   ratios: a bright sphere has three large negative eigenvalues, a vessel
//!   two, a sheet (dura, falx) one — the look-alikes a small metastasis
//!   must be told from;
//! - its intensity against a ring around it (contrast in SDs of the ring);
//! - the network's probability near it;
//! - how much of its neighbourhood lies inside the cranial cavity (the
//!   dura and the sinuses lie on its edge).
//!
//! The Hessian comes from differences of the Gaussian-smoothed image
//! ([`delineate_imaging::blobs::smoothed`]); the eigenvalues of a
//! symmetric 3 × 3 matrix are computed in closed form (no crate needed for
//! one small matrix).

use delineate_imaging::blobs::smoothed;
use delineate_imaging::Volume;
use ndarray::Array3;
use rayon::prelude::*;

/// The names of the features, in order.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "network_max",
    "from_network",
    "log_s0",
    "log_s1",
    "log_s2",
    "log_s3",
    "log_s4",
    "best_sigma_mm",
    "hessian_e1",
    "hessian_e2",
    "hessian_e3",
    "blobness",
    "tubeness",
    "peak",
    "core_mean",
    "ring_mean",
    "ring_sd",
    "contrast",
    "inside_fraction",
    "surround_mean",
];
/// Number of features.
pub const FEATURES: usize = 20;
/// The scales the features are measured at (σ, mm); the first five
/// features after the network's are the Laplacian at these.
pub const FEATURE_SIGMAS_MM: [f64; 5] = [0.7, 1.0, 1.4, 2.0, 2.8];

/// The smoothed images of one case, shared by all its candidates.
pub struct FeatureMaps<'a> {
    normalised: &'a Volume<f32>,
    probability: Option<&'a Volume<f32>>,
    within: Option<&'a Volume<u8>>,
    smoothed: Vec<Array3<f32>>,
}

impl<'a> FeatureMaps<'a> {
    /// `normalised`: the network's input on the model grid; `probability`:
    /// its output there; `within`: the intracranial mask (or the head).
    pub fn new(
        normalised: &'a Volume<f32>,
        probability: Option<&'a Volume<f32>>,
        within: Option<&'a Volume<u8>>,
    ) -> Self {
        let smoothed = FEATURE_SIGMAS_MM
            .par_iter()
            .map(|&s| smoothed(normalised, s))
            .collect();
        Self {
            normalised,
            probability,
            within,
            smoothed,
        }
    }

    /// The features of a candidate at `ijk` (model grid).
    pub fn features(&self, ijk: [usize; 3], from_network: bool) -> [f32; FEATURES] {
        let g = self.normalised.geometry();
        let s = g.size;
        let sp = g.spacing;
        let mut f = [0f32; FEATURES];
        f[0] = self.probability.map_or(0.0, |p| max_near(p, ijk, 2));
        f[1] = f32::from(u8::from(from_network));
        // Hessians at every scale (differences one voxel apart, clamped at
        // the border).
        let mut best = (f32::MIN, 0usize, [0f32; 3]);
        for (n, sm) in self.smoothed.iter().enumerate() {
            let h = hessian(sm, ijk, s, sp);
            let sigma2 = (FEATURE_SIGMAS_MM[n] * FEATURE_SIGMAS_MM[n]) as f32;
            let e = symmetric_eigenvalues(h).map(|v| -sigma2 * v);
            let log = e.iter().sum::<f32>();
            f[2 + n] = log;
            if log > best.0 {
                best = (log, n, e);
            }
        }
        let (_, n, mut e) = best;
        e.sort_by(|a, b| b.total_cmp(a));
        f[7] = FEATURE_SIGMAS_MM[n] as f32;
        f[8..11].copy_from_slice(&e);
        let e1 = e[0].max(1e-6);
        f[11] = (e[2] / e1).clamp(-1.0, 1.0);
        f[12] = (e[1] / e1).clamp(-1.0, 1.0);
        let z = self.normalised.as_slice();
        f[13] = z[ijk[0] + s[0] * (ijk[1] + s[1] * ijk[2])];
        // Core: a sphere of the blob's radius (√3 σ, at least 1 mm); ring:
        // 1–3 mm beyond it.
        let r = (3f64.sqrt() * FEATURE_SIGMAS_MM[n]).max(1.0);
        let core = sphere_stats(self.normalised, ijk, 0.0, r);
        let ring = sphere_stats(self.normalised, ijk, r + 1.0, r + 3.0);
        f[14] = core.mean;
        f[15] = ring.mean;
        f[16] = ring.sd;
        f[17] = (core.mean - ring.mean) / ring.sd.max(0.05);
        f[18] = match self.within {
            Some(m) => sphere_fraction(m, ijk, 8.0),
            None => 1.0,
        };
        f[19] = sphere_stats(self.normalised, ijk, 0.0, 10.0).mean;
        f
    }
}

/// The largest value within `r` voxels of `ijk` (a cube).
pub(crate) fn max_near(p: &Volume<f32>, ijk: [usize; 3], r: usize) -> f32 {
    let s = p.geometry().size;
    let mut m = 0f32;
    for k in ijk[2].saturating_sub(r)..(ijk[2] + r + 1).min(s[2]) {
        for j in ijk[1].saturating_sub(r)..(ijk[1] + r + 1).min(s[1]) {
            for i in ijk[0].saturating_sub(r)..(ijk[0] + r + 1).min(s[0]) {
                m = m.max(p.as_slice()[i + s[0] * (j + s[1] * k)]);
            }
        }
    }
    m
}

/// Second derivatives of `f` at `ijk` by central differences (mm⁻²).
fn hessian(f: &Array3<f32>, ijk: [usize; 3], s: [usize; 3], sp: [f64; 3]) -> [[f32; 3]; 3] {
    let at = |d: [i64; 3]| -> f32 {
        let p = [0, 1, 2].map(|a| (ijk[a] as i64 + d[a]).clamp(0, s[a] as i64 - 1) as usize);
        f[[p[0], p[1], p[2]]]
    };
    let unit = |a: usize, v: i64| {
        let mut d = [0i64; 3];
        d[a] = v;
        d
    };
    let c = at([0; 3]);
    let mut h = [[0f32; 3]; 3];
    for a in 0..3 {
        h[a][a] = (at(unit(a, 1)) - 2.0 * c + at(unit(a, -1))) / (sp[a] * sp[a]) as f32;
        for b in a + 1..3 {
            let d = |u: i64, v: i64| {
                let mut d = [0i64; 3];
                d[a] = u;
                d[b] = v;
                at(d)
            };
            let v = (d(1, 1) - d(1, -1) - d(-1, 1) + d(-1, -1)) / (4.0 * sp[a] * sp[b]) as f32;
            h[a][b] = v;
            h[b][a] = v;
        }
    }
    h
}

/// Eigenvalues of a symmetric 3 × 3 matrix (the trigonometric closed
/// form; Smith, CACM 1961), in no particular order.
pub(crate) fn symmetric_eigenvalues(m: [[f32; 3]; 3]) -> [f32; 3] {
    let m = m.map(|r| r.map(f64::from));
    let p1 = m[0][1].powi(2) + m[0][2].powi(2) + m[1][2].powi(2);
    if p1 <= 1e-30 {
        return [m[0][0], m[1][1], m[2][2]].map(|v| v as f32);
    }
    let q = (m[0][0] + m[1][1] + m[2][2]) / 3.0;
    let p2 = (m[0][0] - q).powi(2) + (m[1][1] - q).powi(2) + (m[2][2] - q).powi(2) + 2.0 * p1;
    let p = (p2 / 6.0).sqrt();
    let b = |i: usize, j: usize| (m[i][j] - if i == j { q } else { 0.0 }) / p;
    let det = b(0, 0) * (b(1, 1) * b(2, 2) - b(1, 2) * b(2, 1))
        - b(0, 1) * (b(1, 0) * b(2, 2) - b(1, 2) * b(2, 0))
        + b(0, 2) * (b(1, 0) * b(2, 1) - b(1, 1) * b(2, 0));
    let phi = (det / 2.0).clamp(-1.0, 1.0).acos() / 3.0;
    let e1 = q + 2.0 * p * phi.cos();
    let e3 = q + 2.0 * p * (phi + 2.0 * std::f64::consts::PI / 3.0).cos();
    let e2 = 3.0 * q - e1 - e3;
    [e1, e2, e3].map(|v| v as f32)
}

struct Stats {
    mean: f32,
    sd: f32,
}

/// Mean and SD of `v` over the voxels between `r0` and `r1` mm from `ijk`.
fn sphere_stats(v: &Volume<f32>, ijk: [usize; 3], r0: f64, r1: f64) -> Stats {
    let (mut n, mut sum, mut sq) = (0usize, 0f64, 0f64);
    each_in_shell(v.geometry().size, v.geometry().spacing, ijk, r0, r1, |i| {
        let x = v.as_slice()[i] as f64;
        n += 1;
        sum += x;
        sq += x * x;
    });
    if n == 0 {
        return Stats { mean: 0.0, sd: 0.0 };
    }
    let mean = sum / n as f64;
    Stats {
        mean: mean as f32,
        sd: (sq / n as f64 - mean * mean).max(0.0).sqrt() as f32,
    }
}

/// Fraction of the voxels within `r` mm of `ijk` that are non-zero in `m`
/// (voxels beyond the volume count as outside).
fn sphere_fraction(m: &Volume<u8>, ijk: [usize; 3], r: f64) -> f32 {
    let sp = m.geometry().spacing;
    let (mut n, mut inside) = (0usize, 0usize);
    each_in_shell(m.geometry().size, sp, ijk, 0.0, r, |i| {
        n += 1;
        inside += usize::from(m.as_slice()[i] > 0);
    });
    let full: f64 = (4.0 / 3.0) * std::f64::consts::PI * r.powi(3) / (sp[0] * sp[1] * sp[2]);
    inside as f32 / (n as f64).max(full).max(1.0) as f32
}

/// Calls `f` with the linear index of every voxel (inside the volume)
/// whose centre lies between `r0` (inclusive) and `r1` (inclusive) mm of
/// `ijk`'s centre.
fn each_in_shell(
    s: [usize; 3],
    sp: [f64; 3],
    ijk: [usize; 3],
    r0: f64,
    r1: f64,
    mut f: impl FnMut(usize),
) {
    let reach = [0, 1, 2].map(|a| (r1 / sp[a]).floor() as usize);
    for k in ijk[2].saturating_sub(reach[2])..(ijk[2] + reach[2] + 1).min(s[2]) {
        let dz = (k as f64 - ijk[2] as f64) * sp[2];
        for j in ijk[1].saturating_sub(reach[1])..(ijk[1] + reach[1] + 1).min(s[1]) {
            let dy = (j as f64 - ijk[1] as f64) * sp[1];
            for i in ijk[0].saturating_sub(reach[0])..(ijk[0] + reach[0] + 1).min(s[0]) {
                let dx = (i as f64 - ijk[0] as f64) * sp[0];
                let d2 = dx * dx + dy * dy + dz * dz;
                if d2 >= r0 * r0 && d2 <= r1 * r1 {
                    f(i + s[0] * (j + s[1] * k));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delineate_imaging::Geometry;

    #[test]
    fn eigenvalues_of_known_matrices() {
        let mut e = symmetric_eigenvalues([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]);
        e.sort_by(f32::total_cmp);
        for (a, b) in e.iter().zip([1.0, 3.0, 5.0]) {
            assert!((a - b).abs() < 1e-5, "{e:?}");
        }
        let mut e = symmetric_eigenvalues([[-1.0, 0.0, 0.0], [0.0, -4.0, 0.0], [0.0, 0.0, 0.5]]);
        e.sort_by(f32::total_cmp);
        assert_eq!(e, [-4.0, -1.0, 0.5]);
    }

    fn draw(v: &mut Volume<f32>, inside: impl Fn([f64; 3]) -> bool) {
        let s = v.geometry().size;
        for k in 0..s[2] {
            for j in 0..s[1] {
                for i in 0..s[0] {
                    if inside([i as f64, j as f64, k as f64]) {
                        v.as_mut_slice()[i + s[0] * (j + s[1] * k)] = 3.0;
                    }
                }
            }
        }
    }

    /// A sphere, a vessel and a sheet of the same brightness: the sphere
    /// has three strong eigenvalues, the vessel two, the sheet one.
    #[test]
    fn a_sphere_a_vessel_and_a_sheet_are_told_apart() {
        let g = Geometry::new([48, 48, 48], [1.0; 3], [0.0; 3], Geometry::IDENTITY)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut v = Volume::filled(g, 0f32);
        let d = |p: [f64; 3], c: [f64; 3]| (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>();
        draw(&mut v, |p| d(p, [12.0, 12.0, 12.0]) <= 2.0f64.powi(2));
        draw(&mut v, |p| {
            (p[0] - 36.0).powi(2) + (p[1] - 12.0).powi(2) <= 2.0f64.powi(2)
        });
        draw(&mut v, |p| (p[2] - 36.0).abs() <= 1.5 && p[0] < 24.0);
        let maps = FeatureMaps::new(&v, None, None);
        let sphere = maps.features([12, 12, 12], false);
        let vessel = maps.features([36, 12, 24], false);
        let sheet = maps.features([12, 36, 36], false);
        let names = |f: &[f32; FEATURES]| format!("blobness {} tubeness {}", f[11], f[12]);
        assert!(sphere[11] > 0.6, "sphere: {}", names(&sphere));
        assert!(
            vessel[11] < 0.2 && vessel[12] > 0.6,
            "vessel: {}",
            names(&vessel)
        );
        assert!(
            sheet[11] < 0.2 && sheet[12] < 0.2,
            "sheet: {}",
            names(&sheet)
        );
        assert!(sphere[17] > 3.0, "contrast {}", sphere[17]);
    }
}
