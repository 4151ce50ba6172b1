//! The loops behind the queue: series completion and routing, inference
//! (one `delineate segment` process per job), and result delivery.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{Action, SeriesFacts};
use crate::queue::{self, NewJob};
use crate::{Counters, Error, Service};

/// How often the loops look for work.
const POLL: Duration = Duration::from_millis(200);

/// At start: jobs that were running when the service died are queued again,
/// and the `delineate segment` they had started (still running, orphaned)
/// is stopped.
pub fn recover(svc: &Service) -> Result<(), Error> {
    for (id, pid) in svc.queue.recover()? {
        let job_dir = svc.dirs.job(&id);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*job_dir.to_string_lossy());
        if ours {
            kill(pid as u32);
        }
        svc.audit.event(
            "job_requeued",
            json!({"job": id, "reason": "service restarted while the job ran",
                   "orphan_stopped": ours}),
        );
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
/// idempotency check, then a job.
pub fn completion_loop(svc: Arc<Service>) {
    let quiet = svc.config.node.quiet_period_s;
    let poll = Duration::from_secs_f64((quiet / 4.0).clamp(0.05, 1.0));
    while !svc.stopping() {
        match svc.queue.quiet_batches(quiet) {
            Ok(batches) => {
                for b in batches {
                    if let Err(e) = complete(&svc, b) {
                        tracing::error!("series completion: {e}");
                    }
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        std::thread::sleep(poll);
    }
}

fn complete(svc: &Service, b: queue::Batch) -> Result<(), Error> {
    let k = &b.key;
    let ids = json!({"series_uid": k.series_uid, "study_uid": k.study_uid,
        "calling_ae": k.calling_ae, "modality": k.modality, "instances": b.instances,
        "content_hash": b.content_hash, "batch": b.id});
    let decision = svc.config.route(&SeriesFacts {
        modality: &k.modality,
        description: &k.description,
        calling_ae: &k.calling_ae,
    });
    let dir = svc.dirs.batches.join(&b.id);
    if decision.action == Action::Skip {
        svc.queue.close_batch(&b.id, None)?;
        Counters::inc(&svc.counters.series_skipped);
        svc.audit.event(
            "series_skipped",
            merge(ids, json!({"rule": decision.reason})),
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    if let Some(of) = svc.queue.same_content(&k.series_uid, &b.content_hash)? {
        svc.queue.close_batch(&b.id, None)?;
        Counters::inc(&svc.counters.series_duplicate);
        svc.audit.event(
            "series_duplicate",
            merge(
                ids,
                json!({"same_as_job": of, "action": "not processed again"}),
            ),
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let job = NewJob {
        id: &b.id,
        source: "dicom",
        key: k,
        content_hash: &b.content_hash,
        input: &dir,
        input_kind: "dicom",
        instances: b.instances,
        received_at: b.first_at,
    };
    svc.queue.close_batch(&b.id, Some(&job))?;
    svc.audit.event(
        "job_queued",
        merge(
            ids,
            json!({"job": b.id, "source": "dicom", "rule": decision.reason}),
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
        "job_started",
        json!({"job": job.id, "attempt": job.attempts, "series_uid": job.series_uid}),
    );
    let t = Instant::now();
    match segment(svc, job) {
        Ok((lesions, has_rt)) => {
            let secs = t.elapsed().as_secs_f64();
            let dests: Vec<String> = if has_rt && job.source == "dicom" {
                svc.config
                    .destinations
                    .iter()
                    .map(|d| d.name.clone())
                    .collect()
            } else {
                Vec::new()
            };
            if let Err(e) = svc.queue.inferred(&job.id, secs, lesions, &dests) {
                tracing::error!("{e}");
            }
            svc.audit.event(
                "job_inferred",
                json!({"job": job.id, "lesions": lesions, "rtstruct": has_rt,
                       "inference_s": secs, "deliver_to": dests}),
            );
        }
        Err(e) => {
            if svc.stopping() {
                // Killed by our own shutdown: it runs again at the next start.
                return;
            }
            let _ = svc.queue.fail(&job.id, &e);
            svc.audit
                .event("job_failed", json!({"job": job.id, "error": e}));
        }
    }
}

/// Runs `delineate segment` for the job; returns (lesions, RTSTRUCT written).
fn segment(svc: &Service, job: &queue::Job) -> Result<(usize, bool), String> {
    let dir = svc.dirs.job(&job.id);
    let out = dir.join("out");
    // A half-finished earlier attempt leaves nothing behind to be mistaken
    // for this one's results.
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let w = &svc.config.worker;
    let mut cmd = Command::new(&svc.exe);
    cmd.arg("segment")
        .arg(&job.input)
        .arg("--out")
        .arg(&out)
        .args(["--uid-root", &job.uid_root]);
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
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
        return Err(format!(
            "delineate segment failed ({status}): {}",
            last.last().copied().unwrap_or("see segment.log")
        ));
    }
    let lesions = read_lesions(&out.join("lesions.json"))?;
    Ok((lesions, out.join("rtstruct.dcm").is_file()))
}

/// Threads for one job's inference: all cores when one worker runs, an
/// equal share otherwise.
fn rayon_threads(svc: &Service) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / svc.config.worker.workers).max(1).to_string()
}

fn read_lesions(path: &Path) -> Result<usize, String> {
    let v: serde_json::Value = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("{}: missing or not JSON", path.display()))?;
    Ok(v["lesions"].as_array().map_or(0, |a| a.len()))
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

fn deliver(svc: &Service, d: &queue::Delivery) {
    let rt = svc.dirs.job(&d.job_id).join("out").join("rtstruct.dcm");
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
    let fields = json!({"job": d.job_id, "destination": d.destination,
        "attempt": d.attempts + 1, "seconds": t.elapsed().as_secs_f64(),
        "rtstruct_uid": crate::scu::instance_uid(&rt)});
    match &result {
        Ok(()) => svc.audit.event("delivered", fields),
        Err(e) => svc
            .audit
            .event("delivery_failed", merge(fields, json!({"error": e}))),
    }
    if let Err(e) = svc
        .queue
        .delivery_attempt(d, result, attempts, c.backoff_s, c.backoff_max_s)
    {
        tracing::error!("{e}");
    }
    if ok {
        tracing::info!(job = %d.job_id, destination = %d.destination, "delivered");
    }
}
