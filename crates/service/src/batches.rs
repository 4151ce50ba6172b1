//! Series being received: instances land in an open batch per series; a
//! batch closes when the series has been quiet and looks whole. A series
//! may arrive in several batches (a sender that pauses, a late instance):
//! the job is always made on everything received of the series, never on
//! a slab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::queue::{hex, insert_job, new_id, now, JobState, NewJob, Queue, SeriesKey};
use crate::Error;

/// Where one instance lies (for the completeness check).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceGeometry {
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    /// Number of Frames (an Enhanced MR instance holds a whole series).
    pub frames: u32,
    pub images_in_acquisition: Option<i64>,
}

/// A series whose quiet period has passed.
#[derive(Debug)]
pub struct Batch {
    pub id: String,
    pub key: SeriesKey,
    pub first_at: f64,
    pub last_at: f64,
    /// Instances in this batch.
    pub instances: usize,
}

/// How a closed batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A job was made on the series (with this batch).
    Job,
    /// Routing skipped the series.
    Skipped,
    /// The same content was processed already.
    Duplicate,
    /// Slices were missing when the wait ran out; kept, so that the missing
    /// slices complete the series if they come.
    Incomplete,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Job => "job",
            Outcome::Skipped => "skipped",
            Outcome::Duplicate => "duplicate",
            Outcome::Incomplete => "incomplete",
        }
    }
}

/// Everything received of a series: the instances of its batches that were
/// not skipped (later copies of an instance replace earlier ones).
pub struct SeriesContent {
    /// SOP Instance UID → (batch id, SHA-256, geometry).
    pub instances: BTreeMap<String, (String, String, InstanceGeometry)>,
    /// SHA-256 over the sorted (SOP Instance UID, SHA-256) pairs.
    pub content_hash: String,
    /// Batches that contributed, oldest first.
    pub batches: Vec<String>,
}

impl SeriesContent {
    pub fn geometries(&self) -> Vec<InstanceGeometry> {
        self.instances.values().map(|v| v.2.clone()).collect()
    }
}

impl Queue {
    /// Records an instance whose file is already durable at `spooled`: moves
    /// it into its series' open batch (made if needed) under `batches`.
    /// Returns the batch id. Runs under the queue lock, so a batch never
    /// closes between choosing it and recording the instance.
    #[allow(clippy::too_many_arguments)]
    pub fn add_instance(
        &self,
        key: &SeriesKey,
        sop_uid: &str,
        sha256: &str,
        bytes: u64,
        geometry: &InstanceGeometry,
        spooled: &Path,
        batches: &Path,
    ) -> Result<String, Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let t = now();
        let open: Option<String> = tx
            .query_row(
                "SELECT id FROM batches WHERE open = 1 AND series_uid = ?1",
                [&key.series_uid],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let id = match open {
            Some(id) => id,
            None => {
                let id = new_id();
                let facts = serde_json::to_string(&key.acquisition).unwrap_or_default();
                tx.execute(
                    "INSERT INTO batches(id, series_uid, study_uid, modality, description, calling_ae,
                       first_at, last_at, open, facts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1, ?8)",
                    params![
                        id,
                        key.series_uid,
                        key.study_uid,
                        key.modality,
                        key.description,
                        key.calling_ae,
                        t,
                        facts
                    ],
                )
                .map_err(self.err())?;
                id
            }
        };
        let dir = batches.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create the folder", e))?;
        crate::durable::private(&dir, true)?;
        crate::durable::rename_durably(spooled, &dir.join(instance_file(sop_uid)))?;
        tx.execute(
            "INSERT OR REPLACE INTO instances VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                sop_uid,
                sha256,
                bytes as i64,
                serde_json::to_string(geometry).unwrap_or_default()
            ],
        )
        .map_err(self.err())?;
        tx.execute(
            "UPDATE batches SET last_at = ?2 WHERE id = ?1",
            params![id, t],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(id)
    }

    /// Open batches quiet since `quiet_s`.
    pub fn quiet_batches(&self, quiet_s: f64) -> Result<Vec<Batch>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare(
                "SELECT b.id, b.series_uid, b.study_uid, b.modality, b.description, b.calling_ae,
                        b.first_at, b.last_at, b.facts,
                        (SELECT COUNT(*) FROM instances i WHERE i.batch_id = b.id)
                 FROM batches b WHERE b.open = 1 AND b.last_at <= ?1 ORDER BY b.first_at",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([now() - quiet_s], |r| {
                Ok(Batch {
                    id: r.get(0)?,
                    key: SeriesKey {
                        series_uid: r.get(1)?,
                        study_uid: r.get(2)?,
                        modality: r.get(3)?,
                        description: r.get(4)?,
                        calling_ae: r.get(5)?,
                        acquisition: r
                            .get::<_, Option<String>>(8)?
                            .and_then(|f| serde_json::from_str(&f).ok())
                            .unwrap_or_default(),
                    },
                    first_at: r.get(6)?,
                    last_at: r.get(7)?,
                    instances: r.get::<_, i64>(9)? as usize,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err());
        rows
    }

    /// What has been received of the series of `batch`: its instances and
    /// those of earlier batches of the same series that were not skipped.
    pub fn series_content(&self, series_uid: &str, batch: &str) -> Result<SeriesContent, Error> {
        use sha2::{Digest, Sha256};
        let c = self.lock();
        let mut st = c
            .prepare(
                "SELECT i.batch_id, i.sop_uid, i.sha256, i.geometry FROM instances i
                 JOIN batches b ON b.id = i.batch_id
                 WHERE b.series_uid = ?1 AND (b.id = ?2 OR (b.open = 0 AND b.outcome IN ('job', 'duplicate', 'incomplete')))
                 ORDER BY b.first_at, i.sop_uid",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![series_uid, batch], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut instances = BTreeMap::new();
        let mut batches: Vec<String> = Vec::new();
        for (b, sop, sha, geo) in rows {
            if !batches.contains(&b) {
                batches.push(b.clone());
            }
            let g = geo
                .and_then(|g| serde_json::from_str(&g).ok())
                .unwrap_or_default();
            instances.insert(sop, (b, sha, g));
        }
        let mut h = Sha256::new();
        for (sop, (_, sha, _)) in &instances {
            h.update(format!("{sop}\t{sha}\n").as_bytes());
        }
        Ok(SeriesContent {
            instances,
            content_hash: hex(&h.finalize()),
            batches,
        })
    }

    /// A job that already has (or is getting) results for this content.
    pub fn same_content(&self, series_uid: &str, hash: &str) -> Result<Option<String>, Error> {
        self.lock()
            .query_row(
                "SELECT id FROM jobs WHERE series_uid = ?1 AND content_hash = ?2 AND state != ?3
                 ORDER BY queued_at LIMIT 1",
                params![series_uid, hash, JobState::Failed],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// The latest job on this series that did not fail: (id, UID root,
    /// revision), the one a new job on more of the series supersedes.
    pub fn latest_job(&self, series_uid: &str) -> Result<Option<(String, String, i64)>, Error> {
        self.lock()
            .query_row(
                "SELECT id, uid_root, revision FROM jobs WHERE series_uid = ?1 AND source = 'dicom'
                 AND state != ?2 ORDER BY revision DESC, queued_at DESC LIMIT 1",
                params![series_uid, JobState::Failed],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Closes a batch with its outcome; with `job`, queues it in the same
    /// transaction and marks the job it supersedes: a queued one will not
    /// run, pending deliveries of an earlier result are cancelled, and its
    /// review can no longer be exported.
    pub fn close_batch(
        &self,
        batch_id: &str,
        outcome: Outcome,
        job: Option<&NewJob>,
    ) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        tx.execute(
            "UPDATE batches SET open = 0, outcome = ?2 WHERE id = ?1",
            params![batch_id, outcome.as_str()],
        )
        .map_err(self.err())?;
        if let Some(j) = job {
            insert_job(&tx, j).map_err(self.err())?;
            if let Some((old, _, _)) = j.supersedes {
                tx.execute(
                    "UPDATE jobs SET superseded_by = ?2,
                       state = CASE WHEN state = 'running' THEN state ELSE 'superseded' END
                     WHERE id = ?1",
                    params![old, j.id],
                )
                .map_err(self.err())?;
                tx.execute(
                    "UPDATE deliveries SET state = 'cancelled', error = ?2
                     WHERE job_id = ?1 AND state = 'pending'",
                    params![old, format!("superseded by job {}", j.id)],
                )
                .map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())
    }
}

/// The file name of an instance in a batch folder.
pub fn instance_file(sop_uid: &str) -> String {
    crate::durable::safe_file_name(sop_uid) + ".dcm"
}

/// Makes `dir` (the newest batch's folder) hold the whole series: links to
/// the instances of earlier batches it does not have (hard links; a copy
/// where the file system has none). Returns the folder.
pub fn gather(batches_dir: &Path, dir: &Path, content: &SeriesContent) -> Result<PathBuf, Error> {
    for (sop, (batch, _, _)) in &content.instances {
        let name = instance_file(sop);
        let target = dir.join(&name);
        if target.exists() {
            continue;
        }
        let source = batches_dir.join(batch).join(&name);
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(|e| Error::io(&source, "copy", e))?;
        }
    }
    crate::durable::sync_dir(dir)?;
    Ok(dir.to_path_buf())
}
