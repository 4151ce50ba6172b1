//! Deliveries and reviewed exports in the queue database. Every structure
//! set that leaves the service, automatic draft or reviewed export, is a
//! row here first: sent by the delivery loop with retries, its outcome
//! recorded, counted in the metrics. Reviewed exports are numbered per
//! structure-set root, so exporting the same decisions again is the same
//! object and a changed review is the next revision of the same series.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::queue::{now, JobState, Queue};
use crate::Error;

/// One structure set to one destination.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub job_id: String,
    pub destination: String,
    /// `result` (the AI draft) or `reviewed.N` (revision N of the review).
    pub object: String,
    pub state: String,
    pub attempts: i64,
    pub next_at: f64,
    pub delivered_at: Option<f64>,
    pub error: Option<String>,
    pub path: Option<String>,
    pub sop_uid: Option<String>,
}

const COLS: &str =
    "job_id, destination, object, state, attempts, next_at, delivered_at, error, path, sop_uid";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        job_id: r.get(0)?,
        destination: r.get(1)?,
        object: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        next_at: r.get(5)?,
        delivered_at: r.get(6)?,
        error: r.get(7)?,
        path: r.get(8)?,
        sop_uid: r.get(9)?,
    })
}

/// Queues one delivery (ignored when the same object is already queued for
/// the destination: a re-run or a repeated export sends nothing twice).
pub(crate) fn insert(
    c: &Connection,
    job: &str,
    destination: &str,
    object: &str,
    path: &Path,
    sop_uid: &str,
    at: f64,
) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT OR IGNORE INTO deliveries(job_id, destination, object, state, next_at, path, sop_uid)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)",
        params![
            job,
            destination,
            object,
            at,
            path.to_string_lossy(),
            sop_uid
        ],
    )
}

/// One reviewed export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub revision: u32,
    pub job_id: String,
    /// The result (segment run) the decisions were made on.
    pub result_id: String,
    pub accepted: Vec<u32>,
    pub reviewer: String,
    /// RFC 3339.
    pub at: String,
    pub sop_uid: String,
    pub path: PathBuf,
}

impl Queue {
    /// Pending deliveries whose time has come.
    pub fn due_deliveries(&self) -> Result<Vec<Delivery>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare(&format!(
                "SELECT {COLS} FROM deliveries WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at"
            ))
            .map_err(self.err())?;
        let v = st
            .query_map([now()], row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err());
        v
    }

    /// Records one delivery attempt. When nothing of the job is pending any
    /// more, the job rests: `failed` (naming the destinations that never
    /// took it), else `reviewed` after a reviewed export, `awaiting_review`
    /// when a review is still to come (`review_required` and a result to
    /// review), else `done`. A superseded job stays superseded.
    pub fn delivery_attempt(
        &self,
        d: &Delivery,
        result: Result<(), String>,
        max_attempts: u32,
        backoff: (f64, f64),
        review_required: bool,
    ) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let t = now();
        let attempts = d.attempts + 1;
        match &result {
            Ok(()) => tx.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = ?4, delivered_at = ?5, error = NULL
                 WHERE job_id = ?1 AND destination = ?2 AND object = ?3",
                params![d.job_id, d.destination, d.object, attempts, t],
            ),
            Err(e) => {
                let state = if attempts as u32 >= max_attempts {
                    "failed"
                } else {
                    "pending"
                };
                let wait = (backoff.0 * 2f64.powi(attempts as i32 - 1)).min(backoff.1);
                tx.execute(
                    "UPDATE deliveries SET state = ?4, attempts = ?5, next_at = ?6, error = ?7
                     WHERE job_id = ?1 AND destination = ?2 AND object = ?3",
                    params![d.job_id, d.destination, d.object, state, attempts, t + wait, e],
                )
            }
        }
        .map_err(self.err())?;
        settle(&tx, &d.job_id, review_required, t).map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    pub fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare(&format!(
                "SELECT {COLS} FROM deliveries WHERE job_id = ?1 ORDER BY object, destination"
            ))
            .map_err(self.err())?;
        let v = st
            .query_map([id], row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err());
        v
    }

    /// The latest reviewed export under a structure-set root.
    pub fn last_export(&self, uid_root: &str) -> Result<Option<ExportRecord>, Error> {
        self.lock()
            .query_row(
                "SELECT revision, job_id, result_id, accepted, reviewer, at, sop_uid, path FROM exports
                 WHERE uid_root = ?1 ORDER BY revision DESC LIMIT 1",
                [uid_root],
                |r| {
                    Ok(ExportRecord {
                        revision: r.get(0)?,
                        job_id: r.get(1)?,
                        result_id: r.get(2)?,
                        accepted: serde_json::from_str(&r.get::<_, String>(3)?)
                            .unwrap_or_default(),
                        reviewer: r.get(4)?,
                        at: r.get(5)?,
                        sop_uid: r.get(6)?,
                        path: PathBuf::from(r.get::<_, String>(7)?),
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    /// Records a new reviewed export and queues it to `destinations` in one
    /// transaction; pending deliveries of earlier revisions are cancelled
    /// (superseded). The job is `delivering` while they are pending.
    pub fn record_export(
        &self,
        uid_root: &str,
        e: &ExportRecord,
        destinations: &[String],
    ) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let t = now();
        tx.execute(
            "INSERT INTO exports VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                uid_root,
                e.revision,
                e.job_id,
                e.result_id,
                serde_json::to_string(&e.accepted).unwrap_or_default(),
                e.reviewer,
                e.at,
                e.sop_uid,
                e.path.to_string_lossy()
            ],
        )
        .map_err(self.err())?;
        tx.execute(
            "UPDATE deliveries SET state = 'cancelled', error = ?2
             WHERE job_id = ?1 AND state = 'pending' AND object LIKE 'reviewed.%'",
            params![
                e.job_id,
                format!("superseded by reviewed revision {}", e.revision)
            ],
        )
        .map_err(self.err())?;
        self.queue_reviewed(&tx, e, destinations, t)?;
        tx.commit().map_err(self.err())
    }

    /// Queues an already recorded export to `destinations` (an export first
    /// made without sending, sent later); nothing is queued twice.
    pub fn send_export(&self, e: &ExportRecord, destinations: &[String]) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        self.queue_reviewed(&tx, e, destinations, now())?;
        tx.commit().map_err(self.err())
    }

    fn queue_reviewed(
        &self,
        tx: &Connection,
        e: &ExportRecord,
        destinations: &[String],
        t: f64,
    ) -> Result<(), Error> {
        let object = format!("reviewed.{}", e.revision);
        for d in destinations {
            insert(tx, &e.job_id, d, &object, &e.path, &e.sop_uid, t).map_err(self.err())?;
        }
        let state = if destinations.is_empty() {
            JobState::Reviewed
        } else {
            JobState::Delivering
        };
        tx.execute(
            "UPDATE jobs SET state = ?2, finished_at = CASE WHEN ?2 = 'reviewed' THEN ?3 ELSE NULL END,
             error = NULL WHERE id = ?1 AND state != 'superseded'",
            params![e.job_id, state, t],
        )
        .map_err(self.err())?;
        Ok(())
    }
}

/// Where a job rests when none of its deliveries is pending.
fn settle(tx: &Connection, job: &str, review_required: bool, t: f64) -> rusqlite::Result<()> {
    let pending: i64 = tx.query_row(
        "SELECT COUNT(*) FROM deliveries WHERE job_id = ?1 AND state = 'pending'",
        [job],
        |r| r.get(0),
    )?;
    if pending > 0 {
        return Ok(());
    }
    let (state, lesions): (JobState, Option<i64>) = tx.query_row(
        "SELECT state, lesions FROM jobs WHERE id = ?1",
        [job],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if state == JobState::Superseded {
        return Ok(());
    }
    let failed: Vec<String> = {
        let mut st = tx.prepare(
            "SELECT destination || ' (' || object || ')' FROM deliveries WHERE job_id = ?1 AND state = 'failed'",
        )?;
        let v = st
            .query_map([job], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        v
    };
    let exported: i64 = tx.query_row(
        "SELECT COUNT(*) FROM exports WHERE job_id = ?1",
        [job],
        |r| r.get(0),
    )?;
    let (state, error) = if !failed.is_empty() {
        (
            JobState::Failed,
            Some(format!("not delivered to {}", failed.join(", "))),
        )
    } else if exported > 0 {
        (JobState::Reviewed, None)
    } else if review_required && lesions.unwrap_or(0) > 0 {
        (JobState::AwaitingReview, None)
    } else {
        (JobState::Done, None)
    };
    tx.execute(
        "UPDATE jobs SET state = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
        params![job, state, t, error],
    )?;
    Ok(())
}
