#![allow(clippy::unwrap_used)]
//! `delineate export --onnx`: the built-in model as an ONNX file that ONNX
//! Runtime loads; bad requests refused by name.

mod support;

use support::{fails, ok, py};

#[test]
fn exports_the_builtin_model_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    let o = out.display().to_string();
    let msg = ok(&["export", "builtin", "--onnx", &o]);
    assert!(msg.contains("opset 17"), "{msg}");
    let v = py(&format!(
        "import onnxruntime as ort\ns = ort.InferenceSession('{o}', providers=['CPUExecutionProvider'])\n\
         x = np.zeros((1, 1, 16, 16, 16), np.float32)\ny = s.run(None, {{'image': x}})[0]\n\
         print(json.dumps({{'shape': list(y.shape), 'inputs': [i.name for i in s.get_inputs()], 'meta': sorted(s.get_modelmeta().custom_metadata_map)}}))"
    ));
    assert_eq!(v["shape"], serde_json::json!([1, 1, 16, 16, 16]));
    assert_eq!(v["inputs"], serde_json::json!(["image"]));
    assert!(
        v["meta"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "delineate.contract"),
        "{v}"
    );
    let e = fails(&[
        "export",
        "builtin",
        "--onnx",
        &tmp.path().join("m.bin").display().to_string(),
    ]);
    assert!(e.contains(".onnx"), "{e}");
    let e = fails(&[
        "export",
        &tmp.path().join("none.dlm").display().to_string(),
        "--onnx",
        &o,
    ]);
    assert!(e.contains("none.dlm"), "{e}");
}
