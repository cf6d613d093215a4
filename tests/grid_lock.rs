//! One `run` per grid folder: a live holder is named and refused, a dead one taken over, and
//! what a killed run left half-written is cleaned up.

mod common;

use collapse_lab::runner::grid_folder::GRID_HEADER;
use collapse_lab::runner::lock::host_name;
use common::*;

fn smoke(out: &std::path::Path) -> std::process::Output {
    run_smoke(out, "byol", &["--set", "train.epochs=1"])
}

#[test]
fn a_live_holder_is_refused_and_a_dead_one_taken_over() {
    let d = tempfile::tempdir().unwrap();
    let grid = d.path().join("smoke");
    std::fs::create_dir_all(grid.join("byol-s0")).unwrap();
    // A grid folder of ours (its marker), left locked by another `run`.
    std::fs::write(grid.join("grid.toml"), format!("{GRID_HEADER}\n")).unwrap();
    let lock = grid.join(".lock");
    // This test process is alive.
    let me = std::process::id();
    std::fs::write(
        &lock,
        format!("pid={me}\nhost={}\nstarted=1\n", host_name()),
    )
    .unwrap();
    let o = smoke(d.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(".lock") && err.contains(&format!("pid {me}")),
        "{err}"
    );
    assert!(!grid.join("summary.parquet").exists(), "nothing written");

    // A process that has exited: its lock is stale.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(
        &lock,
        format!("pid={dead}\nhost={}\nstarted=1\n", host_name()),
    )
    .unwrap();
    let leftover = grid.join("byol-s0/.steps.parquet.tmp-4242");
    std::fs::write(&leftover, b"half a file").unwrap();
    std::fs::write(grid.join(".summary.parquet.tmp-4242"), b"half").unwrap();
    let o = smoke(d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(grid.join("summary.parquet").is_file());
    assert!(!lock.exists(), "released at the end");
    assert!(!leftover.exists() && !grid.join(".summary.parquet.tmp-4242").exists());
}

/// A run that fails (here: its lock is held by a live process) leaves the grid's summary and
/// report written and makes `run` exit 1; a diverged run would not (it is a result).
#[test]
fn a_failed_run_makes_the_grid_exit_1_after_writing_its_summary() {
    let d = tempfile::tempdir().unwrap();
    let grid = d.path().join("smoke");
    std::fs::create_dir_all(grid.join(".staging")).unwrap();
    std::fs::write(grid.join("grid.toml"), format!("{GRID_HEADER}\n")).unwrap();
    let me = std::process::id();
    std::fs::write(
        grid.join(".staging/byol-s0.lock"),
        format!("pid={me}\nhost={}\nstarted=1\n", host_name()),
    )
    .unwrap();
    let o = smoke(d.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("1 of 1 runs failed"), "{err}");
    assert!(grid.join("summary.parquet").is_file(), "{err}");
    assert!(grid.join("report/index.md").is_file(), "{err}");
}

/// `run … 2>&1 | head -1`: a reader that goes away must not stop the grid. Both pipes are
/// closed before the first line is written; the grid still trains, writes its summary and
/// exits 0 (a failed write used to panic with exit 101 and abandon the runs left).
#[test]
fn a_closed_stdout_and_stderr_do_not_stop_a_grid() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().to_str().unwrap();
    let mut child = bin()
        .args([
            "run",
            "experiments/smoke.toml",
            "--only",
            "byol,no-norm",
            "--set",
            "train.epochs=1",
            "--out",
            out,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let grid = d.path().join("smoke");
    assert!(grid.join("summary.parquet").is_file());
    assert!(grid.join("no-norm-s0/steps.parquet").is_file());
}
