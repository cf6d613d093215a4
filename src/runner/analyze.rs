//! `collapse-lab analyze`: recomputes the per-step metrics of a run from its logged
//! embeddings and its final evaluation from its stored weights, with the same functions the
//! trainer used live, and reports how far they are from the live values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use polars::prelude::*;

use crate::config::{load_run_config, InputError};
use crate::data::{open_dataset, Augmenter};
use crate::eval::EvalSplit;
use crate::eval::{evaluate, EvalSetup};
use crate::log::{metric_columns, EvalRecord};
use crate::log::{read_parquet, write_parquet, TableBuilder};
use crate::metrics::cosine::symmetric_pos_neg_cos;
use crate::metrics::rank::effective_rank;
use crate::metrics::spread::z_std;

/// Metrics recomputed for one logged step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAnalysis {
    pub run_id: String,
    pub step: u64,
    pub epoch: u32,
    pub pos_cos: f64,
    pub neg_cos: f64,
    pub z_std: f64,
    pub effective_rank: f64,
    /// Largest |recomputed − live| over the metrics above: None without a live row, NaN when
    /// a value on either side is not finite.
    pub max_abs_diff_live: Option<f64>,
    pub live: LiveComparison,
}

/// Recomputed and live values agree when they differ by at most this (f32 embeddings, f64
/// metrics: the same code on the same numbers gives 0; this leaves room for reductions done in
/// another order).
pub const LIVE_TOLERANCE: f64 = 1e-5;

/// How a recomputed metric compares with the one logged live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveComparison {
    /// Every value within [`LIVE_TOLERANCE`].
    Agrees,
    /// Some value differs by more.
    Disagrees,
    /// No live value to compare with (no row, or no `steps.parquet`).
    Missing,
    /// A value on either side is NaN or infinite: nothing was compared.
    NotFinite,
}

impl LiveComparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agrees => "agrees",
            Self::Disagrees => "disagrees",
            Self::Missing => "missing",
            Self::NotFinite => "not_finite",
        }
    }

    /// Compares (recomputed, live) pairs; `None` when there is no live record at all. Returns
    /// the outcome and the largest |difference| (NaN when a value is not finite).
    pub fn of(pairs: Option<&[(f64, f64)]>) -> (Self, Option<f64>) {
        let Some(pairs) = pairs else {
            return (Self::Missing, None);
        };
        if pairs.iter().any(|(a, b)| !a.is_finite() || !b.is_finite()) {
            return (Self::NotFinite, Some(f64::NAN));
        }
        let d = pairs.iter().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let verdict = if d <= LIVE_TOLERANCE {
            Self::Agrees
        } else {
            Self::Disagrees
        };
        (verdict, Some(d))
    }
}

fn column<'a>(df: &'a DataFrame, name: &str, file: &Path) -> Result<&'a Column, InputError> {
    df.column(name).map_err(|_| {
        InputError::new(
            file.display().to_string(),
            format!("missing column `{name}`"),
        )
    })
}

fn typed<T>(r: PolarsResult<T>, name: &str, want: &str, file: &Path) -> Result<T, InputError> {
    r.map_err(|_| {
        InputError::new(
            file.display().to_string(),
            format!("column `{name}` is not {want}"),
        )
    })
}

/// Embedding matrices of one step, keyed by (kind, view), rows in sample order.
type StepBlocks = BTreeMap<(String, u8), Vec<(u32, Vec<f32>)>>;

/// Logged steps of one run: step → (epoch, embedding blocks).
pub type LoggedSteps = BTreeMap<u64, (u32, StepBlocks)>;

/// Reads `embeddings.parquet` into per-step blocks, checking every record.
pub fn read_embeddings(path: &Path) -> Result<(String, LoggedSteps), InputError> {
    let df = read_parquet(path)?;
    let src = path.display().to_string();
    let run_ids = typed(
        column(&df, "run_id", path)?.str(),
        "run_id",
        "a string",
        path,
    )?;
    let steps = typed(column(&df, "step", path)?.u64(), "step", "u64", path)?;
    let epochs = typed(column(&df, "epoch", path)?.u32(), "epoch", "u32", path)?;
    let samples = typed(column(&df, "sample", path)?.u32(), "sample", "u32", path)?;
    let views = typed(column(&df, "view", path)?.u8(), "view", "u8", path)?;
    let kinds = typed(column(&df, "kind", path)?.str(), "kind", "a string", path)?;
    let vectors = typed(
        column(&df, "vector", path)?.list(),
        "vector",
        "a list of f32",
        path,
    )?;
    let run_id = run_ids.get(0).unwrap_or_default().to_string();
    let mut out: LoggedSteps = BTreeMap::new();
    let mut dims: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..df.height() {
        let record = |what: &str| InputError::new(&src, format!("record {i}: {what}"));
        let (Some(step), Some(epoch), Some(sample), Some(view), Some(kind)) = (
            steps.get(i),
            epochs.get(i),
            samples.get(i),
            views.get(i),
            kinds.get(i),
        ) else {
            return Err(record("null in step/epoch/sample/view/kind"));
        };
        let vector = vectors
            .get_as_series(i)
            .ok_or_else(|| record("null vector"))?;
        let floats = vector
            .f32()
            .map_err(|_| record("vector is not a list of f32"))?;
        if floats.null_count() > 0 {
            return Err(record("null inside vector"));
        }
        let values: Vec<f32> = floats.into_no_null_iter().collect();
        let expected = *dims.entry(kind.to_string()).or_insert(values.len());
        if values.len() != expected || expected == 0 {
            return Err(record(&format!(
                "vector of kind `{kind}` has length {}, expected {expected} like the first `{kind}` record",
                values.len()
            )));
        }
        out.entry(step)
            .or_insert_with(|| (epoch, BTreeMap::new()))
            .1
            .entry((kind.to_string(), view))
            .or_default()
            .push((sample, values));
    }
    Ok((run_id, out))
}

fn matrix(rows: &mut [(u32, Vec<f32>)], device: &Device) -> candle_core::Result<Tensor> {
    rows.sort_by_key(|r| r.0);
    let d = rows.first().map_or(0, |r| r.1.len());
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), d), device)
}

/// Live metrics of a run by step, from `steps.parquet`.
fn live_metrics(path: &Path) -> Result<BTreeMap<u64, [f64; 4]>, InputError> {
    let df = read_parquet(path)?;
    let step = typed(column(&df, "step", path)?.u64(), "step", "u64", path)?;
    let names = ["pos_cos", "neg_cos", "z_std", "effective_rank"];
    let cols: Vec<_> = names
        .iter()
        .map(|n| typed(column(&df, n, path)?.f64(), n, "f64", path))
        .collect::<Result<_, _>>()?;
    let mut out = BTreeMap::new();
    for i in 0..df.height() {
        if let Some(s) = step.get(i) {
            let v = [0, 1, 2, 3].map(|k| cols[k].get(i).unwrap_or(f64::NAN));
            out.insert(s, v);
        }
    }
    Ok(out)
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

/// The final evaluation of a run recomputed from its stored weights, and its largest
/// difference from the live one (last row of `evals.parquet`).
#[derive(Debug, Clone)]
pub struct EvalAnalysis {
    pub run_id: String,
    pub record: EvalRecord,
    pub max_abs_diff_live: Option<f64>,
    pub live: LiveComparison,
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
    let live = read_parquet(&evals_path)?;
    let height = live.height();
    if height == 0 {
        return Err(InputError::new(evals_path.display().to_string(), "has no rows").into());
    }
    let last = height - 1;
    let epoch = typed(
        column(&live, "epoch", &evals_path)?.u32(),
        "epoch",
        "u32",
        &evals_path,
    )?
    .get(last)
    .unwrap_or(0);
    let step = typed(
        column(&live, "step", &evals_path)?.u64(),
        "step",
        "u64",
        &evals_path,
    )?
    .get(last)
    .unwrap_or(0);
    let augmenter = Augmenter::new(&cfg.augment, cfg.dataset.image_size, pair.eval.channels())?;
    let split = EvalSplit::for_run(&cfg, pair.eval.as_ref());
    let setup = EvalSetup::for_run(&cfg, pair.eval.as_ref(), &augmenter, &split, &dev);
    let record = evaluate(method.online(), &setup, epoch, step)?;
    let metrics = [
        ("knn_acc", record.knn_acc.unwrap_or(f64::NAN)),
        ("probe_acc", record.probe_acc.unwrap_or(f64::NAN)),
        ("y_std", record.y_std),
        ("y_effective_rank", record.y_effective_rank),
        ("z_std", record.z_std),
        ("z_effective_rank", record.z_effective_rank),
        ("alpha_req", record.alpha_req),
        ("align", record.align),
        ("uniform", record.uniform),
    ];
    // A metric the live table left null (kNN and probe of an unlabelled split) is not compared.
    let mut pairs = Vec::new();
    for (name, ours) in metrics {
        let theirs = typed(
            column(&live, name, &evals_path)?.f64(),
            name,
            "f64",
            &evals_path,
        )?
        .get(last);
        if let Some(t) = theirs {
            pairs.push((ours, t));
        }
    }
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

/// Writes `analysis.parquet`: recomputed per-step metrics (same names as `steps.parquet`)
/// and their distance from the live values.
pub fn write_analysis(path: &Path, rows: &[StepAnalysis]) -> anyhow::Result<()> {
    let col = |f: fn(&StepAnalysis) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let mut df = TableBuilder::new()
        .str("run_id", rows.iter().map(|r| r.run_id.clone()).collect())
        .u64("step", rows.iter().map(|r| r.step).collect())
        .u32("epoch", rows.iter().map(|r| r.epoch).collect())
        .f64("pos_cos", col(|r| r.pos_cos))
        .f64("neg_cos", col(|r| r.neg_cos))
        .f64("z_std", col(|r| r.z_std))
        .f64("effective_rank", col(|r| r.effective_rank))
        .opt_f64(
            "max_abs_diff_live",
            rows.iter().map(|r| r.max_abs_diff_live).collect(),
        )
        .str(
            "live_comparison",
            rows.iter().map(|r| r.live.as_str().to_string()).collect(),
        )
        .build()?;
    write_parquet(path, &mut df)
}

/// Writes `analysis_evals.parquet`: each run's final evaluation recomputed from its weights.
pub fn write_eval_analysis(path: &Path, rows: &[EvalAnalysis]) -> anyhow::Result<()> {
    let base = TableBuilder::new().str("run_id", rows.iter().map(|r| r.run_id.clone()).collect());
    let records: Vec<&EvalRecord> = rows.iter().map(|r| &r.record).collect();
    let mut df = metric_columns(base, &records)
        .opt_f64(
            "max_abs_diff_live",
            rows.iter().map(|r| r.max_abs_diff_live).collect(),
        )
        .str(
            "live_comparison",
            rows.iter().map(|r| r.live.as_str().to_string()).collect(),
        )
        .build()?;
    write_parquet(path, &mut df)
}
