//! The training engines behind one interface, as the training loop
//! ([`crate::trainer`]) sees them: one optimiser step on a batch, the
//! current weights as an inference network, and checkpoint records.
//!
//! - **fast** ([`crate::fast::train::TrainUNet`]): the native CPU engine
//!   for the U-Net, the default on CPU.
//! - **burn**: any architecture on any burn backend (flex on CPU, CUDA),
//!   through burn autodiff and burn's optimisers.
//!
//! Both write the same records (burn's named MessagePack of the network
//! and of burn's optimiser state, keyed by parameter id), so a run can be
//! resumed on the other engine.

use burn::module::{AutodiffModule, Module};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, Optimizer, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{backend::AutodiffBackend, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backend::{Cpu, CpuTrain};
use crate::fast::train::params::OptimizerKind;
use crate::fast::train::TrainUNet;
use crate::network::{Network, NetworkConfig};
use crate::train::{step, Batch, LossKind};
use crate::Error;

/// Which engine trains.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The native CPU engine (U-Net only).
    #[default]
    Fast,
    /// burn autodiff on the run's device.
    Burn,
}

/// The optimiser of a run.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerChoice {
    /// burn's `AdamConfig::new()` (β 0.9/0.999, ε 1e-5).
    #[default]
    Adam,
    /// SGD with Nesterov momentum 0.9, no dampening.
    Sgd,
}

impl OptimizerChoice {
    fn kind(self) -> OptimizerKind {
        match self {
            Self::Adam => OptimizerKind::ADAM,
            Self::Sgd => OptimizerKind::SGD_NESTEROV,
        }
    }

    fn sgd_config() -> SgdConfig {
        SgdConfig::new().with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(0.9)
                .with_dampening(0.0)
                .with_nesterov(true),
        ))
    }
}

/// One batch on the host: patches x-fastest, one after the other.
pub struct HostBatch {
    pub image: Vec<f32>,
    pub target: Vec<f32>,
    pub weights: Vec<f32>,
    pub batch: usize,
    pub patch: [usize; 3],
}

/// What the training loop needs of an engine.
pub trait Engine {
    fn kind(&self) -> EngineKind;
    /// Forward, loss, backward and one optimiser step; the loss.
    fn step(&mut self, b: &HostBatch, loss: LossKind, lr: f64) -> Result<f32, Error>;
    /// The current weights as an inference network on the CPU.
    fn network(&self) -> Result<Network<Cpu>, Error>;
    /// The network's and the optimiser's records (checkpoint parts).
    fn records(&self) -> Result<(Vec<u8>, Vec<u8>), Error>;
    /// Restores both from [`Self::records`] of either engine.
    fn load_records(&mut self, model: Vec<u8>, optim: Vec<u8>) -> Result<(), Error>;
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
}

fn record_err(what: &str) -> impl Fn(burn::record::RecorderError) -> Error + '_ {
    move |e| Error::Input(format!("{what}: {e}"))
}

/// A network's weights on another backend (through its record).
fn to_cpu<B: burn::tensor::backend::Backend>(
    net: &Network<B>,
    cfg: &NetworkConfig,
) -> Result<Network<Cpu>, Error> {
    let bytes = recorder()
        .record(net.clone().into_record(), ())
        .map_err(record_err("weights"))?;
    let dev = Default::default();
    let rec = recorder()
        .load(bytes, &dev)
        .map_err(record_err("weights"))?;
    Ok(cfg.init::<Cpu>(&dev).load_record(rec))
}

/// burn autodiff with burn's optimiser `O`.
struct BurnEngine<B: AutodiffBackend, O> {
    net: Option<Network<B>>,
    opt: O,
    device: B::Device,
    cfg: NetworkConfig,
}

impl<B, O> Engine for BurnEngine<B, O>
where
    B: AutodiffBackend,
    O: Optimizer<Network<B>, B> + Clone,
    Network<B>: AutodiffModule<B>,
{
    fn kind(&self) -> EngineKind {
        EngineKind::Burn
    }

    fn step(&mut self, b: &HostBatch, loss: LossKind, lr: f64) -> Result<f32, Error> {
        let [px, py, pz] = b.patch;
        let t = |v: &[f32]| {
            Tensor::<B, 5>::from_data(
                TensorData::new(v.to_vec(), [b.batch, 1, pz, py, px]),
                &self.device,
            )
        };
        let batch = Batch {
            image: t(&b.image),
            target: t(&b.target),
            weights: t(&b.weights),
        };
        let net = self
            .net
            .take()
            .ok_or_else(|| Error::Input("the network was lost by a failed step".into()))?;
        let (net, l) = step(net, &mut self.opt, loss, &batch, lr);
        self.net = Some(net);
        Ok(l)
    }

    fn network(&self) -> Result<Network<Cpu>, Error> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| Error::Input("no network".into()))?;
        to_cpu(net, &self.cfg)
    }

    fn records(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| Error::Input("no network".into()))?;
        let model = recorder()
            .record(net.clone().into_record(), ())
            .map_err(record_err("checkpoint"))?;
        let optim = recorder()
            .record(self.opt.to_record(), ())
            .map_err(record_err("checkpoint"))?;
        Ok((model, optim))
    }

    fn load_records(&mut self, model: Vec<u8>, optim: Vec<u8>) -> Result<(), Error> {
        let net = self
            .net
            .take()
            .ok_or_else(|| Error::Input("no network".into()))?;
        let rec = recorder()
            .load(model, &self.device)
            .map_err(record_err("checkpoint weights"))?;
        self.net = Some(net.load_record(rec));
        let orec = recorder()
            .load(optim, &self.device)
            .map_err(record_err("checkpoint optimiser state"))?;
        self.opt = self.opt.clone().load_record(orec);
        Ok(())
    }
}

/// Where a run trains.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// burn's CUDA backend (builds with the `cuda` feature).
    Cuda,
}

/// The engine a run asks for, with its seeded initial network.
pub fn engine_for(
    kind: EngineKind,
    device: Device,
    cfg: &NetworkConfig,
    optimizer: OptimizerChoice,
    seed: u64,
) -> Result<Box<dyn Engine>, Error> {
    match (kind, device) {
        (EngineKind::Fast, Device::Cpu) => fast_engine(cfg, optimizer, seed),
        (EngineKind::Fast, Device::Cuda) => Err(Error::Input(
            "the fast engine runs on the CPU; on a GPU use --engine burn".into(),
        )),
        (EngineKind::Burn, Device::Cpu) => Ok(burn_engine::<CpuTrain>(
            cfg,
            optimizer,
            seed,
            &Default::default(),
        )),
        #[cfg(feature = "cuda")]
        (EngineKind::Burn, Device::Cuda) => Ok(burn_engine::<crate::backend::GpuTrain>(
            cfg,
            optimizer,
            seed,
            &Default::default(),
        )),
        #[cfg(not(feature = "cuda"))]
        (EngineKind::Burn, Device::Cuda) => Err(Error::Input(
            "this build has no CUDA backend (build with --features cuda); see docs/training.md"
                .into(),
        )),
    }
}

/// A burn engine on `device` with the seeded initial network.
pub fn burn_engine<B: AutodiffBackend>(
    cfg: &NetworkConfig,
    optimizer: OptimizerChoice,
    seed: u64,
    device: &B::Device,
) -> Box<dyn Engine> {
    let net: Network<B> = cfg.init_seeded(device, seed);
    match optimizer {
        OptimizerChoice::Adam => Box::new(BurnEngine {
            net: Some(net),
            opt: AdamConfig::new().init::<B, Network<B>>(),
            device: device.clone(),
            cfg: cfg.clone(),
        }),
        OptimizerChoice::Sgd => Box::new(BurnEngine {
            net: Some(net),
            opt: OptimizerChoice::sgd_config().init::<B, Network<B>>(),
            device: device.clone(),
            cfg: cfg.clone(),
        }),
    }
}

/// The native CPU engine.
struct FastEngine {
    net: TrainUNet,
    cfg: NetworkConfig,
    optimizer: OptimizerChoice,
}

/// The native engine with the seeded initial network (the same weights as
/// [`burn_engine`] with the same seed). U-Nets only.
pub fn fast_engine(
    cfg: &NetworkConfig,
    optimizer: OptimizerChoice,
    seed: u64,
) -> Result<Box<dyn Engine>, Error> {
    let NetworkConfig::UNet(u) = cfg else {
        return Err(Error::Input(format!(
            "the fast training engine covers the U-Net; a {} trains with --engine burn",
            cfg.name()
        )));
    };
    let net = u.init_seeded::<CpuTrain>(&Default::default(), seed);
    Ok(Box::new(FastEngine {
        net: TrainUNet::from_unet(&net, optimizer.kind())?,
        cfg: cfg.clone(),
        optimizer,
    }))
}

impl FastEngine {
    /// The weights in a burn network of backend `B` (ids kept).
    fn burn_net<B: burn::tensor::backend::Backend>(&self) -> Network<B> {
        let NetworkConfig::UNet(u) = &self.cfg else {
            unreachable!("checked at construction")
        };
        Network::UNet(self.net.write_unet(u.init::<B>(&Default::default())))
    }
}

impl Engine for FastEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Fast
    }

    fn step(&mut self, b: &HostBatch, loss: LossKind, lr: f64) -> Result<f32, Error> {
        self.net
            .step(loss, &b.image, &b.target, &b.weights, b.batch, b.patch, lr)
    }

    fn network(&self) -> Result<Network<Cpu>, Error> {
        Ok(self.burn_net::<Cpu>())
    }

    fn records(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let model = recorder()
            .record(self.burn_net::<CpuTrain>().into_record(), ())
            .map_err(record_err("checkpoint"))?;
        let dev = Default::default();
        let optim = match self.optimizer {
            OptimizerChoice::Adam => recorder().record(self.net.adam_record::<CpuTrain>(&dev)?, ()),
            OptimizerChoice::Sgd => recorder().record(self.net.sgd_record::<CpuTrain>(&dev)?, ()),
        }
        .map_err(record_err("checkpoint"))?;
        Ok((model, optim))
    }

    fn load_records(&mut self, model: Vec<u8>, optim: Vec<u8>) -> Result<(), Error> {
        let dev = Default::default();
        let rec = recorder()
            .load(model, &dev)
            .map_err(record_err("checkpoint weights"))?;
        let net: Network<CpuTrain> = self.cfg.init::<CpuTrain>(&dev).load_record(rec);
        let Network::UNet(u) = &net else {
            return Err(Error::Input("the checkpoint holds no U-Net".into()));
        };
        self.net = TrainUNet::from_unet(u, self.optimizer.kind())?;
        let bad = record_err("checkpoint optimiser state");
        match self.optimizer {
            OptimizerChoice::Adam => {
                let r = recorder().load(optim, &dev).map_err(bad)?;
                self.net.load_adam_record::<CpuTrain>(r)
            }
            OptimizerChoice::Sgd => {
                let r = recorder().load(optim, &dev).map_err(bad)?;
                self.net.load_sgd_record::<CpuTrain>(r, &dev)
            }
        }
    }
}
