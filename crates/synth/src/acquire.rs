//! Acquisition: the scanner grid, and rendering a case onto it with
//! partial volume, bias field, Rician noise and a scanner intensity scale.

use delineate_imaging::{Geometry, Volume};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;

use crate::deform::CaseMap;
use crate::lesions::Lesion;
use crate::lookalikes::{index_box, Vessel};
use crate::randomise::{add_ghost, voxel_samples, wrap_around, Artefacts, Contrast, Plane};
use crate::sample::{add, norm, sub, WorldToIndex, V3};
use crate::shapes::occupancy;
use crate::template::{Template, WM};

/// Look-alike codes of [`Rendered::lookalikes`].
pub const LOOKALIKE_VESSEL: u8 = 1;
/// Venous sinuses, choroid plexus, dura and falx (the template's
/// enhancement above [`LOOKALIKE_ENHANCEMENT`]).
pub const LOOKALIKE_STRUCTURE: u8 = 2;
/// Label of a look-alike nodule beyond the skull (scalp or orbital fat) in
/// `lookalikes.nii.gz`.
pub const LOOKALIKE_EXTRACRANIAL: u8 = 3;
/// Enhancement (white-matter units) above which a normal structure counts
/// as a look-alike.
pub const LOOKALIKE_ENHANCEMENT: f32 = 0.3;

/// How the case was scanned.
#[derive(Clone, Debug, Serialize)]
pub struct Acquisition {
    pub grid: String,
    pub orientation: &'static str,
    pub spacing_mm: [f64; 3],
    pub snr: f64,
    /// Bias-field polynomial coefficients (x, y, z, x², y², z², xy, yz, xz).
    pub bias: [f64; 9],
    /// Scanner value of unbiased white matter.
    pub scanner_scale: f64,
    /// Enhancement gain of the normal structures (sinuses, plexus, dura).
    pub enhancement_gain: f64,
    /// Tissue intensities (the template's own without randomisation).
    pub contrast: Contrast,
    pub artefacts: Artefacts,
    /// Skull-stripped (as research datasets such as BraTS are): everything
    /// farther than this many voxels outside the cranial cavity is air.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skull_stripped_voxels: Option<usize>,
}

/// Closed-brain hull level taken as the inner table of the skull: the hull
/// is the brain closed over its sulci (5 mm) and blurred, so its 0.5 level
/// follows the brain's outer surface with the CSF of the sulci inside; a
/// little outside that (0.3) takes in the subarachnoid CSF over the
/// convexity and the dura on the inner table.
pub const INTRACRANIAL_HULL: f32 = 0.3;
/// Normal enhancing structures (venous sinuses, dura, falx, pituitary and
/// cavernous sinus) within this hull level are inside the cranial cavity.
pub const INTRACRANIAL_STRUCTURE_HULL: f32 = 0.02;

/// Whether template point `tp` lies inside the cranial cavity (inside the
/// inner table of the skull): brain, CSF, ventricles, dura, the venous
/// sinuses and the enhancing structures of the skull base next to the
/// brain (pituitary fossa, cavernous sinus, internal auditory canals).
/// Scalp, skull, orbits and face are outside.
pub fn intracranial_at(t: &Template, w2t: &WorldToIndex, tp: V3, gain: f32) -> bool {
    let hull = w2t.linear(&t.hull_soft, tp, 0.0);
    hull >= INTRACRANIAL_HULL
        || (hull >= INTRACRANIAL_STRUCTURE_HULL
            && gain * w2t.linear(&t.enhance, tp, 0.0) >= LOOKALIKE_ENHANCEMENT)
}

/// A grid covering the box `lo..hi` (LPS mm) with the slices of `plane`.
pub fn scanner_grid(lo: V3, hi: V3, spacing: [f64; 3], plane: Plane) -> Geometry {
    let dir = plane.direction();
    let axes: [V3; 3] = [0, 1, 2].map(|c| [dir[0][c], dir[1][c], dir[2][c]]);
    let center = [0, 1, 2].map(|a| (lo[a] + hi[a]) / 2.0);
    let ext = sub(hi, lo);
    let size = [0, 1, 2].map(|c| {
        let len: f64 = (0..3).map(|a| (axes[c][a] * ext[a]).abs()).sum();
        ((len / spacing[c]).ceil() as usize).max(1)
    });
    let mut origin = center;
    for c in 0..3 {
        let half = (size[c] as f64 - 1.0) / 2.0 * spacing[c];
        for a in 0..3 {
            origin[a] -= axes[c][a] * half;
        }
    }
    Geometry {
        size,
        spacing,
        origin,
        direction: dir,
    }
}

/// A rendered case before storage.
pub struct Rendered {
    pub image: Volume<u16>,
    pub truth: Volume<u16>,
    pub brain: Volume<u8>,
    /// The intracranial cavity ([`intracranial_at`], lesions and dural
    /// tails added): the target of the intracranial-mask network.
    pub intracranial: Volume<u8>,
    /// Where look-alikes are ([`LOOKALIKE_VESSEL`], [`LOOKALIKE_STRUCTURE`],
    /// [`LOOKALIKE_EXTRACRANIAL`]; never on a lesion voxel).
    pub lookalikes: Volume<u8>,
    /// Sum of partial-volume occupancy per lesion (voxels).
    pub occupancy: Vec<f64>,
    /// Mean noiseless intensity (white matter = 1) per lesion and of the
    /// vessels, for the record and the contrast tests.
    pub lesion_mean: Vec<f64>,
    pub vessel_mean: f64,
    pub wm_mean: f64,
}

struct Ctx {
    w2t: WorldToIndex,
    g: Geometry,
}

impl Ctx {
    fn world(&self, i: usize, j: usize, k: usize) -> V3 {
        self.g.index_to_world([i as f64, j as f64, k as f64])
    }
}

/// Renders the case onto `g`.
#[allow(clippy::too_many_arguments)]
pub fn render(
    t: &Template,
    map: &CaseMap,
    lesions: &[Lesion],
    vessels: &[Vessel],
    g: &Geometry,
    acq: &Acquisition,
    noise_seed: u64,
) -> Rendered {
    let s = g.size;
    let nxy = s[0] * s[1];
    let axes: [V3; 3] =
        [0, 1, 2].map(|c| [g.direction[0][c], g.direction[1][c], g.direction[2][c]]);
    let ctx = Ctx {
        w2t: WorldToIndex::new(t.t1.geometry()),
        g: g.clone(),
    };
    let gain = acq.enhancement_gain as f32;
    let contrast = &acq.contrast;
    // Each voxel integrates the anatomy over its extent (thick slices).
    let samples = voxel_samples(g.spacing, &axes);
    let inv = 1.0 / samples.len() as f32;
    // 1. Anatomy, slice by slice.
    let mut img = vec![0.0f32; g.len()];
    let mut brain = vec![0u8; g.len()];
    let mut looks = vec![0u8; g.len()];
    let mut cavity = vec![0u8; g.len()];
    img.par_chunks_mut(nxy)
        .zip(brain.par_chunks_mut(nxy))
        .zip(looks.par_chunks_mut(nxy))
        .zip(cavity.par_chunks_mut(nxy))
        .enumerate()
        .for_each(|(k, (((im, br), lk), ic))| {
            for j in 0..s[1] {
                for i in 0..s[0] {
                    let w = ctx.world(i, j, k);
                    let mut v = 0.0f32;
                    for off in &samples {
                        let tp = map.to_template(add(w, *off));
                        let b = ctx.w2t.linear(&t.brain_soft, tp, 0.0);
                        v += contrast.map(t.class_means, ctx.w2t.linear(&t.t1, tp, 0.0), b)
                            + gain * ctx.w2t.linear(&t.enhance, tp, 0.0);
                    }
                    let tp = map.to_template(w);
                    im[i + j * s[0]] = v * inv;
                    br[i + j * s[0]] = u8::from(ctx.w2t.linear(&t.brain_soft, tp, 0.0) >= 0.5);
                    ic[i + j * s[0]] = u8::from(intracranial_at(t, &ctx.w2t, tp, gain));
                    if gain * ctx.w2t.linear(&t.enhance, tp, 0.0) >= LOOKALIKE_ENHANCEMENT {
                        lk[i + j * s[0]] = LOOKALIKE_STRUCTURE;
                    }
                }
            }
        });
    let wm_mean = {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for k in (0..s[2]).step_by(3) {
            for j in (0..s[1]).step_by(3) {
                for i in (0..s[0]).step_by(3) {
                    let tp = map.to_template(ctx.world(i, j, k));
                    if ctx.w2t.nearest(&t.tissue, tp, 0) == WM {
                        sum += img[i + j * s[0] + k * nxy] as f64;
                        n += 1;
                    }
                }
            }
        }
        if n > 0 {
            sum / n as f64
        } else {
            1.0
        }
    };

    // 2. Oedema darkens white matter around metastases.
    for l in lesions {
        let Some(o) = &l.oedema else { continue };
        let (lo, hi) = o.shape.bounds();
        let (a, b) = index_box(&WorldToIndex::new(g), lo, hi, s);
        for k in a[2]..=b[2] {
            for j in a[1]..=b[1] {
                for i in a[0]..=b[0] {
                    let x = ctx.world(i, j, k);
                    let (occ, _) = occupancy(&o.shape, x, &axes, g.spacing);
                    if occ > 0.0 {
                        let tp = map.to_template(x);
                        if ctx.w2t.nearest(&t.tissue, tp, 0) == WM {
                            img[i + j * s[0] + k * nxy] *= 1.0 - (o.strength * occ) as f32;
                        }
                    }
                }
            }
        }
    }
    // 3. Dural tails: enhancement of the dura shell around a meningioma.
    for l in lesions {
        let Some(tail) = &l.tail else { continue };
        let r = tail.outer;
        let lo = [0, 1, 2].map(|a| tail.center[a] - r);
        let hi = [0, 1, 2].map(|a| tail.center[a] + r);
        let (a, b) = index_box(&WorldToIndex::new(g), lo, hi, s);
        for k in a[2]..=b[2] {
            for j in a[1]..=b[1] {
                for i in a[0]..=b[0] {
                    let x = ctx.world(i, j, k);
                    let dist = norm(sub(x, tail.center));
                    if dist > tail.outer {
                        continue;
                    }
                    let fade =
                        1.0 - ((dist - tail.inner) / (tail.outer - tail.inner)).clamp(0.0, 1.0);
                    let b = ctx.w2t.linear(&t.brain_soft, map.to_template(x), 0.0) as f64;
                    let shell = (1.0 - (b - 0.3).abs() / 0.25).clamp(0.0, 1.0);
                    img[i + j * s[0] + k * nxy] += (tail.amplitude * fade * shell) as f32;
                    // The enhancing dura of the tail is inside the cavity.
                    if fade * shell > 0.25 {
                        cavity[i + j * s[0] + k * nxy] = 1;
                    }
                }
            }
        }
    }
    // 4. Vessels, then lesions, composited by occupancy.
    let w2g = WorldToIndex::new(g);
    let mut vsum = (0.0f64, 0usize);
    for v in vessels {
        let (lo, hi) = v.shape.bounds();
        let (a, b) = index_box(&w2g, lo, hi, s);
        for k in a[2]..=b[2] {
            for j in a[1]..=b[1] {
                for i in a[0]..=b[0] {
                    let (occ, _) = occupancy(&v.shape, ctx.world(i, j, k), &axes, g.spacing);
                    if occ > 0.0 {
                        let p = &mut img[i + j * s[0] + k * nxy];
                        *p = *p * (1.0 - occ as f32) + (occ * v.intensity) as f32;
                        if occ >= 0.5 {
                            looks[i + j * s[0] + k * nxy] = if v.outside_skull {
                                LOOKALIKE_EXTRACRANIAL
                            } else {
                                vsum.0 += *p as f64;
                                vsum.1 += 1;
                                LOOKALIKE_VESSEL
                            };
                        }
                    }
                }
            }
        }
    }
    let mut truth = vec![0u16; g.len()];
    let mut occupancy_sum = vec![0.0; lesions.len()];
    let mut lesion_mean = vec![0.0; lesions.len()];
    for (n, l) in lesions.iter().enumerate() {
        let label = (n + 1) as u16;
        let (lo, hi) = l.shape.bounds();
        let (a, b) = index_box(&w2g, lo, hi, s);
        let mut best = (f64::INFINITY, usize::MAX);
        let (mut sum, mut cnt) = (0.0f64, 0usize);
        for k in a[2]..=b[2] {
            for j in a[1]..=b[1] {
                for i in a[0]..=b[0] {
                    let x = ctx.world(i, j, k);
                    let (occ, sd) = occupancy(&l.shape, x, &axes, g.spacing);
                    let lin = i + j * s[0] + k * nxy;
                    if sd < best.0 && truth[lin] == 0 {
                        best = (sd, lin);
                    }
                    if occ > 0.0 {
                        let p = &mut img[lin];
                        let tex = l.texture.as_ref().map_or(1.0, |t| t.factor(x));
                        *p = *p * (1.0 - occ as f32) + (occ * l.profile.at(sd) * tex) as f32;
                        occupancy_sum[n] += occ;
                    }
                    if sd <= 0.0 && truth[lin] == 0 {
                        truth[lin] = label;
                        sum += img[lin] as f64;
                        cnt += 1;
                    }
                }
            }
        }
        // A lesion smaller than a voxel still owns the voxel nearest to it.
        if cnt == 0 && best.1 != usize::MAX {
            truth[best.1] = label;
            sum += img[best.1] as f64;
            cnt = 1;
        }
        lesion_mean[n] = sum / cnt.max(1) as f64;
    }

    for ((l, c), &t) in looks.iter_mut().zip(cavity.iter_mut()).zip(&truth) {
        if t > 0 {
            *l = 0;
            // Every lesion lies inside the cavity: a large tumour never
            // punches a hole in the mask.
            *c = 1;
        }
    }
    // Skull stripping, when the case stands for a stripped dataset: the
    // cavity (holes filled) grown by a few voxels keeps its signal.
    if let Some(margin) = acq.skull_stripped_voxels {
        let ic = delineate_imaging::morphology::fill_holes(
            &Volume::from_vec(g.clone(), cavity.clone())
                .unwrap_or_else(|_| Volume::filled(g.clone(), 0)),
        )
        .map(|&v| v > 0);
        let keep = delineate_imaging::morphology::dilate(
            &ic,
            delineate_imaging::Connectivity::TwentySix,
            margin,
        );
        for (v, &k) in img.iter_mut().zip(keep.as_slice()) {
            if !k {
                *v = 0.0;
            }
        }
    }
    // 5. Artefacts of the acquisition, on the noiseless signal.
    if let Some((axis, amp)) = acq.artefacts.ghost {
        add_ghost(&mut img, s, axis, amp);
    }
    let mut g = g.clone();
    if let Some((axis, frac)) = acq.artefacts.wrap {
        let fold = (g.size[axis] as f64 * frac).round() as usize;
        g.size = wrap_around(
            &mut img,
            &mut [&mut truth, &mut brain, &mut looks, &mut cavity],
            g.size,
            axis,
            fold,
        );
    }
    let s = g.size;
    let nxy = s[0] * s[1];
    // 6. Bias field, Rician noise, scanner scale; per slice, each slice with
    // its own seeded stream so that the result does not depend on threads.
    let sigma = 1.0 / acq.snr.max(1e-3);
    let c = acq.bias;
    let scale = acq.scanner_scale;
    let mut out = vec![0u16; g.len()];
    out.par_chunks_mut(nxy).enumerate().for_each(|(k, o)| {
        let mut rng =
            ChaCha8Rng::seed_from_u64(noise_seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let z = 2.0 * k as f64 / (s[2].max(2) - 1) as f64 - 1.0;
        for j in 0..s[1] {
            let y = 2.0 * j as f64 / (s[1].max(2) - 1) as f64 - 1.0;
            for i in 0..s[0] {
                let x = 2.0 * i as f64 / (s[0].max(2) - 1) as f64 - 1.0;
                let poly = c[0] * x
                    + c[1] * y
                    + c[2] * z
                    + c[3] * x * x
                    + c[4] * y * y
                    + c[5] * z * z
                    + c[6] * x * y
                    + c[7] * y * z
                    + c[8] * x * z;
                let v = img[i + j * s[0] + k * nxy] as f64 * poly.exp();
                let n1: f64 = StandardNormal.sample(&mut rng);
                let n2: f64 = StandardNormal.sample(&mut rng);
                let m = ((v + sigma * n1).powi(2) + (sigma * n2).powi(2)).sqrt();
                o[i + j * s[0]] = (m * scale).round().clamp(0.0, u16::MAX as f64) as u16;
            }
        }
    });
    let geom = g.clone();
    Rendered {
        image: Volume::from_vec(geom.clone(), out)
            .unwrap_or_else(|_| Volume::filled(geom.clone(), 0)),
        truth: Volume::from_vec(geom.clone(), truth)
            .unwrap_or_else(|_| Volume::filled(geom.clone(), 0)),
        brain: Volume::from_vec(geom.clone(), brain)
            .unwrap_or_else(|_| Volume::filled(geom.clone(), 0)),
        lookalikes: Volume::from_vec(geom.clone(), looks)
            .unwrap_or_else(|_| Volume::filled(geom.clone(), 0)),
        // The cavity has no holes (a template's brain mask may have some).
        intracranial: delineate_imaging::morphology::fill_holes(
            &Volume::from_vec(geom.clone(), cavity)
                .unwrap_or_else(|_| Volume::filled(geom.clone(), 0)),
        ),
        occupancy: occupancy_sum,
        lesion_mean,
        vessel_mean: if vsum.1 > 0 {
            vsum.0 / vsum.1 as f64
        } else {
            0.0
        },
        wm_mean,
    }
}
