//! Helpers shared by the integration tests: run the binary, read Parquet.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_collapse-lab"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn read(path: &Path) -> DataFrame {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(file).finish().expect("readable parquet")
}

pub fn f64s(df: &DataFrame, col: &str) -> Vec<f64> {
    df.column(col)
        .unwrap_or_else(|_| panic!("column {col}"))
        .f64()
        .expect("f64 column")
        .into_no_null_iter()
        .collect()
}

pub fn strs(df: &DataFrame, col: &str) -> Vec<String> {
    let ca = df
        .column(col)
        .unwrap_or_else(|_| panic!("column {col}"))
        .str()
        .expect("str column")
        .clone();
    (0..ca.len())
        .map(|i| ca.get(i).unwrap_or("").to_string())
        .collect()
}

/// `collapse-lab run experiments/smoke.toml --quiet --only VARIANTS --out OUT` plus `extra`
/// flags (e.g. `["--set", "train.epochs=1"]`).
pub fn run_smoke(out: &Path, only: &str, extra: &[&str]) -> Output {
    let out = out.to_str().expect("utf-8 path");
    let mut args = vec![
        "run",
        "experiments/smoke.toml",
        "--quiet",
        "--only",
        only,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Columns that measure time, not numbers: left out when two runs are compared.
pub const TIMING: [&str; 4] = ["wall_seconds", "images_per_second", "step_ms", "metrics_ms"];

pub fn without_timing(df: DataFrame) -> DataFrame {
    let keep: Vec<PlSmallStr> = df
        .get_column_names()
        .into_iter()
        .filter(|c| !TIMING.contains(&c.as_str()))
        .cloned()
        .collect();
    df.select(keep).expect("columns")
}

/// The two grid folders' `summary.parquet` are equal, timing columns aside.
pub fn assert_same_summary(a: &Path, b: &Path) {
    let (x, y) = (
        without_timing(read(&a.join("summary.parquet"))),
        without_timing(read(&b.join("summary.parquet"))),
    );
    assert!(x.equals_missing(&y), "summaries differ:\n{x}\n{y}");
}
