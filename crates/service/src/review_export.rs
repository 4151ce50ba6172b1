//! The reviewed export: the accepted lesions of one result as an RT
//! Structure Set that names its reviewer, numbered in revisions. The same
//! decisions exported again are the same object (same UIDs, nothing sent
//! twice); changed decisions are the next revision of the same series,
//! which planning systems show as replacing the previous one. The revision
//! log is the queue database in the service and `reviewed/exports.json`
//! beside a case reviewed with `delineate review`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use delineate_dicom::{FixedUids, LesionSummary, Provenance};
use serde::{Deserialize, Serialize};

use crate::deliveries::ExportRecord;
use crate::review::Case;

/// Where reviewed exports are numbered.
pub trait ExportLog: Send + Sync {
    /// The UID root of the case's structure sets.
    fn root(&self, case: &Case) -> Result<String, String>;
    fn last(&self, root: &str) -> Result<Option<ExportRecord>, String>;
    /// Records a new revision and queues it to `destinations`.
    fn record(&self, root: &str, rec: &ExportRecord, destinations: &[String])
        -> Result<(), String>;
    /// Queues an existing revision to `destinations` (nothing twice).
    fn send(&self, rec: &ExportRecord, destinations: &[String]) -> Result<(), String>;
}

/// What an export did.
#[derive(Debug, Serialize)]
pub struct ExportOutcome {
    pub record: ExportRecord,
    /// True when the same decisions had been exported already: nothing new
    /// was written or queued.
    pub unchanged: bool,
    /// The revision this one replaces.
    pub supersedes: Option<u32>,
    /// Destinations it is queued to.
    pub queued: Vec<String>,
}

/// Exports the case's accepted lesions (see the module documentation).
pub fn export(
    case: &Case,
    job_id: &str,
    log: &dyn ExportLog,
    destinations: &[String],
) -> Result<ExportOutcome, String> {
    let reference = case
        .reference
        .as_ref()
        .ok_or("this case has no DICOM series to refer to: no RTSTRUCT (the reviewed mask is in review.json)")?;
    let d = case.decisions();
    let reviewer = d.reviewer.trim().to_string();
    if reviewer.is_empty() {
        return Err("who reviewed? Enter your name: the structure set records it".into());
    }
    let accepted: Vec<u32> = d
        .decisions
        .iter()
        .filter(|(_, v)| **v == crate::review::Decision::Accepted)
        .map(|(k, _)| *k)
        .collect();
    if accepted.is_empty() {
        return Err(
            "no lesion accepted: nothing to export (planning systems refuse empty structure sets)"
                .into(),
        );
    }
    let root = log.root(case)?;
    let last = log.last(&root)?;
    if let Some(l) = &last {
        let same = l.job_id == job_id
            && l.result_id == case.result_id
            && l.accepted == accepted
            && l.reviewer == reviewer
            && l.path.is_file();
        if same {
            log.send(l, destinations)?;
            return Ok(ExportOutcome {
                record: l.clone(),
                unchanged: true,
                supersedes: None,
                queued: destinations.to_vec(),
            });
        }
    }
    let revision = last.as_ref().map_or(1, |l| l.revision + 1);
    let series = delineate_dicom::read_series(reference, &Default::default(), None)
        .map_err(|e| e.to_string())?;
    let (mask, _) =
        delineate_imaging::read_nifti_any(&case.mask_path).map_err(|e| e.to_string())?;
    let labels = mask
        .into_f32()
        .map(|&v| v.max(0.0).round() as u32)
        .map(|&l| if accepted.contains(&l) { l } else { 0 });
    let summaries: Vec<LesionSummary> = case
        .lesions
        .iter()
        .filter(|l| accepted.contains(&l.id))
        .map(|l| LesionSummary {
            id: l.id,
            confidence: l.confidence,
            mean_probability: l.mean_probability,
            volume_mm3: l.volume_mm3,
            equivalent_diameter_mm: l.equivalent_diameter_mm,
        })
        .collect();
    let provenance = Provenance::Reviewed {
        model: case.model.clone(),
        reviewer: reviewer.clone(),
        time: d.time.clone(),
    };
    let uids = FixedUids::reviewed(&root, revision);
    let dir = case.dir.join("reviewed");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("rtstruct-r{revision}.dcm"));
    delineate_dicom::write_rtstruct(
        &path,
        &labels,
        series.volume.geometry(),
        &series.meta,
        &provenance.lesion_rois(&summaries),
        &provenance.options(Some(uids.clone())),
    )
    .map_err(|e| e.to_string())?;
    // The latest revision under a fixed name, for download.
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::durable::write(&dir.join("rtstruct.dcm"), &bytes).map_err(|e| e.to_string())?;
    let record = ExportRecord {
        revision,
        job_id: job_id.to_string(),
        result_id: case.result_id.clone(),
        accepted,
        reviewer,
        at: crate::audit::rfc3339_now(),
        sop_uid: uids.instance,
        path,
    };
    log.record(&root, &record, destinations)?;
    Ok(ExportOutcome {
        record,
        unchanged: false,
        supersedes: last.map(|l| l.revision),
        queued: destinations.to_vec(),
    })
}

/// The service's log: the queue database (exports are delivered by the
/// delivery loop, with retries and a record of each attempt).
pub struct DbLog(pub Arc<crate::Service>);

impl ExportLog for DbLog {
    fn root(&self, case: &Case) -> Result<String, String> {
        let job = self
            .0
            .queue
            .job(&case.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no job {}", case.name))?;
        Ok(job.uid_root)
    }
    fn last(&self, root: &str) -> Result<Option<ExportRecord>, String> {
        self.0.queue.last_export(root).map_err(|e| e.to_string())
    }
    fn record(
        &self,
        root: &str,
        rec: &ExportRecord,
        destinations: &[String],
    ) -> Result<(), String> {
        self.0
            .queue
            .record_export(root, rec, destinations)
            .map_err(|e| e.to_string())
    }
    fn send(&self, rec: &ExportRecord, destinations: &[String]) -> Result<(), String> {
        self.0
            .queue
            .send_export(rec, destinations)
            .map_err(|e| e.to_string())
    }
}

/// `delineate review`'s log: `reviewed/exports.json` in the case folder.
pub struct FileLog {
    pub path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct FileLogData {
    uid_root: String,
    exports: Vec<ExportRecord>,
}

impl FileLog {
    pub fn new(case_dir: &Path) -> Self {
        Self {
            path: case_dir.join("reviewed").join("exports.json"),
        }
    }

    fn read(&self) -> Result<FileLogData, String> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileLogData::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    fn write(&self, d: &FileLogData) -> Result<(), String> {
        if let Some(p) = self.path.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let b = serde_json::to_vec_pretty(d).map_err(|e| e.to_string())?;
        crate::durable::write(&self.path, &b).map_err(|e| e.to_string())
    }
}

impl ExportLog for FileLog {
    fn root(&self, case: &Case) -> Result<String, String> {
        if let Some(r) = &case.uid_root {
            return Ok(r.clone());
        }
        let mut d = self.read()?;
        if d.uid_root.is_empty() {
            d.uid_root = delineate_dicom::build::new_uid();
            self.write(&d)?;
        }
        Ok(d.uid_root)
    }
    fn last(&self, _root: &str) -> Result<Option<ExportRecord>, String> {
        Ok(self.read()?.exports.last().cloned())
    }
    fn record(&self, root: &str, rec: &ExportRecord, _d: &[String]) -> Result<(), String> {
        let mut d = self.read()?;
        d.uid_root = root.to_string();
        d.exports.push(rec.clone());
        self.write(&d)
    }
    fn send(&self, _rec: &ExportRecord, _d: &[String]) -> Result<(), String> {
        Ok(())
    }
}
