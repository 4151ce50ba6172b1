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
//! series being received). When the series has been quiet for the quiet
//! period the batch closes: routing decides, and a *job* is queued unless
//! the same series with the same content was already processed. A worker
//! claims the job (`running`), runs inference, and queues one *delivery* per
//! destination (`delivering`), which the delivery loop sends with retries.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches(
  id TEXT PRIMARY KEY, series_uid TEXT NOT NULL, study_uid TEXT NOT NULL,
  modality TEXT NOT NULL, description TEXT NOT NULL, calling_ae TEXT NOT NULL,
  first_at REAL NOT NULL, last_at REAL NOT NULL, open INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS batches_open ON batches(open, series_uid);
CREATE TABLE IF NOT EXISTS instances(
  batch_id TEXT NOT NULL, sop_uid TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(batch_id, sop_uid));
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, source TEXT NOT NULL, series_uid TEXT NOT NULL, study_uid TEXT NOT NULL,
  calling_ae TEXT NOT NULL, content_hash TEXT NOT NULL, input TEXT NOT NULL,
  input_kind TEXT NOT NULL, uid_root TEXT NOT NULL, instances INTEGER NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, pid INTEGER,
  received_at REAL NOT NULL, queued_at REAL NOT NULL, started_at REAL, inferred_at REAL,
  finished_at REAL, inference_s REAL, lesions INTEGER, error TEXT);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queued_at);
CREATE INDEX IF NOT EXISTS jobs_content ON jobs(series_uid, content_hash);
CREATE TABLE IF NOT EXISTS deliveries(
  job_id TEXT NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, delivered_at REAL, error TEXT,
  PRIMARY KEY(job_id, destination));
";

/// Job states.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const DELIVERING: &str = "delivering";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";

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
#[derive(Clone, Debug)]
pub struct SeriesKey {
    pub series_uid: String,
    pub study_uid: String,
    pub modality: String,
    pub description: String,
    pub calling_ae: String,
}

/// A series whose quiet period has passed.
#[derive(Debug)]
pub struct Batch {
    pub id: String,
    pub key: SeriesKey,
    pub first_at: f64,
    pub instances: usize,
    pub content_hash: String,
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
    pub state: String,
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
}

#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub job_id: String,
    pub destination: String,
    pub state: String,
    pub attempts: i64,
    pub next_at: f64,
    pub delivered_at: Option<f64>,
    pub error: Option<String>,
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

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        db_err(&self.path)
    }

    /// After a restart: jobs that were running start again. Returns the
    /// process ids they had (a `delineate segment` orphaned by a crash).
    pub fn recover(&self) -> Result<Vec<(String, i64)>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare("SELECT id, pid FROM jobs WHERE state = ?1 AND pid IS NOT NULL")
            .map_err(self.err())?;
        let orphans = st
            .query_map([RUNNING], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        c.execute(
            "UPDATE jobs SET state = ?1, pid = NULL WHERE state = ?2",
            params![QUEUED, RUNNING],
        )
        .map_err(self.err())?;
        Ok(orphans)
    }

    /// Records an instance whose file is already durable at `spooled`: moves
    /// it into its series' open batch (made if needed) under `batches`.
    /// Returns the batch id. Runs under the queue lock, so a batch never
    /// closes between choosing it and recording the instance.
    pub fn add_instance(
        &self,
        key: &SeriesKey,
        sop_uid: &str,
        sha256: &str,
        bytes: u64,
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
                tx.execute(
                    "INSERT INTO batches VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1)",
                    params![
                        id,
                        key.series_uid,
                        key.study_uid,
                        key.modality,
                        key.description,
                        key.calling_ae,
                        t
                    ],
                )
                .map_err(self.err())?;
                id
            }
        };
        let dir = batches.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let name = crate::durable::safe_file_name(sop_uid) + ".dcm";
        crate::durable::rename_durably(spooled, &dir.join(name))?;
        tx.execute(
            "INSERT OR REPLACE INTO instances VALUES (?1, ?2, ?3, ?4)",
            params![id, sop_uid, sha256, bytes as i64],
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

    /// Open batches quiet since `quiet_s`, with their content hash: SHA-256
    /// over the sorted (SOP Instance UID, SHA-256 of the dataset) pairs.
    pub fn quiet_batches(&self, quiet_s: f64) -> Result<Vec<Batch>, Error> {
        use sha2::{Digest, Sha256};
        let c = self.lock();
        let mut st = c
            .prepare(
                "SELECT id, series_uid, study_uid, modality, description, calling_ae, first_at
                 FROM batches WHERE open = 1 AND last_at <= ?1",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([now() - quiet_s], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    SeriesKey {
                        series_uid: r.get(1)?,
                        study_uid: r.get(2)?,
                        modality: r.get(3)?,
                        description: r.get(4)?,
                        calling_ae: r.get(5)?,
                    },
                    r.get::<_, f64>(6)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut out = Vec::new();
        for (id, key, first_at) in rows {
            let mut st = c
                .prepare(
                    "SELECT sop_uid, sha256 FROM instances WHERE batch_id = ?1 ORDER BY sop_uid",
                )
                .map_err(self.err())?;
            let mut h = Sha256::new();
            let mut n = 0;
            let mut q = st.query([&id]).map_err(self.err())?;
            while let Some(r) = q.next().map_err(self.err())? {
                let (u, s): (String, String) =
                    (r.get(0).map_err(self.err())?, r.get(1).map_err(self.err())?);
                h.update(format!("{u}\t{s}\n").as_bytes());
                n += 1;
            }
            out.push(Batch {
                id,
                key,
                first_at,
                instances: n,
                content_hash: hex(&h.finalize()),
            });
        }
        Ok(out)
    }

    /// A job that already has (or is getting) results for this content.
    pub fn same_content(&self, series_uid: &str, hash: &str) -> Result<Option<String>, Error> {
        self.lock()
            .query_row(
                "SELECT id FROM jobs WHERE series_uid = ?1 AND content_hash = ?2 AND state != ?3
                 ORDER BY queued_at LIMIT 1",
                params![series_uid, hash, FAILED],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Closes a batch; with `job`, queues it in the same transaction.
    pub fn close_batch(&self, batch_id: &str, job: Option<&NewJob>) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        tx.execute("UPDATE batches SET open = 0 WHERE id = ?1", [batch_id])
            .map_err(self.err())?;
        if let Some(j) = job {
            insert_job(&tx, j).map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
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
                [QUEUED],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let Some(id) = id else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET state = ?2, attempts = attempts + 1, started_at = ?3 WHERE id = ?1",
            params![id, RUNNING, now()],
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

    /// Inference finished: `delivering` to `destinations` (or `done` when
    /// there is nothing to send).
    pub fn inferred(
        &self,
        id: &str,
        inference_s: f64,
        lesions: usize,
        destinations: &[String],
    ) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let t = now();
        let state = if destinations.is_empty() {
            DONE
        } else {
            DELIVERING
        };
        tx.execute(
            "UPDATE jobs SET state = ?2, pid = NULL, inferred_at = ?3, inference_s = ?4, lesions = ?5,
             finished_at = CASE WHEN ?2 = 'done' THEN ?3 ELSE NULL END, error = NULL WHERE id = ?1",
            params![id, state, t, inference_s, lesions as i64],
        )
        .map_err(self.err())?;
        for d in destinations {
            tx.execute(
                "INSERT OR IGNORE INTO deliveries(job_id, destination, state, next_at) VALUES (?1, ?2, 'pending', ?3)",
                params![id, d, t],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    pub fn fail(&self, id: &str, error: &str) -> Result<(), Error> {
        self.lock()
            .execute(
                "UPDATE jobs SET state = ?2, pid = NULL, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![id, FAILED, now(), error],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Pending deliveries whose time has come.
    pub fn due_deliveries(&self) -> Result<Vec<Delivery>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at"
            ))
            .map_err(self.err())?;
        let v = st
            .query_map([now()], delivery_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err());
        v
    }

    /// Records one delivery attempt; when no delivery of the job is pending
    /// any more, the job is `done` (or `failed`, naming the destinations
    /// that never took it).
    pub fn delivery_attempt(
        &self,
        d: &Delivery,
        result: Result<(), String>,
        max_attempts: u32,
        backoff_s: f64,
        backoff_max_s: f64,
    ) -> Result<(), Error> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(self.err())?;
        let t = now();
        let attempts = d.attempts + 1;
        match &result {
            Ok(()) => tx.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = ?3, delivered_at = ?4, error = NULL
                 WHERE job_id = ?1 AND destination = ?2",
                params![d.job_id, d.destination, attempts, t],
            ),
            Err(e) => {
                let state = if attempts as u32 >= max_attempts { "failed" } else { "pending" };
                let wait = (backoff_s * 2f64.powi(attempts as i32 - 1)).min(backoff_max_s);
                tx.execute(
                    "UPDATE deliveries SET state = ?3, attempts = ?4, next_at = ?5, error = ?6
                     WHERE job_id = ?1 AND destination = ?2",
                    params![d.job_id, d.destination, state, attempts, t + wait, e],
                )
            }
        }
        .map_err(self.err())?;
        let pending: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE job_id = ?1 AND state = 'pending'",
                [&d.job_id],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        if pending == 0 {
            let failed: Vec<String> = {
                let mut st = tx
                    .prepare(
                        "SELECT destination FROM deliveries WHERE job_id = ?1 AND state = 'failed'",
                    )
                    .map_err(self.err())?;
                let v = st
                    .query_map([&d.job_id], |r| r.get(0))
                    .map_err(self.err())?
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(self.err())?;
                v
            };
            let (state, error) = if failed.is_empty() {
                (DONE, None)
            } else {
                (
                    FAILED,
                    Some(format!("not delivered to {}", failed.join(", "))),
                )
            };
            tx.execute(
                "UPDATE jobs SET state = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![d.job_id, state, t, error],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
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

    pub fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, Error> {
        let c = self.lock();
        let mut st = c
            .prepare(&format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE job_id = ?1 ORDER BY destination"
            ))
            .map_err(self.err())?;
        let v = st
            .query_map([id], delivery_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err());
        v
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
                params![hash, FAILED],
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
  finished_at, inference_s, lesions, error";
const DELIVERY_COLS: &str = "job_id, destination, state, attempts, next_at, delivered_at, error";

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
    })
}

fn delivery_row(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        job_id: r.get(0)?,
        destination: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get(3)?,
        next_at: r.get(4)?,
        delivered_at: r.get(5)?,
        error: r.get(6)?,
    })
}

fn insert_job(c: &Connection, j: &NewJob) -> rusqlite::Result<usize> {
    // The UID root of the job's RT Structure Set: fixed when the job is
    // queued, so a job re-run after a crash sends the same SOP Instance UID
    // and receivers see one object, not two.
    let uid_root = delineate_dicom::build::new_uid();
    c.execute(
        "INSERT INTO jobs(id, source, series_uid, study_uid, calling_ae, content_hash, input,
           input_kind, uid_root, instances, state, received_at, queued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
            QUEUED,
            j.received_at,
            now()
        ],
    )
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
