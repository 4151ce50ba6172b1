#![allow(clippy::unwrap_used)]
//! The job state machine, transition by transition, on an in-memory SQLite
//! database: what each step of a job's life leaves it in, and the attempt
//! cap across restarts.

use std::path::{Path, PathBuf};

use delineate_service::queue::{now, Inferred, JobState, NewJob, Queue, SeriesKey};

fn queue() -> Queue {
    Queue::open(Path::new(":memory:")).unwrap()
}

fn add(q: &Queue, id: &str) {
    let key = SeriesKey {
        series_uid: format!("1.2.840.{}", id.len()),
        modality: "MR".into(),
        ..Default::default()
    };
    q.insert_job(&NewJob {
        id,
        source: "dicom",
        key: &key,
        content_hash: id,
        input: Path::new("/nonexistent"),
        input_kind: "dicom",
        instances: 1,
        received_at: now(),
        supersedes: None,
    })
    .unwrap();
}

fn state(q: &Queue, id: &str) -> JobState {
    q.job(id).unwrap().unwrap().state
}

fn inferred(lesions: usize, rtstruct: bool, deliver: bool, review: bool) -> Inferred {
    Inferred {
        inference_s: 1.0,
        lesions,
        rtstruct,
        warnings: vec![],
        deliveries: if deliver {
            vec![(
                "PACS".into(),
                PathBuf::from("/r/rtstruct.dcm"),
                "2.25.1".into(),
            )]
        } else {
            vec![]
        },
        review_required: review,
    }
}

/// Claims `id` (the only queued job) and records its inference.
fn run(q: &Queue, id: &str, r: &Inferred) -> JobState {
    let j = q.claim().unwrap().unwrap();
    assert_eq!((j.id.as_str(), j.state), (id, JobState::Running));
    assert_eq!(state(q, id), JobState::Running);
    q.inferred(id, r).unwrap()
}

#[test]
fn a_job_rests_where_its_result_and_the_review_rule_put_it() {
    let q = queue();
    // After review (the default): a structure set waits for a person.
    add(&q, "a");
    assert_eq!(state(&q, "a"), JobState::Queued);
    assert_eq!(
        run(&q, "a", &inferred(2, true, false, true)),
        JobState::AwaitingReview
    );
    assert_eq!(state(&q, "a"), JobState::AwaitingReview);
    // Nothing found: nothing to review, the job is done.
    add(&q, "bb");
    assert_eq!(
        run(&q, "bb", &inferred(0, false, false, true)),
        JobState::Done
    );
    // Immediate delivery: delivering until the destination has it.
    add(&q, "ccc");
    assert_eq!(
        run(&q, "ccc", &inferred(1, true, true, false)),
        JobState::Delivering
    );
    let due = q.due_deliveries().unwrap();
    assert_eq!(due.len(), 1);
    q.delivery_attempt(&due[0], Ok(()), 3, (0.0, 0.0), false)
        .unwrap();
    assert_eq!(state(&q, "ccc"), JobState::Done);
    assert!(q.job("ccc").unwrap().unwrap().error.is_none());
}

#[test]
fn a_destination_that_never_takes_it_fails_the_job_naming_it() {
    let q = queue();
    add(&q, "a");
    assert_eq!(
        run(&q, "a", &inferred(1, true, true, false)),
        JobState::Delivering
    );
    for attempt in 1..=2 {
        let due = q.due_deliveries().unwrap();
        assert_eq!(due.len(), 1, "attempt {attempt}");
        q.delivery_attempt(&due[0], Err("refused".into()), 2, (0.0, 0.0), false)
            .unwrap();
    }
    let j = q.job("a").unwrap().unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().contains("PACS"));
    assert!(q.due_deliveries().unwrap().is_empty());
}

#[test]
fn a_crash_requeues_and_a_failure_is_final() {
    let q = queue();
    add(&q, "a");
    q.claim().unwrap().unwrap();
    q.retry("a", "killed").unwrap();
    assert_eq!(state(&q, "a"), JobState::Queued);
    q.claim().unwrap().unwrap();
    q.fail("a", "no series").unwrap();
    let j = q.job("a").unwrap().unwrap();
    assert_eq!(
        (j.state, j.error.as_deref()),
        (JobState::Failed, Some("no series"))
    );
    assert!(
        q.claim().unwrap().is_none(),
        "a failed job is not claimed again"
    );
}

#[test]
fn a_job_superseded_while_it_ran_delivers_nothing() {
    let q = queue();
    add(&q, "a");
    q.claim().unwrap().unwrap();
    // More of the series arrived: a later job replaces this one.
    q.lock()
        .execute("UPDATE jobs SET superseded_by = 'b' WHERE id = 'a'", [])
        .unwrap();
    assert_eq!(
        q.inferred("a", &inferred(1, true, true, false)).unwrap(),
        JobState::Superseded
    );
    assert!(q.due_deliveries().unwrap().is_empty());
    // A reviewed export moves a job to reviewed.
    add(&q, "bb");
    run(&q, "bb", &inferred(1, true, false, true));
    q.set_state("bb", JobState::Reviewed).unwrap();
    assert_eq!(state(&q, "bb"), JobState::Reviewed);
    // Every state the jobs are in is counted under its name.
    let s = q.stats().unwrap();
    for (st, n) in [(JobState::Superseded, 1), (JobState::Reviewed, 1)] {
        assert!(
            s.jobs_by_state.contains(&(st.as_str().to_string(), n)),
            "{:?}",
            s.jobs_by_state
        );
    }
}

/// A case that takes the service down every time it runs (the OOM
/// killer) is run again at most `max_attempts` times in all.
#[test]
fn a_job_running_at_every_restart_fails_after_its_attempts() {
    let q = queue();
    add(&q, "poison");
    for attempt in 1..=3 {
        let j = q.claim().unwrap().unwrap();
        assert_eq!((j.id.as_str(), j.attempts), ("poison", attempt));
        // The service dies here; at the next start:
        let r = q.recover(3).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].2, attempt < 3, "requeued after attempt {attempt}");
    }
    let j = q.job("poison").unwrap().unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().contains("3 time(s) of 3"));
    assert!(q.claim().unwrap().is_none());
    // The next case is not blocked.
    add(&q, "next-case");
    assert_eq!(q.claim().unwrap().unwrap().id, "next-case");
}
