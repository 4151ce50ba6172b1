//! Lesion-wise curves and summary numbers over a set of cases: the
//! precision–recall curve, average precision, FROC and sensitivity at
//! fixed false-positive rates, Dice of hit lesions, recall by lesion size
//! and kind. A set may repeat cases (bootstrap with replacement).

use serde::{Deserialize, Serialize};

use crate::matching::{CaseResult, Rules};

/// False positives per case at which sensitivity is reported.
pub const FP_RATES: [f64; 7] = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// The authors' threshold grid: sigmoid(linspace(0, 5, 51)).
pub fn sigmoid_grid() -> Vec<f64> {
    (0..=50)
        .map(|i| 1.0 / (1.0 + (-(i as f64) * 0.1).exp()))
        .collect()
}

/// Every distinct confidence of the predicted components, ascending.
pub fn unique_confidences(cases: &[CaseResult]) -> Vec<f64> {
    let mut v: Vec<f64> = cases
        .iter()
        .flat_map(|c| c.preds.iter().map(|p| p.confidence))
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// One point of the curves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub threshold: f64,
    pub recall: f64,
    /// Matching components / all components at this threshold; None when
    /// there are no components.
    pub precision: Option<f64>,
    pub fp_per_case: f64,
    pub hits: usize,
    pub false_positives: usize,
}

/// Lesion-size bucket by equivalent diameter, [lo, hi) mm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub lo: f64,
    pub hi: f64,
}

pub fn buckets_from_edges(edges: &[f64]) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut lo = 0.0;
    for &e in edges.iter().chain(std::iter::once(&f64::INFINITY)) {
        let name = if lo == 0.0 {
            format!("< {e} mm")
        } else if e.is_infinite() {
            format!("≥ {lo} mm")
        } else {
            format!("{lo}–{e} mm")
        };
        out.push(Bucket { name, lo, hi: e });
        lo = e;
    }
    out
}

/// The numbers that get confidence intervals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub cases: usize,
    pub lesions: usize,
    pub points: Vec<Point>,
    pub average_precision: f64,
    /// Sensitivity at [`FP_RATES`]: best operating point with at most that
    /// many FP per case (a step of the curve).
    pub sensitivity_step: Vec<f64>,
    /// ... and linearly interpolated between the FROC points around it.
    pub sensitivity_interpolated: Vec<f64>,
    /// Recall with every component (the lowest threshold).
    pub recall: f64,
    pub fp_per_case: f64,
    pub dice_median: f64,
    pub dice_mean: f64,
    /// Lowest threshold with at most 1 FP per case, and recall there.
    pub threshold_at_1fp: Option<f64>,
    pub recall_at_1fp: f64,
    /// Per bucket: lesions, recall (all components), recall at ≤ 1 FP/case,
    /// median Dice of hit lesions.
    pub by_size: Vec<GroupStats>,
    pub by_kind: Vec<GroupStats>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupStats {
    pub name: String,
    pub lesions: usize,
    pub recall: f64,
    pub recall_at_1fp: f64,
    pub dice_median: f64,
    /// Recall of this group at the overall FROC operating points for
    /// [`FP_RATES`] (the most lenient threshold with at most that many FP
    /// per case over all lesions; FPs have no size or kind).
    pub sensitivity_step: Vec<f64>,
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Summarises the cases `idx` (indices into `cases`, repeats allowed).
pub fn summarize(
    cases: &[CaseResult],
    idx: &[usize],
    thresholds: &[f64],
    buckets: &[Bucket],
    kinds: &[String],
) -> Summary {
    let sel: Vec<&CaseResult> = idx.iter().map(|&i| &cases[i]).collect();
    let n_cases = sel.len().max(1) as f64;
    let lesions: usize = sel.iter().map(|c| c.truth.len()).sum();
    let points: Vec<Point> = thresholds
        .iter()
        .map(|&tau| {
            let hits: usize = sel.iter().map(|c| c.hits(tau)).sum();
            let fp: usize = sel.iter().map(|c| c.false_positives(tau)).sum();
            let td: usize = sel.iter().map(|c| c.true_detections(tau)).sum();
            let paper = sel.first().is_some_and(|c| c.rules == Rules::Paper);
            Point {
                threshold: tau,
                recall: if lesions > 0 {
                    hits as f64 / lesions as f64
                } else if paper {
                    1.0
                } else {
                    f64::NAN
                },
                // Paper: lesions hit / (lesions hit + FP), 1 when both are
                // 0 (dpipe's `fraction`); delineate: over components.
                precision: if paper {
                    Some(if hits + fp > 0 {
                        hits as f64 / (hits + fp) as f64
                    } else {
                        1.0
                    })
                } else {
                    (td + fp > 0).then(|| td as f64 / (td + fp) as f64)
                },
                fp_per_case: fp as f64 / n_cases,
                hits,
                false_positives: fp,
            }
        })
        .collect();
    // Average precision: sum over thresholds, from strict to lenient, of
    // recall gained × precision there (scikit-learn's definition).
    let mut ap = 0.0;
    let mut last_recall = 0.0;
    let mut order: Vec<&Point> = points.iter().collect();
    order.sort_by(|a, b| b.threshold.total_cmp(&a.threshold));
    for p in &order {
        if let Some(prec) = p.precision {
            if p.recall.is_finite() && p.recall > last_recall {
                ap += (p.recall - last_recall) * prec;
                last_recall = p.recall;
            }
        }
    }
    // FROC, from (0 FP, 0 recall) upwards.
    let mut froc: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    froc.extend(
        order
            .iter()
            .filter(|p| p.recall.is_finite())
            .map(|p| (p.fp_per_case, p.recall)),
    );
    froc.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let step: Vec<f64> = FP_RATES
        .iter()
        .map(|&k| {
            froc.iter()
                .filter(|(f, _)| *f <= k)
                .map(|(_, r)| *r)
                .fold(0.0, f64::max)
        })
        .collect();
    let interp: Vec<f64> = FP_RATES
        .iter()
        .map(|&k| {
            let below = froc
                .iter()
                .rfind(|(f, _)| *f <= k)
                .copied()
                .unwrap_or((0.0, 0.0));
            match froc.iter().find(|(f, _)| *f > k) {
                Some(&(f1, r1)) if f1 > below.0 => {
                    below.1 + (r1 - below.1) * (k - below.0) / (f1 - below.0)
                }
                _ => below.1,
            }
        })
        .collect();
    let lowest = thresholds.iter().cloned().fold(f64::INFINITY, f64::min);
    let at_lowest = points.iter().find(|p| p.threshold == lowest);
    let mut sorted_thr: Vec<&Point> = points.iter().collect();
    sorted_thr.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
    let op = sorted_thr
        .iter()
        .find(|p| p.fp_per_case <= 1.0)
        .map(|p| p.threshold);
    let mut dice: Vec<f64> = sel
        .iter()
        .flat_map(|c| {
            c.truth
                .iter()
                .filter(|t| t.hit_confidence.is_some())
                .map(|t| t.best_dice)
        })
        .collect();
    let dice_mean = if dice.is_empty() {
        f64::NAN
    } else {
        dice.iter().sum::<f64>() / dice.len() as f64
    };
    let operating: Vec<Option<f64>> = FP_RATES
        .iter()
        .map(|&k| {
            sorted_thr
                .iter()
                .find(|p| p.fp_per_case <= k)
                .map(|p| p.threshold)
        })
        .collect();
    let group = |name: &str, f: &dyn Fn(&crate::matching::TruthLesion) -> bool| {
        let ls: Vec<_> = sel
            .iter()
            .flat_map(|c| c.truth.iter().filter(|t| f(t)))
            .collect();
        let n = ls.len();
        let hit = ls
            .iter()
            .filter(|t| t.hit_confidence.is_some_and(|c| c >= lowest))
            .count();
        let hit1 = op.map_or(0, |o| {
            ls.iter()
                .filter(|t| t.hit_confidence.is_some_and(|c| c >= o))
                .count()
        });
        let mut d: Vec<f64> = ls
            .iter()
            .filter(|t| t.hit_confidence.is_some())
            .map(|t| t.best_dice)
            .collect();
        let at = |o: Option<f64>| match o {
            Some(o) if n > 0 => {
                ls.iter()
                    .filter(|t| t.hit_confidence.is_some_and(|c| c >= o))
                    .count() as f64
                    / n as f64
            }
            _ if n > 0 => 0.0,
            _ => f64::NAN,
        };
        GroupStats {
            sensitivity_step: operating.iter().map(|&o| at(o)).collect(),
            name: name.to_string(),
            lesions: n,
            recall: if n > 0 {
                hit as f64 / n as f64
            } else {
                f64::NAN
            },
            recall_at_1fp: if n > 0 {
                hit1 as f64 / n as f64
            } else {
                f64::NAN
            },
            dice_median: median(&mut d),
        }
    };
    let by_size = buckets
        .iter()
        .map(|b| group(&b.name, &|t| t.diameter_mm >= b.lo && t.diameter_mm < b.hi))
        .collect();
    let by_kind = kinds
        .iter()
        .map(|k| group(k, &|t| t.kind.as_deref() == Some(k.as_str())))
        .collect();
    Summary {
        cases: sel.len(),
        lesions,
        average_precision: ap,
        sensitivity_step: step,
        sensitivity_interpolated: interp,
        recall: at_lowest.map_or(f64::NAN, |p| p.recall),
        fp_per_case: at_lowest.map_or(f64::NAN, |p| p.fp_per_case),
        dice_median: median(&mut dice),
        dice_mean,
        threshold_at_1fp: op,
        recall_at_1fp: op
            .and_then(|o| points.iter().find(|p| p.threshold == o))
            .map_or(0.0, |p| p.recall),
        by_size,
        by_kind,
        points,
    }
}
