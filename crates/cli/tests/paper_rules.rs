#![allow(clippy::unwrap_used)]
//! `delineate evaluate --rules paper` against a transcription of the
//! authors' `iw/metric.py` (prc_records + get_prc) on generated cases:
//! lesion by lesion, component by component, and point by point on their
//! 51 thresholds.

mod support;

use std::path::Path;
use std::process::Command;

use support::ok;

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/paper_rules.py")
        .display()
        .to_string()
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn the_paper_rules_equal_the_authors_code() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let r = root.display().to_string();
    python(&["make", &r, "5"]);
    let rep = root.join("rep");
    ok(&[
        "evaluate",
        "--pred",
        &format!("{r}/pred"),
        "--truth",
        &format!("{r}/truth"),
        "--out",
        &rep.display().to_string(),
        "--rules",
        "paper",
        "--bootstrap",
        "none",
    ]);
    let want: serde_json::Value = serde_json::from_str(python(&["score", &r]).trim()).unwrap();
    let cases = want["cases"].as_object().unwrap();
    let lesions = csv(&rep.join("lesions.csv"));
    let preds = csv(&rep.join("predictions.csv"));
    let (mut n_truth, mut n_hit, mut n_pred, mut n_fp) = (0, 0, 0, 0);
    for (case, records) in cases {
        let records = records.as_array().unwrap();
        // Per truth lesion: (voxels, hit, hit confidence, best Dice).
        let mut theirs: Vec<(u64, bool, f64, f64)> = records
            .iter()
            .filter(|r| r["is_tum"] == true)
            .map(|r| {
                assert_eq!(
                    r["tie"], false,
                    "{case}: a Dice tie (the data must avoid them)"
                );
                let d = r["hit_dice"].as_f64().unwrap();
                let hit = d > 0.0;
                (
                    r["voxels"].as_u64().unwrap(),
                    hit,
                    if hit {
                        r["hit_stat"].as_f64().unwrap()
                    } else {
                        0.0
                    },
                    d,
                )
            })
            .collect();
        let mut ours: Vec<(u64, bool, f64, f64)> = lesions
            .iter()
            .filter(|l| &l[1] == case)
            .map(|l| {
                let hit = l[8] == "1";
                (
                    l[5].parse().unwrap(),
                    hit,
                    if hit { l[9].parse().unwrap() } else { 0.0 },
                    l[10].parse().unwrap(),
                )
            })
            .collect();
        let key = |v: &(u64, bool, f64, f64)| (v.0, (v.3 * 1e4).round() as i64);
        theirs.sort_by_key(key);
        ours.sort_by_key(key);
        assert_eq!(theirs.len(), ours.len(), "{case}: truth lesions");
        for (t, o) in theirs.iter().zip(&ours) {
            assert_eq!((t.0, t.1), (o.0, o.1), "{case}: {t:?} vs {o:?}");
            assert!(
                (t.2 - o.2).abs() < 1e-6,
                "{case}: hit confidence {t:?} vs {o:?}"
            );
            assert!((t.3 - o.3).abs() < 1e-4, "{case}: best Dice {t:?} vs {o:?}");
            n_truth += 1;
            n_hit += usize::from(t.1);
        }
        // Per component: (voxels, confidence, touches no lesion).
        let mut theirs: Vec<(u64, i64, bool)> = records
            .iter()
            .filter(|r| r["is_tum"] == false)
            .map(|r| {
                (
                    r["voxels"].as_u64().unwrap(),
                    (r["self_stat"].as_f64().unwrap() * 1e6).round() as i64,
                    r["hit_dice"].as_f64().unwrap() <= 0.0,
                )
            })
            .collect();
        let mut ours: Vec<(u64, i64, bool)> = preds
            .iter()
            .filter(|p| &p[1] == case)
            .map(|p| {
                (
                    p[3].parse().unwrap(),
                    (p[5].parse::<f64>().unwrap() * 1e6).round() as i64,
                    p[6] == "1",
                )
            })
            .collect();
        theirs.sort();
        ours.sort();
        assert_eq!(theirs, ours, "{case}: components");
        n_pred += ours.len();
        n_fp += ours.iter().filter(|p| p.2).count();
    }
    // The generated data exercise every rule.
    assert!(
        n_truth >= 20 && n_hit >= 8 && n_hit < n_truth,
        "{n_truth} {n_hit}"
    );
    assert!(n_fp >= 4 && n_pred > n_fp, "{n_pred} {n_fp}");
    // The curve, point by point on the authors' thresholds.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap()).unwrap();
    let points = report["experiments"][0]["summary"]["points"]
        .as_array()
        .unwrap();
    let prc = &want["prc"];
    let thr = want["thresholds"].as_array().unwrap();
    assert_eq!(points.len(), thr.len());
    for (i, p) in points.iter().enumerate() {
        assert!((p["threshold"].as_f64().unwrap() - thr[i].as_f64().unwrap()).abs() < 1e-12);
        for (ours, theirs) in [("precision", "precision"), ("recall", "recall")] {
            let (a, b) = (p[ours].as_f64().unwrap(), prc[theirs][i].as_f64().unwrap());
            assert!((a - b).abs() < 1e-12, "point {i}: {ours} {a} vs {b}");
        }
        assert_eq!(p["false_positives"], prc["totalFP"][i], "point {i}");
    }
}

/// `--metrics brats2023-*` against a transcription of the challenge's
/// `eval.py` (with panoptica's HD95) and panoptica's own RQ/SQ/PQ, case by
/// case, with both challenges' settings, on anisotropic voxels.
#[test]
fn brats_2023_metrics_equal_the_challenge_rules_and_panoptica() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let r = root.display().to_string();
    python(&["make", &r, "9"]);
    for ch in ["mets", "men"] {
        let rep = root.join(format!("rep-{ch}"));
        ok(&[
            "evaluate",
            "--pred",
            &format!("{r}/pred"),
            "--truth",
            &format!("{r}/truth"),
            "--out",
            &rep.display().to_string(),
            "--metrics",
            &format!("brats2023-{ch}"),
            "--bootstrap",
            "none",
        ]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/brats_rules.py");
        let out = Command::new("python3")
            .arg(&script)
            .args([r.as_str(), ch])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let want: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(rep.join("report.json")).unwrap())
                .unwrap();
        let cases = report["experiments"][0]["brats2023_cases"]
            .as_array()
            .unwrap();
        assert_eq!(cases.len(), want.as_object().unwrap().len());
        let (mut fp, mut fn_, mut tp) = (0, 0, 0);
        for c in cases {
            let name = c["case"].as_str().unwrap();
            let w = &want[name];
            for (ours, theirs, tol) in [
                ("lesionwise_dice", "lesionwise_dice", 1e-9),
                ("lesionwise_hd95", "lesionwise_hd95", 1e-6),
                ("legacy_dice", "legacy_dice", 1e-9),
            ] {
                let (a, b) = (c[ours].as_f64().unwrap(), w[theirs].as_f64().unwrap());
                assert!((a - b).abs() < tol, "{ch} {name}: {ours} {a} vs {b}");
            }
            for (ours, theirs) in [("tp", "tp"), ("fn_", "fn"), ("false_positives", "fp")] {
                assert_eq!(c[ours], w[theirs], "{ch} {name}: {ours}");
            }
            for k in ["rq", "sq", "pq"] {
                let (a, b) = (c["panoptic"][k].as_f64().unwrap(), w[k].as_f64().unwrap());
                assert!((a - b).abs() < 1e-9, "{ch} {name}: {k} {a} vs {b}");
            }
            tp += c["tp"].as_u64().unwrap();
            fn_ += c["fn_"].as_u64().unwrap();
            fp += c["false_positives"].as_u64().unwrap();
        }
        assert!(tp >= 8 && fn_ >= 2 && fp >= 2, "{ch}: {tp} {fn_} {fp}");
        assert!(rep.join("brats2023.csv").is_file());
    }
}
