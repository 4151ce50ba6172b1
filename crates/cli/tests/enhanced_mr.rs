//! Multi-frame (Enhanced) MR input: a series converted to one Legacy
//! Converted Enhanced MR instance by highdicom (a writer we did not write)
//! reads exactly like its single-frame source, and the structure set made
//! on it points at frames (Referenced Frame Number) that dciodvfy accepts
//! and whose positions match the contours.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use support::{dciodvfy_clean, fails, highdicom_enhanced, nib_compare, ok, py};

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// An oblique single-frame series (written by us from a crop of Colin27
/// with a bright sphere) and its highdicom multi-frame conversion.
fn fixture(dir: &Path) {
    py(&format!(
        r#"
img = nib.load({colin:?})
data = np.asarray(img.dataobj, dtype=np.float32)[50:130, 60:150, 60:110].copy()
ii, jj, kk = np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij")
data[(ii - 40) ** 2 + (jj - 45) ** 2 + (kk - 25) ** 2 < 64] = data.max() * 1.5
t = np.deg2rad(15.0)
rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
aff = np.eye(4); aff[:3, :3] = rot @ np.diag([0.9, 0.9, 1.2]); aff[:3, 3] = [-40, -50, -20]
nib.save(nib.Nifti1Image(data.astype(np.int16), aff), {nii:?})
print(json.dumps({{}}))
"#,
        colin = s(&support::colin27()),
        nii = s(&dir.join("crop.nii.gz")),
    ));
    ok(&[
        "dicom",
        "write",
        &s(&dir.join("crop.nii.gz")),
        "--out",
        &s(&dir.join("single")),
    ]);
    highdicom_enhanced(&dir.join("single"), &dir.join("multi"));
}

#[test]
fn enhanced_mr_reads_like_its_source_and_gets_frame_references() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fixture(d);
    ok(&[
        "convert",
        &s(&d.join("single")),
        &s(&d.join("single.nii.gz")),
    ]);
    ok(&["convert", &s(&d.join("multi")), &s(&d.join("multi.nii.gz"))]);
    let c = nib_compare(&d.join("single.nii.gz"), &d.join("multi.nii.gz"), false);
    assert!(c["affine_diff"].as_f64().unwrap() < 1e-4, "{c}");
    assert_eq!(c["max_abs_diff"].as_f64().unwrap(), 0.0, "{c}");

    // Contours on the multi-frame series: valid, one reference per frame,
    // and each contour lies on the plane of the frame it references.
    let out = d.join("seg");
    ok(&[
        "segment",
        &s(&d.join("multi")),
        "--out",
        &s(&out),
        "--threshold",
        "0.05",
        "--seg",
    ]);
    for f in ["rtstruct.dcm", "seg.dcm"] {
        dciodvfy_clean(&out.join(f));
    }
    let r = py(&format!(
        r#"
rt = pydicom.dcmread({rt:?}); mf = pydicom.dcmread({mf:?})
iop = np.array(mf.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
n = np.cross(iop[:3], iop[3:])
pos = [np.array(f.PlanePositionSequence[0].ImagePositionPatient, float) @ n for f in mf.PerFrameFunctionalGroupsSequence]
ser = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
worst, contours = 0.0, 0
for roi in rt.ROIContourSequence:
    for c in roi.ContourSequence:
        ref = c.ContourImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == mf.SOPInstanceUID
        pts = np.array(c.ContourData, float).reshape(-1, 3) @ n
        worst = max(worst, float(np.abs(pts - pos[int(ref.ReferencedFrameNumber) - 1]).max()))
        contours += 1
print(json.dumps({{"frames_referenced": sorted(int(i.ReferencedFrameNumber) for i in ser.ContourImageSequence) == list(range(1, int(mf.NumberOfFrames) + 1)),
  "worst_mm": worst, "contours": contours}}))
"#,
        rt = s(&out.join("rtstruct.dcm")),
        mf = s(&d.join("multi/enhanced.dcm")),
    ));
    assert_eq!(r["frames_referenced"], true, "{r}");
    assert!(r["contours"].as_u64().unwrap() > 0, "{r}");
    assert!(r["worst_mm"].as_f64().unwrap() < 1e-3, "{r}");
}

#[test]
fn several_stacks_in_one_instance_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fixture(d);
    // Frame 2 moved onto frame 1's plane: two frames at one position, as
    // in a multi-echo or dynamic Enhanced MR.
    let f = d.join("multi/enhanced.dcm");
    py(&format!(
        r#"
m = pydicom.dcmread({f:?})
m.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient = \
    m.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
m.save_as({f:?})
print(json.dumps({{}}))
"#,
        f = s(&f)
    ));
    let err = fails(&["convert", &s(&d.join("multi")), &s(&d.join("x.nii.gz"))]);
    assert!(
        err.contains("frames 1 and 2 lie at the same position"),
        "{err}"
    );
    assert!(err.contains("enhanced.dcm"), "{err}");
    assert!(!d.join("x.nii.gz").exists());
}
