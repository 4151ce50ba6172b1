//! NIfTI files written by nibabel, read and rewritten by delineate, and read
//! back by nibabel: every datatype, sform-only/qform-only/both, scaling,
//! reorientation and bad input.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use serde_json::json;
use support::*;

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

const TYPES: [&str; 10] = [
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64",
];

/// Writes `{dtype}_{xforms}.nii.gz` with nibabel for every pair: an
/// oblique, anisotropic 17×13×11 grid. Returns nibabel's affine per file.
fn write_with_nibabel(dir: &Path, dtypes: &[&str], xforms: &[&str]) -> serde_json::Value {
    py(&format!(
        r#"
import math
a, b = math.radians(25), math.radians(-12)
rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
aff = np.eye(4); aff[:3, :3] = rz @ rx @ np.diag([-0.9, 1.1, 2.5]); aff[:3, 3] = [91.3, -120.7, -64.2]
rng = np.random.default_rng(7)
out = {{}}
for dtype in {dtypes:?}:
    for x in {xforms:?}:
        data = rng.integers(0, 120, size=(17, 13, 11)).astype(dtype)
        h = nib.Nifti1Header()
        h.set_data_dtype(dtype)
        h.set_sform(aff, code=1 if x in ("sform", "both") else 0)
        h.set_qform(aff, code=1 if x in ("qform", "both") else 0)
        p = os.path.join({d:?}, f"{{dtype}}_{{x}}.nii.gz")
        nib.save(nib.Nifti1Image(data, None, header=h), p)
        out[f"{{dtype}}_{{x}}"] = nib.load(p).affine.tolist()
print(json.dumps(out))
"#,
        d = s(dir)
    ))
}

#[test]
fn every_datatype_and_transform_round_trips_through_nibabel() {
    let tmp = tempfile::tempdir().unwrap();
    let xforms = ["sform", "qform", "both"];
    let affines = write_with_nibabel(tmp.path(), &TYPES, &xforms);
    let mut pairs = Vec::new();
    for dtype in TYPES {
        for x in xforms {
            let name = format!("{dtype}_{x}");
            let src = tmp.path().join(format!("{name}.nii.gz"));
            // Our geometry equals nibabel's affine (converted to RAS).
            let info = info_json(&src, &[]);
            assert_eq!(info["nifti"]["datatype"], dtype, "{name}");
            assert_eq!(
                info["nifti"]["transform"],
                if x == "qform" { "qform" } else { "sform" },
                "{name}"
            );
            for r in 0..4 {
                for c in 0..4 {
                    let (a, b) = (
                        info["geometry"]["affine_ras"][r][c].as_f64().unwrap(),
                        affines[&name][r][c].as_f64().unwrap(),
                    );
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{name}: affine[{r}][{c}] {a} vs nibabel {b}"
                    );
                }
            }
            let out = tmp.path().join(format!("{name}_out.nii"));
            ok(&["convert", &s(&src), &s(&out)]);
            pairs.push((name, src, out));
        }
    }
    // Rewriting keeps type, voxels and geometry (to 1e-5 mm), says nibabel.
    let list: Vec<(String, String, String)> = pairs
        .iter()
        .map(|(n, a, b)| (n.clone(), s(a), s(b)))
        .collect();
    let list_py = list
        .iter()
        .map(|(n, a, b)| format!("({n:?}, {a:?}, {b:?})"))
        .collect::<Vec<_>>()
        .join(", ");
    let r = py(&format!(
        "res = {{}}\nfor n, a, b in [{list_py}]:\n    x, y = nib.load(a), nib.load(b)\n    res[n] = [float(np.abs(x.affine - y.affine).max()), bool(np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))), str(y.get_data_dtype())]\nprint(json.dumps(res))"
    ));
    for (name, _, _) in &list {
        let v = &r[name];
        assert!(v[0].as_f64().unwrap() < 1e-5, "{name}: {v}");
        assert_eq!(v[1], true, "{name}: {v}");
        assert_eq!(
            v[2].as_str().unwrap(),
            name.split('_').next().unwrap(),
            "{name}: {v}"
        );
    }
}

#[test]
fn no_transform_is_voxel_sizes_only_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    write_with_nibabel(tmp.path(), &["int16"], &["none"]);
    let src = tmp.path().join("int16_none.nii.gz");
    let info = info_json(&src, &[]);
    assert_eq!(info["nifti"]["transform"], "pixdim");
    assert!(
        info["warnings"][0]
            .as_str()
            .unwrap()
            .contains("orientation unknown"),
        "{info}"
    );
}

#[test]
fn scaling_is_applied_like_nibabel() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("scaled.nii.gz");
    py(&format!(
        "data = (np.arange(6*5*4).reshape(6,5,4) - 30).astype(np.int16)\n\
         img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0]))\n\
         img.header.set_slope_inter(2.5, -10.0)\n\
         nib.save(img, {:?}); print('null')",
        s(&src)
    ));
    let out = tmp.path().join("out.nii.gz");
    ok(&["convert", &s(&src), &s(&out)]);
    let r = py(&format!(
        "a = nib.load({:?}).get_fdata(); b = nib.load({:?}); print(json.dumps({{'diff': float(np.abs(a - b.get_fdata()).max()), 'dtype': str(b.get_data_dtype()), 'min': float(b.get_fdata().min())}}))",
        s(&src),
        s(&out)
    ));
    assert_eq!(r["diff"].as_f64().unwrap(), 0.0, "{r}");
    assert_eq!(r["dtype"], "float32");
    assert_eq!(r["min"].as_f64().unwrap(), -85.0);
}

#[test]
fn reorientation_matches_nibabel_closest_canonical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pil.nii.gz");
    py(&format!(
        r#"
from nibabel import orientations as o
img = nib.load({c:?})
t = o.ornt_transform(o.io_orientation(img.affine), o.axcodes2ornt(("P", "I", "L")))
nib.save(img.as_reoriented(t), {p:?}); print("null")
"#,
        c = COLIN27,
        p = s(&src)
    ));
    assert_eq!(info_json(&src, &[])["geometry"]["orientation"], "PIL");
    for code in ["RAS", "LPS", "ASL"] {
        let out = tmp.path().join(format!("{code}.nii.gz"));
        ok(&["convert", &s(&src), &s(&out), "--reorient", code]);
        assert_eq!(info_json(&out, &[])["geometry"]["orientation"], code);
        let c = nib_compare(&out, &src, true);
        assert!(
            c["affine_diff"].as_f64().unwrap() < 1e-5 && c["voxels_differing"] == 0,
            "{code}: {c}"
        );
    }
    // RAS output is exactly nibabel's as_closest_canonical, array and affine.
    let c = nib_compare(&tmp.path().join("RAS.nii.gz"), &src, false);
    assert_eq!(c["shape_a"], json!([181, 217, 181]));
    let canon = tmp.path().join("canon.nii.gz");
    py(&format!(
        "nib.save(nib.as_closest_canonical(nib.load({:?})), {:?}); print('null')",
        s(&src),
        s(&canon)
    ));
    let c = nib_compare(&tmp.path().join("RAS.nii.gz"), &canon, false);
    assert!(
        c["affine_diff"].as_f64().unwrap() < 1e-5 && c["voxels_differing"] == 0,
        "{c}"
    );
    assert!(
        fails(&["convert", &s(&src), &s(&canon), "--reorient", "XYZ"]).contains("orientation code")
    );
}

#[test]
fn bad_nifti_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    py(&format!(
        r#"
d = {d:?}
nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), os.path.join(d, "four_d.nii.gz"))
nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.float32), np.eye(4)), os.path.join(d, "one_vol.nii.gz"))
nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), os.path.join(d, "two_d.nii"))
nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.complex64), np.eye(4)), os.path.join(d, "complex.nii"))
print("null")
"#
    ));
    let p = |n: &str| s(&tmp.path().join(n));
    let out = p("out.nii.gz");
    assert!(fails(&["convert", &p("four_d.nii.gz"), &out]).contains("4-D image"));
    assert!(fails(&["info", &p("two_d.nii")]).contains("2-D image"));
    assert!(fails(&["info", &p("complex.nii")]).contains("unsupported NIfTI datatype"));
    assert_eq!(
        info_json(&tmp.path().join("one_vol.nii.gz"), &[])["geometry"]["size"],
        json!([4, 5, 6])
    );
    // Corrupt gzip and truncation, each naming the file.
    let gz = std::fs::read(tmp.path().join("one_vol.nii.gz")).unwrap();
    std::fs::write(tmp.path().join("cut.nii.gz"), &gz[..gz.len() / 2]).unwrap();
    let e = fails(&["convert", &p("cut.nii.gz"), &out]);
    assert!(
        e.contains("cut.nii.gz") && (e.contains("gzip") || e.contains("truncated")),
        "{e}"
    );
    let mut bad = gz.clone();
    for b in bad.iter_mut().skip(20).take(40) {
        *b ^= 0x5a;
    }
    std::fs::write(tmp.path().join("garbled.nii.gz"), &bad).unwrap();
    assert!(fails(&["convert", &p("garbled.nii.gz"), &out]).contains("garbled.nii.gz"));
    let raw = std::fs::read(tmp.path().join("two_d.nii")).unwrap();
    std::fs::write(tmp.path().join("short.nii"), &raw[..200]).unwrap();
    assert!(fails(&["info", &p("short.nii")]).contains("shorter than the 348-byte header"));
    assert!(!tmp.path().join("out.nii.gz").exists(), "no partial output");
}
