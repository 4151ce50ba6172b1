//! `delineate model`: put stages into a model file.

use std::path::PathBuf;

use anyhow::{Context, Result};
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
}

pub fn run(cmd: &ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Attach {
            model,
            intracranial,
            out,
        } => {
            let m = std::fs::read(model)
                .with_context(|| format!("{}: cannot read", model.display()))?;
            let s = std::fs::read(intracranial)
                .with_context(|| format!("{}: cannot read", intracranial.display()))?;
            let bytes = modelfile::attach(&m, model, StageKind::Intracranial, &s, intracranial)?;
            delineate_imaging::atomic::write_atomically(out, ".dlm", |p, _| {
                std::fs::write(p, &bytes).map_err(|e| e.to_string())
            })?;
            println!(
                "wrote {} ({} bytes): {} with the intracranial stage {}",
                out.display(),
                bytes.len(),
                model.display(),
                intracranial.display()
            );
        }
    }
    Ok(())
}
