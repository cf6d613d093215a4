//! Self-supervised methods over one shared trait: forward two views → loss plus the
//! embeddings (y, z, z_target, p) the collapse diagnostics need.

mod byol;
mod contrastive;
pub mod losses;
mod moco;
mod network;
mod queue;
mod simclr;
mod simsiam;

use std::collections::HashMap;

use candle_core::{Result, Tensor};

pub use byol::Byol;
pub use contrastive::Contrastive;
pub use moco::Moco;
pub use network::{EmaTarget, OnlineNetwork, OnlineOutput};
pub use queue::Queue;
pub use simclr::SimClr;
pub use simsiam::SimSiam;

use crate::config::{MethodName, MethodSpec, RunConfig};
use crate::model::ParamStore;

/// Embeddings of both views of a batch. `z_target[i]` is what `z` of the *other* view is
/// compared with: the EMA target's projection (BYOL, MoCo, contrastive) or the detached
/// online projection (SimSiam, SimCLR).
pub struct Embeddings {
    /// Encoder outputs.
    pub y: [Tensor; 2],
    /// Online projections.
    pub z: [Tensor; 2],
    /// Target projections (detached).
    pub z_target: [Tensor; 2],
    /// Predictor outputs, where the method has a predictor.
    pub p: Option<[Tensor; 2]>,
}

impl Embeddings {
    /// Both views through the online network and, where the method has one, the EMA
    /// target (in that order: online view 0, view 1, target view 0, view 1). Without a
    /// target, `z_target` is the detached online projection.
    fn of_views(
        online: &OnlineNetwork,
        target: Option<&EmaTarget>,
        views: [&Tensor; 2],
    ) -> Result<Self> {
        let o0 = online.forward(views[0])?;
        let o1 = online.forward(views[1])?;
        let z_target = match target {
            Some(t) => [t.project(views[0])?, t.project(views[1])?],
            None => [o0.z.detach(), o1.z.detach()],
        };
        Ok(Self {
            y: [o0.y, o1.y],
            z: [o0.z, o1.z],
            z_target,
            p: o0.p.zip(o1.p).map(|(a, b)| [a, b]),
        })
    }

    /// The predictor outputs, which `method` needs.
    fn predictions(&self, method: &str) -> Result<&[Tensor; 2]> {
        match &self.p {
            Some(p) => Ok(p),
            None => candle_core::bail!("{method} needs a predictor"),
        }
    }
}

pub struct StepOutput {
    pub loss: Tensor,
    pub embeddings: Embeddings,
}

pub trait Method: Send {
    fn name(&self) -> MethodName;
    /// The trained network (its parameters go to the optimizer, its encoder to evaluation).
    fn online(&self) -> &OnlineNetwork;
    /// Forward both augmented views in training mode.
    fn forward(&mut self, views: [&Tensor; 2]) -> Result<StepOutput>;
    /// After the optimizer step: the EMA update with this step's τ, queue updates (none for
    /// a method without a target or queue).
    fn after_step(&mut self, _tau: Option<f64>, _out: &StepOutput) -> Result<()> {
        Ok(())
    }
    /// What training changes besides the online network (the EMA target, the queue), as
    /// named tensors for a checkpoint.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Restores what [`Method::state`] saved; every tensor it names must be present.
    fn load_state(&mut self, _tensors: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}

/// Prefix of the EMA target's tensors in a checkpoint.
pub const TARGET_PREFIX: &str = "target.";
/// Name of the queue's keys in a checkpoint.
pub const QUEUE_KEYS: &str = "queue.keys";

/// After a step of a method with an EMA target and a queue (MoCo, contrastive): the EMA
/// update, then this step's target projections of both views into the queue.
fn update_target_and_queue(
    online: &OnlineNetwork,
    target: &EmaTarget,
    queue: &mut Queue,
    tau: Option<f64>,
    out: &StepOutput,
) -> Result<()> {
    target.update(online, tau.unwrap_or(1.0))?;
    let [k0, k1] = &out.embeddings.z_target;
    queue.push(&Tensor::cat(&[k0, k1], 0)?)
}

/// Target and queue state of the methods that have both (MoCo, contrastive).
fn target_and_queue_state(target: &EmaTarget, queue: &Queue) -> Vec<(String, Tensor)> {
    let mut state = target.state();
    state.push((QUEUE_KEYS.to_string(), queue.keys().clone()));
    state
}

fn load_target_and_queue(
    target: &EmaTarget,
    queue: &mut Queue,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    target.load_state(tensors)?;
    let keys = tensors
        .get(QUEUE_KEYS)
        .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks `{QUEUE_KEYS}`")))?;
    queue.set_keys(keys)
}

/// The networks and settings a method is built from, made as its [`MethodSpec`] declares:
/// the target and the queue only where the method has them.
pub(crate) struct Parts {
    online: OnlineNetwork,
    target: Option<EmaTarget>,
    queue: Option<Queue>,
    temperature: f64,
}

impl Parts {
    fn target(&mut self) -> Result<EmaTarget> {
        self.target.take().ok_or_else(|| {
            candle_core::Error::Msg("the method's spec declares no EMA target".into())
        })
    }

    fn queue(&mut self) -> Result<Queue> {
        self.queue
            .take()
            .ok_or_else(|| candle_core::Error::Msg("the method's spec declares no queue".into()))
    }
}

/// Builds the method a run asks for, with weights drawn from the run seed.
pub fn build(
    cfg: &RunConfig,
    in_channels: usize,
    device: &candle_core::Device,
) -> Result<Box<dyn Method>> {
    let seed = cfg.train.seed;
    let store = ParamStore::new(device, seed);
    let name = cfg.method.name;
    let spec: &MethodSpec = name.spec();
    let online = OnlineNetwork::new(store, &cfg.model, in_channels, spec.predictor)?;
    let target = match spec.ema_target {
        true => Some(EmaTarget::new(&online, &cfg.model, in_channels)?),
        false => None,
    };
    let queue = match spec.queue {
        true => Some(Queue::new(
            cfg.method.queue_size,
            cfg.model.projector.out,
            seed ^ 0x9E37_79B9_7F4A_7C15,
            device,
        )?),
        false => None,
    };
    let parts = Parts {
        online,
        target,
        queue,
        temperature: cfg.method.temperature,
    };
    // The registry: one line per method.
    Ok(match name {
        MethodName::Byol => Box::new(Byol::new(parts)?),
        MethodName::Simsiam => Box::new(SimSiam::new(parts)?),
        MethodName::Simclr => Box::new(SimClr::new(parts)?),
        MethodName::Moco => Box::new(Moco::new(parts)?),
        MethodName::Contrastive => Box::new(Contrastive::new(parts)?),
    })
}
