//! `delineate model`: put stages into a model file (the intracranial
//! network, the lesion classifier).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use delineate_model::candidates::CandidateSet;
use delineate_model::classifier::{ClassifierConfig, LesionClassifier};
use delineate_model::modelfile::{self, StageKind};

/// Model files: add a stage to a lesion model.
#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Store an intracranial-mask network (from `delineate train --target
    /// intracranial`) in a lesion model file as its intracranial stage
    /// (model format 3; one already there is replaced). `segment`, the
    /// demo, the service and the review page then drop candidates that lie
    /// mostly outside the cranial cavity (docs/model-card.md).
    Attach {
        /// The lesion model file.
        model: PathBuf,
        /// The intracranial-mask model file.
        #[arg(long)]
        intracranial: PathBuf,
        /// The new model file (written whole, or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit the second-stage lesion classifier (gradient-boosted trees on
    /// the candidates' measurements) and store it in the model file as its
    /// lesion-classifier stage (one already there is replaced). Its
    /// operating threshold is the lowest score that keeps the validation
    /// cases within --target-fp false positives per case. Both candidate
    /// sets come from `delineate candidates` with this model.
    Classifier {
        /// The lesion model file.
        model: PathBuf,
        /// Candidates of the training cases (candidates.json); several
        /// sets (repeat the option) are fitted on together.
        #[arg(long, required = true)]
        fit: Vec<PathBuf>,
        /// Candidates of the validation cases (candidates.json); repeat
        /// the option for several sets.
        #[arg(long, required = true)]
        validation: Vec<PathBuf>,
        /// The new model file (written whole, or not at all).
        #[arg(long)]
        out: PathBuf,
        /// Boosting rounds.
        #[arg(long, default_value_t = 300)]
        trees: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// False positives per validation case at the operating threshold.
        #[arg(long, default_value_t = 1.0)]
        target_fp: f64,
        /// Let the classifier's score alone rank the network's lesions too,
        /// so that it may drop one the network would deliver (default: a
        /// network lesion keeps the network's own operating point).
        #[arg(long)]
        veto: bool,
    },
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Writes a model file whole, or not at all.
fn write(out: &Path, bytes: &[u8]) -> Result<()> {
    delineate_imaging::atomic::write_atomically(out, ".dlm", |p, _| {
        std::fs::write(p, bytes).map_err(|e| e.to_string())
    })?;
    Ok(())
}

pub fn run(cmd: &ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Attach {
            model,
            intracranial,
            out,
        } => {
            let (m, s) = (read(model)?, read(intracranial)?);
            let bytes = modelfile::attach(&m, model, StageKind::Intracranial, &s, intracranial)?;
            write(out, &bytes)?;
            println!(
                "wrote {} ({} bytes): {} with the intracranial stage {}",
                out.display(),
                bytes.len(),
                model.display(),
                intracranial.display()
            );
        }
        ModelCommand::Classifier {
            model,
            fit,
            validation,
            out,
            trees,
            seed,
            target_fp,
            veto,
        } => {
            let m = read(model)?;
            let config = ClassifierConfig {
                trees: *trees,
                seed: *seed,
                target_fp_per_case: *target_fp,
                veto: *veto,
                ..Default::default()
            };
            let c = LesionClassifier::fit(
                &CandidateSet::read_all(fit)?,
                &fit[0],
                &CandidateSet::read_all(validation)?,
                &validation[0],
                &config,
            )?;
            let bytes = modelfile::attach_classifier(&m, model, &c)?;
            write(out, &bytes)?;
            let s = &c.summary;
            println!(
                "fitted on {} candidates ({} lesions) of {} cases; on {} validation cases: recall {:.2} at {:.2} false positives per case, operating threshold {:.3}",
                s.fit_candidates,
                s.fit_lesions,
                s.fit_cases,
                s.validation_cases,
                s.validation_recall,
                s.validation_fp_per_case,
                c.operating_threshold
            );
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
    }
    Ok(())
}
