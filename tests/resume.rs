//! Grids that survive: a run killed (SIGKILL) or interrupted (SIGINT) resumes from its last
//! checkpoint and ends with the numbers of a run that never stopped; a second `run` keeps
//! finished runs, re-runs changed ones, and never leaves an earlier run's files behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Two runs with an EMA target, one with a queue; long enough to be stopped part-way, with a
/// checkpoint every 7 steps. One run at a time, so each stop lands in a known run.
const ARGS: &[&str] = &[
    "--only",
    "byol,moco",
    "--jobs",
    "1",
    "--set",
    "train.epochs=30",
    "--set",
    "train.checkpoint_every=7",
];

fn start(out: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["run", "experiments/smoke.toml", "--quiet", "--out"];
    args.push(out.to_str().expect("utf-8 path"));
    args.extend_from_slice(ARGS);
    args.extend_from_slice(extra);
    bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

fn finish(child: Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().expect("the run ends");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `next_step` of the checkpoint of `run` in grid folder `grid`, if one exists now.
fn checkpoint_step(grid: &Path, run: &str) -> Option<u64> {
    let text = std::fs::read_to_string(
        grid.join(".staging")
            .join(run)
            .join("checkpoint/progress.toml"),
    )
    .ok()?;
    let line = text.lines().find(|l| l.starts_with("next_step"))?;
    line.split('=').nth(1)?.trim().parse().ok()
}

/// Waits until `run` has checkpointed at `step` or later (or the child has ended).
fn wait_for_checkpoint(child: &mut Child, grid: &Path, run: &str, step: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if checkpoint_step(grid, run).is_some_and(|s| s >= step) {
            return true;
        }
        if child.try_wait().expect("poll").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no checkpoint of {run} at step {step} within 2 minutes");
}

/// Starts the grid, sends SIGINT once byol-s0 has checkpointed at step 14 or later, and
/// checks the grid stopped with exit 130; returns its stderr.
fn interrupted_after_checkpoint(root: &Path, grid: &Path) -> String {
    let mut child = start(root, &[]);
    assert!(wait_for_checkpoint(&mut child, grid, "byol-s0", 14));
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let (code, err) = finish(child);
    assert_eq!(code, Some(130), "{err}");
    err
}

/// Every table of two grid folders is equal, timing columns aside.
fn assert_same_tables(a: &Path, b: &Path) {
    let mut files = vec![PathBuf::from("summary.parquet")];
    for run in ["byol-s0", "moco-s0", "random-s0"] {
        for t in [
            "steps.parquet",
            "evals.parquet",
            "spectrum.parquet",
            "embeddings.parquet",
        ] {
            if a.join(run).join(t).exists() {
                files.push(Path::new(run).join(t));
            }
        }
    }
    assert!(files.len() > 8, "{files:?}");
    for f in &files {
        let (x, y) = (
            without_timing(read(&a.join(f))),
            without_timing(read(&b.join(f))),
        );
        assert!(x.equals_missing(&y), "{} differs:\n{x}\n{y}", f.display());
    }
    for run in ["byol-s0", "moco-s0"] {
        let w = |d: &Path| std::fs::read(d.join(run).join("encoder.safetensors")).expect("weights");
        assert_eq!(w(a), w(b), "{run}: encoder weights differ");
    }
}

fn uninterrupted(root: &Path) -> PathBuf {
    let (code, err) = finish(start(root, &[]));
    assert_eq!(code, Some(0), "{err}");
    root.join("smoke")
}

#[test]
fn killed_at_several_points_then_resumed_equals_uninterrupted() {
    let d = tempfile::tempdir().expect("tempdir");
    let reference = uninterrupted(&d.path().join("a"));
    let root = d.path().join("b");
    let grid = root.join("smoke");
    // SIGKILL mid-way through the first run, twice more in it, then in the second run.
    let mut kills = 0;
    for (run, step) in [
        ("byol-s0", 8),
        ("byol-s0", 30),
        ("byol-s0", 60),
        ("moco-s0", 20),
    ] {
        let mut child = start(&root, &[]);
        if wait_for_checkpoint(&mut child, &grid, run, step) {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let (code, err) = finish(child);
        assert!(code.is_none() || code == Some(0), "{code:?}: {err}");
    }
    assert!(kills >= 3, "only {kills} kills landed");
    let (code, err) = finish(start(&root, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("resumed at step"), "{err}");
    assert!(!grid.join(".staging/byol-s0").exists() && !grid.join(".staging/moco-s0").exists());
    assert!(
        !grid.join("byol-s0/checkpoint").exists(),
        "checkpoints are not published"
    );
    assert_same_tables(&reference, &grid);
}

#[test]
fn sigint_checkpoints_marks_interrupted_and_exits_130() {
    let d = tempfile::tempdir().expect("tempdir");
    let reference = uninterrupted(&d.path().join("a"));
    let root = d.path().join("b");
    let grid = root.join("smoke");
    let err = interrupted_after_checkpoint(&root, &grid);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("interrupted:") && last.contains("byol-s0") && last.contains("again"),
        "{err}"
    );
    let summary = read(&grid.join("summary.parquet"));
    let (ids, status) = (strs(&summary, "run_id"), strs(&summary, "status"));
    let byol = ids.iter().position(|r| r == "byol-s0").expect("byol row");
    assert_eq!(status[byol], "interrupted");
    assert!(
        !ids.contains(&"moco-s0".to_string()),
        "not started: {ids:?}"
    );
    assert!(
        !grid.join("byol-s0").exists(),
        "an interrupted run is not published"
    );
    assert!(!grid.join(".lock").exists(), "lock released");

    let (code, err) = finish(start(&root, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("byol-s0") && err.contains("resumed at step"),
        "{err}"
    );
    assert_same_tables(&reference, &grid);
}

#[test]
fn a_second_run_keeps_finished_runs_reruns_changed_ones_and_leaves_no_stale_files() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    let grid = uninterrupted(root);
    let modified = |run: &str| {
        std::fs::metadata(grid.join(run).join("steps.parquet"))
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    let before = modified("byol-s0");

    let (code, err) = finish(start(root, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err.matches("kept (finished with the same config)").count(),
        2,
        "{err}"
    );
    assert_eq!(modified("byol-s0"), before, "a kept run is not rewritten");

    // Settings that do not change numbers keep runs too.
    let (code, err) = finish(start(root, &["--set", "train.prefetch=1"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("kept").count(), 2, "{err}");

    // Now without embeddings: the runs are re-run and their old embeddings do not remain.
    assert!(grid.join("byol-s0/embeddings.parquet").exists());
    let (code, err) = finish(start(root, &["--set", "log.embeddings_every=0"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("re-run (config changed)").count(), 2, "{err}");
    for run in ["byol-s0", "moco-s0"] {
        assert!(grid.join(run).join("steps.parquet").exists());
        assert!(
            !grid.join(run).join("embeddings.parquet").exists(),
            "{run}: stale embeddings left"
        );
    }

    let (code, err) = finish(start(root, &["--set", "log.embeddings_every=0", "--fresh"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("re-run (--fresh)").count(), 2, "{err}");
    assert!(modified("byol-s0") > before);
}

#[test]
fn a_failed_run_is_tried_again_and_its_files_replaced() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    let grid = uninterrupted(root);
    // Damage what the kept run's record says: an unreadable record means "not finished".
    std::fs::write(grid.join("byol-s0/run.toml"), "config_hash = 3").expect("write");
    std::fs::write(grid.join("byol-s0/stale.txt"), "from an earlier run").expect("write");
    let (code, err) = finish(start(root, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("byol-s0") && err.contains("re-run"), "{err}");
    assert!(!grid.join("byol-s0/stale.txt").exists(), "published whole");
    assert!(grid.join("byol-s0/run.toml").exists());
}

/// A kept run's published tables are read back first: a truncated `steps.parquet` or a
/// deleted `embeddings.parquet` makes the run train again (and end equal to the original),
/// instead of being kept and reported as it is.
#[test]
fn a_damaged_published_table_is_retrained_not_kept() {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    let grid = uninterrupted(root);
    let steps = grid.join("byol-s0/steps.parquet");
    let original = std::fs::read(&steps).expect("steps");
    // What training computed (the timing columns differ run to run).
    let numbers = |path: &Path| {
        let df = read(path);
        (
            f64s(&df, "loss"),
            f64s(&df, "pos_cos"),
            f64s(&df, "neg_cos"),
        )
    };
    let before = numbers(&steps);
    for damage in ["truncate steps", "delete embeddings"] {
        match damage {
            "truncate steps" => {
                std::fs::write(&steps, &original[..original.len() / 2]).expect("write")
            }
            _ => std::fs::remove_file(grid.join("byol-s0/embeddings.parquet")).expect("delete"),
        }
        // `status` says so before anything is re-run.
        let o = run(&["status", grid.to_str().expect("utf-8")]);
        let shown = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            shown
                .lines()
                .any(|l| l.contains("byol-s0") && l.contains("damaged")),
            "{damage}: {shown}"
        );
        let (code, err) = finish(start(root, &[]));
        assert_eq!(code, Some(0), "{damage}: {err}");
        assert!(
            err.lines()
                .any(|l| l.contains("byol-s0") && l.contains("damaged")),
            "{damage}: {err}"
        );
        assert_eq!(numbers(&steps), before, "{damage}: retrained equal");
        assert!(
            grid.join("byol-s0/embeddings.parquet").is_file(),
            "{damage}"
        );
    }
}

/// A checkpoint proves itself before a resume trusts it: a hand-edited step, NaN weights or
/// a truncated state file make the run start over in the same invocation (one line says
/// why) and end equal to an uninterrupted run.
#[test]
fn a_damaged_checkpoint_is_discarded_and_the_run_starts_over() {
    let d = tempfile::tempdir().expect("tempdir");
    let reference = uninterrupted(&d.path().join("a"));
    for (i, damage) in ["step moved", "NaN weights", "truncated state"]
        .iter()
        .enumerate()
    {
        let root = d.path().join(format!("b{i}"));
        let grid = root.join("smoke");
        interrupted_after_checkpoint(&root, &grid);
        let ckpt = grid.join(".staging/byol-s0/checkpoint");
        let state = ckpt.join("state.safetensors");
        match *damage {
            "step moved" => {
                let p = ckpt.join("progress.toml");
                let text = std::fs::read_to_string(&p).expect("progress");
                let next = checkpoint_step(&grid, "byol-s0").expect("step");
                let moved = text.replace(
                    &format!("next_step = {next}"),
                    &format!("next_step = {}", next + 5),
                );
                assert_ne!(moved, text);
                std::fs::write(&p, moved).expect("write");
            }
            "NaN weights" => {
                // Overwrite the last 64 bytes of tensor data with NaN bit patterns.
                let mut bytes = std::fs::read(&state).expect("state");
                let n = bytes.len();
                for chunk in bytes[n - 64..].chunks_mut(4) {
                    chunk.copy_from_slice(&f32::NAN.to_le_bytes());
                }
                std::fs::write(&state, bytes).expect("write");
            }
            _ => {
                let bytes = std::fs::read(&state).expect("state");
                std::fs::write(&state, &bytes[..bytes.len() / 2]).expect("write");
            }
        }
        let (code, err) = finish(start(&root, &[]));
        assert_eq!(code, Some(0), "{damage}: {err}");
        assert!(
            err.lines()
                .any(|l| l.contains("checkpoint of byol-s0 damaged")
                    && l.contains("resuming from the previous checkpoint")),
            "{damage}: {err}"
        );
        assert_same_tables(&reference, &grid);
    }
}

/// A checkpoint that cannot be written (a full disk, simulated by the test hook at step 14)
/// costs nothing already saved: the run is reported failed (exit 1) with the step-7
/// checkpoint kept in staging, and the next `run` resumes from it and ends equal to an
/// uninterrupted run.
#[test]
fn a_checkpoint_that_cannot_be_written_keeps_the_previous_one() {
    let d = tempfile::tempdir().expect("tempdir");
    let reference = uninterrupted(&d.path().join("a"));
    let root = d.path().join("b");
    let grid = root.join("smoke");
    let child = {
        let mut args = vec!["run", "experiments/smoke.toml", "--quiet", "--out"];
        args.push(root.to_str().expect("utf-8 path"));
        args.extend_from_slice(ARGS);
        bin()
            .args(&args)
            .env("COLLAPSE_LAB_TEST_FAIL_CHECKPOINT_AT", "14")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts")
    };
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("writing the checkpoint at step 14 failed")
            && err.contains("the checkpoint at step 7 is kept"),
        "{err}"
    );
    assert_eq!(checkpoint_step(&grid, "byol-s0"), Some(7));
    assert!(!grid.join("byol-s0").exists(), "not published");
    let (code, err) = finish(start(&root, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("resumed at step 7"), "{err}");
    assert_same_tables(&reference, &grid);
}
