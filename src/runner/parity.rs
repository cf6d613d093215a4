//! `collapse-lab parity-dump`: what `bench/torch_parity.py` needs to replay a run's first K
//! steps in PyTorch and compare: the exact augmented views of every step, the per-step loss,
//! cosines, learning rate, τ and gradient norm, and the state before every step and after the
//! last one (`state-<k>.safetensors`: online and target weights with batch-norm statistics,
//! momentum buffers, queue; PyTorch's names), so each step can be checked from the same state
//! as well as K steps run freely from the first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::config::RunConfig;
use crate::data::{open_dataset, Dataset, TwoViewBatch};
use crate::log::{write_text, StepRecord};
use crate::method::{build, Embeddings, Method, QUEUE_KEYS};
use crate::model::torch_names::{to_torch_under, BN_PASSES_PER_STEP};
use crate::train::{
    checkpoint_state, train_with, RunControl, RunStatus, StepObserver, ONLINE_PREFIX,
};

/// Views and records of every step.
#[derive(Default)]
struct Recorded {
    views: Vec<(String, Tensor)>,
    records: Vec<StepRecord>,
    shape: (usize, usize, usize, usize),
}

impl StepObserver for Recorded {
    fn on_step(
        &mut self,
        record: &StepRecord,
        _embeddings: &Embeddings,
        batch: &TwoViewBatch,
    ) -> anyhow::Result<()> {
        for (name, v) in [("view0", &batch.view0), ("view1", &batch.view1)] {
            let t = Tensor::from_slice(v, self.shape, &Device::Cpu)?;
            self.views.push((format!("{name}.{}", record.step), t));
        }
        self.records.push(record.clone());
        Ok(())
    }
}

/// Everything a checkpoint names, in PyTorch's names: `online.*`, `target.*`, `velocity.*`
/// (the online parameter's name) and `queue`.
fn torch_state(state: &[(String, Tensor)], steps: u64) -> anyhow::Result<Vec<(String, Tensor)>> {
    let tracked = steps * BN_PASSES_PER_STEP;
    let mut out = to_torch_under(ONLINE_PREFIX, state, tracked)?;
    out.extend(to_torch_under(
        crate::method::TARGET_PREFIX,
        state,
        tracked,
    )?);
    out.extend(
        to_torch_under(crate::train::VELOCITY_PREFIX, state, 0)?
            .into_iter()
            .filter(|(n, _)| !n.ends_with("num_batches_tracked")),
    );
    if let Some((_, q)) = state.iter().find(|(n, _)| n == QUEUE_KEYS) {
        out.push(("queue".into(), q.clone()));
    }
    Ok(out)
}

fn save(path: &Path, tensors: Vec<(String, Tensor)>) -> anyhow::Result<()> {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    crate::log::write_via_temp(path, "", |tmp| {
        Ok(candle_core::safetensors::save(&map, tmp)?)
    })
}

/// Trains `cfg` for `steps` steps on `device` and writes the parity files into `out`.
/// Returns the number of steps trained.
pub fn parity_dump(
    cfg: &RunConfig,
    steps: u64,
    out: &Path,
    device: &Device,
) -> anyhow::Result<u64> {
    let mut cfg = cfg.clone();
    crate::log::create_given_dir(out)?;
    cfg.train.max_steps = Some(steps);
    write_text(&out.join("config.toml"), &toml::to_string_pretty(&cfg)?)?;
    let pair = open_dataset(&cfg.dataset)?;
    let channels = pair.train.channels();
    // The same seed builds the same networks `train_with` starts from.
    let initial: Box<dyn Method> = build(&cfg, channels, device)?;
    let optimizer = crate::train::Optimizer::new(&cfg.optim, initial.online().store.params().len());
    save(
        &out.join("state-0.safetensors"),
        torch_state(&checkpoint_state(initial.as_ref(), &optimizer), 0)?,
    )?;
    let size = cfg.dataset.image_size;
    let shape = (cfg.train.batch_size, channels, size, size);
    // The state after k steps, for every k: the K-step run stopped after step k (training is
    // deterministic, and the schedules stay the K-step run's). Cheap at the sizes parity is
    // checked at.
    let mut rec = Recorded::default();
    for k in 1..=steps {
        rec = Recorded {
            shape,
            ..Recorded::default()
        };
        let train_set: Arc<dyn Dataset> = pair.train.clone();
        let control = RunControl {
            stop_after: Some(k),
            ..RunControl::default()
        };
        let (summary, _) = train_with(&cfg, device, train_set, &mut rec, None, control)?;
        if let RunStatus::Diverged { reason, .. } = &summary.status {
            anyhow::bail!("the run diverged, nothing to compare: {reason}");
        }
        let done = rec.records.len() as u64;
        save(
            &out.join(format!("state-{done}.safetensors")),
            torch_state(&summary.final_state, done)?,
        )?;
        if done < k {
            break; // The data set has fewer steps.
        }
    }
    save(
        &out.join("views.safetensors"),
        std::mem::take(&mut rec.views),
    )?;
    let column = |f: fn(&StepRecord) -> f64| -> anyhow::Result<Tensor> {
        let v: Vec<f64> = rec.records.iter().map(f).collect();
        Ok(Tensor::from_vec(v, rec.records.len(), &Device::Cpu)?.to_dtype(DType::F64)?)
    };
    save(
        &out.join("steps.safetensors"),
        vec![
            ("loss".into(), column(|r| r.loss)?),
            ("pos_cos".into(), column(|r| r.pos_cos)?),
            ("neg_cos".into(), column(|r| r.neg_cos)?),
            ("lr".into(), column(|r| r.lr)?),
            ("tau".into(), column(|r| r.tau.unwrap_or(f64::NAN))?),
            ("grad_norm".into(), column(|r| r.grad_norm)?),
        ],
    )?;
    Ok(rec.records.len() as u64)
}
