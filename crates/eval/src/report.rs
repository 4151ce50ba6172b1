//! Evaluation outputs: `report.json`, `lesions.csv`, `predictions.csv` and
//! `summary.md`, each written atomically.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::curves::FP_RATES;
use crate::{Error, EvalOptions, Experiment};

/// Writes `text` to `path` through a temporary file.
pub fn write_text(path: &Path, text: &str) -> Result<(), Error> {
    let suffix = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    delineate_imaging::atomic::write_atomically(path, &suffix, |p, _| {
        std::fs::write(p, text.as_bytes()).map_err(|e| e.to_string())
    })?;
    Ok(())
}

#[derive(Serialize)]
struct PerCase<'a> {
    case: &'a str,
    lesions: usize,
    hits: usize,
    recall: Option<f64>,
    false_positives: usize,
}

#[derive(Serialize)]
struct ExperimentJson<'a> {
    name: &'a str,
    predictions: &'a Path,
    cases: usize,
    skipped: &'a [crate::Skipped],
    kinds: &'a [String],
    buckets: &'a [crate::Bucket],
    fp_rates: &'a [f64],
    summary: &'a crate::Summary,
    intervals: &'a crate::Intervals,
    per_case: Vec<PerCase<'a>>,
    /// BraTS 2023 lesion-wise metrics (`--metrics brats2023`).
    #[serde(skip_serializing_if = "Option::is_none")]
    brats2023: Option<&'a crate::brats::BratsSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    brats2023_cases: Option<&'a [crate::brats::BratsCase]>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    generator: &'static str,
    version: &'static str,
    options: &'a EvalOptions,
    experiments: Vec<ExperimentJson<'a>>,
}

fn per_case(e: &Experiment) -> Vec<PerCase<'_>> {
    let lowest = e.thresholds.iter().cloned().fold(f64::INFINITY, f64::min);
    e.cases
        .iter()
        .map(|c| PerCase {
            case: &c.case,
            lesions: c.truth.len(),
            hits: c.hits(lowest),
            recall: (!c.truth.is_empty()).then(|| c.hits(lowest) as f64 / c.truth.len() as f64),
            false_positives: c.false_positives(lowest),
        })
        .collect()
}

fn f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

fn ci(v: f64, i: &crate::bootstrap::Interval) -> String {
    format!("{} [{}, {}]", f(v), f(i.lo), f(i.hi))
}

/// Writes every report file into `out` (created if needed).
pub fn write_reports(
    out: &Path,
    experiments: &[Experiment],
    opts: &EvalOptions,
) -> Result<(), Error> {
    std::fs::create_dir_all(out).map_err(delineate_imaging::IoFailure::on(
        "create the report folder",
        out,
    ))?;
    let json = ReportJson {
        generator: "delineate evaluate",
        version: env!("CARGO_PKG_VERSION"),
        options: opts,
        experiments: experiments
            .iter()
            .map(|e| ExperimentJson {
                name: &e.name,
                predictions: &e.predictions,
                cases: e.cases.len(),
                skipped: &e.skipped,
                kinds: &e.kinds,
                buckets: &e.buckets,
                fp_rates: &FP_RATES,
                summary: &e.summary,
                intervals: &e.intervals,
                brats2023: e.brats.as_ref().map(|b| &b.1),
                brats2023_cases: e.brats.as_ref().map(|b| b.0.as_slice()),
                per_case: per_case(e),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&json).map_err(|e| Error::Input(e.to_string()))?;
    text.push('\n');
    write_text(&out.join("report.json"), &text)?;

    let mut csv = String::from("experiment,case,lesion,label,kind,voxels,volume_mm3,diameter_mm,hit,hit_confidence,best_dice,best_iou\n");
    for e in experiments {
        for c in &e.cases {
            for t in &c.truth {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{},{:.3},{:.3},{},{},{:.4},{:.4}",
                    e.name,
                    c.case,
                    t.id,
                    t.label,
                    t.kind.as_deref().unwrap_or(""),
                    t.voxels,
                    t.volume_mm3,
                    t.diameter_mm,
                    u8::from(t.hit_confidence.is_some()),
                    t.hit_confidence
                        .map(|v| format!("{v:.6}"))
                        .unwrap_or_default(),
                    t.best_dice,
                    t.best_iou
                );
            }
        }
    }
    write_text(&out.join("lesions.csv"), &csv)?;
    let mut csv = String::from("experiment,case,component,voxels,diameter_mm,confidence,false_positive,matches,x_mm,y_mm,z_mm\n");
    for e in experiments {
        for c in &e.cases {
            for p in &c.preds {
                let m: Vec<String> = p.matches.iter().map(|m| m.to_string()).collect();
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{:.3},{:.6},{},{},{:.2},{:.2},{:.2}",
                    e.name,
                    c.case,
                    p.id,
                    p.voxels,
                    p.diameter_mm,
                    p.confidence,
                    u8::from(p.matches.is_empty()),
                    m.join(";"),
                    p.centre_mm[0],
                    p.centre_mm[1],
                    p.centre_mm[2]
                );
            }
        }
    }
    write_text(&out.join("predictions.csv"), &csv)?;
    if experiments.iter().any(|e| e.brats.is_some()) {
        let mut csv = String::from(
            "experiment,case,lesionwise_dice,lesionwise_hd95,tp,fn,fp,legacy_dice,rq,sq,pq\n",
        );
        for e in experiments {
            for c in e.brats.iter().flat_map(|b| &b.0) {
                let _ = writeln!(
                    csv,
                    "{},{},{:.6},{:.4},{},{},{},{:.6},{:.6},{:.6},{:.6}",
                    e.name,
                    c.case,
                    c.lesionwise_dice,
                    c.lesionwise_hd95,
                    c.tp,
                    c.fn_,
                    c.false_positives,
                    c.legacy_dice,
                    c.panoptic.rq,
                    c.panoptic.sq,
                    c.panoptic.pq
                );
            }
        }
        write_text(&out.join("brats2023.csv"), &csv)?;
    }
    write_text(&out.join("summary.md"), &markdown(experiments, opts))?;
    Ok(())
}

/// The BraTS 2023 table, when computed.
fn brats_markdown(s: &mut String, experiments: &[Experiment]) {
    let rows: Vec<_> = experiments
        .iter()
        .filter_map(|e| e.brats.as_ref().map(|b| (e, &b.1)))
        .collect();
    let Some((_, first)) = rows.first() else {
        return;
    };
    let ch = match first.challenge {
        crate::brats::Challenge::Mets => "BraTS-METS (dilation 1, lesions > 2 mm³)",
        crate::brats::Challenge::Men => "BraTS-MEN (dilation 1, lesions > 50 mm³)",
    };
    let _ = writeln!(
        s,
        "BraTS 2023 lesion-wise metrics, {ch}; HD95 as panoptica computes it (docs/evaluation.md); means over cases.\n\n\
         | experiment | cases | lesion-wise Dice | lesion-wise HD95 (mm) | TP | FN | FP | legacy Dice | RQ | SQ | PQ |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (e, b) in &rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.1} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            e.name,
            b.cases,
            b.lesionwise_dice,
            b.lesionwise_hd95,
            b.tp,
            b.fn_,
            b.false_positives,
            b.legacy_dice,
            b.rq,
            b.sq,
            b.pq
        );
    }
    s.push('\n');
}

fn markdown(experiments: &[Experiment], opts: &EvalOptions) -> String {
    let mut s = String::from("# Lesion-wise evaluation\n\n");
    brats_markdown(&mut s, experiments);
    let b = &opts.bootstrap;
    let rules = match opts.matching.rules {
        crate::matching::Rules::Paper => "the authors' rules (iw/metric.py: best-Dice component's confidence; precision = hits / (hits + FP))",
        crate::matching::Rules::Delineate => "delineate's rules (most confident matching component; precision over components)",
    };
    let scored = match opts.score {
        crate::Score::Delivered => "segment outputs scored by their delivered lesions",
        crate::Score::Probability => "segment outputs scored by their probability maps",
    };
    let _ = writeln!(
        s,
        "Rules: {rules}; {scored}. Lesions: {}-connected components; predicted components at probability > {}; a lesion is hit when a component's {:?} is > {}. \
         Intervals: {} (seed {}).\n",
        opts.matching.connectivity,
        opts.matching.component_threshold,
        opts.matching.criterion,
        opts.matching.hit_threshold,
        if b.iterations == 0 { "none".to_string() } else { b.describe() },
        b.seed
    );
    s.push_str("| experiment | cases | lesions | AP | recall | FP/case | recall at ≤ 1 FP/case | median Dice (hit) |\n|---|---|---|---|---|---|---|---|\n");
    for e in experiments {
        let (m, i) = (&e.summary, &e.intervals);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            e.name,
            m.cases,
            m.lesions,
            ci(m.average_precision, &i.average_precision),
            ci(m.recall, &i.recall),
            ci(m.fp_per_case, &i.fp_per_case),
            ci(m.recall_at_1fp, &i.recall_at_1fp),
            ci(m.dice_median, &i.dice_median)
        );
    }
    s.push_str("\n## Sensitivity at fixed false positives per case (FROC)\n\n");
    s.push_str("Step: the best operating point with at most that many FP/case. Interpolated: linear between the FROC points around it.\n\n| experiment | kind |");
    for r in FP_RATES {
        let _ = write!(s, " {r} |");
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(FP_RATES.len()));
    s.push('\n');
    for e in experiments {
        for (kind, v, iv) in [
            (
                "step",
                &e.summary.sensitivity_step,
                &e.intervals.sensitivity_step,
            ),
            (
                "interpolated",
                &e.summary.sensitivity_interpolated,
                &e.intervals.sensitivity_interpolated,
            ),
        ] {
            let _ = write!(s, "| {} | {kind} |", e.name);
            for (x, i) in v.iter().zip(iv.iter()) {
                let _ = write!(s, " {} |", ci(*x, i));
            }
            s.push('\n');
        }
    }
    s.push_str("\n## By lesion size (equivalent diameter)\n\n");
    group_table(&mut s, "size", experiments, |e| {
        (&e.summary.by_size, &e.intervals.size_recall)
    });
    s.push_str("\nSensitivity by size (and kind) at the overall FROC operating points (step):\n\n| experiment | size |");
    for r in FP_RATES {
        let _ = write!(s, " {r} FP |");
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(FP_RATES.len()));
    s.push('\n');
    for e in experiments {
        for g in e.summary.by_size.iter().chain(&e.summary.by_kind) {
            let _ = write!(s, "| {} | {} |", e.name, g.name);
            for v in &g.sensitivity_step {
                let _ = write!(s, " {} |", f(*v));
            }
            s.push('\n');
        }
    }
    if experiments.iter().any(|e| !e.kinds.is_empty()) {
        s.push_str("\n## By lesion kind\n\n");
        group_table(&mut s, "kind", experiments, |e| {
            (&e.summary.by_kind, &e.intervals.kind_recall)
        });
    }
    s.push_str(
        "\n## Per case\n\n| experiment | case | lesions | hit | FP |\n|---|---|---|---|---|\n",
    );
    for e in experiments {
        for c in per_case(e) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                e.name, c.case, c.lesions, c.hits, c.false_positives
            );
        }
        for k in &e.skipped {
            let _ = writeln!(s, "| {} | {} | skipped: {} | | |", e.name, k.case, k.reason);
        }
    }
    s.push_str("\nFigures: `prc.png`/`.svg`, `froc.png`/`.svg`, `recall_by_size.png`/`.svg`. Per lesion: `lesions.csv`; per component: `predictions.csv`.\n");
    s
}

type Groups<'a> = (
    &'a Vec<crate::curves::GroupStats>,
    &'a Vec<crate::bootstrap::Interval>,
);

/// A table of lesion groups (sizes or kinds) for every experiment.
fn group_table(
    s: &mut String,
    what: &str,
    experiments: &[Experiment],
    groups: impl Fn(&Experiment) -> Groups<'_>,
) {
    let _ = writeln!(s, "| experiment | {what} | lesions | recall | recall at ≤ 1 FP/case | median Dice |\n|---|---|---|---|---|---|");
    for e in experiments {
        let (stats, intervals) = groups(e);
        for (g, i) in stats.iter().zip(intervals) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                e.name,
                g.name,
                g.lesions,
                ci(g.recall, i),
                f(g.recall_at_1fp),
                f(g.dice_median)
            );
        }
    }
}
