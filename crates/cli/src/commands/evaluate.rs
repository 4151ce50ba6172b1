//! `delineate evaluate`: lesion-wise detection metrics with bootstrap
//! intervals, for one or several experiments.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use delineate_eval::{
    evaluate, matching::Rules, plots::write_figures, report::write_reports, BootstrapKind,
    BootstrapOptions, Criterion, EvalOptions, MatchOptions, Score, Thresholds,
};

/// Lesion-wise evaluation: precision–recall, FROC, recall by lesion size.
///
/// --rules paper (default) are the authors' (iw/metric.py): truth lesions
/// are components of the binary truth, predicted lesions components of
/// probability > --component-threshold (or of a label mask) with their
/// maximum probability as confidence; a lesion is hit at a threshold when
/// its best-Dice component has at least that confidence; a component
/// touching no lesion is a false positive above it; precision = hits /
/// (hits + false positives). --rules delineate keeps instance labels apart
/// and takes the most confident matching component. Cases are matched by
/// name: CASE.nii.gz, or CASE/ holding probability.nii.gz or a `delineate
/// segment` output (predictions; scored by its delivered lesions unless
/// --score probability) or truth.nii.gz / rtstruct.dcm + dicom/ (truth).
///
/// Writes report.json, summary.md, lesions.csv, predictions.csv and the
/// figures prc, froc and recall_by_size (PNG and SVG) into --out. Intervals:
/// the percentile bootstrap (1 000 resamples with replacement) by default,
/// or --bootstrap paper (100 × 80 % without replacement, labelled as such).
/// Definitions: docs/evaluation.md.
#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Predictions: DIR, or NAME=DIR; repeat for several experiments on one figure.
    #[arg(long, required = true)]
    pub pred: Vec<String>,
    /// Truth folder.
    #[arg(long)]
    pub truth: PathBuf,
    /// Report folder (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Rule set: paper (the authors' code) or delineate.
    #[arg(long, value_enum, default_value_t = Rules::Paper)]
    pub rules: Rules,
    /// What a `delineate segment` output folder is scored by: delivered
    /// (mask.nii.gz with the lesions' confidences) or probability.
    #[arg(long, value_enum, default_value_t = Score::Delivered)]
    pub score: Score,
    /// Also the BraTS 2023 lesion-wise Dice and HD95 and panoptica's
    /// RQ/SQ/PQ: brats2023-mets or brats2023-men (the challenge's dilation
    /// and volume threshold).
    #[arg(long, value_enum)]
    pub metrics: Option<delineate_eval::brats::Challenge>,
    /// Truth layout: delineate, nnunet (labelsTr/) or brats
    /// (CASE/CASE-seg.nii.gz); default: detected.
    #[arg(long, value_enum)]
    pub layout: Option<delineate_eval::layout::Layout>,
    /// Truth label values that are lesion (default: any non-zero; BraTS:
    /// 1,3, the tumour core; 3 for enhancing tumour only).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<u32>>,
    #[command(flatten)]
    pub rois: crate::input::RoiArgs,
    /// Lesion connectivity: 26 or 6.
    #[arg(long, default_value_t = 26, value_parser = parse_connectivity)]
    pub connectivity: u8,
    /// Overlap criterion for a hit: dice or iou.
    #[arg(long, value_enum, default_value_t = Criterion::Dice)]
    pub criterion: Criterion,
    /// A hit needs the criterion strictly above this (0: any overlap).
    #[arg(long, default_value_t = 0.0)]
    pub hit_threshold: f64,
    /// Probability above which voxels form predicted components.
    #[arg(long, default_value_t = 0.5)]
    pub component_threshold: f64,
    /// Confidence thresholds: sigmoid (the authors' 51-point grid) or unique (every confidence).
    #[arg(long, value_enum, default_value_t = Thresholds::Sigmoid)]
    pub thresholds: Thresholds,
    /// Size-bucket edges by equivalent diameter (mm).
    #[arg(long, default_value = "5,10,20", value_delimiter = ',')]
    pub sizes: Vec<f64>,
    /// Intervals: classic (percentile bootstrap with replacement), paper
    /// (the authors' 80 % subsampling without replacement) or none.
    #[arg(long, value_enum, default_value_t = BootstrapKind::Classic)]
    pub bootstrap: BootstrapKind,
    /// Resamples (default 1000 for classic, 100 for paper).
    #[arg(long)]
    pub bootstrap_iterations: Option<usize>,
    /// Fraction of patients per draw of --bootstrap paper.
    #[arg(long, default_value_t = 0.8)]
    pub bootstrap_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip cases missing on either side (reported) instead of failing.
    #[arg(long)]
    pub allow_missing: bool,
}

fn parse_connectivity(s: &str) -> Result<u8, String> {
    match s {
        "6" => Ok(6),
        "26" => Ok(26),
        _ => Err("give 6 or 26".into()),
    }
}

pub fn run(a: &EvaluateArgs) -> Result<()> {
    let mut experiments = Vec::new();
    for (n, p) in a.pred.iter().enumerate() {
        let (name, dir) = match p.split_once('=') {
            Some((name, dir)) if !name.is_empty() => (name.to_string(), PathBuf::from(dir)),
            _ => (
                if a.pred.len() == 1 {
                    "model".to_string()
                } else {
                    format!("experiment{}", n + 1)
                },
                PathBuf::from(p),
            ),
        };
        if !dir.is_dir() {
            bail!("{}: --pred is not a folder", dir.display());
        }
        if experiments
            .iter()
            .any(|(e, _): &(String, PathBuf)| e == &name)
        {
            bail!("--pred: the experiment name {name:?} is used twice");
        }
        experiments.push((name, dir));
    }
    if !a.truth.is_dir() {
        bail!("{}: --truth is not a folder", a.truth.display());
    }
    let mut edges = a.sizes.clone();
    if edges.iter().any(|e| !e.is_finite() || *e <= 0.0) || edges.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--sizes: give increasing positive diameters in mm, e.g. 5,10,20");
    }
    edges.dedup();
    if !(a.bootstrap_fraction > 0.0 && a.bootstrap_fraction <= 1.0) {
        bail!("--bootstrap-fraction must lie in (0, 1]");
    }
    if !(a.hit_threshold >= 0.0 && a.hit_threshold < 1.0) {
        bail!("--hit-threshold must lie in [0, 1)");
    }
    let opts = EvalOptions {
        matching: MatchOptions {
            connectivity: a.connectivity,
            criterion: a.criterion,
            hit_threshold: a.hit_threshold,
            component_threshold: a.component_threshold,
            rules: a.rules,
        },
        score: a.score,
        thresholds: a.thresholds,
        size_edges: edges,
        bootstrap: BootstrapOptions::of(
            a.bootstrap,
            a.bootstrap_iterations,
            a.bootstrap_fraction,
            a.seed,
        ),
        allow_missing: a.allow_missing,
        layout: a.layout,
        labels: a.labels.clone(),
        rois: a.rois.selection()?,
        brats: a.metrics,
    };
    let pb = crate::progress::bar("evaluate", "cases");
    let t = std::time::Instant::now();
    let results =
        evaluate(&experiments, &a.truth, &opts, &|| pb.inc(1)).context("evaluation failed")?;
    pb.finish_and_clear();
    tracing::info!(
        "cases matched and summarised in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    write_reports(&a.out, &results, &opts)?;
    tracing::info!("reports written at {:.3} s", t.elapsed().as_secs_f64());
    write_figures(&a.out, &results)?;
    tracing::info!("figures drawn at {:.3} s", t.elapsed().as_secs_f64());
    for e in &results {
        let s = &e.summary;
        println!(
            "{}: {} cases, {} lesions; AP {:.3} [{:.3}, {:.3}]; recall {:.3}, {:.2} FP/case; recall at <= 1 FP/case {:.3}; median Dice {:.3}{}",
            e.name,
            s.cases,
            s.lesions,
            s.average_precision,
            e.intervals.average_precision.lo,
            e.intervals.average_precision.hi,
            s.recall,
            s.fp_per_case,
            s.recall_at_1fp,
            s.dice_median,
            if e.skipped.is_empty() { String::new() } else { format!("; {} skipped", e.skipped.len()) }
        );
        if let Some((_, b)) = &e.brats {
            println!(
                "{}: BraTS 2023 lesion-wise Dice {:.3}, HD95 {:.1} mm ({} TP, {} FN, {} FP); PQ {:.3}",
                e.name, b.lesionwise_dice, b.lesionwise_hd95, b.tp, b.fn_, b.false_positives, b.pq
            );
        }
    }
    tracing::info!("evaluated in {:.2} s", t.elapsed().as_secs_f64());
    println!("report: {}", a.out.join("summary.md").display());
    Ok(())
}
