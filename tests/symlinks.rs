//! Never through a symbolic link: links planted where collapse-lab writes or deletes are
//! refused (exit 2, naming them) and the files they point to survive unchanged.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use collapse_lab::runner::grid_folder::GRID_HEADER;
use common::*;

fn victim(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("byol-s0")).unwrap();
    let f = dir.join("byol-s0/x");
    std::fs::write(&f, "the user's file").unwrap();
    std::fs::write(dir.join("index.md"), "the user's page").unwrap();
    f
}

fn unchanged(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("byol-s0/x")).unwrap(),
        "the user's file"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("index.md")).unwrap(),
        "the user's page"
    );
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "nothing added: {names:?}");
}

#[test]
fn a_linked_staging_or_report_folder_is_refused_and_its_target_kept() {
    for planted in [
        ".staging",
        "report",
        "byol-s0",
        ".staging/byol-s0/checkpoint",
    ] {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("victim");
        victim(&v);
        let grid = d.path().join("out/smoke");
        std::fs::create_dir_all(&grid).unwrap();
        // A grid folder of ours (its marker), with one link planted in it.
        std::fs::write(grid.join("grid.toml"), format!("{GRID_HEADER}\n")).unwrap();
        std::fs::create_dir_all(grid.join(planted).parent().unwrap()).unwrap();
        symlink(&v, grid.join(planted)).unwrap();
        let o = run_smoke(&d.path().join("out"), "byol", &["--set", "train.epochs=1"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{planted}: {err}");
        assert!(
            err.contains(planted) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        unchanged(&v);
    }
}

/// A folder that merely shares the grid's name is not ours: `run` refuses it (exit 2, one
/// line) before writing, locking or cleaning anything in it.
#[test]
fn a_folder_that_is_not_a_grid_folder_is_refused_and_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let theirs = d.path().join("out/smoke");
    std::fs::create_dir_all(theirs.join("sub")).unwrap();
    std::fs::write(theirs.join("sub/.notes.tmp-42"), "keep").unwrap();
    std::fs::write(theirs.join(".x.tmp-7"), "keep").unwrap();
    let o = run_smoke(&d.path().join("out"), "byol", &["--set", "train.epochs=1"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not a collapse-lab grid folder"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(theirs.join("sub/.notes.tmp-42")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join(".x.tmp-7")).unwrap(),
        "keep"
    );
    let names: Vec<_> = std::fs::read_dir(&theirs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "nothing added: {names:?}");
}

#[test]
fn temporary_file_cleanup_does_not_descend_into_a_linked_folder() {
    let d = tempfile::tempdir().unwrap();
    let v = d.path().join("victim");
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join(".notes.tmp-42"), "keep").unwrap();
    let out = d.path().join("out");
    let o = run_smoke(&out, "byol", &["--set", "train.epochs=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A link inside a run folder, to a folder holding what looks like our temporary file.
    symlink(&v, out.join("smoke/byol-s0/linked")).unwrap();
    let o = run_smoke(&out, "byol", &["--set", "train.epochs=1", "--fresh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(v.join(".notes.tmp-42")).unwrap(),
        "keep"
    );
}

#[test]
fn data_fetch_refuses_a_linked_part_file() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("victim");
    std::fs::write(&target, "the user's file").unwrap();
    let dir = d.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        symlink(&target, dir.join(format!("{f}.part"))).unwrap();
    }
    let o = run(&[
        "data",
        "fetch",
        "mnist",
        "--dir",
        dir.to_str().unwrap(),
        "--base-url",
        "http://127.0.0.1:9/",
        "--quiet",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(".part") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "the user's file");
}

#[test]
fn data_inspect_refuses_a_linked_contact_sheet() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("victim.png");
    std::fs::write(&target, "the user's file").unwrap();
    let out = d.path().join("sheet");
    std::fs::create_dir_all(&out).unwrap();
    symlink(&target, out.join("contact_sheet.png")).unwrap();
    // Any data set will do: a tiny image folder.
    let data = d.path().join("imgs/a");
    std::fs::create_dir_all(&data).unwrap();
    image::RgbImage::new(4, 4).save(data.join("0.png")).unwrap();
    let o = run(&[
        "data",
        "inspect",
        d.path().join("imgs").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("contact_sheet.png"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "the user's file");
}
