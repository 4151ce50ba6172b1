//! `delineate evaluate` and `delineate study` end to end: conformance with
//! picai-eval (PyPI), RTSTRUCT truth, reports and figures, and bad input.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn script() -> String {
    format!("{}/tests/picai_conformance.py", env!("CARGO_MANIFEST_DIR"))
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agrees_with_picai_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    python(&[&script(), "make", &s(root)]);
    for (p, t, r) in [
        ("pred", "truth", "rep"),
        ("split_pred", "split_truth", "rep_s"),
        ("merge_pred", "merge_truth", "rep_m"),
    ] {
        ok(&[
            "evaluate",
            "--pred",
            &s(&root.join(p)),
            "--truth",
            &s(&root.join(t)),
            "--out",
            &s(&root.join(r)),
            "--thresholds",
            "unique",
            // picai-eval's conformance is a property of delineate's rules
            // (the paper's have their own conformance test).
            "--rules",
            "delineate",
            "--bootstrap-iterations",
            "20",
        ]);
    }
    let stdout = python(&[
        &script(),
        "compare",
        &s(root),
        &s(&root.join("rep")),
        &s(&root.join("rep_s")),
        &s(&root.join("rep_m")),
    ]);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("{v}");
    // Detected, missed and false-positive lesions: identical per case.
    assert!(v["lesions"].as_u64().unwrap() >= 20);
    for k in ["hit_mismatch", "fp_mismatch", "conf_mismatch"] {
        assert_eq!(v[k].as_array().unwrap().len(), 0, "{k}: {v}");
    }
    let (a, b) = (
        v["sens_picai"].as_array().unwrap(),
        v["sens_ours"].as_array().unwrap(),
    );
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6,
            "sensitivity at FP rates: {v}"
        );
    }
    assert!((v["ap_picai"].as_f64().unwrap() - v["ap_ours"].as_f64().unwrap()).abs() < 1e-9);
    // Split lesions: same hits and FPs; the confidence differs by rule
    // (ours: most confident matching component; picai: largest overlap).
    assert_eq!(v["split_hits_equal"], true);
    assert_eq!(v["split_fp_equal"], true);
    assert!((v["split_conf_ours"][0][0].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert!((v["split_conf_picai"][0][0].as_f64().unwrap() - 0.7).abs() < 1e-6);
    // Merged lesions: we hit both, picai (one-to-one) one.
    assert_eq!(v["merge_ours_hits"], 2);
    assert_eq!(v["merge_picai_hits"], 1);
    // Figures and reports exist.
    for f in [
        "report.json",
        "summary.md",
        "lesions.csv",
        "predictions.csv",
        "prc.png",
        "prc.svg",
        "froc.png",
        "froc.svg",
        "recall_by_size.png",
        "recall_by_size.svg",
    ] {
        assert!(root.join("rep").join(f).is_file(), "{f}");
    }
    let png = std::fs::read(root.join("rep").join("prc.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(root.join("rep").join("froc.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("FROC"));
}

#[test]
fn rtstruct_truth_from_synth_and_kinds() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    synth_mets(
        &data,
        "2",
        "4",
        "2-3",
        &[
            "--met-diameter",
            "6-15",
            "--sagittal-fraction",
            "0",
            "--dicom",
        ],
    );
    // Truth through RTSTRUCT only; predictions = the truth masks as labels.
    let (truth, pred) = (tmp.path().join("truth"), tmp.path().join("pred"));
    for c in ["case_000", "case_001"] {
        std::fs::create_dir_all(truth.join(c)).unwrap();
        std::fs::rename(data.join(c).join("dicom"), truth.join(c).join("dicom")).unwrap();
        std::fs::rename(
            data.join(c).join("rtstruct.dcm"),
            truth.join(c).join("rtstruct.dcm"),
        )
        .unwrap();
        std::fs::create_dir_all(&pred).unwrap();
        std::fs::copy(
            data.join(c).join("truth.nii.gz"),
            pred.join(format!("{c}.nii.gz")),
        )
        .unwrap();
    }
    let out = tmp.path().join("rep");
    let stdout = ok(&[
        "evaluate",
        "--pred",
        &format!("truth-as-pred={}", s(&pred)),
        "--truth",
        &s(&truth),
        "--out",
        &s(&out),
    ]);
    assert!(stdout.contains("truth-as-pred"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let sm = &r["experiments"][0]["summary"];
    assert_eq!(sm["recall"], 1.0);
    assert_eq!(sm["fp_per_case"], 0.0);
    assert!(sm["dice_median"].as_f64().unwrap() > 0.99);
    // Kinds come from the ROI names (met_1, ...).
    assert_eq!(r["experiments"][0]["kinds"][0], "met");
}

fn nifti(path: &Path, code: &str) {
    py(&format!(
        "a = np.zeros((8, 8, 8), np.float32)\n{code}\nnib.save(nib.Nifti1Image(a, np.eye(4)), {:?})\nprint('null')",
        s(path)
    ));
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, p) = (tmp.path().join("t"), tmp.path().join("p"));
    std::fs::create_dir_all(&t).unwrap();
    std::fs::create_dir_all(&p).unwrap();
    nifti(
        &t.join("a.nii.gz"),
        "a[2:4, 2:4, 2:4] = 1\na = a.astype(np.uint8)",
    );
    nifti(&t.join("b.nii.gz"), "a = a.astype(np.uint8)");
    nifti(&p.join("a.nii.gz"), "a[2:4, 2:4, 2:4] = 0.8");
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "evaluate",
            "--pred",
            p.to_str().unwrap(),
            "--truth",
            t.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let args = run(&[]);
    let e = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("no prediction for truth case b"), "{e}");
    assert!(!out.exists());
    // Skipping is explicit and reported.
    let args = run(&["--allow-missing"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["experiments"][0]["skipped"][0]["case"], "b");
    std::fs::remove_dir_all(&out).unwrap();
    // Probabilities outside [0, 1], NaN, a different grid.
    nifti(&p.join("b.nii.gz"), "a[0, 0, 0] = 1.5\na[1, 1, 1] = 0.3");
    let args = run(&[]);
    let e = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("b.nii.gz") && e.contains("outside [0, 1]"),
        "{e}"
    );
    nifti(&p.join("b.nii.gz"), "a[0, 0, 0] = np.nan\na[1, 1, 1] = 0.3");
    let e = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("b.nii.gz") && e.contains("NaN"), "{e}");
    py(&format!("nib.save(nib.Nifti1Image(np.zeros((8, 8, 9), np.float32), np.eye(4)), {:?})\nprint('null')", s(&p.join("b.nii.gz"))));
    let e = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("b.nii.gz") && e.contains("not on the grid"),
        "{e}"
    );
    assert!(!out.exists());
    let e = fails(&[
        "evaluate",
        "--pred",
        &s(&p),
        "--truth",
        &s(&t),
        "--out",
        &s(&out),
        "--sizes",
        "10,5",
    ]);
    assert!(e.contains("--sizes"), "{e}");
}

#[test]
fn study_from_simulated_raters() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    synth_mets(&data, "3", "2", "1-3", &["--met-diameter", "5-15"]);
    let study = tmp.path().join("study");
    let script = format!("{}/../../scripts/make_study.py", env!("CARGO_MANIFEST_DIR"));
    python(&[
        &script,
        "--synth",
        &s(&data),
        "--out",
        &s(&study),
        "--seed",
        "1",
    ]);
    let out = tmp.path().join("report");
    let stdout = ok(&[
        "study",
        "--design",
        &s(&study.join("study.toml")),
        "--out",
        &s(&out),
    ]);
    assert!(stdout.contains("all:"), "{stdout}");
    for f in [
        "study.md",
        "study.html",
        "study.json",
        "study_lesions.csv",
        "quality_vs_time.png",
        "quality_vs_time.svg",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(r["agreement"].as_array().unwrap().len(), 5);
    // Raters start from one CNN proposal: they agree more with it.
    let all = &r["agreement"][4];
    assert!(all["median_dice"][2].as_f64().unwrap() > all["median_dice"][0].as_f64().unwrap());
    let md = std::fs::read_to_string(out.join("study.md")).unwrap();
    assert!(md.contains("| Rater | Lesions | 1 vs 3 | 1' vs 3 | 1' vs 3' |"));
    let e = fails(&[
        "study",
        "--design",
        &s(&tmp.path().join("nope.toml")),
        "--out",
        &s(&out),
    ]);
    assert!(e.contains("nope.toml"), "{e}");
}
