//! MoCo v2 (Chen et al. 2020): queries from the online encoder + MLP projector, keys from its
//! EMA copy, InfoNCE against a queue of past keys. Both views act as queries (symmetric), as
//! the study's runs did.

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use super::losses::info_nce;
use super::network::{EmaTarget, OnlineNetwork};
use super::queue::Queue;
use super::{Embeddings, Method, Parts, StepOutput};
use crate::config::MethodName;

pub struct Moco {
    pub(super) online: OnlineNetwork,
    pub(super) target: EmaTarget,
    pub(super) queue: Queue,
    pub(super) temperature: f64,
}

impl Moco {
    pub(super) fn new(mut parts: Parts) -> Result<Self> {
        Ok(Self {
            target: parts.target()?,
            queue: parts.queue()?,
            online: parts.online,
            temperature: parts.temperature,
        })
    }
}

impl Method for Moco {
    fn name(&self) -> MethodName {
        MethodName::Moco
    }

    fn online(&self) -> &OnlineNetwork {
        &self.online
    }

    fn forward(&mut self, views: [&Tensor; 2]) -> Result<StepOutput> {
        let o0 = self.online.forward(views[0])?;
        let o1 = self.online.forward(views[1])?;
        let k0 = self.target.project(views[0])?;
        let k1 = self.target.project(views[1])?;
        let negatives = self.queue.keys();
        let loss = (info_nce(&o0.z, &k1, negatives, self.temperature)?
            + info_nce(&o1.z, &k0, negatives, self.temperature)?)?;
        Ok(StepOutput {
            loss,
            embeddings: Embeddings {
                y: [o0.y, o1.y],
                z: [o0.z, o1.z],
                z_target: [k0, k1],
                p: None,
            },
        })
    }

    fn after_step(&mut self, tau: Option<f64>, out: &StepOutput) -> Result<()> {
        self.target.update(&self.online, tau.unwrap_or(1.0))?;
        let [k0, k1] = &out.embeddings.z_target;
        self.queue.push(&Tensor::cat(&[k0, k1], 0)?)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        super::target_and_queue_state(&self.target, &self.queue)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        super::load_target_and_queue(&self.target, &mut self.queue, tensors)
    }
}
