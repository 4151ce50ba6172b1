//! The three architectures behind one interface: a patch
//! `[batch, 1, x, y, z]` in, logits of the same size out.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::deepmedic::{DeepMedic, DeepMedicConfig};
use crate::unet::{UNet, UNetConfig};
use crate::vnet::{VNet, VNetConfig};

#[derive(Module, Debug)]
pub enum Network<B: Backend> {
    UNet(UNet<B>),
    VNet(VNet<B>),
    DeepMedic(DeepMedic<B>),
}

impl<B: Backend> Network<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        match self {
            Network::UNet(n) => n.forward(x),
            Network::VNet(n) => n.forward(x),
            Network::DeepMedic(n) => n.forward(x),
        }
    }
}

/// Architecture and its configuration (stored in the model file).
/// The architectures.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The paper's final model.
    Unet3d,
    Vnet,
    Deepmedic,
}

impl Arch {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unet3d" => Some(Self::Unet3d),
            "vnet" => Some(Self::Vnet),
            "deepmedic" => Some(Self::Deepmedic),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch")]
pub enum NetworkConfig {
    #[serde(rename = "unet3d")]
    UNet(UNetConfig),
    #[serde(rename = "vnet")]
    VNet(VNetConfig),
    #[serde(rename = "deepmedic")]
    DeepMedic(DeepMedicConfig),
}

impl NetworkConfig {
    /// The named architecture with `widths`, or its default widths
    /// (`None`: no such architecture).
    pub fn new(arch: &str, widths: Option<Vec<usize>>) -> Option<Self> {
        Arch::parse(arch).map(|a| Self::of(a, widths))
    }

    /// Architecture `arch` with `widths`, or its default widths.
    pub fn of(arch: Arch, widths: Option<Vec<usize>>) -> Self {
        match arch {
            Arch::Unet3d => {
                let c = UNetConfig::new();
                Self::UNet(match widths {
                    Some(w) => c.with_widths(w),
                    None => c,
                })
            }
            Arch::Vnet => {
                let c = VNetConfig::new();
                Self::VNet(match widths {
                    Some(w) => c.with_widths(w),
                    None => c,
                })
            }
            Arch::Deepmedic => {
                let c = DeepMedicConfig::new();
                Self::DeepMedic(match widths {
                    Some(w) => c.with_widths(w),
                    None => c,
                })
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::UNet(_) => "unet3d",
            Self::VNet(_) => "vnet",
            Self::DeepMedic(_) => "deepmedic",
        }
    }

    pub fn widths(&self) -> &[usize] {
        match self {
            Self::UNet(c) => &c.widths,
            Self::VNet(c) => &c.widths,
            Self::DeepMedic(c) => &c.widths,
        }
    }

    /// Patch sizes must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        match self {
            Self::UNet(c) => c.size_multiple(),
            Self::VNet(c) => c.size_multiple(),
            Self::DeepMedic(c) => c.size_multiple(),
        }
    }

    pub fn receptive_field(&self) -> usize {
        match self {
            Self::UNet(c) => c.receptive_field(),
            Self::VNet(c) => c.receptive_field(),
            Self::DeepMedic(c) => c.receptive_field(),
        }
    }

    /// [`Self::init`] from a seed: the U-Net draws from its own seeded
    /// stream ([`UNetConfig::init_seeded`]); the others seed burn's global
    /// RNG first.
    pub fn init_seeded<B: Backend>(&self, device: &B::Device, seed: u64) -> Network<B> {
        match self {
            Self::UNet(c) => Network::UNet(c.init_seeded(device, seed)),
            _ => {
                B::seed(device, seed);
                self.init(device)
            }
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Network<B> {
        match self {
            Self::UNet(c) => Network::UNet(c.init(device)),
            Self::VNet(c) => Network::VNet(c.init(device)),
            Self::DeepMedic(c) => Network::DeepMedic(c.init(device)),
        }
    }
}
