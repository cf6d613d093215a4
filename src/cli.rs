//! The command line: parses flags and wires the stages together; computes nothing itself.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Grid, InputError};
use crate::runner::{run_grid, RunOptions};
use crate::train::parse_device;

/// The grid `collapse-lab run` uses when none is named.
pub const DEFAULT_GRID: &str = "experiments/bn-ablation.toml";

#[derive(Parser, Debug)]
#[command(name = "collapse-lab", version, about = "Diagnose representation collapse in self-supervised learning")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train every variant × seed of an ablation grid and write Parquet logs.
    Run(RunArgs),
}

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
}

/// Runs a parsed command. Errors caused by bad input carry an [`InputError`].
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
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
        .with_seeds(args.seeds);
    let outcome = run_grid(
        &grid,
        &RunOptions {
            out: args.out,
            device,
            progress: !args.quiet,
            jobs,
        },
    )?;
    let failed = outcome.rows.iter().filter(|r| r.status == "failed").count();
    eprintln!(
        "{} runs ({} failed) → {}",
        outcome.rows.len(),
        failed,
        outcome.dir.join("summary.parquet").display()
    );
    Ok(())
}

/// Exit code for an error: 2 for bad input, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.downcast_ref::<InputError>().is_some()) {
        2
    } else {
        1
    }
}

/// Makes candle (and the gemm it calls) compute each op on the calling thread. Must run
/// before the first tensor op: candle reads the setting when it starts its thread pool.
fn single_threaded_kernels() {
    // Safety: called before any other thread of this process exists.
    std::env::set_var("RAYON_NUM_THREADS", "1");
}
