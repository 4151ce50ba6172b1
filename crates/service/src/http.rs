//! The HTTP API (axum). Every route but `/healthz` needs
//! `Authorization: Bearer <token>`.
//!
//! - `POST /v1/studies`: a zip of one DICOM series, or a NIfTI file
//!   (`.nii`/`.nii.gz` bytes); answers `202 {"job": id}`, or `200` with the
//!   existing job when the same bytes were already uploaded.
//! - `GET /v1/jobs`, `GET /v1/jobs/{id}`: state, stage timings, deliveries.
//! - `GET /v1/jobs/{id}/rtstruct`, `/mask`, `/lesions`: the results.
//! - `GET /healthz`, `GET /metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::queue::{self, NewJob, SeriesKey};
use crate::{Counters, Service};

type Svc = Arc<Service>;

/// A JSON error body with a status.
fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

pub fn router(svc: Svc) -> Router {
    let limit = (svc.config.http.max_upload_mib * 1024 * 1024) as usize;
    let api = Router::new()
        .route("/v1/studies", post(upload))
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/{file}", get(result_file))
        .route("/metrics", get(crate::http::metrics))
        .route_layer(middleware::from_fn_with_state(svc.clone(), auth));
    let review = crate::review_http::router(Arc::new(crate::review::ReviewApp {
        token: svc.config.bearer().to_string(),
        cases: crate::review::Cases::Jobs(Default::default()),
        audit: svc.audit.clone(),
        service: Some(svc.clone()),
    }));
    Router::new()
        .route("/healthz", get(health))
        .merge(api)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(svc)
        .merge(review)
}

pub async fn serve(svc: Svc, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let app = router(svc);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    Ok(())
}

pub async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// Constant-time comparison, so response timing does not leak the token.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries `Authorization: Bearer <token>`.
pub fn has_bearer(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()))
}

/// 401 with a JSON reason and the WWW-Authenticate challenge.
pub fn unauthorized(msg: &str) -> Response {
    let mut r = err(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

async fn auth(State(svc): State<Svc>, req: Request, next: Next) -> Response {
    if has_bearer(req.headers(), svc.config.bearer()) {
        next.run(req).await
    } else {
        Counters::inc(&svc.counters.http_unauthorized);
        unauthorized("missing or wrong bearer token")
    }
}

async fn health(State(svc): State<Svc>) -> Response {
    match svc.queue.stats() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn upload(
    State(svc): State<Svc>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let s = svc.clone();
    let r = tokio::task::spawn_blocking(move || accept_upload(&s, &peer.to_string(), &body)).await;
    match r {
        Ok(Ok((status, v))) => {
            Counters::inc(&svc.counters.uploads);
            (status, Json(v)).into_response()
        }
        Ok(Err((status, msg))) => {
            Counters::inc(&svc.counters.uploads_refused);
            svc.audit.event(
                "upload_refused",
                json!({"peer": peer.to_string(), "bytes": 0, "reason": msg}),
            );
            err(status, msg)
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

type Refusal = (StatusCode, String);

fn accept_upload(
    svc: &Service,
    peer: &str,
    body: &[u8],
) -> Result<(StatusCode, serde_json::Value), Refusal> {
    let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let hash = queue::hex(&Sha256::digest(body));
    if let Some(id) = svc
        .queue
        .upload_with_hash(&hash)
        .map_err(|e| internal(e.to_string()))?
    {
        return Ok((StatusCode::OK, json!({"job": id, "duplicate": true})));
    }
    let id = queue::new_id();
    let dir = svc.dirs.job(&id);
    let input = dir.join("input");
    let staging = tempfile::Builder::new()
        .prefix(".upload-")
        .tempdir_in(&svc.dirs.jobs)
        .map_err(|e| internal(e.to_string()))?;
    let (kind, key, path) = if body.starts_with(b"PK\x03\x04") {
        let n = unzip(body, staging.path(), 4 * body.len().max(1 << 20))?;
        let key = first_series(staging.path(), peer)?;
        (format!("dicom ({n} files)"), key, input.clone())
    } else if is_nifti(body) {
        let name = if body.starts_with(&[0x1f, 0x8b]) {
            "image.nii.gz"
        } else {
            "image.nii"
        };
        crate::durable::write(&staging.path().join(name), body)
            .map_err(|e| internal(e.to_string()))?;
        let key = SeriesKey {
            series_uid: String::new(),
            study_uid: String::new(),
            modality: "MR".into(),
            description: String::new(),
            calling_ae: format!("http {peer}"),
        };
        ("nifti".to_string(), key, input.join(name))
    } else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body is neither a zip of a DICOM series nor a NIfTI file (.nii or .nii.gz)".into(),
        ));
    };
    std::fs::create_dir_all(&dir).map_err(|e| internal(e.to_string()))?;
    std::fs::rename(staging.keep(), &input).map_err(|e| internal(e.to_string()))?;
    crate::durable::sync_dir(&dir).map_err(|e| internal(e.to_string()))?;
    let input_kind = if kind == "nifti" { "nifti" } else { "dicom" };
    svc.queue
        .insert_job(&NewJob {
            id: &id,
            source: "http",
            key: &key,
            content_hash: &hash,
            input: &path,
            input_kind,
            instances: 0,
            received_at: queue::now(),
        })
        .map_err(|e| internal(e.to_string()))?;
    svc.audit.event(
        "job_queued",
        json!({"job": id, "source": "http", "peer": peer, "bytes": body.len(), "kind": kind,
               "series_uid": key.series_uid, "study_uid": key.study_uid, "content_hash": hash}),
    );
    Ok((StatusCode::ACCEPTED, json!({"job": id})))
}

fn is_nifti(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
        || (b.len() >= 4
            && (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) == 348
                || i32::from_be_bytes([b[0], b[1], b[2], b[3]]) == 348))
}

/// Extracts a zip into `dir`. Entries that would land outside it (`../`,
/// absolute paths: "zip slip"), links, and more than `max_bytes` in all
/// (a zip bomb) refuse the whole upload.
fn unzip(body: &[u8], dir: &Path, max_bytes: usize) -> Result<usize, Refusal> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body))
        .map_err(|e| bad(format!("not a readable zip: {e}")))?;
    let mut total = 0usize;
    let mut files = 0;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
        let name = f.name().to_string();
        let rel = f.enclosed_name().filter(|_| !name.starts_with(['/', '\\']));
        let Some(rel) = rel else {
            return Err(bad(format!(
                "zip entry {name:?} points outside its folder: refused"
            )));
        };
        if f.is_symlink() {
            return Err(bad(format!("zip entry {name:?} is a link: refused")));
        }
        let target = dir.join(rel);
        if f.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| bad(e.to_string()))?;
            continue;
        }
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(|e| bad(e.to_string()))?;
        }
        let mut out = std::fs::File::create(&target).map_err(|e| bad(e.to_string()))?;
        let left = (max_bytes - total) as u64;
        let n = std::io::copy(&mut std::io::Read::take(&mut f, left + 1), &mut out)
            .map_err(|e| bad(format!("zip entry {name:?}: {e}")))?;
        if n > left {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the zip expands to more than {max_bytes} bytes: refused"),
            ));
        }
        out.sync_all().map_err(|e| bad(e.to_string()))?;
        total += n as usize;
        files += 1;
    }
    Ok(files)
}

/// The series of the first DICOM file in an upload.
fn first_series(dir: &Path, peer: &str) -> Result<SeriesKey, Refusal> {
    let first = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| delineate_dicom::header::has_dicm_magic(e.path()).unwrap_or(false))
        .find_map(|e| delineate_dicom::header::read_header(e.path()).ok());
    let h = first.ok_or((
        StatusCode::BAD_REQUEST,
        "the zip holds no readable DICOM file (Part 10, with the DICM prefix)".to_string(),
    ))?;
    Ok(SeriesKey {
        series_uid: h.series_instance_uid,
        study_uid: h.study.instance_uid,
        modality: h.modality,
        description: h.series_description,
        calling_ae: format!("http {peer}"),
    })
}

async fn list(State(svc): State<Svc>) -> Response {
    match svc.queue.jobs(200) {
        Ok(j) => Json(json!({"jobs": j})).into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn job(State(svc): State<Svc>, UrlPath(id): UrlPath<String>) -> Response {
    let j = match svc.queue.job(&id) {
        Ok(Some(j)) => j,
        Ok(None) => return err(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let deliveries = svc.queue.deliveries(&id).unwrap_or_default();
    let out = svc.dirs.job(&id).join("out");
    let lesions: serde_json::Value = std::fs::read(out.join("lesions.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut v = serde_json::to_value(&j).unwrap_or_default();
    v["deliveries"] = serde_json::to_value(deliveries).unwrap_or_default();
    v["stages_s"] = lesions["timings_s"].clone();
    v["queue_wait_s"] = j.started_at.map(|s| s - j.queued_at).into();
    v["turnaround_s"] = j.finished_at.map(|f| f - j.received_at).into();
    v["results"] = json!({
        "rtstruct": out.join("rtstruct.dcm").is_file().then(|| format!("/v1/jobs/{id}/rtstruct")),
        "mask": out.join("mask.nii.gz").is_file().then(|| format!("/v1/jobs/{id}/mask")),
        "lesions": out.join("lesions.json").is_file().then(|| format!("/v1/jobs/{id}/lesions")),
    });
    Json(v).into_response()
}

async fn result_file(
    State(svc): State<Svc>,
    UrlPath((id, file)): UrlPath<(String, String)>,
) -> Response {
    let (name, mime) = match file.as_str() {
        "rtstruct" => ("rtstruct.dcm", "application/dicom"),
        "mask" => ("mask.nii.gz", "application/gzip"),
        "lesions" => ("lesions.json", "application/json"),
        _ => {
            return err(
                StatusCode::NOT_FOUND,
                format!("no result {file:?} (rtstruct, mask, lesions)"),
            )
        }
    };
    let j = match svc.queue.job(&id) {
        Ok(Some(j)) => j,
        Ok(None) => return err(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if j.state == queue::QUEUED || j.state == queue::RUNNING {
        return err(
            StatusCode::CONFLICT,
            format!("job {id} is {}: no results yet", j.state),
        );
    }
    let path = svc.dirs.job(&id).join("out").join(name);
    match tokio::fs::read(&path).await {
        Ok(b) => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(mime));
            if let Ok(v) = format!("attachment; filename=\"{id}-{name}\"").parse() {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            (h, b).into_response()
        }
        Err(_) if name == "rtstruct.dcm" && j.lesions == Some(0) => err(
            StatusCode::NOT_FOUND,
            "no lesion was found, so there is no RT Structure Set",
        ),
        Err(_) => err(
            StatusCode::NOT_FOUND,
            format!("job {id} ({}) has no {name}", j.state),
        ),
    }
}

async fn metrics(State(svc): State<Svc>) -> Response {
    let stats = match svc.queue.stats() {
        Ok(s) => s,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let body = crate::http::prometheus(&svc, &stats);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Latency buckets (seconds) for the job histograms.
const BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The Prometheus text exposition format, written by hand: it is a dozen
/// lines of a plain text format, and a metrics crate would add a registry
/// and global state for that.
pub fn prometheus(svc: &Service, s: &queue::Stats) -> String {
    use std::fmt::Write;
    let c = &svc.counters;
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let state_lines = |v: &[(String, i64)], all: &[&str]| -> Vec<(String, f64)> {
        all.iter()
            .map(|st| {
                let n = v.iter().find(|(k, _)| k == st).map_or(0, |(_, n)| *n);
                (format!("{{state=\"{st}\"}}"), n as f64)
            })
            .collect()
    };
    let states = [
        queue::QUEUED,
        queue::RUNNING,
        queue::DELIVERING,
        queue::DONE,
        queue::FAILED,
    ];
    metric(
        "delineate_jobs",
        "gauge",
        "Jobs by state.",
        state_lines(&s.jobs_by_state, &states),
    );
    let depth = s
        .jobs_by_state
        .iter()
        .find(|(k, _)| k == queue::QUEUED)
        .map_or(0, |(_, n)| *n);
    metric(
        "delineate_queue_depth",
        "gauge",
        "Jobs waiting for a worker.",
        vec![(String::new(), depth as f64)],
    );
    let failed = s
        .jobs_by_state
        .iter()
        .find(|(k, _)| k == queue::FAILED)
        .map_or(0, |(_, n)| *n);
    metric(
        "delineate_job_failures",
        "gauge",
        "Jobs that failed (inference or delivery).",
        vec![(String::new(), failed as f64)],
    );
    metric(
        "delineate_open_series",
        "gauge",
        "Series being received (quiet period not over).",
        vec![(String::new(), s.open_series as f64)],
    );
    metric(
        "delineate_deliveries",
        "gauge",
        "Result deliveries by state.",
        state_lines(&s.deliveries_by_state, &["pending", "delivered", "failed"]),
    );
    let counters = [
        (
            "delineate_associations_total",
            "DICOM associations accepted.",
            &c.associations,
        ),
        (
            "delineate_associations_rejected_total",
            "DICOM associations rejected.",
            &c.associations_rejected,
        ),
        (
            "delineate_instances_stored_total",
            "Instances stored (C-STORE success).",
            &c.instances_stored,
        ),
        (
            "delineate_instances_refused_total",
            "Instances refused (C-STORE failure status).",
            &c.instances_refused,
        ),
        (
            "delineate_echo_total",
            "C-ECHO requests answered.",
            &c.echoes,
        ),
        (
            "delineate_uploads_total",
            "Studies accepted over HTTP.",
            &c.uploads,
        ),
        (
            "delineate_uploads_refused_total",
            "HTTP uploads refused.",
            &c.uploads_refused,
        ),
        (
            "delineate_http_unauthorized_total",
            "HTTP requests without a valid token.",
            &c.http_unauthorized,
        ),
        (
            "delineate_series_skipped_total",
            "Series skipped by routing rules.",
            &c.series_skipped,
        ),
        (
            "delineate_series_duplicate_total",
            "Series received again with the same content.",
            &c.series_duplicate,
        ),
    ];
    for (name, help, v) in counters {
        metric(
            name,
            "counter",
            help,
            vec![(String::new(), v.load(Ordering::Relaxed) as f64)],
        );
    }
    metric(
        "delineate_active_associations",
        "gauge",
        "DICOM associations open now.",
        vec![(
            String::new(),
            c.active_associations.load(Ordering::Relaxed) as f64,
        )],
    );
    for (name, help, v) in [
        (
            "delineate_job_inference_seconds",
            "Inference time of finished jobs.",
            &s.done_inference_s,
        ),
        (
            "delineate_job_turnaround_seconds",
            "First instance received to results delivered.",
            &s.done_total_s,
        ),
    ] {
        let mut lines: Vec<(String, f64)> = BUCKETS
            .iter()
            .map(|b| {
                (
                    format!("_bucket{{le=\"{b}\"}}"),
                    v.iter().filter(|x| **x <= *b).count() as f64,
                )
            })
            .collect();
        lines.push(("_bucket{le=\"+Inf\"}".into(), v.len() as f64));
        lines.push(("_sum".into(), v.iter().sum()));
        lines.push(("_count".into(), v.len() as f64));
        metric(name, "histogram", help, lines);
    }
    o
}
