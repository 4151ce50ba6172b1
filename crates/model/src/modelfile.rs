//! The model file: one self-describing file that inference needs nothing
//! besides.
//!
//! Layout: the 16-byte magic `DELINEATE-MODEL\n`, a little-endian u64 length,
//! that many bytes of JSON ([`ModelInfo`]: format version, delineate
//! version, architecture and its configuration, preprocessing, patch size,
//! training summary), then the weights as burn's named MessagePack record
//! (full precision). burn's bincode recorder panics on damaged input; this
//! one returns an error, and the loaded tensor shapes are checked against
//! the architecture, so a damaged file is refused by name.

use std::path::Path;

use burn::module::Module;
use burn::module::{ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::Preprocessing;
use crate::network::{Network, NetworkConfig};
use crate::Error;

pub const MAGIC: &[u8; 16] = b"DELINEATE-MODEL\n";
pub const FORMAT_VERSION: u32 = 1;
/// Header JSON larger than this is refused (a corrupt length).
const MAX_HEADER: u64 = 16 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format_version: u32,
    pub delineate_version: String,
    /// Architecture and its configuration (`arch`: unet3d, vnet, deepmedic).
    pub network: NetworkConfig,
    pub preprocessing: Preprocessing,
    /// Patch size the network was trained on (x, y, z voxels).
    pub patch: [usize; 3],
    /// Free-form training summary (loss, sampling, iterations, data, ...).
    pub training: serde_json::Value,
}

impl ModelInfo {
    /// The threshold to segment with: `training.operating_threshold` when
    /// the file has one (chosen on validation cases), else 0.5.
    pub fn operating_threshold(&self) -> f32 {
        self.training
            .get("operating_threshold")
            .and_then(|v| v.as_f64())
            .filter(|t| (0.0..1.0).contains(t))
            .unwrap_or(0.5) as f32
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
    let info: ModelInfo = serde_json::from_slice(&bytes[24..24 + len as usize])
        .map_err(|e| bad(&format!("description: {e}")))?;
    if info.format_version > FORMAT_VERSION {
        return Err(Error::Input(format!(
            "{}: model format version {} was made by delineate {}, newer than this build ({}, which reads format {FORMAT_VERSION}); upgrade delineate",
            path.display(),
            info.format_version,
            info.delineate_version,
            env!("CARGO_PKG_VERSION")
        )));
    }
    if info.format_version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            info.format_version
        )));
    }
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
