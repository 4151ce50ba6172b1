//! The review page: the image in three views with the proposed contours,
//! the lesion list, accept/reject per lesion, and export of the accepted
//! lesions as an RT Structure Set (sent on to the destinations from the
//! service). Served by `delineate serve` (`/review/{job}/`) and by
//! `delineate review CASE_DIR` (`/review/case/`).
//!
//! The page and its script are embedded in the binary (assets/); nothing is
//! fetched from elsewhere. Its data routes (`.../api/...`) need the bearer
//! token, which the page takes from the URL fragment (`#token=...`, never
//! sent to the server in the URL) and sends in the Authorization header.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use delineate_imaging::{read_nifti_any, Volume};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::Audit;

pub const PAGE: &str = include_str!("../assets/review.html");
pub const SCRIPT: &str = include_str!("../assets/review.js");

/// Everything the page shows for one case, on a display grid reoriented to
/// LPS (i → patient left, j → posterior, k → superior), so that views are
/// in the radiological convention whatever the acquisition.
pub struct Case {
    pub name: String,
    pub image: Volume<f32>,
    pub labels: Volume<u32>,
    pub lesions: Vec<LesionView>,
    /// Where decisions and exports are written.
    pub dir: PathBuf,
    /// The DICOM series the structure set refers to (None: NIfTI only).
    pub reference: Option<PathBuf>,
    /// The proposed mask on the reference grid.
    pub mask_path: PathBuf,
    /// Display window (1st and 99.5th percentile of the image).
    pub window: [f32; 2],
    /// The result's id (lesions.json): decisions made on another result
    /// do not apply to this one.
    pub result_id: String,
    /// The structure-set UID root of the result, when it recorded one.
    pub uid_root: Option<String>,
    /// The model that proposed the lesions.
    pub model: delineate_dicom::ModelId,
    /// The segmentation's warnings.
    pub warnings: Vec<String>,
    /// Things the reviewer must know (a superseded job, decisions set aside).
    pub notices: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LesionView {
    pub id: u32,
    pub voxels: u64,
    pub volume_mm3: f64,
    pub equivalent_diameter_mm: f64,
    /// What the lesion is ranked by: the lesion classifier's score when the
    /// model has one, otherwise the network's maximum probability.
    pub confidence: f64,
    pub max_probability: f64,
    pub mean_probability: f64,
    /// Centroid voxel on the display grid.
    pub centre: [usize; 3],
}

/// A reviewer's decision on one lesion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accepted,
    Rejected,
}

/// Decisions stored with the case (`review.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Decisions {
    pub reviewer: String,
    pub time: String,
    /// The result the decisions were made on (lesions.json `result_id`).
    pub result_id: String,
    /// Lesion id → its decision (undecided lesions are absent).
    pub decisions: BTreeMap<u32, Decision>,
}

impl Case {
    /// Loads a `delineate segment` output folder: `mask.nii.gz`,
    /// `lesions.json`, with the image from `image` (a DICOM folder or NIfTI
    /// file; default: the input recorded in lesions.json).
    pub fn load(
        name: &str,
        out: &Path,
        image: Option<&Path>,
        reference: Option<&Path>,
    ) -> Result<Case, String> {
        let les_path = out.join("lesions.json");
        let les = delineate_dicom::ResultManifest::read(&les_path).map_err(|e| e.to_string())?;
        let recorded = Some(les.input_path.clone()).filter(|p| !p.as_os_str().is_empty());
        let image_path = image.map(Path::to_path_buf).or(recorded).ok_or_else(|| {
            format!(
                "{}: no input_path recorded: give the image (--image)",
                les_path.display()
            )
        })?;
        let (image_vol, dicom_ref) = if image_path.is_dir() {
            let s = delineate_dicom::read_series(&image_path, &Default::default(), None)
                .map_err(|e| e.to_string())?;
            (s.volume, Some(image_path.clone()))
        } else {
            let (v, _) = read_nifti_any(&image_path).map_err(|e| e.to_string())?;
            (v.into_f32(), None)
        };
        let mask_path = out.join("mask.nii.gz");
        let (mask, _) = read_nifti_any(&mask_path).map_err(|e| e.to_string())?;
        let mask = mask.into_f32().map(|&v| v.max(0.0).round() as u32);
        if !mask.geometry().same_grid(image_vol.geometry(), 1e-3) {
            return Err(format!(
                "{}: not on the grid of the image {}",
                mask_path.display(),
                image_path.display()
            ));
        }
        let image = image_vol.reorient("LPS").map_err(|e| e.to_string())?;
        let labels = mask.reorient("LPS").map_err(|e| e.to_string())?;
        let lesions = lesion_views(&les.lesions, &labels);
        let window = percentiles(image.data().iter(), [0.01, 0.995]);
        let warnings = les.warnings.clone();
        let mut case = Case {
            name: name.to_string(),
            image,
            labels,
            lesions,
            dir: out.to_path_buf(),
            reference: reference.map(Path::to_path_buf).or(dicom_ref),
            mask_path,
            window,
            result_id: les.result_id.clone(),
            uid_root: Some(les.uid_root.clone()).filter(|u| !u.is_empty()),
            model: delineate_dicom::ModelId {
                name: if les.model.is_empty() {
                    "unknown model".into()
                } else {
                    les.model.clone()
                },
                version: les.model_sha256.clone(),
                research_only: les.research_use_only,
            },
            notices: warnings
                .iter()
                .map(|w| format!("segmentation warning: {w}"))
                .collect(),
            warnings,
        };
        if let Some(d) = case.stored_decisions() {
            if d.result_id != case.result_id {
                case.notices.push(format!(
                    "decisions by {} at {} were made on an earlier result of this case and are set aside",
                    if d.reviewer.is_empty() { "someone" } else { &d.reviewer },
                    d.time
                ));
            }
        }
        Ok(case)
    }

    pub fn meta(&self, can_send: bool) -> serde_json::Value {
        let g = self.image.geometry();
        json!({
            "name": self.name,
            "size": g.size,
            "spacing": g.spacing,
            "window": self.window,
            "lesions": self.lesions,
            "review": self.decisions(),
            "can_export_rtstruct": self.reference.is_some(),
            "can_send": can_send,
            "model": self.model.describe(),
            "warnings": self.warnings,
            "notices": self.notices,
        })
    }

    /// One slice for display: `axis` 0 sagittal (index i), 1 coronal (j),
    /// 2 axial (k). Row 0 is the top of the screen (anterior for axial,
    /// superior otherwise). Bytes: width·height float32 image values, then
    /// width·height uint16 labels, little endian.
    pub fn slice(&self, axis: usize, index: usize) -> Option<(usize, usize, Vec<u8>)> {
        let [nx, ny, nz] = self.image.geometry().size;
        let (w, h) = match axis {
            0 => (ny, nz),
            1 => (nx, nz),
            2 => (nx, ny),
            _ => return None,
        };
        if index >= [nx, ny, nz][axis] {
            return None;
        }
        let at = |col: usize, row: usize| -> [usize; 3] {
            match axis {
                0 => [index, col, nz - 1 - row],
                1 => [col, index, nz - 1 - row],
                _ => [col, row, index],
            }
        };
        let (img, lab) = (self.image.data(), self.labels.data());
        let mut out = Vec::with_capacity(w * h * 6);
        for row in 0..h {
            for col in 0..w {
                out.extend_from_slice(&img[at(col, row)].to_le_bytes());
            }
        }
        for row in 0..h {
            for col in 0..w {
                out.extend_from_slice(
                    &(lab[at(col, row)].min(u16::MAX as u32) as u16).to_le_bytes(),
                );
            }
        }
        Some((w, h, out))
    }

    fn stored_decisions(&self) -> Option<Decisions> {
        std::fs::read(self.dir.join("review.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// The decisions made on this result (none when review.json belongs
    /// to another result of the case: its lesion numbers mean other lesions).
    pub fn decisions(&self) -> Decisions {
        self.stored_decisions()
            .filter(|d| d.result_id == self.result_id)
            .unwrap_or_else(|| Decisions {
                result_id: self.result_id.clone(),
                ..Default::default()
            })
    }

    /// Stores the decisions (atomically) and logs them.
    pub fn save_decisions(
        &self,
        d: &Decisions,
        audit: &Audit,
        who: &str,
        job: &str,
    ) -> Result<(), String> {
        let known: Vec<u32> = self.lesions.iter().map(|l| l.id).collect();
        for id in d.decisions.keys() {
            if !known.contains(id) {
                return Err(format!(
                    "lesion {id}: not in this result (lesions {known:?})"
                ));
            }
        }
        let mut d = d.clone();
        d.time = crate::audit::rfc3339_now();
        d.result_id = self.result_id.clone();
        let bytes = serde_json::to_vec_pretty(&d).map_err(|e| e.to_string())?;
        crate::durable::write(&self.dir.join("review.json"), &bytes).map_err(|e| e.to_string())?;
        let pick = |s: Decision| -> Vec<u32> {
            d.decisions
                .iter()
                .filter(|(_, v)| **v == s)
                .map(|(k, _)| *k)
                .collect()
        };
        audit.event(
            crate::audit::AuditEvent::ReviewDecisions,
            json!({"job": job, "case": self.name, "reviewer": d.reviewer, "client": who,
                   "accepted": pick(Decision::Accepted), "rejected": pick(Decision::Rejected),
                   "undecided": known.iter().filter(|k| !d.decisions.contains_key(k)).collect::<Vec<_>>()}),
        );
        Ok(())
    }
}

fn lesion_views(
    list: &[delineate_dicom::manifest::Lesion],
    labels: &Volume<u32>,
) -> Vec<LesionView> {
    let mut sums: HashMap<u32, ([f64; 3], u64)> = HashMap::new();
    for ((i, j, k), &l) in labels.data().indexed_iter() {
        if l > 0 {
            let e = sums.entry(l).or_insert(([0.0; 3], 0));
            e.0[0] += i as f64;
            e.0[1] += j as f64;
            e.0[2] += k as f64;
            e.1 += 1;
        }
    }
    let mut v: Vec<LesionView> = list
        .iter()
        .filter_map(|l| {
            let (s, n) = sums.get(&l.id)?;
            let c = |a: usize| (s[a] / *n as f64).round() as usize;
            Some(LesionView {
                id: l.id,
                voxels: *n,
                volume_mm3: l.volume_mm3,
                equivalent_diameter_mm: l.equivalent_diameter_mm,
                confidence: f64::from(l.confidence),
                max_probability: f64::from(l.max_probability),
                mean_probability: f64::from(l.mean_probability),
                centre: [c(0), c(1), c(2)],
            })
        })
        .collect();
    // Most confident first.
    v.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.id.cmp(&b.id)));
    v
}

fn percentiles<'a>(data: impl Iterator<Item = &'a f32>, q: [f64; 2]) -> [f32; 2] {
    let mut s: Vec<f32> = data.copied().filter(|v| v.is_finite()).step_by(7).collect();
    if s.is_empty() {
        return [0.0, 1.0];
    }
    s.sort_by(f32::total_cmp);
    let at = |f: f64| s[((s.len() - 1) as f64 * f) as usize];
    [at(q[0]), at(q[1])]
}

/// Where cases come from: one fixed case (`delineate review`) or the jobs
/// of the service, loaded on first view and kept (at most a few).
pub enum Cases {
    One(Arc<Case>),
    Jobs(Mutex<Vec<(String, Arc<Case>)>>),
}

/// Cases kept in memory by the service (each is a few hundred MB at most).
pub const CACHED_CASES: usize = 3;

/// What the review routes need.
pub struct ReviewApp {
    /// Who may open the data routes, and as whom they act.
    pub auth: Arc<crate::users::Auth>,
    pub cases: Cases,
    pub audit: Arc<Audit>,
    /// Where reviewed exports are numbered and queued.
    pub exports: Arc<dyn crate::review_export::ExportLog>,
    /// The service, for loading job cases and sending results.
    pub service: Option<Arc<crate::Service>>,
}

impl ReviewApp {
    pub fn case(&self, id: &str) -> Result<Arc<Case>, (u16, String)> {
        match &self.cases {
            Cases::One(c) => {
                if id == "case" {
                    Ok(c.clone())
                } else {
                    Err((404, format!("no case {id}")))
                }
            }
            Cases::Jobs(cache) => {
                if let Some((_, c)) = cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|(k, _)| k == id)
                {
                    return Ok(c.clone());
                }
                let svc = self
                    .service
                    .as_ref()
                    .ok_or((500, "no service".to_string()))?;
                let job = svc
                    .queue
                    .job(id)
                    .map_err(|e| (500, e.to_string()))?
                    .ok_or((404, format!("no job {id}")))?;
                if job.state.before_result() {
                    return Err((
                        409,
                        format!("job {id} is {}: nothing to review yet", job.state),
                    ));
                }
                let out = svc.dirs.job(id).join("out");
                let (image, reference) = if job.input_kind == "nifti" {
                    (out.join("dicom"), Some(out.join("dicom")))
                } else {
                    (PathBuf::from(&job.input), Some(PathBuf::from(&job.input)))
                };
                let mut case = Case::load(id, &out, Some(&image), reference.as_deref())
                    .map_err(|e| (500, e))?;
                if let Some(by) = &job.superseded_by {
                    case.notices.insert(
                        0,
                        format!("superseded: more of this series arrived; review job {by} instead"),
                    );
                }
                let case = Arc::new(case);
                let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                c.push((id.to_string(), case.clone()));
                if c.len() > CACHED_CASES {
                    c.remove(0);
                }
                Ok(case)
            }
        }
    }

    /// Names of the destinations a reviewed export goes to: all of them.
    pub fn destinations(&self) -> Vec<String> {
        self.service
            .as_ref()
            .map(|s| {
                s.config
                    .destinations
                    .iter()
                    .map(|d| d.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
