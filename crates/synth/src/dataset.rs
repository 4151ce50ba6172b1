//! A dataset: many cases over one or more templates, written in parallel,
//! with the manifest that reproduces it.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::output::{
    write_case, write_case_nnunet, write_json, Manifest, BRAIN, IMAGE, INTRACRANIAL, LESIONS,
    LOOKALIKES, TRUTH,
};
use crate::preview::write_preview;
use crate::{case_seed, generate_case, Error, SynthParams, Template};

/// How cases are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A folder per case (image, truth, masks, lesions.json), with the
    /// image also as a DICOM series when `dicom`.
    Delineate { dicom: bool },
    /// An nnU-Net raw dataset's imagesTr/ and labelsTr/ (the caller writes
    /// dataset.json).
    Nnunet,
}

/// What to write.
pub struct DatasetSpec<'a> {
    pub out: &'a Path,
    pub cases: usize,
    pub seed: u64,
    /// Case i is drawn on template `case_seed(seed, i) % templates.len()`.
    pub templates: &'a [Template],
    pub params: &'a SynthParams,
    pub layout: Layout,
    /// Also a PNG per case in OUT/preview/.
    pub preview: bool,
}

/// What was written.
pub struct DatasetSummary {
    pub names: Vec<String>,
    pub lesions: usize,
    pub manifest: PathBuf,
}

/// Writes the cases (in parallel; `on_case` after each) and OUT/manifest.json.
/// The first failed case is the error; no manifest is written then.
pub fn write_dataset(
    spec: &DatasetSpec<'_>,
    on_case: &(dyn Fn() + Sync),
) -> Result<DatasetSummary, Error> {
    if spec.templates.is_empty() || spec.cases == 0 {
        return Err(Error::Input(
            "a dataset needs at least one template and one case".into(),
        ));
    }
    if spec.preview {
        let dir = spec.out.join("preview");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let names: Vec<String> = (0..spec.cases).map(|i| format!("case_{i:03}")).collect();
    let results: Vec<Result<usize, Error>> = names
        .par_iter()
        .enumerate()
        .map(|(i, name)| {
            let seed = case_seed(spec.seed, i);
            let template = &spec.templates[(seed % spec.templates.len() as u64) as usize];
            let case = generate_case(template, spec.params, name, seed);
            match spec.layout {
                Layout::Nnunet => write_case_nnunet(spec.out, &case)?,
                Layout::Delineate { dicom } => {
                    write_case(spec.out, &case, dicom)?;
                }
            }
            if spec.preview {
                write_preview(&spec.out.join("preview").join(format!("{name}.png")), &case)?;
            }
            for w in &case.record.warnings {
                tracing::warn!("{name}: {w}");
            }
            on_case();
            Ok(case.record.lesions.len())
        })
        .collect();
    let mut lesions = 0;
    for r in results {
        lesions += r?;
    }
    let manifest = Manifest {
        generator: "delineate synth",
        version: crate::VERSION,
        seed: spec.seed,
        template: spec
            .templates
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        procedural_template: spec.templates.iter().any(|t| t.procedural),
        cases: names.clone(),
        params: spec.params.clone(),
        files: vec![IMAGE, TRUTH, BRAIN, LOOKALIKES, INTRACRANIAL, LESIONS],
    };
    let path = spec.out.join("manifest.json");
    write_json(&path, &manifest)?;
    Ok(DatasetSummary {
        names,
        lesions,
        manifest: path,
    })
}
