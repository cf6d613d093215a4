//! One `run` per grid folder: a live holder is named and refused, a dead one taken over, and
//! what a killed run left half-written is cleaned up.

mod common;

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
