//! HTTP routes of the review page (see [`crate::review`]):
//!
//! - `GET /review/{id}/`: the page; `GET /review/{id}/review.js`: its script
//!   (both static, no patient data, no token);
//! - `GET  /review/{id}/api/meta`: size, spacing, window, lesions, decisions;
//! - `GET  /review/{id}/api/slice/{axis}/{index}`: one slice, raw arrays;
//! - `POST /review/{id}/api/decisions`: `{"reviewer", "decisions": {id: "accepted"|"rejected"}}`;
//! - `POST /review/{id}/api/export`: `{"send": bool}`: RTSTRUCT of the accepted
//!   lesions ([`crate::review_export`]), optionally queued to every
//!   destination (delivered by the delivery loop, with retries);
//! - `GET  /review/{id}/api/export/rtstruct.dcm`.
//!
//! `{id}` is a job id in the service and `case` in `delineate review`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::review::{Decisions, ReviewApp};
use crate::users::Principal;

type App = Arc<ReviewApp>;

fn err(status: u16, msg: impl Into<String>) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (s, Json(json!({"error": msg.into()}))).into_response()
}

pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/review/{id}/api/meta", get(meta))
        .route("/review/{id}/api/slice/{axis}/{index}", get(slice))
        .route("/review/{id}/api/decisions", post(decisions))
        .route("/review/{id}/api/export", post(export))
        .route("/review/{id}/api/export/rtstruct.dcm", get(download))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route(
            "/review/{id}",
            get(|UrlPath(id): UrlPath<String>| async move {
                Redirect::permanent(&format!("/review/{id}/"))
            }),
        )
        .route("/review/{id}/", get(page))
        .route("/review/{id}/review.js", get(script))
        .merge(api)
        .with_state(app)
}

async fn auth(State(app): State<App>, mut req: Request, next: Next) -> Response {
    match app.auth.who(req.headers()) {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => crate::http::unauthorized(
            "missing, wrong or revoked bearer token (open the link with #token=...)",
        ),
    }
}

/// A 403 unless the account may review.
fn must_review(who: &Principal) -> Option<Response> {
    (!who.role.may_review()).then(|| {
        err(
            403,
            format!(
                "{} is a {:?}: deciding on lesions and exporting need a reviewer account",
                who.name, who.role
            ),
        )
    })
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing but our own origin: no CDN, no inline code from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'",
            ),
        ],
        crate::review::PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        crate::review::SCRIPT,
    )
        .into_response()
}

/// Loads (or finds) the case off the async threads.
async fn case(app: &App, id: String) -> Result<Arc<crate::review::Case>, Response> {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.case(&id)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err((s, m))) => Err(err(s, m)),
        Err(e) => Err(err(500, e.to_string())),
    }
}

async fn meta(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match case(&app, id).await {
        Ok(c) => {
            let mut m = c.meta(!app.destinations().is_empty());
            m["user"] = who.name.clone().into();
            m["may_review"] = who.role.may_review().into();
            Json(m).into_response()
        }
        Err(r) => r,
    }
}

async fn slice(
    State(app): State<App>,
    UrlPath((id, axis, index)): UrlPath<(String, usize, usize)>,
) -> Response {
    let c = match case(&app, id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.slice(axis, index) {
        Some((w, h, bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::HeaderName::from_static("x-width"), w.to_string()),
                (header::HeaderName::from_static("x-height"), h.to_string()),
            ],
            bytes,
        )
            .into_response(),
        None => err(404, format!("no slice {index} on axis {axis}")),
    }
}

async fn decisions(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(who): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = must_review(&who) {
        return r;
    }
    let mut d: Decisions = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return err(400, format!("decisions: {e}")),
    };
    // The reviewer is the account, not what was typed.
    d.reviewer = who.name.clone();
    let c = match case(&app, id.clone()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Writing review.json and the audit line fsync: off the async threads.
    let a = app.clone();
    let r = tokio::task::spawn_blocking(move || {
        c.save_decisions(&d, &a.audit, &peer.to_string(), &id)
            .map(|()| json!({"saved": d.decisions.len(), "review": c.decisions()}))
    })
    .await;
    match r {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => err(400, e),
        Err(e) => err(500, e.to_string()),
    }
}

async fn export(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(who): Extension<Principal>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = must_review(&who) {
        return r;
    }
    let send = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["send"].as_bool())
        .unwrap_or(false);
    let c = match case(&app, id.clone()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let a = app.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, (u16, String)> {
        if let Some(svc) = &a.service {
            let job = svc
                .queue
                .job(&id)
                .map_err(|e| (500, e.to_string()))?
                .ok_or((404, format!("no job {id}")))?;
            if let Some(by) = job.superseded_by {
                return Err((
                    409,
                    format!("job {id} was superseded by job {by} (more of the series arrived): review that one"),
                ));
            }
        }
        let destinations = if send { a.destinations() } else { Vec::new() };
        let o = crate::review_export::export(&c, &id, a.exports.as_ref(), &destinations)
            .map_err(|e| (409, e))?;
        a.audit.event(
            crate::audit::AuditEvent::ReviewExport,
            json!({"job": id, "case": c.name, "reviewer": o.record.reviewer, "user": who.name,
                   "client": peer.to_string(),
                   "accepted": o.record.accepted, "rtstruct_uid": o.record.sop_uid,
                   "revision": o.record.revision, "unchanged": o.unchanged,
                   "supersedes_revision": o.supersedes, "queued": o.queued,
                   "result_id": o.record.result_id}),
        );
        Ok(json!({"rtstruct": format!("/review/{id}/api/export/rtstruct.dcm"),
                  "path": o.record.path, "rois": o.record.accepted.len(),
                  "accepted": o.record.accepted, "rtstruct_uid": o.record.sop_uid,
                  "revision": o.record.revision, "unchanged": o.unchanged,
                  "supersedes_revision": o.supersedes, "queued": o.queued}))
    })
    .await;
    match r {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err((s, e))) => err(s, e),
        Err(e) => err(500, e.to_string()),
    }
}

async fn download(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    let c = match case(&app, id.clone()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match tokio::fs::read(c.dir.join("reviewed/rtstruct.dcm")).await {
        Ok(b) => (
            [
                (header::CONTENT_TYPE, "application/dicom".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{id}-reviewed-rtstruct.dcm\""),
                ),
            ],
            b,
        )
            .into_response(),
        Err(_) => err(404, "not exported yet"),
    }
}

/// Serves the review page of one case (`delineate review`) until Ctrl-C.
pub async fn serve_one(app: App, listener: tokio::net::TcpListener) -> Result<(), crate::Error> {
    let r = router(app).route("/", get(|| async { Redirect::temporary("/review/case/") }));
    axum::serve(
        listener,
        r.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(crate::http::shutdown())
    .await
    .map_err(|source| crate::Error::Net {
        address: "the review page".into(),
        action: "serve",
        source,
    })
}
