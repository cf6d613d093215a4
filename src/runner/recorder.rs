//! The observer a grid run attaches to training: keeps the step log, sends embeddings of
//! logged steps to the writer thread, and evaluates at epoch ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{InputError, RunConfig, RunSpec};
use crate::data::{Augmenter, Dataset, TwoViewBatch};
use crate::eval::{evaluate, EvalSetup, EvalSplit, NonFiniteEmbeddings};
use crate::log::{EmbeddingBlock, EmbeddingsWriter, EvalRecord, LoggedStep, StepRecord, StepsLog};
use crate::method::{Embeddings, Method};
use crate::train::{EpochEnd, StepObserver};

use super::staging::STEPS_FILE;

/// Where and how often to evaluate.
pub struct EvalPlan {
    pub config: RunConfig,
    pub dataset: Arc<dyn Dataset>,
    pub augmenter: Augmenter,
    /// Drawn once: every evaluation of a run uses the same images and halves.
    pub split: EvalSplit,
    pub device: Device,
}

impl EvalPlan {
    pub fn new(
        config: &RunConfig,
        dataset: Arc<dyn Dataset>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            augmenter: Augmenter::new(
                &config.augment,
                config.dataset.image_size,
                dataset.channels(),
            )?,
            config: config.clone(),
            split: EvalSplit::for_run(config, dataset.as_ref()),
            dataset,
            device: device.clone(),
        })
    }

    pub fn run(&self, method: &dyn Method, epoch: u32, step: u64) -> anyhow::Result<EvalRecord> {
        let setup = EvalSetup::for_run(
            &self.config,
            self.dataset.as_ref(),
            &self.augmenter,
            &self.split,
            &self.device,
        );
        evaluate(method.online(), &setup, epoch, step)
    }
}

pub struct Recorder {
    pub steps: StepsLog,
    pub evals: Vec<EvalRecord>,
    pub embeddings: Option<EmbeddingsWriter>,
    pub embeddings_every: u64,
    pub eval: EvalPlan,
    /// Where checkpoints put the embeddings logged so far, and the part files written.
    pub parts_dir: PathBuf,
    pub parts: Vec<String>,
}

/// A checkpoint's record of the logs beside `steps.parquet`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedLogs {
    /// Evaluations so far (a handful: TOML writes every float so it reads back exactly).
    evals: Vec<EvalRecord>,
    /// Embedding part files (in `parts_dir`) that belong to this checkpoint, in step order.
    embedding_parts: Vec<String>,
}

const SAVED_LOGS_FILE: &str = "logs.toml";

/// Whether the logs saved in checkpoint folder `dir` end at `next_step`: the step log holds
/// exactly `next_step` rows, and no evaluation or embedding part is from a later step (a
/// checkpoint's [`verify_checkpoint`](crate::train::checkpoint::verify_checkpoint) asks).
pub fn logs_end_at(dir: &Path, next_step: u64) -> Result<(), String> {
    let rows = crate::log::read_parquet(&dir.join(STEPS_FILE))
        .map_err(|e| format!("{STEPS_FILE} unreadable: {e}"))?
        .height() as u64;
    if rows != next_step {
        return Err(format!(
            "progress.toml says step {next_step} but {STEPS_FILE} holds {rows} steps"
        ));
    }
    let text = std::fs::read_to_string(dir.join(SAVED_LOGS_FILE))
        .map_err(|e| format!("{SAVED_LOGS_FILE}: {e}"))?;
    let saved: SavedLogs =
        toml::from_str(&text).map_err(|e| format!("{SAVED_LOGS_FILE}: {}", e.message()))?;
    if let Some(e) = saved.evals.iter().find(|e| e.step > next_step) {
        return Err(format!(
            "{SAVED_LOGS_FILE} holds an evaluation at step {} after step {next_step}",
            e.step
        ));
    }
    let part_step = |name: &str| -> Option<u64> {
        name.strip_prefix("part-")?
            .strip_suffix(".parquet")?
            .parse()
            .ok()
    };
    match saved
        .embedding_parts
        .iter()
        .find(|p| part_step(p).is_none_or(|s| s > next_step))
    {
        Some(p) => Err(format!(
            "{SAVED_LOGS_FILE} lists embedding part {p}, not one of steps up to {next_step}"
        )),
        None => Ok(()),
    }
}
/// The embeddings file, in the run's staging folder.
pub const EMBEDDINGS_FILE: &str = "embeddings.parquet";
/// The folder of embedding part files, in the run's staging folder.
pub const PARTS_DIR: &str = "embedding-parts";

impl Recorder {
    /// A recorder for a run that starts now, writing into staging folder `staging`.
    pub fn new(spec: &RunSpec, staging: &Path, eval: EvalPlan) -> Self {
        let every = spec.config.log.embeddings_every;
        Self {
            steps: StepsLog::new(&spec.run_id, &spec.variant, spec.seed),
            evals: Vec::new(),
            embeddings: (every > 0).then(|| {
                EmbeddingsWriter::spawn(staging.join(EMBEDDINGS_FILE), spec.run_id.clone())
            }),
            embeddings_every: every,
            eval,
            parts_dir: staging.join(PARTS_DIR),
            parts: Vec::new(),
        }
    }

    /// A recorder continuing the logs saved in `checkpoint` (inside `staging`). Embedding parts
    /// written after that checkpoint (a kill between writing a part and the checkpoint) are
    /// removed.
    pub fn resume(
        spec: &RunSpec,
        staging: &Path,
        eval: EvalPlan,
        checkpoint: &Path,
    ) -> anyhow::Result<Self> {
        let mut r = Self::new(spec, staging, eval);
        r.steps = StepsLog::read(&checkpoint.join(STEPS_FILE))?;
        let path = checkpoint.join(SAVED_LOGS_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| InputError::new(path.display().to_string(), e.to_string()))?;
        let saved: SavedLogs = toml::from_str(&text)
            .map_err(|e| InputError::new(path.display().to_string(), e.message().to_string()))?;
        r.evals = saved.evals;
        r.parts = saved.embedding_parts;
        if let Ok(entries) = std::fs::read_dir(&r.parts_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !r.parts.contains(&name) {
                    crate::log::remove_file_if_present(&e.path())?;
                }
            }
        }
        if r.embeddings_every > 0 {
            let parts = r.parts.iter().map(|p| r.parts_dir.join(p)).collect();
            r.embeddings = Some(EmbeddingsWriter::continuing(
                staging.join(EMBEDDINGS_FILE),
                spec.run_id.clone(),
                parts,
            ));
        }
        Ok(r)
    }
}

fn block(kind: &'static str, view: u8, t: &Tensor) -> anyhow::Result<EmbeddingBlock> {
    let t = t.detach().to_dtype(candle_core::DType::F32)?;
    Ok(EmbeddingBlock {
        kind,
        view,
        dim: t.dim(1)?,
        values: t.flatten_all()?.to_vec1::<f32>()?,
    })
}

impl StepObserver for Recorder {
    fn on_step(
        &mut self,
        record: &StepRecord,
        e: &Embeddings,
        batch: &TwoViewBatch,
    ) -> anyhow::Result<()> {
        self.steps.rows.push(record.clone());
        if let Some(writer) = &self.embeddings {
            if self.embeddings_every > 0 && record.step.is_multiple_of(self.embeddings_every) {
                let mut blocks = Vec::with_capacity(8);
                for v in 0..2 {
                    blocks.push(block("y", v as u8, &e.y[v])?);
                    blocks.push(block("z", v as u8, &e.z[v])?);
                    blocks.push(block("z_target", v as u8, &e.z_target[v])?);
                    if let Some(p) = &e.p {
                        blocks.push(block("p", v as u8, &p[v])?);
                    }
                }
                writer.send(LoggedStep {
                    step: record.step,
                    epoch: record.epoch,
                    image_ids: batch.image_ids.clone(),
                    labels: batch.labels.clone(),
                    blocks,
                })?;
            }
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: u32,
        step: u64,
        last: bool,
        method: &dyn Method,
    ) -> anyhow::Result<EpochEnd> {
        if epoch.is_multiple_of(self.eval.config.log.eval_every_epochs) || last {
            match self.eval.run(method, epoch, step) {
                Ok(record) => self.evals.push(record),
                Err(e) if e.downcast_ref::<NonFiniteEmbeddings>().is_some() => {
                    return Ok(EpochEnd::Diverged(e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(EpochEnd::Continue)
    }

    fn save(&mut self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        self.steps.write(&dir.join(STEPS_FILE))?;
        if let Some(writer) = &self.embeddings {
            let next = self.steps.rows.last().map_or(0, |r| r.step + 1);
            let name = format!("part-{next:010}.parquet");
            crate::log::create_dir(&self.parts_dir)?;
            if writer.save_part(self.parts_dir.join(&name))? {
                self.parts.push(name);
            }
        }
        let saved = SavedLogs {
            evals: self.evals.clone(),
            embedding_parts: self.parts.clone(),
        };
        crate::log::write_text(&dir.join(SAVED_LOGS_FILE), &toml::to_string(&saved)?)?;
        Ok(self.parts.iter().map(|p| self.parts_dir.join(p)).collect())
    }
}
