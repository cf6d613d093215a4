//! BYOL (Grill et al. 2020): the online predictor regresses the EMA target's projection of
//! the other view; symmetric 2 − 2·cos loss. Nothing in the loss forbids collapse.

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use super::losses::normalized_l2;
use super::network::{EmaTarget, OnlineNetwork};
use super::{Embeddings, Method, Parts, StepOutput};
use crate::config::MethodName;

pub struct Byol {
    pub(super) online: OnlineNetwork,
    pub(super) target: EmaTarget,
}

impl Byol {
    pub(super) fn new(mut parts: Parts) -> Result<Self> {
        Ok(Self {
            target: parts.target()?,
            online: parts.online,
        })
    }
}

impl Method for Byol {
    fn name(&self) -> MethodName {
        MethodName::Byol
    }

    fn online(&self) -> &OnlineNetwork {
        &self.online
    }

    fn forward(&mut self, views: [&Tensor; 2]) -> Result<StepOutput> {
        let embeddings = Embeddings::of_views(&self.online, Some(&self.target), views)?;
        let [p0, p1] = embeddings.predictions("BYOL")?;
        let [zt0, zt1] = &embeddings.z_target;
        let loss = (normalized_l2(p0, zt1)? + normalized_l2(p1, zt0)?)?;
        Ok(StepOutput { loss, embeddings })
    }

    fn after_step(&mut self, tau: Option<f64>, _out: &StepOutput) -> Result<()> {
        self.target.update(&self.online, tau.unwrap_or(1.0))
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.target.state()
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.target.load_state(tensors)
    }
}
