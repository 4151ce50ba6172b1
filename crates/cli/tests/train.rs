//! `delineate train` end to end on a tiny dataset written by nibabel:
//! run folder contents, the model file's description, resume, and errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn tiny(dir: &Path) {
    py(&format!(
        r#"
root = {root:?}
rng = np.random.default_rng(0)
for c in range(3):
    d = os.path.join(root, f"case_{{c}}")
    os.makedirs(d)
    img = 100 + 10 * rng.standard_normal((24, 24, 24))
    tgt = np.zeros((24, 24, 24), np.uint8)
    tgt[4 + c:10 + c, 5:11, 6:12] = 1
    tgt[16:18, 16:18, 16:18] = 1
    img[tgt > 0] += 80
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img.astype(np.float32), aff), os.path.join(d, "image.nii.gz"))
    nib.save(nib.Nifti1Image(tgt, aff), os.path.join(d, "truth.nii.gz"))
print("null")
"#,
        root = s(dir)
    ));
}

#[test]
fn trains_writes_a_self_describing_model_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny(&data);
    let run = tmp.path().join("run");
    let base = [
        "train",
        "--data",
        &s(&data),
        "--out",
        &s(&run),
        "--widths",
        "4,8",
        "--patch",
        "16",
        "--batch",
        "2",
        "--iterations",
        "2",
        "--folds",
        "3",
        "--checkpoint-every",
        "2",
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--epochs", "1"]);
    let out = ok(&args);
    assert!(
        out.contains("2 training cases") && out.contains("1 validation cases"),
        "{out}"
    );
    for f in [
        "options.json",
        "metrics.jsonl",
        "checkpoint.bin",
        "model.dlm",
        "best.dlm",
        "splits.json",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("splits.json")).unwrap()).unwrap();
    assert_eq!(split["train"].as_array().unwrap().len(), 2, "{split}");
    assert_eq!(split["validation"].as_array().unwrap().len(), 1, "{split}");
    // The model file: magic, JSON description, weights.
    let bytes = std::fs::read(run.join("model.dlm")).unwrap();
    assert_eq!(&bytes[..16], b"DELINEATE-MODEL\n");
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let info: serde_json::Value = serde_json::from_slice(&bytes[24..24 + len]).unwrap();
    assert_eq!(info["network"]["arch"], "unet3d");
    assert_eq!(info["network"]["widths"], serde_json::json!([4, 8]));
    // The contract, as types; the operating threshold from validation.
    let c = &info["contract"];
    assert_eq!(
        c["preprocessing"]["spacing"],
        serde_json::json!([1.0, 1.0, 1.0])
    );
    assert_eq!(c["preprocessing"]["orientation"], "ras");
    assert_eq!(c["preprocessing"]["normalisation"]["kind"], "zscore-head");
    assert_eq!(c["patch"], serde_json::json!([16, 16, 16]));
    let v = &info["training"]["validation"];
    let (t, vt) = (c["operating_threshold"].as_f64(), v["threshold"].as_f64());
    assert!(
        t.zip(vt).is_some_and(|(a, b)| (a - b).abs() < 1e-6),
        "{info}"
    );
    assert!(v["summary"]["average_precision"].is_number(), "{info}");
    assert_eq!(info["training"]["loss"], "iwbce");
    assert_eq!(info["training"]["engine"], "fast");
    assert!(bytes.len() > 24 + len + 1000);
    // Same folder again: refused without --resume; with it, training goes on.
    let e = fails(&args);
    assert!(e.contains("--resume"), "{e}");
    // A resume with another fold would validate on a case it trained on.
    let mut other: Vec<&str> = base.to_vec();
    other.extend(["--epochs", "2", "--resume", "--fold", "1"]);
    let e = fails(&other);
    assert!(
        e.contains("splits.json") && e.contains("another split"),
        "{e}"
    );
    let mut more: Vec<&str> = base.to_vec();
    more.extend(["--epochs", "2", "--resume"]);
    let out = ok(&more);
    // Training cases come from the cache; the validation case is read as
    // acquired (validation is deployment).
    assert!(out.contains("(2 read from the cache)"), "{out}");
    let lines = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 4);
    // Learning curves: written at each validation, and by `curves` for
    // several runs on one figure.
    assert!(run.join("learning_curves.png").is_file());
    let fig = tmp.path().join("fig");
    let out = ok(&["curves", &format!("tiny={}", s(&run)), "--out", &s(&fig)]);
    assert!(out.contains("tiny: 4 iterations, 2 validations"), "{out}");
    let png = std::fs::read(fig.join("learning_curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(std::fs::read_to_string(fig.join("learning_curves.svg"))
        .unwrap()
        .contains("tiny"));
}

#[test]
fn bad_training_requests_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny(&data);
    let run = s(&tmp.path().join("run"));
    let d = s(&data);
    let e = fails(&[
        "train",
        "--data",
        &d,
        "--out",
        &run,
        "--widths",
        "4,8,16",
        "--patch",
        "18",
        "--epochs",
        "1",
        "--iterations",
        "1",
    ]);
    assert!(e.contains("multiple of 4"), "{e}");
    let e = fails(&["train", "--data", &d, "--out", &run, "--device", "cuda"]);
    assert!(e.contains("CUDA"), "{e}");
    let e = fails(&[
        "train",
        "--data",
        &s(&tmp.path().join("none")),
        "--out",
        &run,
    ]);
    assert!(e.contains("none"), "{e}");
    let e = fails(&[
        "train", "--data", &d, "--out", &run, "--folds", "3", "--fold", "3",
    ]);
    assert!(e.contains("--fold"), "{e}");
    // Cases drawn on the held-out test background are refused by name, and
    // an unreadable lesion table is named too; nothing is written.
    std::fs::write(
        data.join("case_1/lesions.json"),
        r#"{"name": "case_1", "template": "mni152", "lesions": []}"#,
    )
    .unwrap();
    let e = fails(&["train", "--data", &d, "--out", &run]);
    assert!(
        e.contains("held-out test background") && e.contains("case_1") && e.contains("1 case"),
        "{e}"
    );
    std::fs::write(data.join("case_2/lesions.json"), "{not json").unwrap();
    let e = fails(&["train", "--data", &d, "--out", &run]);
    assert!(e.contains("case_2") && e.contains("lesions.json"), "{e}");
    assert!(!tmp.path().join("run").exists());
}

/// Training data straight from a planning system: DICOM series + RTSTRUCT.
#[test]
fn trains_on_dicom_with_rtstruct() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let syn = tmp.path().join("syn");
    ok(&[
        "synth",
        "--cases",
        "1",
        "--seed",
        "2",
        "--out",
        &s(&syn),
        "--kinds",
        "met",
        "--met-count",
        "2-2",
        "--met-diameter",
        "8-12",
        "--grid",
        "1mm",
        "--sagittal-fraction",
        "0",
        "--dicom",
    ]);
    let data = tmp.path().join("data").join("patient1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::rename(syn.join("case_000/dicom"), data.join("dicom")).unwrap();
    std::fs::rename(syn.join("case_000/rtstruct.dcm"), data.join("rtstruct.dcm")).unwrap();
    let run = tmp.path().join("run");
    let out = ok(&[
        "train",
        "--data",
        &s(&tmp.path().join("data")),
        "--out",
        &s(&run),
        "--widths",
        "4,8",
        "--patch",
        "16",
        "--batch",
        "1",
        "--epochs",
        "1",
        "--iterations",
        "1",
        "--folds",
        "0",
    ]);
    assert!(out.contains("1 training cases (2 lesions)"), "{out}");
    assert!(run.join("model.dlm").is_file());
}

#[test]
fn vnet_and_deepmedic_train_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny(&data);
    for (arch, widths, patch) in [("vnet", "4,8", "16"), ("deepmedic", "4,4", "18")] {
        let run = tmp.path().join(arch);
        ok(&[
            "train",
            "--data",
            &s(&data),
            "--out",
            &s(&run),
            "--arch",
            arch,
            "--widths",
            widths,
            "--patch",
            patch,
            "--batch",
            "1",
            "--epochs",
            "1",
            "--iterations",
            "2",
            "--folds",
            "0",
        ]);
        let bytes = std::fs::read(run.join("model.dlm")).unwrap();
        let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let info: serde_json::Value = serde_json::from_slice(&bytes[24..24 + len]).unwrap();
        assert_eq!(info["network"]["arch"], arch);
    }
    let e = fails(&[
        "train",
        "--data",
        &s(&data),
        "--out",
        &s(&tmp.path().join("x")),
        "--arch",
        "deepmedic",
        "--patch",
        "16",
    ]);
    assert!(e.contains("multiple of 3"), "{e}");
}
