//! Soak tests (a command, not part of CI: `just soak`): a grid of 12 short runs, two at a time,
//! is killed with SIGKILL at 20 random moments and restarted after each; when it finally
//! completes, every table equals an uninterrupted run's, timing columns aside. The second
//! variant also damages a random checkpoint file (a flipped byte, a truncation, a deletion)
//! after every kill: resumes fall back to the previous checkpoint or start over, and the end
//! is still the same.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KILLS: usize = 20;

fn start(out: &Path) -> Child {
    bin()
        .args([
            "run",
            "experiments/smoke.toml",
            "--quiet",
            "--only",
            "byol,no-norm,simsiam,moco",
            "--seeds",
            "0,1,2",
            "--jobs",
            "2",
            "--set",
            "train.epochs=40",
            "--set",
            "train.checkpoint_every=10",
            "--out",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

#[test]
#[ignore = "soak test, a minute or more: run with `just soak`"]
fn twenty_sigkills_then_the_same_summary() {
    soak(false);
}

#[test]
#[ignore = "soak test, a minute or more: run with `just soak`"]
fn twenty_sigkills_and_damaged_checkpoints_then_the_same_summary() {
    soak(true);
}

/// Every file of every checkpoint (and embedding part) in the staging folder below `grid`.
fn checkpoint_files(grid: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.components().any(|c| {
                let c = c.as_os_str().to_string_lossy();
                c.starts_with("checkpoint") || c == "embedding-parts"
            }) {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&grid.join(".staging"), &mut files);
    files.sort();
    files
}

/// Damages one random checkpoint file; returns what was done.
fn damage_one(grid: &Path, rng: &mut ChaCha8Rng) -> Option<String> {
    let files = checkpoint_files(grid);
    if files.is_empty() {
        return None;
    }
    let f = &files[rng.random_range(0..files.len())];
    let bytes = std::fs::read(f).ok()?;
    let how = match rng.random_range(0..3) {
        0 if !bytes.is_empty() => {
            let mut b = bytes.clone();
            let i = rng.random_range(0..b.len());
            b[i] ^= 0x5a;
            std::fs::write(f, b).ok()?;
            "a flipped byte"
        }
        1 => {
            std::fs::write(f, &bytes[..bytes.len() / 2]).ok()?;
            "truncated"
        }
        _ => {
            std::fs::remove_file(f).ok()?;
            "deleted"
        }
    };
    Some(format!("{}: {how}", f.display()))
}

fn soak(damage: bool) {
    let d = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let o = start(&d.path().join("a")).wait_with_output().expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let uninterrupted = t0.elapsed();

    let out = d.path().join("b");
    let mut rng = ChaCha8Rng::seed_from_u64(20_261_202);
    let (mut landed, mut attempts, mut resumed, mut damaged) = (0, 0, 0, 0);
    let t1 = Instant::now();
    // Kill moments uniform in (0.05 s, a tenth of the uninterrupted time): 20 of them cover
    // about the first half of the grid, and the last start finishes it.
    let window = uninterrupted.as_secs_f64() / 10.0;
    while landed < KILLS && attempts < 10 * KILLS {
        attempts += 1;
        let mut child = start(&out);
        std::thread::sleep(Duration::from_secs_f64(
            rng.random_range(0.05..window.max(0.1)),
        ));
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("SIGKILL");
            landed += 1;
        }
        let o = child.wait_with_output().expect("ends");
        resumed += String::from_utf8_lossy(&o.stderr)
            .matches("resumed at step")
            .count();
        if o.status.success() {
            break; // Finished before the kill: nothing left to interrupt.
        }
        if damage && damage_one(&out.join("smoke"), &mut rng).is_some() {
            damaged += 1;
        }
    }
    let o = start(&out).wait_with_output().expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if damage {
        assert!(
            damaged >= KILLS / 2,
            "only {damaged} checkpoint files damaged"
        );
    }
    resumed += String::from_utf8_lossy(&o.stderr)
        .matches("resumed at step")
        .count();
    let with_kills = t1.elapsed();

    let (a, b) = (d.path().join("a/smoke"), out.join("smoke"));
    let summary_a = read(&a.join("summary.parquet"));
    let summary_b = read(&b.join("summary.parquet"));
    assert_eq!(summary_a.height(), 15, "12 runs and 3 baselines");
    assert!(
        without_timing(summary_a.clone()).equals_missing(&without_timing(summary_b)),
        "summaries differ"
    );
    let mut tables = 1;
    for run in strs(&summary_a, "run_id") {
        for t in ["steps.parquet", "evals.parquet", "embeddings.parquet"] {
            let (x, y) = (a.join(&run).join(t), b.join(&run).join(t));
            if x.exists() {
                assert!(
                    without_timing(read(&x)).equals_missing(&without_timing(read(&y))),
                    "{run}/{t} differs"
                );
                tables += 1;
            }
        }
    }
    println!(
        "soak: 12 runs + 3 baselines, {landed} SIGKILLs landed in {attempts} starts, {damaged} checkpoint files damaged, {resumed} resumptions from checkpoints; summary and {tables} tables bit-identical to the uninterrupted grid (uninterrupted {:.1} s, with kills {:.1} s)",
        uninterrupted.as_secs_f64(),
        with_kills.as_secs_f64()
    );
    assert_eq!(
        landed, KILLS,
        "only {landed} kills landed before the grid finished"
    );
}
