//! End-to-end: `collapse-lab run` on the smoke grid, determinism, divergence handling.

mod common;

use collapse_lab::log::{EVALS_COLUMNS, STEPS_COLUMNS};

use common::*;

#[test]
fn smoke_grid_trains_every_method_and_writes_tables() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = run(&[
        "run",
        "experiments/smoke.toml",
        "--quiet",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let grid = out.path().join("smoke");
    assert!(grid.join("grid.toml").is_file());
    let summary = read(&grid.join("summary.parquet"));
    let ids = strs(&summary, "run_id");
    assert_eq!(
        ids,
        [
            "byol-s0",
            "no-norm-s0",
            "layer-norm-s0",
            "simsiam-s0",
            "simclr-s0",
            "moco-s0",
            "contrastive-s0",
            "random-s0"
        ]
    );
    assert_eq!(
        strs(&summary, "status"),
        vec!["ok"; 8],
        "{:?}",
        strs(&summary, "error")
    );
    // The untrained baseline has probe and kNN accuracy, no training metrics.
    let probe = summary
        .column("final_probe_acc")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    assert!((0..probe.len()).all(|i| probe.get(i).is_some_and(|p| (0.0..=1.0).contains(&p))));
    for id in &ids[..7] {
        let dir = grid.join(id);
        assert!(dir.join("config.toml").is_file());
        assert!(dir.join("encoder.safetensors").is_file());
        let steps = read(&dir.join("steps.parquet"));
        for c in STEPS_COLUMNS {
            assert!(steps.column(c).is_ok(), "{id}: missing column {c}");
        }
        // 64 images / batch 16 = 4 steps per epoch, 2 epochs.
        assert_eq!(steps.height(), 8, "{id}");
        for v in f64s(&steps, "pos_cos")
            .into_iter()
            .chain(f64s(&steps, "neg_cos"))
        {
            assert!((-1.0..=1.0 + 1e-6).contains(&v), "{id}: cosine {v}");
        }
        let tau = steps.column("tau").unwrap().f64().unwrap().clone();
        let has_ema = ["byol", "no-norm", "layer-norm", "moco", "contrastive"]
            .iter()
            .any(|p| id.starts_with(p));
        assert_eq!(tau.null_count() == 0, has_ema, "{id}: tau present iff EMA");
        // Evaluations: before training (epoch 0) and after each of the 2 epochs.
        let evals = read(&dir.join("evals.parquet"));
        let epochs: Vec<u32> = evals
            .column("epoch")
            .unwrap()
            .u32()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(epochs, [0, 1, 2], "{id}");
        for c in EVALS_COLUMNS {
            assert!(evals.column(c).is_ok(), "{id}: evals lacks {c}");
        }
        let spectrum = read(&dir.join("spectrum.parquet"));
        assert_eq!(
            strs(&spectrum, "space")
                .iter()
                .filter(|s| *s == "z")
                .count(),
            3 * 16,
            "{id}: 16 z eigenvalues × 3 evaluations"
        );
        // Embeddings of steps 0 (and every 10th): 16 samples × 2 views × kinds.
        let emb = read(&dir.join("embeddings.parquet"));
        let kinds = if id.starts_with("simclr") || id.starts_with("moco") {
            3
        } else {
            4
        };
        assert_eq!(emb.height(), 16 * 2 * kinds, "{id}");
        // The resolved config round-trips as a run config.
        let cfg =
            collapse_lab::config::load_run_config(&dir.join("config.toml")).expect("config.toml");
        assert_eq!(cfg.train.batch_size, 16);
    }
}

#[test]
fn same_seed_gives_identical_steps() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    for d in [&a, &b] {
        let o = run(&[
            "run",
            "experiments/smoke.toml",
            "--quiet",
            "--only",
            "byol,moco",
            "--out",
            d.path().to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for id in ["byol-s0", "moco-s0"] {
        let x = read(&a.path().join("smoke").join(id).join("steps.parquet"));
        let y = read(&b.path().join("smoke").join(id).join("steps.parquet"));
        // Every number; the two timing columns (wall time) aside.
        for c in STEPS_COLUMNS[5..13].iter().filter(|c| **c != "tau") {
            assert_eq!(
                f64s(&x, c),
                f64s(&y, c),
                "{id}: column {c} differs between identical runs"
            );
        }
    }
    // A different seed gives different numbers.
    let c = tempfile::tempdir().expect("tempdir");
    let o = run_smoke(c.path(), "byol", &["--seeds", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let x = read(&a.path().join("smoke/byol-s0/steps.parquet"));
    let z = read(&c.path().join("smoke/byol-s1/steps.parquet"));
    assert_ne!(f64s(&x, "loss"), f64s(&z, "loss"));
}

#[test]
fn diverged_run_is_recorded_and_grid_goes_on() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = run_smoke(out.path(), "no-norm,byol", &["--set", "optim.lr=1e30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = read(&out.path().join("smoke/summary.parquet"));
    let status = strs(&summary, "status");
    let variant = strs(&summary, "variant");
    assert_eq!(
        variant,
        ["byol", "no-norm", "random"],
        "both runs and the baseline recorded"
    );
    assert_eq!(
        status[..2],
        ["diverged", "diverged"],
        "{:?}",
        strs(&summary, "error")
    );
    for id in ["no-norm-s0", "byol-s0"] {
        assert!(
            out.path()
                .join("smoke")
                .join(id)
                .join("steps.parquet")
                .is_file(),
            "{id} keeps its log"
        );
    }
}

#[test]
fn analyze_recomputes_live_metrics() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = run_smoke(
        out.path(),
        "byol,simclr",
        &["--set", "log.embeddings_every=3"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let grid = out.path().join("smoke");
    let o = run(&["analyze", grid.to_str().unwrap(), "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let analysis = read(&grid.join("analysis.parquet"));
    assert!(strs(&analysis, "live_comparison")
        .iter()
        .all(|c| c == "agrees"));
    // Steps 0, 3, 6 of each of the two runs.
    assert_eq!(analysis.height(), 6);
    for d in f64s(&analysis, "max_abs_diff_live") {
        assert!(d <= 1e-5, "offline vs live {d}");
    }
    let live = read(&grid.join("byol-s0/steps.parquet"));
    let offline: Vec<f64> = f64s(&analysis, "pos_cos");
    assert!((offline[0] - f64s(&live, "pos_cos")[0]).abs() <= 1e-5);
    let evals = read(&grid.join("analysis_evals.parquet"));
    assert_eq!(evals.height(), 2);
    for d in f64s(&evals, "max_abs_diff_live") {
        assert!(d <= 1e-5, "re-evaluation vs live {d}");
    }
}

#[test]
fn stop_on_collapse_ends_doomed_runs_early() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = run_smoke(
        out.path(),
        "no-norm",
        &[
            "--set",
            "train.epochs=40",
            "--set",
            "optim.lr=0.8",
            "--set",
            "train.stop_on_collapse=5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = read(&out.path().join("smoke/summary.parquet"));
    let reason = strs(&summary, "stop_reason");
    assert!(
        reason[0].contains("collapsed for 5 consecutive steps"),
        "{reason:?}"
    );
    let steps = read(&out.path().join("smoke/no-norm-s0/steps.parquet"));
    assert!(
        steps.height() < 160,
        "stopped before its 160 steps, ran {}",
        steps.height()
    );
    assert_eq!(strs(&summary, "collapse_verdict")[0], "collapsed");
}

/// `bench --config` takes a run's own config.toml, as its help says (a run config has
/// `[method] name = …`, which once made it look like a grid and be refused).
#[test]
fn bench_takes_a_runs_config_toml() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = run_smoke(out.path(), "byol", &["--set", "train.epochs=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = out.path().join("smoke/byol-s0/config.toml");
    let o = run(&[
        "bench",
        "--config",
        config.to_str().unwrap(),
        "--warmup",
        "0",
        "--steps",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
