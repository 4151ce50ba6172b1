//! A segmentation result's manifest, `lesions.json`: one serde type that
//! `delineate segment` writes and the service, the review page and
//! evaluation read. It sits here, beside [`crate::provenance`], because
//! every crate that handles results (model, eval, service) depends on this
//! one and none of them on the others.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// File name of the manifest in a result folder.
pub const MANIFEST_FILE: &str = "lesions.json";

/// What every result is until a person has reviewed it.
pub const AI_DRAFT: &str = "AI draft, unreviewed";

/// One delivered lesion (label `id` in `mask.nii.gz`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lesion {
    /// Label in the mask; 1 = highest confidence.
    pub id: u32,
    /// Size on the input grid.
    pub voxels: usize,
    pub volume_mm3: f64,
    pub equivalent_diameter_mm: f64,
    /// Centroid in patient coordinates (LPS, mm).
    pub centroid_lps_mm: [f64; 3],
    /// What lesions are ranked and delivered by: the lesion classifier's
    /// score when the model has that stage, otherwise `max_probability`.
    /// Results written before 2026-12-06 have none: reading one takes
    /// `max_probability`, which is what they were ranked by.
    #[serde(default = "no_confidence")]
    pub confidence: f32,
    /// The network's maximum probability over the lesion on the model grid.
    pub max_probability: f32,
    /// Mean probability over the lesion on the model grid.
    pub mean_probability: f32,
}

fn no_confidence() -> f32 {
    f32::NAN
}

/// What the intracranial-mask stage did to a case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntracranialReport {
    /// Whether candidates were filtered by the mask.
    pub applied: bool,
    pub volume_ml: f64,
    /// Candidates (any confidence) dropped as lying outside the cavity.
    pub removed_candidates: usize,
    /// Of those, the ones that would have been delivered.
    pub removed_delivered: usize,
    /// Why the mask was not applied, when it was not.
    pub warning: Option<String>,
}

/// Seconds one stage of `segment` took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
}

/// The input grid of the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub size: [usize; 3],
    pub spacing_mm: [f64; 3],
}

/// `lesions.json`: what a result holds and how it was made. Only the
/// lesion list is required: results written by earlier versions lack
/// fields added since, which read as empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultManifest {
    /// Identifies this result; review decisions name it.
    #[serde(default)]
    pub result_id: String,
    /// [`AI_DRAFT`]: a result is never final until reviewed.
    #[serde(default)]
    pub provenance: String,
    /// The case's name.
    #[serde(default)]
    pub input: String,
    /// The input as given (absolute): where the review page finds the image.
    #[serde(default)]
    pub input_path: PathBuf,
    #[serde(default)]
    pub model: String,
    /// The first 12 hex digits of the model file's SHA-256.
    #[serde(default)]
    pub model_sha256: String,
    #[serde(default)]
    pub research_use_only: bool,
    #[serde(default)]
    pub engine: String,
    /// The network as the model file describes it (recorded, not read).
    #[serde(default)]
    pub model_network: serde_json::Value,
    /// The operating threshold lesions were delivered at.
    #[serde(default)]
    pub threshold: f32,
    /// The model's train/inference contract (recorded, not read).
    #[serde(default)]
    pub contract: serde_json::Value,
    #[serde(default)]
    pub tta: bool,
    /// Inference windows run.
    #[serde(default)]
    pub windows: usize,
    #[serde(default)]
    pub grid: Grid,
    #[serde(default)]
    pub uid_root: String,
    #[serde(default)]
    pub revision: u32,
    /// The delivered lesions, most confident first.
    pub lesions: Vec<Lesion>,
    #[serde(rename = "timings_s", default)]
    pub timings: Vec<StageTiming>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// `None`: the model has no intracranial stage, or it was turned off.
    #[serde(default)]
    pub intracranial: Option<IntracranialReport>,
}

impl ResultManifest {
    /// Reads `DIR/lesions.json` (or the file itself), naming it on error.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let path = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            action: "cannot read the result's lesion list".into(),
            source,
        })?;
        let mut m: Self = serde_json::from_slice(&bytes).map_err(|e| {
            Error::file(
                &path,
                format!("not a delineate segment result (lesions.json): {e}"),
            )
        })?;
        for l in &mut m.lesions {
            if l.confidence.is_nan() {
                l.confidence = l.max_probability;
            }
            if !(0.0..=1.0).contains(&l.confidence) || l.id == 0 {
                return Err(Error::file(
                    &path,
                    format!("lesion {} has confidence {}", l.id, l.confidence),
                ));
            }
        }
        Ok(m)
    }

    /// The manifest as written (pretty JSON with a final newline).
    pub fn to_json(&self) -> String {
        // Only plain data and finite numbers: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ResultManifest {
        ResultManifest {
            result_id: "2.25.1".into(),
            provenance: AI_DRAFT.into(),
            input: "case".into(),
            input_path: "/data/case".into(),
            model: "unet".into(),
            model_sha256: "abcdef012345".into(),
            research_use_only: true,
            engine: "fast".into(),
            model_network: serde_json::json!({"arch": "unet3d"}),
            threshold: 0.5,
            contract: serde_json::json!({}),
            tta: false,
            windows: 8,
            grid: Grid {
                size: [4, 5, 6],
                spacing_mm: [1.0, 1.0, 2.0],
            },
            uid_root: "2.25".into(),
            revision: 1,
            lesions: vec![Lesion {
                id: 1,
                voxels: 10,
                volume_mm3: 20.0,
                equivalent_diameter_mm: 3.4,
                centroid_lps_mm: [1.0, 2.0, 3.0],
                confidence: 0.9,
                max_probability: 0.8,
                mean_probability: 0.6,
            }],
            timings: vec![StageTiming {
                stage: "network".into(),
                seconds: 1.5,
            }],
            warnings: vec!["thick slices".into()],
            intracranial: Some(IntracranialReport {
                applied: true,
                volume_ml: 1500.0,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn round_trips_and_reads_older_results() {
        let tmp = tempfile::tempdir().unwrap();
        let m = manifest();
        std::fs::write(tmp.path().join(MANIFEST_FILE), m.to_json()).unwrap();
        assert_eq!(ResultManifest::read(tmp.path()).unwrap(), m);
        // The field names the service and scripts rely on.
        let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(v["timings_s"][0]["stage"], "network");
        assert_eq!(v["intracranial"]["applied"], true);
        // A result from before the confidence field ranks by max probability.
        let mut old = v.clone();
        old["lesions"][0]
            .as_object_mut()
            .unwrap()
            .remove("confidence");
        std::fs::write(tmp.path().join(MANIFEST_FILE), old.to_string()).unwrap();
        let r = ResultManifest::read(tmp.path()).unwrap();
        assert_eq!(r.lesions[0].confidence, 0.8);
        // Only the lesion list is required.
        let minimal = serde_json::json!({"lesions": v["lesions"]});
        std::fs::write(tmp.path().join(MANIFEST_FILE), minimal.to_string()).unwrap();
        let r = ResultManifest::read(tmp.path()).unwrap();
        assert_eq!((r.lesions.len(), r.result_id.as_str()), (1, ""));
    }

    #[test]
    fn a_damaged_manifest_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(MANIFEST_FILE);
        let e = ResultManifest::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("lesions.json") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(&p, "{\"lesions\": 3}").unwrap();
        let e = ResultManifest::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("lesions.json") && e.contains("not a delineate"),
            "{e}"
        );
        let mut v: serde_json::Value = serde_json::from_str(&manifest().to_json()).unwrap();
        v["lesions"][0]["confidence"] = 1.5.into();
        std::fs::write(&p, v.to_string()).unwrap();
        let e = ResultManifest::read(&p).unwrap_err().to_string();
        assert!(e.contains("confidence 1.5"), "{e}");
    }
}
