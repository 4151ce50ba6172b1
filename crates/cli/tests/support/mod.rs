//! Helpers shared by the integration tests: run our binary, run the peer
//! tools (plastimatch, python3 with nibabel/pydicom), make fixtures.
//!
//! The peers are required, not optional: `.ci/run` and `./setup.sh` install
//! them, and a missing one fails the test with a hint instead of skipping.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Colin27 T1 with skull, from Debian's mricron-data.
pub const COLIN27: &str = "/usr/share/mricron/templates/ch2.nii.gz";
/// Colin27 skull-stripped.
pub const COLIN27_BET: &str = "/usr/share/mricron/templates/ch2bet.nii.gz";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_delineate"))
}

/// Runs `delineate ARGS`, asserting it did not panic or crash.
pub fn delineate(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run delineate");
    assert_no_crash(&out, args);
    out
}

/// Runs `delineate ARGS` and expects success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = delineate(args);
    assert!(
        out.status.success(),
        "delineate {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `delineate ARGS` and expects exit status 1; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = delineate(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "delineate {args:?} should fail cleanly; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_no_crash(out: &Output, args: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some()
            && out.status.code() != Some(101)
            && !stderr.contains("panicked"),
        "delineate {args:?} crashed ({:?}):\n{stderr}",
        out.status
    );
}

/// `delineate info PATH --json [extra]` parsed.
pub fn info_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    let p = path.to_string_lossy();
    let mut args = vec!["info", p.as_ref(), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).expect("info --json output is JSON")
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "the test needs `{tool}`: run ./setup.sh (or .ci/run), which installs it"
    );
}

/// Runs a peer tool and expects success.
pub fn run_tool(tool: &str, args: &[&str]) -> Output {
    need(tool);
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a Python snippet (numpy, nibabel and pydicom imported as np, nib,
/// pydicom; `json` available) and parses the JSON it prints last.
pub fn py(code: &str) -> serde_json::Value {
    need("python3");
    let prelude =
        "import json, sys, os\nimport numpy as np\nimport nibabel as nib\nimport pydicom\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed:\n{code}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("null");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("python printed no JSON ({e}):\n{stdout}"))
}

pub fn colin27() -> PathBuf {
    let p = PathBuf::from(COLIN27);
    assert!(
        p.exists(),
        "the test needs Colin27 ({COLIN27}): apt-get install mricron-data (./setup.sh does)"
    );
    p
}

/// Writes a DICOM series of `nii` with plastimatch into `dir`.
pub fn plastimatch_dicom(nii: &Path, dir: &Path, extra: &[&str]) {
    let (n, d) = (nii.to_string_lossy(), dir.to_string_lossy());
    let mut args = vec![
        "convert",
        "--input",
        n.as_ref(),
        "--output-dicom",
        d.as_ref(),
        "--modality",
        "MR",
    ];
    args.extend_from_slice(extra);
    run_tool("plastimatch", &args);
}

/// Sorted list of the files in a folder.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// Compares two NIfTI files with nibabel: affine difference, shapes and
/// voxel difference (after both are brought to the same canonical order
/// when `canonical`).
pub fn nib_compare(a: &Path, b: &Path, canonical: bool) -> serde_json::Value {
    py(&format!(
        r#"
a = nib.load({a:?}); b = nib.load({b:?})
if {canonical}:
    a = nib.as_closest_canonical(a); b = nib.as_closest_canonical(b)
da = np.asarray(a.dataobj, dtype=np.float64); db = np.asarray(b.dataobj, dtype=np.float64)
same = da.shape == db.shape
print(json.dumps({{
  "affine_diff": float(np.abs(a.affine - b.affine).max()),
  "shape_a": list(da.shape), "shape_b": list(db.shape),
  "max_abs_diff": float(np.abs(da - db).max()) if same else None,
  "voxels_differing": int((da != db).sum()) if same else None,
}}))
"#,
        a = a.to_string_lossy(),
        b = b.to_string_lossy(),
        canonical = if canonical { "True" } else { "False" }
    ))
}

/// `delineate synth` of metastases only, on 1 mm grids; returns stdout.
pub fn synth_mets(out: &Path, cases: &str, seed: &str, count: &str, extra: &[&str]) -> String {
    let o = out.to_string_lossy().into_owned();
    let mut args = vec![
        "synth",
        "--cases",
        cases,
        "--seed",
        seed,
        "--out",
        &o,
        "--kinds",
        "met",
        "--met-count",
        count,
        "--grid",
        "1mm",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

/// dciodvfy's report on `file`; asserts it exits cleanly with no "Error"
/// line (dicom3tools exits 1 on any error).
pub fn dciodvfy_clean(file: &Path) -> String {
    need("dciodvfy");
    let out = Command::new("dciodvfy")
        .arg(file)
        .output()
        .expect("dciodvfy (dicom3tools): run ./setup.sh");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !report.lines().any(|l| l.starts_with("Error")),
        "dciodvfy errors for {}:\n{report}",
        file.display()
    );
    report
}

/// Converts the single-frame MR series in `single` into one Legacy
/// Converted Enhanced MR instance with highdicom: `multi/enhanced.dcm`.
pub fn highdicom_enhanced(single: &Path, multi: &Path) {
    py(&format!(
        r#"
import highdicom as hd
from highdicom.legacy import LegacyConvertedEnhancedMRImage
d = {single:?}
ds = [pydicom.dcmread(os.path.join(d, f)) for f in sorted(os.listdir(d))]
img = LegacyConvertedEnhancedMRImage(ds, series_instance_uid=hd.UID(), series_number=99,
    sop_instance_uid=hd.UID(), instance_number=1)
os.makedirs({multi:?})
img.save_as(os.path.join({multi:?}, "enhanced.dcm"))
print(json.dumps({{}}))
"#,
        single = single.to_string_lossy(),
        multi = multi.to_string_lossy(),
    ));
}
