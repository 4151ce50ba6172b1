//! Each case's anatomy: a smooth random map from case space (the patient as
//! scanned, LPS mm) into the template, plus the mass effect of lesions.
//!
//! The map pulls back: a case point x samples the template at
//! `t = c0 + A (m(x) - c0) + b + d(m(x))`, where `A` is a random rotation and
//! scaling, `b` a translation, `d` a smooth random displacement field, and
//! `m` pushes tissue away from space-occupying lesions.

use delineate_imaging::{Geometry, Volume};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::sample::{add, box_blur, dot, mat_vec, norm, scale, sub, WorldToIndex, V3};

/// Ranges of the random deformation (documented in docs/synth.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeformParams {
    /// Head rotation about each axis, uniform in ±this (degrees).
    pub rotation_deg: f64,
    /// Global scale factor, uniform in 1 ± this.
    pub scale: f64,
    /// Extra per-axis scale, uniform in 1 ± this.
    pub anisotropy: f64,
    /// Translation along each axis, uniform in ±this (mm).
    pub translation_mm: f64,
    /// RMS length of the elastic displacement (mm).
    pub elastic_rms_mm: f64,
    /// Control-point spacing of the elastic field before smoothing (mm).
    pub elastic_grid_mm: f64,
}

impl Default for DeformParams {
    fn default() -> Self {
        Self {
            rotation_deg: 8.0,
            scale: 0.08,
            anisotropy: 0.04,
            translation_mm: 4.0,
            elastic_rms_mm: 2.0,
            elastic_grid_mm: 6.0,
        }
    }
}

/// Radial push of tissue away from a space-occupying lesion.
#[derive(Clone, Debug, Serialize)]
pub struct MassEffect {
    pub center: V3,
    /// Tissue within this radius is displaced out of the lesion.
    pub radius: f64,
    /// Inward normal for lesions on the dura: only tissue on the brain side
    /// is pushed; the skull stays put.
    pub normal: Option<V3>,
}

impl MassEffect {
    fn apply(&self, x: V3) -> V3 {
        let v = sub(x, self.center);
        let s = norm(v);
        // The push fades out over a further 2 radii, which keeps the map
        // monotone along each ray (d rho / ds >= 1/4).
        let reach = 2.0 * self.radius + 2.0;
        if s >= self.radius + reach || s < 1e-9 {
            return x;
        }
        let t = ((s - self.radius) / reach).clamp(0.0, 1.0);
        let phi = 1.0 - t * t * (3.0 - 2.0 * t);
        let w = match self.normal {
            Some(n) => ((dot(v, n) / s + 0.2) / 0.5).clamp(0.0, 1.0),
            None => 1.0,
        };
        let rho = (s - self.radius * phi * w).max(0.0);
        add(self.center, scale(v, rho / s))
    }
}

/// The pull-back map of one case.
pub struct CaseMap {
    c0: V3,
    a: [[f64; 3]; 3],
    a_inv: [[f64; 3]; 3],
    b: V3,
    field: [Volume<f32>; 3],
    field_index: WorldToIndex,
    pub masses: Vec<MassEffect>,
    /// The parameters drawn, for the case record.
    pub summary: DeformSummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeformSummary {
    pub rotation_deg: V3,
    pub scale: V3,
    pub translation_mm: V3,
    pub elastic_max_mm: f64,
}

fn rot(axis: usize, deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let (p, q) = ((axis + 1) % 3, (axis + 2) % 3);
    m[p][p] = c;
    m[p][q] = -s;
    m[q][p] = s;
    m[q][q] = c;
    m
}

fn mat_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

fn mat_inv(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let n = nalgebra::Matrix3::from_fn(|r, c| m[r][c]);
    let i = n.try_inverse().unwrap_or_else(nalgebra::Matrix3::identity);
    [0, 1, 2].map(|r| [0, 1, 2].map(|c| i[(r, c)]))
}

impl CaseMap {
    /// Draws a deformation around the template brain centre `c0`; the
    /// elastic field covers the box `lo..hi` (case space, mm).
    pub fn random(rng: &mut ChaCha8Rng, p: &DeformParams, c0: V3, lo: V3, hi: V3) -> Self {
        let angles = [0; 3].map(|_| rng.random_range(-1.0..=1.0) * p.rotation_deg);
        let g = 1.0 + rng.random_range(-1.0..=1.0) * p.scale;
        let sc = [0; 3].map(|_| g * (1.0 + rng.random_range(-1.0..=1.0) * p.anisotropy));
        let tr = [0; 3].map(|_| rng.random_range(-1.0..=1.0) * p.translation_mm);
        let r = mat_mul(
            &rot(2, angles[2]),
            &mat_mul(&rot(1, angles[1]), &rot(0, angles[0])),
        );
        let s = [[sc[0], 0.0, 0.0], [0.0, sc[1], 0.0], [0.0, 0.0, sc[2]]];
        let a = mat_mul(&r, &s);

        let step = p.elastic_grid_mm.max(1.0);
        let margin = 4.0 * step;
        let size =
            [0, 1, 2].map(|k| (((hi[k] - lo[k] + 2.0 * margin) / step).ceil() as usize).max(2));
        let origin = [0, 1, 2].map(|k| lo[k] - margin);
        let geom = Geometry::new(size, [step; 3], origin, Geometry::IDENTITY)
            .unwrap_or_else(|_| unreachable_geometry());
        let n: usize = size.iter().product();
        let mut field = [0; 3].map(|_| {
            let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut *rng)).collect();
            let vol = Volume::from_vec(geom.clone(), v)
                .unwrap_or_else(|_| Volume::filled(geom.clone(), 0.0));
            box_blur(&vol, 2, 3)
        });
        let rms = (field
            .iter()
            .flat_map(|f| f.as_slice().iter())
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt()
            .max(1e-12);
        let k = (p.elastic_rms_mm / rms) as f32;
        for f in &mut field {
            for v in f.as_mut_slice() {
                *v *= k;
            }
        }
        let max = (0..n)
            .map(|i| {
                (0..3)
                    .map(|c| (field[c].as_slice()[i] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0, f64::max);
        Self {
            c0,
            a,
            a_inv: mat_inv(&a),
            b: tr,
            field_index: WorldToIndex::new(&geom),
            field,
            masses: Vec::new(),
            summary: DeformSummary {
                rotation_deg: angles,
                scale: sc,
                translation_mm: tr,
                elastic_max_mm: max,
            },
        }
    }

    fn displacement(&self, y: V3) -> V3 {
        [0, 1, 2].map(|c| self.field_index.linear(&self.field[c], y, 0.0) as f64)
    }

    /// Case point → template point, without the mass effect.
    pub fn to_template_unpushed(&self, y: V3) -> V3 {
        let d = self.displacement(y);
        add(
            add(add(self.c0, mat_vec(&self.a, sub(y, self.c0))), self.b),
            d,
        )
    }

    /// Case point → template point.
    pub fn to_template(&self, x: V3) -> V3 {
        let mut y = x;
        for m in &self.masses {
            y = m.apply(y);
        }
        self.to_template_unpushed(y)
    }

    /// Template point → case point (inverse of the map without mass
    /// effect, by fixed-point iteration; the field is small and smooth).
    pub fn to_case(&self, t: V3) -> V3 {
        let base = sub(sub(t, self.c0), self.b);
        let mut y = add(self.c0, mat_vec(&self.a_inv, base));
        for _ in 0..8 {
            let d = self.displacement(y);
            y = add(self.c0, mat_vec(&self.a_inv, sub(base, d)));
        }
        y
    }
}

fn unreachable_geometry() -> Geometry {
    // Only reached for a non-finite box; a 2-voxel grid keeps the map defined.
    Geometry {
        size: [2, 2, 2],
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: Geometry::IDENTITY,
    }
}
