//! The command line: parses flags and wires the stages together; computes nothing itself.

mod grid;

pub use grid::{GridDirArgs, Interrupted, RunArgs, SlurmArgs, EXIT_INTERRUPTED};

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{load_run_config, Grid, InputError, RunSpec};
use crate::data::tools::{fetch, inspect};
use crate::log::{write_analysis, write_eval_analysis, LiveComparison, LIVE_TOLERANCE};
use crate::report::render;
use crate::runner::analyze::{analyze_run, reevaluate_run, run_dirs};
use crate::runner::bench::{bench, BenchWhat};
use crate::runner::export::export_torch;
use crate::runner::parity::parity_dump;
use crate::runner::selftest::selftest;
use crate::train::parse_device;

/// The grid `collapse-lab run` uses when none is named.
pub const DEFAULT_GRID: &str = "experiments/bn-ablation.toml";

#[derive(Parser, Debug)]
#[command(
    name = "collapse-lab",
    version,
    about = "Diagnose representation collapse in self-supervised learning"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train every variant × seed of an ablation grid and write Parquet logs (or, with
    /// --task-index, the runs of one Slurm array task).
    Run(RunArgs),
    /// Submit a grid as a Slurm job array plus a finalisation job (summary and report).
    Slurm(SlurmArgs),
    /// Write summary.parquet and the report of a grid folder from its finished runs; exit 1
    /// if a run failed or did not finish (what the Slurm finalisation job runs).
    Finalize(GridDirArgs),
    /// Per run of a grid folder: done, running, failed, interrupted or pending.
    Status(GridDirArgs),
    /// Recompute every per-step metric from embeddings.parquet and each run's final
    /// evaluation from its stored weights; write analysis.parquet and analysis_evals.parquet.
    Analyze(AnalyzeArgs),
    /// Diagnose collapse in embeddings from any framework: .npy (N, d) or (2, N, d) paired
    /// views, .safetensors (z, or z1 and z2), or a folder of them, one per step. Writes
    /// OUT/diagnostics.parquet and prints a verdict with its reasons per embedding set.
    Diagnose(DiagnoseArgs),
    /// Time a training step (forward, backward, update, diagnostics) or the loader.
    Bench(BenchArgs),
    /// Render a grid's report: charts, the claims table (F1–F7), Markdown and HTML.
    Report(ReportArgs),
    /// Train the first K steps of a run config (or of every run of a grid) and write what
    /// bench/torch_parity.py needs to replay them in PyTorch and compare.
    ParityDump(ParityDumpArgs),
    /// Write a run's weights in PyTorch's names and layouts (encoder.torch.safetensors,
    /// heads.torch.safetensors): torchvision's resnet18 loads the encoder as it is.
    Export(ExportArgs),
    /// Download a public data set (`data fetch`) or summarise one on disk (`data inspect`).
    #[command(subcommand)]
    Data(DataCommand),
    /// Check a device: training steps repeat bit for bit; on a GPU, each CUDA kernel against
    /// the CPU code it replaces and training on the GPU against the CPU. Exit 1 on a failure.
    Selftest(SelftestArgs),
}

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A grid (its first run, or --variant) or a run's config.toml to train.
    #[arg(long, default_value = "experiments/smoke.toml")]
    pub config: PathBuf,
    /// The grid variant to train.
    #[arg(long, default_value = "byol")]
    pub variant: String,
    /// Training steps compared.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download stl10, cifar10, cifar100, mnist or fashion-mnist, check its MD5 and unpack it.
    Fetch(FetchArgs),
    /// Recognise a data set (IDX, CIFAR, STL-10, image folder, a CIFAR batch file), print its
    /// splits, counts, label histogram and pixel statistics, and draw a contact sheet.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// stl10, cifar10, cifar100, mnist or fashion-mnist.
    pub name: String,
    /// Destination folder (default: data/NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Download from here instead of the official location (also: COLLAPSE_LAB_DATA_URL).
    #[arg(long)]
    pub base_url: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A data set folder, a CIFAR batch file, or a name (fashion-mnist, cifar10, …).
    pub path_or_name: String,
    /// Where to write contact_sheet.png (default: runs/inspect/<folder or file name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A grid folder (runs/<grid>).
    pub dir: PathBuf,
    /// Where to write the report (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A grid (its first variant, or --variant) or a run's config.toml.
    #[arg(long, default_value = DEFAULT_GRID)]
    pub config: PathBuf,
    /// The grid variant to time.
    #[arg(long)]
    pub variant: Option<String>,
    #[arg(long, value_enum, default_value = "byol-step")]
    pub what: BenchWhat,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Compute threads per op: 1 is how `run` trains (one run per core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct ParityDumpArgs {
    /// A run's config.toml, or a grid (every run is dumped into OUT/<run id>).
    pub config: PathBuf,
    /// Steps to train and record.
    #[arg(long, default_value_t = 10)]
    pub steps: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run folder (runs/<grid>/<run>).
    pub run_dir: PathBuf,
    /// The only format so far: torch.
    #[arg(long, default_value = "torch")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    /// Files (.npy, .safetensors) or folders of them (one per step: step_001200.npy).
    #[arg(required_unless_present = "compare")]
    pub paths: Vec<PathBuf>,
    /// Class labels of the rows (.npy of shape (N,), integers): adds each set's classes one
    /// at a time (`z|class=3`), where a collapse of one class shows.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Linear CKA between the embeddings of two files of the same images (two checkpoints,
    /// two layers): writes OUT/cka.parquet.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Where diagnostics.parquet goes.
    #[arg(long, default_value = "diagnostics")]
    pub out: PathBuf,
    /// Print the diagnoses as JSON (one object per set and step) instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when the last step of any set is `collapsed` (or, with `partial`, collapsed or
    /// partial): for a training pipeline.
    #[arg(long, value_parser = ["collapsed", "partial"])]
    pub fail_on: Option<String>,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// A run folder (runs/<grid>/<run>) or a grid folder (runs/<grid>).
    pub dir: PathBuf,
    /// Skip re-evaluating the stored weights (per-step metrics only).
    #[arg(long)]
    pub no_eval: bool,
    /// Exit 1 unless every recomputed value was compared with the live log and agrees.
    #[arg(long)]
    pub verify: bool,
}

/// Runs a parsed command. Errors caused by bad input carry an [`InputError`].
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => grid::run(args),
        Command::Slurm(args) => grid::slurm(args),
        Command::Finalize(args) => grid::finalize(args),
        Command::Status(args) => grid::status(args),
        Command::Analyze(args) => analyze(args),
        Command::Diagnose(args) => diagnose_command(args),
        Command::Bench(args) => bench_command(args),
        Command::Selftest(args) => selftest_command(args),
        Command::Report(args) => {
            let out = render(&args.dir, args.out.as_deref())?;
            crate::errln!("report → {}", out.join("index.md").display());
            Ok(())
        }
        Command::ParityDump(args) => parity_dump_command(args),
        Command::Export(args) => {
            if args.format != "torch" {
                return Err(InputError::new(
                    "--format",
                    format!("unknown format `{}`, expected torch", args.format),
                )
                .into());
            }
            for path in export_torch(&args.run_dir)? {
                crate::outln!("{}", path.display());
            }
            Ok(())
        }
        Command::Data(DataCommand::Fetch(args)) => {
            let set = fetch::fetch_set(&args.name)?;
            let dir = args.dir.unwrap_or_else(|| fetch::default_dir(set.name));
            let url = fetch::resolve_base_url(set, args.base_url.as_deref());
            for line in fetch::fetch(set, &dir, &url, !args.quiet)? {
                crate::outln!("{line}");
            }
            Ok(())
        }
        Command::Data(DataCommand::Inspect(args)) => {
            let out = args.out.unwrap_or_else(|| {
                let label = std::path::Path::new(&args.path_or_name)
                    .file_name()
                    .map_or_else(|| "data".into(), |n| n.to_string_lossy().to_string());
                PathBuf::from("runs/inspect").join(label)
            });
            crate::out!("{}", inspect::inspect(&args.path_or_name, &out)?.to_text());
            Ok(())
        }
    }
}

fn selftest_command(args: SelftestArgs) -> anyhow::Result<()> {
    // As `run` trains: each op on one thread, so two runs sum in the same order.
    single_threaded_kernels();
    if args.steps == 0 {
        return Err(InputError::new("--steps", "expected at least 1").into());
    }
    let device = parse_device(&args.device)?;
    let config = runs_of(&args.config, &[], &[args.variant])?
        .into_iter()
        .next()
        .ok_or_else(|| InputError::new(args.config.display().to_string(), "the grid has no runs"))?
        .config;
    let report = selftest(&config, &device, args.steps)?;
    crate::out!("{}", report.text());
    if let Some(path) = &args.json {
        crate::log::write_text(path, &(report.json() + "\n"))?;
    }
    if !report.passed() {
        anyhow::bail!("selftest failed on {}", report.device);
    }
    Ok(())
}

fn bench_command(args: BenchArgs) -> anyhow::Result<()> {
    match args.threads {
        0 => return Err(InputError::new("--threads", "expected at least 1").into()),
        1 => single_threaded_kernels(),
        n => {
            // Safety: no other thread exists yet.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
    let device = parse_device(&args.device)?;
    let only: Vec<String> = args.variant.into_iter().collect();
    let config = runs_of(&args.config, &args.set, &only)?
        .into_iter()
        .next()
        .ok_or_else(|| InputError::new(args.config.display().to_string(), "the grid has no runs"))?
        .config;
    let report = bench(&config, args.what, &device, args.warmup, args.steps.max(1))?;
    crate::outln!("{}", report.human);
    crate::outln!("{}", report.json);
    Ok(())
}

/// The runs of a grid file (with `--set` overrides and `--only`), or the one run of a run's
/// `config.toml` (named `run`).
fn runs_of(path: &Path, set: &[String], only: &[String]) -> anyhow::Result<Vec<RunSpec>> {
    let src = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::new(&src, format!("cannot read: {e}")))?;
    // A run's config.toml has only tables at its top level ([method] name = …); a grid has
    // `name`, `seeds`, `[base]` or `[[variant]]` there. Unparsable text goes to the grid
    // loader, whose error names the line.
    let is_grid = toml::from_str::<toml::Table>(&text).map_or(true, |t| {
        t.contains_key("base")
            || t.contains_key("variant")
            || t.contains_key("seeds")
            || t.get("name").is_some_and(toml::Value::is_str)
    });
    if is_grid {
        return Ok(Grid::load(path)?
            .with_overrides(set)?
            .only(only)?
            .expand()?);
    }
    if !set.is_empty() {
        return Err(InputError::new("--set", "only applies to a grid file").into());
    }
    let config = load_run_config(path)?;
    Ok(vec![RunSpec {
        run_id: "run".into(),
        variant: "run".into(),
        seed: config.train.seed,
        config,
    }])
}

fn parity_dump_command(args: ParityDumpArgs) -> anyhow::Result<()> {
    // Each op on one thread, as `run` trains: the numbers of a dump are the grid's.
    single_threaded_kernels();
    if args.steps == 0 {
        return Err(InputError::new("--steps", "expected at least 1").into());
    }
    let device = parse_device(&args.device)?;
    for spec in runs_of(&args.config, &args.set, &[])? {
        let dir = args.out.join(&spec.run_id);
        let k = parity_dump(&spec.config, args.steps, &dir, &device)?;
        crate::outln!("{} steps → {}", k, dir.display());
    }
    Ok(())
}

fn diagnose_command(args: DiagnoseArgs) -> anyhow::Result<()> {
    use crate::diagnose::{
        compare, diagnose_with_labels, write_cka, write_diagnostics, CKA_FILE, DIAGNOSTICS_FILE,
    };
    use crate::metrics::Verdict;
    if let Some(pair) = &args.compare {
        let r = compare(&pair[0], &pair[1])?;
        crate::log::create_given_dir(&args.out)?;
        write_cka(&args.out.join(CKA_FILE), std::slice::from_ref(&r))?;
        crate::outln!(
            "linear CKA({} {}, {} {}) = {:.4} over {} rows{}",
            r.a,
            r.set_a,
            r.b,
            r.set_b,
            r.cka,
            r.rows,
            if r.nonfinite_rows > 0 {
                format!(" ({} rows with NaN or ∞ left out)", r.nonfinite_rows)
            } else {
                String::new()
            }
        );
        if args.paths.is_empty() {
            return Ok(());
        }
    }
    let rows = diagnose_with_labels(&args.paths, args.labels.as_deref())?;
    crate::log::create_given_dir(&args.out)?;
    let table = args.out.join(DIAGNOSTICS_FILE);
    write_diagnostics(&table, &rows)?;
    if args.json {
        let objects: Vec<String> = rows
            .iter()
            .map(|r| {
                let num = |v: f64| {
                    if v.is_finite() {
                        format!("{v}")
                    } else {
                        "null".into()
                    }
                };
                let opt = |v: Option<f64>| v.map_or("null".to_string(), num);
                format!(
                    "{{\"source\":{:?},\"step\":{},\"set\":{:?},\"rows\":{},\"dim\":{},\"rank_cap\":{},\"effective_rank\":{},\"z_std\":{},\"neg_cos_within\":{},\"pos_cos\":{},\"neg_cos\":{},\"alpha_req\":{},\"verdict\":{:?},\"reasons\":{:?}}}",
                    r.source,
                    r.step.map_or("null".to_string(), |s| s.to_string()),
                    r.set,
                    r.metrics.rows,
                    r.metrics.dim,
                    r.metrics.rank_cap,
                    num(r.metrics.effective_rank),
                    num(r.metrics.z_std),
                    num(r.metrics.neg_cos),
                    opt(r.pair.as_ref().map(|p| p.pos_cos)),
                    opt(r.pair.as_ref().map(|p| p.neg_cos)),
                    num(r.metrics.alpha_req),
                    r.verdict.as_str(),
                    r.reasons
                )
            })
            .collect();
        crate::outln!("[{}]", objects.join(",\n "));
    } else {
        for r in &rows {
            let step = r.step.map_or(String::new(), |s| format!(" step {s}"));
            let pair = r.pair.as_ref().map_or(String::new(), |p| {
                format!(" pos {:.3} neg {:.3}", p.pos_cos, p.neg_cos)
            });
            let why = if r.reasons.is_empty() {
                String::new()
            } else {
                format!(" — {}", r.reasons.join("; "))
            };
            crate::outln!(
                "{}{step} {}: {}{pair} std {:.4} rank {:.2}/{} α {:.2} ({} rows){why}",
                r.source,
                r.set,
                r.verdict.as_str(),
                r.metrics.z_std,
                r.metrics.effective_rank,
                r.metrics.dim,
                r.metrics.alpha_req,
                r.metrics.rows
            );
        }
        crate::errln!("{} embedding set(s) → {}", rows.len(), table.display());
    }
    if let Some(level) = &args.fail_on {
        // The last step of each set decides.
        let mut last: std::collections::BTreeMap<(&str, &str), &crate::diagnose::Diagnosis> =
            Default::default();
        for r in &rows {
            let key = (
                std::path::Path::new(&r.source)
                    .parent()
                    .and_then(|p| p.to_str())
                    .unwrap_or(""),
                r.set.as_str(),
            );
            last.insert(key, r);
        }
        let failing: Vec<String> = last
            .values()
            .filter(|r| {
                r.verdict == Verdict::Collapsed
                    || (level == "partial" && r.verdict == Verdict::Partial)
            })
            .map(|r| format!("{} {} ({})", r.source, r.set, r.verdict.as_str()))
            .collect();
        if !failing.is_empty() {
            anyhow::bail!("--fail-on {level}: {}", failing.join(", "));
        }
    }
    Ok(())
}

fn analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    // The default `run` computes each op on one thread; so does this, so that re-evaluation
    // repeats the same floating-point sums.
    single_threaded_kernels();
    let runs = run_dirs(&args.dir)?;
    let mut steps = Vec::new();
    let mut evals = Vec::new();
    for dir in &runs {
        steps.extend(analyze_run(dir)?);
        if !args.no_eval {
            evals.push(reevaluate_run(dir)?);
        }
    }
    write_analysis(&args.dir.join("analysis.parquet"), &steps)?;
    if !evals.is_empty() {
        write_eval_analysis(&args.dir.join("analysis_evals.parquet"), &evals)?;
    }
    let steps_seen = count_comparisons(steps.iter().map(|s| (s.live, s.max_abs_diff_live)));
    let evals_seen = if evals.is_empty() {
        String::new()
    } else {
        let seen = count_comparisons(evals.iter().map(|e| (e.live, e.max_abs_diff_live)));
        format!("; final evaluations {seen}")
    };
    crate::errln!(
        "analyzed {} runs, {} logged steps → {}; offline vs live: steps {steps_seen}{evals_seen}",
        runs.len(),
        steps.len(),
        args.dir.join("analysis.parquet").display()
    );
    let all_agree = steps
        .iter()
        .map(|s| s.live)
        .chain(evals.iter().map(|e| e.live))
        .all(|c| c == LiveComparison::Agrees);
    if args.verify && !all_agree {
        anyhow::bail!(
            "--verify: not every recomputed value agrees with the live log within {LIVE_TOLERANCE:e} (see live_comparison in analysis.parquet)"
        );
    }
    Ok(())
}

/// "N agree, N disagree (largest |Δ| x), N missing, N not finite" for a summary line.
fn count_comparisons(rows: impl Iterator<Item = (LiveComparison, Option<f64>)>) -> String {
    let (mut agree, mut disagree, mut missing, mut not_finite) = (0, 0, 0, 0);
    let mut largest = 0.0f64;
    for (c, d) in rows {
        match c {
            LiveComparison::Agrees => agree += 1,
            LiveComparison::Disagrees => disagree += 1,
            LiveComparison::Missing => missing += 1,
            LiveComparison::NotFinite => not_finite += 1,
        }
        if let Some(d) = d.filter(|d| d.is_finite()) {
            largest = largest.max(d);
        }
    }
    format!(
        "{agree} agree, {disagree} disagree (largest |offline − live| {largest:.2e}), {missing} missing, {not_finite} not finite"
    )
}

/// Exit code for an error: 2 for bad input, 130 for an interrupted grid, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<Interrupted>().is_some() {
        EXIT_INTERRUPTED
    } else if err
        .chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
    {
        2
    } else {
        1
    }
}

/// Makes candle (and the gemm it calls) compute each op on the calling thread. Must run
/// before the first tensor op: candle reads the setting when it starts its thread pool.
pub(crate) fn single_threaded_kernels() {
    // Safety: called before any other thread of this process exists.
    std::env::set_var("RAYON_NUM_THREADS", "1");
}
