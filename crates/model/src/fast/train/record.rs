//! The engine's optimiser state as burn's optimiser records (and back), so
//! that a checkpoint written by either engine resumes on the other: the
//! record of burn's `OptimizerAdaptor` maps each parameter id to the
//! state of burn's Adam (time, first and second moments) or SGD
//! (velocity) for that tensor.

use burn::module::ParamId;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::momentum::MomentumState;
use burn::optim::record::AdaptorRecord;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, Optimizer};
use burn::optim::{Sgd, SgdConfig, SgdState};
use burn::record::{FullPrecisionSettings, Record};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor, TensorData};

use super::params::Learnable;
use super::TrainUNet;
use crate::network::Network;
use crate::Error;

pub type AdamOptim<B> = OptimizerAdaptor<Adam, Network<B>, B>;
pub type SgdOptim<B> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, Network<B>, B>;
pub type AdamRecord<B> = <AdamOptim<B> as Optimizer<Network<B>, B>>::Record;
pub type SgdRecord<B> = <SgdOptim<B> as Optimizer<Network<B>, B>>::Record;

fn tensor<B: Backend, const D: usize>(
    l: &Learnable,
    packed: &[f32],
    dev: &Device<B>,
) -> Tensor<B, D> {
    Tensor::from_data(
        TensorData::new(l.layout.unpack(packed), l.shape.clone()),
        dev,
    )
}

fn packed<B: Backend, const D: usize>(l: &Learnable, t: Tensor<B, D>) -> Result<Vec<f32>, Error> {
    if t.dims().to_vec() != l.shape {
        return Err(Error::Input(format!(
            "optimiser state of shape {:?} for a parameter of shape {:?}",
            t.dims(),
            l.shape
        )));
    }
    let v = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Input(format!("optimiser state: {e:?}")))?;
    Ok(l.layout.pack(&v))
}

/// Calls `$f::<D>` with the learnable's rank (1 or 5: biases and norms,
/// convolution weights).
macro_rules! by_rank {
    ($l:expr, $f:ident, $($arg:expr),*) => {
        match $l.shape.len() {
            1 => $f::<B, 1>($($arg),*),
            5 => $f::<B, 5>($($arg),*),
            r => Err(Error::Input(format!("a parameter of rank {r}"))),
        }
    };
}

fn adam_entry<B: AutodiffBackend, const D: usize>(
    l: &Learnable,
    dev: &Device<B::InnerBackend>,
) -> Result<AdaptorRecord<Adam, B>, Error> {
    let m = AdaptiveMomentumState::new(
        l.time,
        tensor::<B::InnerBackend, D>(l, &l.moment1, dev),
        tensor::<B::InnerBackend, D>(l, &l.moment2, dev),
    );
    Ok(AdaptorRecord::from_state::<D>(AdamState::new(m)))
}

fn adam_load<B: AutodiffBackend, const D: usize>(
    l: &mut Learnable,
    r: AdaptorRecord<Adam, B>,
) -> Result<(), Error> {
    let s: AdamState<B::InnerBackend, D> = r.into_state::<D>();
    l.time = s.momentum.time;
    l.moment1 = packed(l, s.momentum.moment_1)?;
    l.moment2 = packed(l, s.momentum.moment_2)?;
    Ok(())
}

type SgdOf<B> = Sgd<<B as AutodiffBackend>::InnerBackend>;

fn sgd_entry<B: AutodiffBackend, const D: usize>(
    l: &Learnable,
    dev: &Device<B::InnerBackend>,
) -> Result<AdaptorRecord<SgdOf<B>, B>, Error> {
    let v = MomentumState::new(tensor::<B::InnerBackend, D>(l, &l.moment1, dev));
    Ok(AdaptorRecord::from_state::<D>(SgdState::new(Some(v))))
}

fn sgd_load<B: AutodiffBackend, const D: usize>(
    l: &mut Learnable,
    r: AdaptorRecord<SgdOf<B>, B>,
    dev: &Device<B::InnerBackend>,
) -> Result<(), Error> {
    let s: SgdState<B::InnerBackend, D> = r.into_state::<D>();
    let Some(m) = s.momentum else {
        l.time = 0;
        return Ok(());
    };
    // burn's velocity field is private; its record item is public.
    let item = m.into_item::<FullPrecisionSettings>();
    let v: Tensor<B::InnerBackend, D> = Record::from_item(item.velocity, dev);
    l.moment1 = packed(l, v)?;
    // SGD's state carries no step count; any value > 0 means "has velocity".
    l.time = 1;
    Ok(())
}

impl TrainUNet {
    /// burn Adam's record of this state (ids as in [`Self::write_unet`]).
    pub fn adam_record<B: AutodiffBackend>(
        &self,
        dev: &Device<B::InnerBackend>,
    ) -> Result<AdamRecord<B>, Error> {
        let mut rec = AdamConfig::new().init::<B, Network<B>>().to_record();
        for (l, id) in self.params.iter().zip(&self.ids) {
            if l.time > 0 {
                rec.insert(*id, by_rank!(l, adam_entry, l, dev)?);
            }
        }
        Ok(rec)
    }

    /// Takes Adam's state from burn's record (parameters it lacks start
    /// fresh).
    pub fn load_adam_record<B: AutodiffBackend>(
        &mut self,
        mut rec: AdamRecord<B>,
    ) -> Result<(), Error> {
        for (l, id) in self.params.iter_mut().zip(&self.ids) {
            match rec.remove(id) {
                Some(r) => by_rank!(l, adam_load, l, r)?,
                None => l.time = 0,
            }
        }
        Ok(())
    }

    /// burn SGD's record of this state.
    pub fn sgd_record<B: AutodiffBackend>(
        &self,
        dev: &Device<B::InnerBackend>,
    ) -> Result<SgdRecord<B>, Error> {
        let mut rec = SgdConfig::new().init::<B, Network<B>>().to_record();
        for (l, id) in self.params.iter().zip(&self.ids) {
            if l.time > 0 {
                rec.insert(*id, by_rank!(l, sgd_entry, l, dev)?);
            }
        }
        Ok(rec)
    }

    /// Takes SGD's state from burn's record.
    pub fn load_sgd_record<B: AutodiffBackend>(
        &mut self,
        mut rec: SgdRecord<B>,
        dev: &Device<B::InnerBackend>,
    ) -> Result<(), Error> {
        for (l, id) in self.params.iter_mut().zip(&self.ids) {
            match rec.remove(id) {
                Some(r) => by_rank!(l, sgd_load, l, r, dev)?,
                None => l.time = 0,
            }
        }
        Ok(())
    }

    /// Ids of the learnables, in the engine's order.
    pub fn ids(&self) -> &[ParamId] {
        &self.ids
    }
}
