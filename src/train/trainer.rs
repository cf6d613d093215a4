//! The step loop: two augmented views → method forward → backward → optimizer → EMA/queue
//! update → per-step collapse metrics → observer. A non-finite loss or gradient stops the run
//! as `diverged`; the caller records it and the grid goes on.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use indicatif::ProgressBar;

use super::optim::{grad_norm, Optimizer};
use super::schedule::{lr_at, tau_at};
use crate::analysis::{
    effective_rank, is_collapsed, symmetric_pos_neg_cos, z_std, NonFiniteEmbeddings,
};
use crate::config::RunConfig;
use crate::data::{Augmenter, Dataset, TwoViewBatch, TwoViewLoader};
use crate::method::{build, Embeddings, Method};

/// One optimizer step, as logged in `steps.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub epoch: u32,
    pub step: u64,
    pub loss: f64,
    /// Mean cosine between the two views of the same image (z vs z′, both view orders).
    pub pos_cos: f64,
    /// Mean cosine between different images (z vs z′).
    pub neg_cos: f64,
    /// Std of l2-normalised online projections of view 0.
    pub z_std: f64,
    /// RankMe of the (uncentred) online projections of view 0.
    pub effective_rank: f64,
    pub lr: f64,
    /// EMA coefficient used this step (None for methods without an EMA target).
    pub tau: Option<f64>,
    pub grad_norm: f64,
    /// Wall time of the training step (data wait, forward, backward, update), ms.
    pub step_ms: f64,
    /// Wall time of the per-step diagnostics, ms.
    pub metrics_ms: f64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Ok,
    /// Loss or gradient became NaN/∞ at this step.
    Diverged {
        step: u64,
        reason: String,
    },
    /// Stopped early (`train.stop_on_collapse`): the collapse signature held this long.
    StoppedCollapsed {
        step: u64,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub status: RunStatus,
    pub steps: u64,
    pub wall_seconds: f64,
    pub images_per_second: f64,
    /// Dimension of the projections z.
    pub projection_dim: usize,
}

/// Receives every step (and may keep the batch's embeddings), and is called at every
/// evaluation point: before training (epoch 0) and after each completed epoch.
pub trait StepObserver {
    fn on_step(
        &mut self,
        record: &StepRecord,
        embeddings: &Embeddings,
        batch: &TwoViewBatch,
    ) -> anyhow::Result<()>;

    /// `epoch` epochs are complete after `step` optimizer steps; `last` marks the end of the
    /// run (also when it stops early).
    fn on_epoch_end(
        &mut self,
        _epoch: u32,
        _step: u64,
        _last: bool,
        _method: &dyn Method,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// pos_cos, neg_cos and z_std of a step: on a CUDA device one kernel launch and one small
/// host copy (collapse-lab's kernel, tested against these functions); elsewhere the
/// analysis functions.
fn step_diagnostics(
    z: &[Tensor; 2],
    z_target: &[Tensor; 2],
) -> candle_core::Result<(f64, f64, f64)> {
    #[cfg(feature = "cuda")]
    if z[0].device().is_cuda() {
        return crate::cuda::diagnostics::step_diagnostics(z, z_target);
    }
    let (pos, neg) = symmetric_pos_neg_cos(z, z_target)?;
    Ok((pos, neg, z_std(&z[0])?))
}

/// Trains one run. Returns how it ended and the trained method (its online encoder).
pub fn train(
    cfg: &RunConfig,
    device: &Device,
    dataset: Arc<dyn Dataset>,
    observer: &mut dyn StepObserver,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<(TrainSummary, Box<dyn Method>)> {
    let channels = dataset.channels();
    let size = cfg.dataset.image_size;
    let batch_size = cfg.train.batch_size;
    let augmenter = Augmenter::new(&cfg.augment, size, channels).context("augment")?;
    let loader = TwoViewLoader::spawn_with_workers(
        dataset,
        augmenter,
        batch_size,
        cfg.train.epochs,
        cfg.train.seed,
        cfg.train.prefetch,
        cfg.train.loader_threads,
    )?;
    let total = match cfg.train.max_steps {
        Some(m) => m.min(loader.total_steps()),
        None => loader.total_steps(),
    };
    let steps_per_epoch = loader.steps_per_epoch() as u64;
    let mut method = build(cfg, channels, device).context("building the networks")?;
    let mut optimizer = Optimizer::new(&cfg.optim, method.online().store.params().len());
    let has_ema = cfg.method.name.has_ema_target();
    if let Some(pb) = progress {
        pb.set_length(total);
        pb.set_position(0);
    }
    observer.on_epoch_end(0, 0, total == 0, method.as_ref())?;
    let start = Instant::now();
    let mut status = RunStatus::Ok;
    let mut collapsed_streak = 0u64;
    let mut steps = 0u64;
    let mut t_step = Instant::now();
    for batch in loader {
        if batch.step >= total {
            break;
        }
        let shape = (batch.image_ids.len(), channels, size, size);
        let v0 = Tensor::from_slice(&batch.view0, shape, device)?;
        let v1 = Tensor::from_slice(&batch.view1, shape, device)?;
        let out = method.forward([&v0, &v1])?;
        let loss = out
            .loss
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let lr = lr_at(&cfg.optim, batch.step, total);
        let tau =
            has_ema.then(|| tau_at(cfg.method.tau, cfg.method.tau_schedule, batch.step, total));
        let mut gnorm = f64::NAN;
        if loss.is_finite() {
            let grads = out.loss.backward()?;
            let params = method.online().store.params().to_vec();
            gnorm = grad_norm(&params, &grads)?;
            if gnorm.is_finite() {
                optimizer.step(&params, &grads, lr)?;
                method.after_step(tau, &out)?;
            }
        }
        let step_ms = t_step.elapsed().as_secs_f64() * 1e3;
        let t_metrics = Instant::now();
        let emb = &out.embeddings;
        let (pos_cos, neg_cos, z_std_value) = step_diagnostics(&emb.z, &emb.z_target)?;
        let record = StepRecord {
            epoch: batch.epoch,
            step: batch.step,
            loss,
            pos_cos,
            neg_cos,
            z_std: z_std_value,
            effective_rank: effective_rank(&emb.z[0])?,
            lr,
            tau,
            grad_norm: gnorm,
            step_ms,
            metrics_ms: 0.0,
        };
        let record = StepRecord {
            metrics_ms: t_metrics.elapsed().as_secs_f64() * 1e3,
            ..record
        };
        observer.on_step(&record, emb, &batch)?;
        steps += 1;
        if let Some(pb) = progress {
            pb.inc(1);
            if batch.step % 5 == 0 {
                pb.set_message(format!("loss {loss:.3} pos {pos_cos:.3} neg {neg_cos:.3}"));
            }
        }
        if !loss.is_finite() || !gnorm.is_finite() {
            let what = if loss.is_finite() {
                "gradient norm"
            } else {
                "loss"
            };
            status = RunStatus::Diverged {
                step: batch.step,
                reason: format!(
                    "{what} became {} at step {}",
                    if loss.is_finite() { gnorm } else { loss },
                    batch.step
                ),
            };
            break;
        }
        if is_collapsed(
            record.pos_cos,
            record.neg_cos,
            record.z_std,
            cfg.model.projector.out,
        ) {
            collapsed_streak += 1;
        } else {
            collapsed_streak = 0;
        }
        let stop = cfg
            .train
            .stop_on_collapse
            .is_some_and(|n| collapsed_streak >= n);
        let done = batch.step + 1;
        if done % steps_per_epoch == 0 || done == total || stop {
            let epoch = done.div_ceil(steps_per_epoch) as u32;
            if let Err(e) =
                observer.on_epoch_end(epoch, done, done == total || stop, method.as_ref())
            {
                // Weights that turned non-finite in this step's update show up here first.
                if e.downcast_ref::<NonFiniteEmbeddings>().is_some() {
                    status = RunStatus::Diverged {
                        step: batch.step,
                        reason: format!(
                            "embeddings became non-finite after step {} ({e})",
                            batch.step
                        ),
                    };
                    break;
                }
                return Err(e);
            }
        }
        if stop {
            status = RunStatus::StoppedCollapsed {
                step: batch.step,
                reason: format!(
                    "stopped at step {}: collapsed for {collapsed_streak} consecutive steps (train.stop_on_collapse)",
                    batch.step
                ),
            };
            break;
        }
        t_step = Instant::now();
    }
    let wall_seconds = start.elapsed().as_secs_f64();
    Ok((
        TrainSummary {
            status,
            steps,
            wall_seconds,
            images_per_second: (steps * batch_size as u64) as f64 / wall_seconds.max(1e-9),
            projection_dim: cfg.model.projector.out,
        },
        method,
    ))
}
