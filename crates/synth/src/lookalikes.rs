//! Normal structures that enhance on contrast T1 and fool a detector that
//! only looks for bright blobs.
//!
//! Fixed to the template (drawn once into [`Template::enhance`]):
//! - venous sinuses: superior sagittal (3–4.5 mm radius along the vertex),
//!   transverse (both sides along the tentorium) and straight sinus;
//! - choroid plexus in the atria of the lateral ventricles;
//! - thin dural (pachymeningeal) enhancement along the brain surface and
//!   the falx.
//!
//! Drawn per case ([`random_vessels`]): cortical vessels as smooth tubes of
//! 0.5–2.5 mm radius following the brain surface, and vessels in deep white
//! matter running through the slice, which look like dots on an axial image
//! and are tubes in 3-D (half-length `through_plane_half_mm`, 12–32 mm by
//! default: a vessel does not end a few millimetres after it appears).
//!
//! [`Template::enhance`]: crate::template::Template::enhance

use delineate_imaging::{morphology::erode, Connectivity, Volume};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::sample::{add, dot, norm, normalize, scale, sub, WorldToIndex, V3};
use crate::shapes::Shape;
use crate::template::{Extracranial, Frame, CSF, GM};

/// Enhancement added to the template's T1 (white matter = 1) by structure.
const SINUS_ENHANCEMENT: f32 = 1.5;
const CHOROID_ENHANCEMENT: f32 = 1.0;
const DURA_ENHANCEMENT: f32 = 0.45;
const FALX_ENHANCEMENT: f32 = 0.35;

/// Builds the template's enhancement channel.
pub fn template_enhancement(
    tissue: &Volume<u8>,
    brain_soft: &Volume<f32>,
    hull_soft: &Volume<f32>,
    frame: &Frame,
    center: V3,
) -> Volume<f32> {
    let g = tissue.geometry().clone();
    let s = g.size;
    let w2i = WorldToIndex::new(&g);
    let mut out = vec![0.0f32; g.len()];

    // Dura: the shell just outside the closed brain (soft hull 0.1–0.5).
    for (o, &b) in out.iter_mut().zip(hull_soft.as_slice()) {
        if b > 0.08 && b < 0.5 {
            *o = DURA_ENHANCEMENT;
        }
    }
    // Ventricles: CSF deep inside the brain. Choroid plexus: their posterior
    // (atrial) part, off the midline.
    let brain = brain_soft.map(|&b| b >= 0.5);
    let deep = erode(&brain, Connectivity::Six, 10);
    let mut vent = Vec::new();
    for k in 0..s[2] {
        for j in 0..s[1] {
            for i in 0..s[0] {
                let lin = i + j * s[0] + k * s[0] * s[1];
                let t = tissue.as_slice()[lin];
                let p = g.index_to_world([i as f64, j as f64, k as f64]);
                let m = frame.to_mni(p);
                if deep.as_slice()[lin] && t == CSF {
                    vent.push((lin, m));
                }
                // Falx: the interhemispheric fissure above the corpus callosum.
                if m[0].abs() < 1.2 && m[2] > 25.0 && (t == CSF || t == GM) {
                    out[lin] = out[lin].max(FALX_ENHANCEMENT);
                }
            }
        }
    }
    if !vent.is_empty() {
        let (ymin, ymax) = vent
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, m)| {
                (a.min(m[1]), b.max(m[1]))
            });
        let cut = ymax - 0.45 * (ymax - ymin);
        for (lin, m) in &vent {
            if m[1] < cut && m[0].abs() > 8.0 {
                out[*lin] = out[*lin].max(CHOROID_ENHANCEMENT);
            }
        }
    }

    // Sinuses follow the brain surface, found by marching out from the centre.
    let surface = |dir: V3| -> V3 {
        let dir = normalize(dir);
        let mut last = center;
        for step in 0..200 {
            let p = add(center, scale(dir, step as f64));
            if w2i.linear(hull_soft, p, 0.0) < 0.5 {
                return p;
            }
            last = p;
        }
        last
    };
    let mut draw_tube = |points: &[V3], radii: &[f64], value: f32| {
        let shape = Shape::Tube {
            points: points.to_vec(),
            radii: radii.to_vec(),
        };
        let (lo, hi) = shape.bounds();
        let (ilo, ihi) = index_box(&w2i, lo, hi, s);
        for k in ilo[2]..=ihi[2] {
            for j in ilo[1]..=ihi[1] {
                for i in ilo[0]..=ihi[0] {
                    let p = g.index_to_world([i as f64, j as f64, k as f64]);
                    let d = shape.sdf(p);
                    let occ = (0.5 - d).clamp(0.0, 1.0) as f32;
                    if occ > 0.0 {
                        let lin = i + j * s[0] + k * s[0] * s[1];
                        out[lin] = out[lin].max(value * occ);
                    }
                }
            }
        }
    };
    // Superior sagittal sinus: midline, from the frontal pole over the vertex
    // to the torcula; widening backwards.
    let (mut pts, mut radii) = (Vec::new(), Vec::new());
    for a in 0..=24 {
        let theta = (15.0 + 150.0 * a as f64 / 24.0).to_radians();
        // LPS: anterior is -y, superior is +z.
        let p = surface([0.0, -theta.cos(), theta.sin()]);
        let out_dir = normalize(sub(p, center));
        pts.push(add(p, scale(out_dir, 3.0)));
        radii.push(2.5 + 2.0 * a as f64 / 24.0);
    }
    let torcula = *pts.last().unwrap_or(&center);
    draw_tube(&pts, &radii, SINUS_ENHANCEMENT);
    // Transverse sinuses: from the torcula sideways along the tentorium.
    for side in [-1.0, 1.0] {
        let (mut pts, mut radii) = (vec![torcula], vec![4.0]);
        for a in 1..=12 {
            let az = (75.0 * a as f64 / 12.0).to_radians();
            let el = (-15.0f64).to_radians();
            let dir = [side * az.sin() * el.cos(), az.cos() * el.cos(), el.sin()];
            let p = surface(dir);
            pts.push(add(p, scale(normalize(sub(p, center)), 3.0)));
            radii.push(3.5 - 1.5 * a as f64 / 12.0);
        }
        draw_tube(&pts, &radii, SINUS_ENHANCEMENT);
    }
    // Straight sinus: from the vein of Galen to the torcula.
    let galen = frame.from_mni([0.0, -50.0, 3.0]);
    draw_tube(&[galen, torcula], &[1.8, 2.5], SINUS_ENHANCEMENT);

    Volume::from_vec(g.clone(), out).unwrap_or_else(|_| Volume::filled(g, 0.0))
}

/// Voxel index box (inclusive, clamped) covering a world box.
pub fn index_box(w2i: &WorldToIndex, lo: V3, hi: V3, size: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    let mut a = [f64::INFINITY; 3];
    let mut b = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let p = [
            if c & 1 == 0 { lo[0] } else { hi[0] },
            if c & 2 == 0 { lo[1] } else { hi[1] },
            if c & 4 == 0 { lo[2] } else { hi[2] },
        ];
        let q = w2i.index(p);
        for k in 0..3 {
            a[k] = a[k].min(q[k]);
            b[k] = b[k].max(q[k]);
        }
    }
    let ilo = [0, 1, 2].map(|k| a[k].floor().clamp(0.0, (size[k] - 1) as f64) as usize);
    let ihi = [0, 1, 2].map(|k| b[k].ceil().clamp(0.0, (size[k] - 1) as f64) as usize);
    (ilo, ihi)
}

/// A per-case enhancing vessel.
#[derive(Clone, Debug, Serialize)]
pub struct Vessel {
    pub shape: Shape,
    /// Intensity relative to white matter.
    pub intensity: f64,
    /// "cortical" (along the surface), "through-plane" (vertical), or a
    /// nodule beyond the skull: "scalp-fat" or "orbit-fat".
    pub kind: &'static str,
    pub radius_mm: f64,
    /// Beyond the skull (labelled [`crate::acquire::LOOKALIKE_EXTRACRANIAL`]).
    pub outside_skull: bool,
}

/// Lesion-like nodules beyond the skull: round, 3–9 mm across, as bright
/// as enhancing lesions, in scalp fat or (two in five) in orbital and
/// facial fat. What an intracranial mask must keep out of the result;
/// `to_case` maps template points to the case.
pub fn extracranial_nodules(
    rng: &mut ChaCha8Rng,
    sites: &Extracranial,
    to_case: &dyn Fn(V3) -> V3,
    count: usize,
) -> Vec<Vessel> {
    let mut out = Vec::new();
    for _ in 0..count {
        let orbit = !sites.orbit.is_empty() && (sites.scalp.is_empty() || rng.random_bool(0.4));
        let (pts, kind) = if orbit {
            (&sites.orbit, "orbit-fat")
        } else {
            (&sites.scalp, "scalp-fat")
        };
        if pts.is_empty() {
            break;
        }
        let c = to_case(pts[rng.random_range(0..pts.len())]);
        let r = rng.random_range(1.5..4.5);
        out.push(Vessel {
            shape: Shape::sphere(c, r),
            intensity: rng.random_range(1.5..2.2),
            kind,
            radius_mm: r,
            outside_skull: true,
        });
    }
    out
}

/// Draws cortical and through-plane vessels for one case. `brain_at`
/// gives the soft brain mask at a case point; `surface_points` are case
/// points just outside the brain.
pub fn random_vessels(
    rng: &mut ChaCha8Rng,
    brain_at: &dyn Fn(V3) -> f64,
    surface_points: &[V3],
    deep_points: &[V3],
    through_plane_half_mm: [f64; 2],
) -> Vec<Vessel> {
    let mut out = Vec::new();
    if surface_points.is_empty() {
        return out;
    }
    let n_cortical = rng.random_range(12..=24);
    for _ in 0..n_cortical {
        let start = surface_points[rng.random_range(0..surface_points.len())];
        let r0 = if rng.random_bool(0.2) {
            rng.random_range(1.5..2.5)
        } else {
            rng.random_range(0.5..1.4)
        };
        let length = rng.random_range(15.0..60.0);
        let mut dir = normalize([0; 3].map(|_| rng.random_range(-1.0..1.0)));
        let mut p = start;
        let (mut pts, mut radii) = (vec![p], vec![r0]);
        let steps = (length / 2.0) as usize;
        for s in 1..=steps {
            let jitter = [0; 3].map(|_| rng.random_range(-0.35..0.35));
            dir = normalize(add(dir, jitter));
            // Stay in the sulcal band around the brain surface.
            let b = brain_at(add(p, scale(dir, 2.0)));
            if !(0.15..=0.95).contains(&b) {
                let grad = [0, 1, 2].map(|a| {
                    let mut q = p;
                    q[a] += 1.5;
                    brain_at(q) - b
                });
                let toward = if b > 0.95 { scale(grad, -1.0) } else { grad };
                if norm(toward) > 1e-6 {
                    dir = normalize(add(dir, scale(normalize(toward), 0.8)));
                }
            }
            p = add(p, scale(dir, 2.0));
            pts.push(p);
            radii.push(r0 * (1.0 - 0.3 * s as f64 / steps as f64));
        }
        out.push(Vessel {
            shape: Shape::Tube { points: pts, radii },
            intensity: rng.random_range(1.4..2.0),
            kind: "cortical",
            radius_mm: r0,
            outside_skull: false,
        });
    }
    if !deep_points.is_empty() {
        let n_dots = rng.random_range(3..=8);
        for _ in 0..n_dots {
            let c = deep_points[rng.random_range(0..deep_points.len())];
            let r = rng.random_range(0.8..1.8);
            // One draw whatever the range, so that datasets with other
            // half-lengths are otherwise the same case for case.
            let u: f64 = rng.random_range(0.0..1.0);
            let [lo, hi] = through_plane_half_mm;
            let half = lo + u * (hi - lo).max(0.0);
            let tilt = [
                rng.random_range(-0.3..0.3),
                rng.random_range(-0.3..0.3),
                1.0,
            ];
            let d = scale(normalize(tilt), half);
            out.push(Vessel {
                shape: Shape::Tube {
                    points: vec![sub(c, d), add(c, d)],
                    radii: vec![r, r],
                },
                intensity: rng.random_range(1.4..2.0),
                kind: "through-plane",
                radius_mm: r,
                outside_skull: false,
            });
        }
    }
    let _ = dot;
    out
}
