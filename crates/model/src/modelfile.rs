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
pub const FORMAT_VERSION: u32 = 2;
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
        })
    }
}

/// Serialises the network and its description.
pub fn to_bytes<B: Backend>(net: &Network<B>, info: &ModelInfo) -> Result<Vec<u8>, Error> {
    let json =
        serde_json::to_vec(info).map_err(|e| Error::Input(format!("model description: {e}")))?;
    let weights = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(net.clone().into_record(), ())
        .map_err(|e| Error::Input(format!("cannot serialise the weights: {e}")))?;
    let mut out = Vec::with_capacity(24 + json.len() + weights.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&weights);
    Ok(out)
}

/// Writes a model file atomically.
pub fn save<B: Backend>(path: &Path, net: &Network<B>, info: &ModelInfo) -> Result<(), Error> {
    let bytes = to_bytes(net, info)?;
    delineate_imaging::atomic::write_atomically(path, ".dlm", |p, _| {
        std::fs::write(p, &bytes).map_err(|e| e.to_string())
    })?;
    Ok(())
}

/// Splits a model file into its description and weight bytes.
pub fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<(ModelInfo, &'a [u8]), Error> {
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
        FORMAT_VERSION => {
            serde_json::from_slice::<ModelInfo>(json).map_err(|e| refused(e.to_string()))?
        }
        other => {
            return Err(bad(&format!(
                "format version {other} (this build reads 1 and {FORMAT_VERSION})"
            )))
        }
    };
    info.contract.check().map_err(refused)?;
    Ok((info, &bytes[24 + len as usize..]))
}

/// Loads a model file onto `device`.
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<(Network<B>, ModelInfo), Error> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
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
