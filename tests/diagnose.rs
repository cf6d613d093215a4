//! `collapse-lab diagnose` end to end: NumPy files as NumPy writes them, verdicts, the table,
//! `--json`, `--fail-on`, and bad input as one line naming the file.

mod common;

use std::path::Path;

use common::*;

/// A version-1 `.npy` of little-endian float32 in C order, as `np.save` writes it.
fn save(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn spread(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|k| ((k as f64 * 0.618_033_988).fract() - 0.5) as f32)
        .collect()
}

#[test]
fn verdicts_table_json_and_fail_on() {
    let d = tempfile::tempdir().unwrap();
    let (n, dim) = (128, 16);
    let healthy = d.path().join("healthy.npy");
    save(&healthy, &[n, dim], &spread(n, dim));
    let collapsed = d.path().join("collapsed.npy");
    save(&collapsed, &[n, dim], &vec![0.5f32; n * dim]);
    let out = d.path().join("out");
    let o = run(&[
        "diagnose",
        healthy.to_str().unwrap(),
        collapsed.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("healthy.npy z: healthy"), "{text}");
    assert!(text.contains("collapsed.npy z: collapsed"), "{text}");
    let t = read(&out.join("diagnostics.parquet"));
    assert_eq!(t.height(), 2);
    assert_eq!(strs(&t, "verdict"), ["healthy", "collapsed"]);
    assert_eq!(
        f64s(&t, "rankme_eps"),
        [1e-7, 1e-7],
        "constants beside the metrics"
    );

    let o = run(&[
        "diagnose",
        healthy.to_str().unwrap(),
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let json = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        json.trim_start().starts_with('[') && json.contains("\"verdict\":\"healthy\""),
        "{json}"
    );

    // --fail-on: exit 1 naming the collapsed set; a healthy one passes.
    let o = run(&[
        "diagnose",
        collapsed.to_str().unwrap(),
        "--fail-on",
        "collapsed",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("collapsed.npy"), "{}", stderr(&o));
    let o = run(&[
        "diagnose",
        healthy.to_str().unwrap(),
        "--fail-on",
        "partial",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn unusable_input_is_one_line_naming_the_file_and_what_was_expected() {
    let d = tempfile::tempdir().unwrap();
    let cube = d.path().join("cube.npy");
    save(&cube, &[3, 4, 5], &vec![0.0; 60]);
    let o = run(&[
        "diagnose",
        cube.to_str().unwrap(),
        "--out",
        d.path().join("o").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cube.npy") && err.contains("(2, N, d)"),
        "{err}"
    );
    let txt = d.path().join("notes.txt");
    std::fs::write(&txt, "x").unwrap();
    let o = run(&["diagnose", txt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(".npy or .safetensors"),
        "{}",
        stderr(&o)
    );
}

/// A version-1 `.npy` of little-endian int64, as `np.save(labels.astype(np.int64))` writes it.
fn save_labels(path: &Path, labels: &[i64]) {
    let mut header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        labels.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in labels {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn labels_show_the_one_class_that_collapsed_and_the_wrong_count_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (n, dim) = (96, 8);
    // Class 1 (every third row) is one repeated direction; classes 0 and 2 spread.
    let mut values = spread(n, dim);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    for (i, row) in values.chunks_exact_mut(dim).enumerate() {
        if labels[i] == 1 {
            row.iter_mut().for_each(|v| *v = 0.25);
        }
    }
    let z = d.path().join("z.npy");
    save(&z, &[n, dim], &values);
    let lab = d.path().join("labels.npy");
    save_labels(&lab, &labels);
    let out = d.path().join("out");
    let o = run(&[
        "diagnose",
        z.to_str().unwrap(),
        "--labels",
        lab.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = read(&out.join("diagnostics.parquet"));
    let sets = strs(&t, "set");
    let verdicts = strs(&t, "verdict");
    let verdict_of = |name: &str| {
        let i = sets
            .iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("{name} in {sets:?}"));
        verdicts[i].clone()
    };
    assert_eq!(verdict_of("z|class=1"), "collapsed");
    assert_ne!(verdict_of("z|class=0"), "collapsed");
    assert_ne!(verdict_of("z"), "collapsed", "the whole set hides it");
    let ranks = f64s(&t, "effective_rank");
    let rank_of = |name: &str| ranks[sets.iter().position(|s| s == name).unwrap()];
    assert!(rank_of("z|class=1") < 1.01 && rank_of("z|class=2") > 3.0);

    // Labels of the wrong length: exit 2 naming both files.
    save_labels(&lab, &labels[..n - 1]);
    let o = run(&[
        "diagnose",
        z.to_str().unwrap(),
        "--labels",
        lab.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("z.npy") && err.contains("labels.npy") && err.contains("95"),
        "{err}"
    );
}

#[test]
fn compare_gives_linear_cka_one_for_a_rotation_and_refuses_other_images() {
    let d = tempfile::tempdir().unwrap();
    let (n, dim) = (200, 6);
    let x = spread(n, dim);
    // XQ with Q a signed permutation (orthogonal): column j of XQ is ±column (j + 2) mod d.
    let mut xq = vec![0f32; n * dim];
    for i in 0..n {
        for j in 0..dim {
            let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
            xq[i * dim + j] = sign * x[i * dim + (j + 2) % dim];
        }
    }
    let (a, b) = (d.path().join("a.npy"), d.path().join("b.npy"));
    save(&a, &[n, dim], &x);
    save(&b, &[n, dim], &xq);
    let out = d.path().join("out");
    let o = run(&[
        "diagnose",
        "--compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = read(&out.join("cka.parquet"));
    let cka = f64s(&t, "cka")[0];
    assert!((cka - 1.0).abs() < 1e-9, "{cka}");
    save(&b, &[n - 1, dim], &xq[..(n - 1) * dim]);
    let o = run(&[
        "diagnose",
        "--compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("same images"), "{}", stderr(&o));
}
