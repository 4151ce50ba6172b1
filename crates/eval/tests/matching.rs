#![allow(clippy::unwrap_used)]
//! Hand-computed lesion-wise cases: split and merged lesions, touching
//! lesions under 6- and 26-connectivity, empty truth or prediction, false
//! positives only, thresholds, IoU criterion, AP and FROC points, and
//! bootstrap determinism.

use std::collections::HashMap;

use delineate_eval::{
    bootstrap::{bootstrap, draws},
    curves::{buckets_from_edges, summarize, FP_RATES},
    matching::{match_case, Prediction},
    BootstrapOptions, CaseResult, Criterion, MatchOptions, Resampling,
};
use delineate_imaging::{Geometry, Volume};

const N: usize = 20;

fn grid() -> Geometry {
    Geometry::new([N, N, N], [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap()
}

fn boxes(list: &[([usize; 3], [usize; 3], u32)]) -> Volume<u32> {
    let mut v = Volume::filled(grid(), 0u32);
    for &(lo, hi, l) in list {
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    v.as_mut_slice()[i + j * N + k * N * N] = l;
                }
            }
        }
    }
    v
}

fn probs(list: &[([usize; 3], [usize; 3], f32)]) -> Prediction {
    let mut v = Volume::filled(grid(), 0f32);
    for &(lo, hi, p) in list {
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    v.as_mut_slice()[i + j * N + k * N * N] = p;
                }
            }
        }
    }
    Prediction::Probability(v)
}

/// These tests pin the `delineate` rules (the paper's have their own file
/// and a conformance test against the authors' code).
fn delineate() -> MatchOptions {
    MatchOptions {
        rules: delineate_eval::matching::Rules::Delineate,
        ..MatchOptions::default()
    }
}

fn run(truth: &Volume<u32>, pred: &Prediction, opts: &MatchOptions) -> CaseResult {
    match_case("c", truth, pred, &HashMap::new(), opts)
}

#[test]
fn one_lesion_split_in_two_predictions_is_one_hit_and_no_false_positive() {
    // Truth 4×4×4 = 64 voxels; two predictions of 4×2×4 = 32 each.
    let t = boxes(&[([2, 2, 2], [6, 6, 6], 1)]);
    let p = probs(&[([2, 2, 2], [6, 4, 6], 0.9), ([2, 5, 2], [6, 7, 6], 0.7)]);
    let r = run(&t, &p, &delineate());
    assert_eq!(r.truth.len(), 1);
    assert_eq!(r.preds.len(), 2);
    assert_eq!(r.hits(0.5), 1);
    assert_eq!(r.false_positives(0.5), 0);
    assert_eq!(r.truth[0].hit_confidence, Some(0.9f32 as f64));
    // Best Dice: first piece 2·32/(64+32).
    assert!((r.truth[0].best_dice - 64.0 / 96.0).abs() < 1e-12);
    // Above 0.9 nothing hits; between 0.7 and 0.9 the first piece does.
    assert_eq!(r.hits(0.95), 0);
    assert_eq!(r.hits(0.8), 1);
}

#[test]
fn two_lesions_merged_by_one_prediction_are_both_hit() {
    let t = boxes(&[([2, 2, 2], [5, 5, 5], 1), ([8, 2, 2], [11, 5, 5], 2)]);
    let p = probs(&[([2, 2, 2], [11, 5, 5], 0.8)]);
    let r = run(&t, &p, &delineate());
    assert_eq!(r.truth.len(), 2);
    assert_eq!(r.hits(0.5), 2);
    assert_eq!(r.false_positives(0.5), 0);
    assert_eq!(r.preds[0].matches, vec![1, 2]);
    // Dice of each: 2·27 / (27 + 81).
    for t in &r.truth {
        assert!((t.best_dice - 54.0 / 108.0).abs() < 1e-12);
    }
}

#[test]
fn touching_lesions_depend_on_connectivity() {
    // Two cubes sharing only a corner (diagonal neighbours), one label.
    let t = boxes(&[([2, 2, 2], [4, 4, 4], 1), ([4, 4, 4], [6, 6, 6], 1)]);
    let p = probs(&[([2, 2, 2], [4, 4, 4], 0.9)]);
    let r26 = run(&t, &p, &delineate());
    assert_eq!(r26.truth.len(), 1);
    assert_eq!(r26.hits(0.5), 1);
    let six = MatchOptions {
        connectivity: 6,
        ..delineate()
    };
    let r6 = run(&t, &p, &six);
    assert_eq!(r6.truth.len(), 2);
    assert_eq!(r6.hits(0.5), 1);
    // Different instance labels stay apart even when touching face to face.
    let t2 = boxes(&[([2, 2, 2], [4, 4, 4], 1), ([4, 2, 2], [6, 4, 4], 2)]);
    assert_eq!(run(&t2, &p, &delineate()).truth.len(), 2);
}

#[test]
fn empty_truth_empty_prediction_and_only_false_positives() {
    let empty_t = boxes(&[]);
    let empty_p = probs(&[]);
    let r = run(&empty_t, &empty_p, &delineate());
    assert!(r.truth.is_empty() && r.preds.is_empty());
    let fp_only = probs(&[
        ([1, 1, 1], [3, 3, 3], 0.6),
        ([10, 10, 10], [12, 12, 12], 0.95),
    ]);
    let r2 = run(&empty_t, &fp_only, &delineate());
    assert_eq!(r2.false_positives(0.5), 2);
    assert_eq!(r2.false_positives(0.9), 1);
    let t = boxes(&[([5, 5, 5], [8, 8, 8], 1)]);
    let r3 = run(&t, &empty_p, &delineate());
    assert_eq!(r3.hits(0.0), 0);
    assert_eq!(r3.truth[0].hit_confidence, None);
    assert_eq!(r3.truth[0].best_dice, 0.0);
    // Summaries over these cases stay defined.
    let cases = vec![r, r2, r3];
    let s = summarize(
        &cases,
        &[0, 1, 2],
        &[0.5, 0.9],
        &buckets_from_edges(&[5.0]),
        &[],
    );
    assert_eq!(s.lesions, 1);
    assert_eq!(s.recall, 0.0);
    assert!((s.fp_per_case - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(s.average_precision, 0.0);
    // No case at all: nothing panics.
    let s0 = summarize(&[], &[], &[0.5], &[], &[]);
    assert_eq!(s0.lesions, 0);
}

#[test]
fn component_threshold_and_iou_criterion() {
    let t = boxes(&[([2, 2, 2], [6, 6, 6], 1)]);
    // A prediction touching the lesion in one 1×4×4 slab: IoU = 16 / (64 + 64 - 16).
    let p = probs(&[([5, 2, 2], [9, 6, 6], 0.8)]);
    let dice = run(&t, &p, &delineate());
    assert_eq!(dice.hits(0.5), 1);
    let iou = MatchOptions {
        criterion: Criterion::Iou,
        hit_threshold: 0.2,
        ..delineate()
    };
    let r = run(&t, &p, &iou);
    assert!((r.truth[0].best_iou - 16.0 / 112.0).abs() < 1e-12);
    assert_eq!(r.hits(0.5), 0);
    assert_eq!(
        r.false_positives(0.5),
        1,
        "a component that matches no lesion is a false positive"
    );
    // Voxels at exactly the component threshold are not part of a component.
    let at = probs(&[([2, 2, 2], [6, 6, 6], 0.5)]);
    assert!(run(&t, &at, &delineate()).preds.is_empty());
    // Label masks: every component has confidence 1.
    let m = Prediction::Labels(boxes(&[([2, 2, 2], [4, 4, 4], 1)]));
    let r = run(&t, &m, &delineate());
    assert_eq!(r.preds[0].confidence, 1.0);
}

/// Two cases with hand-computed curves.
/// Case A: lesions a1 (hit by conf 0.9), a2 (hit by 0.6); FP at 0.8.
/// Case B: lesion b1 (missed); FPs at 0.7 and 0.55.
fn two_cases() -> Vec<CaseResult> {
    let ta = boxes(&[([1, 1, 1], [4, 4, 4], 1), ([10, 10, 10], [13, 13, 13], 2)]);
    let pa = probs(&[
        ([1, 1, 1], [4, 4, 4], 0.9),
        ([10, 10, 10], [13, 13, 13], 0.6),
        ([16, 1, 1], [18, 3, 3], 0.8),
    ]);
    let tb = boxes(&[([5, 5, 5], [8, 8, 8], 1)]);
    let pb = probs(&[
        ([14, 14, 14], [16, 16, 16], 0.7),
        ([1, 16, 1], [3, 18, 3], 0.55),
    ]);
    vec![
        match_case("a", &ta, &pa, &HashMap::new(), &delineate()),
        match_case("b", &tb, &pb, &HashMap::new(), &delineate()),
    ]
}

#[test]
fn average_precision_and_froc_by_hand() {
    let cases = two_cases();
    let thr: Vec<f64> = [0.55, 0.6, 0.7, 0.8, 0.9]
        .iter()
        .map(|&v: &f32| v as f64)
        .collect();
    let s = summarize(&cases, &[0, 1], &thr, &[], &[]);
    // Thresholds from strict to lenient (3 lesions):
    // 0.9: 1 hit, 0 FP → R 1/3, P 1; 0.8: R 1/3, P 1/2; 0.7: R 1/3, P 1/3;
    // 0.6: R 2/3, P 2/4; 0.55: R 2/3, P 2/5.
    // AP = 1/3 · 1 + 1/3 · 1/2 = 0.5.
    assert!(
        (s.average_precision - 0.5).abs() < 1e-12,
        "{}",
        s.average_precision
    );
    assert!((s.recall - 2.0 / 3.0).abs() < 1e-12);
    assert!((s.fp_per_case - 1.5).abs() < 1e-12);
    // FROC points (FP/case, recall): (0, 0), (0, 1/3), (0.5, 1/3), (1, 1/3), (1, 2/3), (1.5, 2/3).
    let at = |v: &Vec<f64>, k: f64| v[FP_RATES.iter().position(|&r| r == k).unwrap()];
    assert!((at(&s.sensitivity_step, 0.125) - 1.0 / 3.0).abs() < 1e-12);
    assert!((at(&s.sensitivity_step, 1.0) - 2.0 / 3.0).abs() < 1e-12);
    assert!((at(&s.sensitivity_step, 0.5) - 1.0 / 3.0).abs() < 1e-12);
    // Interpolated at 0.75 would be between (0.5, 1/3) and (1, 1/3): same.
    assert!((at(&s.sensitivity_interpolated, 0.5) - 1.0 / 3.0).abs() < 1e-12);
    assert!((at(&s.sensitivity_interpolated, 8.0) - 2.0 / 3.0).abs() < 1e-12);
    // By size: the three 3×3×3 cubes (27 mm³, 3.7 mm) fall in "< 5 mm";
    // at the 1 FP/case operating point (τ = 0.6) two of three are hit.
    let sb = summarize(&cases, &[0, 1], &thr, &buckets_from_edges(&[5.0]), &[]);
    assert_eq!(sb.by_size[0].lesions, 3);
    let i1 = FP_RATES.iter().position(|&r| r == 1.0).unwrap();
    assert!((sb.by_size[0].sensitivity_step[i1] - 2.0 / 3.0).abs() < 1e-12);
    assert!((sb.by_size[0].sensitivity_step[0] - 1.0 / 3.0).abs() < 1e-12);
    assert!(sb.by_size[1].sensitivity_step[0].is_nan());
    // Lowest threshold with ≤ 1 FP/case is 0.6, where recall is 2/3.
    assert_eq!(s.threshold_at_1fp, Some(0.6f32 as f64));
    assert!((s.recall_at_1fp - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn step_and_interpolated_sensitivity_differ_between_froc_points() {
    // One case: lesions hit at 0.9 and 0.6; two FPs at 0.6. FROC points:
    // (0, 1/2) at τ = 0.9 and (2, 1) at τ = 0.6.
    let t = boxes(&[([1, 1, 1], [4, 4, 4], 1), ([10, 10, 10], [13, 13, 13], 2)]);
    let p = probs(&[
        ([1, 1, 1], [4, 4, 4], 0.9),
        ([10, 10, 10], [13, 13, 13], 0.6),
        ([16, 1, 1], [18, 3, 3], 0.6),
        ([1, 16, 1], [3, 18, 3], 0.6),
    ]);
    let cases = vec![match_case("a", &t, &p, &HashMap::new(), &delineate())];
    let thr: Vec<f64> = [0.6f32, 0.9].iter().map(|&v| v as f64).collect();
    let s = summarize(&cases, &[0], &thr, &[], &[]);
    let at = |k: f64| FP_RATES.iter().position(|&r| r == k).unwrap();
    // At 1 FP/case: the step keeps 1/2; interpolation halfway to (2, 1) gives 3/4.
    assert_eq!(s.sensitivity_step[at(1.0)], 0.5);
    assert!((s.sensitivity_interpolated[at(1.0)] - 0.75).abs() < 1e-12);
    // At 0.5 FP/case: 1/2 + (1/2)(0.5/2) = 0.625.
    assert!((s.sensitivity_interpolated[at(0.5)] - 0.625).abs() < 1e-12);
    assert_eq!(s.sensitivity_step[at(2.0)], 1.0);
    assert_eq!(s.sensitivity_interpolated[at(4.0)], 1.0);
}

#[test]
fn bootstrap_is_deterministic_under_a_seed() {
    let mut cases = two_cases();
    cases.extend(two_cases());
    cases.extend(two_cases());
    let thr = delineate_eval::curves::sigmoid_grid();
    // The paper's procedure: 100 subsamples of 80 % without replacement.
    let opts = BootstrapOptions {
        seed: 42,
        ..BootstrapOptions::paper()
    };
    let a = bootstrap(&cases, &thr, &[], &[], &opts);
    let b = bootstrap(&cases, &thr, &[], &[], &opts);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let d = draws(10, &opts);
    assert_eq!(d.len(), 100);
    assert!(d
        .iter()
        .all(|s| s.len() == 8 && s.windows(2).all(|w| w[0] < w[1])));
    let other = draws(
        10,
        &BootstrapOptions {
            seed: 43,
            ..BootstrapOptions::paper()
        },
    );
    assert_ne!(d, other);
    // The default: the classic bootstrap, 1000 resamples with replacement.
    let wr = draws(10, &BootstrapOptions::default());
    assert_eq!(wr.len(), 1000);
    assert!(matches!(
        BootstrapOptions::default().resampling,
        Resampling::WithReplacement
    ));
    assert!(wr.iter().all(|s| s.len() == 10));
    assert!(wr.iter().any(|s| {
        let mut u = s.clone();
        u.sort();
        u.dedup();
        u.len() < 10
    }));
    assert!(a.average_precision.lo <= a.average_precision.hi);
}
