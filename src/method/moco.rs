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
        let embeddings = Embeddings::of_views(&self.online, Some(&self.target), views)?;
        let ([q0, q1], [k0, k1]) = (&embeddings.z, &embeddings.z_target);
        let negatives = self.queue.keys();
        let loss = (info_nce(q0, k1, negatives, self.temperature)?
            + info_nce(q1, k0, negatives, self.temperature)?)?;
        Ok(StepOutput { loss, embeddings })
    }

    fn after_step(&mut self, tau: Option<f64>, out: &StepOutput) -> Result<()> {
        super::update_target_and_queue(&self.online, &self.target, &mut self.queue, tau, out)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        super::target_and_queue_state(&self.target, &self.queue)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        super::load_target_and_queue(&self.target, &mut self.queue, tensors)
    }
}
