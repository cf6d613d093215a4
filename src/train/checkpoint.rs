//! Checkpoints: what a run needs to go on after a kill exactly as if it had never stopped.
//!
//! Inside a run's staging folder:
//! - `checkpoint/state.safetensors`: the online network (`online.*`: parameters and batch-norm
//!   statistics), the method's own state (`target.*`, `queue.keys`) and the optimizer's
//!   velocities (`velocity.*`), all as stored (f32), so the next step computes the same bits;
//! - `checkpoint/progress.toml`: the config fingerprint, the next step and the collapse streak;
//! - the observer's logs so far (written by [`StepObserver::save`](super::StepObserver::save)).
//!
//! Nothing else is random state: the loader derives every batch from `(seed, step)`, so a run
//! continues from `next_step` with the batches it would have had.
//!
//! A checkpoint is written whole into `checkpoint.next/` and swapped in by renames: a kill at
//! any moment leaves the previous complete checkpoint or the new one, never a mix. Its
//! `manifest.toml`, written last, lists every file it needs — its own and the embedding parts
//! beside it — with length and CRC-32, and the step they belong to: a resume trusts only a
//! checkpoint whose bytes are those written ([`verify_checkpoint`]). The previous checkpoint
//! is kept as `checkpoint.prev/`, the fallback when the newest fails its check (or when
//! writing a new one fails: a full disk never costs the last good checkpoint).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::InputError;
use crate::log::{create_dir, remove_dir_if_present, rename, write_text, write_via_temp};

/// The checkpoint folder inside a run's staging folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const NEXT_DIR: &str = "checkpoint.next";
const PREVIOUS_DIR: &str = "checkpoint.prev";
const STATE_FILE: &str = "state.safetensors";
const PROGRESS_FILE: &str = "progress.toml";
const MANIFEST_FILE: &str = "manifest.toml";

/// Test hook: writing the checkpoint of this step fails as on a full disk (ENOSPC), to check
/// that the run keeps its previous checkpoint. Never set in normal use.
pub const FAIL_CHECKPOINT_ENV: &str = "COLLAPSE_LAB_TEST_FAIL_CHECKPOINT_AT";

/// Writing a checkpoint failed (the disk is full, say); the previous one, if any, is intact.
#[derive(Debug, thiserror::Error)]
#[error("writing the checkpoint at step {step} failed: {reason}")]
pub struct CheckpointWriteFailed {
    pub step: u64,
    pub reason: String,
}

/// One file a checkpoint needs: its path (relative to the checkpoint folder, or to the
/// staging folder when `beside`), length and CRC-32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEntry {
    path: String,
    #[serde(default)]
    beside: bool,
    bytes: u64,
    crc32: String,
}

/// `manifest.toml`: the step a checkpoint belongs to and every file it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    next_step: u64,
    files: Vec<ManifestEntry>,
}

/// Length and CRC-32 (hex) of a file, read in blocks.
fn fingerprint(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, format!("{:08x}", hasher.finalize())))
}

/// The relative paths of every file below `dir` (sorted; a link is never followed).
fn files_below(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let kind = e.file_type()?;
        if kind.is_dir() {
            files_below(&e.path(), &format!("{name}/"), out)?;
        } else if kind.is_file() {
            out.push(name);
        }
    }
    Ok(())
}

impl Manifest {
    /// The manifest of checkpoint folder `dir` (every file in it) and of the files `beside` it
    /// (absolute paths below the staging folder `staging`).
    fn of(dir: &Path, staging: &Path, beside: &[PathBuf], next_step: u64) -> anyhow::Result<Self> {
        let mut inside = Vec::new();
        files_below(dir, "", &mut inside).with_context(|| format!("listing {}", dir.display()))?;
        let mut files = Vec::new();
        for path in inside.into_iter().filter(|p| p != MANIFEST_FILE) {
            let (bytes, crc32) = fingerprint(&dir.join(&path))
                .with_context(|| format!("reading {}", dir.join(&path).display()))?;
            files.push(ManifestEntry {
                path,
                beside: false,
                bytes,
                crc32,
            });
        }
        for p in beside {
            let rel = p
                .strip_prefix(staging)
                .with_context(|| format!("{} is not in {}", p.display(), staging.display()))?;
            let (bytes, crc32) =
                fingerprint(p).with_context(|| format!("reading {}", p.display()))?;
            files.push(ManifestEntry {
                path: rel.to_string_lossy().into_owned(),
                beside: true,
                bytes,
                crc32,
            });
        }
        Ok(Self { next_step, files })
    }

    /// Checks every file of checkpoint folder `dir` against the manifest; the first mismatch.
    fn verify(&self, dir: &Path) -> Result<(), String> {
        let staging = dir.parent().unwrap_or(dir);
        for f in &self.files {
            let path = if f.beside {
                staging.join(&f.path)
            } else {
                dir.join(&f.path)
            };
            match fingerprint(&path) {
                Err(e) => return Err(format!("{}: {e}", f.path)),
                Ok((bytes, _)) if bytes != f.bytes => {
                    return Err(format!(
                        "{} holds {bytes} bytes, {} were written",
                        f.path, f.bytes
                    ))
                }
                Ok((_, crc)) if crc != f.crc32 => {
                    return Err(format!(
                        "{} fails its checksum (CRC-32 {crc}, {} written)",
                        f.path, f.crc32
                    ))
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// Where the trainer stands at a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// [`RunConfig::numbers_hash`](crate::config::RunConfig::numbers_hash) of the run.
    pub config_hash: String,
    /// The first step still to train.
    pub next_step: u64,
    /// Consecutive collapsed steps up to `next_step` (early stop and `collapse_step`).
    pub collapsed_streak: u64,
}

/// How a run checkpoints and learns that it should stop.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// The run's staging folder; the checkpoint goes to `CHECKPOINT_DIR` inside it.
    pub dir: PathBuf,
    /// Every this many steps (0: only when interrupted).
    pub every: u64,
    pub config_hash: String,
    /// Set by SIGINT/SIGTERM: checkpoint after the current step and stop.
    pub interrupt: Arc<AtomicBool>,
}

impl Checkpointing {
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// Whether to checkpoint after `done` steps of `total` (the last step needs none: the run
    /// is then finished and publishes its results).
    pub fn due(&self, done: u64, total: u64) -> bool {
        done < total && (self.interrupted() || (self.every > 0 && done.is_multiple_of(self.every)))
    }

    /// Writes a checkpoint: `write_logs` fills the new folder with the observer's logs (and
    /// returns the files beside it that the checkpoint needs), then the state, progress and
    /// manifest go in and the folder is swapped in; the one it replaces is kept as the
    /// fallback. On failure the half-written folder is removed, the earlier checkpoints stay,
    /// and the error is a [`CheckpointWriteFailed`].
    pub fn write(
        &self,
        progress: &Progress,
        state: Vec<(String, Tensor)>,
        write_logs: impl FnOnce(&Path) -> anyhow::Result<Vec<PathBuf>>,
    ) -> anyhow::Result<()> {
        let next = self.dir.join(NEXT_DIR);
        let written = (|| -> anyhow::Result<()> {
            remove_dir_if_present(&next)?;
            create_dir(&next)?;
            if std::env::var(FAIL_CHECKPOINT_ENV)
                .is_ok_and(|v| v.trim() == progress.next_step.to_string())
            {
                return Err(std::io::Error::from_raw_os_error(28)).context("test hook");
            }
            let beside = write_logs(&next)?;
            let tensors: HashMap<String, Tensor> = state.into_iter().collect();
            write_via_temp(&next.join(STATE_FILE), "", |tmp| {
                Ok(candle_core::safetensors::save(&tensors, tmp)?)
            })?;
            write_text(&next.join(PROGRESS_FILE), &toml::to_string(progress)?)?;
            let manifest = Manifest::of(&next, &self.dir, &beside, progress.next_step)?;
            write_text(&next.join(MANIFEST_FILE), &toml::to_string(&manifest)?)
        })();
        if let Err(e) = written {
            let _ = remove_dir_if_present(&next);
            return Err(CheckpointWriteFailed {
                step: progress.next_step,
                reason: format!("{e:#}"),
            }
            .into());
        }
        let current = self.dir.join(CHECKPOINT_DIR);
        let previous = self.dir.join(PREVIOUS_DIR);
        remove_dir_if_present(&previous)?;
        if current.exists() {
            rename(&current, &previous)?;
        }
        rename(&next, &current)
    }
}

/// A checkpoint read back: where to continue and every saved tensor by name.
pub struct Resume {
    pub progress: Progress,
    pub tensors: HashMap<String, Tensor>,
    /// The checkpoint folder (the observer reads its logs from here).
    pub dir: PathBuf,
}

impl Resume {
    /// The tensors whose names start with `prefix`, with the prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect()
    }
}

/// The checkpoints in staging folder `dir`, newest first: `checkpoint/` and its fallback
/// `checkpoint.prev/`, those that have a progress file. A half-written `checkpoint.next/` is
/// discarded.
pub fn checkpoints(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    remove_dir_if_present(&dir.join(NEXT_DIR))?;
    Ok([CHECKPOINT_DIR, PREVIOUS_DIR]
        .iter()
        .map(|d| dir.join(d))
        .filter(|d| d.join(PROGRESS_FILE).is_file())
        .collect())
}

/// Makes checkpoint folder `chosen` (one of [`checkpoints`]) the current one, removing any
/// newer one (found damaged). Returns its path.
pub fn promote(dir: &Path, chosen: &Path) -> anyhow::Result<PathBuf> {
    let current = dir.join(CHECKPOINT_DIR);
    if chosen != current {
        remove_dir_if_present(&current)?;
        rename(chosen, &current)?;
    }
    Ok(current)
}

/// Whether checkpoint folder `dir` can be trusted to continue at `next_step`: its manifest
/// belongs to that step and every file it lists (its own, and the embedding parts beside it)
/// has the length and checksum written; its state is finite; and `check_logs` (the
/// observer's own check that its logs end at that step) passes. The reason when not.
pub fn verify_checkpoint(
    dir: &Path,
    next_step: u64,
    check_logs: impl FnOnce(&Path, u64) -> Result<(), String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE))
        .map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
    let manifest: Manifest =
        toml::from_str(&text).map_err(|e| format!("{MANIFEST_FILE}: {}", e.message()))?;
    if manifest.next_step != next_step {
        return Err(format!(
            "progress.toml says step {next_step} but {MANIFEST_FILE} was written at step {}",
            manifest.next_step
        ));
    }
    manifest.verify(dir)?;
    let state = dir.join(STATE_FILE);
    let tensors = candle_core::safetensors::load(&state, &Device::Cpu)
        .map_err(|e| format!("{STATE_FILE} unreadable: {e}"))?;
    for (name, t) in &tensors {
        let finite = t
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.abs()?.sum_all()?.to_scalar::<f64>())
            .map_err(|e| format!("{STATE_FILE}: `{name}`: {e}"))?
            .is_finite();
        if !finite {
            return Err(format!(
                "{STATE_FILE}: `{name}` holds NaN or infinite values"
            ));
        }
    }
    check_logs(dir, next_step)
}

/// The progress of the checkpoint in staging folder `dir`, read without changing anything
/// (a run elsewhere may be writing it): what `collapse-lab status` shows.
/// Newest first, each with its folder.
pub fn peek_checkpoints(dir: &Path) -> Vec<(PathBuf, Progress)> {
    [CHECKPOINT_DIR, PREVIOUS_DIR]
        .iter()
        .filter_map(|d| Some((dir.join(d), read_progress(&dir.join(d)).ok()?)))
        .collect()
}

/// Reads only the progress of checkpoint folder `dir` (to decide whether to resume).
pub fn read_progress(dir: &Path) -> Result<Progress, InputError> {
    let path = dir.join(PROGRESS_FILE);
    let src = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| InputError::new(&src, e.to_string()))?;
    toml::from_str(&text).map_err(|e| InputError::new(&src, e.message().to_string()))
}

/// Reads checkpoint folder `dir` with its tensors on `device`.
pub fn read_checkpoint(dir: &Path, device: &Device) -> anyhow::Result<Resume> {
    let progress = read_progress(dir)?;
    let path = dir.join(STATE_FILE);
    let tensors = candle_core::safetensors::load(&path, device)
        .map_err(|e| InputError::new(path.display().to_string(), e.to_string()))?;
    Ok(Resume {
        progress,
        tensors,
        dir: dir.to_path_buf(),
    })
}

/// Every folder a checkpoint of staging folder `dir` may occupy (what the runner checks is
/// not a link before a grid starts).
pub fn checkpoint_dirs(dir: &Path) -> [PathBuf; 3] {
    [CHECKPOINT_DIR, NEXT_DIR, PREVIOUS_DIR].map(|d| dir.join(d))
}

/// Removes the checkpoints and any swap leftovers (the run finished).
pub fn remove_checkpoint(dir: &Path) -> anyhow::Result<()> {
    for name in [CHECKPOINT_DIR, NEXT_DIR, PREVIOUS_DIR] {
        remove_dir_if_present(&dir.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path) -> Checkpointing {
        Checkpointing {
            dir: dir.to_path_buf(),
            every: 5,
            config_hash: "h".into(),
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }

    fn progress(step: u64) -> Progress {
        Progress {
            config_hash: "h".into(),
            next_step: step,
            collapsed_streak: 2,
        }
    }

    #[test]
    fn due_every_n_steps_and_when_interrupted_never_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = plan(dir.path());
        assert!(p.due(5, 12) && p.due(10, 12));
        assert!(!p.due(4, 12) && !p.due(12, 12) && !p.due(15, 15));
        p.interrupt.store(true, Ordering::SeqCst);
        assert!(p.due(3, 12));
        assert!(!p.due(12, 12));
    }

    fn logs_end_at(dir: &Path, step: u64) -> Result<(), String> {
        let text = std::fs::read_to_string(dir.join("log.txt")).map_err(|e| e.to_string())?;
        (text == step.to_string())
            .then_some(())
            .ok_or_else(|| format!("log ends at {text}"))
    }

    /// Writes a checkpoint at `step` whose log says `step` and which needs a part beside it.
    fn write_at(p: &Checkpointing, step: u64) -> anyhow::Result<()> {
        let t = Tensor::new(&[1.5f32, -0.0, step as f32], &Device::Cpu)?;
        let part = p.dir.join("parts").join(format!("part-{step}"));
        p.write(&progress(step), vec![("online.w".into(), t)], |d| {
            std::fs::write(d.join("log.txt"), step.to_string())?;
            std::fs::create_dir_all(p.dir.join("parts"))?;
            std::fs::write(&part, format!("embeddings up to {step}"))?;
            Ok(vec![part.clone()])
        })
    }

    fn newest_good(dir: &Path) -> anyhow::Result<Option<u64>> {
        for c in checkpoints(dir)? {
            let step = read_progress(&c)?.next_step;
            if verify_checkpoint(&c, step, logs_end_at).is_ok() {
                return Ok(Some(step));
            }
        }
        Ok(None)
    }

    #[test]
    fn round_trip_and_swap_leftovers_are_resolved() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = plan(dir.path());
        assert!(checkpoints(dir.path())?.is_empty());
        write_at(&p, 5)?;
        write_at(&p, 10)?;
        let found = checkpoints(dir.path())?;
        assert_eq!(found.len(), 2, "the newest and its fallback");
        let r = read_checkpoint(&found[0], &Device::Cpu)?;
        assert_eq!(r.progress, progress(10));
        verify_checkpoint(&found[0], 10, logs_end_at).map_err(anyhow::Error::msg)?;
        verify_checkpoint(&found[1], 5, logs_end_at).map_err(anyhow::Error::msg)?;
        let w = &r.with_prefix("online.")["w"];
        assert_eq!(w.to_vec1::<f32>()?, vec![1.5, -0.0, 10.0]);

        // Killed between the two renames: only `checkpoint.prev` (complete) and a stale
        // `checkpoint.next` remain.
        remove_dir_if_present(&dir.path().join(PREVIOUS_DIR))?;
        std::fs::rename(
            dir.path().join(CHECKPOINT_DIR),
            dir.path().join(PREVIOUS_DIR),
        )?;
        std::fs::create_dir_all(dir.path().join(NEXT_DIR))?;
        let found = checkpoints(dir.path())?;
        assert_eq!(found, vec![dir.path().join(PREVIOUS_DIR)]);
        assert!(!dir.path().join(NEXT_DIR).exists());
        let current = promote(dir.path(), &found[0])?;
        assert_eq!(read_progress(&current)?.next_step, 10);

        // A damaged progress file is bad input naming it.
        std::fs::write(current.join(PROGRESS_FILE), "next_step = \"x\"")?;
        let e = read_progress(&current).expect_err("damaged");
        assert!(e.to_string().contains("progress.toml"), "{e}");
        remove_checkpoint(dir.path())?;
        assert!(checkpoints(dir.path())?.is_empty());
        Ok(())
    }

    /// Every kind of damage is caught by the manifest (or the state's values), and the
    /// fallback — the checkpoint before — is then the one a resume uses.
    #[test]
    fn a_damaged_checkpoint_fails_its_check_and_the_previous_one_is_used() -> anyhow::Result<()> {
        type Damage = fn(&Path) -> std::io::Result<()>;
        let damages: [(&str, Damage); 6] = [
            ("one byte flipped", |d| {
                let p = d.join(STATE_FILE);
                let mut b = std::fs::read(&p)?;
                let n = b.len() - 3;
                b[n] ^= 0x10;
                std::fs::write(p, b)
            }),
            ("truncated", |d| {
                let p = d.join(STATE_FILE);
                let b = std::fs::read(&p)?;
                std::fs::write(p, &b[..b.len() / 2])
            }),
            ("emptied log", |d| std::fs::write(d.join("log.txt"), "")),
            ("deleted state", |d| {
                std::fs::remove_file(d.join(STATE_FILE))
            }),
            ("part beside it damaged", |d| {
                std::fs::write(d.join("../parts/part-10"), "embeddings up to 1X")
            }),
            ("step moved", |d| {
                std::fs::write(
                    d.join(PROGRESS_FILE),
                    toml::to_string(&progress(12)).expect("toml"),
                )
            }),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir()?;
            let p = plan(dir.path());
            write_at(&p, 5)?;
            write_at(&p, 10)?;
            assert_eq!(newest_good(dir.path())?, Some(10));
            damage(&dir.path().join(CHECKPOINT_DIR))?;
            let current = &checkpoints(dir.path())?[0];
            let step = read_progress(current).map_or(0, |p| p.next_step);
            let why = verify_checkpoint(current, step, logs_end_at).expect_err(what);
            assert!(!why.is_empty());
            assert_eq!(newest_good(dir.path())?, Some(5), "{what}: {why}");
        }
        // NaN values written with a matching manifest (a bad update saved faithfully) are
        // refused by the state check.
        let dir = tempfile::tempdir()?;
        let p = plan(dir.path());
        let nan = Tensor::new(&[f32::NAN], &Device::Cpu)?;
        p.write(&progress(3), vec![("online.w".into(), nan)], |d| {
            std::fs::write(d.join("log.txt"), "3")?;
            Ok(vec![])
        })?;
        let why = verify_checkpoint(&checkpoints(dir.path())?[0], 3, logs_end_at).expect_err("NaN");
        assert!(why.contains("NaN"), "{why}");
        Ok(())
    }

    /// A checkpoint that cannot be written (a full disk) leaves the earlier ones as they were.
    #[test]
    fn a_failed_write_keeps_the_previous_checkpoint() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = plan(dir.path());
        write_at(&p, 20)?;
        let e = p
            .write(&progress(40), vec![], |_| {
                Err(std::io::Error::from_raw_os_error(28).into())
            })
            .expect_err("disk full");
        let failed = e.downcast_ref::<CheckpointWriteFailed>().expect("typed");
        assert_eq!(failed.step, 40);
        assert!(!dir.path().join(NEXT_DIR).exists());
        assert_eq!(newest_good(dir.path())?, Some(20));
        Ok(())
    }
}
