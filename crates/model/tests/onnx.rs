#![allow(clippy::unwrap_used)]
//! The ONNX export run in ONNX Runtime (PyPI) gives our probabilities: the
//! built-in model on a preprocessed case and a seeded 16-32-64-128 U-Net on
//! another window, max abs difference ≤ 1e-4; the graph passes ONNX's full
//! checker and carries the contract.

mod support;

use std::path::Path;
use std::process::Command;

use delineate_model::backend::Cpu;
use delineate_model::contract::{Contract, Preprocessing};
use delineate_model::data::{case_folders, load_case};
use delineate_model::fast::FastUNet;
use delineate_model::modelfile::{self, ModelInfo, FORMAT_VERSION};
use delineate_model::network::{Network, NetworkConfig};

/// Runs `onnx` in ONNX Runtime on `input` (x-fastest, `dims`); returns the
/// output and the contract found in the metadata.
fn ort(onnx: &Path, input: &[f32], dims: [usize; 3], dir: &Path) -> (Vec<f32>, serde_json::Value) {
    let raw = dir.join("input.bin");
    std::fs::write(
        &raw,
        input
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let code = format!(
        r#"
import json, numpy as np, onnx, onnxruntime as ort
m = onnx.load('{onnx}'); onnx.checker.check_model(m, full_check=True)
meta = {{p.key: p.value for p in m.metadata_props}}
x = np.fromfile('{raw}', dtype='<f4').reshape(1, 1, {z}, {y}, {x})
s = ort.InferenceSession('{onnx}', providers=['CPUExecutionProvider'])
y = s.run(['probability'], {{'image': x}})[0]
y.astype('<f4').tofile('{raw}.out')
print(json.dumps({{'opset': m.opset_import[0].version, 'contract': json.loads(meta['delineate.contract'])}}))
"#,
        onnx = onnx.display(),
        raw = raw.display(),
        x = dims[0],
        y = dims[1],
        z = dims[2]
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v["opset"], 17);
    let bytes = std::fs::read(dir.join("input.bin.out")).unwrap();
    let y = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (y, v["contract"].clone())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn onnx_runtime_gives_our_probabilities() {
    let tmp = tempfile::tempdir().unwrap();
    // 1. The built-in model on a preprocessed case (a 32×24×16 window).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/unet-synth.dlm");
    let dev = Default::default();
    let (net, info) = modelfile::load::<Cpu>(&path, &dev).unwrap();
    support::tiny_dataset(&tmp.path().join("data"), 1);
    let (name, dir) = &case_folders(&tmp.path().join("data")).unwrap()[0];
    let case = load_case(name, dir, &Preprocessing::default()).unwrap();
    let dims = [24, 16, 8];
    let s = case.image.geometry().size;
    let mut input = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                input.push(case.image.as_slice()[i + s[0] * (j + s[1] * (k + 8))]);
            }
        }
    }
    let bytes = delineate_model::onnx::export(&net, &info, "built-in").unwrap();
    let onnx = tmp.path().join("builtin.onnx");
    std::fs::write(&onnx, &bytes).unwrap();
    let Network::UNet(u) = &net else {
        panic!("a U-Net")
    };
    let ours = FastUNet::from_unet(u)
        .unwrap()
        .predict(&input, dims)
        .unwrap();
    let (theirs, contract) = ort(&onnx, &input, dims, tmp.path());
    let d = max_abs_diff(&ours, &theirs);
    assert!(d <= 1e-4, "built-in: max abs difference {d}");
    let spread =
        ours.iter().cloned().fold(0f32, f32::max) - ours.iter().cloned().fold(1f32, f32::min);
    assert!(spread > 1e-3, "a constant output proves nothing: {spread}");
    let back: Contract = serde_json::from_value(contract).unwrap();
    assert_eq!(back, info.contract);
    // 2. A seeded 16-32-64-128 U-Net (default widths) on a 16×24×32 window.
    let cfg = NetworkConfig::new("unet3d", Some(vec![16, 32, 64, 128])).unwrap();
    let net: Network<Cpu> = cfg.init_seeded(&dev, 5);
    let info = ModelInfo {
        format_version: FORMAT_VERSION,
        delineate_version: "test".into(),
        network: cfg,
        contract: Contract::new(Preprocessing::default(), [64, 64, 64]),
        training: serde_json::Value::Null,
        weights_bytes: None,
        stages: Vec::new(),
    };
    let dims = [16, 24, 32];
    let input: Vec<f32> = (0..16 * 24 * 32)
        .map(|i| ((i * 7919) % 101) as f32 / 30.0 - 1.5)
        .collect();
    let onnx = tmp.path().join("wide.onnx");
    std::fs::write(
        &onnx,
        delineate_model::onnx::export(&net, &info, "seeded").unwrap(),
    )
    .unwrap();
    let Network::UNet(u) = &net else {
        panic!("a U-Net")
    };
    let ours = FastUNet::from_unet(u)
        .unwrap()
        .predict(&input, dims)
        .unwrap();
    let (theirs, _) = ort(&onnx, &input, dims, tmp.path());
    let d = max_abs_diff(&ours, &theirs);
    assert!(d <= 1e-4, "16-32-64-128: max abs difference {d}");
}

#[test]
fn other_architectures_are_refused_by_name() {
    let cfg = NetworkConfig::new("vnet", Some(vec![4, 8])).unwrap();
    let net: Network<Cpu> = cfg.init(&Default::default());
    let info = ModelInfo {
        format_version: FORMAT_VERSION,
        delineate_version: "test".into(),
        network: cfg,
        contract: Contract::new(Preprocessing::default(), [16, 16, 16]),
        training: serde_json::Value::Null,
        weights_bytes: None,
        stages: Vec::new(),
    };
    let e = delineate_model::onnx::export(&net, &info, "v")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("vnet"), "{e}");
}
