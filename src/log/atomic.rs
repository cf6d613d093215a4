//! Writes that never leave a half-written file: write a temporary sibling, sync, rename.
//! And never through a symbolic link: a link where collapse-lab writes, renames or deletes
//! (a planted `report`, `.staging` or output file) is refused with exit 2 naming it, since
//! following it would write or delete outside the folder the user gave.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::InputError;

/// Refuses `path` if it is a symbolic link (a missing path is fine).
pub fn refuse_symlink(path: &Path) -> Result<(), InputError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(InputError::new(
            path.display().to_string(),
            "is a symbolic link: collapse-lab writes and deletes only what it created, never through a link (remove the link)",
        )),
        _ => Ok(()),
    }
}

/// Refuses `path` or its parent folder if either is a symbolic link.
fn refuse_symlink_at(path: &Path) -> Result<(), InputError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        refuse_symlink(dir)?;
    }
    refuse_symlink(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Calls `write` on a temporary file next to `path`, then renames it over `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    refuse_symlink_at(path)?;
    let tmp = temp_path(path);
    // A leftover (or planted) file at the temporary name goes first — a link is removed
    // itself, never its target — and the new one is created exclusively (O_EXCL, which no
    // link can satisfy).
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Writes a text file atomically.
pub fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    write_atomic(path, |f| Ok(f.write_all(text.as_bytes())?))
}

/// Removes a folder and everything in it; one that does not exist is fine. A link in its
/// place (or in its parent's) is refused.
pub fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    refuse_symlink_at(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}
