//! Fashion-MNIST from Debian's `dataset-fashion-mnist` package: the loader sees the whole set,
//! limits keep every class, and a short BYOL grid trains on it end to end. Ignored by a plain
//! `cargo test` (a fresh machine lacks the package); `.ci/run` installs it and runs them with
//! `--ignored`, where a missing package fails.

mod common;

use std::path::Path;

use collapse_lab::config::DatasetConfig;
use collapse_lab::data::open::FASHION_MNIST_DEFAULT_PATH;
use collapse_lab::data::{open_dataset, Dataset};
use common::*;

fn require_installed() {
    assert!(
        Path::new(FASHION_MNIST_DEFAULT_PATH).is_dir(),
        "{FASHION_MNIST_DEFAULT_PATH} does not exist: apt-get install dataset-fashion-mnist"
    );
}

fn per_class(d: &dyn Dataset) -> Vec<usize> {
    let mut counts = vec![0; 10];
    for i in 0..d.len() {
        let label = d.label(i).expect("labelled") as usize;
        counts[label] += 1;
    }
    counts
}

#[test]
#[ignore = "needs Debian's dataset-fashion-mnist (.ci/run installs it and runs these)"]
fn loads_the_whole_set() {
    require_installed();
    let mut cfg = DatasetConfig {
        name: "fashion-mnist".into(),
        ..DatasetConfig::default()
    };
    let pair = open_dataset(&cfg).expect("the Debian files load");
    assert_eq!((pair.train.len(), pair.eval.len()), (60_000, 10_000));
    let t = &pair.train;
    assert_eq!((t.channels(), t.height(), t.width()), (1, 28, 28));
    assert_eq!(per_class(pair.train.as_ref()), vec![6_000; 10]);
    assert_eq!(per_class(pair.eval.as_ref()), vec![1_000; 10]);
    // Limits are class-stratified samples: every class keeps its share.
    cfg.limit_train = Some(1_000);
    cfg.limit_eval = Some(500);
    let pair = open_dataset(&cfg).expect("the Debian files load");
    assert_eq!(per_class(pair.train.as_ref()), vec![100; 10]);
    assert_eq!(per_class(pair.eval.as_ref()), vec![50; 10]);
}

const GRID: &str = r#"
name = "fashion"
seeds = [0]

[base]
method.name = "byol"
model.encoder = "convnet"
model.width = 8
model.depth = 2
model.projector = { hidden = 32, out = 16, norm = "bn" }
model.predictor = { hidden = 32, out = 16, norm = "bn" }
optim.lr = 0.1
train.batch_size = 32
train.epochs = 1
train.max_steps = 20
dataset.name = "fashion-mnist"
dataset.image_size = 16
log.eval_images = 256

[[variant]]
name = "byol"
"#;

#[test]
#[ignore = "needs Debian's dataset-fashion-mnist (.ci/run installs it and runs these)"]
fn short_byol_grid_trains_on_it() {
    require_installed();
    let dir = tempfile::tempdir().expect("tempdir");
    let grid = dir.path().join("fashion.toml");
    std::fs::write(&grid, GRID).expect("write grid");
    let out = dir.path().join("out");
    let o = run(&[
        "run",
        grid.to_str().expect("utf-8 path"),
        "--quiet",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = read(&out.join("fashion/summary.parquet"));
    assert_eq!(
        strs(&summary, "status"),
        ["ok", "ok"],
        "{:?}",
        strs(&summary, "error")
    );
    let run_dir = out.join("fashion/byol-s0");
    let steps = read(&run_dir.join("steps.parquet"));
    assert_eq!(steps.height(), 20);
    let evals = read(&run_dir.join("evals.parquet"));
    assert!(evals.height() >= 2, "epoch 0 and the end are evaluated");
    assert!(f64s(&evals, "knn_acc")
        .iter()
        .all(|a| (0.0..=1.0).contains(a)));
}
