//! `collapse-lab report`: every file, deterministic Markdown and Parquet, failed runs marked,
//! missing tables named.

mod common;

use common::*;

fn smoke(dir: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let mut args = vec![
        "run",
        "experiments/smoke.toml",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("smoke")
}

#[test]
fn run_writes_a_complete_report_and_rerendering_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = smoke(tmp.path(), &[]);
    let report = grid.join("report");
    for f in ["index.md", "index.html", "claims.parquet"] {
        assert!(report.join(f).is_file(), "{f}");
    }
    for chart in [
        "cosine_bars",
        "probe_accuracy",
        "cosine_steps",
        "spread_steps",
        "spectra",
    ] {
        let png = std::fs::read(report.join(format!("{chart}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{chart}.png is a PNG");
        assert!(png.len() > 5_000, "{chart}.png has content");
        let svg = std::fs::read_to_string(report.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("<text"),
            "{chart}.svg has text"
        );
    }
    let claims = read(&report.join("claims.parquet"));
    assert_eq!(
        strs(&claims, "claim_id"),
        ["F1", "F2", "F3", "F4", "F5", "F6", "F7"]
    );
    for v in strs(&claims, "verdict") {
        assert!(
            ["holds", "fails", "inconclusive", "not measured"].contains(&v.as_str()),
            "{v}"
        );
    }
    let md = std::fs::read(report.join("index.md")).unwrap();
    let pq = std::fs::read(report.join("claims.parquet")).unwrap();
    let o = run(&["report", grid.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        md,
        std::fs::read(report.join("index.md")).unwrap(),
        "index.md changed on re-render"
    );
    assert_eq!(
        pq,
        std::fs::read(report.join("claims.parquet")).unwrap(),
        "claims.parquet changed"
    );
    let text = String::from_utf8(md).unwrap();
    assert!(
        text.contains("| byol |") && text.contains("57.7"),
        "study numbers beside ours"
    );
}

/// A grid evaluated at least four times per run gets the history chart (gap, probe and
/// effective rank per epoch with seed bands), listed on its page; one evaluated less does not.
#[test]
fn a_grid_evaluated_often_gets_its_history() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_smoke(
        tmp.path(),
        "byol",
        &[
            "--seeds",
            "0,1",
            "--set",
            "train.epochs=4",
            "--set",
            "log.eval_every_epochs=1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report = tmp.path().join("smoke/report");
    let png = std::fs::read(report.join("history.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let md = std::fs::read_to_string(report.join("index.md")).unwrap();
    assert!(md.contains("(history.png)"), "listed on the page");
    let o = run_smoke(
        &tmp.path().join("few"),
        "byol",
        &[
            "--seeds",
            "0",
            "--set",
            "train.epochs=4",
            "--set",
            "log.eval_every_epochs=2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let few = tmp.path().join("few/smoke/report");
    assert!(
        !few.join("history.png").exists(),
        "three evaluations: no history"
    );
    assert!(!std::fs::read_to_string(few.join("index.md"))
        .unwrap()
        .contains("history"));
}

#[test]
fn diverged_runs_are_marked_and_missing_tables_named() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = smoke(
        tmp.path(),
        &["--only", "byol,no-norm", "--set", "optim.lr=1e30"],
    );
    let md = std::fs::read_to_string(grid.join("report/index.md")).unwrap();
    assert!(md.contains("**diverged**"), "{md}");
    std::fs::remove_file(grid.join("summary.parquet")).unwrap();
    let o = run(&["report", grid.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("summary.parquet") && err.contains("missing"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
