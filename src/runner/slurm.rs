//! `collapse-lab slurm`: a grid as a Slurm job array. Writes `DIR/<grid>/slurm/array.sbatch`
//! (one array task per `runs_per_task` runs, then one for the baselines; see [`super::tasks`])
//! and `finalize.sbatch` (summary and report once every task has ended, whatever its
//! outcome), and submits both with `sbatch --parsable`. Nothing is submitted for a grid that
//! does not validate. Re-submitting the same scripts skips finished runs and resumes
//! interrupted ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::tasks::task_count;
use super::{lock, validate_grid, GRID_FILE};
use crate::config::{Grid, InputError};
use crate::log::write_text;

/// The `slurm` command's options: where to write, and the resources each task asks for.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub out: PathBuf,
    pub partition: Option<String>,
    /// Per task, as Slurm spells it (`HH:MM:SS`, `D-HH:MM:SS`, minutes).
    pub time: Option<String>,
    pub cpus_per_task: usize,
    /// Per node, as Slurm spells it (`8G`).
    pub mem: Option<String>,
    /// GPUs per task: `--gres=gpu:N`, and the task trains with `--device cuda`.
    pub gpus_per_task: usize,
    /// At most this many tasks at once (`--array=…%K`).
    pub array_parallelism: Option<usize>,
    pub runs_per_task: usize,
    pub account: Option<String>,
    /// Runs each task trains side by side (default: min(cpus per task, runs per task)).
    pub jobs: Option<usize>,
    /// Write the scripts and print the `sbatch` commands without submitting.
    pub dry_run: bool,
}

/// What `slurm` did.
pub struct Submission {
    pub grid_dir: PathBuf,
    pub tasks: usize,
    pub runs: usize,
    /// The commands run (or, with `--dry-run`, to run).
    pub commands: Vec<String>,
    /// Job ids of the array and the finalisation job (none with `--dry-run`).
    pub array_job: Option<String>,
    pub finalize_job: Option<String>,
}

/// Quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    Ok(path.canonicalize().unwrap_or(path))
}

impl SlurmOptions {
    /// The `#SBATCH` lines every job of the grid shares.
    fn common_directives(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(p) = &self.partition {
            lines.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.account {
            lines.push(format!("--account={a}"));
        }
        if let Some(t) = &self.time {
            lines.push(format!("--time={t}"));
        }
        lines
    }

    fn task_jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| self.cpus_per_task.min(self.runs_per_task))
            .max(1)
    }
}

/// `#SBATCH` lines, one per directive.
fn sbatch_lines(directives: &[String]) -> String {
    directives
        .iter()
        .map(|d| format!("#SBATCH {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The array script: header and the task's command.
fn array_script(
    grid: &Grid,
    grid_dir: &Path,
    out: &Path,
    bin: &Path,
    tasks: usize,
    runs: usize,
    opts: &SlurmOptions,
) -> String {
    let logs = grid_dir.join("slurm").join("logs");
    let mut directives = vec![
        format!("--job-name=collapse-lab-{}", grid.name),
        match opts.array_parallelism {
            Some(k) => format!("--array=0-{}%{k}", tasks - 1),
            None => format!("--array=0-{}", tasks - 1),
        },
        format!("--output={}/task-%a-job-%A.out", logs.display()),
        format!("--error={}/task-%a-job-%A.err", logs.display()),
        format!("--cpus-per-task={}", opts.cpus_per_task),
    ];
    directives.extend(opts.common_directives());
    if let Some(m) = &opts.mem {
        directives.push(format!("--mem={m}"));
    }
    if opts.gpus_per_task > 0 {
        directives.push(format!("--gres=gpu:{}", opts.gpus_per_task));
    }
    let device = if opts.gpus_per_task > 0 {
        " --device cuda"
    } else {
        ""
    };
    format!(
        "#!/bin/bash\n\
         # Written by `collapse-lab slurm` for grid `{name}`: {runs} runs in tasks 0–{last_run} ({per} each),\n\
         # the untrained baselines in task {last}. Re-submit with `sbatch {self_path}`: finished runs are\n\
         # kept, interrupted ones resume from their checkpoints.\n\
         {directives}\n\
         exec {bin} run {grid_file} --out {out} --task-index \"$SLURM_ARRAY_TASK_ID\" --runs-per-task {per} --jobs {jobs} --quiet{device}\n",
        name = grid.name,
        last_run = tasks.saturating_sub(2),
        per = opts.runs_per_task,
        last = tasks - 1,
        self_path = quote(&grid_dir.join("slurm/array.sbatch").display().to_string()),
        directives = sbatch_lines(&directives),
        bin = quote(&bin.display().to_string()),
        grid_file = quote(&grid_dir.join(GRID_FILE).display().to_string()),
        out = quote(&out.display().to_string()),
        jobs = opts.task_jobs(),
    )
}

/// The finalisation script: summary and report from the run folders.
fn finalize_script(grid: &Grid, grid_dir: &Path, bin: &Path, opts: &SlurmOptions) -> String {
    let logs = grid_dir.join("slurm").join("logs");
    let mut directives = vec![
        format!("--job-name=collapse-lab-{}-finalize", grid.name),
        format!("--output={}/finalize-job-%j.out", logs.display()),
        format!("--error={}/finalize-job-%j.err", logs.display()),
        "--cpus-per-task=1".to_string(),
    ];
    directives.extend(opts.common_directives());
    format!(
        "#!/bin/bash\n\
         # Written by `collapse-lab slurm`: summary.parquet and the report of grid `{name}` from its run\n\
         # folders, once the array has ended (exit 1 if a run failed or did not finish).\n\
         {directives}\n\
         exec {bin} finalize {dir}\n",
        name = grid.name,
        directives = sbatch_lines(&directives),
        bin = quote(&bin.display().to_string()),
        dir = quote(&grid_dir.display().to_string()),
    )
}

/// Runs `sbatch --parsable ARGS…` and returns the job id; its refusal (an unknown partition,
/// a bad time limit) is bad input, reported with `sbatch`'s own words.
fn sbatch(args: &[String]) -> anyhow::Result<String> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => InputError::new(
                "sbatch",
                "not found on PATH: submit from a Slurm login node (--dry-run writes the scripts without submitting)",
            ),
            _ => InputError::new("sbatch", format!("cannot be started: {e}")),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // sbatch prints "sbatch: error: <cause>" lines; the first one names the cause.
        let cause = stderr
            .lines()
            .find_map(|l| l.strip_prefix("sbatch: error: "))
            .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("no message")
            .trim()
            .to_string();
        return Err(InputError::new("sbatch", format!("refused the job: {cause}")).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `--parsable` prints "<id>" or "<id>;<cluster>".
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() {
        return Err(anyhow::anyhow!("sbatch printed no job id"));
    }
    Ok(id)
}

/// Validates `grid`, writes its scripts under `opts.out/<grid>/slurm/` and submits them
/// (unless `dry_run`).
pub fn submit(grid: &Grid, opts: &SlurmOptions) -> anyhow::Result<Submission> {
    if opts.runs_per_task == 0 {
        return Err(InputError::new("--runs-per-task", "expected at least 1").into());
    }
    if opts.cpus_per_task == 0 {
        return Err(InputError::new("--cpus-per-task", "expected at least 1").into());
    }
    if opts.array_parallelism == Some(0) {
        return Err(InputError::new("--array-parallelism", "expected at least 1").into());
    }
    let runs = validate_grid(grid)?;
    let tasks = task_count(runs, opts.runs_per_task);
    crate::log::create_given_dir(&opts.out)?;
    let out = absolute(&opts.out)?;
    let grid_dir = super::grid_folder::claim(&out, grid)?;
    let slurm_dir = grid_dir.join("slurm");
    crate::log::create_dir(&slurm_dir)?;
    crate::log::create_dir(&slurm_dir.join("logs"))?;
    lock::GridLock::refuse_if_held(&grid_dir)?;
    super::grid_folder::write_grid_file(&grid_dir, grid)?;
    let bin = std::env::current_exe().context("locating the collapse-lab binary")?;
    let array = slurm_dir.join("array.sbatch");
    let finalize = slurm_dir.join("finalize.sbatch");
    write_text(
        &array,
        &array_script(grid, &grid_dir, &out, &bin, tasks, runs, opts),
    )?;
    write_text(&finalize, &finalize_script(grid, &grid_dir, &bin, opts))?;
    let array_cmd = vec![array.display().to_string()];
    let show = |args: &[String]| {
        format!(
            "sbatch --parsable {}",
            args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
        )
    };
    let mut submission = Submission {
        grid_dir,
        tasks,
        runs,
        commands: Vec::new(),
        array_job: None,
        finalize_job: None,
    };
    if opts.dry_run {
        submission.commands = vec![
            show(&array_cmd),
            show(&[
                "--dependency=afterany:<array job id>".into(),
                finalize.display().to_string(),
            ]),
        ];
        return Ok(submission);
    }
    let array_id = sbatch(&array_cmd)?;
    let finalize_cmd = vec![
        format!("--dependency=afterany:{array_id}"),
        finalize.display().to_string(),
    ];
    let finalize_id = sbatch(&finalize_cmd)?;
    submission.commands = vec![show(&array_cmd), show(&finalize_cmd)];
    submission.array_job = Some(array_id);
    submission.finalize_job = Some(finalize_id);
    Ok(submission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_paths_and_escapes_the_rest() {
        assert_eq!(quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    fn options() -> SlurmOptions {
        SlurmOptions {
            out: PathBuf::from("/o"),
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            cpus_per_task: 4,
            mem: Some("8G".into()),
            gpus_per_task: 1,
            array_parallelism: Some(3),
            runs_per_task: 2,
            account: Some("lab".into()),
            jobs: None,
            dry_run: true,
        }
    }

    #[test]
    fn the_array_script_asks_for_what_was_given() {
        let grid = Grid::parse(
            "name = \"g\"\nseeds = [0]\n[[variant]]\nname = \"a\"\n",
            "g.toml",
        )
        .expect("grid");
        let script = array_script(
            &grid,
            Path::new("/o/g"),
            Path::new("/o"),
            Path::new("/bin/collapse-lab"),
            4,
            5,
            &options(),
        );
        for line in [
            "#SBATCH --array=0-3%3",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=lab",
            "#SBATCH --time=01:00:00",
            "#SBATCH --mem=8G",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --output=/o/g/slurm/logs/task-%a-job-%A.out",
        ] {
            assert!(script.lines().any(|l| l == line), "{line} in\n{script}");
        }
        let exec = script.lines().last().unwrap_or_default();
        assert_eq!(
            exec,
            "exec /bin/collapse-lab run /o/g/grid.toml --out /o --task-index \"$SLURM_ARRAY_TASK_ID\" --runs-per-task 2 --jobs 2 --quiet --device cuda"
        );
        let fin = finalize_script(
            &grid,
            Path::new("/o/g"),
            Path::new("/bin/collapse-lab"),
            &options(),
        );
        assert!(fin
            .lines()
            .any(|l| l == "exec /bin/collapse-lab finalize /o/g"));
        assert!(!fin.contains("gres"), "{fin}");
    }
}
