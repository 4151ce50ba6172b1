//! The review page in a real browser: Debian's headless chromium driven by
//! playwright-core (tests/browser/review.mjs). A synthetic case with three
//! proposed lesions, one a false positive: the list, the jump to the false
//! positive's slice, rejecting it with the keyboard, the export (an RTSTRUCT
//! with the two accepted lesions that dciodvfy passes), the decisions and
//! the audit log. Also times keyboard triage of a ten-lesion case.
//!
//! DELINEATE_UPDATE_SCREENSHOT=1 writes the screenshot to
//! docs/images/review.png (the README's).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::{bin, dciodvfy_clean, ok, py, synth_mets};

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Proposals on the synthetic case: `extra` spheres besides the two true
/// lesions (the first extra one is the false positive), written as a
/// `delineate segment` output folder. Returns the FP's axial slice.
fn proposals(case: &Path, image: &Path, out: &Path, ten: bool) -> serde_json::Value {
    py(&format!(
        r#"
img = nib.load({image:?}); aff = img.affine; shape = img.shape
truth = json.load(open(os.path.join({case:?}, "lesions.json")))["lesions"]
def vox(lps):
    return np.rint(np.linalg.solve(aff, [-lps[0], -lps[1], lps[2], 1.0])[:3]).astype(int)
a, b = vox(truth[0]["centre_mm"]), vox(truth[1]["centre_mm"])
k_fp = a[2] + 20 if a[2] + 20 < shape[2] - 10 else a[2] - 20
fp = np.array([shape[0] // 2 + 18, shape[1] // 2 + 22, k_fp])
if {ten}:
    centres = [a, fp, b] + [np.array([shape[0] // 2 - 30 + 8 * n, shape[1] // 2 - 10, 40 + 12 * n]) for n in range(7)]
else:
    centres = [a, fp, b]
x, y, z = np.ogrid[:shape[0], :shape[1], :shape[2]]
mask = np.zeros(shape, np.uint16)
for n, c in enumerate(centres):
    mask[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= 16] = n + 1
vol = float(abs(np.linalg.det(aff[:3, :3])))
lesions = []
for n, c in enumerate(centres):
    v = int((mask == n + 1).sum())
    ras = aff @ np.r_[c, 1.0]
    lesions.append({{"id": n + 1, "voxels": v, "volume_mm3": v * vol,
        "equivalent_diameter_mm": float((6 * v * vol / np.pi) ** (1 / 3)),
        "max_probability": 0.97 - 0.07 * n, "mean_probability": 0.8 - 0.05 * n,
        "centroid_lps_mm": [float(-ras[0]), float(-ras[1]), float(ras[2])]}})
os.makedirs({out:?}, exist_ok=True)
nib.save(nib.Nifti1Image(mask, aff), os.path.join({out:?}, "mask.nii.gz"))
json.dump({{"input": "case", "input_path": os.path.join({case:?}, "dicom"), "lesions": lesions}},
          open(os.path.join({out:?}, "lesions.json"), "w"))
# The FP's axial slice as the DICOM files say: rank of its z among the slices.
zs = sorted(float(pydicom.dcmread(os.path.join({case:?}, "dicom", f), stop_before_pixels=True).ImagePositionPatient[2])
            for f in os.listdir(os.path.join({case:?}, "dicom")))
fp_z = float((aff @ np.r_[fp, 1.0])[2])
print(json.dumps({{"fp_slice": int(np.argmin([abs(z - fp_z) for z in zs])), "n": len(centres)}}))
"#,
        image = s(image),
        case = s(case),
        out = s(out),
        ten = if ten { "True" } else { "False" },
    ))
}

/// Starts `delineate review` on a free port; returns it and the page link.
fn review(case_dir: &Path) -> (Child, String) {
    let mut child = Command::new(bin())
        .args([
            "review",
            &s(case_dir),
            "--port",
            "0",
            "--reviewer",
            "Dr Test",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    reader.read_line(&mut line).unwrap();
    // Keep draining its output.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let url = line
        .trim()
        .strip_prefix("review page: ")
        .unwrap_or_else(|| panic!("no link printed: {line:?}"))
        .to_string();
    (child, url)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn triage_in_a_real_browser_exports_only_the_accepted_lesions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "the test needs chromium and playwright-core: ./setup.sh --deps-only installs them"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_mets(
        &data,
        "1",
        "5",
        "2-2",
        &["--met-diameter", "10-12", "--dicom"],
    );
    let case = data.join("case_000");
    let image = tmp.path().join("image.nii.gz");
    ok(&["convert", &s(&case.join("dicom")), &s(&image)]);
    let three = tmp.path().join("three");
    let fp_slice = proposals(&case, &image, &three, false)["fp_slice"]
        .as_u64()
        .unwrap();
    let ten = tmp.path().join("ten");
    proposals(&case, &image, &ten, true);
    let (c1, url) = review(&three);
    let _c1 = Kill(c1);
    let (c2, url10) = review(&ten);
    let _c2 = Kill(c2);

    let shot = if std::env::var("DELINEATE_UPDATE_SCREENSHOT").is_ok() {
        root.join("docs/images/review.png")
    } else {
        tmp.path().join("review.png")
    };
    let o = Command::new("node")
        .arg(browser_dir.join("review.mjs"))
        .env("REVIEW_URL", &url)
        .env("TIMING_URL", &url10)
        .env("FP_ID", "2")
        .env("FP_SLICE", fp_slice.to_string())
        .env("SHOT", &shot)
        .output()
        .expect("node (./setup.sh installs it)");
    assert!(
        o.status.success(),
        "review.mjs failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    println!("{r:#}");

    // The list: three lesions, most confident first, all undecided.
    let list = r["list"].as_array().unwrap();
    let ids: Vec<u64> = list.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(list
        .windows(2)
        .all(|w| w[0]["p"].as_f64() >= w[1]["p"].as_f64()));
    assert!(list.iter().all(|l| l["state"] == "undecided"));
    assert!(list[0]["text"].as_str().unwrap().contains("mm³"));
    assert_eq!(r["token_removed_from_url"], true);
    // Clicking the false positive moved the views to its slice.
    assert_ne!(r["initial_slice"].as_u64().unwrap(), fp_slice);
    assert_eq!(r["slice_after_click"].as_u64().unwrap(), fp_slice, "{r}");
    assert_eq!(r["selected_after_click"], 2);
    assert_eq!(
        r["states"],
        serde_json::json!([[1, "accepted"], [2, "rejected"], [3, "accepted"]])
    );
    assert_eq!(r["exported"], 2);
    assert_eq!(r["reviewer_shown"], "Dr Test");
    assert_eq!(r["reviewer_readonly"], true);
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");

    // What the page wrote: decisions, an RTSTRUCT of the two accepted
    // lesions on the case's series, the audit trail.
    let review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(three.join("review.json")).unwrap()).unwrap();
    assert_eq!(review["reviewer"], "Dr Test");
    assert_eq!(
        review["decisions"],
        serde_json::json!({"1": "accepted", "2": "rejected", "3": "accepted"})
    );
    let rt = three.join("reviewed/rtstruct.dcm");
    dciodvfy_clean(&rt);
    let d = py(&format!(
        r#"
rt = pydicom.dcmread({rt:?})
print(json.dumps({{"names": [r.ROIName for r in rt.StructureSetROISequence],
  "algo": [o.ROIGenerationAlgorithm for o in rt.StructureSetROISequence],
  "contours": [len(c.ContourSequence) for c in rt.ROIContourSequence]}}))
"#,
        rt = s(&rt)
    ));
    assert_eq!(d["names"], serde_json::json!(["Lesion 1", "Lesion 3"]));
    assert_eq!(
        d["algo"],
        serde_json::json!(["SEMIAUTOMATIC", "SEMIAUTOMATIC"])
    );
    assert!(d["contours"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c.as_u64().unwrap() >= 5));
    let audit = std::fs::read_to_string(three.join("review-audit.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_decision = events
        .iter()
        .rev()
        .find(|e| e["event"] == "review_decisions")
        .unwrap();
    assert_eq!(last_decision["accepted"], serde_json::json!([1, 3]));
    assert_eq!(last_decision["rejected"], serde_json::json!([2]));
    assert_eq!(last_decision["reviewer"], "Dr Test");
    let export = events
        .iter()
        .find(|e| e["event"] == "review_export")
        .unwrap();
    assert_eq!(export["accepted"], serde_json::json!([1, 3]));

    // The screenshot is a real page capture.
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(png.len() > 50_000, "{} bytes", png.len());

    // Ten lesions by keyboard, and their export.
    let t = &r["timing"];
    assert_eq!(t["exported"], 7, "{t}");
    assert_eq!(t["per_key_ms"].as_array().unwrap().len(), 10);
    let _: PathBuf = shot;
}
