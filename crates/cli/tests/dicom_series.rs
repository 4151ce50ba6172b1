//! DICOM series written by plastimatch (software we did not write), read by
//! `delineate info` / `delineate convert`, and checked against plastimatch's
//! own conversion, nibabel and pydicom.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn check_world(dicom: &Path, nifti: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/check_world.py");
    py(&format!(
        "import subprocess\nr = subprocess.run([sys.executable, {:?}, {:?}, {:?}], capture_output=True, text=True)\nassert r.returncode == 0, r.stderr\nprint(r.stdout.strip())",
        script.to_string_lossy(),
        dicom.to_string_lossy(),
        nifti.to_string_lossy()
    ))
}

fn assert_world_exact(dicom: &Path, nifti: &Path) {
    let w = check_world(dicom, nifti);
    assert!(w["checked"].as_u64().unwrap() >= 40, "{w}");
    assert!(w["max_index_error"].as_f64().unwrap() < 1e-3, "{w}");
    assert_eq!(w["value_mismatches"], 0, "{w}");
}

/// Colin27 as an MR series (plastimatch), in a fresh temporary folder.
fn colin_series(tmp: &Path) -> PathBuf {
    let d = tmp.join("colin_dcm");
    plastimatch_dicom(
        &colin27(),
        &d,
        &[
            "--series-description",
            "T1 colin27",
            "--patient-id",
            "COLIN27",
        ],
    );
    d
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn colin27_series_matches_plastimatch_nibabel_and_pydicom() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    let ours = tmp.path().join("ours.nii.gz");
    ok(&["convert", &s(&dcm), &s(&ours)]);
    let theirs = tmp.path().join("plastimatch.nii.gz");
    run_tool(
        "plastimatch",
        &["convert", "--input", &s(&dcm), "--output-img", &s(&theirs)],
    );
    let c = nib_compare(&ours, &theirs, false);
    assert_eq!(c["shape_a"], serde_json::json!([181, 217, 181]), "{c}");
    assert!(c["affine_diff"].as_f64().unwrap() < 1e-3, "{c}");
    assert_eq!(c["voxels_differing"], 0, "{c}");
    // Also identical to the NIfTI plastimatch started from.
    let c0 = nib_compare(&ours, &colin27(), false);
    assert!(
        c0["affine_diff"].as_f64().unwrap() < 1e-3 && c0["voxels_differing"] == 0,
        "{c0}"
    );
    assert_world_exact(&dcm, &ours);
    // info reports what the series says.
    let info = info_json(&dcm, &[]);
    assert_eq!(info["selected"]["patient_id"], "COLIN27");
    assert_eq!(info["selected"]["series_description"], "T1 colin27");
    assert_eq!(info["geometry"]["orientation"], "RAS");
    assert_eq!(
        info["geometry"]["origin_lps_mm"],
        serde_json::json!([90.0, 125.0, -71.0])
    );
}

#[test]
fn shuffled_renamed_nested_files_with_junk_give_the_same_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    let messy = tmp.path().join("messy");
    for (n, f) in files(&dcm).iter().enumerate() {
        // Reverse-ish, scrambled names in nested folders, no extension.
        let sub = messy.join(format!("d{}", (n * 7) % 3)).join("x");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(f, sub.join(format!("IM{:05}", (n * 7919) % 1000))).unwrap();
    }
    std::fs::write(messy.join("README.txt"), "not dicom").unwrap();
    std::fs::write(messy.join("d0").join("notes.dcm"), vec![7u8; 300]).unwrap();
    let a = tmp.path().join("a.nii.gz");
    let b = tmp.path().join("b.nii.gz");
    ok(&["convert", &s(&dcm), &s(&a)]);
    ok(&["convert", &s(&messy), &s(&b)]);
    let c = nib_compare(&a, &b, false);
    assert!(
        c["affine_diff"].as_f64().unwrap() == 0.0 && c["voxels_differing"] == 0,
        "{c}"
    );
    assert_eq!(info_json(&messy, &[])["files"]["non_dicom_ignored"], 2);
}

#[test]
fn a_deleted_slice_is_named_and_can_be_resampled() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    let all = files(&dcm);
    let removed = &all[90];
    std::fs::remove_file(removed).unwrap();
    let out = tmp.path().join("x.nii.gz");
    let err = fails(&["convert", &s(&dcm), &s(&out)]);
    assert!(err.contains("1 slice(s) missing"), "{err}");
    assert!(
        err.contains(&s(&all[89])) && err.contains(&s(&all[91])),
        "{err}"
    );
    assert!(!out.exists(), "no partial output");
    // With resampling: 181 slices again, the gap filled by interpolation.
    ok(&[
        "convert",
        &s(&dcm),
        &s(&out),
        "--allow-irregular-spacing",
        "--dtype",
        "float32",
    ]);
    let r = py(&format!(
        "a = np.asarray(nib.load({:?}).dataobj, dtype=float); c = np.asarray(nib.load({:?}).dataobj, dtype=float)\n\
         k = [i for i in range(c.shape[2])]\n\
         print(json.dumps({{'shape': list(a.shape), 'interp_err': float(np.abs(a[:,:,90] - (c[:,:,89] + c[:,:,91]) / 2).max()), 'other_diff': float(np.abs(np.delete(a, 90, 2) - np.delete(c, 90, 2)).max())}}))",
        s(&out),
        COLIN27
    ));
    assert_eq!(r["shape"], serde_json::json!([181, 217, 181]), "{r}");
    assert!(r["interp_err"].as_f64().unwrap() < 1e-3, "{r}");
    assert_eq!(r["other_diff"].as_f64().unwrap(), 0.0, "{r}");
}

#[test]
fn duplicated_slices_copy_is_dropped_new_instance_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    let all = files(&dcm);
    let copy = dcm.join("copy_of_50.dcm");
    std::fs::copy(&all[50], &copy).unwrap();
    let a = tmp.path().join("a.nii.gz");
    let out = delineate(&["convert", &s(&dcm), &s(&a)]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("second copy of SOP instance"), "{stderr}");
    let c = nib_compare(&a, &colin27(), false);
    assert_eq!(c["voxels_differing"], 0, "{c}");
    // Same position, different SOP Instance UID: refuse.
    py(&format!(
        "ds = pydicom.dcmread({:?}); ds.SOPInstanceUID = '1.2.3.4.5.6.7'; ds.file_meta.MediaStorageSOPInstanceUID = '1.2.3.4.5.6.7'; ds.save_as({:?}); print('null')",
        s(&copy),
        s(&copy)
    ));
    let err = fails(&["convert", &s(&dcm), &s(&a)]);
    assert!(
        err.contains("two different slices at the same position") && err.contains("copy_of_50.dcm"),
        "{err}"
    );
}

#[test]
fn a_second_series_needs_a_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    plastimatch_dicom(
        Path::new(COLIN27_BET),
        &dcm.join("bet"),
        &["--series-description", "T1 brain only"],
    );
    let out = tmp.path().join("x.nii.gz");
    let err = fails(&["convert", &s(&dcm), &s(&out)]);
    assert!(
        err.contains("2 3-D series found")
            && err.contains("T1 colin27")
            && err.contains("T1 brain only"),
        "{err}"
    );
    let listing = info_json(&dcm, &[]);
    assert_eq!(listing["series"].as_array().unwrap().len(), 2);
    assert!(listing["geometry"].is_null());
    ok(&[
        "convert",
        &s(&dcm),
        &s(&out),
        "--series-description",
        "brain ONLY",
    ]);
    let c = nib_compare(&out, Path::new(COLIN27_BET), false);
    assert_eq!(c["voxels_differing"], 0, "{c}");
    let uid = listing["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["description"] == "T1 colin27")
        .unwrap()["series_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&["convert", &s(&dcm), &s(&out), "--series", &uid]);
    assert_eq!(nib_compare(&out, &colin27(), false)["voxels_differing"], 0);
    let err = fails(&["convert", &s(&dcm), &s(&out), "--series", "1.2.3"]);
    assert!(
        err.contains("no series with SeriesInstanceUID 1.2.3"),
        "{err}"
    );
}

/// Writes Colin27 reoriented/re-gridded with nibabel, for plastimatch.
fn make_nifti(tmp: &Path, name: &str, code: &str) -> PathBuf {
    let p = tmp.join(name);
    py(&format!(
        r#"
from nibabel import orientations as o
import math
img = nib.load({colin:?}); data = np.asarray(img.dataobj).astype(np.int16)
img = nib.Nifti1Image(data, img.affine)
kind = {code:?}
if kind == "sagittal":
    t = o.ornt_transform(o.io_orientation(img.affine), o.axcodes2ornt(("P", "I", "L")))
    out = img.as_reoriented(t)
elif kind == "oblique":
    a, b = math.radians(20), math.radians(-10)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    aff = np.eye(4); aff[:3, :3] = ry @ rx @ np.diag([0.9, 1.1, 1.25]); aff[:3, 3] = [-80.5, -110.25, -60.75]
    out = nib.Nifti1Image(data[:160, :190, :120], aff)
elif kind == "nonsquare":
    aff = np.diag([0.9, 1.2, 2.0, 1.0]); aff[:3, 3] = [-81.0, -100.5, -70.0]
    out = nib.Nifti1Image(data[:, :192, ::2], aff)
nib.save(out, {p:?}); print("null")
"#,
        colin = COLIN27,
        code = code,
        p = p.to_string_lossy()
    ));
    p
}

#[test]
fn sagittal_oblique_and_non_square_acquisitions() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, orientation) in [
        ("sagittal", "PIR"),
        ("oblique", "RAS"),
        ("nonsquare", "RAS"),
    ] {
        let src = make_nifti(tmp.path(), &format!("{kind}.nii.gz"), kind);
        let dcm = tmp.path().join(format!("{kind}_dcm"));
        plastimatch_dicom(&src, &dcm, &[]);
        let ours = tmp.path().join(format!("{kind}_ours.nii.gz"));
        ok(&["convert", &s(&dcm), &s(&ours)]);
        assert_world_exact(&dcm, &ours);
        let theirs = tmp.path().join(format!("{kind}_plastimatch.nii.gz"));
        run_tool(
            "plastimatch",
            &["convert", "--input", &s(&dcm), "--output-img", &s(&theirs)],
        );
        let c = nib_compare(&ours, &theirs, true);
        assert!(c["affine_diff"].as_f64().unwrap() < 1e-3, "{kind}: {c}");
        assert_eq!(c["voxels_differing"], 0, "{kind}: {c}");
        let c0 = nib_compare(&ours, &src, true);
        assert!(
            c0["affine_diff"].as_f64().unwrap() < 1e-3 && c0["voxels_differing"] == 0,
            "{kind}: {c0}"
        );
        let info = info_json(&dcm, &[]);
        assert_eq!(info["geometry"]["orientation"], orientation, "{kind}");
        if kind == "nonsquare" {
            let sp: Vec<f64> = info["geometry"]["spacing_mm"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                (sp[0] - 0.9).abs() < 1e-6
                    && (sp[1] - 1.2).abs() < 1e-6
                    && (sp[2] - 2.0).abs() < 1e-4,
                "{sp:?}"
            );
            assert_eq!(info["geometry"]["size"], serde_json::json!([181, 192, 91]));
        }
    }
}

#[test]
fn gantry_tilt_is_refused_or_resampled() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    // Shift each slice 0.2 mm posterior per mm along the normal (~11.3°).
    py(&format!(
        r#"
for n in sorted(os.listdir({d:?})):
    p = os.path.join({d:?}, n); ds = pydicom.dcmread(p)
    x, y, z = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [x, y + 0.2 * (z + 71.0), z]
    ds.save_as(p)
print("null")
"#,
        d = s(&dcm)
    ));
    let out = tmp.path().join("t.nii.gz");
    let err = fails(&["convert", &s(&dcm), &s(&out)]);
    assert!(err.contains("gantry tilt") && err.contains("11.3"), "{err}");
    ok(&["convert", &s(&dcm), &s(&out), "--allow-tilt"]);
    let info = info_json(&out, &[]);
    assert_eq!(info["geometry"]["orthonormal"], true);
    // The sheared stack covers 0.2 × 180 = 36 mm more in y.
    assert_eq!(info["geometry"]["size"], serde_json::json!([181, 253, 181]));
    // A voxel in the middle of the brain keeps its value at its true position.
    let r = py(&format!(
        r#"
ds = pydicom.dcmread(sorted([os.path.join({d:?}, n) for n in os.listdir({d:?})], key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[90])
ipp = np.array([float(v) for v in ds.ImagePositionPatient]); r, c = 100, 90
lps = ipp + np.array([-1.0, 0, 0]) * c + np.array([0, -1.0, 0]) * r
img = nib.load({o:?}); ijk = np.linalg.inv(img.affine) @ np.array([-lps[0], -lps[1], lps[2], 1.0])
v = np.asarray(img.dataobj)[tuple(np.round(ijk[:3]).astype(int))]
print(json.dumps({{"err": float(np.abs(ijk[:3] - np.round(ijk[:3])).max()), "ours": float(v), "dicom": float(ds.pixel_array[r, c])}}))
"#,
        d = s(&dcm),
        o = s(&out)
    ));
    assert!(r["err"].as_f64().unwrap() < 1e-3, "{r}");
    assert_eq!(r["ours"], r["dicom"], "{r}");
}

#[test]
fn truncated_corrupt_and_empty_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    let all = files(&dcm);
    // Truncated in the pixel data: header fine, decoding fails naming the file.
    let bytes = std::fs::read(&all[10]).unwrap();
    std::fs::write(&all[10], &bytes[..bytes.len() - 5000]).unwrap();
    let out = tmp.path().join("x.nii.gz");
    let err = fails(&["convert", &s(&dcm), &s(&out)]);
    assert!(err.contains(&s(&all[10])), "{err}");
    assert!(!out.exists());
    // Truncated in the header: unparsable, listed; skipping it leaves a gap.
    std::fs::write(&all[10], &bytes[..400]).unwrap();
    let err = fails(&["info", &s(&dcm)]);
    assert!(
        err.contains("cannot be parsed") && err.contains(&s(&all[10])),
        "{err}"
    );
    let err = fails(&["info", &s(&dcm), "--skip-unreadable"]);
    assert!(err.contains("1 slice(s) missing"), "{err}");
    // Empty folder, missing path, and a file that is neither format.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(fails(&["convert", &s(&empty), &s(&out)]).contains("no DICOM"));
    assert!(fails(&["info", &s(&tmp.path().join("nope"))]).contains("nope"));
    let txt = tmp.path().join("a.txt");
    std::fs::write(&txt, "hello world").unwrap();
    assert!(fails(&["info", &s(&txt)]).contains("neither a NIfTI"));
    // Bad output name: refused before reading anything.
    assert!(fails(&["convert", &s(&empty), &s(&tmp.path().join("x.png"))]).contains(".nii"));
}

#[test]
fn slices_that_disagree_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = colin_series(tmp.path());
    let all = files(&dcm);
    let out = tmp.path().join("x.nii.gz");
    // A slice with another orientation (a localizer filed in the series).
    py(&format!(
        "ds = pydicom.dcmread({p:?}); ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]; ds.save_as({p:?}); print('null')",
        p = s(&all[40])
    ));
    let err = fails(&["convert", &s(&dcm), &s(&out)]);
    assert!(
        err.contains("ImageOrientationPatient") && err.contains(&s(&all[40])),
        "{err}"
    );
    // Put it back, then give another slice a different matrix size.
    py(&format!(
        "ds = pydicom.dcmread({p:?}); ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]; ds.save_as({p:?})\n\
         ds = pydicom.dcmread({q:?}); a = ds.pixel_array[:200, :180].copy(); ds.Rows, ds.Columns = a.shape; ds.PixelData = a.tobytes(); ds.save_as({q:?}); print('null')",
        p = s(&all[40]),
        q = s(&all[60])
    ));
    let err = fails(&["convert", &s(&dcm), &s(&out)]);
    assert!(
        err.contains("image size") && err.contains(&s(&all[60])),
        "{err}"
    );
    assert!(!out.exists());
}
