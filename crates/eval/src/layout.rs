//! Dataset layouts that training and evaluation read:
//!
//! - **delineate**: `DIR/CASE/image.nii.gz` + `truth.nii.gz` (or `dicom/` +
//!   `rtstruct.dcm`), as `delineate synth` writes;
//! - **nnU-Net raw** (`dataset.json`, `imagesTr/CASE_0000.nii.gz`,
//!   `labelsTr/CASE.nii.gz`; the file ending from `dataset.json`): the
//!   channel of `--channel` (default 0) is the image;
//! - **BraTS** (`DIR/CASE/CASE-t1c.nii.gz` + `CASE-seg.nii.gz`, the 2023
//!   naming; `CASE_t1ce.nii.gz` + `CASE_seg.nii.gz` of 2021 too).
//!
//! [`LesionLabels`] says which label values are lesion: any non-zero by
//! default; for BraTS the tumour core (1 necrosis + 3 enhancing, the
//! radiosurgical GTV) unless `--labels` says otherwise (`3`: enhancing
//! tumour only). Selected labels become one lesion class (instances are
//! then the connected components).

use std::path::{Path, PathBuf};

use delineate_imaging::Volume;
use serde::{Deserialize, Serialize};

use crate::Error;

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Delineate,
    Nnunet,
    Brats,
}

/// Which label values mean lesion (`None`: any non-zero, instance labels
/// kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LesionLabels(pub Option<Vec<u32>>);

/// BraTS 2023 tumour core: necrosis (1) and enhancing tumour (3).
pub const BRATS_TUMOUR_CORE: [u32; 2] = [1, 3];

impl LesionLabels {
    /// The layout's default selection.
    pub fn default_for(layout: Layout) -> Self {
        match layout {
            Layout::Brats => Self(Some(BRATS_TUMOUR_CORE.to_vec())),
            _ => Self(None),
        }
    }

    /// The lesion map of a label map: selected values become 1.
    pub fn apply(&self, labels: Volume<u32>) -> Volume<u32> {
        match &self.0 {
            None => labels,
            Some(sel) => labels.map(|v| u32::from(sel.contains(v))),
        }
    }
}

/// One case of a dataset: its image and truth files.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutCase {
    pub name: String,
    /// The image (NIfTI), or a delineate case folder.
    pub image: PathBuf,
    pub truth: Option<PathBuf>,
}

/// The layout of `dir`: nnU-Net when it has `dataset.json` and `imagesTr/`,
/// BraTS when a sub-folder holds `NAME-seg.nii.gz` (or `NAME_seg.nii.gz`),
/// delineate's otherwise.
pub fn detect(dir: &Path) -> Layout {
    if dir.join("dataset.json").is_file() && dir.join("imagesTr").is_dir() {
        return Layout::Nnunet;
    }
    let brats = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            brats_files(&e.path(), &n).is_some()
        });
    if brats {
        Layout::Brats
    } else {
        Layout::Delineate
    }
}

/// A BraTS case folder's (image, segmentation), 2023 or 2021 naming.
fn brats_files(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    for (img, seg) in [
        (format!("{name}-t1c.nii.gz"), format!("{name}-seg.nii.gz")),
        (format!("{name}_t1ce.nii.gz"), format!("{name}_seg.nii.gz")),
    ] {
        let (i, s) = (dir.join(&img), dir.join(&seg));
        if i.is_file() {
            return Some((i, s));
        }
    }
    None
}

#[derive(Deserialize)]
struct DatasetJson {
    #[serde(default = "nii_gz")]
    file_ending: String,
}

fn nii_gz() -> String {
    ".nii.gz".into()
}

/// The cases of an nnU-Net raw or BraTS dataset (training split), sorted
/// by name. (The delineate layout is listed by the readers themselves.)
pub fn list(dir: &Path, layout: Layout, channel: usize) -> Result<Vec<LayoutCase>, Error> {
    let bad = |m: String| Error::Input(format!("{}: {m}", dir.display()));
    let mut out = Vec::new();
    match layout {
        Layout::Delineate => return Err(bad("not an nnU-Net or BraTS dataset".into())),
        Layout::Nnunet => {
            let dj = dir.join("dataset.json");
            let text = std::fs::read_to_string(&dj).map_err(delineate_imaging::IoFailure::on(
                "read the dataset description",
                &dj,
            ))?;
            let d: DatasetJson = serde_json::from_str(&text).map_err(|e| {
                Error::Input(format!(
                    "{}: not an nnU-Net dataset.json: {e}",
                    dj.display()
                ))
            })?;
            let suffix = format!("_{channel:04}{}", d.file_ending);
            let images = dir.join("imagesTr");
            let rd = std::fs::read_dir(&images)
                .map_err(delineate_imaging::IoFailure::on("list the images", &images))?;
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                let Some(case) = n.strip_suffix(&suffix) else {
                    continue;
                };
                let truth = dir
                    .join("labelsTr")
                    .join(format!("{case}{}", d.file_ending));
                out.push(LayoutCase {
                    name: case.to_string(),
                    image: e.path(),
                    truth: truth.is_file().then_some(truth),
                });
            }
            if out.is_empty() {
                return Err(bad(format!("no imagesTr/*{suffix} (channel {channel})")));
            }
        }
        Layout::Brats => {
            let rd = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if let Some((image, seg)) = brats_files(&e.path(), &n) {
                    out.push(LayoutCase {
                        name: n,
                        image,
                        truth: seg.is_file().then_some(seg),
                    });
                }
            }
            if out.is_empty() {
                return Err(bad("no CASE/CASE-t1c.nii.gz".into()));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Writes `dataset.json` of an nnU-Net raw dataset with one contrast-T1
/// channel and one lesion class.
pub fn write_nnunet_dataset_json(dir: &Path, cases: usize) -> Result<(), Error> {
    let json = serde_json::json!({
        "channel_names": {"0": "T1c"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": "delineate synthetic contrast-enhanced T1",
    });
    crate::report::write_text(&dir.join("dataset.json"), &format!("{json:#}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_detected_and_listed() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let n = tmp.path().join("nn");
        std::fs::create_dir_all(n.join("imagesTr")).unwrap_or_default();
        std::fs::create_dir_all(n.join("labelsTr")).unwrap_or_default();
        write_nnunet_dataset_json(&n, 2).unwrap_or_else(|e| panic!("{e}"));
        for c in ["a", "b"] {
            std::fs::write(n.join(format!("imagesTr/{c}_0000.nii.gz")), b"x").unwrap_or_default();
            std::fs::write(n.join(format!("imagesTr/{c}_0001.nii.gz")), b"x").unwrap_or_default();
        }
        std::fs::write(n.join("labelsTr/a.nii.gz"), b"x").unwrap_or_default();
        assert_eq!(detect(&n), Layout::Nnunet);
        let l = list(&n, Layout::Nnunet, 0).unwrap_or_default();
        assert_eq!(l.len(), 2);
        assert!(l[0].truth.is_some() && l[1].truth.is_none());
        assert!(l[1].image.ends_with("imagesTr/b_0000.nii.gz"));
        let b = tmp.path().join("brats");
        let c = b.join("BraTS-MET-00001-000");
        std::fs::create_dir_all(&c).unwrap_or_default();
        std::fs::write(c.join("BraTS-MET-00001-000-t1c.nii.gz"), b"x").unwrap_or_default();
        std::fs::write(c.join("BraTS-MET-00001-000-seg.nii.gz"), b"x").unwrap_or_default();
        assert_eq!(detect(&b), Layout::Brats);
        assert_eq!(list(&b, Layout::Brats, 0).unwrap_or_default().len(), 1);
        assert_eq!(detect(tmp.path()), Layout::Delineate);
        let g = delineate_imaging::Geometry::new(
            [3, 1, 1],
            [1.0; 3],
            [0.0; 3],
            delineate_imaging::Geometry::IDENTITY,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = Volume::from_vec(g, vec![1u32, 2, 3]).unwrap_or_else(|e| panic!("{e}"));
        let tc = LesionLabels::default_for(Layout::Brats).apply(v);
        assert_eq!(tc.as_slice(), &[1, 0, 1]);
    }
}
