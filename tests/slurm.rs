//! `collapse-lab slurm` against a real single-node Slurm (`scripts/slurm-local.sh`, Debian's
//! slurmctld/slurmd 22.05 and munge): the array and its finalisation job give the summary a
//! local run gives, and an array task cancelled mid-run (`scancel`) resumes when the grid is
//! submitted again. Ignored by `cargo test` (it needs root and the daemons); `.ci/run` runs it
//! after installing Slurm, and says why where it cannot: `cargo test --release --test slurm --
//! --ignored`. The test starts the daemons if none answer, and stops (by pid) those it started.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The local cluster, started for this test (stopped on drop) or already running.
struct Cluster {
    started: bool,
}

fn script(arg: &str) -> std::process::Output {
    Command::new("bash")
        .arg(repo("scripts/slurm-local.sh"))
        .arg(arg)
        .output()
        .expect("bash runs")
}

impl Cluster {
    fn up() -> Self {
        let answers = Command::new("sinfo")
            .args(["-h", "-o", "%T"])
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("idle")
            });
        if answers {
            return Self { started: false };
        }
        let o = script("start");
        assert!(
            o.status.success(),
            "scripts/slurm-local.sh start failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Self { started: true }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            script("stop");
        }
    }
}

/// `JobState` of every job `id` names (all tasks of an array), via `scontrol`.
fn job_states(id: &str) -> Vec<String> {
    let o = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .expect("scontrol runs");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("JobState="))
                .map(str::to_string)
        })
        .collect()
}

const ENDED: [&str; 6] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
];

/// Waits until every job `id` names has ended; returns their states.
fn wait_for(id: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let states = job_states(id);
        if !states.is_empty() && states.iter().all(|s| ENDED.contains(&s.as_str())) {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {states:?} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Submits the smoke grid; returns (array job id, finalisation job id).
fn submit(out: &Path, extra: &[&str]) -> (String, String) {
    let o = run(&[
        &[
            "slurm",
            "experiments/smoke.toml",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        extra,
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = stderr(&o);
    let id_after = |what: &str| {
        e.split(what)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no `{what}` in {e}"))
            .to_string()
    };
    (id_after("array job "), id_after("finalisation job "))
}

#[test]
#[ignore = "needs a local Slurm (root, scripts/slurm-local.sh); run by .ci/run"]
fn an_array_gives_the_local_summary_and_a_cancelled_task_resumes() {
    let _cluster = Cluster::up();
    let tmp = tempfile::tempdir().expect("tmp");

    // The whole grid: 7 runs in tasks of 2, two at a time, then finalize.
    let local = tmp.path().join("local");
    let all = "byol,no-norm,layer-norm,simsiam,simclr,moco,contrastive";
    let o = run_smoke(&local, all, &["--jobs", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cluster = tmp.path().join("cluster");
    let (array, fin) = submit(
        &cluster,
        &[
            "--runs-per-task",
            "2",
            "--array-parallelism",
            "2",
            "--cpus-per-task",
            "2",
        ],
    );
    let states = wait_for(&fin, Duration::from_secs(300));
    assert_eq!(states, ["COMPLETED"], "finalize: {states:?}");
    assert!(wait_for(&array, Duration::from_secs(10))
        .iter()
        .all(|s| s == "COMPLETED"));
    assert_same_summary(&local.join("smoke"), &cluster.join("smoke"));
    assert!(cluster.join("smoke/report/index.md").is_file());
    assert!(
        cluster
            .join("smoke/slurm/logs")
            .read_dir()
            .expect("logs")
            .count()
            >= 12
    );

    // Long enough runs to cancel one mid-run, one run per task.
    let long = [
        "--only",
        "byol,moco",
        "--set",
        "train.epochs=300",
        "--set",
        "train.checkpoint_every=10",
        "--set",
        "log.eval_every_epochs=100",
    ];
    let local = tmp.path().join("local-long");
    let o = run_smoke(
        &local,
        "byol,moco",
        &[&long[2..], &["--jobs", "1"]].concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cluster = tmp.path().join("cluster-long");
    let args = [&long[..], &["--runs-per-task", "1", "--cpus-per-task", "1"]].concat();
    let (array, fin) = submit(&cluster, &args);
    let progress = cluster.join("smoke/.staging/byol-s0/checkpoint/progress.toml");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !progress.is_file() {
        assert!(Instant::now() < deadline, "byol-s0 never checkpointed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = Command::new("scancel")
        .arg(format!("{array}_0"))
        .output()
        .expect("scancel runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(&fin, Duration::from_secs(300));
    let status = run(&["status", cluster.join("smoke").to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    let byol = text
        .lines()
        .find(|l| l.starts_with("byol-s0"))
        .unwrap_or_default();
    assert!(byol.contains("interrupted"), "{text}");
    assert!(
        text.contains("moco-s0") && text.contains("random-s0"),
        "{text}"
    );

    // Submitted again: the finished runs are kept, byol-s0 resumes from its checkpoint.
    let (_, fin) = submit(&cluster, &args);
    let states = wait_for(&fin, Duration::from_secs(300));
    assert_eq!(
        states,
        ["COMPLETED"],
        "finalize after re-submission: {states:?}"
    );
    let logs: String = std::fs::read_dir(cluster.join("smoke/slurm/logs"))
        .expect("logs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".err"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("resumed at step"), "{logs}");
    assert!(logs.contains("kept"), "{logs}");
    assert_same_summary(&local.join("smoke"), &cluster.join("smoke"));

    // sbatch's refusal of an unknown partition: one line, exit 2.
    let o = run(&[
        "slurm",
        "experiments/smoke.toml",
        "--out",
        tmp.path().join("bad").to_str().expect("utf-8"),
        "--partition",
        "no-such-partition",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid partition"), "{}", stderr(&o));
}
