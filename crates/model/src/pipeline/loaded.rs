//! A model file loaded for inference: the lesion network, its stages
//! (intracranial mask, lesion classifier) and its identity.

use std::path::{Path, PathBuf};

use delineate_dicom::ModelId;

use crate::backend::Backend;
use crate::classifier::LesionClassifier;
use crate::fast::FastUNet;
use crate::infer::{BurnPredictor, TilePredictor};
use crate::modelfile::{self, ModelInfo, StageKind};
use crate::network::Network;
use crate::result::model_id;
use crate::segment::{Stage, Stages};
use crate::Error;

/// The model shipped with delineate (docs/model-card.md): a 3D U-Net
/// trained on synthetic cases with its intracranial and lesion-classifier
/// stages; research use only.
pub static SHIPPED_MODEL: &[u8] = include_bytes!("../../../../models/unet-synth.dlm");
pub const SHIPPED_MODEL_NAME: &str = "models/unet-synth.dlm (built in)";

/// A loaded model on some backend (with its packed fast CPU form when that
/// is the engine).
pub struct LoadedModel<B: Backend> {
    pub net: Network<B>,
    pub info: ModelInfo,
    pub name: String,
    /// Name, SHA-256 and whether it is the built-in research model.
    pub id: ModelId,
    pub fast: Option<FastUNet>,
    pub device: B::Device,
    /// The intracranial-mask stage, when the model file has one.
    pub intracranial: Option<StageNet<B>>,
    /// The second-stage lesion classifier, when the model file has one.
    pub classifier: Option<LesionClassifier>,
    /// SHA-256 of the lesion network's weights.
    pub lesion_network_sha256: String,
}

/// A stage's network, loaded like the lesion network.
pub struct StageNet<B: Backend> {
    pub net: Network<B>,
    pub info: ModelInfo,
    pub fast: Option<FastUNet>,
}

fn predictor_for<'a, B: Backend>(
    net: &'a Network<B>,
    fast: Option<&'a FastUNet>,
    device: &'a B::Device,
) -> Box<dyn TilePredictor + 'a> {
    match fast {
        Some(f) => Box::new(f),
        None => Box::new(BurnPredictor { net, device }),
    }
}

/// The engines of a model's stages, borrowed for one run of
/// [`crate::segment::segment_staged`].
pub struct Engines<'a> {
    pub lesion: Box<dyn TilePredictor + 'a>,
    pub intracranial: Option<Box<dyn TilePredictor + 'a>>,
}

impl<B: Backend> LoadedModel<B> {
    /// The engine that runs the windows.
    pub fn predictor(&self) -> Box<dyn TilePredictor + '_> {
        predictor_for(&self.net, self.fast.as_ref(), &self.device)
    }

    /// The engines of every network of the model.
    pub fn engines(&self) -> Engines<'_> {
        Engines {
            lesion: self.predictor(),
            intracranial: self
                .intracranial
                .as_ref()
                .map(|s| predictor_for(&s.net, s.fast.as_ref(), &self.device)),
        }
    }

    /// The model's stages running on `engines`.
    pub fn stages<'a>(&'a self, engines: &'a Engines<'a>) -> Stages<'a> {
        Stages {
            intracranial: match (&engines.intracranial, &self.intracranial) {
                (Some(p), Some(s)) => Some(Stage {
                    predictor: p.as_ref(),
                    info: &s.info,
                }),
                _ => None,
            },
            classifier: self.classifier.as_ref(),
        }
    }

    pub fn engine(&self) -> &'static str {
        if self.fast.is_some() {
            "fast CPU"
        } else {
            "burn"
        }
    }
}

/// Loads the model file at `path` (`None`: the built-in model); `fast`
/// packs a U-Net for the fast CPU engine. A damaged file or stage is an
/// error naming the file.
pub fn load_model<B: Backend>(
    path: Option<&Path>,
    device: &B::Device,
    fast: bool,
) -> Result<LoadedModel<B>, Error> {
    let read;
    let (bytes, file, name, id): (&[u8], &Path, String, ModelId) = match path {
        Some(p) => {
            read = std::fs::read(p).map_err(|source| {
                Error::Io(delineate_imaging::IoFailure {
                    what: "read the model file",
                    path: p.to_path_buf(),
                    source,
                })
            })?;
            let short = p.file_name().map_or_else(
                || p.display().to_string(),
                |f| f.to_string_lossy().to_string(),
            );
            let id = model_id(&short, &read, false);
            (&read, p, p.display().to_string(), id)
        }
        None => (
            SHIPPED_MODEL,
            Path::new(SHIPPED_MODEL_NAME),
            SHIPPED_MODEL_NAME.to_string(),
            model_id("unet-synth.dlm (built in)", SHIPPED_MODEL, true),
        ),
    };
    let (net, info) = modelfile::from_bytes::<B>(bytes, file, device)?;
    let pack = |net: &Network<B>| -> Result<Option<FastUNet>, Error> {
        Ok(match (net, fast) {
            (Network::UNet(u), true) => Some(FastUNet::from_unet(u)?),
            _ => None,
        })
    };
    let intracranial = match modelfile::stage(bytes, file, StageKind::Intracranial)? {
        Some(b) => {
            let where_ = PathBuf::from(format!("{} (intracranial stage)", file.display()));
            let (net, info) = modelfile::from_bytes::<B>(b, &where_, device)?;
            let fast = pack(&net)?;
            Some(StageNet { net, info, fast })
        }
        None => None,
    };
    let classifier = match modelfile::stage(bytes, file, StageKind::LesionClassifier)? {
        Some(b) => {
            let where_ = PathBuf::from(format!("{} (lesion-classifier stage)", file.display()));
            Some(LesionClassifier::from_bytes(b, &where_)?)
        }
        None => None,
    };
    let fast = pack(&net)?;
    Ok(LoadedModel {
        net,
        info,
        name,
        id,
        fast,
        device: device.clone(),
        intracranial,
        classifier,
        lesion_network_sha256: modelfile::lesion_network_sha256(bytes, file)?,
    })
}
