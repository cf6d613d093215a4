//! The observer a grid run attaches to training: keeps the step log, sends embeddings of
//! logged steps to the writer thread, and evaluates at epoch ends.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::analysis::{evaluate, EvalRecord, EvalSetup, EvalSplit};
use crate::config::RunConfig;
use crate::data::{Augmenter, Dataset, TwoViewBatch};
use crate::log::{EmbeddingBlock, EmbeddingsWriter, LoggedStep, StepsLog};
use crate::method::{Embeddings, Method};
use crate::train::{StepObserver, StepRecord};

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
            if self.embeddings_every > 0 && record.step % self.embeddings_every == 0 {
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
    ) -> anyhow::Result<()> {
        if epoch % self.eval.config.log.eval_every_epochs == 0 || last {
            self.evals.push(self.eval.run(method, epoch, step)?);
        }
        Ok(())
    }
}
