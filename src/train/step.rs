//! One training step, shared by the trainer and `bench`: both views forward, the loss,
//! backward, the gradient norm, the optimizer update and the EMA/queue update, each phase
//! timed; and the step's live collapse diagnostics.

use std::time::Instant;

use candle_core::{DType, Result, Tensor};

use super::optim::{grad_norm, Optimizer};
use crate::method::{Embeddings, Method, StepOutput};
use crate::metrics::{effective_rank, symmetric_pos_neg_cos, z_std};

/// What one step did.
pub struct Step {
    pub out: StepOutput,
    pub loss: f64,
    /// NaN when the loss was not finite (no backward pass).
    pub grad_norm: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub update_ms: f64,
}

/// Milliseconds from `a` to `b` (phase timings).
pub fn ms(a: Instant, b: Instant) -> f64 {
    (b - a).as_secs_f64() * 1e3
}

/// Runs one step of `method`. A non-finite loss skips backward and update; a non-finite
/// gradient norm skips the update (the caller records the run as diverged).
pub fn training_step(
    method: &mut dyn Method,
    optimizer: &mut Optimizer,
    views: [&Tensor; 2],
    lr: f64,
    tau: Option<f64>,
) -> Result<Step> {
    let t0 = Instant::now();
    let out = method.forward(views)?;
    let loss = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let t1 = Instant::now();
    let (mut grad_norm_value, mut t2) = (f64::NAN, t1);
    if loss.is_finite() {
        let grads = out.loss.backward()?;
        let params = method.online().store.params().to_vec();
        grad_norm_value = grad_norm(&params, &grads)?;
        t2 = Instant::now();
        if grad_norm_value.is_finite() {
            optimizer.step(&params, &grads, lr)?;
            method.after_step(tau, &out)?;
            // A GPU queues the update: wait for it before reading the clock.
            if let Some(p) = params.first().filter(|p| !p.var.device().is_cpu()) {
                p.var
                    .as_tensor()
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
    }
    let t3 = Instant::now();
    Ok(Step {
        out,
        loss,
        grad_norm: grad_norm_value,
        forward_ms: ms(t0, t1),
        backward_ms: ms(t1, t2),
        update_ms: ms(t2, t3),
    })
}

/// The live diagnostics of a step's embeddings: (pos_cos, neg_cos, z_std, effective rank).
pub fn step_metrics(e: &Embeddings) -> Result<(f64, f64, f64, f64)> {
    let (pos, neg, spread) = pos_neg_spread(e)?;
    Ok((pos, neg, spread, effective_rank(&e.z[0])?))
}

/// pos/neg cosine and z_std: on a CUDA device one kernel launch and one small host copy
/// (collapse-lab's kernel, tested against the metrics functions); elsewhere those functions.
fn pos_neg_spread(e: &Embeddings) -> Result<(f64, f64, f64)> {
    #[cfg(feature = "cuda")]
    if e.z[0].device().is_cuda() {
        return crate::cuda::diagnostics::step_diagnostics(&e.z, &e.z_target);
    }
    let (pos, neg) = symmetric_pos_neg_cos(&e.z, &e.z_target)?;
    Ok((pos, neg, z_std(&e.z[0])?))
}
