//! `delineate curves`: learning curves of training runs on one figure.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Plot the learning curves of one or more training runs: the training
/// loss (moving median, log scale) and the validation AP against the
/// iteration, one colour per run. Writes OUT/learning_curves.png and .svg.
/// `delineate train` also writes them into its run folder at each
/// validation.
#[derive(clap::Args)]
pub struct CurvesArgs {
    /// Run folders of `delineate train` (with metrics.jsonl); NAME=DIR
    /// names a run in the legend.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &CurvesArgs) -> Result<()> {
    let mut curves = Vec::new();
    for r in &a.runs {
        let (name, dir) = match r.split_once('=') {
            Some((n, d)) => (n.to_string(), PathBuf::from(d)),
            None => {
                let d = PathBuf::from(r);
                let n = d
                    .file_name()
                    .map_or_else(|| r.clone(), |f| f.to_string_lossy().to_string());
                (n, d)
            }
        };
        curves.push(delineate_model::trainer::read_curve(&dir, &name)?);
    }
    if curves.is_empty() {
        bail!("give at least one run folder");
    }
    std::fs::create_dir_all(&a.out)?;
    delineate_eval::curves_plot::write_learning_curves(&a.out, &curves)?;
    for c in &curves {
        let last = c.loss.last().map_or(0.0, |p| p.0);
        let best = c.validation.iter().map(|p| p.1).fold(f64::NAN, f64::max);
        println!(
            "{}: {} iterations, {} validations, best validation AP {:.3}",
            c.name,
            last,
            c.validation.len(),
            best
        );
    }
    println!("wrote {}", a.out.join("learning_curves.png").display());
    Ok(())
}
