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
        let o0 = self.online.forward(views[0])?;
        let o1 = self.online.forward(views[1])?;
        let loss = nt_xent(&o0.z, &o1.z, self.temperature)?;
        let zt0 = o0.z.detach();
        let zt1 = o1.z.detach();
        Ok(StepOutput {
            loss,
            embeddings: Embeddings {
                y: [o0.y, o1.y],
                z: [o0.z, o1.z],
                z_target: [zt0, zt1],
                p: None,
            },
        })
    }

    fn after_step(&mut self, _tau: Option<f64>, _out: &StepOutput) -> Result<()> {
        Ok(())
    }
}
