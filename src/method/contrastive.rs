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
        let o0 = self.online.forward(views[0])?;
        let o1 = self.online.forward(views[1])?;
        let zt0 = self.target.project(views[0])?;
        let zt1 = self.target.project(views[1])?;
        let (p0, p1) = match (o0.p, o1.p) {
            (Some(a), Some(b)) => (a, b),
            _ => candle_core::bail!("the contrastive variant needs a predictor"),
        };
        let negatives = self.queue.keys();
        let loss = (info_nce(&p0, &zt1, negatives, self.temperature)?
            + info_nce(&p1, &zt0, negatives, self.temperature)?)?;
        Ok(StepOutput {
            loss,
            embeddings: Embeddings {
                y: [o0.y, o1.y],
                z: [o0.z, o1.z],
                z_target: [zt0, zt1],
                p: Some([p0, p1]),
            },
        })
    }

    fn after_step(&mut self, tau: Option<f64>, out: &StepOutput) -> Result<()> {
        self.target.update(&self.online, tau.unwrap_or(1.0))?;
        let [z0, z1] = &out.embeddings.z_target;
        self.queue.push(&Tensor::cat(&[z0, z1], 0)?)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        super::target_and_queue_state(&self.target, &self.queue)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        super::load_target_and_queue(&self.target, &mut self.queue, tensors)
    }
}
