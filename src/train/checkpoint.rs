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
//! any moment leaves the previous complete checkpoint or the new one, never a mix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::InputError;
use crate::log::remove_dir_if_present;

/// The checkpoint folder inside a run's staging folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const NEXT_DIR: &str = "checkpoint.next";
const PREVIOUS_DIR: &str = "checkpoint.prev";
const STATE_FILE: &str = "state.safetensors";
const PROGRESS_FILE: &str = "progress.toml";

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

    /// Writes a checkpoint: `write_logs` fills the new folder with the observer's logs, then the
    /// state and progress go in and the folder is swapped in.
    pub fn write(
        &self,
        progress: &Progress,
        state: Vec<(String, Tensor)>,
        write_logs: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let next = self.dir.join(NEXT_DIR);
        remove_dir_if_present(&next)?;
        std::fs::create_dir_all(&next).with_context(|| format!("creating {}", next.display()))?;
        write_logs(&next)?;
        let tensors: HashMap<String, Tensor> = state.into_iter().collect();
        candle_core::safetensors::save(&tensors, next.join(STATE_FILE))
            .with_context(|| format!("writing {}", next.join(STATE_FILE).display()))?;
        std::fs::write(next.join(PROGRESS_FILE), toml::to_string(progress)?)
            .with_context(|| format!("writing {}", next.join(PROGRESS_FILE).display()))?;
        let current = self.dir.join(CHECKPOINT_DIR);
        let previous = self.dir.join(PREVIOUS_DIR);
        remove_dir_if_present(&previous)?;
        if current.exists() {
            std::fs::rename(&current, &previous)?;
        }
        std::fs::rename(&next, &current)?;
        remove_dir_if_present(&previous)
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

/// The checkpoint in staging folder `dir`, if a complete one exists. A swap a kill cut short
/// is finished first; a half-written `checkpoint.next/` is discarded.
pub fn find_checkpoint(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let current = dir.join(CHECKPOINT_DIR);
    let previous = dir.join(PREVIOUS_DIR);
    remove_dir_if_present(&dir.join(NEXT_DIR))?;
    if !current.join(PROGRESS_FILE).is_file() && previous.join(PROGRESS_FILE).is_file() {
        remove_dir_if_present(&current)?;
        std::fs::rename(&previous, &current)?;
    }
    remove_dir_if_present(&previous)?;
    Ok(current.join(PROGRESS_FILE).is_file().then_some(current))
}

/// Whether checkpoint folder `dir` can be trusted to continue at `next_step`: its state file
/// reads back whole with every value finite, and its step log ends exactly at `next_step`
/// (`steps_file` holds one row per step done). The reason when not.
pub fn verify_checkpoint(dir: &Path, next_step: u64, steps_file: &str) -> Result<(), String> {
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
    let rows = crate::log::read_parquet(&dir.join(steps_file))
        .map_err(|e| format!("{steps_file} unreadable: {e}"))?
        .height() as u64;
    if rows != next_step {
        return Err(format!(
            "progress.toml says step {next_step} but {steps_file} holds {rows} steps"
        ));
    }
    Ok(())
}

/// The progress of the checkpoint in staging folder `dir`, read without changing anything
/// (a run elsewhere may be writing it): what `collapse-lab status` shows.
pub fn peek_checkpoint(dir: &Path) -> Option<Progress> {
    [CHECKPOINT_DIR, PREVIOUS_DIR]
        .iter()
        .find_map(|d| read_progress(&dir.join(d)).ok())
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

/// Removes the checkpoint and any swap leftovers (the run finished).
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

    #[test]
    fn round_trip_and_swap_leftovers_are_resolved() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = plan(dir.path());
        assert!(find_checkpoint(dir.path())?.is_none());
        let t = Tensor::new(&[1.5f32, -0.0, f32::MIN_POSITIVE], &Device::Cpu)?;
        p.write(&progress(5), vec![("online.w".into(), t.clone())], |d| {
            std::fs::write(d.join("log.txt"), "five")?;
            Ok(())
        })?;
        p.write(&progress(10), vec![("online.w".into(), t.clone())], |d| {
            std::fs::write(d.join("log.txt"), "ten")?;
            Ok(())
        })?;
        let found = find_checkpoint(dir.path())?.expect("a checkpoint");
        let r = read_checkpoint(&found, &Device::Cpu)?;
        assert_eq!(r.progress, progress(10));
        assert_eq!(std::fs::read_to_string(found.join("log.txt"))?, "ten");
        let w = &r.with_prefix("online.")["w"];
        assert_eq!(w.to_vec1::<f32>()?, t.to_vec1::<f32>()?);

        // Killed between the two renames: only `checkpoint.prev` (complete) and a stale
        // `checkpoint.next` remain.
        std::fs::rename(
            dir.path().join(CHECKPOINT_DIR),
            dir.path().join(PREVIOUS_DIR),
        )?;
        std::fs::create_dir_all(dir.path().join(NEXT_DIR))?;
        let found = find_checkpoint(dir.path())?.expect("the previous checkpoint");
        assert_eq!(read_progress(&found)?.next_step, 10);
        assert!(!dir.path().join(NEXT_DIR).exists());
        assert!(!dir.path().join(PREVIOUS_DIR).exists());

        // A damaged progress file is bad input naming it.
        std::fs::write(found.join(PROGRESS_FILE), "next_step = \"x\"")?;
        let e = read_progress(&found).expect_err("damaged");
        assert!(e.to_string().contains("progress.toml"), "{e}");
        remove_checkpoint(dir.path())?;
        assert!(find_checkpoint(dir.path())?.is_none());
        Ok(())
    }
}
