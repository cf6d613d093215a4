//! The grid commands: `run` (locally, or one array task), `slurm`, `finalize`, `status`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use super::{single_threaded_kernels, DEFAULT_GRID};
use crate::config::{Grid, InputError, BASELINE_VARIANT};
use crate::log::Status;
use crate::report::render;
use crate::runner::finalize::read_state;
use crate::runner::slurm::{submit, SlurmOptions};
use crate::runner::tasks::TaskSlice;
use crate::runner::{run_grid, GridOutcome, RunOptions};
use crate::train::parse_device;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Grid file (default: experiments/bn-ablation.toml).
    pub grid: Option<PathBuf>,
    /// Output folder; the grid's results go to OUT/<grid name>/.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Override a run-config field for every run, e.g. --set optim.lr=0.4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seeds to run instead of the grid's, e.g. --seeds 0,1.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Run only these variants, e.g. --only byol,no-norm.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Runs trained side by side, each on one core (default: one per physical core; 1 trains
    /// one run at a time on all cores). Numbers are reproducible for a given --jobs.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Train every run from its first step. Without it, a run that finished with the same
    /// config is kept, an unfinished one resumes from its checkpoint, and one whose config
    /// changed is re-run.
    #[arg(long)]
    pub fresh: bool,
    /// Train only the runs of this Slurm array task (default: $SLURM_ARRAY_TASK_ID when
    /// --runs-per-task is given). Tasks share the grid folder; `finalize` writes the summary.
    #[arg(long, requires = "runs_per_task")]
    pub task_index: Option<usize>,
    /// Runs per array task (the last task evaluates the untrained baselines).
    #[arg(long)]
    pub runs_per_task: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SlurmArgs {
    /// Grid file.
    pub grid: PathBuf,
    /// Output folder; the grid's results go to OUT/<grid name>/, its scripts and task logs
    /// to OUT/<grid name>/slurm/.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task, as Slurm spells it (HH:MM:SS).
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,
    /// Memory per node, as Slurm spells it (8G).
    #[arg(long)]
    pub mem: Option<String>,
    /// GPUs per task (--gres=gpu:N; tasks train with --device cuda).
    #[arg(long, default_value_t = 0)]
    pub gpus_per_task: usize,
    /// At most this many tasks at once.
    #[arg(long)]
    pub array_parallelism: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub runs_per_task: usize,
    #[arg(long)]
    pub account: Option<String>,
    /// Runs each task trains side by side (default: min(cpus per task, runs per task)).
    /// Numbers equal a local `run` with the same --jobs.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write the scripts and print the sbatch commands without submitting.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct GridDirArgs {
    /// A grid folder (runs/<grid>).
    pub dir: PathBuf,
}

/// A grid stopped by SIGINT/SIGTERM: what was kept, and how to go on. Exit code 130.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// The exit code of an interrupted grid (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// SIGINT and SIGTERM set the returned flag: runs checkpoint and stop. A second signal while
/// the first is handled ends the process at once (exit 130; checkpoints already written stay).
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            EXIT_INTERRUPTED,
            Arc::clone(&flag),
        )?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let path = args.grid.unwrap_or_else(|| PathBuf::from(DEFAULT_GRID));
    if !path.exists() {
        return Err(InputError::new(path.display().to_string(), "grid file not found").into());
    }
    let device = parse_device(&args.device)?;
    let jobs = match args.jobs {
        Some(0) => return Err(InputError::new("--jobs", "expected at least 1").into()),
        Some(j) => j,
        None if device.is_cpu() => std::thread::available_parallelism().map_or(1, |n| n.get()),
        None => 1,
    };
    if jobs > 1 {
        single_threaded_kernels();
    }
    let grid = Grid::load(&path)?
        .with_overrides(&args.set)?
        .only(&args.only)?
        .with_seeds(args.seeds)?;
    let task = match args.runs_per_task {
        Some(per_task) => Some(TaskSlice::new(args.task_index, per_task)?),
        None => None,
    };
    let outcome = run_grid(
        &grid,
        &RunOptions {
            out: args.out,
            device,
            progress: !args.quiet,
            jobs,
            fresh: args.fresh,
            interrupt: stop_on_signals()?,
            task,
        },
    )?;
    if outcome.interrupted {
        return Err(interrupted(&outcome).into());
    }
    match task {
        Some(task) => finish_task(task, &outcome),
        None => finish_grid(&outcome),
    }
}

/// What an interrupted grid kept, and how to go on.
fn interrupted(outcome: &GridOutcome) -> Interrupted {
    let ids: Vec<&str> = outcome
        .rows
        .iter()
        .filter(|r| r.outcome.status == Status::Interrupted)
        .map(|r| r.run_id.as_str())
        .collect();
    let trained = outcome
        .rows
        .iter()
        .filter(|r| r.variant != BASELINE_VARIANT)
        .count();
    let finished = trained - ids.len();
    let checkpointed = if ids.is_empty() {
        "none checkpointed".to_string()
    } else {
        format!("{} checkpointed ({})", ids.len(), ids.join(", "))
    };
    Interrupted(format!(
        "{finished} of {} runs finished, {checkpointed}, {} not started → {}; run the same command again to resume",
        trained + outcome.not_started,
        outcome.not_started,
        outcome.dir.display()
    ))
}

/// An array task's last line; exit 1 if one of its runs failed. The summary and report are
/// `finalize`'s, once every task has ended.
fn finish_task(task: TaskSlice, outcome: &GridOutcome) -> anyhow::Result<()> {
    let failed = outcome
        .rows
        .iter()
        .filter(|r| r.outcome.status == Status::Failed)
        .count();
    crate::errln!(
        "task {}: {} run(s), {failed} failed → {}",
        task.index,
        outcome.rows.len(),
        outcome.dir.display()
    );
    if failed > 0 {
        anyhow::bail!("task {}: {failed} run(s) failed", task.index);
    }
    Ok(())
}

/// A local grid's report and last line.
fn finish_grid(outcome: &GridOutcome) -> anyhow::Result<()> {
    let trained: Vec<_> = outcome
        .rows
        .iter()
        .filter(|r| r.variant != BASELINE_VARIANT)
        .collect();
    let count = |status: Status| {
        trained
            .iter()
            .filter(|r| r.outcome.status == status)
            .count()
    };
    let (failed, diverged) = (count(Status::Failed), count(Status::Diverged));
    let report = render(&outcome.dir, None)?;
    crate::errln!("report → {}", report.join("index.md").display());
    crate::errln!(
        "{} runs ({failed} failed, {diverged} diverged) + {} untrained baseline(s) → {}",
        trained.len(),
        outcome.rows.len() - trained.len(),
        outcome.dir.join("summary.parquet").display()
    );
    // A diverged run (NaN loss: what some ablations do) is a result; a failed one is an error.
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} runs failed (their errors are in the summary and the report); run the grid again to retry them",
            trained.len()
        );
    }
    Ok(())
}

pub fn slurm(args: SlurmArgs) -> anyhow::Result<()> {
    if !args.grid.exists() {
        return Err(InputError::new(args.grid.display().to_string(), "grid file not found").into());
    }
    let grid = Grid::load(&args.grid)?
        .with_overrides(&args.set)?
        .only(&args.only)?
        .with_seeds(args.seeds)?;
    let done = submit(
        &grid,
        &SlurmOptions {
            out: args.out,
            partition: args.partition,
            time: args.time,
            cpus_per_task: args.cpus_per_task,
            mem: args.mem,
            gpus_per_task: args.gpus_per_task,
            array_parallelism: args.array_parallelism,
            runs_per_task: args.runs_per_task,
            account: args.account,
            jobs: args.jobs,
            dry_run: args.dry_run,
        },
    )?;
    for command in &done.commands {
        crate::outln!("{command}");
    }
    let dir = done.grid_dir.display();
    match (&done.array_job, &done.finalize_job) {
        (Some(array), Some(fin)) => crate::errln!(
            "submitted array job {array} ({} tasks: {} runs + the baselines) and finalisation job {fin} → {dir}; watch it with `collapse-lab status {dir}`",
            done.tasks, done.runs
        ),
        _ => crate::errln!(
            "dry run: scripts in {dir}/slurm/ ({} tasks: {} runs + the baselines); nothing submitted",
            done.tasks, done.runs
        ),
    }
    Ok(())
}

pub fn finalize(args: GridDirArgs) -> anyhow::Result<()> {
    let state = read_state(&args.dir)?;
    let summary = state.write_summary()?;
    let report = render(&args.dir, None)?;
    crate::errln!("report → {}", report.join("index.md").display());
    crate::errln!("{} → {}", state.counts(), summary.display());
    let unfinished = state.unfinished();
    for (spec, run) in &unfinished {
        crate::errln!("{}: {} ({})", spec.run_id, run.label(), run.detail());
    }
    if !unfinished.is_empty() {
        anyhow::bail!(
            "{} of {} runs failed or did not finish; run the grid again (or re-submit its array) to finish them",
            unfinished.len(),
            state.runs.len()
        );
    }
    Ok(())
}

pub fn status(args: GridDirArgs) -> anyhow::Result<()> {
    let state = read_state(&args.dir)?;
    let width = state
        .runs
        .iter()
        .map(|(spec, _)| spec.run_id.len())
        .max()
        .unwrap_or(0);
    for (spec, run) in &state.runs {
        crate::outln!(
            "{:<width$}  {:<11}  {}",
            spec.run_id,
            run.label(),
            run.detail()
        );
    }
    crate::outln!("{}: {}", state.grid.name, state.counts());
    Ok(())
}
