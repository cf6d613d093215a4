//! SimCLR (Chen et al. 2020): NT-Xent over the batch — every other image is a negative.

use candle_core::{Result, Tensor};

use super::losses::nt_xent;
use super::network::OnlineNetwork;
use super::{Embeddings, Method, Parts, StepOutput};
use crate::config::MethodName;

pub struct SimClr {
    pub(super) online: OnlineNetwork,
    pub(super) temperature: f64,
}

impl SimClr {
    pub(super) fn new(parts: Parts) -> Result<Self> {
        Ok(Self {
            online: parts.online,
            temperature: parts.temperature,
        })
    }
}

impl Method for SimClr {
    fn name(&self) -> MethodName {
        MethodName::Simclr
    }

    fn online(&self) -> &OnlineNetwork {
        &self.online
    }

    fn forward(&mut self, views: [&Tensor; 2]) -> Result<StepOutput> {
        let embeddings = Embeddings::of_views(&self.online, None, views)?;
        let [z0, z1] = &embeddings.z;
        let loss = nt_xent(z0, z1, self.temperature)?;
        Ok(StepOutput { loss, embeddings })
    }
}
