//! Locating and reading the files of an on-disk data set, with errors that name the file.
//!
//! Every defect of a data file is the user's to fix, so it is an [`InputError`] whose source is
//! the file's path: the CLI prints that one line and exits with code 2.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::config::InputError;

/// An [`InputError`] whose source is `path`.
pub(crate) fn file_error(path: &Path, message: impl Into<String>) -> InputError {
    InputError::new(path.display().to_string(), message)
}

/// The error for a split file that is not there, naming the command that would provide it.
pub(crate) fn missing_file(path: &Path, dataset: &str) -> InputError {
    file_error(
        path,
        format!(
            "missing {dataset} file (expected exactly this name; `collapse-lab data fetch {dataset}` would provide it)"
        ),
    )
}

/// The first of `names` that exists in `dir` (or in one of `subdirs` of it, as the official
/// archives unpack); the error names the first candidate in `dir`.
pub(crate) fn find_file(
    dir: &Path,
    subdirs: &[&str],
    names: &[&str],
    dataset: &str,
) -> Result<PathBuf, InputError> {
    let dirs = std::iter::once(dir.to_path_buf()).chain(subdirs.iter().map(|s| dir.join(s)));
    for d in dirs {
        for name in names {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(missing_file(&dir.join(names[0]), dataset))
}

/// Opens `path` for reading and returns it with its size in bytes (checked before anything is
/// read, so no header can make us allocate more than the file holds).
pub(crate) fn open_sized(path: &Path, dataset: &str) -> Result<(File, u64), InputError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => missing_file(path, dataset),
        _ => file_error(path, format!("cannot open: {e}")),
    })?;
    let len = file
        .metadata()
        .map_err(|e| file_error(path, format!("cannot read file size: {e}")))?
        .len();
    Ok((file, len))
}

/// Reads exactly `len` bytes of `reader` (a file whose size was checked to hold them).
pub(crate) fn read_exact_vec(
    reader: &mut impl Read,
    len: usize,
    path: &Path,
) -> Result<Vec<u8>, InputError> {
    let mut buf = vec![0u8; len];
    reader
        .read_exact(&mut buf)
        .map_err(|e| file_error(path, format!("cannot read {len} bytes: {e}")))?;
    Ok(buf)
}

/// How many of `available` items a split uses under an optional `limit` (None: all).
pub(crate) fn limited(available: usize, limit: Option<usize>) -> usize {
    limit.map_or(available, |l| l.min(available))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_file_and_the_fetch_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = find_file(dir.path(), &["sub"], &["a.bin", "b.bin"], "cifar10")
            .expect_err("nothing there");
        let text = err.to_string();
        assert!(text.contains("a.bin"), "{text}");
        assert!(text.contains("collapse-lab data fetch cifar10"), "{text}");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub").join("b.bin"), b"x").expect("write");
        let found = find_file(dir.path(), &["sub"], &["a.bin", "b.bin"], "cifar10").expect("found");
        assert!(found.ends_with("sub/b.bin"));
        let err = open_sized(&dir.path().join("nope"), "stl10").expect_err("missing");
        assert!(err.to_string().contains("collapse-lab data fetch stl10"));
    }

    #[test]
    fn limits_cap_but_never_extend() {
        assert_eq!(limited(10, None), 10);
        assert_eq!(limited(10, Some(3)), 3);
        assert_eq!(limited(10, Some(30)), 10);
    }
}
