//! The states of a job, as a type with its SQL mapping.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// Results are on their way to the destinations.
    Delivering,
    /// Inferred; the destinations wait for a person's review.
    AwaitingReview,
    /// A reviewed export was made (and delivered where asked).
    Reviewed,
    Done,
    Failed,
    /// A later job on more of the same series replaced this one.
    Superseded,
}

impl JobState {
    /// Every state, in the order of a job's life (what `/metrics` counts).
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Running,
        JobState::Delivering,
        JobState::AwaitingReview,
        JobState::Reviewed,
        JobState::Done,
        JobState::Failed,
        JobState::Superseded,
    ];

    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Delivering => "delivering",
            JobState::AwaitingReview => "awaiting_review",
            JobState::Reviewed => "reviewed",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Superseded => "superseded",
        }
    }

    /// The state with this stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the job has no result yet.
    pub fn before_result(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        Self::parse(s).ok_or_else(|| FromSqlError::Other(format!("unknown job state {s:?}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_sql_and_json() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute("CREATE TABLE t (s TEXT)", []).unwrap();
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
            c.execute("DELETE FROM t", []).unwrap();
            c.execute("INSERT INTO t VALUES (?1)", [s]).unwrap();
            let back: JobState = c.query_row("SELECT s FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(back, s);
        }
        c.execute("UPDATE t SET s = 'lost'", []).unwrap();
        let e = c
            .query_row("SELECT s FROM t", [], |r| r.get::<_, JobState>(0))
            .unwrap_err();
        assert!(e.to_string().contains("unknown job state"), "{e}");
    }
}
