//! Bad input to `delineate serve`: malformed PDUs, truncated data sets,
//! transfer syntaxes and SOP classes it does not take, zip slip, missing
//! tokens, oversized uploads. Each gets a clean refusal, nothing is queued,
//! and the service keeps answering. Also the HTTP upload path (zip and
//! NIfTI) end to end.

#![allow(clippy::unwrap_used)]

mod service_support;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use delineate_service::dimse;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use service_support::*;
use support::py;

fn assert_alive(srv: &Server) {
    let e = srv.echo("PACS");
    assert!(
        e.status.success(),
        "service stopped answering:\n{}",
        srv.log()
    );
    assert_eq!(srv.http("GET", "/healthz", None, None).0, 200);
}

/// Sends raw bytes and reads until the service closes or 5 s pass.
fn raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(bytes);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    got
}

/// A C-STORE of `data` (already encoded) on a fresh association; returns
/// the response status, or None when the service dropped the association.
fn store_raw(port: u16, ts: &str, sop_class: &str, sop_instance: &str, data: &[u8]) -> Option<u16> {
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title("PACS")
        .called_ae_title("DELINEATE")
        .with_presentation_context(sop_class, vec![ts])
        .read_timeout(Duration::from_secs(10))
        .establish(("127.0.0.1", port))
        .ok()?;
    let pc = a.presentation_contexts()[0].clone();
    assert_eq!(pc.reason, PresentationContextResultReason::Acceptance);
    let cmd = |data: Vec<u8>, value_type| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc.id,
            value_type,
            is_last: true,
            data,
        }],
    };
    a.send(&cmd(
        dimse::store_rq(1, sop_class, sop_instance),
        PDataValueType::Command,
    ))
    .ok()?;
    // Fragmented to the service's maximum PDU length.
    let mut w = a.send_pdata(pc.id);
    w.write_all(data).ok()?;
    w.finish().ok()?;
    match a.receive().ok()? {
        Pdu::PData { data } => {
            let status = dimse::parse(&data[0].data).ok()?.status;
            let _ = a.release();
            status
        }
        _ => None,
    }
}

fn encoded(file: &str, explicit: bool) -> (Vec<u8>, String, String) {
    let obj = dicom_object::open_file(file).unwrap();
    let ts = if explicit {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts).unwrap();
    let m = obj.meta();
    (
        out,
        m.media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string(),
        m.media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string(),
    )
}

#[test]
fn malformed_dicom_is_refused_cleanly_and_the_node_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[],
        &Setup {
            incomplete_wait_s: 1.0,
            ..Default::default()
        },
    );
    let port = srv.dicom_port;

    // Not DICOM at all; a PDU claiming 4 GiB; half an A-ASSOCIATE-RQ; an
    // unknown PDU type.
    raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    raw(port, &[0x01, 0, 0xff, 0xff, 0xff, 0xff, 0, 1]);
    raw(port, &[0x01, 0, 0, 0, 0, 0x44, 0, 1, 0, 0, b'D', b'E']);
    raw(port, &[0x7f, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    assert_alive(&srv);

    // A garbage command inside an accepted association: aborted.
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title("PACS")
        .called_ae_title("DELINEATE")
        .with_abstract_syntax(dimse::VERIFICATION)
        .read_timeout(Duration::from_secs(10))
        .establish(("127.0.0.1", port))
        .unwrap();
    let id = a.presentation_contexts()[0].id;
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: b"\x00\x00\x00\x00\x04\x00\x00\x00garbage!".to_vec(),
        }],
    })
    .unwrap();
    assert!(matches!(a.receive(), Ok(Pdu::AbortRQ { .. }) | Err(_)));
    assert_alive(&srv);

    // Truncated data set: "cannot understand", nothing stored.
    let files = dicom_files(&case.join("dicom"));
    let (data, class, inst) = encoded(&files[0], true);
    let st = store_raw(
        port,
        EXPLICIT_VR_LITTLE_ENDIAN.uid(),
        &class,
        &inst,
        &data[..data.len() / 2],
    );
    assert_eq!(st, Some(dimse::CANNOT_UNDERSTAND));
    // Explicit VR bytes on an implicit VR context (the wrong transfer
    // syntax): refused, not misread.
    let st = store_raw(port, IMPLICIT_VR_LITTLE_ENDIAN.uid(), &class, &inst, &data);
    assert!(
        st.is_some_and(|s| s != dimse::SUCCESS),
        "{st:?}\n{}",
        srv.log()
    );
    // A data set that is not the instance the command announced.
    let st = store_raw(
        port,
        EXPLICIT_VR_LITTLE_ENDIAN.uid(),
        &class,
        "1.2.3.4",
        &data,
    );
    assert_eq!(st, Some(dimse::DATASET_MISMATCH));
    // The same bytes, correct: stored (the control).
    let st = store_raw(port, EXPLICIT_VR_LITTLE_ENDIAN.uid(), &class, &inst, &data);
    assert_eq!(st, Some(dimse::SUCCESS));

    // A transfer syntax we cannot decode (JPEG 2000) and a SOP class we do
    // not store (Secondary Capture) are refused at negotiation.
    for (class, ts, why) in [
        (
            class.as_str(),
            "1.2.840.10008.1.2.4.90",
            PresentationContextResultReason::TransferSyntaxesNotSupported,
        ),
        (
            "1.2.840.10008.5.1.4.1.1.7",
            EXPLICIT_VR_LITTLE_ENDIAN.uid(),
            PresentationContextResultReason::AbstractSyntaxNotSupported,
        ),
    ] {
        let r = ClientAssociationOptions::new()
            .calling_ae_title("PACS")
            .called_ae_title("DELINEATE")
            .with_presentation_context(class, vec![ts])
            .establish(("127.0.0.1", port));
        match r {
            Ok(a) => assert_eq!(a.presentation_contexts()[0].reason, why),
            Err(e) => assert!(e.to_string().to_lowercase().contains("presentation"), "{e}"),
        }
    }
    assert_alive(&srv);

    // The one good instance was stored, but one slice of a series that
    // announces more is never contoured: it is refused as incomplete.
    let t = std::time::Instant::now();
    while srv.events("series_incomplete").is_empty() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "{}",
            srv.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let inc = &srv.events("series_incomplete")[0];
    assert_eq!(inc["instances"], 1, "{inc}");
    assert!(inc["reason"].as_str().unwrap().contains("1 of "), "{inc}");
    assert!(srv.jobs().is_empty());
    let refused: u64 = srv
        .events("association")
        .iter()
        .map(|e| e["refused"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(refused, 3);
}

/// A zip of files with the given names (contents from `src` in turn).
fn zip(out: &Path, entries: &[(&str, String)]) {
    let list: Vec<(String, String)> = entries
        .iter()
        .map(|(n, f)| (n.to_string(), f.clone()))
        .collect();
    py(&format!(
        r#"
import zipfile
with zipfile.ZipFile({out:?}, "w") as z:
    for name, src in {list:?}:
        z.writestr(name, open(src, "rb").read())
print(json.dumps({{}}))
"#,
        out = s(out),
        list = list,
    ));
}

#[test]
fn http_uploads_work_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    let srv = Server::start(&tmp.path().join("svc"), &[], "");
    // A small series (a crop, written as DICOM by us) and a NIfTI.
    let crop = tmp.path().join("crop.nii.gz");
    py(&format!(
        "img = nib.load({:?}); nib.save(img.slicer[40:104, 50:114, 60:100], {:?}); print('{{}}')",
        s(&case.join("image.nii.gz")),
        s(&crop)
    ));
    let series = tmp.path().join("series");
    support::ok(&["dicom", "write", &s(&crop), "--out", &s(&series)]);
    let files = dicom_files(&series);

    // Token: missing or wrong.
    let z = tmp.path().join("ok.zip");
    let entries: Vec<(String, String)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("series/{i:03}.dcm"), f.clone()))
        .collect();
    let e: Vec<(&str, String)> = entries
        .iter()
        .map(|(n, f)| (n.as_str(), f.clone()))
        .collect();
    zip(&z, &e);
    assert_eq!(srv.http("POST", "/v1/studies", None, Some(&z)).0, 401);
    assert_eq!(
        srv.http(
            "POST",
            "/v1/studies",
            Some("not-the-token-at-all"),
            Some(&z)
        )
        .0,
        401
    );

    // Zip slip: refused as a whole, nothing written outside.
    let evil = tmp.path().join("evil.zip");
    zip(
        &evil,
        &[
            ("ok/000.dcm", files[0].clone()),
            ("../../../escaped.dcm", files[1].clone()),
        ],
    );
    let (code, body) = srv.http("POST", "/v1/studies", Some(TOKEN), Some(&evil));
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("outside its folder"));
    let escaped = walk(tmp.path())
        .into_iter()
        .filter(|p| p.ends_with("escaped.dcm"))
        .count();
    assert_eq!(escaped, 0);
    let abs = tmp.path().join("abs.zip");
    zip(&abs, &[("/tmp/absolute.dcm", files[0].clone())]);
    assert_eq!(
        srv.http("POST", "/v1/studies", Some(TOKEN), Some(&abs)).0,
        400
    );

    // Neither zip nor NIfTI; a zip without DICOM; too large.
    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, b"hello, this is not an image").unwrap();
    assert_eq!(
        srv.http("POST", "/v1/studies", Some(TOKEN), Some(&junk)).0,
        415
    );
    let nodcm = tmp.path().join("nodcm.zip");
    zip(&nodcm, &[("readme.txt", s(&junk))]);
    assert_eq!(
        srv.http("POST", "/v1/studies", Some(TOKEN), Some(&nodcm)).0,
        400
    );
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 65 << 20]).unwrap();
    assert_eq!(
        srv.http("POST", "/v1/studies", Some(TOKEN), Some(&big)).0,
        413
    );
    assert!(srv.jobs().is_empty());

    // Good uploads: a zipped series and a NIfTI, each processed; the same
    // zip again is the same job.
    let (code, body) = srv.http("POST", "/v1/studies", Some(TOKEN), Some(&z));
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let id: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (code, again) = srv.http("POST", "/v1/studies", Some(TOKEN), Some(&z));
    assert_eq!(code, 200);
    let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(
        (again["job"].clone(), again["duplicate"].clone()),
        (id["job"].clone(), true.into())
    );
    let (code, body) = srv.http("POST", "/v1/studies", Some(TOKEN), Some(&crop));
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let jobs = srv.wait_jobs(120, |j| {
        j.len() == 2
            && j.iter()
                .all(|x| x["state"] == "done" || x["state"] == "failed")
    });
    for j in &jobs {
        assert_eq!(j["state"], "done", "{j:#}");
        let (code, mask) = srv.http(
            "GET",
            &format!("/v1/jobs/{}/mask", j["id"].as_str().unwrap()),
            Some(TOKEN),
            None,
        );
        assert_eq!((code, &mask[..2]), (200, &[0x1f, 0x8b][..]));
    }
    assert_eq!(srv.http("GET", "/v1/jobs/nope", Some(TOKEN), None).0, 404);
    assert_eq!(
        srv.http(
            "GET",
            &format!("/v1/jobs/{}/other", jobs[0]["id"].as_str().unwrap()),
            Some(TOKEN),
            None
        )
        .0,
        404
    );
    // Zip slip twice, junk, no DICOM, too large: each refused and logged.
    let refused = srv.events("upload_refused");
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert!(refused.iter().any(|e| e["reason"]
        .as_str()
        .unwrap_or("")
        .contains("max_upload_mib")));
    assert_alive(&srv);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
