//! `delineate export`: a model file in another format.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use delineate_model::backend::Cpu;

use delineate_model::pipeline::{load_model, SHIPPED_MODEL_NAME};

/// Export a model for other runtimes.
///
/// --onnx writes the U-Net as a standard ONNX graph (opset 17; input
/// `image` [N, 1, z, y, x], output `probability`, any sizes that are
/// multiples of the network's), with the model's train/inference contract
/// in the metadata (`delineate.contract`): what an input must go through
/// before the network and how lesions are formed after it. MODEL is a
/// `delineate train` model file, or `builtin` for the built-in model.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Model file (.dlm), or `builtin`.
    pub model: String,
    /// Write an ONNX file here.
    #[arg(long)]
    pub onnx: PathBuf,
}

pub fn run(a: &ExportArgs) -> Result<()> {
    if a.onnx.extension().and_then(|e| e.to_str()) != Some("onnx") {
        bail!(
            "--onnx {}: give a file name ending in .onnx",
            a.onnx.display()
        );
    }
    let path = (a.model != "builtin").then(|| PathBuf::from(&a.model));
    let model = load_model::<Cpu>(path.as_deref(), &Default::default(), false)?;
    let name = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| SHIPPED_MODEL_NAME.to_string());
    let bytes = delineate_model::onnx::export(&model.net, &model.info, &name)?;
    delineate_imaging::atomic::write_atomically(&a.onnx, ".onnx", |p, _| {
        std::fs::write(p, &bytes).map_err(|e| e.to_string())
    })
    .with_context(|| format!("{}: cannot write", a.onnx.display()))?;
    println!(
        "{}: ONNX opset {} ({} bytes) from {name}",
        a.onnx.display(),
        delineate_model::onnx::OPSET,
        bytes.len()
    );
    Ok(())
}
