//! `delineate serve` against real DICOM peers, started by the tests: dcmtk
//! (echoscu, storescu, storescp as the planning system), dicom3tools'
//! dciodvfy, and Orthanc as the PACS. Also a `kill -9` in the middle of a
//! job and 20 senders at once.

#![allow(clippy::unwrap_used)]

mod service_support;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use service_support::*;
use support::{dciodvfy_clean, py};

fn done(j: &serde_json::Value) -> bool {
    j["state"] == "done" || j["state"] == "failed"
}

/// What pydicom reads from an RTSTRUCT: the series it references, its
/// ROIs, its UID.
fn rtstruct_facts(rt: &Path) -> serde_json::Value {
    py(&format!(
        r#"
rt = pydicom.dcmread({rt:?})
ref = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
print(json.dumps({{"modality": rt.Modality, "series": ref.SeriesInstanceUID, "sop": rt.SOPInstanceUID,
  "images": len(ref.ContourImageSequence), "rois": len(rt.StructureSetROISequence),
  "study": rt.StudyInstanceUID}}))
"#,
        rt = s(rt)
    ))
}

fn series_uid(dir: &Path) -> String {
    let f = dicom_files(dir);
    py(&format!(
        "print(json.dumps(pydicom.dcmread({:?}, stop_before_pixels=True).SeriesInstanceUID))",
        f[0]
    ))
    .as_str()
    .expect("uid")
    .to_string()
}

#[test]
fn dcmtk_peers_echo_store_route_and_receive_a_valid_rtstruct() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    let tps = StoreScp::start("TPS", &tmp.path().join("tps"));
    let srv = Server::start(&tmp.path().join("svc"), &[("tps", "TPS", tps.port)], "");

    // C-ECHO from an allowed AE; an unknown AE is rejected at association.
    let e = srv.echo("PACS");
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let e = srv.echo("STRANGER");
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr).to_string() + &String::from_utf8_lossy(&e.stdout);
    assert!(msg.contains("Calling AE Title Not Recognized"), "{msg}");
    let rej = srv.events("association_rejected");
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0]["calling_ae"], "STRANGER");

    // The MR series, a CT series and a localiser: only the MR is processed.
    let mr = dicom_files(&case.join("dicom"));
    let out = srv.storescu("PACS", &mr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ct = tmp.path().join("ct");
    rewrite_series(
        &case.join("dicom"),
        &ct,
        6,
        "CT",
        "1.2.840.10008.5.1.4.1.1.2",
        "head CT",
    );
    let loc = tmp.path().join("loc");
    rewrite_series(
        &case.join("dicom"),
        &loc,
        3,
        "MR",
        "1.2.840.10008.5.1.4.1.1.4",
        "3-plane Localizer",
    );
    for d in [&ct, &loc] {
        let out = srv.storescu("PACS", &dicom_files(d));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let jobs = srv.wait_jobs(180, |j| {
        j.len() == 1 && done(&j[0]) && srv.events("series_skipped").len() == 2
    });
    let job = &jobs[0];
    assert_eq!(job["state"], "done", "{job:#}\n{}", srv.log());
    assert_eq!(job["instances"], mr.len() as u64);
    assert!(job["lesions"].as_u64().unwrap() >= 1, "{job:#}");
    let skipped: Vec<String> = srv
        .events("series_skipped")
        .iter()
        .map(|e| e["modality"].as_str().unwrap().to_string())
        .collect();
    assert!(skipped.contains(&"CT".to_string()) && skipped.contains(&"MR".to_string()));

    // The planning system got exactly one RTSTRUCT: valid, on our series.
    let got = tps.received();
    assert_eq!(got.len(), 1, "{got:?}");
    dciodvfy_clean(&got[0]);
    let f = rtstruct_facts(&got[0]);
    assert_eq!(f["modality"], "RTSTRUCT");
    assert_eq!(f["series"], series_uid(&case.join("dicom")));
    assert_eq!(f["rois"], job["lesions"]);
    let delivered = srv.events("delivered");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["rtstruct_uid"], f["sop"]);

    // The same series again: recognised, not processed or sent twice.
    let out = srv.storescu("PACS", &mr);
    assert!(out.status.success());
    let t = Instant::now();
    while srv.events("series_duplicate").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", srv.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(srv.jobs().len(), 1);
    assert_eq!(tps.received().len(), 1);

    // The HTTP API: token required, results downloadable, metrics.
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        srv.http("GET", &format!("/v1/jobs/{id}"), None, None).0,
        401
    );
    assert_eq!(
        srv.http("GET", "/metrics", Some("wrong-token-0123456789"), None)
            .0,
        401
    );
    assert_eq!(srv.http("GET", "/healthz", None, None).0, 200);
    let j = srv.get_json(&format!("/v1/jobs/{id}"));
    assert_eq!(j["deliveries"][0]["state"], "delivered");
    let stages: Vec<&str> = j["stages_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(stages.contains(&"network"), "{stages:?}");
    let (code, rt) = srv.http("GET", &format!("/v1/jobs/{id}/rtstruct"), Some(TOKEN), None);
    assert_eq!(code, 200);
    assert_eq!(
        rt,
        std::fs::read(srv.dir.join(format!("store/jobs/{id}/out/rtstruct.dcm"))).unwrap()
    );
    let (code, mask) = srv.http("GET", &format!("/v1/jobs/{id}/mask"), Some(TOKEN), None);
    assert_eq!((code, &mask[..2]), (200, &[0x1f, 0x8b][..]));
    let les = srv.get_json(&format!("/v1/jobs/{id}/lesions"));
    assert_eq!(
        les["lesions"].as_array().unwrap().len() as u64,
        job["lesions"].as_u64().unwrap()
    );
    let (code, m) = srv.http("GET", "/metrics", Some(TOKEN), None);
    let m = String::from_utf8_lossy(&m);
    assert_eq!(code, 200);
    for line in [
        "delineate_jobs{state=\"done\"} 1",
        // Every state is counted, those a job waits in after inference too.
        "delineate_jobs{state=\"awaiting_review\"} 0",
        "delineate_jobs{state=\"reviewed\"} 0",
        "delineate_jobs{state=\"superseded\"} 0",
        "delineate_queue_depth 0",
        "delineate_series_skipped_total 2",
        "delineate_series_duplicate_total 1",
        "delineate_associations_rejected_total 1",
        "delineate_job_inference_seconds_count 1",
        "delineate_deliveries{state=\"delivered\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
    // The review page for the job: public page, data behind the token;
    // accept every lesion and send the reviewed structure set to the TPS.
    let (code, html) = srv.http("GET", &format!("/review/{id}/"), None, None);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&html).contains("review.js"));
    assert_eq!(
        srv.http("GET", &format!("/review/{id}/api/meta"), None, None)
            .0,
        401
    );
    let meta = srv.get_json(&format!("/review/{id}/api/meta"));
    let ids: Vec<u64> = meta["lesions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, job["lesions"].as_u64().unwrap());
    let body = tmp.path().join("decisions.json");
    let decisions: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .map(|i| (i.to_string(), "accepted".into()))
        .collect();
    std::fs::write(
        &body,
        serde_json::json!({"reviewer": "physicist", "decisions": decisions}).to_string(),
    )
    .unwrap();
    let (code, b) = srv.http(
        "POST",
        &format!("/review/{id}/api/decisions"),
        Some(&srv.reviewer),
        Some(&body),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    std::fs::write(&body, r#"{"send": true}"#).unwrap();
    let (code, b) = srv.http(
        "POST",
        &format!("/review/{id}/api/export"),
        Some(&srv.reviewer),
        Some(&body),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    let e: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(e["queued"], serde_json::json!(["tps"]), "{e}");
    assert_eq!(e["revision"], 1, "{e}");
    // Delivered by the delivery loop, with its own delivery record.
    let t = Instant::now();
    while tps.received().len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", srv.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let reviewed = srv.events("review_export");
    assert_eq!(reviewed.len(), 1);
    // The reviewer is the account, whatever the body says.
    assert_eq!(reviewed[0]["reviewer"], "Dr Review");
    assert_ne!(reviewed[0]["rtstruct_uid"], f["sop"]);
    let j = srv.wait_jobs(60, |j| j[0]["state"] == "reviewed");
    assert_eq!(j[0]["state"], "reviewed");
    let d = srv.get_json(&format!("/v1/jobs/{id}"));
    assert!(d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["object"] == "reviewed.1" && x["state"] == "delivered"));

    // The audit log names who sent what, never the patient.
    let audit = std::fs::read_to_string(srv.dir.join("store/audit.jsonl")).unwrap();
    let patient = py(&format!(
        "d = pydicom.dcmread({:?}, stop_before_pixels=True); print(json.dumps([str(d.PatientName), str(d.PatientID)]))",
        mr[0]
    ));
    for p in patient.as_array().unwrap() {
        let p = p.as_str().unwrap();
        assert!(p.is_empty() || !audit.contains(p), "{p:?} in the audit log");
        assert!(
            p.is_empty() || !srv.log().contains(p),
            "{p:?} in the service log"
        );
    }
    assert!(srv
        .events("association")
        .iter()
        .any(|e| e["calling_ae"] == "PACS" && e["stored"] == mr.len() as u64));
}

#[test]
fn kill_9_during_inference_then_restart_delivers_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    let tps = StoreScp::start("TPS", &tmp.path().join("tps"));
    let mut srv = Server::start(&tmp.path().join("svc"), &[("tps", "TPS", tps.port)], "");
    let out = srv.storescu("PACS", &dicom_files(&case.join("dicom")));
    assert!(out.status.success());
    // Kill the whole service the moment inference is under way.
    let jobs = srv.wait_jobs(60, |j| {
        j.len() == 1 && j[0]["state"] == "running" && !j[0]["pid"].is_null()
    });
    let orphan = jobs[0]["pid"].as_u64().unwrap();
    srv.kill9();
    assert!(tps.received().is_empty());
    srv.restart();
    let jobs = srv.wait_jobs(180, |j| j.len() == 1 && done(&j[0]));
    assert_eq!(jobs[0]["state"], "done", "{:#}", jobs[0]);
    assert_eq!(jobs[0]["attempts"], 2);
    // The orphaned `delineate segment` of the killed service was stopped.
    let requeued = srv.events("job_requeued");
    assert_eq!(requeued.len(), 1);
    assert!(
        !Path::new(&format!("/proc/{orphan}")).exists() || requeued[0]["orphan_stopped"] == true
    );
    // Give a would-be second delivery time to arrive.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tps.received().len(), 1, "{:?}", tps.received());
    dciodvfy_clean(&tps.received()[0]);
}

#[test]
fn orthanc_as_pacs_pushes_a_study_and_receives_the_rtstruct() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    let (o_http, o_dicom) = (free_port(), free_port());
    let svc_dir = tmp.path().join("svc");
    // Ports for delineate are chosen first so Orthanc can be told them.
    let mut srv = Server::start(&svc_dir, &[("pacs", "ORTHANC", o_dicom)], "");
    let odir = tmp.path().join("orthanc");
    std::fs::create_dir_all(&odir).unwrap();
    let cfg = serde_json::json!({
        "Name": "delineate-test", "StorageDirectory": s(&odir.join("db")), "IndexDirectory": s(&odir.join("db")),
        "HttpPort": o_http, "DicomPort": o_dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false, "Plugins": [],
        "DicomModalities": {"delineate": ["DELINEATE", "127.0.0.1", srv.dicom_port]},
    });
    std::fs::write(odir.join("orthanc.json"), cfg.to_string()).unwrap();
    let log = std::fs::File::create(odir.join("orthanc.log")).unwrap();
    let mut orthanc = Command::new("/usr/sbin/Orthanc")
        .arg(odir.join("orthanc.json"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("Orthanc (apt-get install orthanc; ./setup.sh does)");
    let rest = |method: &str, path: &str, data: Option<String>| -> serde_json::Value {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-f",
            "-X",
            method,
            &format!("http://127.0.0.1:{o_http}{path}"),
        ]);
        if let Some(d) = data {
            c.args(["--data-binary", &d]);
        }
        let o = c.output().unwrap();
        if !o.status.success() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    let t = Instant::now();
    while rest("GET", "/system", None).is_null() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "Orthanc did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for f in dicom_files(&case.join("dicom")) {
        assert!(!rest("POST", "/instances", Some(format!("@{f}"))).is_null());
    }
    let studies = rest("GET", "/studies", None);
    assert_eq!(studies.as_array().unwrap().len(), 1);
    let study = studies[0].as_str().unwrap().to_string();
    // Orthanc pushes the study to delineate (C-STORE SCU, REST-driven).
    let r = rest("POST", "/modalities/delineate/store", Some(study.clone()));
    assert!(!r.is_null(), "Orthanc could not push the study");
    srv.wait_jobs(180, |j| j.len() == 1 && done(&j[0]));
    // The RTSTRUCT is back in Orthanc, in the same study.
    let t = Instant::now();
    let rt = loop {
        let series = rest("GET", &format!("/studies/{study}/series?expand"), None);
        let rt: Vec<serde_json::Value> = series
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["MainDicomTags"]["Modality"] == "RTSTRUCT")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !rt.is_empty() {
            break rt;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no RTSTRUCT in Orthanc;\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(rt.len(), 1);
    let inst = rt[0]["Instances"][0].as_str().unwrap();
    let file = tmp.path().join("from-orthanc.dcm");
    let o = Command::new("curl")
        .args([
            "-s",
            "-f",
            "-o",
            &s(&file),
            &format!("http://127.0.0.1:{o_http}/instances/{inst}/file"),
        ])
        .status()
        .unwrap();
    assert!(o.success());
    let f = rtstruct_facts(&file);
    assert_eq!(f["series"], series_uid(&case.join("dicom")));
    assert!(srv
        .events("association")
        .iter()
        .any(|e| e["calling_ae"] == "ORTHANC"));
    let _ = orthanc.kill();
    let _ = orthanc.wait();
    srv.kill9();
}

/// Peak resident memory of a process (kB), from /proc.
fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn twenty_concurrent_senders_are_all_processed_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    // 20 different small series (crops of the case, written as DICOM by us).
    let crops = tmp.path().join("crops");
    py(&format!(
        r#"
img = nib.load({img:?})
os.makedirs({out:?})
for n in range(20):
    x, y, z = 50 + 3 * n, 60 + 2 * n, 70 + n
    nib.save(img.slicer[x:x + 48, y:y + 48, z:z + 24], os.path.join({out:?}, f"crop{{n:02d}}.nii.gz"))
print(json.dumps({{}}))
"#,
        img = s(&case.join("image.nii.gz")),
        out = s(&crops),
    ));
    let mut series = Vec::new();
    for n in 0..20 {
        let d = crops.join(format!("s{n:02}"));
        support::ok(&[
            "dicom",
            "write",
            &s(&crops.join(format!("crop{n:02}.nii.gz"))),
            "--out",
            &s(&d),
        ]);
        series.push(dicom_files(&d));
    }
    // One address sending 20 series at once is a router: it gets a limit
    // of its own (the default is 4 per address).
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[],
        &Setup {
            node_extra: "max_associations_per_range = { \"127.0.0.1\" = 32 }",
            ..Default::default()
        },
    );
    let port = srv.dicom_port.to_string();
    let t = Instant::now();
    // 20 associations at once.
    let children: Vec<_> = series
        .iter()
        .map(|files| {
            Command::new("storescu")
                .args(["-aet", "LOADGEN", "-aec", "DELINEATE", "127.0.0.1", &port])
                .args(files)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("storescu")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let jobs = srv.wait_jobs(300, |j| j.len() == 20 && j.iter().all(done));
    let secs = t.elapsed().as_secs_f64();
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:#?}");
    let hwm = vm_hwm_kb(srv.child.id());
    println!(
        "20 series of 24 slices: all processed in {secs:.1} s; service peak RSS {} MiB",
        hwm / 1024
    );
    // The service itself stays small: series are streamed to disk and
    // inference runs in its own processes.
    assert!(hwm > 0 && hwm < 512 * 1024, "peak RSS {hwm} kB");
}

#[test]
fn an_enhanced_mr_instance_is_processed_and_answered_with_frame_references() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series();
    // The series as one multi-frame instance, converted by highdicom.
    let multi = tmp.path().join("multi");
    support::highdicom_enhanced(&case.join("dicom"), &multi);
    let tps = StoreScp::start("TPS", &tmp.path().join("tps"));
    let srv = Server::start(&tmp.path().join("svc"), &[("tps", "TPS", tps.port)], "");
    // -R: propose the files' own SOP class (storescu's default list has no
    // Legacy Converted Enhanced MR).
    let mut args = vec!["-R".to_string()];
    args.extend(dicom_files(&multi));
    let out = srv.storescu("PACS", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = srv.wait_jobs(180, |j| j.len() == 1 && done(&j[0]));
    assert_eq!(jobs[0]["state"], "done", "{:#}\n{}", jobs[0], srv.log());
    assert_eq!(jobs[0]["instances"], 1);
    let got = tps.received();
    assert_eq!(got.len(), 1);
    dciodvfy_clean(&got[0]);
    let r = py(&format!(
        r#"
rt = pydicom.dcmread({rt:?}); mf = pydicom.dcmread({mf:?}, stop_before_pixels=True)
ser = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
print(json.dumps({{"series": ser.SeriesInstanceUID == mf.SeriesInstanceUID,
  "frames": len({{int(i.ReferencedFrameNumber) for i in ser.ContourImageSequence}}) == int(mf.NumberOfFrames)}}))
"#,
        rt = s(&got[0]),
        mf = s(&multi.join("enhanced.dcm")),
    ));
    assert_eq!(
        (r["series"].clone(), r["frames"].clone()),
        (true.into(), true.into()),
        "{r}"
    );
}
