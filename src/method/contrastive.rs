//! The study's "contrastive loss" row: the BYOL network (EMA target, predictor) trained with
//! InfoNCE — the prediction must pick the target projection of the other view out of a
//! queue of past target projections. Explicit negatives instead of batch norm.

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use super::losses::info_nce;
use super::network::{EmaTarget, OnlineNetwork};
use super::queue::Queue;
use super::{Embeddings, Method, Parts, StepOutput};
use crate::config::MethodName;

pub struct Contrastive {
    pub(super) online: OnlineNetwork,
    pub(super) target: EmaTarget,
    pub(super) queue: Queue,
    pub(super) temperature: f64,
}

impl Contrastive {
    pub(super) fn new(mut parts: Parts) -> Result<Self> {
        Ok(Self {
            target: parts.target()?,
            queue: parts.queue()?,
            online: parts.online,
            temperature: parts.temperature,
        })
    }
}

impl Method for Contrastive {
    fn name(&self) -> MethodName {
        MethodName::Contrastive
    }

    fn online(&self) -> &OnlineNetwork {
        &self.online
    }

    fn forward(&mut self, views: [&Tensor; 2]) -> Result<StepOutput> {
        let embeddings = Embeddings::of_views(&self.online, Some(&self.target), views)?;
        let [p0, p1] = embeddings.predictions("the contrastive variant")?;
        let [zt0, zt1] = &embeddings.z_target;
        let negatives = self.queue.keys();
        let loss = (info_nce(p0, zt1, negatives, self.temperature)?
            + info_nce(p1, zt0, negatives, self.temperature)?)?;
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
