//! No panic or abort is reachable from a config value: `run` with random `--set` values of
//! every run-config field (of the field's TOML type, and some of other types) ends with exit
//! 0 (trained, possibly diverged) or exit 2 with one line naming the field — never 101 (panic),
//! 134 (abort) or a kill for memory.
//!
//! Seeded; `COLLAPSE_LAB_FUZZ_CASES=N` and `COLLAPSE_LAB_FUZZ_SEED=S` try more or other cases.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use collapse_lab::config::RunConfig;
use common::*;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// Integers span the edges (0, 1, negative, the TOML maximum) and sizes that a machine cannot
// hold (2^40), but not sizes that merely take minutes (a 4096-wide network would run, slowly).

/// Fields that are absent from the serialised defaults because they default to none.
const OPTIONAL_FIELDS: [(&str, Kind); 5] = [
    ("train.max_steps", Kind::Int),
    ("train.stop_on_collapse", Kind::Int),
    ("dataset.path", Kind::Str),
    ("dataset.limit_train", Kind::Int),
    ("dataset.limit_eval", Kind::Int),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Str,
    Bool,
    Array,
}

/// Every field of the run config, as `section.field` (nested tables dotted), with its kind.
fn fields() -> Vec<(String, Kind)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, Kind)>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let kind = match v {
                toml::Value::Table(t) => {
                    walk(&path, t, out);
                    continue;
                }
                toml::Value::Integer(_) => Kind::Int,
                toml::Value::Float(_) => Kind::Float,
                toml::Value::String(_) => Kind::Str,
                toml::Value::Boolean(_) => Kind::Bool,
                _ => Kind::Array,
            };
            out.push((path, kind));
        }
    }
    let text = toml::to_string(&RunConfig::default()).expect("defaults serialise");
    let table: toml::Table = toml::from_str(&text).expect("defaults parse");
    let mut out = Vec::new();
    walk("", &table, &mut out);
    out.extend(OPTIONAL_FIELDS.iter().map(|(p, k)| (p.to_string(), *k)));
    out
}

const INTS: [&str; 10] = [
    "0",
    "1",
    "2",
    "3",
    "7",
    "64",
    "1099511627776",
    "9223372036854775807",
    "-1",
    "100",
];
const FLOATS: [&str; 11] = [
    "0.0", "-1.0", "1e-12", "0.5", "1.0", "2.0", "1e12", "nan", "inf", "-inf", "0.999",
];
const STRINGS: [&str; 16] = [
    "\"\"",
    "\"x\"",
    "\"..\"",
    "\"bn\"",
    "\"none\"",
    "\"ln\"",
    "\"gn\"",
    "\"gn_ws\"",
    "\"byol\"",
    "\"moco\"",
    "\"resnet18\"",
    "\"imagenet\"",
    "\"lars\"",
    "\"cosine\"",
    "\"cifar10\"",
    "\"synthetic\"",
];

fn value(kind: Kind, rng: &mut ChaCha8Rng) -> String {
    // One value in eight is of another kind than the field's.
    let kind = if rng.random_bool(0.125) {
        *[Kind::Int, Kind::Float, Kind::Str, Kind::Bool, Kind::Array]
            .choose(rng)
            .expect("non-empty")
    } else {
        kind
    };
    let pick =
        |pool: &[&str], rng: &mut ChaCha8Rng| pool.choose(rng).expect("non-empty").to_string();
    match kind {
        Kind::Int => pick(&INTS, rng),
        Kind::Float => pick(&FLOATS, rng),
        Kind::Str => pick(&STRINGS, rng),
        Kind::Bool => pick(&["true", "false"], rng),
        Kind::Array => {
            let n = rng.random_range(0..5);
            let items: Vec<String> = (0..n).map(|_| pick(&FLOATS, rng)).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

#[test]
fn random_set_values_give_exit_0_or_a_one_line_exit_2() {
    let cases: usize = std::env::var("COLLAPSE_LAB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("COLLAPSE_LAB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2026);
    let fields = fields();
    assert!(fields.len() > 50, "{} fields", fields.len());
    let variants = [
        "byol",
        "no-norm",
        "layer-norm",
        "simsiam",
        "simclr",
        "moco",
        "contrastive",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ok, mut refused) = (0, 0);
    for case in 0..cases {
        let out = dir.path().join(format!("case{case}"));
        let mut sets = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let (field, kind) = fields.choose(&mut rng).expect("fields");
            sets.push(format!("{field}={}", value(*kind, &mut rng)));
        }
        // Keep each case seconds long: a few steps (or one epoch when the step limit itself is
        // being tried).
        if sets.iter().any(|s| s.starts_with("train.max_steps=")) {
            sets.push("train.epochs=1".into());
        } else {
            sets.push("train.max_steps=3".into());
        }
        let variant = *variants.choose(&mut rng).expect("variants");
        let mut args = vec![
            "run".to_string(),
            "experiments/smoke.toml".into(),
            "--quiet".into(),
            "--jobs".into(),
            "1".into(),
            "--only".into(),
            variant.into(),
            "--out".into(),
            out.display().to_string(),
        ];
        for s in &sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let deadline = Instant::now() + Duration::from_secs(180);
        while child.try_wait().expect("poll").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("case {case} ran over 3 minutes: {sets:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&o.stderr);
        match o.status.code() {
            Some(0) => ok += 1,
            Some(2) => {
                refused += 1;
                let lines: Vec<&str> = err.trim().lines().collect();
                assert!(
                    lines.len() == 1 && lines[0].starts_with("error: "),
                    "case {case} {variant} {sets:?}: exit 2 without one error line:\n{err}"
                );
            }
            code => panic!("case {case} {variant} {sets:?}: exit {code:?}\n{err}"),
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    eprintln!("{cases} cases (seed {seed}): {ok} ran, {refused} refused with exit 2");
    assert!(
        ok > 0 && refused > 0,
        "both outcomes should occur: {ok} ran, {refused} refused"
    );
}
