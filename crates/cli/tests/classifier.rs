//! The second stage from the command line: `delineate candidates` on cases
//! with known lesions, `delineate model classifier` fits the lesion
//! classifier behind the shipped model and stores it in a new model file,
//! and `segment` with that file ranks lesions by the classifier's score
//! (`--no-classifier`: by the network's probability, as before). Candidate
//! sets from another network, or of another version, are refused by name.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/unet-synth.dlm")
}

#[test]
fn a_classifier_is_fitted_attached_and_run_by_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| s(&tmp.path().join(p));
    for (set, cases, seed) in [("fit", "2", "3101"), ("val", "1", "3102")] {
        ok(&[
            "synth",
            "--cases",
            cases,
            "--seed",
            seed,
            "--background",
            "colin27",
            "--kinds",
            "met",
            "--met-count",
            "4-6",
            "--grid",
            "1mm",
            "--out",
            &t(set),
        ]);
        let out = ok(&[
            "candidates",
            &t(set),
            "--model",
            &s(&shipped()),
            "--out",
            &t(&format!("cand-{set}")),
        ]);
        assert!(out.contains("candidates per case"), "{out}");
    }
    let fit = t("cand-fit/candidates.json");
    let val = t("cand-val/candidates.json");
    let out = ok(&[
        "model",
        "classifier",
        &s(&shipped()),
        "--fit",
        &fit,
        "--validation",
        &val,
        "--trees",
        "40",
        "--out",
        &t("with.dlm"),
    ]);
    assert!(out.contains("operating threshold"), "{out}");

    // A validation set found with another network is refused, by name.
    let text = std::fs::read_to_string(&val).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sha = v["lesion_network_sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    std::fs::write(t("other.json"), text.replace(&sha, &"0".repeat(64))).unwrap();
    let e = fails(&[
        "model",
        "classifier",
        &s(&shipped()),
        "--fit",
        &fit,
        "--validation",
        &t("other.json"),
        "--out",
        &t("bad.dlm"),
    ]);
    assert!(
        e.contains("other.json") && e.contains("different lesion networks"),
        "{e}"
    );
    assert!(!tmp.path().join("bad.dlm").exists());
    // Several sets are fitted on together; one from another network among
    // them is refused by name.
    let e = fails(&[
        "model",
        "classifier",
        &s(&shipped()),
        "--fit",
        &fit,
        "--fit",
        &t("other.json"),
        "--validation",
        &val,
        "--out",
        &t("bad.dlm"),
    ]);
    assert!(
        e.contains("other.json") && e.contains("another lesion network"),
        "{e}"
    );
    let both = ok(&[
        "model",
        "classifier",
        &s(&shipped()),
        "--fit",
        &fit,
        "--fit",
        &val,
        "--validation",
        &val,
        "--trees",
        "40",
        "--out",
        &t("both.dlm"),
    ]);
    let cases = |o: &str| -> usize {
        let at = o.find(" cases;").unwrap();
        o[..at].rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        cases(&both),
        cases(&out) + 1,
        "the fit cases of both sets:\n{out}\n{both}"
    );

    // segment with the classifier and without it.
    let image = t("val/case_000/image.nii.gz");
    let with = ok(&[
        "segment",
        &image,
        "--model",
        &t("with.dlm"),
        "--out",
        &t("seg-on"),
    ]);
    ok(&[
        "segment",
        &image,
        "--model",
        &t("with.dlm"),
        "--out",
        &t("seg-off"),
        "--no-classifier",
    ]);
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join(d).join("lesions.json")).unwrap(),
        )
        .unwrap()
    };
    let (on, off) = (read("seg-on"), read("seg-off"));
    let off_lesions = off["lesions"].as_array().unwrap();
    // Without the classifier, confidence is the network's probability.
    assert!(off_lesions
        .iter()
        .all(|l| l["confidence"] == l["max_probability"]));
    // With it, every lesion's confidence is the classifier's, in order.
    let on_lesions = on["lesions"].as_array().unwrap();
    assert!(!on_lesions.is_empty(), "{with}");
    let conf: Vec<f64> = on_lesions
        .iter()
        .map(|l| l["confidence"].as_f64().unwrap())
        .collect();
    assert!(conf.windows(2).all(|w| w[0] >= w[1]), "{conf:?}");
    assert!(
        on_lesions
            .iter()
            .any(|l| l["confidence"] != l["max_probability"]),
        "{on}"
    );
}
