//! The step loop: two augmented views → method forward → backward → optimizer → EMA/queue
//! update → per-step collapse metrics → observer. A non-finite loss or gradient stops the run
//! as `diverged`; the caller records it and the grid goes on.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use indicatif::ProgressBar;

use super::checkpoint::{Checkpointing, Progress, Resume};
use super::optim::Optimizer;
use super::schedule::{lr_at, tau_at};
use super::step::{step_metrics, training_step};
use crate::config::RunConfig;
use crate::data::{Augmenter, Dataset, LoaderPlan, TwoViewBatch, TwoViewLoader};
use crate::log::StepRecord;
use crate::method::{build, Embeddings, Method};
use crate::metrics::CollapseMonitor;

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
    /// Asked to stop (SIGINT/SIGTERM): checkpointed, to be resumed at `next_step`.
    Interrupted {
        next_step: u64,
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
    /// Every tensor training changed, as a checkpoint names them (`online.*`, `target.*`,
    /// `queue.keys`, `velocity.*`), at the end: what parity checks compare.
    pub final_state: Vec<(String, Tensor)>,
}

/// What an observer found at an epoch end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochEnd {
    Continue,
    /// The network's outputs are no longer finite (weights a step's update made NaN or ∞
    /// show up here first): the run diverged, for this reason.
    Diverged(String),
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
    ) -> anyhow::Result<EpochEnd> {
        Ok(EpochEnd::Continue)
    }

    /// Writes what has been logged so far into `dir`, a checkpoint being written, so that a
    /// resumed run's logs continue these. Returns the files outside `dir` (in the run's
    /// staging folder) that those logs need, for the checkpoint's manifest.
    fn save(&mut self, _dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
        Ok(Vec::new())
    }
}

/// How a run continues and is saved: where to checkpoint (and whether it was asked to
/// stop), and a checkpoint to resume from.
#[derive(Default)]
pub struct RunControl {
    pub checkpointing: Option<Checkpointing>,
    pub resume: Option<Resume>,
    /// End after this many steps, with the schedules (lr, τ) still those of the whole run:
    /// the state part-way through a run (parity dumps).
    pub stop_after: Option<u64>,
}

/// Prefix of the online network's tensors in a checkpoint.
pub const ONLINE_PREFIX: &str = "online.";

/// Trains one run from its first step. Returns how it ended and the trained method.
pub fn train(
    cfg: &RunConfig,
    device: &Device,
    dataset: Arc<dyn Dataset>,
    observer: &mut dyn StepObserver,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<(TrainSummary, Box<dyn Method>)> {
    train_with(
        cfg,
        device,
        dataset,
        observer,
        progress,
        RunControl::default(),
    )
}

/// Trains one run, resuming from `control.resume` if given and checkpointing as
/// `control.checkpointing` says. A resumed run computes the same numbers as one that never
/// stopped: same weights, optimizer and method state, same batches from the same step.
pub fn train_with(
    cfg: &RunConfig,
    device: &Device,
    dataset: Arc<dyn Dataset>,
    observer: &mut dyn StepObserver,
    progress: Option<&ProgressBar>,
    control: RunControl,
) -> anyhow::Result<(TrainSummary, Box<dyn Method>)> {
    let channels = dataset.channels();
    let size = cfg.dataset.image_size;
    let batch_size = cfg.train.batch_size;
    let (mut method, mut optimizer, start_step, mut monitor) =
        start_state(cfg, channels, device, control.resume.as_ref())?;
    let loader = loader_from(cfg, dataset, start_step)?;
    let total = match cfg.train.max_steps {
        Some(m) => m.min(loader.total_steps()),
        None => loader.total_steps(),
    };
    let steps_per_epoch = loader.steps_per_epoch() as u64;
    let has_ema = cfg.method.name.spec().ema_target;
    if let Some(pb) = progress {
        pb.set_length(total);
        pb.set_position(start_step.min(total));
    }
    if control.resume.is_none() {
        if let EpochEnd::Diverged(why) = observer.on_epoch_end(0, 0, total == 0, method.as_ref())? {
            anyhow::bail!(why);
        }
    }
    let start = Instant::now();
    let mut status = RunStatus::Ok;
    let mut steps = 0u64;
    let mut t_step = Instant::now();
    for batch in loader {
        if batch.step >= total {
            break;
        }
        let shape = (batch.image_ids.len(), channels, size, size);
        let v0 = Tensor::from_slice(&batch.view0, shape, device)?;
        let v1 = Tensor::from_slice(&batch.view1, shape, device)?;
        let lr = lr_at(&cfg.optim, batch.step, total);
        let tau =
            has_ema.then(|| tau_at(cfg.method.tau, cfg.method.tau_schedule, batch.step, total));
        let step = training_step(method.as_mut(), &mut optimizer, [&v0, &v1], lr, tau)?;
        let (loss, gnorm, out) = (step.loss, step.grad_norm, step.out);
        let step_ms = t_step.elapsed().as_secs_f64() * 1e3;
        let record = step_record(&batch, &out.embeddings, loss, lr, tau, gnorm, step_ms)?;
        observer.on_step(&record, &out.embeddings, &batch)?;
        steps += 1;
        show_progress(progress, &record);
        let at = Position {
            step: batch.step,
            total,
            steps_per_epoch,
        };
        let mut state = LoopState {
            method: method.as_ref(),
            optimizer: &optimizer,
            monitor: &mut monitor,
        };
        if let Some(end) = state.after_step(cfg, observer, &control, &record, at)? {
            status = end;
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
            final_state: checkpoint_state(method.as_ref(), &optimizer),
        },
        method,
    ))
}

/// What the loop checks after each step borrows from it.
struct LoopState<'a> {
    method: &'a dyn Method,
    optimizer: &'a Optimizer,
    monitor: &'a mut CollapseMonitor,
}

impl LoopState<'_> {
    /// After step `at.step` (logged as `record`): divergence, the collapse streak, the end
    /// of an epoch (evaluation, early stop), a due checkpoint and an interrupt, `stop_after`.
    /// `Some(status)` ends the run.
    fn after_step(
        &mut self,
        cfg: &RunConfig,
        observer: &mut dyn StepObserver,
        control: &RunControl,
        record: &StepRecord,
        at: Position,
    ) -> anyhow::Result<Option<RunStatus>> {
        if let Some(diverged) = divergence(record.loss, record.grad_norm, at.step) {
            return Ok(Some(diverged));
        }
        self.monitor
            .observe(record.step, record.pos_cos, record.neg_cos, record.z_std);
        let collapsed_streak = self.monitor.streak();
        let done = at.step + 1;
        if let Some(end) = end_of_step(cfg, observer, self.method, at, collapsed_streak)? {
            return Ok(Some(end));
        }
        if let Some(ck) = control
            .checkpointing
            .as_ref()
            .filter(|c| c.due(done, at.total))
        {
            write_checkpoint(
                ck,
                self.method,
                self.optimizer,
                observer,
                done,
                collapsed_streak,
            )?;
            if ck.interrupted() {
                return Ok(Some(RunStatus::Interrupted { next_step: done }));
            }
        }
        if control.stop_after.is_some_and(|s| done >= s) {
            return Ok(Some(RunStatus::Ok));
        }
        Ok(None)
    }
}

/// The training loader of a run, from `start_step` on.
fn loader_from(
    cfg: &RunConfig,
    dataset: Arc<dyn Dataset>,
    start_step: u64,
) -> anyhow::Result<TwoViewLoader> {
    let augmenter = Augmenter::new(&cfg.augment, cfg.dataset.image_size, dataset.channels())
        .context("augment")?;
    TwoViewLoader::spawn_from(
        dataset,
        augmenter,
        &LoaderPlan {
            batch_size: cfg.train.batch_size,
            epochs: cfg.train.epochs,
            seed: cfg.train.seed,
            prefetch: cfg.train.prefetch,
            workers: cfg.train.loader_threads,
            start_step,
        },
    )
}

/// Where a finished step stands in its run.
#[derive(Debug, Clone, Copy)]
struct Position {
    step: u64,
    total: u64,
    steps_per_epoch: u64,
}

/// After a step: evaluate at an epoch end (and at the last step), and stop early once the
/// collapse signature has held for `train.stop_on_collapse` steps. Returns how the run ends,
/// if it ends here.
fn end_of_step(
    cfg: &RunConfig,
    observer: &mut dyn StepObserver,
    method: &dyn Method,
    at: Position,
    collapsed_streak: u64,
) -> anyhow::Result<Option<RunStatus>> {
    let stop = cfg
        .train
        .stop_on_collapse
        .is_some_and(|n| collapsed_streak >= n);
    let done = at.step + 1;
    if done.is_multiple_of(at.steps_per_epoch) || done == at.total || stop {
        let epoch = done.div_ceil(at.steps_per_epoch) as u32;
        let last = done == at.total || stop;
        if let EpochEnd::Diverged(why) = observer.on_epoch_end(epoch, done, last, method)? {
            return Ok(Some(RunStatus::Diverged {
                step: at.step,
                reason: format!(
                    "embeddings became non-finite after step {} ({why})",
                    at.step
                ),
            }));
        }
    }
    Ok(stop.then(|| RunStatus::StoppedCollapsed {
        step: at.step,
        reason: format!(
            "stopped at step {}: collapsed for {collapsed_streak} consecutive steps (train.stop_on_collapse)",
            at.step
        ),
    }))
}

/// The networks and optimizer a run starts from (built from the run seed, then loaded from
/// `resume` if given), the first step to train and the collapse monitor.
fn start_state(
    cfg: &RunConfig,
    channels: usize,
    device: &Device,
    resume: Option<&Resume>,
) -> anyhow::Result<(Box<dyn Method>, Optimizer, u64, CollapseMonitor)> {
    let mut method = build(cfg, channels, device).context("building the networks")?;
    let mut optimizer = Optimizer::new(&cfg.optim, method.online().store.params().len());
    let (start_step, streak) = match resume {
        Some(r) => {
            method.online().store.load(&r.with_prefix(ONLINE_PREFIX))?;
            method.load_state(&r.tensors)?;
            optimizer.load_state(method.online().store.params(), &r.tensors)?;
            (r.progress.next_step, r.progress.collapsed_streak)
        }
        None => (0, 0),
    };
    let monitor = CollapseMonitor::resumed(cfg.model.projector.out, streak, start_step);
    Ok((method, optimizer, start_step, monitor))
}

fn show_progress(progress: Option<&ProgressBar>, record: &StepRecord) {
    if let Some(pb) = progress {
        pb.inc(1);
        if record.step.is_multiple_of(5) {
            pb.set_message(format!(
                "loss {:.3} pos {:.3} neg {:.3}",
                record.loss, record.pos_cos, record.neg_cos
            ));
        }
    }
}

/// Saves everything training changed and the observer's logs after `done` steps.
fn write_checkpoint(
    ck: &Checkpointing,
    method: &dyn Method,
    optimizer: &Optimizer,
    observer: &mut dyn StepObserver,
    done: u64,
    collapsed_streak: u64,
) -> anyhow::Result<()> {
    let at = Progress {
        config_hash: ck.config_hash.clone(),
        next_step: done,
        collapsed_streak,
    };
    ck.write(&at, checkpoint_state(method, optimizer), |dir| {
        observer.save(dir)
    })
    .context("writing a checkpoint")
}

/// The per-step record of a finished step: loss, schedule values and the live collapse
/// diagnostics of its embeddings (timed apart from the step).
fn step_record(
    batch: &TwoViewBatch,
    emb: &Embeddings,
    loss: f64,
    lr: f64,
    tau: Option<f64>,
    grad_norm: f64,
    step_ms: f64,
) -> anyhow::Result<StepRecord> {
    let t_metrics = Instant::now();
    let (pos_cos, neg_cos, z_std_value, effective_rank) = step_metrics(emb)?;
    Ok(StepRecord {
        epoch: batch.epoch,
        step: batch.step,
        loss,
        pos_cos,
        neg_cos,
        z_std: z_std_value,
        effective_rank,
        lr,
        tau,
        grad_norm,
        step_ms,
        metrics_ms: t_metrics.elapsed().as_secs_f64() * 1e3,
    })
}

/// `Diverged` when the loss or the gradient norm of step `step` is not finite.
fn divergence(loss: f64, gnorm: f64, step: u64) -> Option<RunStatus> {
    let (what, value) = if !loss.is_finite() {
        ("loss", loss)
    } else if !gnorm.is_finite() {
        ("gradient norm", gnorm)
    } else {
        return None;
    };
    Some(RunStatus::Diverged {
        step,
        reason: format!("{what} became {value} at step {step}"),
    })
}

/// Every tensor training changes: the online network, the method's own state and the
/// optimizer's buffers.
pub fn checkpoint_state(method: &dyn Method, optimizer: &Optimizer) -> Vec<(String, Tensor)> {
    let online = method.online();
    let mut state: Vec<(String, Tensor)> = online
        .store
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (format!("{ONLINE_PREFIX}{n}"), t))
        .collect();
    state.extend(method.state());
    state.extend(optimizer.state(online.store.params()));
    state
}
