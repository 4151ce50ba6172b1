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
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::queue::{self, JobState};
use crate::{Counters, Service};

type Svc = Arc<Service>;

/// A JSON error body with a status.
fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

pub fn router(svc: Svc) -> Router {
    let api = Router::new()
        .route("/v1/studies", post(crate::upload::upload))
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/{file}", get(result_file))
        .route("/metrics", get(crate::http::metrics))
        .route_layer(middleware::from_fn_with_state(svc.clone(), auth));
    let review = crate::review_http::router(Arc::new(crate::review::ReviewApp {
        auth: svc.auth.clone(),
        cases: crate::review::Cases::Jobs(Default::default()),
        audit: svc.audit.clone(),
        exports: Arc::new(crate::review_export::DbLog(svc.clone())),
        service: Some(svc.clone()),
    }));
    Router::new()
        .route("/healthz", get(health))
        .merge(api)
        // Uploads stream their body (crate::upload); nothing else needs
        // more than this.
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(svc)
        .merge(review)
}

pub async fn serve(svc: Svc, listener: tokio::net::TcpListener) -> Result<(), crate::Error> {
    let app = router(svc);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .map_err(|source| crate::Error::Net {
        address: "HTTP".into(),
        action: "serve",
        source,
    })
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

/// 401 with a JSON reason and the WWW-Authenticate challenge.
pub fn unauthorized(msg: &str) -> Response {
    let mut r = err(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Every API route acts as the account whose token the request carries
/// (a [`crate::users::Principal`] in the request's extensions).
async fn auth(State(svc): State<Svc>, mut req: Request, next: Next) -> Response {
    match svc.auth.who(req.headers()) {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => {
            Counters::inc(&svc.counters.http_unauthorized);
            unauthorized("missing, wrong or revoked bearer token")
        }
    }
}

/// Unauthenticated: says whether the queue answers, and nothing else (the
/// reason goes to the service log, not to whoever asks).
async fn health(State(svc): State<Svc>) -> Response {
    let s = svc.clone();
    match tokio::task::spawn_blocking(move || s.queue.stats()).await {
        Ok(Ok(_)) => Json(json!({"status": "ok"})).into_response(),
        Ok(Err(e)) => {
            tracing::error!("health check: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!("health check: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// Runs queue (SQLite) work on a blocking thread: it may wait on the queue
/// lock or an fsync, which must not stall the async runtime.
async fn blocking<T: Send + 'static>(
    svc: &Svc,
    f: impl FnOnce(&Service) -> Result<T, crate::Error> + Send + 'static,
) -> Result<T, Response> {
    let s = svc.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn list(State(svc): State<Svc>) -> Response {
    match blocking(&svc, |s| s.queue.jobs(200)).await {
        Ok(j) => Json(json!({"jobs": j})).into_response(),
        Err(r) => r,
    }
}

async fn job(State(svc): State<Svc>, UrlPath(id): UrlPath<String>) -> Response {
    let i = id.clone();
    let (j, deliveries) = match blocking(&svc, move |s| {
        Ok((s.queue.job(&i)?, s.queue.deliveries(&i).unwrap_or_default()))
    })
    .await
    {
        Ok((Some(j), d)) => (j, d),
        Ok((None, _)) => return err(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(r) => return r,
    };
    let out = svc.dirs.job(&id).join("out");
    // A job without a result (queued, failed) has no stage times.
    let timings = delineate_dicom::ResultManifest::read(&out)
        .ok()
        .map(|m| m.timings);
    let mut v = serde_json::to_value(&j).unwrap_or_default();
    v["deliveries"] = serde_json::to_value(deliveries).unwrap_or_default();
    v["stages_s"] = serde_json::to_value(timings).unwrap_or_default();
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
    let i = id.clone();
    let j = match blocking(&svc, move |s| s.queue.job(&i)).await {
        Ok(Some(j)) => j,
        Ok(None) => return err(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(r) => return r,
    };
    if j.state.before_result() {
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
    let stats = match blocking(&svc, |s| s.queue.stats()).await {
        Ok(s) => s,
        Err(r) => return r,
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
    metric(
        "delineate_jobs",
        "gauge",
        "Jobs by state.",
        state_lines(&s.jobs_by_state, &JobState::ALL.map(JobState::as_str)),
    );
    let depth = s
        .jobs_by_state
        .iter()
        .find(|(k, _)| k == JobState::Queued.as_str())
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
        .find(|(k, _)| k == JobState::Failed.as_str())
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
        (
            "delineate_series_incomplete_total",
            "Series refused because slices were missing when the wait ran out.",
            &c.series_incomplete,
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
