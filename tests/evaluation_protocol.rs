//! The evaluation protocol on data stored as users have it: an image folder, class by class.
//! First-half/second-half evaluation scored 0 % on every such folder; these tests would have
//! caught it.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use collapse_lab::config::{DatasetConfig, RunConfig};
use collapse_lab::data::{open_dataset, Augmenter, Dataset, Subset};
use collapse_lab::eval::{evaluate, EvalSetup, EvalSplit};
use common::*;
use image::{Rgb, RgbImage};

const CLASSES: u8 = 4;

/// `root/{train,test}/c<k>/<i>.png`: class k is a flat colour of its own (trivially
/// separable) with a little per-image texture, so every image is distinct.
fn separable_folder(root: &Path, per_class: u8) {
    let colours = [
        [220u8, 40, 40],
        [40, 200, 60],
        [40, 60, 220],
        [230, 220, 50],
    ];
    for (split, offset) in [("train", 0u8), ("test", 100)] {
        for k in 0..CLASSES {
            let dir = root.join(split).join(format!("c{k}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..per_class {
                let base = colours[k as usize];
                let img = RgbImage::from_fn(16, 16, |x, y| {
                    let t = ((x * 3 + y * 5 + u32::from(i + offset) * 7) % 23) as u8;
                    Rgb(base.map(|c| c.saturating_add(t)))
                });
                img.save(dir.join(format!("{i:03}.png"))).expect("encode");
            }
        }
    }
}

fn config(root: &Path) -> RunConfig {
    let mut cfg = RunConfig {
        dataset: DatasetConfig {
            name: "folder".into(),
            path: Some(root.display().to_string()),
            image_size: 16,
            ..DatasetConfig::default()
        },
        ..RunConfig::default()
    };
    cfg.model.width = 8;
    cfg.model.depth = 2;
    cfg.model.projector.hidden = 32;
    cfg.model.projector.out = 16;
    cfg.model.predictor.hidden = 32;
    cfg.model.predictor.out = 16;
    cfg.train.batch_size = 16;
    cfg
}

/// Evaluates the untrained network of `cfg` on `eval`: (kNN accuracy, probe accuracy).
fn accuracies(cfg: &RunConfig, eval: &dyn Dataset) -> (f64, f64) {
    let dev = Device::Cpu;
    let method = collapse_lab::method::build(cfg, eval.channels(), &dev).expect("network");
    let aug = Augmenter::new(&cfg.augment, cfg.dataset.image_size, eval.channels()).expect("aug");
    let split = EvalSplit::for_run(cfg, eval);
    let setup = EvalSetup::for_run(cfg, eval, &aug, &split, &dev);
    let r = evaluate(method.online(), &setup, 0, 0).expect("evaluates");
    // Every image is scored once, each fold's probe fitted on the others.
    assert_eq!(
        (r.fit_size, r.score_size, r.folds),
        (
            split.fit_size() as u64,
            split.images.len() as u64,
            split.folds as u32
        )
    );
    (r.knn_acc.expect("labelled"), r.probe_acc.expect("labelled"))
}

#[test]
fn a_class_sorted_folder_is_scored_on_every_class_whatever_its_storage_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    separable_folder(dir.path(), 12);
    let cfg = config(dir.path());
    let pair = open_dataset(&cfg.dataset).expect("opens");
    let eval = pair.eval.clone();
    assert_eq!(eval.len(), 48);
    let (knn, probe) = accuracies(&cfg, eval.as_ref());
    assert!(knn >= 0.95 && probe >= 0.95, "kNN {knn}, probe {probe}");

    // The same images stored in other orders: reversed, and interleaved.
    for perm in [
        (0..48).rev().collect::<Vec<usize>>(),
        (0..48).map(|j| (j * 11) % 48).collect(),
    ] {
        let permuted = Subset::new(eval.clone() as Arc<dyn Dataset>, perm);
        assert_eq!(
            accuracies(&cfg, &permuted),
            (knn, probe),
            "permuting the storage order changed the accuracies"
        );
    }
}

/// On a split where the untrained network is far from perfect, permuting the storage order
/// still gives exactly the same accuracies (a perfect score would hide a difference).
#[test]
fn permuting_a_hard_split_changes_no_accuracy() {
    let mut cfg = config(Path::new("unused"));
    cfg.dataset = DatasetConfig {
        image_size: 16,
        eval_size: 120,
        train_size: 32,
        ..DatasetConfig::default()
    };
    let pair = open_dataset(&cfg.dataset).expect("synthetic");
    let (knn, probe) = accuracies(&cfg, pair.eval.as_ref());
    assert!(
        (0.05..0.95).contains(&knn) && (0.05..0.95).contains(&probe),
        "kNN {knn}, probe {probe}: not a hard split"
    );
    let perm: Vec<usize> = (0..120).map(|j| (j * 77 + 5) % 120).collect();
    let permuted = Subset::new(pair.eval.clone(), perm);
    assert_eq!(accuracies(&cfg, &permuted), (knn, probe));
}

/// End to end through `collapse-lab run`: the untrained baseline and a trained run on the
/// class-sorted folder report sane accuracies, and `evals.parquet` records the folds.
#[test]
fn a_grid_on_a_class_sorted_folder_reports_sane_accuracies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("images");
    separable_folder(&data, 8);
    let grid = dir.path().join("folder.toml");
    std::fs::write(
        &grid,
        format!(
            r#"name = "folder"
seeds = [0]
[base]
model.width = 8
model.depth = 2
model.projector = {{ hidden = 32, out = 16, norm = "bn" }}
model.predictor = {{ hidden = 32, out = 16, norm = "bn" }}
optim.lr = 0.1
train.batch_size = 16
train.epochs = 1
dataset.name = "folder"
dataset.path = "{}"
dataset.image_size = 16
dataset.limit_eval = 24
[[variant]]
name = "byol"
"#,
            data.display()
        ),
    )
    .expect("write grid");
    let out = dir.path().join("out");
    let o = run(&[
        "run",
        grid.to_str().expect("utf8"),
        "--quiet",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = read(&out.join("folder/summary.parquet"));
    assert_eq!(strs(&summary, "run_id"), ["byol-s0", "random-s0"]);
    let probe = f64s(&summary, "final_probe_acc");
    let knn = f64s(&summary, "final_knn_acc");
    assert!(
        probe[1] >= 0.95 && knn[1] >= 0.95,
        "random: {probe:?} {knn:?}"
    );
    assert!(probe[0] > 0.5 && knn[0] > 0.5, "byol: {probe:?} {knn:?}");
    assert!(strs(&summary, "cpu")[0].contains('('), "cpu model (isa)");

    let evals = read(&out.join("folder/byol-s0/evals.parquet"));
    let col = |name: &str| -> Vec<u64> {
        evals
            .column(name)
            .unwrap_or_else(|_| panic!("column {name}"))
            .u64()
            .expect("u64")
            .into_no_null_iter()
            .collect()
    };
    // limit_eval = 24 in 5 folds of 4–5: every image scored once, a probe fitted on ≤ 20.
    assert!(col("fit_size").iter().all(|&n| n == 20));
    assert!(col("score_size").iter().all(|&n| n == 24));
    assert!(col("split_seed").iter().all(|&s| s == 0));
}
