//! `collapse-lab analyze` on damaged logs: exit 2, one line naming the file and the defect,
//! nothing written.

mod common;

use std::path::Path;

use common::*;
use polars::prelude::*;

fn smoke_run(dir: &Path) -> std::path::PathBuf {
    let o = run_smoke(dir, "byol", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("smoke/byol-s0")
}

fn expect_exit_2(run_dir: &Path, must_contain: &[&str]) {
    let o = run(&["analyze", run_dir.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{err}"
    );
    for s in must_contain {
        assert!(err.contains(s), "{s:?} not in {err}");
    }
    assert!(
        !run_dir.join("analysis.parquet").exists(),
        "nothing written"
    );
}

fn rewrite(path: &Path, f: impl FnOnce(DataFrame) -> DataFrame) {
    let mut df = f(read(path));
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
}

#[test]
fn truncated_missing_column_and_wrong_length() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = smoke_run(tmp.path());
    let emb = run_dir.join("embeddings.parquet");
    let original = std::fs::read(&emb).unwrap();

    std::fs::write(&emb, &original[..original.len() / 2]).unwrap();
    expect_exit_2(
        &run_dir,
        &["embeddings.parquet", "not a readable Parquet file"],
    );

    std::fs::write(&emb, &original).unwrap();
    rewrite(&emb, |df| df.drop("vector").unwrap());
    expect_exit_2(&run_dir, &["embeddings.parquet", "missing column `vector`"]);

    std::fs::write(&emb, &original).unwrap();
    rewrite(&emb, |df| {
        // Shorten the vector of record 5.
        let list = df.column("vector").unwrap().list().unwrap().clone();
        let mut b = ListPrimitiveChunkedBuilder::<Float32Type>::new(
            "vector".into(),
            df.height(),
            0,
            DataType::Float32,
        );
        for i in 0..list.len() {
            let s = list.get_as_series(i).unwrap();
            let v: Vec<f32> = s.f32().unwrap().into_no_null_iter().collect();
            b.append_slice(if i == 5 { &v[..v.len() - 1] } else { &v });
        }
        let mut df = df.clone();
        df.with_column(b.finish().into_series().into_column())
            .unwrap();
        df
    });
    expect_exit_2(&run_dir, &["embeddings.parquet", "record 5", "length"]);

    std::fs::remove_file(&emb).unwrap();
    expect_exit_2(&run_dir, &["embeddings.parquet", "missing"]);
}

/// `analyze` computes what the embeddings say and reports, per step, whether the live value
/// agreed, disagreed, was missing or was not finite; NaN is never counted as agreement. It
/// exits non-zero for that only with `--verify`.
#[test]
fn live_comparison_is_reported_and_verified_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = smoke_run(tmp.path());
    let dir = run_dir.to_str().unwrap();
    let comparisons = || strs(&read(&run_dir.join("analysis.parquet")), "live_comparison");
    let analyze = |verify: bool| {
        let mut args = vec!["analyze", dir, "--no-eval"];
        if verify {
            args.push("--verify");
        }
        run(&args)
    };
    let o = analyze(true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(comparisons().iter().all(|c| c == "agrees"));

    let steps = run_dir.join("steps.parquet");
    let original = std::fs::read(&steps).unwrap();
    let shift = |by: f64| {
        move |df: DataFrame| {
            let pos: Vec<f64> = f64s(&df, "pos_cos").iter().map(|p| p + by).collect();
            let mut df = df;
            df.with_column(Column::new("pos_cos".into(), pos)).unwrap();
            df
        }
    };
    for (edit, expected, word) in [
        (shift(0.1), "disagrees", "0 agree, 1 disagree"),
        (shift(f64::NAN), "not_finite", "1 not finite"),
    ] {
        std::fs::write(&steps, &original).unwrap();
        rewrite(&steps, edit);
        let o = analyze(false);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(word), "{}", stderr(&o));
        assert!(
            comparisons().iter().all(|c| c == expected),
            "{:?}",
            comparisons()
        );
        let o = analyze(true);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("--verify"), "{}", stderr(&o));
    }
    // NaN shows as NaN, not as a zero difference.
    let diffs = read(&run_dir.join("analysis.parquet"));
    assert!(f64s(&diffs, "max_abs_diff_live").iter().all(|d| d.is_nan()));

    std::fs::remove_file(&steps).unwrap();
    let o = analyze(false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(comparisons().iter().all(|c| c == "missing"));
    assert_eq!(analyze(true).status.code(), Some(1));
}
