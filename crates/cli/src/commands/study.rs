//! `delineate study`: inter-rater agreement and contouring time of a
//! clinical study, as the paper's Tables 1–2 and Fig. 3.

use std::path::PathBuf;

use anyhow::{Context, Result};
use delineate_eval::{study::run_study, study_report::write_study};

/// Clinical study: agreement with and without CNN initialisation, and time.
///
/// For every case, rater and lesion: the rater's manual contour against
/// the averaged manual contour of the other raters (1 vs 3), the rater's
/// CNN-initialised contour against the same (1' vs 3), and against the
/// averaged CNN-initialised contours of the others (1' vs 3'). Median Dice
/// per rater and overall, exact sign tests (cases I and II), contouring
/// time tables (all cases, multi-lesion cases) and the quality-versus-time
/// plot. At least 3 raters.
///
/// The design is a TOML file:
///
///   raters = ["A", "B", "C", "D"]
///   cases = ["case01", "case02"]
///   manual = "{case}/{rater}_manual.nii.gz"   # or .dcm RTSTRUCT + reference
///   cnn = "{case}/{rater}_cnn.nii.gz"
///   reference = "{case}/dicom"                # only for RTSTRUCT contours
///   times = "times.csv"                       # case,rater,mode(manual|cnn),time(s or m:ss)
///
/// Writes study.md, study.html, study.json, study_lesions.csv and
/// quality_vs_time.png/.svg into --out. Definitions: docs/evaluation.md.
#[derive(clap::Args)]
pub struct StudyArgs {
    /// The study design (TOML); paths in it are relative to it.
    #[arg(long)]
    pub design: PathBuf,
    /// Report folder (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &StudyArgs) -> Result<()> {
    let r = run_study(&a.design).context("study failed")?;
    write_study(&a.out, &r)?;
    for row in &r.agreement {
        println!(
            "{:>6}: {} lesions; median Dice 1 vs 3 {:.3}, 1' vs 3 {:.3}, 1' vs 3' {:.3}; sign test p(I) {:.2e}, p(II) {:.2e}",
            row.rater, row.lesions, row.median_dice[0], row.median_dice[1], row.median_dice[2], row.case_i.p, row.case_ii.p
        );
    }
    if let Some(t) = r.time_all.last() {
        println!(
            "time: median manual {}, median reduction {}, speed-up {:.2}x",
            delineate_eval::stats::mmss(t.median_manual_s),
            delineate_eval::stats::mmss(t.median_reduction_s),
            t.speedup
        );
    }
    println!("report: {}", a.out.join("study.md").display());
    Ok(())
}
