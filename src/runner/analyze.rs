//! `collapse-lab analyze`: recomputes the per-step metrics of a run from its logged
//! embeddings and its final evaluation from its stored weights, with the same functions the
//! trainer used live, and reports how far they are from the live values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::config::{load_run_config, InputError};
use crate::data::{open_dataset, Augmenter};
use crate::eval::EvalSplit;
use crate::eval::{evaluate, EvalSetup};
use crate::log::{
    read_embeddings, read_evals, EvalAnalysis, EvalRecord, LiveComparison, StepAnalysis, StepsLog,
};
use crate::metrics::cosine::symmetric_pos_neg_cos;
use crate::metrics::rank::effective_rank;
use crate::metrics::spread::z_std;

fn matrix(rows: &mut [(u32, Vec<f32>)], device: &Device) -> candle_core::Result<Tensor> {
    rows.sort_by_key(|r| r.0);
    let d = rows.first().map_or(0, |r| r.1.len());
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), d), device)
}

/// Live metrics of a run by step, from `steps.parquet`.
fn live_metrics(path: &Path) -> Result<BTreeMap<u64, [f64; 4]>, InputError> {
    Ok(StepsLog::read(path)?
        .rows
        .into_iter()
        .map(|r| (r.step, [r.pos_cos, r.neg_cos, r.z_std, r.effective_rank]))
        .collect())
}

/// Recomputes every logged step of the run in `run_dir`.
pub fn analyze_run(run_dir: &Path) -> anyhow::Result<Vec<StepAnalysis>> {
    let emb_path = run_dir.join("embeddings.parquet");
    if !emb_path.is_file() {
        return Err(InputError::new(
            emb_path.display().to_string(),
            "missing (was the run logged with log.embeddings_every = 0?)",
        )
        .into());
    }
    let (run_id, steps) = read_embeddings(&emb_path)?;
    let steps_path = run_dir.join("steps.parquet");
    let live = if steps_path.is_file() {
        live_metrics(&steps_path)?
    } else {
        BTreeMap::new()
    };
    let dev = Device::Cpu;
    let mut out = Vec::with_capacity(steps.len());
    for (step, (epoch, mut blocks)) in steps {
        let mut take = |kind: &str, view: u8| -> anyhow::Result<Tensor> {
            let rows = blocks.get_mut(&(kind.to_string(), view)).ok_or_else(|| {
                InputError::new(
                    emb_path.display().to_string(),
                    format!("step {step}: no `{kind}` rows of view {view}"),
                )
            })?;
            Ok(matrix(rows, &dev)?)
        };
        let z = [take("z", 0)?, take("z", 1)?];
        let zt = [take("z_target", 0)?, take("z_target", 1)?];
        let (pos_cos, neg_cos) = symmetric_pos_neg_cos(&z, &zt)?;
        let ours = [pos_cos, neg_cos, z_std(&z[0])?, effective_rank(&z[0])?];
        let pairs: Option<Vec<(f64, f64)>> = live
            .get(&step)
            .map(|l| ours.iter().copied().zip(l.iter().copied()).collect());
        let (comparison, diff) = LiveComparison::of(pairs.as_deref());
        out.push(StepAnalysis {
            run_id: run_id.clone(),
            step,
            epoch,
            pos_cos: ours[0],
            neg_cos: ours[1],
            z_std: ours[2],
            effective_rank: ours[3],
            max_abs_diff_live: diff,
            live: comparison,
        });
    }
    Ok(out)
}

/// The run folders of a grid folder (those holding `embeddings.parquet`), or the folder
/// itself when it is a run.
pub fn run_dirs(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let src = dir.display().to_string();
    if !dir.is_dir() {
        return Err(InputError::new(src, "not a folder"));
    }
    if dir.join("steps.parquet").is_file() || dir.join("embeddings.parquet").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| InputError::new(&src, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("embeddings.parquet").is_file())
        .collect();
    runs.sort();
    if runs.is_empty() {
        return Err(InputError::new(
            src,
            "holds no run with embeddings.parquet (expected a run or grid folder)",
        ));
    }
    Ok(runs)
}

/// Rebuilds the run's network from `config.toml`, loads `encoder.safetensors` and
/// `heads.safetensors`, and evaluates it as the trainer did after the last epoch.
pub fn reevaluate_run(run_dir: &Path) -> anyhow::Result<EvalAnalysis> {
    let cfg = load_run_config(&run_dir.join("config.toml"))?;
    let dev = Device::Cpu;
    let pair = open_dataset(&cfg.dataset)?;
    let method = crate::method::build(&cfg, pair.train.channels(), &dev)?;
    let mut weights = std::collections::HashMap::new();
    for file in ["encoder.safetensors", "heads.safetensors"] {
        let path = run_dir.join(file);
        let src = path.display().to_string();
        if !path.is_file() {
            return Err(InputError::new(src, "missing").into());
        }
        let tensors = candle_core::safetensors::load(&path, &dev)
            .map_err(|e| InputError::new(&src, format!("not a readable safetensors file: {e}")))?;
        weights.extend(tensors);
    }
    method.online().store.load(&weights).map_err(|e| {
        InputError::new(
            run_dir.display().to_string(),
            format!("weights do not fit config.toml: {e}"),
        )
    })?;
    let evals_path = run_dir.join("evals.parquet");
    let live = read_evals(&evals_path, None)?;
    let Some(last) = live.last() else {
        return Err(InputError::new(evals_path.display().to_string(), "has no rows").into());
    };
    let (epoch, step) = (last.epoch, last.step);
    let augmenter = Augmenter::new(&cfg.augment, cfg.dataset.image_size, pair.eval.channels())?;
    let split = EvalSplit::for_run(&cfg, pair.eval.as_ref());
    let setup = EvalSetup::for_run(&cfg, pair.eval.as_ref(), &augmenter, &split, &dev);
    let record = evaluate(method.online(), &setup, epoch, step)?;
    // (ours, live); a metric the live table left null (kNN and probe of an unlabelled split)
    // is not compared.
    let scalar = |r: &EvalRecord| {
        [
            r.knn_acc,
            r.probe_acc,
            Some(r.y_std),
            Some(r.y_effective_rank),
            Some(r.z_std),
            Some(r.z_effective_rank),
            Some(r.alpha_req),
            Some(r.align),
            Some(r.uniform),
        ]
    };
    let pairs: Vec<(f64, f64)> = scalar(&record)
        .into_iter()
        .zip(scalar(last))
        .filter_map(|(ours, theirs)| Some((ours.unwrap_or(f64::NAN), theirs?)))
        .collect();
    let (comparison, max_diff) = LiveComparison::of(Some(&pairs));
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(EvalAnalysis {
        run_id,
        record,
        max_abs_diff_live: max_diff,
        live: comparison,
    })
}
