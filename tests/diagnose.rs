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
