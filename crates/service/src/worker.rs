//! The loops behind the queue: series completion and routing, inference
//! (one `delineate segment` process per job), and result delivery.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::batches::{Batch, Outcome};
use crate::completeness::{self, Completeness};
use crate::config::{Action, SeriesFacts};
use crate::deliveries::Delivery;
use crate::queue::{self, Inferred, JobState, NewJob};
use crate::{Counters, Error, Service};

/// How often the loops look for work.
const POLL: Duration = Duration::from_millis(200);

/// At start: jobs that were running when the service died are queued again,
/// and the `delineate segment` they had started (still running, orphaned)
/// is stopped.
pub fn recover(svc: &Service) -> Result<(), Error> {
    let max = svc.config.worker.max_attempts;
    for (id, pid, again) in svc.queue.recover(max)? {
        let job_dir = svc.dirs.job(&id);
        let ours = pid.is_some_and(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&*job_dir.to_string_lossy())
        });
        if let (true, Some(pid)) = (ours, pid) {
            kill(pid as u32);
        }
        if again {
            svc.audit.event(
                crate::audit::AuditEvent::JobRequeued,
                json!({"job": id, "reason": "service restarted while the job ran",
                       "orphan_stopped": ours}),
            );
        } else {
            svc.audit.event(
                crate::audit::AuditEvent::JobFailed,
                json!({"job": id, "error": format!("the service stopped while this job ran on each of its {max} attempts: not run again"),
                       "orphan_stopped": ours}),
            );
        }
    }
    Ok(())
}

fn kill(pid: u32) {
    // std has no kill(2) for a pid we do not own as a Child; the kill(1)
    // command keeps this crate free of unsafe code.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

pub fn kill_children(svc: &Service) {
    for pid in svc
        .children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        kill(pid);
    }
}

/// Closes series that have been quiet for the quiet period: routing, the
/// completeness check, the idempotency check, then a job on everything
/// received of the series.
pub fn completion_loop(svc: Arc<Service>) {
    let quiet = svc.config.node.quiet_period_s;
    let poll = Duration::from_secs_f64((quiet / 4.0).clamp(0.05, 1.0));
    // Batches already reported as waiting for missing slices.
    let mut waiting = std::collections::HashSet::new();
    while !svc.stopping() {
        match svc.queue.quiet_batches(quiet) {
            Ok(batches) => {
                for b in batches {
                    if let Err(e) = complete(&svc, b, &mut waiting) {
                        tracing::error!("series completion: {e}");
                    }
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        std::thread::sleep(poll);
    }
}

fn complete(
    svc: &Service,
    b: Batch,
    waiting: &mut std::collections::HashSet<String>,
) -> Result<(), Error> {
    let k = &b.key;
    let ids = json!({"series_uid": k.series_uid, "study_uid": k.study_uid,
        "calling_ae": k.calling_ae, "modality": k.modality, "instances": b.instances,
        "batch": b.id});
    let decision = svc.config.route(&SeriesFacts {
        modality: &k.modality,
        description: &k.description,
        calling_ae: &k.calling_ae,
        acquisition: &k.acquisition,
    });
    let dir = svc.dirs.batches.join(&b.id);
    if decision.action == Action::Skip {
        svc.queue.close_batch(&b.id, Outcome::Skipped, None)?;
        Counters::inc(&svc.counters.series_skipped);
        svc.audit.event(
            crate::audit::AuditEvent::SeriesSkipped,
            merge(
                ids,
                json!({"rule": decision.rule, "not_matched": decision.not_matched,
                       "acquisition": k.acquisition.summary()}),
            ),
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let content = svc.queue.series_content(&k.series_uid, &b.id)?;
    if let Completeness::Incomplete(why) = completeness::check(&content.geometries()) {
        let waited = queue::now() - b.last_at;
        if waited < svc.config.node.incomplete_wait_s {
            if waiting.insert(b.id.clone()) {
                svc.audit.event(
                    crate::audit::AuditEvent::SeriesWaiting,
                    merge(
                        ids,
                        json!({"reason": why, "wait_s": svc.config.node.incomplete_wait_s}),
                    ),
                );
            }
            return Ok(());
        }
        waiting.remove(&b.id);
        svc.queue.close_batch(&b.id, Outcome::Incomplete, None)?;
        Counters::inc(&svc.counters.series_incomplete);
        svc.audit.event(
            crate::audit::AuditEvent::SeriesIncomplete,
            merge(
                ids,
                json!({"reason": why, "action": "not processed: a partial volume is never contoured; \
                       the missing instances complete it if they are sent"}),
            ),
        );
        return Ok(());
    }
    waiting.remove(&b.id);
    let ids = merge(
        ids,
        json!({"series_instances": content.instances.len(), "content_hash": content.content_hash}),
    );
    if let Some(of) = svc
        .queue
        .same_content(&k.series_uid, &content.content_hash)?
    {
        svc.queue.close_batch(&b.id, Outcome::Duplicate, None)?;
        Counters::inc(&svc.counters.series_duplicate);
        svc.audit.event(
            crate::audit::AuditEvent::SeriesDuplicate,
            merge(
                ids,
                json!({"same_as_job": of, "action": "not processed again"}),
            ),
        );
        return Ok(());
    }
    let input = crate::batches::gather(&svc.dirs.batches, &dir, &content)?;
    let previous = svc.queue.latest_job(&k.series_uid)?;
    let job = NewJob {
        id: &b.id,
        source: "dicom",
        key: k,
        content_hash: &content.content_hash,
        input: &input,
        input_kind: "dicom",
        instances: content.instances.len(),
        received_at: b.first_at,
        supersedes: previous
            .as_ref()
            .map(|(id, root, rev)| (id.as_str(), root.as_str(), rev + 1)),
    };
    svc.queue.close_batch(&b.id, Outcome::Job, Some(&job))?;
    if let Some((old, _, rev)) = &previous {
        svc.audit.event(
            crate::audit::AuditEvent::JobSuperseded,
            json!({"job": old, "superseded_by": b.id, "series_uid": k.series_uid,
                   "revision": rev + 1,
                   "reason": "more of the series arrived after the earlier job was made: \
                              the whole series is processed again"}),
        );
    }
    svc.audit.event(
        crate::audit::AuditEvent::JobQueued,
        merge(
            ids,
            json!({"job": b.id, "source": "dicom", "rule": decision.rule,
                   "batches": content.batches, "supersedes": previous.map(|p| p.0)}),
        ),
    );
    Ok(())
}

pub fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Claims queued jobs one at a time and runs them.
pub fn inference_loop(svc: Arc<Service>) {
    while !svc.stopping() {
        match svc.queue.claim() {
            Ok(Some(job)) => run(&svc, &job),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                tracing::error!("{e}");
                std::thread::sleep(POLL * 5);
            }
        }
    }
}

fn run(svc: &Service, job: &queue::Job) {
    svc.audit.event(
        crate::audit::AuditEvent::JobStarted,
        json!({"job": job.id, "attempt": job.attempts, "series_uid": job.series_uid,
               "revision": job.revision}),
    );
    let t = Instant::now();
    match segment(svc, job) {
        Ok(r) => {
            let secs = t.elapsed().as_secs_f64();
            let rt = svc.dirs.job(&job.id).join("out").join("rtstruct.dcm");
            let deliveries: Vec<(String, std::path::PathBuf, String)> =
                if r.rtstruct && job.source == "dicom" {
                    let uid = crate::scu::instance_uid(&rt).unwrap_or_default();
                    svc.config
                        .immediate_destinations()
                        .map(|d| (d.name.clone(), rt.clone(), uid.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
            let dests: Vec<&String> = deliveries.iter().map(|d| &d.0).collect();
            let inferred = Inferred {
                inference_s: secs,
                lesions: r.lesions,
                rtstruct: r.rtstruct,
                warnings: r.warnings.clone(),
                deliveries: deliveries.clone(),
                review_required: svc.config.review_required(),
            };
            let state = svc
                .queue
                .inferred(&job.id, &inferred)
                .map(JobState::as_str)
                .unwrap_or_else(|e| {
                    tracing::error!("{e}");
                    "unknown"
                });
            svc.audit.event(
                crate::audit::AuditEvent::JobInferred,
                json!({"job": job.id, "lesions": r.lesions, "rtstruct": r.rtstruct,
                       "inference_s": secs, "deliver_to": dests, "state": state,
                       "warnings": r.warnings}),
            );
        }
        Err(e) => {
            if svc.stopping() {
                // Killed by our own shutdown: it runs again at the next start.
                return;
            }
            let max = i64::from(svc.config.worker.max_attempts);
            if e.crashed && job.attempts < max {
                let _ = svc.queue.retry(&job.id, &e.message);
                svc.audit.event(
                    crate::audit::AuditEvent::JobRetry,
                    json!({"job": job.id, "attempt": job.attempts, "max_attempts": max,
                           "error": e.message}),
                );
                return;
            }
            let error = if e.crashed {
                format!("{} (crashed on each of {max} attempts)", e.message)
            } else {
                e.message
            };
            let _ = svc.queue.fail(&job.id, &error);
            svc.audit.event(
                crate::audit::AuditEvent::JobFailed,
                json!({"job": job.id, "error": error, "attempts": job.attempts}),
            );
        }
    }
    crate::durable::private_tree(&svc.dirs.job(&job.id));
}

/// Why a run failed: a clean error (bad input: the same every time) or a
/// crash (a signal: out of memory, a fault), which may succeed again.
struct RunError {
    message: String,
    crashed: bool,
}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        RunError {
            message,
            crashed: false,
        }
    }
}

/// What one `delineate segment` run produced.
struct SegmentRun {
    lesions: usize,
    rtstruct: bool,
    warnings: Vec<String>,
}

/// Runs `delineate segment` for the job.
fn segment(svc: &Service, job: &queue::Job) -> Result<SegmentRun, RunError> {
    let dir = svc.dirs.job(&job.id);
    let out = dir.join("out");
    // A half-finished earlier attempt leaves nothing behind to be mistaken
    // for this one's results.
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::durable::private(&dir, true).map_err(|e| e.to_string())?;
    let w = &svc.config.worker;
    let mut cmd = match w.memory_limit_mib {
        // prlimit(1) (util-linux) sets the limit in the child before it
        // runs delineate, which keeps this crate free of unsafe pre_exec.
        Some(mib) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--as={}", mib * 1024 * 1024))
                .arg("--")
                .arg(&svc.exe);
            c
        }
        None => Command::new(&svc.exe),
    };
    cmd.arg("segment")
        .arg(&job.input)
        .arg("--out")
        .arg(&out)
        .args(["--uid-root", &job.uid_root])
        .args(["--revision", &job.revision.to_string()]);
    if let Some(m) = &w.model {
        cmd.arg("--model").arg(m);
    }
    if let Some(t) = w.threshold {
        cmd.args(["--threshold", &t.to_string()]);
    }
    if w.tta {
        cmd.arg("--tta");
    }
    if job.input_kind == "nifti" {
        cmd.arg("--dicom-out");
    }
    cmd.args(&w.segment_args);
    let log_path = dir.join("segment.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    crate::durable::private(&log_path, false).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .env("RAYON_NUM_THREADS", rayon_threads(svc))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", svc.exe.display()))?;

    let pid = child.id();
    svc.children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(pid);
    let _ = svc.queue.set_pid(&job.id, Some(pid));
    let status = child.wait();
    svc.children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
    let status = status.map_err(|e| e.to_string())?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
        let oom = log.contains("memory allocation of") || log.contains("out of memory");
        return Err(RunError {
            message: format!(
                "delineate segment failed ({status}): {}",
                if oom {
                    "out of memory (worker.memory_limit_mib, or the machine's)"
                } else {
                    last.last().copied().unwrap_or("see segment.log")
                }
            ),
            crashed: status.signal().is_some() || oom,
        });
    }
    let (lesions, warnings) = read_lesions(&out.join("lesions.json"))?;
    Ok(SegmentRun {
        lesions,
        rtstruct: out.join("rtstruct.dcm").is_file(),
        warnings,
    })
}

/// Threads for one job's inference: all cores when one worker runs, an
/// equal share otherwise.
fn rayon_threads(svc: &Service) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / svc.config.worker.workers).max(1).to_string()
}

/// The number of delivered lesions and the warnings in `lesions.json`.
fn read_lesions(path: &Path) -> Result<(usize, Vec<String>), String> {
    let m = delineate_dicom::ResultManifest::read(path).map_err(|e| e.to_string())?;
    Ok((m.lesions.len(), m.warnings))
}

/// Sends RT Structure Sets whose time has come, with exponential backoff
/// between attempts.
pub fn delivery_loop(svc: Arc<Service>) {
    while !svc.stopping() {
        let due = match svc.queue.due_deliveries() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}");
                Vec::new()
            }
        };
        if due.is_empty() {
            std::thread::sleep(POLL);
            continue;
        }
        for d in due {
            deliver(&svc, &d);
        }
    }
}

fn deliver(svc: &Service, d: &Delivery) {
    let rt = d.path.as_ref().map_or_else(
        || svc.dirs.job(&d.job_id).join("out").join("rtstruct.dcm"),
        std::path::PathBuf::from,
    );
    let dest = svc
        .config
        .destinations
        .iter()
        .find(|x| x.name == d.destination);
    let t = Instant::now();
    let result = match dest {
        Some(dest) => crate::scu::store(dest, &svc.config.node.ae_title, &rt),
        None => Err(format!(
            "destination {:?} is no longer in the configuration",
            d.destination
        )),
    };
    let c = &svc.config.delivery;
    let attempts = if dest.is_none() { 1 } else { c.attempts };
    let ok = result.is_ok();
    let fields = json!({"job": d.job_id, "destination": d.destination, "object": d.object,
        "attempt": d.attempts + 1, "seconds": t.elapsed().as_secs_f64(),
        "rtstruct_uid": crate::scu::instance_uid(&rt)});
    match &result {
        Ok(()) => svc.audit.event(crate::audit::AuditEvent::Delivered, fields),
        Err(e) => svc.audit.event(
            crate::audit::AuditEvent::DeliveryFailed,
            merge(fields, json!({"error": e})),
        ),
    }
    if let Err(e) = svc.queue.delivery_attempt(
        d,
        result,
        attempts,
        (c.backoff_s, c.backoff_max_s),
        svc.config.review_required(),
    ) {
        tracing::error!("{e}");
    }
    if ok {
        tracing::info!(job = %d.job_id, destination = %d.destination, object = %d.object, "delivered");
    }
}

/// Deletes received series and results older than
/// `storage.retention_days` (patient data is kept no longer than the
/// hospital's policy says), each purge in the audit log.
pub fn purge_loop(svc: Arc<Service>) {
    let Some(days) = svc.config.storage.retention_days else {
        return;
    };
    let keep_s = days * 86_400.0;
    let poll = Duration::from_secs_f64((keep_s / 10.0).clamp(0.5, 600.0));
    while !svc.stopping() {
        match svc.queue.expired(queue::now() - keep_s) {
            Ok((jobs, batches)) => {
                for id in jobs {
                    let dir = svc.dirs.job(&id);
                    let input = svc.dirs.batches.join(&id);
                    let mut bytes = 0u64;
                    for d in [&dir, &input] {
                        bytes += dir_bytes(d);
                        let _ = std::fs::remove_dir_all(d);
                    }
                    if svc.queue.mark_purged(&id).is_ok() {
                        svc.audit.event(
                            crate::audit::AuditEvent::Purged,
                            json!({"job": id, "bytes": bytes, "retention_days": days}),
                        );
                    }
                }
                for b in batches {
                    let d = svc.dirs.batches.join(&b);
                    if d.exists() {
                        let bytes = dir_bytes(&d);
                        if std::fs::remove_dir_all(&d).is_ok() {
                            svc.audit.event(
                                crate::audit::AuditEvent::Purged,
                                json!({"batch": b, "bytes": bytes, "retention_days": days}),
                            );
                        }
                    }
                }
            }
            Err(e) => tracing::error!("retention: {e}"),
        }
        std::thread::sleep(poll);
    }
}

fn dir_bytes(d: &Path) -> u64 {
    walkdir::WalkDir::new(d)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
