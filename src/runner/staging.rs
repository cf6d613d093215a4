//! Where a run's files live while it runs, how they are published, and what a new `run` on
//! an existing grid folder does with each run.
//!
//! A run writes into `GRID/.staging/<run_id>/`. When it ends (ok, diverged, failed, stopped
//! early) that folder holds its complete results and `run.toml` (its summary row and config
//! fingerprint), and replaces `GRID/<run_id>/` by renames: a published run folder is always
//! one run's complete output, never mixed with an earlier run's files. An interrupted run stays
//! in staging with its checkpoint until it is resumed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::log::{remove_dir_if_present, rename, write_text, Status, SummaryRow};
use crate::train::checkpoint::{checkpoints, promote, read_progress, verify_checkpoint};

/// The staging folder of a grid folder.
pub const STAGING_DIR: &str = ".staging";
/// A finished run's record in its folder.
pub const RUN_RECORD: &str = "run.toml";
/// A run's step log, published and inside its checkpoints.
pub const STEPS_FILE: &str = "steps.parquet";

/// `run.toml`: the config fingerprint a run finished with and its summary row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub config_hash: String,
    pub summary: SummaryRow,
}

/// What to do with one run of the grid.
#[derive(Debug)]
pub enum Plan {
    /// Finished with the same config: keep it (its recorded row).
    Keep(Box<SummaryRow>),
    /// Unfinished with the same config: continue from the checkpoint in this folder.
    Resume { checkpoint: PathBuf, next_step: u64 },
    /// Train from the first step.
    Start(StartReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    New,
    /// A finished run exists but its config fingerprint differs.
    ConfigChanged,
    /// The run exists but failed: failures may come from the machine, so it is tried again.
    PreviouslyFailed,
    /// `--fresh`.
    Fresh,
    /// Finished with the same config, but its published tables do not read back whole.
    Damaged,
    /// Unfinished with the same config, but its checkpoint (at this step) does not prove
    /// itself: it is discarded and the run starts over.
    DamagedCheckpoint(u64),
}

impl Plan {
    /// How the plan is announced, e.g. "resumed at step 40".
    pub fn describe(&self) -> String {
        match self {
            Plan::Keep(_) => "kept (finished with the same config)".into(),
            Plan::Resume { next_step, .. } => format!("resumed at step {next_step}"),
            Plan::Start(StartReason::New) => "new".into(),
            Plan::Start(StartReason::ConfigChanged) => "re-run (config changed)".into(),
            Plan::Start(StartReason::PreviouslyFailed) => "re-run (it had failed)".into(),
            Plan::Start(StartReason::Fresh) => "re-run (--fresh)".into(),
            Plan::Start(StartReason::DamagedCheckpoint(step)) => {
                format!("started over (its checkpoint at step {step} was damaged)")
            }
            Plan::Start(StartReason::Damaged) => {
                "re-run (its published tables were damaged: unreadable, missing or cut short)"
                    .into()
            }
        }
    }
}

pub fn staging_dir(grid_dir: &Path, run_id: &str) -> PathBuf {
    grid_dir.join(STAGING_DIR).join(run_id)
}

/// Statuses a run keeps across invocations: the outcome is a property of the config.
fn is_final(status: Status) -> bool {
    matches!(status, Status::Ok | Status::Diverged)
}

/// The record of a published run folder, if it has a readable one.
pub fn read_record(run_dir: &Path) -> Option<RunRecord> {
    let text = std::fs::read_to_string(run_dir.join(RUN_RECORD)).ok()?;
    toml::from_str(&text).ok()
}

/// The tables a finished run publishes, read back: `steps.parquet` with one row per step
/// its record counts, `evals.parquet` and `spectrum.parquet` readable, and
/// `embeddings.parquet` with rows where the run logged embeddings (its footer only: the
/// largest table, and a cut-short file has none). A damaged table makes the run train again
/// rather than be kept (or reported) as it is.
pub(crate) fn tables_read_back(run_dir: &Path, record: &RunRecord, logs_embeddings: bool) -> bool {
    let rows = |name: &str| crate::log::read_parquet(&run_dir.join(name)).map(|df| df.height());
    let steps = record.summary.outcome.steps as usize;
    let logged_embeddings = steps > 0 && logs_embeddings;
    (steps == 0 || rows(STEPS_FILE).is_ok_and(|n| n == steps))
        && rows("evals.parquet").is_ok()
        && rows("spectrum.parquet").is_ok()
        && (!logged_embeddings
            || crate::log::parquet_rows(&run_dir.join("embeddings.parquet")).is_ok_and(|n| n > 0))
}

/// Decides what to do with run `run_id` whose config fingerprint is `hash` (and which logs
/// embeddings when `logs_embeddings`). Finishes a publication a kill cut short, and clears the
/// staging folder unless it is resumed.
pub fn plan(
    grid_dir: &Path,
    run_id: &str,
    hash: &str,
    logs_embeddings: bool,
    fresh: bool,
) -> anyhow::Result<Plan> {
    let staging = staging_dir(grid_dir, run_id);
    if staging.join(RUN_RECORD).is_file() {
        publish(grid_dir, run_id)?;
    }
    let published = read_record(&grid_dir.join(run_id));
    let plan = if fresh {
        Plan::Start(StartReason::Fresh)
    } else if let Some(rec) = published
        .as_ref()
        .filter(|r| r.config_hash == hash && is_final(r.summary.outcome.status))
    {
        if tables_read_back(&grid_dir.join(run_id), rec, logs_embeddings) {
            Plan::Keep(Box::new(rec.summary.clone()))
        } else {
            Plan::Start(StartReason::Damaged)
        }
    } else if let Some(plan) = resume_plan(&staging, run_id, hash)? {
        plan
    } else {
        Plan::Start(match published {
            Some(r) if r.config_hash != hash => StartReason::ConfigChanged,
            Some(_) => StartReason::PreviouslyFailed,
            None if grid_dir.join(run_id).exists() => StartReason::ConfigChanged,
            None => StartReason::New,
        })
    };
    if matches!(plan, Plan::Start(_)) {
        remove_dir_if_present(&staging)?;
    }
    Ok(plan)
}

/// How run `run_id` continues from its checkpoints in `staging`, newest first: the first
/// whose config fingerprint is `hash` and which proves itself ([`verify_checkpoint`]) is
/// resumed; each damaged one is discarded with one line. `None` when there is none with the
/// same config; a start-over when every one was damaged.
fn resume_plan(staging: &Path, run_id: &str, hash: &str) -> anyhow::Result<Option<Plan>> {
    let mut damaged: Vec<(u64, String)> = Vec::new();
    let mut good = None;
    for dir in checkpoints(staging)? {
        let Some(progress) = read_progress(&dir).ok().filter(|p| p.config_hash == hash) else {
            continue;
        };
        match verify_checkpoint(&dir, progress.next_step, super::recorder::logs_end_at) {
            Ok(()) => {
                good = Some((dir, progress.next_step));
                break;
            }
            Err(why) => {
                remove_dir_if_present(&dir)?;
                damaged.push((progress.next_step, why));
            }
        }
    }
    for (step, why) in &damaged {
        let then = match &good {
            Some((_, s)) => format!("resuming from the previous checkpoint, at step {s}"),
            None => "starting over".into(),
        };
        crate::errln!("checkpoint of {run_id} damaged (step {step}: {why}): {then}");
    }
    Ok(match (good, damaged.first()) {
        (Some((dir, next_step)), _) => Some(Plan::Resume {
            checkpoint: promote(staging, &dir)?,
            next_step,
        }),
        (None, Some(&(step, _))) => Some(Plan::Start(StartReason::DamagedCheckpoint(step))),
        (None, None) => None,
    })
}

/// Writes `run.toml` into the staging folder (the run is complete there) and publishes it.
pub fn finish(grid_dir: &Path, run_id: &str, record: &RunRecord) -> anyhow::Result<()> {
    let staging = staging_dir(grid_dir, run_id);
    write_text(&staging.join(RUN_RECORD), &toml::to_string(record)?)?;
    publish(grid_dir, run_id)
}

/// Replaces `GRID/<run_id>` by its staging folder. A kill between the renames leaves the
/// staging folder with its `run.toml`, and the next [`plan`] completes the publication.
fn publish(grid_dir: &Path, run_id: &str) -> anyhow::Result<()> {
    let staging = staging_dir(grid_dir, run_id);
    let dest = grid_dir.join(run_id);
    let old = grid_dir.join(STAGING_DIR).join(format!("{run_id}.old"));
    remove_dir_if_present(&old)?;
    if dest.exists() {
        rename(&dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
    }
    rename(&staging, &dest)
        .with_context(|| format!("publishing {} as {}", staging.display(), dest.display()))?;
    remove_dir_if_present(&old)
}
