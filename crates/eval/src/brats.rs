//! BraTS 2023 lesion-wise metrics (BraTS-METS and BraTS-MEN), as the
//! challenge's own evaluation computes them (rachitsaluja/BraTS-2023-Metrics,
//! `eval.py`, `get_LesionWiseScores` / `get_LesionWiseResults`), and
//! panoptica's recognition, segmentation and panoptic quality.
//!
//! **Lesion-wise Dice and HD95** of one case, binary truth and prediction:
//! 1. truth lesions are 26-connected components; the truth is dilated
//!    (`dilation` iterations of the 18-connected structure,
//!    scipy's `generate_binary_structure(3, 2)`) and lesions that fall in one
//!    dilated component are merged into one;
//! 2. each merged lesion is dilated the same way; every predicted
//!    component (26-connected) touching that dilation belongs to it, and the
//!    lesion's Dice and HD95 are those of the lesion against the union of its
//!    components (no component: Dice 0, HD95 374 mm);
//! 3. predicted components that belong to no lesion are false positives,
//!    each scored Dice 0 and HD95 374;
//! 4. lesions of at most the challenge's volume threshold (mm³) are left
//!    out; lesion-wise Dice = Σ Dice / (lesions + false positives), HD95 =
//!    (Σ HD95 + 374·false positives) / (lesions + false positives); 0/0 gives
//!    Dice 1 and HD95 0.
//!
//! | challenge | dilation | volume threshold |
//! |---|---|---|
//! | METS | 1 | 2 mm³ |
//! | MEN | 1 | 50 mm³ |
//!
//! **HD95** here is panoptica's (and MedPy's): borders are mask voxels with
//! a 6-neighbour outside the mask; each border voxel's Euclidean distance
//! (with the voxel spacing) to the other mask's border; the 95th percentile
//! (linear interpolation) of both directions pooled. The challenge's code
//! uses DeepMind's `surface_distance` instead (surfel-area-weighted
//! percentiles per direction, the larger one), which differs from this by
//! fractions of a voxel on smooth lesions.
//!
//! **Panoptic quality** (panoptica's defaults on a semantic pair):
//! instances are the 26-connected components of truth and prediction, an
//! instance pair matches at IoU ≥ 0.5 (one to one); RQ = TP / (TP + ½FP +
//! ½FN), SQ = mean IoU of the matched pairs (and its Dice version), PQ =
//! RQ·SQ.

use delineate_imaging::distance::distance_to;
use delineate_imaging::measure::voxel_volume_mm3;
use delineate_imaging::{label_components, Connectivity, Geometry, Volume};
use serde::{Deserialize, Serialize};

/// HD95 (mm) given to a missed lesion or a false positive (the challenge's
/// value).
pub const MISSED_HD95: f64 = 374.0;

/// Which BraTS 2023 challenge's settings.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Challenge {
    #[cfg_attr(feature = "clap", value(name = "brats2023-mets"))]
    Mets,
    #[cfg_attr(feature = "clap", value(name = "brats2023-men"))]
    Men,
}

impl Challenge {
    pub fn dilation(self) -> usize {
        1
    }

    pub fn volume_threshold_mm3(self) -> f64 {
        match self {
            Self::Mets => 2.0,
            Self::Men => 50.0,
        }
    }
}

/// One merged truth lesion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BratsLesion {
    pub volume_mm3: f64,
    /// Predicted components that belong to it.
    pub components: usize,
    pub dice: f64,
    /// 374 when it has no component.
    pub hd95: f64,
    /// Above the volume threshold: part of the scores.
    pub counted: bool,
}

/// Panoptica's quality numbers of one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Panoptic {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub rq: f64,
    pub sq: f64,
    pub sq_dice: f64,
    pub pq: f64,
}

/// The BraTS 2023 lesion-wise evaluation of one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BratsCase {
    pub case: String,
    pub lesions: Vec<BratsLesion>,
    pub false_positives: usize,
    pub tp: usize,
    pub fn_: usize,
    pub lesionwise_dice: f64,
    pub lesionwise_hd95: f64,
    /// Dice of the whole masks (1 when both are empty).
    pub legacy_dice: f64,
    pub panoptic: Panoptic,
}

/// Means over cases (the challenge ranks by per-case scores).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BratsSummary {
    pub challenge: Challenge,
    pub cases: usize,
    pub lesionwise_dice: f64,
    pub lesionwise_hd95: f64,
    pub legacy_dice: f64,
    pub tp: usize,
    pub fn_: usize,
    pub false_positives: usize,
    pub rq: f64,
    pub sq: f64,
    pub pq: f64,
}

/// The 18-connected dilation of `mask`, `iterations` times.
fn dilate18(mask: &[bool], size: [usize; 3], iterations: usize) -> Vec<bool> {
    let mut cur = mask.to_vec();
    let [nx, ny, nz] = size;
    let offs: Vec<[isize; 3]> = (-1..=1)
        .flat_map(|k| (-1..=1).flat_map(move |j| (-1..=1).map(move |i| [i, j, k])))
        .filter(|o: &[isize; 3]| {
            let n = o.iter().filter(|&&v| v != 0).count();
            n > 0 && n < 3
        })
        .collect();
    for _ in 0..iterations {
        let mut next = cur.clone();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    if !cur[i + nx * (j + ny * k)] {
                        continue;
                    }
                    for o in &offs {
                        let (a, b, c) = (i as isize + o[0], j as isize + o[1], k as isize + o[2]);
                        if a >= 0
                            && b >= 0
                            && c >= 0
                            && (a as usize) < nx
                            && (b as usize) < ny
                            && (c as usize) < nz
                        {
                            next[a as usize + nx * (b as usize + ny * c as usize)] = true;
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// Voxels of `mask` with a 6-neighbour outside it (or outside the grid).
fn border(mask: &[bool], size: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = size;
    let at = |i: isize, j: isize, k: isize| {
        i >= 0
            && j >= 0
            && k >= 0
            && (i as usize) < nx
            && (j as usize) < ny
            && (k as usize) < nz
            && mask[i as usize + nx * (j as usize + ny * k as usize)]
    };
    let mut out = vec![false; mask.len()];
    for k in 0..nz as isize {
        for j in 0..ny as isize {
            for i in 0..nx as isize {
                if at(i, j, k)
                    && !(at(i - 1, j, k)
                        && at(i + 1, j, k)
                        && at(i, j - 1, k)
                        && at(i, j + 1, k)
                        && at(i, j, k - 1)
                        && at(i, j, k + 1))
                {
                    out[i as usize + nx * (j as usize + ny * k as usize)] = true;
                }
            }
        }
    }
    out
}

/// numpy's default percentile (linear interpolation).
fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = (v.len() - 1) as f64 * q / 100.0;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// HD95 (panoptica's) of two masks on a grid of `size` and `spacing`; ∞
/// when either is empty.
pub fn hd95(a: &[bool], b: &[bool], size: [usize; 3], spacing: [f64; 3]) -> f64 {
    if !a.iter().any(|&v| v) || !b.iter().any(|&v| v) {
        return f64::INFINITY;
    }
    let g = Geometry {
        size,
        spacing,
        origin: [0.0; 3],
        direction: Geometry::IDENTITY,
    };
    let (ba, bb) = (border(a, size), border(b, size));
    let to = |t: &[bool]| Volume::from_vec(g.clone(), t.to_vec()).map(|v| distance_to(&v));
    let (Ok(da), Ok(db)) = (to(&ba), to(&bb)) else {
        return f64::INFINITY;
    };
    let mut d: Vec<f64> = ba
        .iter()
        .zip(db.as_slice())
        .filter(|(&x, _)| x)
        .map(|(_, &v)| v)
        .chain(
            bb.iter()
                .zip(da.as_slice())
                .filter(|(&x, _)| x)
                .map(|(_, &v)| v),
        )
        .collect();
    percentile(&mut d, 95.0)
}

fn dice(a: usize, b: usize, both: usize) -> f64 {
    if a + b == 0 {
        1.0
    } else {
        2.0 * both as f64 / (a + b) as f64
    }
}

/// `data` (x-fastest, `size`) inside the box `lo..hi` (exclusive).
fn crop<T: Copy>(data: &[T], size: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<T> {
    let mut out = Vec::with_capacity((hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]));
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            let row = size[0] * (j + size[1] * k);
            out.extend_from_slice(&data[row + lo[0]..row + hi[0]]);
        }
    }
    out
}

/// The box of a component's bounding box grown by `m` voxels, clipped.
fn grown(min: [usize; 3], max: [usize; 3], m: usize, size: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    (
        [0, 1, 2].map(|a| min[a].saturating_sub(m)),
        [0, 1, 2].map(|a| (max[a] + 1 + m).min(size[a])),
    )
}

/// The BraTS 2023 lesion-wise evaluation of one case (binary masks on one
/// grid). Each lesion is computed inside its own box (the lesion's dilated
/// component and its predicted components, plus one voxel).
pub fn brats_case(
    name: &str,
    truth: &Volume<bool>,
    pred: &Volume<bool>,
    ch: Challenge,
) -> BratsCase {
    let g = truth.geometry();
    let size = g.size;
    let vv = voxel_volume_mm3(g);
    let d = ch.dilation();
    let (t, p) = (truth.as_slice(), pred.as_slice());
    let pc = label_components(pred, Connectivity::TwentySix, |&v| v, false);
    let dil = dilate18(t, size, d);
    let dil_vol =
        Volume::from_vec(g.clone(), dil).unwrap_or_else(|_| Volume::filled(g.clone(), false));
    let dc = label_components(&dil_vol, Connectivity::TwentySix, |&v| v, false);
    let mut belongs = vec![false; pc.stats.len() + 1];
    let mut lesions = Vec::with_capacity(dc.stats.len());
    for st in &dc.stats {
        let lesion = st.label;
        // The dilated component holds the lesion's own dilation.
        let (lo, hi) = grown(st.bbox_min, st.bbox_max, d + 1, size);
        let sub = [0, 1, 2].map(|a| hi[a] - lo[a]);
        let (tt, dl, pl) = (
            crop(t, size, lo, hi),
            crop(dc.labels.as_slice(), size, lo, hi),
            crop(pc.labels.as_slice(), size, lo, hi),
        );
        let lm: Vec<bool> = tt
            .iter()
            .zip(&dl)
            .map(|(&x, &l)| x && l == lesion)
            .collect();
        let ld = dilate18(&lm, sub, d);
        let mut mine: Vec<u32> = ld
            .iter()
            .zip(&pl)
            .filter(|(&x, &c)| x && c > 0)
            .map(|(_, &c)| c)
            .collect();
        mine.sort_unstable();
        mine.dedup();
        for &c in &mine {
            belongs[c as usize] = true;
        }
        // The box that holds the lesion and all its components.
        let (mut blo, mut bhi) = (lo, hi);
        for &c in &mine {
            let cs = &pc.stats[c as usize - 1];
            let (l2, h2) = grown(cs.bbox_min, cs.bbox_max, 1, size);
            blo = [0, 1, 2].map(|a| blo[a].min(l2[a]));
            bhi = [0, 1, 2].map(|a| bhi[a].max(h2[a]));
        }
        let bsub = [0, 1, 2].map(|a| bhi[a] - blo[a]);
        let (tt, dl, pl) = (
            crop(t, size, blo, bhi),
            crop(dc.labels.as_slice(), size, blo, bhi),
            crop(pc.labels.as_slice(), size, blo, bhi),
        );
        let lm: Vec<bool> = tt
            .iter()
            .zip(&dl)
            .map(|(&x, &l)| x && l == lesion)
            .collect();
        let union: Vec<bool> = pl
            .iter()
            .map(|&c| c > 0 && mine.binary_search(&c).is_ok())
            .collect();
        let (a, u) = (
            lm.iter().filter(|&&v| v).count(),
            union.iter().filter(|&&v| v).count(),
        );
        let both = lm.iter().zip(&union).filter(|(&x, &y)| x && y).count();
        let volume = a as f64 * vv;
        let h = hd95(&lm, &union, bsub, g.spacing);
        lesions.push(BratsLesion {
            volume_mm3: volume,
            components: mine.len(),
            dice: dice(a, u, both),
            hd95: if h.is_finite() { h } else { MISSED_HD95 },
            counted: volume > ch.volume_threshold_mm3(),
        });
    }
    let false_positives = (1..=pc.stats.len()).filter(|&c| !belongs[c]).count();
    let counted: Vec<&BratsLesion> = lesions.iter().filter(|l| l.counted).collect();
    let denom = counted.len() + false_positives;
    let (lw_dice, lw_hd) = if denom == 0 {
        (1.0, 0.0)
    } else {
        (
            counted.iter().map(|l| l.dice).sum::<f64>() / denom as f64,
            (counted.iter().map(|l| l.hd95).sum::<f64>() + MISSED_HD95 * false_positives as f64)
                / denom as f64,
        )
    };
    let tp = counted.iter().filter(|l| l.components > 0).count();
    let fn_ = counted.len() - tp;
    let (ta, pa) = (
        t.iter().filter(|&&v| v).count(),
        p.iter().filter(|&&v| v).count(),
    );
    let both = t.iter().zip(p).filter(|(&x, &y)| x && y).count();
    BratsCase {
        case: name.to_string(),
        lesions,
        false_positives,
        tp,
        fn_,
        lesionwise_dice: lw_dice,
        lesionwise_hd95: lw_hd,
        legacy_dice: dice(ta, pa, both),
        panoptic: panoptic(truth, &pc),
    }
}

/// Panoptica's RQ, SQ and PQ: 26-connected instances, matched at IoU ≥ 0.5.
fn panoptic(truth: &Volume<bool>, pc: &delineate_imaging::Components) -> Panoptic {
    let tc = label_components(truth, Connectivity::TwentySix, |&v| v, false);
    let (nt, np) = (tc.stats.len(), pc.stats.len());
    let mut overlap = std::collections::HashMap::<(u32, u32), usize>::new();
    for (&a, &b) in tc.labels.as_slice().iter().zip(pc.labels.as_slice()) {
        if a > 0 && b > 0 {
            *overlap.entry((a, b)).or_insert(0) += 1;
        }
    }
    let mut pairs: Vec<(f64, f64, u32, u32)> = overlap
        .iter()
        .map(|(&(a, b), &n)| {
            let (sa, sb) = (
                tc.stats[a as usize - 1].voxels,
                pc.stats[b as usize - 1].voxels,
            );
            let iou = n as f64 / (sa + sb - n) as f64;
            (iou, 2.0 * n as f64 / (sa + sb) as f64, a, b)
        })
        .filter(|x| x.0 >= 0.5)
        .collect();
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(&y.2)).then(x.3.cmp(&y.3)));
    let (mut used_t, mut used_p) = (vec![false; nt + 1], vec![false; np + 1]);
    let (mut ious, mut dices) = (Vec::new(), Vec::new());
    for (iou, d, a, b) in pairs {
        if !used_t[a as usize] && !used_p[b as usize] {
            used_t[a as usize] = true;
            used_p[b as usize] = true;
            ious.push(iou);
            dices.push(d);
        }
    }
    let tp = ious.len();
    let (fp, fn_) = (np - tp, nt - tp);
    let rq = if tp + fp + fn_ == 0 {
        1.0
    } else {
        tp as f64 / (tp as f64 + 0.5 * (fp + fn_) as f64)
    };
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (sq, sq_dice) = (mean(&ious), mean(&dices));
    Panoptic {
        tp,
        fp,
        fn_,
        rq,
        sq,
        sq_dice,
        pq: rq * sq,
    }
}

/// Means over cases.
pub fn summarize(cases: &[BratsCase], ch: Challenge) -> BratsSummary {
    let n = cases.len().max(1) as f64;
    let mean = |f: &dyn Fn(&BratsCase) -> f64| cases.iter().map(f).sum::<f64>() / n;
    BratsSummary {
        challenge: ch,
        cases: cases.len(),
        lesionwise_dice: mean(&|c| c.lesionwise_dice),
        lesionwise_hd95: mean(&|c| c.lesionwise_hd95),
        legacy_dice: mean(&|c| c.legacy_dice),
        tp: cases.iter().map(|c| c.tp).sum(),
        fn_: cases.iter().map(|c| c.fn_).sum(),
        false_positives: cases.iter().map(|c| c.false_positives).sum(),
        rq: mean(&|c| c.panoptic.rq),
        sq: mean(&|c| c.panoptic.sq),
        pq: mean(&|c| c.panoptic.pq),
    }
}
