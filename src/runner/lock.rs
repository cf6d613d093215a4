//! One writer per grid folder, or per run. A local `collapse-lab run` holds `DIR/<grid>/.lock`;
//! array tasks (which share a grid) hold `DIR/<grid>/.staging/<run>.lock` for each run they
//! train, and local runs take those too. A lock file names its holder (pid, host, start
//! time); a second writer refuses with one line naming it, and a lock whose process is gone
//! (killed, crashed) is taken over. The holder also removes temporary files that a killed
//! writer left behind (`.<file>.tmp-<pid>`): while it holds the lock nobody else writes there.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::InputError;
use crate::log::remove_temp_files_below;

/// The lock of one grid folder, released (its file removed) when dropped.
#[derive(Debug)]
pub struct GridLock {
    path: PathBuf,
}

/// The lock of one run of a grid, released (its file removed) when dropped.
#[derive(Debug)]
pub struct RunLock {
    _lock: GridLock,
}

/// The lock file of run `run_id` (beside its staging folder, which is replaced wholesale).
pub fn run_lock_path(grid_dir: &Path, run_id: &str) -> PathBuf {
    grid_dir
        .join(super::staging::STAGING_DIR)
        .join(format!("{run_id}.lock"))
}

impl RunLock {
    /// Takes the lock of run `run_id`, then removes leftover temporary files of that run.
    pub fn acquire(grid_dir: &Path, run_id: &str) -> Result<Self, InputError> {
        let path = run_lock_path(grid_dir, run_id);
        if let Some(parent) = path.parent() {
            crate::log::create_dir(parent)
                .map_err(|e| InputError::new(parent.display().to_string(), format!("{e:#}")))?;
        }
        let lock = GridLock::take(path, "this run")?;
        remove_temp_files_below(&super::staging::staging_dir(grid_dir, run_id), 3);
        remove_temp_files_below(&grid_dir.join(run_id), 3);
        Ok(Self { _lock: lock })
    }
}

/// Who holds the lock file at `path`, if a live process does (or one on another host, which
/// cannot be checked): "pid P on HOST".
pub fn live_holder(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let (pid, host, _) = holder(&text)?;
    (host != host_name() || !is_dead(pid)).then(|| format!("pid {pid} on {host}"))
}

/// This machine's name, as written into lock files.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The holder a lock file names: (pid, host, start time in seconds since 1970).
fn holder(text: &str) -> Option<(u32, String, u64)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    Some((
        field("pid")?.parse().ok()?,
        field("host")?.to_string(),
        field("started")?.parse().ok()?,
    ))
}

/// Whether process `pid` on this host is gone (Linux: no `/proc/<pid>`). Elsewhere nothing
/// can be told, and the lock is respected.
fn is_dead(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

impl GridLock {
    /// Takes the lock of `grid_dir` (which must exist), taking over a stale one, then removes
    /// leftover temporary files in the folder and its run folders.
    pub fn acquire(grid_dir: &Path) -> Result<Self, InputError> {
        let lock = Self::take(grid_dir.join(".lock"), "this grid")?;
        remove_leftover_temp_files(grid_dir);
        Ok(lock)
    }

    /// Refuses (one line naming the holder) while a local run holds the grid's lock: array
    /// tasks must not write beside it.
    pub fn refuse_if_held(grid_dir: &Path) -> Result<(), InputError> {
        let path = grid_dir.join(".lock");
        match live_holder(&path) {
            Some(who) => Err(InputError::new(
                path.display().to_string(),
                format!("held by {who}: a local `collapse-lab run` is writing this grid"),
            )),
            None => Ok(()),
        }
    }

    /// Creates the lock file at `path` naming this process, taking over a stale one.
    fn take(path: PathBuf, what: &str) -> Result<Self, InputError> {
        let me = host_name();
        for _ in 0..2 {
            let created = crate::log::create_new(&path).map_err(|e| {
                match e.root_cause().downcast_ref::<std::io::Error>() {
                    Some(io) => std::io::Error::new(io.kind(), format!("{e:#}")),
                    None => std::io::Error::other(format!("{e:#}")),
                }
            });
            match created {
                Ok(mut f) => {
                    let started = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    writeln!(
                        f,
                        "pid={}\nhost={me}\nstarted={started}",
                        std::process::id()
                    )
                    .map_err(|e| InputError::new(path.display().to_string(), e.to_string()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    match holder(&text) {
                        Some((pid, host, _)) if host == me && is_dead(pid) => {
                            // Stale: its process is gone. Take it over.
                            let _ = crate::log::remove_file_if_present(&path);
                        }
                        Some((pid, host, started)) => {
                            return Err(InputError::new(
                                path.display().to_string(),
                                format!(
                                    "held by pid {pid} on {host} since {started} (seconds since 1970): another `collapse-lab run` is writing {what}; wait for it, or remove this file if that process is gone"
                                ),
                            ))
                        }
                        None => {
                            return Err(InputError::new(
                                path.display().to_string(),
                                format!("a lock file that names no holder (pid=, host=, started=); remove it if no run is writing {what}"),
                            ))
                        }
                    }
                }
                Err(e) => {
                    return Err(InputError::new(
                        path.display().to_string(),
                        format!("cannot create the lock: {e}"),
                    ))
                }
            }
        }
        Err(InputError::new(
            path.display().to_string(),
            "another run took the lock while a stale one was being replaced",
        ))
    }
}

impl Drop for GridLock {
    fn drop(&mut self) {
        let _ = crate::log::remove_file_if_present(&self.path);
    }
}

/// `.<name>.tmp-<pid>` files (what `log::write_atomic` writes before its rename) in `dir` and
/// its sub-folders (run folders, staging folders and their checkpoints: four levels).
fn remove_leftover_temp_files(dir: &Path) {
    remove_temp_files_below(dir, 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_lines_parse() {
        assert_eq!(
            holder("pid=12\nhost=box\nstarted=99\n"),
            Some((12, "box".to_string(), 99))
        );
        assert_eq!(holder("garbage"), None);
    }
}
