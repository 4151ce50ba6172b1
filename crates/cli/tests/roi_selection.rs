//! A structure set as a planning system exports it (BODY, an organ at risk
//! and two GTVs): training and evaluation take the GTVs only, name what
//! they ignored, and a selection that takes nothing is an error naming
//! every ROI.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `planning/case_000/{dicom/, rtstruct.dcm}` with BODY (EXTERNAL),
/// Brainstem (ORGAN) and the case's two lesions as GTVs; `pred/case_000.nii.gz`
/// is the true lesion mask.
fn planning_case(root: &Path) {
    let data = root.join("d");
    synth_mets(
        &data,
        "1",
        "11",
        "2-2",
        &[
            "--met-diameter",
            "10-14",
            "--sagittal-fraction",
            "0",
            "--dicom",
        ],
    );
    let case = data.join("case_000");
    let mask = root.join("mask.nii.gz");
    py(&format!(
        r#"
from scipy import ndimage
img = nib.load({img:?}); a = np.asarray(img.dataobj, np.float32)
t = np.asarray(nib.load({truth:?}).dataobj).astype(int)
head = ndimage.binary_fill_holes(a > np.percentile(a[a > 0], 5))
m = np.zeros(a.shape, np.uint8)
m[head] = 1
# A brainstem-like blob far from both lesions.
x, y, z = np.ogrid[:a.shape[0], :a.shape[1], :a.shape[2]]
cs = [np.array(ndimage.center_of_mass(t == l)) for l in (1, 2)]
c = np.array(a.shape) // 2
for dz in range(-40, 41, 4):
    cand = c + np.array([0, 0, dz])
    if all(np.linalg.norm(cand - q) > 25 for q in cs): c = cand; break
m[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= 36] = 2
m[t == 1] = 3
m[t == 2] = 4
nib.save(nib.Nifti1Image(m, img.affine), {mask:?})
print(json.dumps(sorted(np.unique(m).tolist())))
"#,
        img = s(&case.join("image.nii.gz")),
        truth = s(&case.join("truth.nii.gz")),
        mask = s(&mask),
    ));
    let planning = root.join("planning/case_000");
    std::fs::create_dir_all(&planning).unwrap();
    std::fs::rename(case.join("dicom"), planning.join("dicom")).unwrap();
    let rt = planning.join("rtstruct.dcm");
    ok(&[
        "rtstruct",
        "write",
        "--mask",
        &s(&mask),
        "--reference",
        &s(&planning.join("dicom")),
        "--out",
        &s(&rt),
        "--names",
        "BODY,Brainstem,GTV_met1,GTV_met2",
    ]);
    py(&format!(
        r#"
rt = pydicom.dcmread({rt:?})
for o, t in zip(rt.RTROIObservationsSequence, ["EXTERNAL", "ORGAN", "GTV", "GTV"]):
    o.RTROIInterpretedType = t
rt.save_as({rt:?})
print(json.dumps([o.RTROIInterpretedType for o in rt.RTROIObservationsSequence]))
"#,
        rt = s(&rt)
    ));
    let pred = root.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::copy(case.join("truth.nii.gz"), pred.join("case_000.nii.gz")).unwrap();
}

fn summary(rep: &Path) -> serde_json::Value {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rep.join("report.json")).unwrap()).unwrap();
    r["experiments"][0]["summary"].clone()
}

#[test]
fn a_planning_structure_set_trains_and_evaluates_on_its_gtvs_only() {
    colin27();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    planning_case(root);
    let (planning, pred) = (root.join("planning"), root.join("pred"));
    let eval = |rep: &str, extra: &[&str]| {
        let mut args = vec![
            "evaluate".to_string(),
            "--pred".into(),
            s(&pred),
            "--truth".into(),
            s(&planning),
            "--out".into(),
            s(&root.join(rep)),
            "--bootstrap".into(),
            "none".into(),
        ];
        args.extend(extra.iter().map(|x| x.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&a);
        summary(&root.join(rep))
    };
    // The GTVs by default: both found, nothing else counted.
    let sm = eval("rep", &[]);
    assert_eq!(sm["lesions"], 2, "{sm}");
    assert_eq!(sm["recall"], 1.0, "{sm}");
    assert_eq!(sm["fp_per_case"], 0.0, "{sm}");
    // By name the same.
    let sm = eval("rep_name", &["--roi", "(?i)^gtv"]);
    assert_eq!(
        (sm["lesions"].as_u64(), sm["recall"].as_f64()),
        (Some(2), Some(1.0)),
        "{sm}"
    );
    // Every ROI: BODY and the brainstem become "lesions" the prediction
    // misses (kept apart as instances with delineate's rules).
    let sm = eval("rep_any", &["--roi-type", "any", "--rules", "delineate"]);
    assert_eq!(sm["lesions"], 4, "{sm}");
    assert_eq!(sm["recall"], 0.5, "{sm}");
    // A selection that takes nothing names what is there.
    let err = fails(&[
        "evaluate",
        "--pred",
        &s(&pred),
        "--truth",
        &s(&planning),
        "--out",
        &s(&root.join("rep_none")),
        "--roi-type",
        "CTV",
    ]);
    assert!(
        err.contains("\"BODY\" (EXTERNAL)") && err.contains("\"Brainstem\" (ORGAN)"),
        "{err}"
    );
    assert!(!root.join("rep_none/report.json").exists());

    // Training reads the same two lesions.
    let run = s(&root.join("run"));
    let out = ok(&[
        "train",
        "--data",
        &s(&planning),
        "--out",
        &run,
        "--widths",
        "4,8",
        "--patch",
        "16",
        "--batch",
        "1",
        "--epochs",
        "1",
        "--iterations",
        "2",
        "--folds",
        "0",
        "--no-cache",
    ]);
    assert!(out.contains("1 training cases (2 lesions)"), "{out}");

    // `rtstruct read` converts every ROI unless told otherwise.
    let lab = root.join("all.nii.gz");
    let o = ok(&[
        "rtstruct",
        "read",
        &s(&planning.join("case_000/rtstruct.dcm")),
        "--reference",
        &s(&planning.join("case_000/dicom")),
        "--out",
        &s(&lab),
    ]);
    assert!(o.contains("BODY") && o.contains("GTV_met2"), "{o}");
    let gtv = root.join("gtv.nii.gz");
    let o = ok(&[
        "rtstruct",
        "read",
        &s(&planning.join("case_000/rtstruct.dcm")),
        "--reference",
        &s(&planning.join("case_000/dicom")),
        "--out",
        &s(&gtv),
        "--roi-type",
        "GTV",
        "--contours",
        "union",
    ]);
    assert!(!o.contains("BODY") && o.contains("GTV_met1"), "{o}");
}
