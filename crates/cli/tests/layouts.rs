#![allow(clippy::unwrap_used)]
//! Dataset layouts: an nnU-Net raw dataset written by `synth --layout
//! nnunet`, and a BraTS folder with multi-label segmentations, each read
//! by `train` and `evaluate` (detected, with the lesion labels chosen).

mod support;

use std::path::Path;

use support::{ok, py, synth_mets};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn tiny_train(data: &Path, out: &Path, extra: &[&str]) -> String {
    let (d, o) = (s(data), s(out));
    let mut args = vec![
        "train",
        "--data",
        &d,
        "--out",
        &o,
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
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn nnunet_raw_datasets_are_written_trained_on_and_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let nn = tmp.path().join("nn");
    synth_mets(&nn, "3", "4", "2-3", &["--layout", "nnunet"]);
    let dj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(nn.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(dj["numTraining"], 3);
    assert_eq!(dj["labels"]["lesion"], 1);
    assert_eq!(dj["file_ending"], ".nii.gz");
    let v = py(&format!(
        "a = np.asarray(nib.load('{}').dataobj); b = nib.load('{}'); print(json.dumps({{'labels': sorted(np.unique(a).tolist()), 'shape': list(b.shape) == list(a.shape)}}))",
        nn.join("labelsTr/case_000.nii.gz").display(),
        nn.join("imagesTr/case_000_0000.nii.gz").display()
    ));
    assert_eq!(v["labels"], serde_json::json!([0, 1]));
    assert_eq!(v["shape"], true);
    let out = tiny_train(&nn, &tmp.path().join("run"), &[]);
    assert!(out.contains("3 training cases"), "{out}");
    // Evaluated against itself (labelsTr as predictions): every lesion hit.
    let rep = tmp.path().join("rep");
    ok(&[
        "evaluate",
        "--pred",
        &s(&nn.join("labelsTr")),
        "--truth",
        &s(&nn),
        "--out",
        &s(&rep),
        "--bootstrap",
        "none",
    ]);
    let r = report(&rep);
    let sm = &r["experiments"][0]["summary"];
    assert_eq!(sm["recall"], 1.0, "{sm}");
    assert_eq!(sm["fp_per_case"], 0.0);
    assert_eq!(r["options"]["layout"], serde_json::Value::Null);
}

#[test]
fn brats_folders_read_the_chosen_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = tmp.path().join("syn");
    synth_mets(&syn, "2", "6", "2-3", &["--met-diameter", "6-15"]);
    let brats = tmp.path().join("brats");
    let pred = tmp.path().join("pred");
    // BraTS-style cases: enhancing tumour 3, a 2-voxel ring of oedema 2
    // around it, and a necrotic core 1 inside lesions over 400 voxels.
    py(&format!(
        r#"
from scipy import ndimage
root, out, pred = '{}', '{}', '{}'
os.makedirs(pred, exist_ok=True)
for c in sorted(os.listdir(root)):
    if not c.startswith('case_'): continue
    name = 'BraTS-MET-' + c
    d = os.path.join(out, name); os.makedirs(d)
    img = nib.load(os.path.join(root, c, 'image.nii.gz'))
    nib.save(img, os.path.join(d, name + '-t1c.nii.gz'))
    t = np.asarray(nib.load(os.path.join(root, c, 'truth.nii.gz')).dataobj) > 0
    seg = np.zeros(t.shape, np.uint8)
    seg[ndimage.binary_dilation(t, iterations=2) & ~t] = 2
    seg[t] = 3
    lab, n = ndimage.label(t)
    for i in range(1, n + 1):
        m = lab == i
        if m.sum() > 400:
            seg[ndimage.binary_erosion(m, iterations=2)] = 1
    nib.save(nib.Nifti1Image(seg, img.affine), os.path.join(d, name + '-seg.nii.gz'))
    nib.save(nib.Nifti1Image(t.astype(np.uint8), img.affine), os.path.join(pred, name + '.nii.gz'))
print('null')
"#,
        s(&syn),
        s(&brats),
        s(&pred)
    ));
    // Default: the tumour core (1 and 3) is the lesion, as predicted.
    let rep = tmp.path().join("rep");
    ok(&[
        "evaluate",
        "--pred",
        &s(&pred),
        "--truth",
        &s(&brats),
        "--out",
        &s(&rep),
        "--bootstrap",
        "none",
    ]);
    let sm = report(&rep)["experiments"][0]["summary"].clone();
    assert_eq!(sm["recall"], 1.0, "{sm}");
    assert!(
        (sm["dice_median"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{sm}"
    );
    // With the oedema as lesion too, the same prediction covers less.
    let rep2 = tmp.path().join("rep2");
    ok(&[
        "evaluate",
        "--pred",
        &s(&pred),
        "--truth",
        &s(&brats),
        "--out",
        &s(&rep2),
        "--bootstrap",
        "none",
        "--labels",
        "1,2,3",
    ]);
    let sm2 = report(&rep2)["experiments"][0]["summary"].clone();
    assert!(sm2["dice_median"].as_f64().unwrap() < 0.8, "{sm2}");
    let out = tiny_train(&brats, &tmp.path().join("run"), &[]);
    assert!(out.contains("2 training cases"), "{out}");
    // Enhancing tumour only (3): fewer lesion voxels than the core, still found.
    let out = tiny_train(&brats, &tmp.path().join("run3"), &["--labels", "3"]);
    assert!(out.contains("2 training cases"), "{out}");
}
