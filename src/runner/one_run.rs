//! One run of a grid: kept, resumed or trained in its staging folder, logged, recorded and
//! published (see [`super::staging`]); and the untrained-encoder baseline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use indicatif::ProgressBar;

use super::recorder::{self, EvalPlan, Recorder};
use super::{cpu, dataset_key, lock, staging, FinalMetrics, RunOptions};
use crate::config::{RunConfig, RunSpec, BASELINE_VARIANT};
use crate::data::{Dataset, DatasetPair};
use crate::log::{
    remove_dir_if_present, write_evals, write_spectrum, write_text, EvalRecord, RunOutcome, Status,
    StepRecord, StepsLog, SummaryRow,
};
use crate::metrics::{verdict, CollapseMonitor, Verdict};
use crate::train::checkpoint::{
    checkpoints, read_checkpoint, read_progress, remove_checkpoint, CheckpointWriteFailed,
    Checkpointing,
};
use crate::train::{train_with, RunControl, RunStatus, TrainSummary};

fn eval_plan(config: &RunConfig, pair: &DatasetPair, device: &Device) -> anyhow::Result<EvalPlan> {
    EvalPlan::new(config, pair.eval.clone(), device)
}

/// Evaluates the untrained network of `config` (variant `random`): the baseline every
/// trained encoder is compared with. Kept when it finished before with the same config.
pub(super) fn random_baseline(
    spec: &RunSpec,
    grid_dir: &Path,
    opts: &RunOptions,
    pair: &DatasetPair,
) -> SummaryRow {
    let (config, seed, run_id) = (&spec.config, spec.seed, &spec.run_id);
    let hash = config.numbers_hash();
    let started = std::time::Instant::now();
    let mut row = empty_row(run_id, BASELINE_VARIANT, seed, config);
    let result = (|| -> anyhow::Result<Option<SummaryRow>> {
        let _lock = lock::RunLock::acquire(grid_dir, run_id)?;
        // The baseline trains no step and logs no embeddings.
        if let staging::Plan::Keep(kept) =
            staging::plan(grid_dir, run_id, &hash, false, opts.fresh)?
        {
            return Ok(Some(*kept));
        }
        let dir = staging::staging_dir(grid_dir, run_id);
        crate::log::create_dir(&dir)?;
        write_text(&dir.join("config.toml"), &toml::to_string_pretty(config)?)?;
        let method = crate::method::build(config, pair.train.channels(), &opts.device)?;
        let record = eval_plan(config, pair, &opts.device)?.run(method.as_ref(), 0, 0)?;
        write_evals(
            &dir.join("evals.parquet"),
            run_id,
            BASELINE_VARIANT,
            seed,
            std::slice::from_ref(&record),
        )?;
        write_spectrum(
            &dir.join("spectrum.parquet"),
            run_id,
            std::slice::from_ref(&record),
        )?;
        row.outcome.final_knn_acc = record.knn_acc;
        row.outcome.final_probe_acc = record.probe_acc;
        row.outcome.eval_z_effective_rank = Some(record.z_effective_rank);
        row.outcome.wall_seconds = started.elapsed().as_secs_f64();
        staging::finish(
            grid_dir,
            run_id,
            &staging::RunRecord {
                config_hash: hash.clone(),
                summary: row.clone(),
            },
        )?;
        Ok(None)
    })();
    match result {
        Ok(Some(kept)) => SummaryRow {
            config: config.clone(),
            ..kept
        },
        Ok(None) => row,
        Err(e) => {
            row.outcome.status = Status::Failed;
            row.outcome.error = Some(format!("{e:#}"));
            row.outcome.wall_seconds = started.elapsed().as_secs_f64();
            row
        }
    }
}

/// The row of a run before anything is known about it.
fn empty_row(run_id: &str, variant: &str, seed: u64, config: &RunConfig) -> SummaryRow {
    SummaryRow {
        run_id: run_id.into(),
        variant: variant.into(),
        seed,
        config: config.clone(),
        outcome: RunOutcome {
            cpu: cpu::cpu_description().to_string(),
            status: Status::Ok,
            error: None,
            stop_reason: None,
            final_pos_cos: None,
            final_neg_cos: None,
            final_z_std: None,
            final_effective_rank: None,
            eval_z_effective_rank: None,
            final_knn_acc: None,
            final_probe_acc: None,
            collapse_verdict: None,
            collapse_step: None,
            steps: 0,
            wall_seconds: 0.0,
            images_per_second: 0.0,
        },
    }
}

/// Keeps, resumes or trains one run (see [`staging::plan`]). Returns its row and how it was
/// handled.
pub(super) fn run_one(
    spec: &RunSpec,
    grid_dir: &Path,
    opts: &RunOptions,
    datasets: &HashMap<String, DatasetPair>,
    bar: &ProgressBar,
) -> (SummaryRow, String) {
    let hash = spec.config.numbers_hash();
    let started = std::time::Instant::now();
    let plan = lock::RunLock::acquire(grid_dir, &spec.run_id)
        .map_err(anyhow::Error::from)
        .and_then(|lock| {
            Ok((
                lock,
                staging::plan(
                    grid_dir,
                    &spec.run_id,
                    &hash,
                    spec.config.log.embeddings_every > 0,
                    opts.fresh,
                )?,
            ))
        });
    let (_lock, plan) = match plan {
        Ok(p) => p,
        Err(e) => {
            let mut row = empty_row(&spec.run_id, &spec.variant, spec.seed, &spec.config);
            row.outcome.status = Status::Failed;
            row.outcome.error = Some(format!("{e:#}"));
            return (row, "not started".into());
        }
    };
    let how = plan.describe();
    let checkpoint = match plan {
        staging::Plan::Keep(row) => {
            let row = SummaryRow {
                config: spec.config.clone(),
                ..*row
            };
            return (row, how);
        }
        staging::Plan::Resume { checkpoint, .. } => Some(checkpoint),
        staging::Plan::Start(_) => None,
    };
    let dir = staging::staging_dir(grid_dir, &spec.run_id);
    let mut recorder: Option<Recorder> = None;
    let run = StagedRun {
        spec,
        dir: &dir,
        opts,
        hash: &hash,
    };
    let result = run.train(datasets, bar, checkpoint.as_deref(), &mut recorder);
    if let Ok(TrainSummary {
        status: RunStatus::Interrupted { next_step },
        ..
    }) = &result
    {
        // Everything is in the checkpoint; nothing is published. The embeddings writer is
        // dropped unfinished, so it writes no file.
        let mut row = interrupted_row(spec, recorder, *next_step);
        row.outcome.wall_seconds = started.elapsed().as_secs_f64();
        return (
            row,
            format!("{how}; interrupted, checkpointed at step {next_step}"),
        );
    }
    if let Some(row) = kept_after_failed_checkpoint(spec, &result, &dir, &mut recorder) {
        let mut row = row;
        row.outcome.wall_seconds = started.elapsed().as_secs_f64();
        let error = row.outcome.error.clone().unwrap_or_default();
        return (row, format!("{how}; {error}"));
    }
    let (steps, evals, write_logs) = run.write_logs(recorder);
    let mut row = row_from_logs(spec, &steps.rows, &evals);
    record_outcome(&mut row, result, write_logs);
    row.outcome.wall_seconds = started.elapsed().as_secs_f64();
    let record = staging::RunRecord {
        config_hash: hash,
        summary: row.clone(),
    };
    let published = remove_checkpoint(&dir)
        .and_then(|()| remove_dir_if_present(&dir.join(recorder::PARTS_DIR)))
        .and_then(|()| staging::finish(grid_dir, &spec.run_id, &record));
    if let Err(e) = published {
        row.outcome.status = Status::Failed;
        row.outcome.error = Some(format!("publishing the run folder: {e:#}"));
    }
    (row, how)
}

/// When training stopped because a checkpoint could not be written (a full disk) and an
/// earlier checkpoint is there, the run is not published: it stays in staging with that
/// checkpoint, for the next `run` to resume, and its row says so (status `failed`).
fn kept_after_failed_checkpoint(
    spec: &RunSpec,
    result: &anyhow::Result<TrainSummary>,
    dir: &Path,
    recorder: &mut Option<Recorder>,
) -> Option<SummaryRow> {
    let failed = result
        .as_ref()
        .err()?
        .chain()
        .find_map(|c| c.downcast_ref::<CheckpointWriteFailed>())?;
    let kept = checkpoints(dir)
        .ok()?
        .first()
        .and_then(|c| read_progress(c).ok())?;
    let mut row = interrupted_row(spec, recorder.take(), kept.next_step);
    row.outcome.status = Status::Failed;
    row.outcome.stop_reason = None;
    row.outcome.error = Some(format!(
        "{failed}; the checkpoint at step {} is kept: run the same command again to resume from it",
        kept.next_step
    ));
    Some(row)
}

/// The row of a run interrupted (and checkpointed) before step `next_step`.
fn interrupted_row(spec: &RunSpec, recorder: Option<Recorder>, next_step: u64) -> SummaryRow {
    let steps = recorder.map(|r| r.steps.rows).unwrap_or_default();
    let mut row = row_from_logs(spec, &steps, &[]);
    row.outcome.status = Status::Interrupted;
    row.outcome.stop_reason = Some(format!(
        "interrupted: checkpointed at step {next_step}; run the same command again to resume"
    ));
    row
}

/// A run being trained in its staging folder.
struct StagedRun<'a> {
    spec: &'a RunSpec,
    dir: &'a Path,
    opts: &'a RunOptions,
    /// The config's fingerprint, recorded in checkpoints.
    hash: &'a str,
}

impl StagedRun<'_> {
    /// Trains from the start or from `checkpoint`, logging through the recorder it leaves in
    /// `recorder` (so that whatever was logged survives a failure), and saves the weights
    /// unless interrupted.
    fn train(
        &self,
        datasets: &HashMap<String, DatasetPair>,
        bar: &ProgressBar,
        checkpoint: Option<&Path>,
        recorder: &mut Option<Recorder>,
    ) -> anyhow::Result<TrainSummary> {
        let (spec, dir) = (self.spec, self.dir);
        crate::log::create_dir(dir)?;
        write_text(
            &dir.join("config.toml"),
            &toml::to_string_pretty(&spec.config)?,
        )?;
        let key = dataset_key(spec)?;
        let pair = datasets.get(&key).context("data set not opened")?;
        let eval = eval_plan(&spec.config, pair, &self.opts.device)?;
        let rec = recorder.insert(match checkpoint {
            Some(c) => Recorder::resume(spec, dir, eval, c)?,
            None => Recorder::new(spec, dir, eval),
        });
        let control = RunControl {
            checkpointing: Some(Checkpointing {
                dir: dir.to_path_buf(),
                every: spec.config.train.checkpoint_every,
                config_hash: self.hash.to_string(),
                interrupt: Arc::clone(&self.opts.interrupt),
            }),
            resume: match checkpoint {
                Some(c) => Some(read_checkpoint(c, &self.opts.device)?),
                None => None,
            },
            stop_after: None,
        };
        let train_set: Arc<dyn Dataset> = pair.train.clone();
        let (summary, method) = train_with(
            &spec.config,
            &self.opts.device,
            train_set,
            rec,
            Some(bar),
            control,
        )?;
        if !matches!(summary.status, RunStatus::Interrupted { .. }) {
            save_weights(method.online(), dir)?;
        }
        Ok(summary)
    }

    /// Writes the step log, evaluations, spectra and embeddings, whatever happened: a
    /// diverged or failed run keeps what it logged. Returns the logs and the first error.
    fn write_logs(
        &self,
        recorder: Option<Recorder>,
    ) -> (StepsLog, Vec<EvalRecord>, anyhow::Result<()>) {
        let (spec, dir) = (self.spec, self.dir);
        let (steps, evals, embeddings) = match recorder {
            Some(r) => (r.steps, r.evals, r.embeddings),
            None => (
                StepsLog::new(&spec.run_id, &spec.variant, spec.seed),
                Vec::new(),
                None,
            ),
        };
        let mut written = steps.write(&dir.join("steps.parquet"));
        if written.is_ok() && !evals.is_empty() {
            written = write_evals(
                &dir.join("evals.parquet"),
                &spec.run_id,
                &spec.variant,
                spec.seed,
                &evals,
            )
            .and_then(|_| write_spectrum(&dir.join("spectrum.parquet"), &spec.run_id, &evals));
        }
        if let Some(writer) = embeddings {
            let finished = writer.finish();
            if written.is_ok() {
                written = finished;
            }
        }
        (steps, evals, written)
    }
}

/// Sets a run's status, error and stop reason from how training and the writing of its
/// logs went.
fn record_outcome(
    row: &mut SummaryRow,
    result: anyhow::Result<TrainSummary>,
    write_logs: anyhow::Result<()>,
) {
    match (result, write_logs) {
        (Ok(summary), Ok(())) => {
            row.outcome.images_per_second = summary.images_per_second;
            match summary.status {
                RunStatus::Ok | RunStatus::Interrupted { .. } => {}
                RunStatus::Diverged { reason, .. } => {
                    row.outcome.status = Status::Diverged;
                    row.outcome.error = Some(reason);
                    row.outcome.collapse_verdict = None;
                }
                RunStatus::StoppedCollapsed { reason, .. } => {
                    row.outcome.stop_reason = Some(reason);
                    row.outcome.collapse_verdict = Some(Verdict::Collapsed);
                }
            }
        }
        (Err(e), _) | (Ok(_), Err(e)) => {
            row.outcome.status = Status::Failed;
            row.outcome.error = Some(format!("{e:#}"));
        }
    }
}

/// A run's summary row from its step log and evaluations (status `ok`; the caller sets
/// what training reported).
fn row_from_logs(spec: &RunSpec, records: &[StepRecord], evals: &[EvalRecord]) -> SummaryRow {
    let dim = spec.config.model.projector.out;
    let fin = FinalMetrics::from_steps(records);
    let mut monitor = CollapseMonitor::new(dim);
    for r in records {
        monitor.observe(r.step, r.pos_cos, r.neg_cos, r.z_std);
    }
    let last_eval = evals.last();
    let row = empty_row(&spec.run_id, &spec.variant, spec.seed, &spec.config);
    let outcome = RunOutcome {
        final_pos_cos: fin.as_ref().map(|f| f.pos_cos),
        final_neg_cos: fin.as_ref().map(|f| f.neg_cos),
        final_z_std: fin.as_ref().map(|f| f.z_std),
        final_effective_rank: fin.as_ref().map(|f| f.effective_rank),
        final_knn_acc: last_eval.and_then(|e| e.knn_acc),
        final_probe_acc: last_eval.and_then(|e| e.probe_acc),
        eval_z_effective_rank: last_eval.map(|e| e.z_effective_rank),
        collapse_verdict: fin
            .as_ref()
            .zip(last_eval)
            .map(|(f, e)| verdict(f.pos_cos, f.neg_cos, f.z_std, e.z_effective_rank, dim)),
        collapse_step: monitor.collapse_step(),
        steps: records.len() as u64,
        ..row.outcome
    };
    SummaryRow { outcome, ..row }
}

/// `encoder.safetensors` (the online encoder, with batch-norm running statistics) and
/// `heads.safetensors` (projector and predictor), each written to a temporary name and renamed.
fn save_weights(online: &crate::method::OnlineNetwork, run_dir: &Path) -> anyhow::Result<()> {
    let (encoder, heads): (Vec<_>, Vec<_>) = online
        .store
        .named_tensors()
        .into_iter()
        .partition(|(n, _)| n.starts_with("encoder."));
    for (file, tensors) in [
        ("encoder.safetensors", encoder),
        ("heads.safetensors", heads),
    ] {
        let map: HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
        crate::log::write_via_temp(&run_dir.join(file), "", |tmp| {
            Ok(candle_core::safetensors::save(&map, tmp)?)
        })?;
    }
    Ok(())
}
