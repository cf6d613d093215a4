//! Every table's column list is defined once, in `src/log/`; the Python check that CI runs on
//! the smoke grid with pandas (scripts/check_tables.py) must list exactly the same columns.

use collapse_lab::log::{
    EMBEDDINGS_COLUMNS, EVALS_COLUMNS, SPECTRUM_COLUMNS, STEPS_COLUMNS, SUMMARY_COLUMNS,
};

/// The strings of the Python list assigned to `name` (`NAME = ["a", "b", …]`).
fn python_list(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("\n{name} = ["))
        .unwrap_or_else(|| panic!("{name} not found in scripts/check_tables.py"));
    let body = &source[start..];
    let end = body.find(']').expect("closing bracket");
    body[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn python_check_lists_the_rust_columns() {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/check_tables.py"
    ))
    .expect("scripts/check_tables.py");
    for (name, rust) in [
        ("STEPS", &STEPS_COLUMNS[..]),
        ("SUMMARY", &SUMMARY_COLUMNS[..]),
        ("EVALS", &EVALS_COLUMNS[..]),
        ("SPECTRUM", &SPECTRUM_COLUMNS[..]),
        ("EMBEDDINGS", &EMBEDDINGS_COLUMNS[..]),
    ] {
        assert_eq!(python_list(&source, name), rust, "{name}");
    }
}
