//! `delineate synth` end to end: byte-identical output for a seed, lesion
//! list against the truth mask read by nibabel, the truth RTSTRUCT read
//! back onto its DICOM series, previews, and clean failures.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn synth(out: &Path, seed: &str, extra: &[&str]) -> String {
    let mut args = vec!["--met-diameter", "6-20"];
    args.extend_from_slice(extra);
    synth_mets(out, "2", seed, "3-3", &args)
}

#[test]
fn same_seed_gives_byte_identical_datasets() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    synth(&a, "7", &["--preview"]);
    synth(&b, "7", &[]);
    synth(&c, "8", &[]);
    for case in ["case_000", "case_001"] {
        for f in [
            "image.nii.gz",
            "truth.nii.gz",
            "brain.nii.gz",
            "lesions.json",
        ] {
            let (x, y) = (a.join(case).join(f), b.join(case).join(f));
            assert_eq!(
                std::fs::read(&x).unwrap(),
                std::fs::read(&y).unwrap(),
                "{} differs",
                x.display()
            );
        }
        assert_ne!(
            std::fs::read(a.join(case).join("image.nii.gz")).unwrap(),
            std::fs::read(c.join(case).join("image.nii.gz")).unwrap()
        );
        let png = std::fs::read(a.join("preview").join(format!("{case}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["seed"], 7);
    assert_eq!(m["template"], "colin27");
    assert_eq!(m["cases"].as_array().unwrap().len(), 2);
}

#[test]
fn lesion_list_matches_the_mask_as_nibabel_reads_it() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d");
    synth(&out, "3", &[]);
    let case = out.join("case_000");
    // nibabel: label voxel counts and centroids in world mm (RAS → LPS).
    let v = py(&format!(
        r#"
img = nib.load({img:?}); tr = nib.load({tr:?})
t = np.asarray(tr.dataobj)
res = {{"same_affine": bool(np.allclose(img.affine, tr.affine)), "dtype": str(img.get_data_dtype()), "labels": {{}}}}
for l in np.unique(t[t > 0]):
    idx = np.argwhere(t == l)
    c = nib.affines.apply_affine(tr.affine, idx.mean(0))
    res["labels"][str(int(l))] = {{"voxels": int(len(idx)), "lps": [float(-c[0]), float(-c[1]), float(c[2])]}}
print(json.dumps(res))
"#,
        img = s(&case.join("image.nii.gz")),
        tr = s(&case.join("truth.nii.gz"))
    ));
    assert_eq!(v["same_affine"], true);
    assert_eq!(v["dtype"], "uint16");
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("lesions.json")).unwrap()).unwrap();
    let lesions = list["lesions"].as_array().unwrap();
    assert_eq!(lesions.len(), 3);
    assert_eq!(v["labels"].as_object().unwrap().len(), 3);
    for l in lesions {
        let nb = &v["labels"][l["id"].to_string()];
        assert_eq!(nb["voxels"], l["voxels"]);
        for a in 0..3 {
            let d = nb["lps"][a].as_f64().unwrap() - l["centre_mm"][a].as_f64().unwrap();
            assert!(
                d.abs() < 0.01,
                "lesion {} centre differs by {d} mm on axis {a}",
                l["id"]
            );
        }
    }
}

#[test]
fn dicom_output_carries_the_truth_as_rtstruct() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d");
    let o = s(&out);
    ok(&[
        "synth",
        "--cases",
        "1",
        "--seed",
        "5",
        "--out",
        &o,
        "--kinds",
        "met",
        "--met-count",
        "2-2",
        "--met-diameter",
        "8-20",
        "--grid",
        "1mm",
        "--sagittal-fraction",
        "0",
        "--dicom",
    ]);
    let case = out.join("case_000");
    let back = tmp.path().join("back.nii.gz");
    ok(&[
        "rtstruct",
        "read",
        &s(&case.join("rtstruct.dcm")),
        "--reference",
        &s(&case.join("dicom")),
        "--out",
        &s(&back),
    ]);
    // Contours rasterised back agree with the truth mask (Dice per lesion).
    let v = py(&format!(
        r#"
a = np.asarray(nib.load({t:?}).dataobj); b = np.asarray(nib.load({b:?}).dataobj)
d = {{}}
for l in np.unique(a[a > 0]):
    x = a == l; y = b == l
    d[str(int(l))] = float(2 * (x & y).sum() / (x.sum() + y.sum()))
print(json.dumps(d))
"#,
        t = s(&case.join("truth.nii.gz")),
        b = s(&back)
    ));
    assert_eq!(v.as_object().unwrap().len(), 2);
    for (l, dice) in v.as_object().unwrap() {
        assert!(dice.as_f64().unwrap() > 0.97, "lesion {l}: Dice {dice}");
    }
    let series: Vec<_> = files(&case.join("dicom"));
    assert!(series.len() > 100);
}

#[test]
fn bad_requests_fail_cleanly_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let o = s(&out);
    let e = fails(&["synth", "--out", &o, "--kinds", "met,glioma"]);
    assert!(e.contains("glioma"), "{e}");
    let e = fails(&["synth", "--out", &o, "--met-diameter", "30-2"]);
    assert!(e.contains("--met-diameter"), "{e}");
    let missing = tmp.path().join("nope.nii.gz");
    let e = fails(&["synth", "--out", &o, "--template", &s(&missing)]);
    assert!(e.contains("nope.nii.gz"), "{e}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep"), b"x").unwrap();
    let e = fails(&["synth", "--out", &o, "--cases", "1"]);
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn phantom_and_other_templates() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("p");
    let o = s(&p);
    ok(&[
        "synth",
        "--cases",
        "1",
        "--seed",
        "1",
        "--out",
        &o,
        "--phantom",
        "--kinds",
        "met",
        "--met-count",
        "2-2",
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["procedural_template"], true);
    let l: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("case_000/lesions.json")).unwrap()).unwrap();
    assert_eq!(l["lesions"].as_array().unwrap().len(), 2);
    // Any T1: Colin27 with skull, its brain mask derived.
    let t = tmp.path().join("t");
    let c = colin27();
    ok(&[
        "synth",
        "--cases",
        "1",
        "--seed",
        "1",
        "--out",
        &s(&t),
        "--template",
        &s(&c),
        "--kinds",
        "met",
        "--met-count",
        "2-2",
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["template"], "ch2.nii.gz");
    let l: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("case_000/lesions.json")).unwrap()).unwrap();
    assert_eq!(l["lesions"].as_array().unwrap().len(), 2, "{l}");
}
