//! The audit log: one JSON object per line in `audit.jsonl` — who sent
//! what, when, what was returned, how long it took. Identifiers only (AE
//! titles, UIDs, job ids, addresses): patient names and IDs never appear,
//! here or in the tracing log.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::Error;

pub struct Audit {
    file: Mutex<std::fs::File>,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends `{"time": ..., "event": event, ...fields}` and flushes it to
    /// disk (an audit entry that a crash can lose is not an audit entry).
    pub fn event(&self, event: &str, fields: serde_json::Value) {
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), rfc3339_now().into());
        obj.insert("event".into(), event.into());
        if let serde_json::Value::Object(m) = fields {
            obj.extend(m);
        }
        let line = serde_json::Value::Object(obj).to_string() + "\n";
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.sync_data()) {
            tracing::error!("cannot write the audit log: {e}");
        }
        tracing::info!(target: "audit", "{}", line.trim_end());
    }
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
    #[test]
    fn dates() {
        assert_eq!(super::rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(super::rfc3339(1_795_745_040.0), "2026-11-27T02:04:00.000Z");
    }
}
