//! Runs a grid: every variant × seed is trained, logged and summarised. A run that fails or
//! diverges is recorded as such and the grid goes on.

pub(crate) mod analyze;
pub(crate) mod bench;
pub(crate) mod cpu;
pub(crate) mod export;
mod final_metrics;
pub(crate) mod finalize;
pub mod grid_folder;
pub mod lock;
mod one_run;
pub(crate) mod parity;
mod recorder;
pub(crate) mod resources;
pub(crate) mod selftest;
pub(crate) mod slurm;
pub(crate) mod staging;
pub(crate) mod tasks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Grid, RunSpec, BASELINE_VARIANT};
use crate::data::{open_dataset, DatasetPair};
use crate::log::{write_summary, Status, SummaryRow};
use one_run::{random_baseline, run_one};

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
    // Opened before anything is written: bad data or data-dependent settings leave no folder.
    let datasets = open_datasets(runs.iter().chain(&baselines))?;
    // Below `--out`, nothing is reached through a link: the grid folder, its staging and
    // report folders, and every run's folders are refused if one is a link (exit 2); and the
    // grid folder must be new, empty or ours (its marker) before anything in it is touched.
    let dir = grid_folder::claim(&opts.out, grid)?;
    for name in [staging::STAGING_DIR, "report"] {
        crate::log::refuse_symlink(&dir.join(name))?;
    }
    for spec in runs.iter().chain(&baselines) {
        crate::log::refuse_symlink(&dir.join(&spec.run_id))?;
        let staging = staging::staging_dir(&dir, &spec.run_id);
        crate::log::refuse_symlink(&staging)?;
        for checkpoint in crate::train::checkpoint::checkpoint_dirs(&staging) {
            crate::log::refuse_symlink(&checkpoint)?;
        }
    }
    // A local grid holds the grid's lock; array tasks share the grid and lock run by run.
    let _lock = match opts.task {
        None => Some(lock::GridLock::acquire(&dir)?),
        Some(_) => {
            lock::GridLock::refuse_if_held(&dir)?;
            None
        }
    };
    grid_folder::write_grid_file(&dir, grid)?;
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
    let interrupted =
        not_started > 0 || rows.iter().any(|r| r.outcome.status == Status::Interrupted);
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

/// Every data set the runs need, opened once and shared. A split smaller than one batch, or
/// an augmentation whose per-channel values do not match the data's channels, cannot train:
/// bad input, before any run starts.
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
        // What depends on the data's channels (augment.mean / std, one entry per channel) is
        // checked here, with the data open: a mismatch would fail every run.
        let channels = datasets[&key].train.channels();
        crate::data::Augmenter::new(
            &spec.config.augment,
            spec.config.dataset.image_size,
            channels,
        )
        .map_err(|e| {
            crate::config::InputError::new(format!("variant `{}`", spec.variant), format!("{e:#}"))
        })?;
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
                    crate::errln!("{line}");
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
        row.outcome.status.as_str(),
        f(row.outcome.final_pos_cos),
        f(row.outcome.final_neg_cos),
        f(row.outcome.final_z_std),
        f(row.outcome.final_effective_rank),
        row.outcome.collapse_verdict.map_or("–", |v| v.as_str()),
        row.outcome.wall_seconds
    )
}
