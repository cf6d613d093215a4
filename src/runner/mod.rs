//! Runs a grid: every variant × seed is trained, logged and summarised. A run that fails or
//! diverges is recorded as such and the grid goes on.

pub(crate) mod analyze;
pub(crate) mod bench;
pub(crate) mod cpu;
pub(crate) mod export;
mod final_metrics;
pub(crate) mod finalize;
pub mod lock;
pub(crate) mod parity;
mod recorder;
pub(crate) mod resources;
pub(crate) mod slurm;
pub(crate) mod staging;
pub(crate) mod tasks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::Device;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Grid, RunConfig, RunSpec, BASELINE_VARIANT};
use crate::data::{open_dataset, Dataset, DatasetPair};
use crate::log::{
    remove_dir_if_present, write_evals, write_spectrum, write_summary, write_text, EvalRecord,
    Status, StepRecord, StepsLog, SummaryRow,
};
use crate::metrics::{verdict, CollapseMonitor, Verdict};
use crate::train::checkpoint::{read_checkpoint, remove_checkpoint, Checkpointing};
use crate::train::{train_with, RunControl, RunStatus, TrainSummary};
use recorder::{EvalPlan, Recorder};

pub use final_metrics::FinalMetrics;

/// Options of `collapse-lab run` beyond the grid itself.
pub struct RunOptions {
    pub out: PathBuf,
    pub device: Device,
    pub progress: bool,
    /// Runs trained at the same time. With more than one, each run computes on one thread
    /// (the CLI sets that up): small networks use cores better side by side than split.
    pub jobs: usize,
    /// Train every run from its first step, ignoring finished runs and checkpoints.
    pub fresh: bool,
    /// Set (by SIGINT/SIGTERM) to stop: runs in progress checkpoint and are marked
    /// `interrupted`, no further run starts.
    pub interrupt: Arc<AtomicBool>,
    /// Train only the runs of this array task (`--task-index`, `--runs-per-task`).
    pub task: Option<tasks::TaskSlice>,
}

/// What a grid run leaves behind.
pub struct GridOutcome {
    pub dir: PathBuf,
    pub rows: Vec<SummaryRow>,
    /// Stopped by an interrupt: some runs are `interrupted` or were not started.
    pub interrupted: bool,
    /// Runs of the grid that have no row (not started before the interrupt).
    pub not_started: usize,
}

/// Trains every run of `grid` under `opts.out/<grid name>/`, `opts.jobs` runs at a time, or,
/// with `opts.task`, the runs of one array task (see [`tasks`]).
pub fn run_grid(grid: &Grid, opts: &RunOptions) -> anyhow::Result<GridOutcome> {
    let (runs, baselines) = match &opts.task {
        None => (grid.expand()?, baseline_specs(grid)?),
        Some(task) => task.select(grid)?,
    };
    if let Some(available) = resources::available_memory() {
        // The untrained baselines build the base config's networks too.
        let all: Vec<RunSpec> = runs.iter().chain(&baselines).cloned().collect();
        resources::check(&all, opts.jobs, opts.device.is_cpu(), available)?;
    }
    let dir = opts.out.join(&grid.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A local grid holds the grid's lock; array tasks share the grid and lock run by run.
    let _lock = match opts.task {
        None => Some(lock::GridLock::acquire(&dir)?),
        Some(_) => {
            lock::GridLock::refuse_if_held(&dir)?;
            None
        }
    };
    write_text(&dir.join(GRID_FILE), &grid.to_toml())?;
    let datasets = open_datasets(runs.iter().chain(&baselines))?;
    let baseline_rows: Vec<SummaryRow> = baselines
        .iter()
        .map(|spec| {
            Ok(random_baseline(
                spec,
                &dir,
                opts,
                &datasets[&dataset_key(spec)?],
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    // Array tasks leave the summary to `finalize`: they would overwrite each other's.
    let summary_path = opts.task.is_none().then(|| dir.join(SUMMARY_FILE));
    let trained = train_runs(
        &runs,
        &dir,
        opts,
        &datasets,
        &baseline_rows,
        summary_path.as_deref(),
        &grid.name,
    )?;
    let rows: Vec<SummaryRow> = trained
        .into_iter()
        .flatten()
        .chain(baseline_rows.iter().cloned())
        .collect();
    let not_started = runs.len() + baseline_rows.len() - rows.len();
    let interrupted = not_started > 0 || rows.iter().any(|r| r.status == Status::Interrupted);
    Ok(GridOutcome {
        dir,
        rows,
        interrupted,
        not_started,
    })
}

/// Checks a grid as `run` does before training anything (every run config, the baselines,
/// each data set opened and large enough for its batch); returns its number of trained runs.
pub fn validate_grid(grid: &Grid) -> anyhow::Result<usize> {
    let runs = grid.expand()?;
    let baselines = baseline_specs(grid)?;
    open_datasets(runs.iter().chain(&baselines))?;
    Ok(runs.len())
}

/// The grid as run, in its folder (what array tasks and `finalize` read).
pub const GRID_FILE: &str = "grid.toml";
/// The grid's summary table, in its folder.
pub const SUMMARY_FILE: &str = "summary.parquet";

/// The untrained-encoder baseline, one per seed, from the grid's base config.
pub fn baseline_specs(grid: &Grid) -> anyhow::Result<Vec<RunSpec>> {
    grid.seeds
        .iter()
        .map(|&seed| {
            Ok(RunSpec {
                run_id: format!("{BASELINE_VARIANT}-s{seed}"),
                variant: BASELINE_VARIANT.into(),
                seed,
                config: grid.base_run(seed)?,
            })
        })
        .collect()
}

/// Every data set the runs need, opened once and shared. A split smaller than one batch
/// cannot train: bad input, before any run starts.
fn open_datasets<'a>(
    specs: impl Iterator<Item = &'a RunSpec>,
) -> anyhow::Result<HashMap<String, DatasetPair>> {
    let mut datasets: HashMap<String, DatasetPair> = HashMap::new();
    for spec in specs {
        let key = dataset_key(spec)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = datasets.entry(key.clone()) {
            slot.insert(open_dataset(&spec.config.dataset)?);
        }
        let train_len = datasets[&key].train.len();
        let batch = spec.config.train.batch_size;
        if spec.variant != BASELINE_VARIANT && train_len < batch {
            let d = &spec.config.dataset;
            return Err(crate::config::InputError::new(
                format!("dataset `{}`{}", d.name, d.path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default()),
                format!(
                    "variant `{}`: the training split has {train_len} images, fewer than train.batch_size = {batch}",
                    spec.variant
                ),
            )
            .into());
        }
    }
    Ok(datasets)
}

/// Trains `runs`, `opts.jobs` at a time, with progress bars; after each run, rewrites the
/// summary at `summary_path` (if any) with what is done, in grid order, so an interrupted
/// grid keeps what it finished. A run not started (interrupt) has no row.
fn train_runs(
    runs: &[RunSpec],
    dir: &Path,
    opts: &RunOptions,
    datasets: &HashMap<String, DatasetPair>,
    baselines: &[SummaryRow],
    summary_path: Option<&Path>,
    grid_name: &str,
) -> anyhow::Result<Vec<Option<SummaryRow>>> {
    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let grid_bar = multi.add(ProgressBar::new(runs.len() as u64));
    grid_bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} runs {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    grid_bar.set_prefix(grid_name.to_string());
    let run_style =
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} steps {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());

    let jobs = opts.jobs.clamp(1, runs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SummaryRow>>> = Mutex::new(vec![None; runs.len()]);
    let write_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(run_style.clone());
            let (next, results, write_error, multi, grid_bar) =
                (&next, &results, &write_error, &multi, &grid_bar);
            scope.spawn(move || loop {
                if opts.interrupt.load(Ordering::SeqCst) {
                    bar.finish_and_clear();
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(spec) = runs.get(i) else {
                    bar.finish_and_clear();
                    break;
                };
                bar.set_prefix(spec.run_id.clone());
                let (row, how) = run_one(spec, dir, opts, datasets, &bar);
                let line = format!("{} — {how}", describe(&row));
                if opts.progress {
                    multi.println(line).ok();
                } else {
                    eprintln!("{line}");
                }
                let mut all = results.lock().unwrap_or_else(|p| p.into_inner());
                all[i] = Some(row);
                if let Some(path) = summary_path {
                    let done: Vec<SummaryRow> =
                        all.iter().flatten().chain(baselines).cloned().collect();
                    if let Err(e) = write_summary(path, &done) {
                        *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    }
                }
                grid_bar.inc(1);
            });
        }
    });
    grid_bar.finish();
    if let Some(e) = write_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn dataset_key(spec: &RunSpec) -> anyhow::Result<String> {
    Ok(toml::to_string(&spec.config.dataset)?)
}

fn describe(row: &SummaryRow) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
    format!(
        "{:<22} {:<9} pos {} neg {} z_std {} rank {} {:<9} {:.1}s",
        row.run_id,
        row.status.as_str(),
        f(row.final_pos_cos),
        f(row.final_neg_cos),
        f(row.final_z_std),
        f(row.final_effective_rank),
        row.collapse_verdict.map_or("–", |v| v.as_str()),
        row.wall_seconds
    )
}

fn eval_plan(config: &RunConfig, pair: &DatasetPair, device: &Device) -> anyhow::Result<EvalPlan> {
    EvalPlan::new(config, pair.eval.clone(), device)
}

/// Evaluates the untrained network of `config` (variant `random`): the baseline every
/// trained encoder is compared with. Kept when it finished before with the same config.
fn random_baseline(
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
        if let staging::Plan::Keep(kept) = staging::plan(grid_dir, run_id, &hash, opts.fresh)? {
            return Ok(Some(*kept));
        }
        let dir = staging::staging_dir(grid_dir, run_id);
        std::fs::create_dir_all(&dir)?;
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
        row.final_knn_acc = record.knn_acc;
        row.final_probe_acc = record.probe_acc;
        row.eval_z_effective_rank = Some(record.z_effective_rank);
        row.wall_seconds = started.elapsed().as_secs_f64();
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
            row.status = Status::Failed;
            row.error = Some(format!("{e:#}"));
            row.wall_seconds = started.elapsed().as_secs_f64();
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
    }
}

/// Keeps, resumes or trains one run (see [`staging::plan`]). Returns its row and how it was
/// handled.
fn run_one(
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
                staging::plan(grid_dir, &spec.run_id, &hash, opts.fresh)?,
            ))
        });
    let (_lock, plan) = match plan {
        Ok(p) => p,
        Err(e) => {
            let mut row = empty_row(&spec.run_id, &spec.variant, spec.seed, &spec.config);
            row.status = Status::Failed;
            row.error = Some(format!("{e:#}"));
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
        let steps = recorder.map(|r| r.steps.rows).unwrap_or_default();
        let mut row = row_from_logs(spec, &steps, &[]);
        row.status = Status::Interrupted;
        row.stop_reason = Some(format!(
            "interrupted: checkpointed at step {next_step}; run the same command again to resume"
        ));
        row.wall_seconds = started.elapsed().as_secs_f64();
        return (
            row,
            format!("{how}; interrupted, checkpointed at step {next_step}"),
        );
    }
    let (steps, evals, write_logs) = run.write_logs(recorder);
    let mut row = row_from_logs(spec, &steps.rows, &evals);
    record_outcome(&mut row, result, write_logs);
    row.wall_seconds = started.elapsed().as_secs_f64();
    let record = staging::RunRecord {
        config_hash: hash,
        summary: row.clone(),
    };
    let published = remove_checkpoint(&dir)
        .and_then(|()| remove_dir_if_present(&dir.join(recorder::PARTS_DIR)))
        .and_then(|()| staging::finish(grid_dir, &spec.run_id, &record));
    if let Err(e) = published {
        row.status = Status::Failed;
        row.error = Some(format!("publishing the run folder: {e:#}"));
    }
    (row, how)
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
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
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
            row.images_per_second = summary.images_per_second;
            match summary.status {
                RunStatus::Ok | RunStatus::Interrupted { .. } => {}
                RunStatus::Diverged { reason, .. } => {
                    row.status = Status::Diverged;
                    row.error = Some(reason);
                    row.collapse_verdict = None;
                }
                RunStatus::StoppedCollapsed { reason, .. } => {
                    row.stop_reason = Some(reason);
                    row.collapse_verdict = Some(Verdict::Collapsed);
                }
            }
        }
        (Err(e), _) | (Ok(_), Err(e)) => {
            row.status = Status::Failed;
            row.error = Some(format!("{e:#}"));
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
    SummaryRow {
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
        ..empty_row(&spec.run_id, &spec.variant, spec.seed, &spec.config)
    }
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
        let tmp = run_dir.join(format!(".{file}.tmp-{}", std::process::id()));
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, run_dir.join(file))?;
    }
    Ok(())
}
