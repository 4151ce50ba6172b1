//! A procedural head for machines without Colin27: scalp, skull, CSF,
//! folded cortex over white matter, lateral ventricles, cerebellum with
//! finer folia, and a brainstem, on Colin27's grid (1 mm, MNI-like).

use delineate_imaging::{Geometry, Volume};

/// Scanner values of the phantom's tissues (T1, white matter about 110).
const WM_T1: f32 = 110.0;
const GM_T1: f32 = 72.0;
const CSF_T1: f32 = 25.0;
const BONE_T1: f32 = 12.0;
const SCALP_T1: f32 = 120.0;

fn ellipsoid_q(p: [f64; 3], c: [f64; 3], r: [f64; 3]) -> f64 {
    ((0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum::<f64>()).sqrt()
}

/// The phantom T1 image and its brain mask.
pub fn head_phantom() -> (Volume<f32>, Volume<bool>) {
    let size = [181, 217, 181];
    // Colin27's grid: RAS origin (-90, -125, -71), axes to R, A, S.
    let g = Geometry {
        size,
        spacing: [1.0; 3],
        origin: [90.0, 125.0, -71.0],
        direction: [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    let n = size.iter().product();
    let mut t1 = vec![0.0f32; n];
    let mut brain = vec![false; n];
    let cerebrum = ([0.0, -18.0, 10.0], [68.0, 86.0, 70.0]);
    let cerebellum = ([0.0, -62.0, -32.0], [50.0, 28.0, 22.0]);
    let head = ([0.0, -18.0, 0.0], [80.0, 100.0, 88.0]);
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                let p = [i as f64 - 90.0, j as f64 - 125.0, k as f64 - 71.0];
                let lin = i + j * size[0] + k * size[0] * size[1];
                let qc = ellipsoid_q(p, cerebrum.0, cerebrum.1);
                let qb = ellipsoid_q(p, cerebellum.0, cerebellum.1);
                // Brainstem: a vertical cylinder of radius 11 mm.
                let stem_r = ((p[0]).powi(2) + (p[1] + 26.0).powi(2)).sqrt();
                let in_stem = stem_r < 11.0 && p[2] > -66.0 && p[2] < 0.0;
                let depth_c = (1.0 - qc) * 68.0;
                let depth_b = (1.0 - qb) * 22.0;
                let depth_s = if in_stem { 11.0 - stem_r } else { -1.0 };
                let depth = depth_c.max(depth_b).max(depth_s);
                let qh = ellipsoid_q(p, head.0, head.1);
                let v = if depth >= 0.0 {
                    brain[lin] = true;
                    let vent = [-1.0, 1.0]
                        .iter()
                        .any(|s| ellipsoid_q(p, [s * 12.0, -10.0, 15.0], [6.0, 26.0, 9.0]) < 1.0);
                    if vent {
                        CSF_T1
                    } else if depth == depth_s && !(depth_c > 0.0 || depth_b > 0.0) {
                        WM_T1 * 0.97
                    } else {
                        // Gyri: cortex thickness and sulci vary with a folding pattern.
                        let (f, ribbon) = if depth_b > depth_c {
                            (((p[2] * 0.9).sin() + 0.3 * (p[1] * 0.5).sin()) as f32, 2.0)
                        } else {
                            (
                                ((p[0] * 0.21).sin() * (p[1] * 0.18).sin()
                                    + (p[2] * 0.2 + p[0] * 0.1).sin())
                                    as f32
                                    * 0.7,
                                3.0,
                            )
                        };
                        let sulcus = f > 0.55 && depth < 9.0;
                        if sulcus {
                            CSF_T1
                        } else if depth < ribbon + 2.5 * (f as f64 + 0.7) {
                            GM_T1
                        } else {
                            WM_T1
                        }
                    }
                } else if qh < 1.0 {
                    // Outside the brain, inside the head: CSF, skull, scalp.
                    let out = -depth;
                    if out < 3.0 {
                        CSF_T1
                    } else if qh < 0.9 {
                        BONE_T1
                    } else {
                        SCALP_T1
                    }
                } else {
                    0.0
                };
                let texture = 1.0
                    + 0.03 * ((p[0] * 1.3).sin() * (p[1] * 1.1).cos() * (p[2] * 0.9).sin()) as f32;
                t1[lin] = v * texture;
            }
        }
    }
    let t1 = Volume::from_vec(g.clone(), t1).unwrap_or_else(|_| Volume::filled(g.clone(), 0.0));
    let brain = Volume::from_vec(g.clone(), brain).unwrap_or_else(|_| Volume::filled(g, false));
    (t1, brain)
}
