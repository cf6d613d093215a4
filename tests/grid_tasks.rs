//! A grid run as array tasks (`run --task-index --runs-per-task`), then `finalize`, equals a
//! local run; `status` follows it; `slurm` writes and submits its scripts (through a stand-in
//! `sbatch` that records what it is given) and refuses bad input with one line. The same
//! flow against a real Slurm is `tests/slurm.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// `smoke` has 7 runs: with 2 per task, tasks 0–3 train them and task 4 the baseline.
const TASKS: usize = 5;

fn task(out: &Path, index: usize) -> Output {
    let (out, index) = (out.to_str().expect("utf-8"), index.to_string());
    run(&[
        "run",
        "experiments/smoke.toml",
        "--out",
        out,
        "--task-index",
        &index,
        "--runs-per-task",
        "2",
        "--jobs",
        "2",
        "--quiet",
    ])
}

fn status(grid: &Path) -> String {
    let o = run(&["status", grid.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn finalize(grid: &Path) -> Output {
    run(&["finalize", grid.to_str().expect("utf-8")])
}

#[test]
fn tasks_then_finalize_equal_a_local_run_and_status_follows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let local = tmp.path().join("local");
    let o = run_smoke(
        &local,
        "byol,no-norm,layer-norm,simsiam,simclr,moco,contrastive",
        &["--jobs", "2"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let tasks = tmp.path().join("tasks");
    let grid = tasks.join("smoke");
    let o = task(&tasks, 1);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Tasks leave the summary to finalize.
    assert!(!grid.join("summary.parquet").exists());
    let partial = status(&grid);
    assert!(
        partial.contains("layer-norm-s0") && partial.contains("smoke: 2 done, 6 pending"),
        "{partial}"
    );
    for line in partial
        .lines()
        .filter(|l| l.starts_with("layer-norm-s0") || l.starts_with("simsiam-s0"))
    {
        assert!(line.contains("done"), "{line}");
    }
    // Finalizing a half-done grid writes what finished and says what did not (exit 1).
    let o = finalize(&grid);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("byol-s0: pending (not started)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read(&grid.join("summary.parquet")).height(), 2);

    for index in (0..TASKS).filter(|&i| i != 1) {
        let o = task(&tasks, index);
        assert_eq!(o.status.code(), Some(0), "task {index}: {}", stderr(&o));
    }
    assert!(status(&grid).contains("smoke: 8 done"), "{}", status(&grid));
    let o = finalize(&grid);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(grid.join("report/index.md").is_file());
    assert_same_summary(&local.join("smoke"), &grid);
    // A task run again keeps its finished runs.
    let o = task(&tasks, 0);
    assert!(stderr(&o).contains("kept"), "{}", stderr(&o));
}

#[test]
fn a_task_past_the_last_or_without_an_index_is_bad_input() {
    let tmp = tempfile::tempdir().expect("tmp");
    let o = task(tmp.path(), TASKS);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("--task-index") && e.contains("tasks 0–4"), "{e}");

    let mut c = bin();
    c.env_remove("SLURM_ARRAY_TASK_ID").args([
        "run",
        "experiments/smoke.toml",
        "--out",
        tmp.path().to_str().expect("utf-8"),
        "--runs-per-task",
        "2",
    ]);
    let o = c.output().expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("SLURM_ARRAY_TASK_ID"), "{}", stderr(&o));

    // From the environment, as inside an array task: the last task is the baseline's.
    let mut c = bin();
    c.env("SLURM_ARRAY_TASK_ID", "4").args([
        "run",
        "experiments/smoke.toml",
        "--out",
        tmp.path().to_str().expect("utf-8"),
        "--runs-per-task",
        "2",
        "--quiet",
    ]);
    let o = c.output().expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(tmp.path().join("smoke/random-s0/run.toml").is_file());
    assert!(!tmp.path().join("smoke/byol-s0").exists());
}

#[test]
fn status_and_finalize_of_a_folder_that_is_not_a_grid_are_bad_input() {
    let tmp = tempfile::tempdir().expect("tmp");
    for cmd in ["status", "finalize"] {
        let o = run(&[cmd, tmp.path().to_str().expect("utf-8")]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("grid.toml"), "{}", stderr(&o));
    }
}

/// A stand-in `sbatch` in its own folder (put first on PATH): records its arguments (one line per call) in
/// `calls.log`, refuses a script that asks for partition `nope` as Slurm does, and otherwise
/// prints job ids 101, 102, ….
fn fake_sbatch(dir: &Path) -> PathBuf {
    let bin_dir = dir.join("fake-bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let script = bin_dir.join("sbatch");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
log={log}
for last; do :; done
if grep -q -- '--partition=nope' "$last"; then
  echo "sbatch: error: invalid partition specified: nope" >&2
  echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2
  exit 1
fi
echo "$@" >> "$log"
echo $((100 + $(wc -l < "$log")))
"#,
            log = dir.join("calls.log").display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin_dir
}

fn slurm(path: &str, out: &Path, extra: &[&str]) -> Output {
    let mut c = bin();
    c.env("PATH", path)
        .args(["slurm", "experiments/smoke.toml", "--out"])
        .arg(out)
        .args(extra);
    c.output().expect("runs")
}

#[test]
fn slurm_writes_the_scripts_and_submits_the_array_then_the_finalisation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = format!("{}:/usr/bin:/bin", fake_sbatch(tmp.path()).display());
    let out = tmp.path().join("out");
    let o = slurm(
        &path,
        &out,
        &[
            "--runs-per-task",
            "3",
            "--array-parallelism",
            "2",
            "--time",
            "00:10:00",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let calls = std::fs::read_to_string(tmp.path().join("calls.log")).expect("sbatch was called");
    let slurm_dir = out.canonicalize().expect("out").join("smoke/slurm");
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines,
        [
            format!("--parsable {}", slurm_dir.join("array.sbatch").display()),
            format!(
                "--parsable --dependency=afterany:101 {}",
                slurm_dir.join("finalize.sbatch").display()
            ),
        ],
        "{calls}"
    );
    let array = std::fs::read_to_string(slurm_dir.join("array.sbatch")).expect("script");
    // 7 runs, 3 per task: tasks 0–2, the baselines in task 3.
    assert!(array.contains("#SBATCH --array=0-3%2\n"), "{array}");
    assert!(array.contains("#SBATCH --time=00:10:00\n"), "{array}");
    assert!(array.contains("--runs-per-task 3"), "{array}");
    assert!(slurm_dir.join("logs").is_dir());
    assert!(out.join("smoke/grid.toml").is_file());
    assert!(stderr(&o).contains("array job 101") && stderr(&o).contains("finalisation job 102"));

    // --dry-run writes the scripts and submits nothing.
    let o = slurm(&path, &tmp.path().join("dry"), &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("calls.log"))
            .expect("log")
            .lines()
            .count(),
        2
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("sbatch --parsable"));
    assert!(tmp.path().join("dry/smoke/slurm/array.sbatch").is_file());
}

#[test]
fn slurm_bad_input_is_one_line_and_submits_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = format!("{}:/usr/bin:/bin", fake_sbatch(tmp.path()).display());
    let path = path.as_str();
    let one_line = |o: &Output, needle: &str| {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        let e = stderr(o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains(needle), "{needle} in {e}");
    };
    // sbatch's refusal, in its own words.
    let o = slurm(path, &tmp.path().join("a"), &["--partition", "nope"]);
    one_line(&o, "invalid partition specified: nope");
    // No sbatch at all (an empty PATH: the real one may be installed).
    let o = slurm(
        tmp.path().join("empty").to_str().expect("utf-8"),
        &tmp.path().join("b"),
        &[],
    );
    one_line(&o, "sbatch");
    // An invalid grid: nothing written, nothing submitted.
    let o = slurm(path, &tmp.path().join("c"), &["--set", "model.width=0"]);
    one_line(&o, "model.width");
    assert!(!tmp.path().join("c/smoke").exists());
    let o = slurm(path, &tmp.path().join("d"), &["--runs-per-task", "0"]);
    one_line(&o, "--runs-per-task");
    assert!(
        !tmp.path().join("calls.log").exists(),
        "something was submitted"
    );
}
