//! What a grid folder holds, read from its run folders alone (no scheduler is asked), so a
//! grid is watched and summarised the same way locally and on a cluster:
//! `collapse-lab status` prints it, `collapse-lab finalize` writes `summary.parquet` (and the
//! CLI the report) from whatever finished.

use std::path::{Path, PathBuf};

use super::staging::{read_record, staging_dir, tables_read_back};
use super::{baseline_specs, lock, GRID_FILE, SUMMARY_FILE};
use crate::config::{Grid, InputError, RunSpec};
use crate::log::{write_summary, Status, SummaryRow};
use crate::train::checkpoint::{peek_checkpoints, verify_checkpoint};

/// Where one run of a grid stands.
#[derive(Debug, Clone)]
pub enum RunState {
    /// Published, `ok` or `diverged`, with the grid's config: its row.
    Done(Box<SummaryRow>),
    /// Published as `failed`: its row (the error says why).
    Failed(Box<SummaryRow>),
    /// A live process holds its lock ("pid P on HOST").
    Running(String),
    /// Stopped with a checkpoint: the next `run` (or array task) resumes at this step.
    Interrupted { next_step: u64 },
    /// Not started, or finished with another config (then the reason says so).
    Pending(&'static str),
    /// Its published tables or its checkpoint fail their checks (why): the next `run`
    /// re-trains it, or resumes from an earlier checkpoint.
    Damaged(String),
}

impl RunState {
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Done(_) => "done",
            RunState::Failed(_) => "failed",
            RunState::Running(_) => "running",
            RunState::Interrupted { .. } => "interrupted",
            RunState::Pending(_) => "pending",
            RunState::Damaged(_) => "damaged",
        }
    }

    /// The detail `status` prints after the label.
    pub fn detail(&self) -> String {
        match self {
            RunState::Done(row) => match row.outcome.status {
                Status::Diverged => format!(
                    "diverged: {}",
                    row.outcome.error.as_deref().unwrap_or("non-finite values")
                ),
                _ => format!("{} steps", row.outcome.steps),
            },
            RunState::Failed(row) => row.outcome.error.clone().unwrap_or_default(),
            RunState::Running(who) => who.clone(),
            RunState::Interrupted { next_step } => format!("checkpointed at step {next_step}"),
            RunState::Pending(why) => (*why).to_string(),
            RunState::Damaged(why) => why.clone(),
        }
    }
}

/// Every run of a grid folder (trained runs in grid order, then the baselines) and its state.
pub struct GridState {
    pub dir: PathBuf,
    pub grid: Grid,
    pub runs: Vec<(RunSpec, RunState)>,
}

/// Reads the state of grid folder `dir` (which holds `grid.toml`, written by `run` and
/// `slurm`).
pub fn read_state(dir: &Path) -> anyhow::Result<GridState> {
    let grid_file = dir.join(GRID_FILE);
    if !grid_file.is_file() {
        return Err(InputError::new(
            grid_file.display().to_string(),
            "missing: not a grid folder written by `collapse-lab run` or `collapse-lab slurm`",
        )
        .into());
    }
    let grid = Grid::load(&grid_file)?;
    let specs: Vec<RunSpec> = grid
        .expand()?
        .into_iter()
        .chain(baseline_specs(&grid)?)
        .collect();
    let runs = specs
        .into_iter()
        .map(|spec| {
            let state = run_state(dir, &spec);
            (spec, state)
        })
        .collect();
    Ok(GridState {
        dir: dir.to_path_buf(),
        grid,
        runs,
    })
}

fn run_state(dir: &Path, spec: &RunSpec) -> RunState {
    if let Some(who) = lock::live_holder(&lock::run_lock_path(dir, &spec.run_id)) {
        return RunState::Running(who);
    }
    let staging = staging_dir(dir, &spec.run_id);
    // A publication a kill cut short leaves the complete run in staging.
    let record = read_record(&dir.join(&spec.run_id)).or_else(|| read_record(&staging));
    let hash = spec.config.numbers_hash();
    match record {
        Some(r) if r.config_hash == hash => {
            let row = Box::new(SummaryRow {
                config: spec.config.clone(),
                ..r.summary.clone()
            });
            match row.outcome.status {
                Status::Ok | Status::Diverged
                    if !tables_read_back(
                        &dir.join(&spec.run_id),
                        &r,
                        spec.config.log.embeddings_every > 0,
                    ) =>
                {
                    RunState::Damaged(
                        "published tables unreadable, missing or cut short: the next run re-trains it"
                            .into(),
                    )
                }
                Status::Ok | Status::Diverged => RunState::Done(row),
                Status::Failed | Status::Interrupted => RunState::Failed(row),
            }
        }
        record => match checkpoint_state(&staging, &hash) {
            Some(state) => state,
            None if record.is_some() => RunState::Pending("finished with another config"),
            None => RunState::Pending("not started"),
        },
    }
}

/// The state of a run from its checkpoints in `staging` (with config fingerprint `hash`):
/// interrupted at the newest that proves itself, damaged when none does, `None` without any.
fn checkpoint_state(staging: &Path, hash: &str) -> Option<RunState> {
    let found: Vec<_> = peek_checkpoints(staging)
        .into_iter()
        .filter(|(_, p)| p.config_hash == hash)
        .collect();
    let newest = found.first()?.1.next_step;
    let mut why = String::new();
    for (dir, p) in &found {
        match verify_checkpoint(dir, p.next_step, super::recorder::logs_end_at) {
            Ok(()) => {
                return Some(RunState::Interrupted {
                    next_step: p.next_step,
                })
            }
            Err(e) if why.is_empty() => why = e,
            Err(_) => {}
        }
    }
    Some(RunState::Damaged(format!(
        "checkpoint at step {newest} damaged ({why}) and no good one before it: the next run starts over"
    )))
}

impl GridState {
    /// The rows of the runs that ended (done or failed), in grid order.
    pub fn rows(&self) -> Vec<SummaryRow> {
        self.runs
            .iter()
            .filter_map(|(_, state)| match state {
                RunState::Done(row) | RunState::Failed(row) => Some((**row).clone()),
                _ => None,
            })
            .collect()
    }

    /// Runs that did not end well: failed, or not finished (running, interrupted, pending).
    pub fn unfinished(&self) -> Vec<(&RunSpec, &RunState)> {
        self.runs
            .iter()
            .filter(|(_, state)| !matches!(state, RunState::Done(_)))
            .map(|(spec, state)| (spec, state))
            .collect()
    }

    /// Writes `summary.parquet` from the runs that ended.
    pub fn write_summary(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(SUMMARY_FILE);
        write_summary(&path, &self.rows())?;
        Ok(path)
    }

    /// Counts per state label, in a fixed order: "3 done, 1 failed, …" (zeros left out).
    pub fn counts(&self) -> String {
        let labels = [
            "done",
            "failed",
            "running",
            "interrupted",
            "pending",
            "damaged",
        ];
        labels
            .iter()
            .filter_map(|label| {
                let n = self
                    .runs
                    .iter()
                    .filter(|(_, s)| s.label() == *label)
                    .count();
                (n > 0).then(|| format!("{n} {label}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
