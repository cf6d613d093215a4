//! The grid's tables as plain Rust rows, read once for the report.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use crate::config::{InputError, BASELINE_VARIANT};
use crate::log::{read_parquet, ColumnReader, Status};
use crate::metrics::Verdict;

/// One row of `summary.parquet` (the columns the report uses).
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: String,
    pub variant: String,
    pub seed: u64,
    pub method: String,
    pub projector_norm: String,
    pub predictor_norm: Option<String>,
    pub status: Status,
    pub error: Option<String>,
    pub final_pos_cos: Option<f64>,
    pub final_neg_cos: Option<f64>,
    pub final_z_std: Option<f64>,
    pub final_effective_rank: Option<f64>,
    pub eval_z_effective_rank: Option<f64>,
    pub final_knn_acc: Option<f64>,
    pub final_probe_acc: Option<f64>,
    pub collapse_verdict: Option<Verdict>,
    /// CPU model and instruction set (empty in summaries written before it was recorded).
    pub cpu: String,
    /// `dataset` and, for a data set on disk, ` at <dataset_path>`.
    pub data: String,
}

#[derive(Debug, Clone)]
pub struct StepRow {
    pub step: u64,
    pub epoch: u32,
    pub pos_cos: f64,
    pub neg_cos: f64,
    pub z_std: f64,
    pub effective_rank: f64,
}

#[derive(Debug, Clone)]
pub struct EvalRow {
    pub epoch: u32,
    pub probe_acc: Option<f64>,
    pub knn_acc: Option<f64>,
}

/// Everything the report reads from a grid folder.
pub struct GridTables {
    pub name: String,
    pub runs: Vec<RunRow>,
    pub steps: BTreeMap<String, Vec<StepRow>>,
    pub evals: BTreeMap<String, Vec<EvalRow>>,
    /// run → (space → eigenvalues at the last evaluation)
    pub spectra: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Projection dimension (for the 1/√d and d reference lines), from the first run's steps.
    pub projection_dim: Option<usize>,
}

fn open(path: &Path) -> Result<DataFrame, InputError> {
    if !path.is_file() {
        return Err(InputError::new(path.display().to_string(), "missing"));
    }
    read_parquet(path)
}

impl GridTables {
    /// The distinct values of `field` over the grid's runs (empty ones left out), in
    /// first-seen order: the CPUs the runs were measured on, the data they used.
    pub fn distinct(&self, field: fn(&RunRow) -> &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            let v = field(r);
            if !v.is_empty() && !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
        out
    }

    /// Reads `summary.parquet` and each run's tables. A run whose tables are missing (a
    /// failed run) is kept in `runs` and simply has no curves.
    pub fn load(grid_dir: &Path) -> Result<Self, InputError> {
        let summary_path = grid_dir.join("summary.parquet");
        let df = open(&summary_path)?;
        let c = ColumnReader::new(&df, &summary_path);
        let (ids, variants, seeds) = (c.strs("run_id")?, c.strs("variant")?, c.u64s("seed")?);
        let (methods, proj, pred) = (
            c.strs("method")?,
            c.strs("projector_norm")?,
            c.strs("predictor_norm")?,
        );
        let (status, error, verdict) = (
            c.strs("status")?,
            c.strs("error")?,
            c.strs("collapse_verdict")?,
        );
        let (pos, neg, zstd, rank) = (
            c.f64s("final_pos_cos")?,
            c.f64s("final_neg_cos")?,
            c.f64s("final_z_std")?,
            c.f64s("final_effective_rank")?,
        );
        let (knn, probe) = (c.f64s("final_knn_acc")?, c.f64s("final_probe_acc")?);
        // Columns added later: absent from older summaries.
        let n = df.height();
        let eval_rank = c
            .f64s("eval_z_effective_rank")
            .unwrap_or_else(|_| vec![None; n]);
        let cpu = c.strs("cpu").unwrap_or_else(|_| vec![None; n]);
        let dataset = c.strs("dataset")?;
        let dataset_path = c.strs("dataset_path").unwrap_or_else(|_| vec![None; n]);
        let mut runs = Vec::with_capacity(df.height());
        for i in 0..df.height() {
            let record = |what: String| {
                InputError::new(
                    summary_path.display().to_string(),
                    format!("record {i}: {what}"),
                )
            };
            let spelled = status[i].as_deref().unwrap_or_default();
            let status = Status::parse(spelled).ok_or_else(|| {
                record(format!(
                    "unknown status `{spelled}`, expected ok, diverged, failed or interrupted"
                ))
            })?;
            let collapse_verdict = match verdict[i].as_deref() {
                None => None,
                Some(v) => Some(Verdict::parse(v).ok_or_else(|| {
                    record(format!(
                        "unknown collapse_verdict `{v}`, expected healthy, collapsed or partial"
                    ))
                })?),
            };
            runs.push(RunRow {
                run_id: ids[i].clone().unwrap_or_default(),
                variant: variants[i].clone().unwrap_or_default(),
                seed: seeds[i].unwrap_or(0),
                method: methods[i].clone().unwrap_or_default(),
                projector_norm: proj[i].clone().unwrap_or_default(),
                predictor_norm: pred[i].clone(),
                status,
                error: error[i].clone(),
                final_pos_cos: pos[i],
                final_neg_cos: neg[i],
                final_z_std: zstd[i],
                final_effective_rank: rank[i],
                eval_z_effective_rank: eval_rank[i],
                final_knn_acc: knn[i],
                final_probe_acc: probe[i],
                collapse_verdict,
                cpu: cpu[i].clone().unwrap_or_default(),
                data: match &dataset_path[i] {
                    Some(p) => format!("{} at {p}", dataset[i].clone().unwrap_or_default()),
                    None => dataset[i].clone().unwrap_or_default(),
                },
            });
        }
        let mut steps = BTreeMap::new();
        let mut evals = BTreeMap::new();
        let mut spectra = BTreeMap::new();
        for run in &runs {
            let dir = grid_dir.join(&run.run_id);
            let steps_path = dir.join("steps.parquet");
            if steps_path.is_file() {
                let df = read_parquet(&steps_path)?;
                let c = ColumnReader::new(&df, &steps_path);
                let (st, ep) = (c.u64s("step")?, c.u32s("epoch")?);
                let (p, n, z, r) = (
                    c.f64s("pos_cos")?,
                    c.f64s("neg_cos")?,
                    c.f64s("z_std")?,
                    c.f64s("effective_rank")?,
                );
                let rows = (0..df.height())
                    .map(|i| StepRow {
                        step: st[i].unwrap_or(0),
                        epoch: ep[i].unwrap_or(0),
                        pos_cos: p[i].unwrap_or(f64::NAN),
                        neg_cos: n[i].unwrap_or(f64::NAN),
                        z_std: z[i].unwrap_or(f64::NAN),
                        effective_rank: r[i].unwrap_or(f64::NAN),
                    })
                    .collect();
                steps.insert(run.run_id.clone(), rows);
            }
            let evals_path = dir.join("evals.parquet");
            if evals_path.is_file() {
                let df = read_parquet(&evals_path)?;
                let c = ColumnReader::new(&df, &evals_path);
                let (ep, pr, kn) = (c.u32s("epoch")?, c.f64s("probe_acc")?, c.f64s("knn_acc")?);
                let rows = (0..df.height())
                    .map(|i| EvalRow {
                        epoch: ep[i].unwrap_or(0),
                        probe_acc: pr[i],
                        knn_acc: kn[i],
                    })
                    .collect();
                evals.insert(run.run_id.clone(), rows);
            }
            let spectrum_path = dir.join("spectrum.parquet");
            if spectrum_path.is_file() {
                let df = read_parquet(&spectrum_path)?;
                let c = ColumnReader::new(&df, &spectrum_path);
                let (ep, space, value) = (
                    c.u32s("epoch")?,
                    c.strs("space")?,
                    c.f64s("singular_value")?,
                );
                let last = ep.iter().flatten().copied().max().unwrap_or(0);
                let mut by_space: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for i in 0..df.height() {
                    if ep[i] == Some(last) {
                        if let (Some(s), Some(v)) = (&space[i], value[i]) {
                            by_space.entry(s.clone()).or_default().push(v);
                        }
                    }
                }
                spectra.insert(run.run_id.clone(), by_space);
            }
        }
        let projection_dim = spectra.values().find_map(|s| s.get("z").map(Vec::len));
        let name = grid_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            name,
            runs,
            steps,
            evals,
            spectra,
            projection_dim,
        })
    }

    /// Variants in grid order, the `random` baseline excluded.
    pub fn variants(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            if r.variant != BASELINE_VARIANT && !out.contains(&r.variant) {
                out.push(r.variant.clone());
            }
        }
        out
    }

    pub fn runs_of<'a>(&'a self, variant: &'a str) -> impl Iterator<Item = &'a RunRow> + 'a {
        self.runs.iter().filter(move |r| r.variant == variant)
    }

    /// Mean and seed standard deviation of one final metric over a variant's `ok` runs.
    pub fn variant_stat(
        &self,
        variant: &str,
        metric: fn(&RunRow) -> Option<f64>,
    ) -> Option<(f64, f64)> {
        let values: Vec<f64> = self
            .runs_of(variant)
            .filter(|r| r.status == Status::Ok)
            .filter_map(metric)
            .collect();
        mean_sd(&values)
    }
}

/// Mean and sample standard deviation (0 for one value); None without values.
pub fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some((mean, sd))
}
