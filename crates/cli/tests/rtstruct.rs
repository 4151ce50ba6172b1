//! RT Structure Sets written by `delineate rtstruct write`, checked with
//! tools we did not write: dciodvfy (no errors), plastimatch (rasterises
//! them back voxel for voxel), pydicom and dcmtk's dcmdump/drtdump; and
//! `delineate dicom write` series checked the same way.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A mask on the grid of `reference_nii`: label 1 = a ring (sphere with a
/// spherical hole) with an island in the hole, plus a single voxel; label
/// 2 = a small ball, plus the voxel at index (0, 0, 0) on the border.
fn make_mask(reference_nii: &Path, out: &Path) {
    py(&format!(
        r#"
img = nib.load({r:?}); shape = img.shape[:3]
m = np.zeros(shape, np.uint8)
g = np.indices(shape)
c = np.array(shape) // 2
def ball(centre, r, lab):
    m[((g - np.array(centre).reshape(3, 1, 1, 1)) ** 2).sum(0) <= r * r] = lab
ball(c, min(shape) // 6, 1); ball(c, min(shape) // 14, 0); ball(c, 1.5, 1)
ball(c // 2 + 3, 3, 2)
m[0, 0, 0] = 2
m[tuple(c + np.array([0, min(shape) // 4, 0]))] = 1
nib.save(nib.Nifti1Image(m, img.affine), {o:?}); print("null")
"#,
        r = s(reference_nii),
        o = s(out)
    ));
}

/// plastimatch's rasterisation of each ROI compared with the mask, per label
/// (`names[n]` is the ROI name of label n + 1).
fn plastimatch_back(
    rt: &Path,
    reference: &Path,
    mask: &Path,
    tmp: &Path,
    names: &[&str],
) -> serde_json::Value {
    let prefix = tmp.join("plastimatch_rois");
    run_tool(
        "plastimatch",
        &[
            "convert",
            "--input",
            &s(rt),
            "--referenced-ct",
            &s(reference),
            "--output-prefix",
            &s(&prefix),
            "--prefix-format",
            "nii.gz",
            "--xor-contours",
        ],
    );
    py(&format!(
        r#"
import glob
mi = nib.load({m:?}); m = np.asarray(mi.dataobj)
out = {{}}
for f in sorted(glob.glob(os.path.join({p:?}, "*.nii.gz"))):
    a = nib.as_closest_canonical(nib.load(f))
    lab = {names:?}.index(os.path.basename(f)[:-len(".nii.gz")]) + 1
    t = nib.as_closest_canonical(nib.Nifti1Image((m == lab).astype(np.uint8), mi.affine))
    x, y = np.asarray(a.dataobj) > 0, np.asarray(t.dataobj) > 0
    out[str(lab)] = {{"differ": int((x != y).sum()), "voxels": int(y.sum()), "affine": float(np.abs(a.affine - t.affine).max()),
                     "dice": float(2 * (x & y).sum() / max(x.sum() + y.sum(), 1))}}
print(json.dumps(out))
"#,
        m = s(mask),
        p = s(&prefix),
        names = names
    ))
}

/// An independent even-odd rasterisation (pydicom + nibabel + numpy) of
/// every contour of ROI `roi` at the voxel centres near it, compared with
/// label `roi` of the mask: the number of mismatching voxels plus the
/// number of vertices that are not on a voxel corner.
fn independent_even_odd_mismatches(rt: &Path, grid: &Path, mask: &Path, roi: u32) -> u64 {
    let v = py(&format!(
        r#"
from collections import defaultdict
ds = pydicom.dcmread({rt:?}); inv = np.linalg.inv(nib.load({g:?}).affine)
m = np.asarray(nib.load({m:?}).dataobj) == {roi}
polys = defaultdict(list)
off_corner = 0
for c in [r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == {roi}][0].ContourSequence:
    p = np.array(c.ContourData, float).reshape(-1, 3)
    ijk = (inv @ np.c_[-p[:, 0], -p[:, 1], p[:, 2], np.ones(len(p))].T).T[:, :3]
    polys[int(round(ijk[:, 2].mean()))].append(ijk[:, :2])
    # Vertices sit on voxel corners (half-integer indices), never at centres.
    off_corner += int((np.abs(np.abs(ijk[:, :2] - np.floor(ijk[:, :2])) - 0.5) > 1e-3).sum())
def parity(xs, ys, poly):
    c = np.zeros(xs.shape, bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, 0)):
        if y1 == y2:
            continue
        c ^= ((y1 > ys) != (y2 > ys)) & (xs < x1 + (ys - y1) * (x2 - x1) / (y2 - y1))
    return c
bad = 0
for k, pl in polys.items():
    allp = np.vstack(pl); lo = np.maximum(np.floor(allp.min(0)).astype(int) - 1, 0); hi = np.ceil(allp.max(0)).astype(int) + 2
    xs, ys = np.meshgrid(np.arange(lo[0], min(hi[0], m.shape[0])), np.arange(lo[1], min(hi[1], m.shape[1])), indexing="ij")
    inside = np.zeros(xs.shape, bool)
    for p in pl:
        inside ^= parity(xs, ys, p)
    bad += int((inside != m[xs, ys, k]).sum())
print(int(bad + off_corner))
"#,
        rt = s(rt),
        g = s(grid),
        m = s(mask)
    ));
    v.as_u64().unwrap()
}

/// Writes an RTSTRUCT for the test mask and checks it: dciodvfy, an
/// independent even-odd rasterisation, plastimatch (exact, or Dice ≥
/// `plastimatch_min_dice` where plastimatch itself deviates), our reader.
fn check_round_trip(
    reference: &Path,
    reference_nii: &Path,
    tmp: &Path,
    extra: &[&str],
    names: &[&str],
    plastimatch_min_dice: f64,
) {
    let mask = tmp.join("mask.nii.gz");
    make_mask(reference_nii, &mask);
    let rt = tmp.join("rt.dcm");
    let mut args = vec![
        "rtstruct",
        "write",
        "--mask",
        &*Box::leak(s(&mask).into_boxed_str()),
        "--reference",
    ];
    let r = s(reference);
    let o = s(&rt);
    args.extend_from_slice(&[&r, "--out", &o]);
    args.extend_from_slice(extra);
    ok(&args);
    dciodvfy_clean(&rt);
    for roi in [1, 2] {
        assert_eq!(
            independent_even_odd_mismatches(&rt, reference_nii, &mask, roi),
            0,
            "ROI {roi}"
        );
    }
    // plastimatch gives every ROI back (holes, single and border voxels).
    let back = plastimatch_back(&rt, reference, &mask, tmp, names);
    for lab in ["1", "2"] {
        let v = &back[lab];
        if plastimatch_min_dice >= 1.0 {
            assert_eq!(v["differ"], 0, "plastimatch ROI {lab}: {back}");
        } else {
            assert!(
                v["dice"].as_f64().unwrap() >= plastimatch_min_dice,
                "plastimatch ROI {lab}: {back}"
            );
        }
        assert!(v["affine"].as_f64().unwrap() < 1e-3, "{back}");
    }
    // And so do we.
    let ours = tmp.join("back.nii.gz");
    ok(&[
        "rtstruct",
        "read",
        &o,
        "--reference",
        &r,
        "--out",
        &s(&ours),
    ]);
    let c = nib_compare(&ours, &mask, true);
    assert_eq!(c["voxels_differing"], 0, "{c}");
}

#[test]
fn colin27_structure_set_passes_dciodvfy_and_plastimatch_gives_masks_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = tmp.path().join("dcm");
    plastimatch_dicom(&colin27(), &dcm, &["--patient-id", "COLIN27"]);
    check_round_trip(
        &dcm,
        &colin27(),
        tmp.path(),
        &["--names", "Metastasis,Meningioma"],
        &["Metastasis", "Meningioma"],
        1.0,
    );
    let rt = tmp.path().join("rt.dcm");
    // pydicom: every DS fits 16 bytes, every contour points at the image of its slice.
    let v = py(&format!(
        r#"
ds = pydicom.dcmread({rt:?})
imgs = {{}}
for f in os.listdir({d:?}):
    x = pydicom.dcmread(os.path.join({d:?}, f), stop_before_pixels=True)
    imgs[x.SOPInstanceUID] = float(x.ImagePositionPatient[2])
bad_ds, bad_ref, n, points, collinear = 0, 0, 0, 0, 0
for roi in ds.ROIContourSequence:
    for c in roi.ContourSequence:
        n += 1
        raw = c.get_item(0x30060050).value  # the bytes as written, before pydicom parses them
        raw = raw if isinstance(raw, bytes) else "\\".join(map(str, raw)).encode()
        bad_ds += sum(len(v) > 16 for v in raw.decode().strip(" \x00").split("\\"))
        z = float(c.ContourData[2])
        ref = c.ContourImageSequence[0].ReferencedSOPInstanceUID
        bad_ref += abs(imgs[ref] - z) > 1e-3
        pts = np.array(c.ContourData, dtype=float).reshape(-1, 3)
        points += len(pts)
        a, b, cc = np.roll(pts, 1, 0), pts, np.roll(pts, -1, 0)
        collinear += int((np.abs(np.cross(b - a, cc - b)).sum(1) < 1e-9).sum())
print(json.dumps({{"contours": n, "bad_ds": int(bad_ds), "bad_ref": int(bad_ref), "points": points, "collinear": collinear,
  "names": [r.ROIName for r in ds.StructureSetROISequence], "types": [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence],
  "for": ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ds.FrameOfReferenceUID, "uid": ds.SOPInstanceUID,
  "images": len(ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].ContourImageSequence)}}))
"#,
        rt = s(&rt),
        d = s(&dcm)
    ));
    assert!(v["contours"].as_u64().unwrap() > 30, "{v}");
    assert_eq!(v["bad_ds"], 0, "{v}");
    assert_eq!(v["bad_ref"], 0, "{v}");
    assert_eq!(v["collinear"], 0, "{v}");
    assert_eq!(v["names"], serde_json::json!(["Metastasis", "Meningioma"]));
    assert_eq!(v["types"], serde_json::json!(["GTV", "GTV"]));
    assert_eq!(v["for"], true);
    assert_eq!(v["images"], 181);
    assert!(v["uid"].as_str().unwrap().starts_with("2.25."));
    // dcmtk prints it without complaints.
    for tool in ["dcmdump", "drtdump"] {
        let out = run_tool(tool, &[&s(&rt)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("W:") && !err.contains("E:"), "{tool}: {err}");
    }
}

/// A DICOM SEG written beside the RTSTRUCT: dciodvfy-clean, and highdicom
/// (a SEG library we did not write) puts every segment's voxels at exactly
/// the mask's positions.
#[test]
fn seg_passes_dciodvfy_and_highdicom_reads_the_masks_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = tmp.path().join("dcm");
    plastimatch_dicom(&colin27(), &dcm, &[]);
    let mask = tmp.path().join("mask.nii.gz");
    make_mask(&colin27(), &mask);
    let (rt, seg) = (tmp.path().join("rt.dcm"), tmp.path().join("seg.dcm"));
    ok(&[
        "rtstruct",
        "write",
        "--mask",
        &s(&mask),
        "--reference",
        &s(&dcm),
        "--out",
        &s(&rt),
        "--seg",
        &s(&seg),
    ]);
    let report = dciodvfy_clean(&seg);
    assert!(report.contains("Segmentation"), "{report}");
    let v = py(&format!(
        r#"
import highdicom as hd
seg = hd.seg.segread({seg:?}); mi = nib.load({m:?}); m = np.asarray(mi.dataobj)
out = {{}}
for s in seg.get_segment_numbers():
    v = seg.get_volume(segment_numbers=[s], combine_segments=True)
    idx = np.argwhere(v.array > 0)
    w = (v.affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
    t = np.argwhere(m == s)
    lps = (mi.affine @ np.c_[t, np.ones(len(t))].T).T[:, :3] * [-1, -1, 1]
    a, b = set(map(tuple, np.round(w, 3))), set(map(tuple, np.round(lps, 3)))
    out[str(s)] = [len(a), len(b), len(a ^ b)]
print(json.dumps(out))
"#,
        seg = s(&seg),
        m = s(&mask)
    ));
    for lab in ["1", "2"] {
        let x = &v[lab];
        assert!(
            x[0].as_u64().unwrap() > 0 && x[0] == x[1] && x[2] == 0,
            "segment {lab}: {v}"
        );
    }
}

#[test]
fn non_square_oblique_and_sagittal_references_and_per_lesion_rois() {
    let tmp = tempfile::tempdir().unwrap();
    // Non-square pixels and images (181 x 192), oblique and sagittal grids.
    let cases: [(&str, &str); 3] = [
        ("nonsquare", "aff = np.diag([0.9, 1.2, 2.0, 1.0]); aff[:3, 3] = [-81, -100.5, -70]; out = nib.Nifti1Image(d[:, :192, ::2], aff)"),
        ("oblique", "import math\na = math.radians(20); r = np.array([[1,0,0],[0,math.cos(a),-math.sin(a)],[0,math.sin(a),math.cos(a)]])\naff = np.eye(4); aff[:3,:3] = r @ np.diag([0.9, 1.1, 1.25]); aff[:3,3] = [-80.5,-110.25,-60.75]; out = nib.Nifti1Image(d[:160,:190,:120], aff)"),
        ("sagittal", "from nibabel import orientations as o\nimg0 = nib.Nifti1Image(d, img.affine); out = img0.as_reoriented(o.ornt_transform(o.io_orientation(img.affine), o.axcodes2ornt(('P','I','L'))))"),
    ];
    for (name, code) in cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let src = dir.join("src.nii.gz");
        py(&format!("img = nib.load({:?}); d = np.asarray(img.dataobj).astype(np.int16)\n{code}\nnib.save(out, {:?}); print('null')", COLIN27, s(&src)));
        let dcm = dir.join("dcm");
        plastimatch_dicom(&src, &dcm, &[]);
        // The mask is made on our own conversion of the series (its grid).
        let grid = dir.join("grid.nii.gz");
        ok(&["convert", &s(&dcm), &s(&grid)]);
        // plastimatch rasterises sagittal structure sets slightly differently
        // (91 of 105 948 voxels in this case; the independent even-odd check
        // above is exact): Dice >= 0.999 there, exact elsewhere.
        let min_dice = if name == "sagittal" { 0.999 } else { 1.0 };
        check_round_trip(&dcm, &grid, &dir, &[], &["Label 1", "Label 2"], min_dice);
        if name == "nonsquare" {
            // Per-lesion ROIs: named by size, described with volume and diameter.
            let rt = dir.join("lesions.dcm");
            let out = ok(&[
                "rtstruct",
                "write",
                "--mask",
                &s(&dir.join("mask.nii.gz")),
                "--reference",
                &s(&dcm),
                "--out",
                &s(&rt),
                "--per-lesion",
            ]);
            assert!(
                out.contains("Lesion 1") && out.contains("equivalent diameter"),
                "{out}"
            );
            dciodvfy_clean(&rt);
            let n = py(&format!(
                "print(len(pydicom.dcmread({:?}).StructureSetROISequence))",
                s(&rt)
            ));
            assert_eq!(n, 5, "ring, island, single voxel, ball, border voxel");
        }
    }
}

#[test]
fn bad_inputs_are_refused_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dcm = tmp.path().join("dcm");
    plastimatch_dicom(&colin27(), &dcm, &[]);
    let d = s(tmp.path());
    py(&format!(
        r#"
img = nib.load({c:?})
z = np.zeros(img.shape, np.uint8)
nib.save(nib.Nifti1Image(z, img.affine), os.path.join({d:?}, "empty.nii.gz"))
z2 = np.zeros((100, 100, 100), np.uint8); z2[50, 50, 50] = 1
nib.save(nib.Nifti1Image(z2, img.affine), os.path.join({d:?}, "othergrid.nii.gz"))
nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32) + 0.5, img.affine), os.path.join({d:?}, "image.nii.gz"))
noise = (np.random.default_rng(1).random(img.shape) < 0.02).astype(np.uint8)
nib.save(nib.Nifti1Image(noise, img.affine), os.path.join({d:?}, "noise.nii.gz"))
print("null")
"#,
        c = COLIN27
    ));
    let p = |n: &str| s(&tmp.path().join(n));
    let out = p("rt.dcm");
    let r = s(&dcm);
    let e = fails(&[
        "rtstruct",
        "write",
        "--mask",
        &p("empty.nii.gz"),
        "--reference",
        &r,
        "--out",
        &out,
    ]);
    assert!(e.contains("empty"), "{e}");
    let e = fails(&[
        "rtstruct",
        "write",
        "--mask",
        &p("othergrid.nii.gz"),
        "--reference",
        &r,
        "--out",
        &out,
    ]);
    assert!(e.contains("differs from the reference series"), "{e}");
    let e = fails(&[
        "rtstruct",
        "write",
        "--mask",
        &p("image.nii.gz"),
        "--reference",
        &r,
        "--out",
        &out,
    ]);
    assert!(e.contains("is not a label"), "{e}");
    let e = fails(&[
        "rtstruct",
        "write",
        "--mask",
        &p("noise.nii.gz"),
        "--reference",
        &r,
        "--out",
        &out,
        "--per-lesion",
    ]);
    assert!(e.contains("at most 1000"), "{e}");
    let empty_dir = tmp.path().join("nothing");
    std::fs::create_dir(&empty_dir).unwrap();
    let e = fails(&[
        "rtstruct",
        "write",
        "--mask",
        &p("empty.nii.gz"),
        "--reference",
        &s(&empty_dir),
        "--out",
        &out,
    ]);
    assert!(e.contains("no DICOM"), "{e}");
    assert!(!Path::new(&out).exists(), "no partial output");
    assert!(std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".delineate")));

    // Reading: corrupt file, wrong Frame of Reference, contour between slices.
    make_mask(&colin27(), &tmp.path().join("mask.nii.gz"));
    ok(&[
        "rtstruct",
        "write",
        "--mask",
        &p("mask.nii.gz"),
        "--reference",
        &r,
        "--out",
        &out,
    ]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(p("cut.dcm"), &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&[
        "rtstruct",
        "read",
        &p("cut.dcm"),
        "--reference",
        &r,
        "--out",
        &p("l.nii.gz"),
    ]);
    assert!(e.contains("cut.dcm"), "{e}");
    py(&format!(
        "ds = pydicom.dcmread({o:?}); ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = '1.2.3.4'; ds.save_as({f:?})\n\
         ds = pydicom.dcmread({o:?}); c = ds.ROIContourSequence[0].ContourSequence[0]; c.ContourData = [v + 0.5 if i % 3 == 2 else v for i, v in enumerate(c.ContourData)]; ds.save_as({z:?}); print('null')",
        o = out,
        f = p("otherfor.dcm"),
        z = p("offslice.dcm")
    ));
    let e = fails(&[
        "rtstruct",
        "read",
        &p("otherfor.dcm"),
        "--reference",
        &r,
        "--out",
        &p("l.nii.gz"),
    ]);
    assert!(e.contains("Frame of Reference 1.2.3.4"), "{e}");
    let e = fails(&[
        "rtstruct",
        "read",
        &p("offslice.dcm"),
        "--reference",
        &r,
        "--out",
        &p("l.nii.gz"),
    ]);
    assert!(e.contains("off the nearest image slice"), "{e}");
    assert!(!Path::new(&p("l.nii.gz")).exists());
    // Contours that reference images missing from the reference series (the
    // same Frame of Reference, re-sent with new SOP Instance UIDs): placed by
    // their coordinates, with a warning that says so.
    let copy = tmp.path().join("dcm_copy");
    std::fs::create_dir(&copy).unwrap();
    py(&format!(
        "for f in os.listdir({d:?}):\n    ds = pydicom.dcmread(os.path.join({d:?}, f)); u = pydicom.uid.generate_uid()\n    ds.SOPInstanceUID = u; ds.file_meta.MediaStorageSOPInstanceUID = u; ds.save_as(os.path.join({c:?}, f))\nprint('null')",
        d = r,
        c = s(&copy)
    ));
    let o = delineate(&[
        "rtstruct",
        "read",
        &out,
        "--reference",
        &s(&copy),
        "--out",
        &p("copy.nii.gz"),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("image(s) that are not in the reference series"),
        "{err}"
    );
    let c = nib_compare(
        &tmp.path().join("copy.nii.gz"),
        &tmp.path().join("mask.nii.gz"),
        false,
    );
    assert_eq!(c["voxels_differing"], 0, "{c}");
    // Every contour 0.2 mm off its slice (a planning system's rounding):
    // accepted, same voxels.
    py(&format!(
        "ds = pydicom.dcmread({o:?})\n\
         for roi in ds.ROIContourSequence:\n    for c in roi.ContourSequence:\n        c.ContourData = [round(v + 0.2, 4) if i % 3 == 2 else v for i, v in enumerate(c.ContourData)]\n\
         ds.save_as({z:?}); print('null')",
        o = out,
        z = p("rounded.dcm")
    ));
    ok(&[
        "rtstruct",
        "read",
        &p("rounded.dcm"),
        "--reference",
        &r,
        "--out",
        &p("rounded.nii.gz"),
    ]);
    let c = nib_compare(
        &tmp.path().join("rounded.nii.gz"),
        &tmp.path().join("mask.nii.gz"),
        false,
    );
    assert_eq!(c["voxels_differing"], 0, "{c}");
}

#[test]
fn nifti_to_mr_series_is_valid_dicom_with_the_same_geometry() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, reorient) in [("ras", None), ("pil", Some("PIL"))] {
        let src = tmp.path().join(format!("{name}.nii.gz"));
        match reorient {
            None => {
                std::fs::copy(colin27(), &src).unwrap();
            }
            Some(code) => {
                ok(&["convert", COLIN27, &s(&src), "--reorient", code]);
            }
        }
        let dir: PathBuf = tmp.path().join(format!("{name}_series"));
        let out = ok(&[
            "dicom",
            "write",
            &s(&src),
            "--out",
            &s(&dir),
            "--patient-id",
            "P1",
            "--series-description",
            "T1 test",
        ]);
        assert!(
            out.contains("181 slices") || out.contains("217 slices"),
            "{out}"
        );
        let first = files(&dir)[0].clone();
        let report = dciodvfy_clean(&first);
        assert!(report.contains("MRImage"), "{report}");
        // Read back by us and by plastimatch: same voxels, same place.
        let back = tmp.path().join(format!("{name}_back.nii.gz"));
        ok(&["convert", &s(&dir), &s(&back)]);
        let c = nib_compare(&back, &src, true);
        assert!(
            c["affine_diff"].as_f64().unwrap() < 1e-3 && c["voxels_differing"] == 0,
            "{name}: {c}"
        );
        let theirs = tmp.path().join(format!("{name}_plastimatch.nii.gz"));
        run_tool(
            "plastimatch",
            &["convert", "--input", &s(&dir), "--output-img", &s(&theirs)],
        );
        let c = nib_compare(&theirs, &src, true);
        assert!(
            c["affine_diff"].as_f64().unwrap() < 1e-3 && c["voxels_differing"] == 0,
            "{name}: {c}"
        );
        assert!(fails(&["dicom", "write", &s(&src), "--out", &s(&dir)]).contains("not empty"));
    }
}
