//! Lesion-wise matching of one case: truth lesions against predicted
//! components, under one of two rule sets ([`Rules`]).
//!
//! **`paper`** (the default) is the authors' `iw/metric.py`
//! (`prc_records` and `get_prc`, neuro-ml/inverse_weighting) exactly:
//! truth lesions are the 26-connected components of the *binary* truth;
//! predicted lesions the 26-connected components of probability > 0.5,
//! each with its maximum probability as confidence; for each truth lesion
//! the overlapping component with the best Dice is *its* component (first
//! by component order on ties): the lesion is hit at threshold τ when that
//! Dice is > 0 and that component's confidence is ≥ τ; a component
//! overlapping no lesion is a false positive at τ when its confidence is
//! **> τ**; precision = lesions hit / (lesions hit + false positives),
//! pooled over cases, 1 when both are 0 (dpipe's `fraction`).
//!
//! **`delineate`** (this project's earlier rules), as below.
//!
//! Definitions of `delineate` (and what both share):
//! - a truth lesion is a connected component of the truth mask; voxels of
//!   different instance labels never join, so touching lesions with their
//!   own labels stay apart;
//! - a predicted lesion is a connected component of `probability >
//!   component_threshold` (or of a binary/instance mask), and its
//!   confidence is its maximum probability (1 for masks);
//! - predicted component *p* **matches** truth lesion *t* when their
//!   overlap criterion (Dice or IoU) is above `hit_threshold` (default:
//!   Dice > 0, i.e. any shared voxel);
//! - a truth lesion is **hit** at confidence threshold τ when a matching
//!   component with confidence ≥ τ exists (its best Dice is then > the
//!   threshold, as in the authors' code);
//! - a predicted component that matches no truth lesion is a **false
//!   positive**; one that matches is a true detection, even if another
//!   component matches the same lesion (split lesions are not penalised)
//!   or it matches several lesions (merged lesions are all hit).

use std::collections::HashMap;

use delineate_imaging::{
    components::label_components, measure::equivalent_diameter_mm, measure::voxel_volume_mm3,
    Connectivity, Volume,
};
use serde::{Deserialize, Serialize};

/// What the prediction file holds.
pub enum Prediction {
    /// Probabilities in [0, 1].
    Probability(Volume<f32>),
    /// Binary or instance labels (0 = background).
    Labels(Volume<u32>),
    /// Lesions as `delineate segment` forms them: instance label n (≥ 1)
    /// is one lesion with confidence `confidence[n − 1]`.
    Lesions {
        labels: Volume<u32>,
        confidence: Vec<f64>,
    },
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    Dice,
    Iou,
}

/// Which rule set scores a case (module documentation).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rules {
    /// The authors' `iw/metric.py`.
    #[default]
    Paper,
    /// Instances kept apart; hit confidence = the most confident matching
    /// component; FP at confidence ≥ τ; precision over components.
    Delineate,
}

/// Matching options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatchOptions {
    pub connectivity: u8,
    pub criterion: Criterion,
    /// A component matches a lesion when the criterion is strictly above this.
    pub hit_threshold: f64,
    /// Probability above which voxels form predicted components.
    pub component_threshold: f64,
    #[serde(default)]
    pub rules: Rules,
}

impl Default for MatchOptions {
    fn default() -> Self {
        Self {
            connectivity: 26,
            criterion: Criterion::Dice,
            hit_threshold: 0.0,
            component_threshold: 0.5,
            rules: Rules::Paper,
        }
    }
}

impl MatchOptions {
    fn connectivity(&self) -> Connectivity {
        if self.connectivity == 6 {
            Connectivity::Six
        } else {
            Connectivity::TwentySix
        }
    }
}

/// One truth lesion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TruthLesion {
    /// Component number (1-based, raster order of first voxels).
    pub id: u32,
    /// Instance label in the truth file.
    pub label: u32,
    pub kind: Option<String>,
    pub voxels: usize,
    pub volume_mm3: f64,
    pub diameter_mm: f64,
    /// Highest confidence among matching components; None when missed at
    /// every threshold.
    pub hit_confidence: Option<f64>,
    /// Best Dice and IoU with any predicted component (0 when none overlaps).
    pub best_dice: f64,
    pub best_iou: f64,
}

/// One predicted component.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredLesion {
    pub id: u32,
    pub voxels: usize,
    pub diameter_mm: f64,
    pub confidence: f64,
    /// Ids of the truth lesions it matches.
    pub matches: Vec<u32>,
    /// LPS centroid (mm).
    pub centre_mm: [f64; 3],
}

/// The matching of one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    pub case: String,
    pub truth: Vec<TruthLesion>,
    pub preds: Vec<PredLesion>,
    /// The rules it was matched under (they decide how it is counted).
    #[serde(default)]
    pub rules: Rules,
}

impl CaseResult {
    /// Truth lesions hit at threshold `tau`.
    pub fn hits(&self, tau: f64) -> usize {
        self.truth
            .iter()
            .filter(|t| t.hit_confidence.is_some_and(|c| c >= tau))
            .count()
    }
    /// False-positive components at `tau`: confidence > τ under the
    /// paper's rules, ≥ τ under delineate's.
    pub fn false_positives(&self, tau: f64) -> usize {
        let paper = self.rules == Rules::Paper;
        self.preds
            .iter()
            .filter(|p| {
                p.matches.is_empty() && (p.confidence > tau || (!paper && p.confidence >= tau))
            })
            .count()
    }
    /// Components with confidence ≥ `tau` that match a lesion.
    pub fn true_detections(&self, tau: f64) -> usize {
        self.preds
            .iter()
            .filter(|p| !p.matches.is_empty() && p.confidence >= tau)
            .count()
    }
}

/// Calls `f` with the linear index of every voxel in the bounding boxes of
/// `stats` (boxes may overlap; callers filter by label).
fn for_each_in_boxes(
    stats: &[delineate_imaging::Component],
    size: [usize; 3],
    mut f: impl FnMut(usize),
) {
    for s in stats {
        for k in s.bbox_min[2]..=s.bbox_max[2] {
            for j in s.bbox_min[1]..=s.bbox_max[1] {
                let row = (j + k * size[1]) * size[0];
                for i in s.bbox_min[0]..=s.bbox_max[0] {
                    f(row + i);
                }
            }
        }
    }
}

/// Matches one case. `kinds` maps truth instance labels to lesion kinds.
pub fn match_case(
    case: &str,
    truth: &Volume<u32>,
    pred: &Prediction,
    kinds: &HashMap<u32, String>,
    opts: &MatchOptions,
) -> CaseResult {
    let conn = opts.connectivity();
    let g = truth.geometry();
    let vv = voxel_volume_mm3(g);
    // The paper's truth lesions are components of the binary truth.
    let tc = label_components(truth, conn, |&v| v > 0, opts.rules == Rules::Delineate);
    let (pc, conf): (_, Vec<f64>) = match pred {
        Prediction::Probability(p) => {
            let thr = opts.component_threshold as f32;
            let pc = label_components(p, conn, |&v| v > thr, false);
            let mut conf = vec![0.0f64; pc.stats.len()];
            for_each_in_boxes(&pc.stats, g.size, |idx| {
                let l = pc.labels.as_slice()[idx];
                if l > 0 {
                    let c = &mut conf[l as usize - 1];
                    *c = c.max(p.as_slice()[idx] as f64);
                }
            });
            (pc, conf)
        }
        Prediction::Labels(m) => {
            let pc = label_components(m, conn, |&v| v > 0, true);
            let n = pc.stats.len();
            (pc, vec![1.0; n])
        }
        Prediction::Lesions { labels, confidence } => {
            // Components never join different labels; a lesion split in
            // parts (after resampling) keeps its confidence in each.
            let pc = label_components(labels, conn, |&v| v > 0, true);
            let conf = pc
                .stats
                .iter()
                .map(|s| {
                    let l = labels.as_slice()[s.first_voxel] as usize;
                    confidence.get(l.wrapping_sub(1)).copied().unwrap_or(0.0)
                })
                .collect();
            (pc, conf)
        }
    };
    // Overlap counts of every (truth, predicted) pair in one pass.
    // Only voxels inside truth lesions' boxes can overlap.
    let mut overlap: HashMap<(u32, u32), usize> = HashMap::new();
    let (tl, pl) = (tc.labels.as_slice(), pc.labels.as_slice());
    for s in &tc.stats {
        for_each_in_boxes(std::slice::from_ref(s), g.size, |idx| {
            let (t, p) = (tl[idx], pl[idx]);
            if t == s.label && p > 0 {
                *overlap.entry((t, p)).or_insert(0) += 1;
            }
        });
    }
    let tsize: Vec<usize> = tc.stats.iter().map(|s| s.voxels).collect();
    let psize: Vec<usize> = pc.stats.iter().map(|s| s.voxels).collect();
    let mut truth_out: Vec<TruthLesion> = tc
        .stats
        .iter()
        .map(|s| {
            let label = truth.as_slice()[s.first_voxel];
            let volume = s.voxels as f64 * vv;
            TruthLesion {
                id: s.label,
                label,
                kind: kinds.get(&label).cloned(),
                voxels: s.voxels,
                volume_mm3: volume,
                diameter_mm: equivalent_diameter_mm(volume),
                hit_confidence: None,
                best_dice: 0.0,
                best_iou: 0.0,
            }
        })
        .collect();
    let mut preds_out: Vec<PredLesion> = pc
        .stats
        .iter()
        .map(|s| PredLesion {
            id: s.label,
            voxels: s.voxels,
            diameter_mm: equivalent_diameter_mm(s.voxels as f64 * vv),
            confidence: conf[s.label as usize - 1],
            matches: Vec::new(),
            centre_mm: g.index_to_world(s.centroid),
        })
        .collect();
    let mut pairs: Vec<_> = overlap.into_iter().collect();
    pairs.sort_unstable();
    // Paper: each lesion's best-Dice component (first on ties) decides.
    let mut best: Vec<Option<(f64, u32)>> = vec![None; truth_out.len()];
    for ((t, p), n) in pairs {
        let (a, b) = (tsize[t as usize - 1] as f64, psize[p as usize - 1] as f64);
        let n = n as f64;
        let dice = 2.0 * n / (a + b);
        let iou = n / (a + b - n);
        let tl = &mut truth_out[t as usize - 1];
        tl.best_dice = tl.best_dice.max(dice);
        tl.best_iou = tl.best_iou.max(iou);
        let crit = match opts.criterion {
            Criterion::Dice => dice,
            Criterion::Iou => iou,
        };
        if crit > opts.hit_threshold {
            let c = conf[p as usize - 1];
            if opts.rules == Rules::Delineate {
                tl.hit_confidence = Some(tl.hit_confidence.map_or(c, |h: f64| h.max(c)));
            }
            preds_out[p as usize - 1].matches.push(t);
        }
        let b = &mut best[t as usize - 1];
        if b.is_none_or(|(d, _)| crit > d) {
            *b = Some((crit, p));
        }
    }
    if opts.rules == Rules::Paper {
        for (tl, b) in truth_out.iter_mut().zip(&best) {
            if let Some((crit, p)) = *b {
                if crit > opts.hit_threshold {
                    tl.hit_confidence = Some(conf[p as usize - 1]);
                }
            }
        }
    }
    CaseResult {
        case: case.to_string(),
        truth: truth_out,
        preds: preds_out,
        rules: opts.rules,
    }
}
