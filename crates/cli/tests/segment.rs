//! `delineate segment` and `delineate demo` end to end with the built-in
//! model: outputs on the input grid (checked with nibabel and pydicom), a
//! structure set that dciodvfy accepts and that references the input
//! series, the fast engine against burn, batch mode, and bad input.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn no_partial_left(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(left.is_empty(), "partial outputs left: {left:?}");
}

#[test]
fn dicom_and_nifti_inputs_give_the_same_lesions_and_valid_dicom() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_mets(
        &data,
        "1",
        "5",
        "2-2",
        &["--met-diameter", "10-16", "--dicom"],
    );
    let case = data.join("case_000");
    let out = tmp.path().join("seg-dicom");
    let stdout = ok(&[
        "segment",
        &s(&case.join("dicom")),
        "--out",
        &s(&out),
        "--seg",
        // Low enough that the built-in model proposes lesions here.
        "--threshold",
        "0.3",
    ]);
    assert!(stdout.contains("lesion(s)"), "{stdout}");
    no_partial_left(tmp.path());
    // A folder holding a result is one result: refused without --force,
    // replaced whole with it (no stale file survives).
    let first_id = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(out.join("lesions.json")).unwrap(),
    )
    .unwrap()["result_id"]
        .clone();
    std::fs::write(out.join("review.json"), r#"{"reviewer": "old"}"#).unwrap();
    let args = [
        "segment",
        &s(&case.join("dicom")),
        "--out",
        &s(&out),
        "--seg",
        "--threshold",
        "0.3",
    ];
    let err = fails(&args);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert!(out.join("review.json").is_file());
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&forced);
    assert!(
        !out.join("review.json").exists(),
        "a stale file survived --force"
    );
    let second_id = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(out.join("lesions.json")).unwrap(),
    )
    .unwrap()["result_id"]
        .clone();
    assert!(first_id.is_string() && first_id != second_id);
    no_partial_left(tmp.path());
    // Outputs on the input grid; lesions.json agrees with the mask and the
    // probabilities as nibabel reads them (voxel counts, maximum
    // probability, LPS centroids through nibabel's affine).
    let r = py(&format!(
        r#"
img = nib.load({img:?}); p = nib.load({prob:?}); m = nib.load({mask:?})
les = json.load(open({les:?}))["lesions"]
md = np.asarray(m.dataobj); pd = np.asarray(p.dataobj)
counts = [int((md == l["id"]).sum()) for l in les]
cdiff, pdiff = 0.0, 0.0
for l in les:
    ijk = np.argwhere(md == l["id"]).mean(axis=0)
    ras = m.affine @ np.r_[ijk, 1.0]
    lps = np.array([-ras[0], -ras[1], ras[2]])
    cdiff = max(cdiff, float(np.abs(lps - np.array(l["centroid_lps_mm"])).max()))
    pdiff = max(pdiff, abs(float(pd[md == l["id"]].max()) - l["max_probability"]))
print(json.dumps({{
  "affine": float(max(np.abs(img.affine - p.affine).max(), np.abs(img.affine - m.affine).max())),
  "shapes": [list(img.shape), list(p.shape), list(m.shape)],
  "prob_dtype": str(p.get_data_dtype()), "max_label": int(md.max()),
  "counts_ok": counts == [l["voxels"] for l in les], "n": len(les),
  "sorted": all(les[i]["confidence"] >= les[i+1]["confidence"] for i in range(len(les) - 1)),
  "centroid_diff_mm": cdiff, "max_prob_diff": pdiff,
}}))
"#,
        img = s(&case.join("image.nii.gz")),
        prob = s(&out.join("probability.nii.gz")),
        mask = s(&out.join("mask.nii.gz")),
        les = s(&out.join("lesions.json")),
    ));
    assert!(r["affine"].as_f64().unwrap() < 1e-3, "{r}");
    assert_eq!(r["shapes"][0], r["shapes"][1]);
    assert_eq!(r["shapes"][0], r["shapes"][2]);
    assert_eq!(r["prob_dtype"], "float32");
    assert_eq!(r["counts_ok"], true, "{r}");
    assert_eq!(r["sorted"], true);
    let n = r["n"].as_u64().unwrap();
    assert_eq!(r["max_label"].as_u64().unwrap(), n);
    assert!(n >= 1, "no lesion proposed at threshold 0.3: {r}");
    assert!(r["centroid_diff_mm"].as_f64().unwrap() < 1e-3, "{r}");
    assert!(r["max_prob_diff"].as_f64().unwrap() < 1e-6, "{r}");
    // The structure set: valid, on the input series, one ROI per lesion.
    let rt = out.join("rtstruct.dcm");
    dciodvfy_clean(&rt);
    let d = py(&format!(
        r#"
rt = pydicom.dcmread({rt:?})
ser = pydicom.dcmread(sorted(os.path.join({ser:?}, f) for f in os.listdir({ser:?}))[0])
ref = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
print(json.dumps({{"series": ref.SeriesInstanceUID == ser.SeriesInstanceUID,
  "for": rt.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ser.FrameOfReferenceUID,
  "names": [r.ROIName for r in rt.StructureSetROISequence],
  "desc": [r.get("ROIDescription", "") for r in rt.StructureSetROISequence],
  "seg": pydicom.dcmread({seg:?}).SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"}}))
"#,
        rt = s(&rt),
        ser = s(&case.join("dicom")),
        seg = s(&out.join("seg.dcm")),
    ));
    assert_eq!(d["series"], true);
    assert_eq!(d["for"], true);
    assert_eq!(d["seg"], true);
    let names = d["names"].as_array().unwrap();
    assert_eq!(names.len() as u64, n);
    // Every contour lies in the plane of the image it references (its own
    // ImagePositionPatient, not the regular grid's), within DS precision.
    let z = py(&format!(
        r#"
rt = pydicom.dcmread({rt:?})
pos = {{}}
for f in os.listdir({ser:?}):
    d = pydicom.dcmread(os.path.join({ser:?}, f), stop_before_pixels=True)
    pos[d.SOPInstanceUID] = [float(v) for v in d.ImagePositionPatient]
worst, n = 0.0, 0
for rc in rt.ROIContourSequence:
    for c in rc.ContourSequence:
        ipp = pos[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
        pts = np.array(c.ContourData, float).reshape(-1, 3)
        worst = max(worst, float(np.abs(pts[:, 2] - ipp[2]).max())); n += 1
print(json.dumps({{"worst_mm": worst, "contours": n, "tz": str(rt.get("TimezoneOffsetFromUTC", ""))}}))
"#,
        rt = s(&rt),
        ser = s(&case.join("dicom")),
    ));
    assert!(z["contours"].as_u64().unwrap() > 0, "{z}");
    assert!(z["worst_mm"].as_f64().unwrap() < 1e-4, "{z}");
    assert_eq!(z["tz"].as_str().unwrap().len(), 5, "{z}");
    // An unreviewed AI draft, labelled as one.
    assert_eq!(names[0], "AI draft L1");
    let desc = d["desc"][0].as_str().unwrap();
    assert!(desc.starts_with("UNREVIEWED AI DRAFT"), "{desc}");
    assert!(
        desc.contains("max probability") && desc.contains("sha256:"),
        "{desc}"
    );

    // The same image as NIfTI: the same probabilities; --dicom-out writes a
    // series and a structure set that references it.
    let out2 = tmp.path().join("seg-nifti");
    ok(&[
        "segment",
        &s(&case.join("image.nii.gz")),
        "--out",
        &s(&out2),
        "--dicom-out",
        "--threshold",
        "0.3",
    ]);
    let c = nib_compare(
        &out.join("probability.nii.gz"),
        &out2.join("probability.nii.gz"),
        false,
    );
    assert!(c["max_abs_diff"].as_f64().unwrap() < 1e-4, "{c}");
    assert!(out2.join("dicom").is_dir() && out2.join("rtstruct.dcm").is_file());
    dciodvfy_clean(&out2.join("rtstruct.dcm"));
}

/// A 64×64×48 crop around a lesion, as NIfTI, written by nibabel.
fn crops(dir: &Path) {
    let data = dir.join("data");
    synth_mets(&data, "1", "8", "1-1", &["--met-diameter", "8-12"]);
    let case = data.join("case_000");
    py(&format!(
        r#"
img = nib.load({img:?})
l = json.load(open({les:?}))["lesions"][0]
ijk = np.linalg.solve(img.affine, np.r_[-l["centre_mm"][0], -l["centre_mm"][1], l["centre_mm"][2], 1.0])[:3].round().astype(int)
os.makedirs({out:?})
for n, shift in enumerate([(0, 0, 0), (7, -5, 3)]):
    lo = [max(0, int(ijk[a]) + shift[a] - s // 2) for a, s in enumerate((64, 64, 48))]
    sub = img.slicer[lo[0]:lo[0] + 64, lo[1]:lo[1] + 64, lo[2]:lo[2] + 48]
    nib.save(sub, os.path.join({out:?}, f"crop{{n}}.nii.gz"))
print(json.dumps({{}}))
"#,
        img = s(&case.join("image.nii.gz")),
        les = s(&case.join("lesions.json")),
        out = s(&dir.join("crops")),
    ));
}

#[test]
fn fast_engine_equals_burn_on_a_real_crop_and_batch_mode_works() {
    let tmp = tempfile::tempdir().unwrap();
    crops(tmp.path());
    let crop = tmp.path().join("crops/crop0.nii.gz");
    let (fast, burn) = (tmp.path().join("fast"), tmp.path().join("burn"));
    let out = delineate(&["segment", &s(&crop), "--out", &s(&fast), "--tta"]);
    assert!(out.status.success());
    // A 64 mm field of view is not a head: warned, still segmented.
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not look like a whole brain"));
    ok(&[
        "segment",
        &s(&crop),
        "--out",
        &s(&burn),
        "--tta",
        "--engine",
        "burn",
    ]);
    let c = nib_compare(
        &fast.join("probability.nii.gz"),
        &burn.join("probability.nii.gz"),
        false,
    );
    assert!(c["max_abs_diff"].as_f64().unwrap() < 1e-4, "{c}");
    let lesions = |d: &Path| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("lesions.json")).unwrap())
                .unwrap();
        v["lesions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["voxels"].clone())
            .collect()
    };
    // The same lesions; a voxel whose probability sits within float
    // rounding of the threshold may flip, so voxel counts agree to 0.1 %.
    let (a, b) = (lesions(&fast), lesions(&burn));
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "lesion counts differ");
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        assert!((x - y).abs() <= (0.001 * x).max(1.0), "{x} vs {y} voxels");
    }
    // Batch mode: a folder of NIfTI files gives OUT/NAME/ for each.
    let batch = tmp.path().join("batch");
    let stdout = ok(&[
        "segment",
        &s(&tmp.path().join("crops")),
        "--out",
        &s(&batch),
    ]);
    assert!(stdout.contains("2 cases (batch mode)"), "{stdout}");
    for n in ["crop0", "crop1"] {
        for f in ["probability.nii.gz", "mask.nii.gz", "lesions.json"] {
            assert!(batch.join(n).join(f).is_file(), "{n}/{f}");
        }
    }
}

#[test]
fn bad_input_is_refused_by_name_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    py(&format!(
        r#"
d = {d:?}
nib.save(nib.Nifti1Image(np.ones((64, 64), np.float32), np.eye(4)), os.path.join(d, "flat.nii.gz"))
nib.save(nib.Nifti1Image(np.ones((32, 32, 1), np.float32), np.eye(4)), os.path.join(d, "slice.nii.gz"))
nib.save(nib.Nifti1Image(np.ones((32, 32, 32, 3), np.float32), np.eye(4)), os.path.join(d, "4d.nii.gz"))
nib.save(nib.Nifti1Image(np.ones((32, 32, 32), np.float32), np.eye(4)), os.path.join(d, "ok.nii.gz"))
print(json.dumps({{}}))
"#,
        d = s(t)
    ));
    let out = t.join("out");
    let o = s(&out);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![s(&t.join("flat.nii.gz"))], "3-D"),
        (vec![s(&t.join("slice.nii.gz"))], "3-D volume is needed"),
        (vec![s(&t.join("4d.nii.gz"))], "3-D volume is needed"),
    ];
    for (args, want) in cases {
        let mut a: Vec<&str> = vec!["segment"];
        a.extend(args.iter().map(String::as_str));
        a.extend(["--out", &o]);
        let err = fails(&a);
        assert!(err.contains(want), "{a:?}: {err}");
        assert!(!out.exists(), "{a:?} left output");
    }
    // Damaged and future model files.
    let junk = t.join("junk.dlm");
    std::fs::write(&junk, b"not a model at all, just some bytes").unwrap();
    let ok_img = s(&t.join("ok.nii.gz"));
    let err = fails(&["segment", &ok_img, "--out", &o, "--model", &s(&junk)]);
    assert!(
        err.contains("junk.dlm") && err.contains("not a delineate model file"),
        "{err}"
    );
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/unet-synth.dlm"))
            .unwrap();
    let text = String::from_utf8_lossy(&shipped[24..]).into_owned();
    let at = text
        .find("\"format_version\":")
        .expect("format version in the header");
    assert!(text.as_bytes()[at + "\"format_version\":".len()].is_ascii_digit());
    let mut future = shipped.clone();
    future[24 + at + "\"format_version\":".len()] = b'7';
    let fut = t.join("future.dlm");
    std::fs::write(&fut, &future).unwrap();
    let err = fails(&["segment", &ok_img, "--out", &o, "--model", &s(&fut)]);
    assert!(err.contains("newer") && err.contains("upgrade"), "{err}");
    let mut cut = shipped.clone();
    cut.truncate(shipped.len() / 2);
    let trunc = t.join("truncated.dlm");
    std::fs::write(&trunc, &cut).unwrap();
    let err = fails(&["segment", &ok_img, "--out", &o, "--model", &s(&trunc)]);
    assert!(err.contains("truncated.dlm"), "{err}");
    // An empty DICOM folder, an output folder that cannot be made.
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(&["segment", &s(&empty), "--out", &o]);
    assert!(err.contains("empty"), "{err}");
    let blocker = t.join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = fails(&["segment", &ok_img, "--out", &s(&blocker.join("out"))]);
    assert!(err.contains("a-file"), "{err}");
    assert!(!out.exists());
    no_partial_left(t);
}

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let stdout = ok(&["demo", "--out", &s(&out)]);
    assert!(
        stdout.contains("lesions:") && stdout.contains("time per stage"),
        "{stdout}"
    );
    // The built-in model finds every lesion of the demo case (10.3, 21.5 and
    // 8.9 mm metastases on Colin27): what a new user sees first.
    assert!(stdout.contains("3 of 3 found"), "{stdout}");
    for f in [
        "overlay.png",
        "report.txt",
        "segmentation/probability.nii.gz",
        "segmentation/lesions.json",
        "case/dicom",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let err = fails(&["demo", "--out", &s(&out)]);
    assert!(err.contains("not empty"), "{err}");
}
