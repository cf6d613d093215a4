//! `experiments/paper-stl10.toml` runs when STL-10 is present: smoke-tested on a generated
//! fixture in the real STL-10 binary format (tiny sizes, two steps).

mod common;

use common::*;

/// Writes `n` images (3×96×96, column-major per channel) and labels 1..10.
fn write_split(dir: &std::path::Path, x: &str, y: Option<&str>, n: usize, seed: u8) {
    let mut images = Vec::with_capacity(n * 27_648);
    for i in 0..n {
        for k in 0..3 {
            for c in 0..96 {
                for r in 0..96 {
                    images.push(((i * 31 + k * 17 + r * 3 + c * 5) as u8).wrapping_add(seed));
                }
            }
        }
    }
    std::fs::write(dir.join(x), images).expect("write images");
    if let Some(y) = y {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8 + 1).collect();
        std::fs::write(dir.join(y), labels).expect("write labels");
    }
}

#[test]
fn paper_grid_trains_on_an_stl10_fixture() {
    let data = tempfile::tempdir().unwrap();
    write_split(data.path(), "train_X.bin", Some("train_y.bin"), 20, 0);
    write_split(data.path(), "test_X.bin", Some("test_y.bin"), 20, 7);
    write_split(data.path(), "unlabeled_X.bin", None, 12, 3);
    let out = tempfile::tempdir().unwrap();
    let path = format!("dataset.path={}", data.path().display());
    let o = run(&[
        "run",
        "experiments/paper-stl10.toml",
        "--quiet",
        "--only",
        "byol,contrastive",
        "--seeds",
        "0",
        "--set",
        &path,
        "--set",
        "train.max_steps=2",
        "--set",
        "train.batch_size=8",
        "--set",
        "model.width=8",
        "--set",
        "dataset.image_size=32",
        "--set",
        "method.queue_size=64",
        "--set",
        "log.eval_images=16",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let grid = out.path().join("paper-stl10");
    let summary = read(&grid.join("summary.parquet"));
    assert_eq!(
        strs(&summary, "status"),
        ["ok", "ok", "ok"],
        "{:?}",
        strs(&summary, "error")
    );
    assert_eq!(
        strs(&summary, "encoder"),
        ["resnet18", "resnet18", "resnet18"]
    );
    let steps = read(&grid.join("byol-s0/steps.parquet"));
    assert_eq!(steps.height(), 2);
}
