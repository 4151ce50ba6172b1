//! The model file: one self-describing file that inference needs nothing
//! besides.
//!
//! Layout: the 16-byte magic `DELINEATE-MODEL\n`, a little-endian u64 length,
//! that many bytes of JSON ([`ModelInfo`]: format version, delineate
//! version, architecture and its configuration, the train/inference
//! [`Contract`], training summary), then the weights as burn's named
//! MessagePack record (full precision). burn's bincode recorder panics on
//! damaged input; this one returns an error, and the loaded tensor shapes
//! are checked against the architecture, so a damaged file is refused by
//! name.
//!
//! **Format 3** adds stages around the lesion network: after the lesion
//! network's weights (`weights_bytes` of them) come whole model files of
//! the stages listed in `stages`, each with its kind, length and SHA-256
//! (today one kind: the intracranial mask, [`crate::intracranial`]). A
//! stage whose bytes do not match its SHA-256, or of an unknown kind, makes
//! the file unreadable, with the file named. Format-2 files (weights to the
//! end, no stages) still load, without stages.
//!
//! **Format 1** (before the contract) is read with this mapping, the
//! behaviour `delineate segment` always gave those files: spacing and clip
//! kept; normalisation `zscore-brain` → z-score over the head (inference
//! never had a brain mask); orientation: acquisition order; crop: head box
//! plus 8 voxels; windows: the patch, overlap 0.25; lesions: components
//! above 0.5, at least 1.5 mm; operating threshold:
//! `training.operating_threshold` (or 0.5), now a confidence threshold on
//! those lesions.

use std::path::Path;

use burn::module::Module;
use burn::module::{ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::contract::{Contract, Normalisation, Orientation, Preprocessing};
use crate::network::{Network, NetworkConfig};
use crate::Error;

pub const MAGIC: &[u8; 16] = b"DELINEATE-MODEL\n";
pub const FORMAT_VERSION: u32 = 3;
/// Header JSON larger than this is refused (a corrupt length).
const MAX_HEADER: u64 = 16 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub format_version: u32,
    pub delineate_version: String,
    /// Architecture and its configuration (`arch`: unet3d, vnet, deepmedic).
    pub network: NetworkConfig,
    /// What training did and inference must do the same way.
    pub contract: Contract,
    /// Free-form training summary (loss, sampling, iterations, data, ...).
    pub training: serde_json::Value,
    /// Bytes of the lesion network's weights (format 3; in format 2 they
    /// run to the end of the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_bytes: Option<u64>,
    /// Stages stored after the weights, in order (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRecord>,
}

/// The kinds of stage a model file may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    /// The intracranial-mask network ([`crate::intracranial`]).
    Intracranial,
    /// The second-stage lesion classifier ([`crate::classifier`]; JSON,
    /// not a model file).
    LesionClassifier,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Intracranial => "intracranial",
            StageKind::LesionClassifier => "lesion-classifier",
        }
    }
}

/// One stage in a model file: a whole model file of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    pub kind: StageKind,
    pub bytes: u64,
    /// SHA-256 of the stage's bytes (hex).
    pub sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The description in format 1.
#[derive(Deserialize)]
struct ModelInfoV1 {
    delineate_version: String,
    network: NetworkConfig,
    preprocessing: PreprocessingV1,
    patch: [usize; 3],
    training: serde_json::Value,
}

#[derive(Deserialize)]
struct PreprocessingV1 {
    spacing: [f64; 3],
    normalisation: String,
    clip: f32,
}

impl ModelInfoV1 {
    /// The documented mapping (module documentation).
    fn upgrade(self) -> Result<ModelInfo, String> {
        if self.preprocessing.normalisation != "zscore-brain" {
            return Err(format!(
                "preprocessing.normalisation {:?} is unknown",
                self.preprocessing.normalisation
            ));
        }
        let pre = Preprocessing {
            orientation: Orientation::Acquisition,
            spacing: self.preprocessing.spacing,
            normalisation: Normalisation::ZscoreHead {
                clip: self.preprocessing.clip,
            },
        };
        let mut contract = Contract::new(pre, self.patch);
        if let Some(t) = self
            .training
            .get("operating_threshold")
            .and_then(|v| v.as_f64())
        {
            contract.operating_threshold = t as f32;
        }
        Ok(ModelInfo {
            format_version: FORMAT_VERSION,
            delineate_version: self.delineate_version,
            network: self.network,
            contract,
            training: self.training,
            weights_bytes: None,
            stages: Vec::new(),
        })
    }
}

/// Serialises the network and its description (no stages).
pub fn to_bytes<B: Backend>(net: &Network<B>, info: &ModelInfo) -> Result<Vec<u8>, Error> {
    let weights = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(net.clone().into_record(), ())
        .map_err(|e| Error::Input(format!("cannot serialise the weights: {e}")))?;
    assemble(info, &weights, &[])
}

/// A model file from its description, weights and stages.
fn assemble(
    info: &ModelInfo,
    weights: &[u8],
    stages: &[(StageKind, &[u8])],
) -> Result<Vec<u8>, Error> {
    let info = ModelInfo {
        format_version: FORMAT_VERSION,
        weights_bytes: Some(weights.len() as u64),
        stages: stages
            .iter()
            .map(|(kind, b)| StageRecord {
                kind: *kind,
                bytes: b.len() as u64,
                sha256: sha256_hex(b),
            })
            .collect(),
        ..info.clone()
    };
    let json =
        serde_json::to_vec(&info).map_err(|e| Error::Input(format!("model description: {e}")))?;
    let total = stages.iter().map(|(_, b)| b.len()).sum::<usize>();
    let mut out = Vec::with_capacity(24 + json.len() + weights.len() + total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(weights);
    for (_, b) in stages {
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// `model` (the bytes of a model file) with `stage` (the bytes of another)
/// stored as its stage of `kind`, replacing one of that kind. The stage
/// must be a model file without stages of its own, trained for what the
/// kind needs (an intracranial stage: `--target intracranial`).
pub fn attach(
    model: &[u8],
    model_path: &Path,
    kind: StageKind,
    stage: &[u8],
    stage_path: &Path,
) -> Result<Vec<u8>, Error> {
    if kind == StageKind::LesionClassifier {
        return Err(Error::Input(format!(
            "{}: a lesion classifier is attached with attach_classifier",
            stage_path.display()
        )));
    }
    let (info, weights, mut stages) = parse_staged(model, model_path)?;
    let (sinfo, _, sstages) = parse_staged(stage, stage_path)?;
    if !sstages.is_empty() {
        return Err(Error::Input(format!(
            "{}: has stages of its own; a stage is one network",
            stage_path.display()
        )));
    }
    let target = sinfo.training.get("target").and_then(|t| t.as_str());
    let wanted = kind.name();
    if target != Some(wanted) {
        return Err(Error::Input(format!(
            "{}: was trained for {:?}, not as the {} stage (delineate train --target {wanted})",
            stage_path.display(),
            target.unwrap_or("lesions"),
            kind.name()
        )));
    }
    stages.retain(|(k, _)| *k != kind);
    stages.push((kind, stage));
    assemble(&info, weights, &stages)
}

/// SHA-256 (hex) of the lesion network's weights in a model file: what a
/// lesion classifier is tied to (attaching stages does not change it).
pub fn lesion_network_sha256(bytes: &[u8], path: &Path) -> Result<String, Error> {
    let (_, weights, _) = parse_staged(bytes, path)?;
    Ok(sha256_hex(weights))
}

/// `model` (the bytes of a model file) with `classifier` as its
/// lesion-classifier stage, replacing one. The classifier must have been
/// fitted behind this model's lesion network.
pub fn attach_classifier(
    model: &[u8],
    model_path: &Path,
    classifier: &crate::classifier::LesionClassifier,
) -> Result<Vec<u8>, Error> {
    let (info, weights, mut stages) = parse_staged(model, model_path)?;
    if sha256_hex(weights) != classifier.lesion_network_sha256 {
        return Err(Error::Input(format!(
            "{}: its lesion network is not the one the classifier was fitted behind (its candidates were found with another model)",
            model_path.display()
        )));
    }
    let bytes = classifier.to_bytes()?;
    stages.retain(|(k, _)| *k != StageKind::LesionClassifier);
    stages.push((StageKind::LesionClassifier, &bytes));
    assemble(&info, weights, &stages)
}

/// Writes a model file atomically.
pub fn save<B: Backend>(path: &Path, net: &Network<B>, info: &ModelInfo) -> Result<(), Error> {
    let bytes = to_bytes(net, info)?;
    delineate_imaging::atomic::write_atomically(path, ".dlm", |p, _| {
        std::fs::write(p, &bytes).map_err(|e| e.to_string())
    })?;
    Ok(())
}

/// Splits a model file into its description and weight bytes (its stages,
/// if any, checked and left out: [`parse_staged`]).
pub fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<(ModelInfo, &'a [u8]), Error> {
    let (info, weights, _) = parse_staged(bytes, path)?;
    Ok((info, weights))
}

/// The bytes of one stage of a model file (checked), if it has one.
pub fn stage<'a>(bytes: &'a [u8], path: &Path, kind: StageKind) -> Result<Option<&'a [u8]>, Error> {
    let (_, _, stages) = parse_staged(bytes, path)?;
    Ok(stages.into_iter().find(|(k, _)| *k == kind).map(|(_, b)| b))
}

type Parsed<'a> = (ModelInfo, &'a [u8], Vec<(StageKind, &'a [u8])>);

/// Splits a model file into its description, weight bytes and stages.
pub fn parse_staged<'a>(bytes: &'a [u8], path: &Path) -> Result<Parsed<'a>, Error> {
    let bad = |m: &str| {
        Error::Input(format!(
            "{}: not a delineate model file: {m}",
            path.display()
        ))
    };
    if bytes.len() < 24 || &bytes[..16] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[16..24]);
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER || 24 + len as usize > bytes.len() {
        return Err(bad("corrupt header length"));
    }
    let json = &bytes[24..24 + len as usize];
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
        #[serde(default)]
        delineate_version: String,
    }
    let v: Version = serde_json::from_slice(json).map_err(|e| bad(&format!("description: {e}")))?;
    if v.format_version > FORMAT_VERSION {
        return Err(Error::Input(format!(
            "{}: model format version {} was made by delineate {}, newer than this build ({}, which reads format {FORMAT_VERSION}); upgrade delineate",
            path.display(),
            v.format_version,
            v.delineate_version,
            env!("CARGO_PKG_VERSION")
        )));
    }
    let refused = |m: String| {
        Error::Input(format!(
            "{}: the model's contract cannot be followed: {m}",
            path.display()
        ))
    };
    let info = match v.format_version {
        1 => serde_json::from_slice::<ModelInfoV1>(json)
            .map_err(|e| bad(&format!("description (format 1): {e}")))?
            .upgrade()
            .map_err(refused)?,
        2 | FORMAT_VERSION => {
            serde_json::from_slice::<ModelInfo>(json).map_err(|e| refused(e.to_string()))?
        }
        other => {
            return Err(bad(&format!(
                "format version {other} (this build reads 1 to {FORMAT_VERSION})"
            )))
        }
    };
    info.contract.check().map_err(refused)?;
    let rest = &bytes[24 + len as usize..];
    if v.format_version < 3 {
        if !info.stages.is_empty() || info.weights_bytes.is_some() {
            return Err(bad("stages in a format-2 file"));
        }
        return Ok((info, rest, Vec::new()));
    }
    let n = info
        .weights_bytes
        .ok_or_else(|| bad("format 3 without weights_bytes"))?;
    let total = info
        .stages
        .iter()
        .try_fold(n, |t, s| t.checked_add(s.bytes))
        .ok_or_else(|| bad("corrupt stage lengths"))?;
    if total != rest.len() as u64 {
        return Err(bad(&format!(
            "the weights and stages should hold {total} bytes, the file has {} (truncated or damaged)",
            rest.len()
        )));
    }
    let (weights, mut tail) = rest.split_at(n as usize);
    let mut stages = Vec::new();
    for s in &info.stages {
        let (b, more) = tail.split_at(s.bytes as usize);
        if sha256_hex(b) != s.sha256 {
            return Err(bad(&format!(
                "its {} stage is damaged (SHA-256 differs from the one recorded)",
                s.kind.name()
            )));
        }
        if stages.iter().any(|(k, _)| k == &s.kind) {
            return Err(bad(&format!("two {} stages", s.kind.name())));
        }
        stages.push((s.kind, b));
        tail = more;
    }
    Ok((info, weights, stages))
}

/// Loads a model file onto `device`.
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<(Network<B>, ModelInfo), Error> {
    let bytes = std::fs::read(path).map_err(delineate_imaging::IoFailure::on(
        "read the model file",
        path,
    ))?;
    from_bytes(&bytes, path, device)
}

/// Loads a model from the bytes of a model file (`path` names it in errors).
pub fn from_bytes<B: Backend>(
    bytes: &[u8],
    path: &Path,
    device: &B::Device,
) -> Result<(Network<B>, ModelInfo), Error> {
    let (info, weights) = parse(bytes, path)?;
    let net = info.network.init::<B>(device);
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .load(weights.to_vec(), device)
        .map_err(|e| Error::Input(format!("{}: cannot read the weights: {e}", path.display())))?;
    let expected = shapes(&net);
    let net = net.load_record(record);
    if shapes(&net) != expected {
        return Err(Error::Input(format!(
            "{}: the weights do not fit the {} described in the file (damaged?)",
            path.display(),
            info.network.name()
        )));
    }
    Ok((net, info))
}

/// Shapes of every float parameter, in visiting order.
fn shapes<B: Backend>(net: &Network<B>) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
    let mut v = Shapes(Vec::new());
    net.visit(&mut v);
    v.0
}
