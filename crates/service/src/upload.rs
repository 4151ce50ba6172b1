//! `POST /v1/studies`: a zip of one DICOM series or a NIfTI file, from an
//! operator. Bounded everywhere: the body is streamed to disk (never held
//! in memory) and cut off at `max_upload_mib`; at most
//! `max_concurrent_uploads` run at once (more get 503 with Retry-After); a
//! zip is checked while it is extracted — entry count, total uncompressed
//! size, expansion ratio, entries that would leave their folder (zip slip)
//! or are links — and a refusal leaves nothing behind.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::queue::{self, NewJob, SeriesKey};
use crate::users::Principal;
use crate::{Counters, Service};

type Refusal = (StatusCode, String);

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// Releases an upload slot when dropped.
struct Slot(Arc<Service>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .uploads_running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn take_slot(svc: &Arc<Service>) -> Option<Slot> {
    use std::sync::atomic::Ordering;
    let max = svc.config.http.max_concurrent_uploads;
    let n = svc.uploads_running.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(svc.clone());
    (n < max).then_some(slot)
}

pub async fn upload(
    State(svc): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer_s = peer.to_string();
    let refuse = |svc: &Service, status: StatusCode, msg: String, bytes: u64| {
        Counters::inc(&svc.counters.uploads_refused);
        svc.audit.event(
            crate::audit::AuditEvent::UploadRefused,
            json!({"peer": peer_s, "user": who.name, "bytes": bytes, "reason": msg}),
        );
        err(status, msg)
    };
    if !who.role.may_upload() {
        return refuse(
            &svc,
            StatusCode::FORBIDDEN,
            format!(
                "{} is a {:?}: uploads need an operator account",
                who.name, who.role
            ),
            0,
        );
    }
    let Some(slot) = take_slot(&svc) else {
        let mut r = refuse(
            &svc,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} uploads are running (http.max_concurrent_uploads): try again later",
                svc.config.http.max_concurrent_uploads
            ),
            0,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
        return r;
    };
    let limit = svc.config.http.max_upload_mib * 1024 * 1024;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return refuse(
            &svc,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} bytes: more than http.max_upload_mib ({} MiB)",
                declared.unwrap_or(0),
                svc.config.http.max_upload_mib
            ),
            0,
        );
    }
    // Stream to a private spool file, hashing as it comes.
    let spool = match tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(&svc.dirs.spool)
    {
        Ok(f) => f,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (mut file, path) = spool.into_parts();
    let mut hash = Sha256::new();
    let mut n: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    &svc,
                    StatusCode::BAD_REQUEST,
                    format!("upload interrupted: {e}"),
                    n,
                )
            }
        };
        n += chunk.len() as u64;
        if n > limit {
            return refuse(
                &svc,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "more than http.max_upload_mib ({} MiB): refused",
                    svc.config.http.max_upload_mib
                ),
                n,
            );
        }
        hash.update(&chunk);
        if let Err(e) = file.write_all(&chunk) {
            return err(StatusCode::INSUFFICIENT_STORAGE, e.to_string());
        }
    }
    if let Err(e) = file.sync_all() {
        return err(StatusCode::INSUFFICIENT_STORAGE, e.to_string());
    }
    drop(file);
    let hash = queue::hex(&hash.finalize());
    let s = svc.clone();
    let user = who.name.clone();
    let peer_b = peer.to_string();
    let r = tokio::task::spawn_blocking(move || {
        let r = accept_upload(&s, &peer_b, &user, &path, &hash, n);
        drop(path);
        drop(slot);
        r
    })
    .await;
    match r {
        Ok(Ok((status, v))) => {
            Counters::inc(&svc.counters.uploads);
            (status, Json(v)).into_response()
        }
        Ok(Err((status, msg))) => refuse(&svc, status, msg, n),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn accept_upload(
    svc: &Service,
    peer: &str,
    user: &str,
    body: &Path,
    hash: &str,
    bytes: u64,
) -> Result<(StatusCode, serde_json::Value), Refusal> {
    let internal = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    if let Some(id) = svc
        .queue
        .upload_with_hash(hash)
        .map_err(|e| internal(e.to_string()))?
    {
        return Ok((StatusCode::OK, json!({"job": id, "duplicate": true})));
    }
    let mut head = [0u8; 4];
    let got = std::fs::File::open(body)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| internal(e.to_string()))?;
    let head = &head[..got];
    let id = queue::new_id();
    let dir = svc.dirs.job(&id);
    let input = dir.join("input");
    let staging = tempfile::Builder::new()
        .prefix(".upload-")
        .tempdir_in(&svc.dirs.jobs)
        .map_err(|e| internal(e.to_string()))?;
    let (kind, key, path) = if head.starts_with(b"PK\x03\x04") {
        let n = unzip(body, staging.path(), bytes, &svc.config.http)?;
        let key = first_series(staging.path(), peer)?;
        (format!("dicom ({n} files)"), key, input.clone())
    } else if is_nifti(head) {
        let name = if head.starts_with(&[0x1f, 0x8b]) {
            "image.nii.gz"
        } else {
            "image.nii"
        };
        std::fs::copy(body, staging.path().join(name)).map_err(|e| internal(e.to_string()))?;
        let key = SeriesKey {
            modality: "MR".into(),
            calling_ae: format!("http {peer}"),
            ..Default::default()
        };
        ("nifti".to_string(), key, input.join(name))
    } else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body is neither a zip of a DICOM series nor a NIfTI file (.nii or .nii.gz)".into(),
        ));
    };
    std::fs::create_dir_all(&dir).map_err(|e| internal(e.to_string()))?;
    crate::durable::private(&dir, true).map_err(|e| internal(e.to_string()))?;
    std::fs::rename(staging.keep(), &input).map_err(|e| internal(e.to_string()))?;
    crate::durable::private_tree(&input);
    crate::durable::sync_dir(&dir).map_err(|e| internal(e.to_string()))?;
    let input_kind = if kind == "nifti" { "nifti" } else { "dicom" };
    svc.queue
        .insert_job(&NewJob {
            id: &id,
            source: "http",
            key: &key,
            content_hash: hash,
            input: &path,
            input_kind,
            instances: 0,
            received_at: queue::now(),
            supersedes: None,
        })
        .map_err(|e| internal(e.to_string()))?;
    svc.audit.event(
        crate::audit::AuditEvent::JobQueued,
        json!({"job": id, "source": "http", "peer": peer, "user": user, "bytes": bytes, "kind": kind,
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

/// Extracts the zip at `zip_path` into `dir`, checking as it goes: at most
/// `max_zip_entries` entries, at most `max_unzipped_mib` in all and at most
/// `max_zip_ratio` times the zip's own size (a zip bomb stops at the limit,
/// whatever its headers claim); entries that would land outside `dir`
/// (`../`, absolute paths: "zip slip") and links refuse the whole upload.
fn unzip(
    zip_path: &Path,
    dir: &Path,
    zip_bytes: u64,
    limits: &crate::config::Http,
) -> Result<usize, Refusal> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let too_big = |m: String| (StatusCode::PAYLOAD_TOO_LARGE, m);
    let f = std::fs::File::open(zip_path).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| bad(format!("not a readable zip: {e}")))?;
    if zip.len() > limits.max_zip_entries {
        return Err(too_big(format!(
            "the zip has {} entries; at most {} (http.max_zip_entries)",
            zip.len(),
            limits.max_zip_entries
        )));
    }
    let max_total = (limits.max_unzipped_mib * 1024 * 1024)
        .min(zip_bytes.max(1 << 20).saturating_mul(limits.max_zip_ratio));
    let mut total = 0u64;
    let mut files = 0;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
        let name = f.name().to_string();
        let rel: Option<PathBuf> = f.enclosed_name().filter(|_| !name.starts_with(['/', '\\']));
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
        let left = max_total - total;
        let n = std::io::copy(&mut (&mut f).take(left + 1), &mut out)
            .map_err(|e| bad(format!("zip entry {name:?}: {e}")))?;
        if n > left {
            return Err(too_big(format!(
                "the zip expands to more than {max_total} bytes (http.max_unzipped_mib, http.max_zip_ratio × its size): refused"
            )));
        }
        out.sync_all().map_err(|e| bad(e.to_string()))?;
        total += n;
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
        ..Default::default()
    })
}
