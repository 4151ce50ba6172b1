//! The audit log: one JSON object per line in `audit.jsonl` — who sent
//! what, when, what was returned, how long it took. Identifiers only (AE
//! titles, UIDs, job ids, addresses): patient names and IDs never appear,
//! here or in the tracing log.
//!
//! Append-only with a hash chain: every line carries `prev`, the SHA-256 of
//! the line before it (`genesis` for the first), so that changing or
//! deleting a line breaks the chain at the next one (`delineate audit
//! verify`). The chain cannot see the last lines cut off; `verify` prints
//! the head hash, which an operator can record elsewhere to close that gap.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::Error;

/// `prev` of the first line.
pub const GENESIS: &str = "genesis";

struct Tail {
    file: std::fs::File,
    /// SHA-256 (hex) of the last line written.
    head: String,
}

pub struct Audit {
    tail: Mutex<Tail>,
}

fn line_hash(line: &str) -> String {
    crate::queue::hex(&Sha256::digest(line.as_bytes()))
}

/// What an audit entry records (its `event` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditEvent {
    Association,
    AssociationRejected,
    JobFailed,
    JobInferred,
    JobQueued,
    JobRequeued,
    JobRetry,
    JobStarted,
    JobSuperseded,
    Purged,
    ReviewDecisions,
    ReviewExport,
    SeriesDuplicate,
    SeriesIncomplete,
    SeriesSkipped,
    SeriesWaiting,
    ServiceStarted,
    ServiceStopped,
    UploadRefused,
    Delivered,
    DeliveryFailed,
}

impl AuditEvent {
    /// The name written into the log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Association => "association",
            AuditEvent::AssociationRejected => "association_rejected",
            AuditEvent::JobFailed => "job_failed",
            AuditEvent::JobInferred => "job_inferred",
            AuditEvent::JobQueued => "job_queued",
            AuditEvent::JobRequeued => "job_requeued",
            AuditEvent::JobRetry => "job_retry",
            AuditEvent::JobStarted => "job_started",
            AuditEvent::JobSuperseded => "job_superseded",
            AuditEvent::Purged => "purged",
            AuditEvent::ReviewDecisions => "review_decisions",
            AuditEvent::ReviewExport => "review_export",
            AuditEvent::SeriesDuplicate => "series_duplicate",
            AuditEvent::SeriesIncomplete => "series_incomplete",
            AuditEvent::SeriesSkipped => "series_skipped",
            AuditEvent::SeriesWaiting => "series_waiting",
            AuditEvent::ServiceStarted => "service_started",
            AuditEvent::ServiceStopped => "service_stopped",
            AuditEvent::UploadRefused => "upload_refused",
            AuditEvent::Delivered => "delivered",
            AuditEvent::DeliveryFailed => "delivery_failed",
        }
    }
}

impl Audit {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let head = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .last()
                .map_or_else(|| GENESIS.to_string(), |l| line_hash(&l)),
            Err(_) => GENESIS.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, "open for appending", e))?;
        crate::durable::private(path, false)?;
        Ok(Self {
            tail: Mutex::new(Tail { file, head }),
        })
    }

    /// Appends `{"time": ..., "event": event, ...fields, "prev": ...}` and
    /// flushes it to disk (an audit entry that a crash can lose is not an
    /// audit entry).
    pub fn event(&self, event: AuditEvent, fields: serde_json::Value) {
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), rfc3339_now().into());
        obj.insert("event".into(), event.as_str().into());
        if let serde_json::Value::Object(m) = fields {
            obj.extend(m);
        }
        let mut t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        obj.insert("prev".into(), t.head.clone().into());
        let line = serde_json::Value::Object(obj).to_string();
        let bytes = line.clone() + "\n";
        match t
            .file
            .write_all(bytes.as_bytes())
            .and_then(|_| t.file.sync_data())
        {
            Ok(()) => t.head = line_hash(&line),
            Err(e) => tracing::error!("cannot write the audit log: {e}"),
        }
        drop(t);
        tracing::info!(target: "audit", "{line}");
    }
}

/// What `verify` found.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub lines: usize,
    /// SHA-256 of the last line.
    pub head: String,
}

/// Checks the chain of an audit log: every line is JSON whose `prev` is
/// the hash of the line before. The error names the first line where the
/// chain breaks.
pub fn verify(path: &Path) -> Result<Verified, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut head = GENESIS.to_string();
    let mut n = 0;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            format!(
                "{}: line {}: not JSON ({e}): the log was edited",
                path.display(),
                i + 1
            )
        })?;
        let prev = v["prev"].as_str().unwrap_or_default();
        if prev != head {
            return Err(format!(
                "{}: line {}: the chain breaks here: its prev is {prev:?} but line {} hashes to {head:?} \
                 (line {} was changed, or lines between were removed or inserted)",
                path.display(),
                i + 1,
                i,
                i
            ));
        }
        head = line_hash(&line);
        n += 1;
    }
    Ok(Verified { lines: n, head })
}

/// UTC time as RFC 3339 with milliseconds (one format, no time-zone
/// database needed).
pub fn rfc3339_now() -> String {
    rfc3339(crate::queue::now())
}

pub fn rfc3339(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let ms = ((unix - secs as f64) * 1000.0).floor() as i64;
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = delineate_dicom::build::civil_from_days(secs.div_euclid(86_400));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_removed_line_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        {
            let a = Audit::open(&p).unwrap();
            for n in 0..5 {
                a.event(AuditEvent::JobQueued, serde_json::json!({"n": n}));
            }
        }
        // Reopened: the chain continues.
        Audit::open(&p)
            .unwrap()
            .event(AuditEvent::JobQueued, serde_json::json!({"n": 5}));
        let v = verify(&p).unwrap();
        assert_eq!(v.lines, 6);
        let text = std::fs::read_to_string(&p).unwrap();
        let edited = text.replacen("\"n\":2", "\"n\":7", 1);
        std::fs::write(&p, &edited).unwrap();
        let e = verify(&p).unwrap_err();
        assert!(e.contains("line 4: the chain breaks"), "{e}");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        assert!(verify(&p).unwrap_err().contains("line 2"));
    }

    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(super::rfc3339(1_795_745_040.0), "2026-11-27T02:04:00.000Z");
    }
}
