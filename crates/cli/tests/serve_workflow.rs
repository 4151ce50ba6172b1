//! The clinical workflow of `delineate serve` against dcmtk's storescp as
//! the planning system: only contrast-enhanced T1 is contoured (the example
//! configuration's routes), only whole series are contoured, results wait
//! for a review where the destination says so, drafts are labelled as AI
//! drafts, reviewed exports are delivered durably and idempotently, and a
//! changed review is the next revision of the same series.

#![allow(clippy::unwrap_used)]

mod service_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use service_support::*;
use support::{dciodvfy_clean, py};

/// The `[[route]]` tables of docs/delineate.example.toml.
fn example_routes() -> &'static str {
    let ex = include_str!("../../../docs/delineate.example.toml");
    &ex[ex.find("\n[[route]]").unwrap() + 1..]
}

/// Copies `n` files (every file when `n` is 0) of `src` as a new series
/// (new UIDs), with `changes` applied: `desc`, `agent` (null removes it),
/// `te`, `tr`, `ti`, `image_type`, `no_count` (removes Images in
/// Acquisition).
fn rewrite(src: &Path, out: &Path, n: usize, changes: serde_json::Value) {
    py(&format!(
        r#"
from pydicom.uid import generate_uid
ch = json.loads({ch:?})
src = sorted(os.path.join({src:?}, f) for f in os.listdir({src:?}))
src = src[:{n}] if {n} else src
os.makedirs({out:?}, exist_ok=True)
series = generate_uid()
for f in src:
    d = pydicom.dcmread(f)
    d.SeriesInstanceUID = series
    d.SOPInstanceUID = generate_uid(); d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    if "desc" in ch: d.SeriesDescription = ch["desc"]
    if "agent" in ch:
        if ch["agent"] is None:
            if "ContrastBolusAgent" in d: del d.ContrastBolusAgent
        else: d.ContrastBolusAgent = ch["agent"]
    if "te" in ch: d.EchoTime = ch["te"]
    if "tr" in ch: d.RepetitionTime = ch["tr"]
    if "ti" in ch: d.InversionTime = ch["ti"]
    if "image_type" in ch: d.ImageType = ch["image_type"]
    if ch.get("no_count") and "ImagesInAcquisition" in d: del d.ImagesInAcquisition
    d.save_as(os.path.join({out:?}, os.path.basename(f)))
print(json.dumps(series))
"#,
        ch = changes.to_string(),
        src = s(src),
        out = s(out),
    ));
}

fn send(srv: &Server, files: &[String]) {
    let out = srv.storescu("PACS", files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool, srv: &Server) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn resting(j: &serde_json::Value) -> bool {
    [
        "done",
        "failed",
        "awaiting_review",
        "reviewed",
        "superseded",
    ]
    .contains(&j["state"].as_str().unwrap_or(""))
}

/// What pydicom reads from a structure set.
fn rt_facts(rt: &Path) -> serde_json::Value {
    py(&format!(
        r#"
rt = pydicom.dcmread({rt:?})
print(json.dumps({{"label": rt.StructureSetLabel, "series": rt.SeriesInstanceUID,
  "sop": rt.SOPInstanceUID, "number": int(rt.InstanceNumber),
  "names": [r.ROIName for r in rt.StructureSetROISequence],
  "descriptions": [str(r.get("ROIDescription", "")) for r in rt.StructureSetROISequence],
  "tz": str(rt.get("TimezoneOffsetFromUTC", "")), "series_description": rt.SeriesDescription}}))
"#,
        rt = s(rt)
    ))
}

#[test]
fn only_contrast_t1_is_contoured_and_the_tps_gets_only_reviewed_contours() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series().join("dicom");
    let tps = StoreScp::start("TPS", &tmp.path().join("tps"));
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[("tps", "TPS", tps.port)],
        &Setup {
            on_result: "after_review",
            routes: example_routes(),
            ..Default::default()
        },
    );
    // A study as the scanner sends it: T1 before contrast, T2 and FLAIR
    // after it (the agent recorded on both), and the post-contrast T1.
    let pre = tmp.path().join("pre");
    rewrite(
        &case,
        &pre,
        8,
        serde_json::json!({"desc": "t1_mprage_sag_p2_iso", "agent": null}),
    );
    let t2 = tmp.path().join("t2");
    rewrite(
        &case,
        &t2,
        8,
        serde_json::json!({"desc": "t2_tse_tra", "te": 96, "tr": 6000, "ti": null}),
    );
    let flair = tmp.path().join("flair");
    rewrite(
        &case,
        &flair,
        8,
        serde_json::json!({"desc": "Ax 3D dark fl", "te": 120, "tr": 9000, "ti": 2500}),
    );
    for d in [&pre, &t2, &flair] {
        send(&srv, &dicom_files(d));
    }
    send(&srv, &dicom_files(&case));
    let jobs = srv.wait_jobs(600, |j| {
        j.len() == 1 && resting(&j[0]) && srv.events("series_skipped").len() == 3
    });
    let job = &jobs[0];
    assert_eq!(job["state"], "awaiting_review", "{job:#}\n{}", srv.log());
    assert_eq!(
        job["instances"].as_u64().unwrap(),
        dicom_files(&case).len() as u64
    );
    // Every skipped series says why.
    let skipped = srv.events("series_skipped");
    let why: Vec<String> = skipped
        .iter()
        .map(|e| e["not_matched"].to_string() + &e["rule"].to_string())
        .collect();
    let all = why.join("\n");
    assert!(all.contains("no contrast agent recorded"), "{all}");
    assert!(all.contains("named as another kind"), "{all}");
    assert!(all.contains("repetition time 9000 ms outside"), "{all}");
    // Nothing reaches the planning system before a review.
    std::thread::sleep(Duration::from_secs(3));
    assert!(tps.received().is_empty(), "{:?}", tps.received());

    // The draft is labelled as an unreviewed AI draft.
    let id = job["id"].as_str().unwrap();
    let draft = srv.dir.join(format!("store/jobs/{id}/out/rtstruct.dcm"));
    dciodvfy_clean(&draft);
    let f = rt_facts(&draft);
    assert_eq!(f["label"], "AI DRAFT", "{f}");
    assert!(
        f["names"][0].as_str().unwrap().starts_with("AI draft L"),
        "{f}"
    );
    assert!(
        f["descriptions"][0]
            .as_str()
            .unwrap()
            .starts_with("UNREVIEWED AI DRAFT"),
        "{f}"
    );
    assert!(f["series_description"]
        .as_str()
        .unwrap()
        .contains("AI DRAFT"));
    assert_eq!(f["tz"].as_str().unwrap().len(), 5, "{f}");

    // Review: accept every lesion, export and send.
    let meta = srv.get_json(&format!("/review/{id}/api/meta"));
    let ids: Vec<u64> = meta["lesions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert!(!ids.is_empty());
    let body = tmp.path().join("body.json");
    let second = add_user(&srv.dir, "Dr Second", "reviewer");
    let viewer = add_user(&srv.dir, "Ward Viewer", "viewer");
    let decide = |token: &str, reject_last: bool| {
        let d: serde_json::Map<String, serde_json::Value> = ids
            .iter()
            .enumerate()
            .map(|(n, i)| {
                let v = if reject_last && n + 1 == ids.len() {
                    "rejected"
                } else {
                    "accepted"
                };
                (i.to_string(), v.into())
            })
            .collect();
        std::fs::write(
            &body,
            serde_json::json!({"reviewer": "typed name", "decisions": d}).to_string(),
        )
        .unwrap();
        let (code, b) = srv.http(
            "POST",
            &format!("/review/{id}/api/decisions"),
            Some(token),
            Some(&body),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    };
    let export = || -> serde_json::Value {
        std::fs::write(&body, r#"{"send": true}"#).unwrap();
        let (code, b) = srv.http(
            "POST",
            &format!("/review/{id}/api/export"),
            Some(&srv.reviewer),
            Some(&body),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).unwrap()
    };
    // A viewer may look but not decide.
    std::fs::write(&body, r#"{"decisions": {}}"#).unwrap();
    let (code, _) = srv.http(
        "POST",
        &format!("/review/{id}/api/decisions"),
        Some(&viewer),
        Some(&body),
    );
    assert_eq!(code, 403);
    decide(&srv.reviewer, false);
    let e1 = export();
    assert_eq!(
        (e1["revision"].as_u64(), e1["unchanged"].as_bool()),
        (Some(1), Some(false))
    );
    wait_for(
        "the reviewed export",
        60,
        || tps.received().len() == 1,
        &srv,
    );
    // The same decisions again: the same object, nothing sent twice.
    let e2 = export();
    assert_eq!(e2["unchanged"], true, "{e2}");
    assert_eq!(e2["rtstruct_uid"], e1["rtstruct_uid"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tps.received().len(), 1);
    // A changed review supersedes it: the next revision of the same series.
    if ids.len() > 1 {
        decide(&srv.reviewer, true);
    } else {
        decide(&second, false);
    }
    let e3 = export();
    assert_eq!(e3["revision"], 2, "{e3}");
    assert_eq!(e3["supersedes_revision"], 1, "{e3}");
    wait_for(
        "the second revision",
        60,
        || tps.received().len() == 2,
        &srv,
    );
    let got = tps.received();
    let (a, b) = (rt_facts(&got[0]), rt_facts(&got[1]));
    let (first, second) = if a["number"] == 1 { (a, b) } else { (b, a) };
    assert_eq!(first["label"], "AI REVIEWED");
    assert_eq!(first["series"], second["series"]);
    assert_ne!(first["sop"], second["sop"]);
    assert_eq!(
        (first["number"].as_u64(), second["number"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(first["descriptions"][0]
        .as_str()
        .unwrap()
        .contains("accepted by Dr Review"));
    for g in &got {
        dciodvfy_clean(g);
    }
    let jobs = srv.wait_jobs(30, |j| j[0]["state"] == "reviewed");
    assert_eq!(jobs[0]["state"], "reviewed");
    let exports = srv.events("review_export");
    assert_eq!(exports.len(), 3);
    assert_eq!(exports[1]["unchanged"], true);
}

#[test]
fn a_series_is_contoured_whole_never_as_a_slab() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series().join("dicom");
    let n = dicom_files(&case).len();
    let tps = StoreScp::start("TPS", &tmp.path().join("tps"));
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[("tps", "TPS", tps.port)],
        &Setup::default(),
    );
    let jobs_on = |series: &str| -> Vec<serde_json::Value> {
        srv.jobs()
            .into_iter()
            .filter(|j| j["series_uid"] == series)
            .collect()
    };
    // 1. Images in Acquisition says how many: half a series waits.
    let files = dicom_files(&case);
    let first = py(&format!(
        "print(json.dumps(pydicom.dcmread({:?}, stop_before_pixels=True).SeriesInstanceUID))",
        files[0]
    ));
    let first = first.as_str().unwrap().to_string();
    send(&srv, &files[..n / 2]);
    wait_for(
        "series_waiting",
        30,
        || !srv.events("series_waiting").is_empty(),
        &srv,
    );
    let w = &srv.events("series_waiting")[0];
    assert!(
        w["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("of {n} images")),
        "{w}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(jobs_on(&first).is_empty());
    send(&srv, &files[n / 2..]);
    wait_for(
        "the whole series",
        600,
        || jobs_on(&first).first().is_some_and(resting),
        &srv,
    );
    let j = &jobs_on(&first)[0];
    assert_eq!(j["instances"].as_u64().unwrap(), n as u64, "{j}");
    assert_eq!(j["state"], "done", "{j}");

    // 2. No count in the headers: a gap in the slice positions waits.
    let gap = tmp.path().join("gap");
    let series = rewrite_series_uid(&case, &gap, serde_json::json!({"no_count": true}));
    let g = dicom_files(&gap);
    let (a, b) = (n / 3, 2 * n / 3);
    let outer: Vec<String> = g[..a].iter().chain(&g[b..]).cloned().collect();
    send(&srv, &outer);
    wait_for(
        "a gap reported",
        30,
        || {
            srv.events("series_waiting")
                .iter()
                .any(|e| e["series_uid"] == series.as_str())
        },
        &srv,
    );
    let w: Vec<serde_json::Value> = srv
        .events("series_waiting")
        .into_iter()
        .filter(|e| e["series_uid"] == series.as_str())
        .collect();
    assert!(
        w[0]["reason"].as_str().unwrap().contains("missing between"),
        "{w:?}"
    );
    send(&srv, &g[a..b]);
    wait_for(
        "the filled series",
        600,
        || jobs_on(&series).first().is_some_and(resting),
        &srv,
    );
    assert_eq!(jobs_on(&series)[0]["instances"].as_u64().unwrap(), n as u64);

    // 3. Nothing in the headers can tell: the first slab is contoured, and
    // the late remainder re-runs the whole series, superseding it.
    let late = tmp.path().join("late");
    let series = rewrite_series_uid(&case, &late, serde_json::json!({"no_count": true}));
    let l = dicom_files(&late);
    send(&srv, &l[..n / 2]);
    wait_for(
        "the slab's job",
        600,
        || jobs_on(&series).first().is_some_and(resting),
        &srv,
    );
    let slab = jobs_on(&series)[0].clone();
    assert_eq!(slab["instances"].as_u64().unwrap(), (n / 2) as u64);
    send(&srv, &l[n / 2..]);
    wait_for(
        "the superseding job",
        600,
        || {
            let j = jobs_on(&series);
            j.len() == 2 && j.iter().all(resting)
        },
        &srv,
    );
    let js = jobs_on(&series);
    let whole = js.iter().find(|j| j["id"] != slab["id"]).unwrap();
    let old = js.iter().find(|j| j["id"] == slab["id"]).unwrap();
    assert_eq!(whole["instances"].as_u64().unwrap(), n as u64);
    assert_eq!(whole["supersedes"], slab["id"]);
    assert_eq!(whole["revision"], 2);
    assert_eq!(old["state"], "superseded");
    assert_eq!(old["superseded_by"], whole["id"]);
    assert_eq!(whole["uid_root"], slab["uid_root"]);
    let sup = srv.events("job_superseded");
    assert_eq!(sup.len(), 1);
    assert_eq!(sup[0]["job"], slab["id"]);
    let rt = |j: &serde_json::Value| {
        srv.dir.join(format!(
            "store/jobs/{}/out/rtstruct.dcm",
            j["id"].as_str().unwrap()
        ))
    };
    if rt(old).is_file() && rt(whole).is_file() {
        let (a, b) = (rt_facts(&rt(old)), rt_facts(&rt(whole)));
        assert_eq!(a["series"], b["series"]);
        assert_eq!(
            (a["number"].as_u64(), b["number"].as_u64()),
            (Some(1), Some(2))
        );
    }
    // The review of the superseded job cannot be exported.
    let (code, body) = srv.http(
        "POST",
        &format!("/review/{}/api/export", slab["id"].as_str().unwrap()),
        Some(&srv.reviewer),
        None,
    );
    if code != 409 {
        panic!("{code}: {}", String::from_utf8_lossy(&body));
    }
    assert!(String::from_utf8_lossy(&body).contains("superseded"));
}

#[test]
fn a_series_still_incomplete_after_the_wait_is_refused_until_it_is_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let case = mr_series().join("dicom");
    let n = dicom_files(&case).len();
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[],
        &Setup {
            incomplete_wait_s: 2.0,
            ..Default::default()
        },
    );
    let part = tmp.path().join("part");
    let series = rewrite_series_uid(&case, &part, serde_json::json!({}));
    let p = dicom_files(&part);
    send(&srv, &p[..n / 3]);
    wait_for(
        "series_incomplete",
        30,
        || !srv.events("series_incomplete").is_empty(),
        &srv,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(srv.jobs().is_empty(), "a partial series became a job");
    let (code, m) = srv.http("GET", "/metrics", Some(TOKEN), None);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&m)
        .lines()
        .any(|l| l == "delineate_series_incomplete_total 1"));
    // The rest arrives later: the whole series is contoured.
    send(&srv, &p[n / 3..]);
    let jobs = srv.wait_jobs(600, |j| j.len() == 1 && resting(&j[0]));
    assert_eq!(jobs[0]["series_uid"], series.as_str());
    assert_eq!(jobs[0]["instances"].as_u64().unwrap(), n as u64);
    assert_eq!(jobs[0]["state"], "done", "{:#}", jobs[0]);
}

/// [`rewrite`] of every file; returns the new Series Instance UID.
fn rewrite_series_uid(src: &Path, out: &Path, changes: serde_json::Value) -> String {
    rewrite(src, out, 0, changes);
    let f = dicom_files(out);
    py(&format!(
        "print(json.dumps(pydicom.dcmread({:?}, stop_before_pixels=True).SeriesInstanceUID))",
        f[0]
    ))
    .as_str()
    .unwrap()
    .to_string()
}
