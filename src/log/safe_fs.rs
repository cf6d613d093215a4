//! The one place collapse-lab writes, renames and deletes files. Its rule: only paths the tool
//! created, below the folder it was given, and never through a symbolic link — a link where
//! collapse-lab would write, rename or delete (a planted `report`, `.staging`, `.part`,
//! checkpoint or output file) is refused with exit 2 naming it, since following it would
//! write or delete outside the folder the user gave. Files are written under a temporary
//! name, synced and renamed, so none is ever seen half-written.

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
pub fn refuse_symlink_at(path: &Path) -> Result<(), InputError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        refuse_symlink(dir)?;
    }
    refuse_symlink(path)
}

/// The temporary sibling a write of `path` goes to before its rename: `.<name>.tmp-<pid>`
/// (what a grid's lock holder clears after a killed writer, see [`remove_temp_files_below`]).
pub fn temp_path(path: &Path) -> PathBuf {
    temp_path_with_suffix(path, "")
}

/// [`temp_path`] with `suffix` appended (a drawing library that picks the format from the
/// extension needs `….png`).
pub fn temp_path_with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}{suffix}", std::process::id()))
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Creates folder `dir` (and missing parents) below a folder the user gave; refuses it if it
/// or its parent is a link.
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    refuse_symlink_at(dir)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(refuse_symlink_at(dir)?)
}

/// Creates the folder the user named (`--out`, `--dir`): that one may be a link of theirs.
pub fn create_given_dir(dir: &Path) -> Result<(), InputError> {
    fs::create_dir_all(dir)
        .map_err(|e| InputError::new(dir.display().to_string(), format!("cannot create: {e}")))
}

/// Creates `given/name`: `given` is the user's folder (it may be a link of theirs), `name`
/// collapse-lab's own (a link there is refused).
pub fn create_dir_in_given(given: &Path, name: &str) -> anyhow::Result<PathBuf> {
    create_given_dir(given)?;
    let dir = given.join(name);
    refuse_symlink(&dir)?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    refuse_symlink(&dir)?;
    Ok(dir)
}

/// Creates a new file at `path` for writing; fails if anything (a file or a link) is already
/// there (`O_EXCL`, which no link satisfies).
pub fn create_new(path: &Path) -> anyhow::Result<File> {
    refuse_symlink_at(path)?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Opens an existing file at `path` to append to it, never through a link (`O_NOFOLLOW`).
pub fn open_append(path: &Path) -> anyhow::Result<File> {
    refuse_symlink_at(path)?;
    let mut options = OpenOptions::new();
    options.append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options
        .open(path)
        .with_context(|| format!("opening {} to append", path.display()))
}

/// Calls `write` on a temporary file next to `path`, syncs it, then renames it over `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    refuse_symlink_at(path)?;
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        create_dir(dir)?;
    }
    let tmp = temp_path(path);
    // A leftover (or planted) file at the temporary name goes first — a link is removed
    // itself, never its target — and the new one is created exclusively.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = create_new(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        rename(&tmp, path)
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

/// Writes a file that a library writes by path (safetensors, a PNG): `write` gets the
/// temporary path, then the file is renamed over `path`. A leftover at the temporary name is
/// removed first (a link itself, never its target).
pub fn write_via_temp(
    path: &Path,
    suffix: &str,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    refuse_symlink_at(path)?;
    let tmp = temp_path_with_suffix(path, suffix);
    let _ = fs::remove_file(&tmp);
    let result = write(&tmp).and_then(|()| rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Renames `from` to `to`, neither of them (nor their folders) a link.
pub fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    refuse_symlink_at(from)?;
    refuse_symlink_at(to)?;
    fs::rename(from, to).with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

/// Removes file `path`; one that does not exist is fine. A link there is removed itself (its
/// target is untouched); a link in place of its folder is refused.
pub fn remove_file_if_present(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        refuse_symlink(dir)?;
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Removes a folder and everything in it; one that does not exist is fine. A link in its
/// place (or in its parent's) is refused; `remove_dir_all` itself never follows links inside.
pub fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    refuse_symlink_at(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Removes the temporary files a killed writer left (`.<name>.tmp-<pid>`) in `dir` and up to
/// `levels` folders below it. Only plain files are removed, and a linked folder is never
/// entered. Best effort: what cannot be removed stays.
pub fn remove_temp_files_below(dir: &Path, levels: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // The entry's own type (a link is not followed).
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let p = entry.path();
        if kind.is_dir() {
            if levels > 0 {
                remove_temp_files_below(&p, levels - 1);
            }
        } else if kind.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Bytes free to an unprivileged writer on the file system holding `dir`, when it can be asked.
pub fn available_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn nothing_is_written_renamed_or_removed_through_a_link() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let victim_dir = root.path().join("victim");
        fs::create_dir(&victim_dir)?;
        let victim = victim_dir.join("f");
        fs::write(&victim, "keep")?;
        let out = root.path().join("out");
        fs::create_dir(&out)?;
        let link = out.join("file");
        std::os::unix::fs::symlink(&victim, &link)?;
        let dir_link = out.join("dir");
        std::os::unix::fs::symlink(&victim_dir, &dir_link)?;

        assert!(write_text(&link, "x").is_err());
        assert!(write_text(&dir_link.join("f"), "x").is_err());
        assert!(open_append(&link).is_err());
        assert!(create_new(&link).is_err());
        assert!(rename(&out.join("missing"), &dir_link.join("g")).is_err());
        assert!(remove_dir_if_present(&dir_link).is_err());
        assert!(remove_file_if_present(&dir_link.join("f")).is_err());
        assert!(create_dir(&dir_link.join("sub")).is_err());
        fs::write(victim_dir.join(".x.tmp-1"), "keep")?;
        remove_temp_files_below(&out, 3);
        assert_eq!(fs::read_to_string(&victim)?, "keep");
        assert!(victim_dir.join(".x.tmp-1").is_file());
        assert!(!victim_dir.join("sub").exists() && !victim_dir.join("g").exists());

        // Removing a link to a file removes the link only.
        remove_file_if_present(&link)?;
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read_to_string(&victim)?, "keep");
        Ok(())
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporary() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a/b.txt");
        write_text(&p, "one")?;
        write_text(&p, "two")?;
        assert_eq!(fs::read_to_string(&p)?, "two");
        let failed = write_atomic(&p, |_| anyhow::bail!("disk full"));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&p)?, "two");
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.txt")]);
        assert!(available_space(dir.path()).is_some_and(|n| n > 0));
        Ok(())
    }
}
