//! The durable queue: series being received, jobs, deliveries — in SQLite.
//!
//! Why SQLite (rusqlite, compiled in): one file, transactions that survive
//! `kill -9` and power loss (WAL journal, `synchronous=FULL`: a commit has
//! been fsynced when it returns), no server to run beside the node, and
//! inspectable with the `sqlite3` shell by hospital IT. A job queue for one
//! machine needs nothing more; several machines share work through Orthanc
//! instead (docs/service.md).
//!
//! Life of a study: C-STORE instances land in an open *batch* (one per
//! series being received; [`crate::batches`]). When the series has been
//! quiet for the quiet period and its slices show no gap, the batch closes:
//! routing decides, and a *job* is queued on the whole series received so
//! far (earlier batches of the same series included) unless that content
//! was already processed; a job on more of a series *supersedes* the
//! earlier one. A worker claims the job (`running`), runs inference, and
//! queues one *delivery* per immediate destination (`delivering`,
//! [`crate::deliveries`]); destinations that wait for a review get the
//! reviewed export (`awaiting_review` → `reviewed`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches(
  id TEXT PRIMARY KEY, series_uid TEXT NOT NULL, study_uid TEXT NOT NULL,
  modality TEXT NOT NULL, description TEXT NOT NULL, calling_ae TEXT NOT NULL,
  first_at REAL NOT NULL, last_at REAL NOT NULL, open INTEGER NOT NULL,
  outcome TEXT, facts TEXT);
CREATE INDEX IF NOT EXISTS batches_open ON batches(open, series_uid);
CREATE TABLE IF NOT EXISTS instances(
  batch_id TEXT NOT NULL, sop_uid TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
  geometry TEXT, PRIMARY KEY(batch_id, sop_uid));
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, source TEXT NOT NULL, series_uid TEXT NOT NULL, study_uid TEXT NOT NULL,
  calling_ae TEXT NOT NULL, content_hash TEXT NOT NULL, input TEXT NOT NULL,
  input_kind TEXT NOT NULL, uid_root TEXT NOT NULL, instances INTEGER NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, pid INTEGER,
  received_at REAL NOT NULL, queued_at REAL NOT NULL, started_at REAL, inferred_at REAL,
  finished_at REAL, inference_s REAL, lesions INTEGER, error TEXT,
  revision INTEGER NOT NULL DEFAULT 1, supersedes TEXT, superseded_by TEXT, warnings TEXT,
  purged_at REAL);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queued_at);
CREATE INDEX IF NOT EXISTS jobs_content ON jobs(series_uid, content_hash);
CREATE TABLE IF NOT EXISTS deliveries(
  job_id TEXT NOT NULL, destination TEXT NOT NULL, object TEXT NOT NULL DEFAULT 'result',
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
  delivered_at REAL, error TEXT, path TEXT, sop_uid TEXT,
  PRIMARY KEY(job_id, destination, object));
CREATE TABLE IF NOT EXISTS exports(
  uid_root TEXT NOT NULL, revision INTEGER NOT NULL, job_id TEXT NOT NULL,
  result_id TEXT NOT NULL, accepted TEXT NOT NULL, reviewer TEXT NOT NULL, at TEXT NOT NULL,
  sop_uid TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY(uid_root, revision));
";

/// Columns added since the first release: (table, column, declaration),
/// added to an older database at open.
const ADDED_COLUMNS: [(&str, &str, &str); 8] = [
    ("batches", "outcome", "TEXT"),
    ("batches", "facts", "TEXT"),
    ("instances", "geometry", "TEXT"),
    ("jobs", "revision", "INTEGER NOT NULL DEFAULT 1"),
    ("jobs", "supersedes", "TEXT"),
    ("jobs", "superseded_by", "TEXT"),
    ("jobs", "warnings", "TEXT"),
    ("jobs", "purged_at", "REAL"),
];

pub use crate::job_state::JobState;

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A random identifier: 16 hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = (now().to_bits() ^ u64::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a received instance belongs to.
#[derive(Clone, Debug, Default)]
pub struct SeriesKey {
    pub series_uid: String,
    pub study_uid: String,
    pub modality: String,
    pub description: String,
    pub calling_ae: String,
    /// The series' acquisition attributes (from its first instance).
    pub acquisition: delineate_dicom::Acquisition,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub source: String,
    pub series_uid: String,
    pub study_uid: String,
    pub calling_ae: String,
    pub content_hash: String,
    pub input: String,
    pub input_kind: String,
    pub uid_root: String,
    pub instances: i64,
    pub state: JobState,
    pub attempts: i64,
    pub pid: Option<i64>,
    pub received_at: f64,
    pub queued_at: f64,
    pub started_at: Option<f64>,
    pub inferred_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub inference_s: Option<f64>,
    pub lesions: Option<i64>,
    pub error: Option<String>,
    /// Revision of the result in its structure-set series (1, then 2 for
    /// a job that superseded one, ...).
    pub revision: i64,
    pub supersedes: Option<String>,
    pub superseded_by: Option<String>,
    /// The segmentation's warnings (field of view, voxel size).
    pub warnings: Vec<String>,
}

/// A new job.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub key: &'a SeriesKey,
    pub content_hash: &'a str,
    pub input: &'a Path,
    pub input_kind: &'a str,
    pub instances: usize,
    pub received_at: f64,
    /// The job this one replaces, whose UID root and next revision it takes.
    pub supersedes: Option<(&'a str, &'a str, i64)>,
}

/// What inference produced, for [`Queue::inferred`].
pub struct Inferred {
    pub inference_s: f64,
    pub lesions: usize,
    pub rtstruct: bool,
    pub warnings: Vec<String>,
    /// Immediate deliveries: (destination, file, SOP Instance UID).
    pub deliveries: Vec<(String, PathBuf, String)>,
    pub review_required: bool,
}

/// Counts for /metrics.
#[derive(Default, Debug)]
pub struct Stats {
    pub jobs_by_state: Vec<(String, i64)>,
    pub open_series: i64,
    pub done_inference_s: Vec<f64>,
    pub done_total_s: Vec<f64>,
    pub deliveries_by_state: Vec<(String, i64)>,
}

pub struct Queue {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Queue(format!("{}: {e}", path.display()))
}

impl Queue {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let err = db_err(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;",
        )
        .map_err(&err)?;
        migrate(&conn).map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The connection; a panic elsewhere while holding it does not make the
    /// queue unusable (SQLite's own transactions keep the data consistent).
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        db_err(&self.path)
    }

    /// After a restart: jobs that were running start again, unless they
    /// have had `max_attempts` runs (a case that takes the machine down
    /// every time must not do so for ever): those are `failed`. Returns
    /// (id, process id it had, requeued).
    pub fn recover(&self, max_attempts: u32) -> Result<Vec<(String, Option<i64>, bool)>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare("SELECT id, pid, attempts FROM jobs WHERE state = ?1")
            .map_err(self.err())?;
        let running = st
            .query_map([JobState::Running], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut out = Vec::new();
        for (id, pid, attempts) in running {
            let again = attempts < i64::from(max_attempts);
            if again {
                c.execute(
                    "UPDATE jobs SET state = ?2, pid = NULL WHERE id = ?1",
                    params![id, JobState::Queued],
                )
            } else {
                c.execute(
                    "UPDATE jobs SET state = ?2, pid = NULL, finished_at = ?3, error = ?4 WHERE id = ?1",
                    params![
                        id,
                        JobState::Failed,
                        now(),
                        format!(
                            "the service stopped while this job ran, {attempts} time(s) of {max_attempts}: not run again"
                        )
                    ],
                )
            }
            .map_err(self.err())?;
            out.push((id, pid, again));
        }
        Ok(out)
    }

    /// Jobs at rest (done, failed, reviewed, superseded, awaiting review)
    /// since before `cutoff` whose files are still there, and closed
    /// batches of no job older than it.
    pub fn expired(&self, cutoff: f64) -> Result<(Vec<String>, Vec<String>), Error> {
        let c = self.lock();
        let col = |sql: &str| -> Result<Vec<String>, Error> {
            let mut st = c.prepare(sql).map_err(self.err())?;
            let v = st
                .query_map([cutoff], |r| r.get(0))
                .map_err(self.err())?
                .collect::<Result<Vec<String>, _>>()
                .map_err(self.err());
            v
        };
        let jobs = col("SELECT id FROM jobs WHERE purged_at IS NULL
             AND state IN ('done', 'failed', 'reviewed', 'superseded', 'awaiting_review')
             AND COALESCE(finished_at, queued_at) < ?1")?;
        let batches = col("SELECT id FROM batches WHERE open = 0 AND last_at < ?1
             AND id NOT IN (SELECT id FROM jobs WHERE purged_at IS NULL)")?;
        Ok((jobs, batches))
    }

    pub fn mark_purged(&self, id: &str) -> Result<(), Error> {
        self.lock()
            .execute(
                "UPDATE jobs SET purged_at = ?2 WHERE id = ?1",
                params![id, now()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// A run that crashed: queued again (at the back) while runs remain.
    pub fn retry(&self, id: &str, error: &str) -> Result<(), Error> {
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?2, pid = NULL, error = ?3, queued_at = ?4 WHERE id = ?1",
                params![id, JobState::Queued, error, now()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    pub fn insert_job(&self, j: &NewJob) -> Result<(), Error> {
        insert_job(&self.lock(), j).map(|_| ()).map_err(self.err())
    }

    /// The oldest queued job, now `running`.
    pub fn claim(&self) -> Result<Option<Job>, Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM jobs WHERE state = ?1 ORDER BY queued_at LIMIT 1",
                [JobState::Queued],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let Some(id) = id else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET state = ?2, attempts = attempts + 1, started_at = ?3 WHERE id = ?1",
            params![id, JobState::Running, now()],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        drop(c);
        self.job(&id)
    }

    pub fn set_pid(&self, id: &str, pid: Option<u32>) -> Result<(), Error> {
        self.lock()
            .execute("UPDATE jobs SET pid = ?2 WHERE id = ?1", params![id, pid])
            .map(|_| ())
            .map_err(self.err())
    }

    /// Inference finished: `delivering` to the immediate destinations,
    /// else `awaiting_review` when a review is required and there is a
    /// result to review, else `done`. A job superseded while it ran
    /// delivers nothing: it ends `superseded`.
    pub fn inferred(&self, id: &str, r: &Inferred) -> Result<JobState, Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let t = now();
        let superseded: Option<String> = tx
            .query_row("SELECT superseded_by FROM jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(self.err())?;
        let state = if superseded.is_some() {
            JobState::Superseded
        } else if !r.deliveries.is_empty() {
            JobState::Delivering
        } else if r.review_required && r.rtstruct {
            JobState::AwaitingReview
        } else {
            JobState::Done
        };
        let warnings = serde_json::to_string(&r.warnings).unwrap_or_default();
        tx.execute(
            "UPDATE jobs SET state = ?2, pid = NULL, inferred_at = ?3, inference_s = ?4, lesions = ?5,
             finished_at = CASE WHEN ?2 IN ('done', 'awaiting_review', 'superseded') THEN ?3 ELSE NULL END,
             error = NULL, warnings = ?6 WHERE id = ?1",
            params![id, state, t, r.inference_s, r.lesions as i64, warnings],
        )
        .map_err(self.err())?;
        if state == JobState::Delivering {
            for (d, path, sop) in &r.deliveries {
                crate::deliveries::insert(&tx, id, d, "result", path, sop, t)
                    .map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())?;
        Ok(state)
    }

    /// Moves a job to `state` (review exports, supersession).
    pub fn set_state(&self, id: &str, state: JobState) -> Result<(), Error> {
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?2, finished_at = ?3 WHERE id = ?1",
                params![id, state, now()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    pub fn fail(&self, id: &str, error: &str) -> Result<(), Error> {
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?2, pid = NULL, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![id, JobState::Failed, now(), error],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>, Error> {
        self.lock()
            .query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
            .map_err(self.err())
    }

    /// Jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare(&format!(
                "SELECT {JOB_COLS} FROM jobs ORDER BY queued_at DESC LIMIT ?1"
            ))
            .map_err(self.err())?;
        let v = st
            .query_map([limit as i64], job_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err());
        v
    }

    /// A job made from an upload with this content hash that did not fail.
    pub fn upload_with_hash(&self, hash: &str) -> Result<Option<String>, Error> {
        self.lock()
            .query_row(
                "SELECT id FROM jobs WHERE source = 'http' AND content_hash = ?1 AND state != ?2 LIMIT 1",
                params![hash, JobState::Failed],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        let c = self.lock();
        let e = self.err();
        let pairs = |sql: &str| -> Result<Vec<(String, i64)>, Error> {
            let mut st = c.prepare(sql).map_err(&e)?;
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&e)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&e);
            v
        };
        let floats = |sql: &str| -> Result<Vec<f64>, Error> {
            let mut st = c.prepare(sql).map_err(&e)?;
            let v = st
                .query_map([], |r| r.get(0))
                .map_err(&e)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&e);
            v
        };
        Ok(Stats {
            jobs_by_state: pairs("SELECT state, COUNT(*) FROM jobs GROUP BY state")?,
            deliveries_by_state: pairs("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?,
            open_series: c
                .query_row("SELECT COUNT(*) FROM batches WHERE open = 1", [], |r| r.get(0))
                .map_err(&e)?,
            done_inference_s: floats("SELECT inference_s FROM jobs WHERE state = 'done' AND inference_s IS NOT NULL")?,
            done_total_s: floats(
                "SELECT finished_at - received_at FROM jobs WHERE state = 'done' AND finished_at IS NOT NULL",
            )?,
        })
    }
}

const JOB_COLS: &str =
    "id, source, series_uid, study_uid, calling_ae, content_hash, input, input_kind,
  uid_root, instances, state, attempts, pid, received_at, queued_at, started_at, inferred_at,
  finished_at, inference_s, lesions, error, revision, supersedes, superseded_by, warnings";

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        source: r.get(1)?,
        series_uid: r.get(2)?,
        study_uid: r.get(3)?,
        calling_ae: r.get(4)?,
        content_hash: r.get(5)?,
        input: r.get(6)?,
        input_kind: r.get(7)?,
        uid_root: r.get(8)?,
        instances: r.get(9)?,
        state: r.get(10)?,
        attempts: r.get(11)?,
        pid: r.get(12)?,
        received_at: r.get(13)?,
        queued_at: r.get(14)?,
        started_at: r.get(15)?,
        inferred_at: r.get(16)?,
        finished_at: r.get(17)?,
        inference_s: r.get(18)?,
        lesions: r.get(19)?,
        error: r.get(20)?,
        revision: r.get(21)?,
        supersedes: r.get(22)?,
        superseded_by: r.get(23)?,
        warnings: r
            .get::<_, Option<String>>(24)?
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default(),
    })
}

pub(crate) fn insert_job(c: &Connection, j: &NewJob) -> rusqlite::Result<usize> {
    // The UID root of the job's RT Structure Set: fixed when the job is
    // queued, so a job re-run after a crash sends the same SOP Instance UID
    // and receivers see one object, not two. A job that supersedes another
    // keeps its root (same structure-set series) at the next revision.
    let (uid_root, revision) = match j.supersedes {
        Some((_, root, rev)) => (root.to_string(), rev),
        None => (delineate_dicom::build::new_uid(), 1),
    };
    c.execute(
        "INSERT INTO jobs(id, source, series_uid, study_uid, calling_ae, content_hash, input,
           input_kind, uid_root, instances, state, received_at, queued_at, revision, supersedes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            j.id,
            j.source,
            j.key.series_uid,
            j.key.study_uid,
            j.key.calling_ae,
            j.content_hash,
            j.input.to_string_lossy(),
            j.input_kind,
            uid_root,
            j.instances as i64,
            JobState::Queued,
            j.received_at,
            now(),
            revision,
            j.supersedes.map(|s| s.0),
        ],
    )
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: adds the
/// new columns, and rebuilds `deliveries` with the object in its key.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has = |table: &str, column: &str| -> rusqlite::Result<Option<bool>> {
        let mut st = c.prepare(&format!("PRAGMA table_info({table})"))?;
        let cols = st
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((!cols.is_empty()).then(|| cols.iter().any(|x| x == column)))
    };
    for (table, column, decl) in ADDED_COLUMNS {
        if has(table, column)? == Some(false) {
            c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    if has("deliveries", "object")? == Some(false) {
        c.execute_batch(
            "BEGIN;
             ALTER TABLE deliveries RENAME TO deliveries_v1;
             CREATE TABLE deliveries(
               job_id TEXT NOT NULL, destination TEXT NOT NULL, object TEXT NOT NULL DEFAULT 'result',
               state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
               delivered_at REAL, error TEXT, path TEXT, sop_uid TEXT,
               PRIMARY KEY(job_id, destination, object));
             INSERT INTO deliveries(job_id, destination, state, attempts, next_at, delivered_at, error)
               SELECT job_id, destination, state, attempts, next_at, delivered_at, error FROM deliveries_v1;
             DROP TABLE deliveries_v1;
             COMMIT;",
        )?;
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
