//! The grid's tables as plain Rust rows, read once for the report.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{InputError, BASELINE_VARIANT};
use crate::log::{
    read_evals, read_summary, EvalRecord, Status, StepRecord, StepsLog, SummaryRecord,
};

/// Everything the report reads from a grid folder.
pub struct GridTables {
    pub name: String,
    pub runs: Vec<SummaryRecord>,
    pub steps: BTreeMap<String, Vec<StepRecord>>,
    pub evals: BTreeMap<String, Vec<EvalRecord>>,
    /// run → (space → eigenvalues at the last evaluation)
    pub spectra: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Projection dimension (for the 1/√d and d reference lines), from the first run's steps.
    pub projection_dim: Option<usize>,
}

impl GridTables {
    /// The distinct values of `field` over the grid's runs (empty ones left out), in
    /// first-seen order: the CPUs the runs were measured on, the data they used.
    pub fn distinct(&self, field: fn(&SummaryRecord) -> &str) -> Vec<String> {
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
        if !summary_path.is_file() {
            return Err(InputError::new(
                summary_path.display().to_string(),
                "missing",
            ));
        }
        let runs = read_summary(&summary_path)?;
        let mut steps = BTreeMap::new();
        let mut evals = BTreeMap::new();
        let mut spectra = BTreeMap::new();
        for run in &runs {
            let dir = grid_dir.join(&run.run_id);
            let steps_path = dir.join("steps.parquet");
            if steps_path.is_file() {
                steps.insert(run.run_id.clone(), StepsLog::read(&steps_path)?.rows);
            }
            let evals_path = dir.join("evals.parquet");
            if evals_path.is_file() {
                let spectrum_path = dir.join("spectrum.parquet");
                let spectrum = spectrum_path.is_file().then_some(spectrum_path.as_path());
                let records = read_evals(&evals_path, spectrum)?;
                if let Some(last) = records.iter().max_by_key(|r| r.epoch) {
                    if spectrum.is_some() {
                        let by_space: BTreeMap<String, Vec<f64>> =
                            [("y", &last.y_spectrum), ("z", &last.z_spectrum)]
                                .into_iter()
                                .filter(|(_, values)| !values.is_empty())
                                .map(|(space, values)| (space.to_string(), values.clone()))
                                .collect();
                        spectra.insert(run.run_id.clone(), by_space);
                    }
                }
                evals.insert(run.run_id.clone(), records);
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

    /// Per-step gap pos − neg of one run, averaged by epoch (the step log's 0-based epoch).
    pub fn gap_by_epoch(&self, run_id: &str) -> BTreeMap<u32, f64> {
        let mut acc: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
        for s in self.steps.get(run_id).into_iter().flatten() {
            let g = s.pos_cos - s.neg_cos;
            if g.is_finite() {
                let e = acc.entry(s.epoch).or_insert((0.0, 0));
                e.0 += g;
                e.1 += 1;
            }
        }
        acc.into_iter()
            .map(|(e, (s, n))| (e, s / n as f64))
            .collect()
    }

    pub fn runs_of<'a>(&'a self, variant: &'a str) -> impl Iterator<Item = &'a SummaryRecord> + 'a {
        self.runs.iter().filter(move |r| r.variant == variant)
    }

    /// Mean and seed standard deviation of one final metric over a variant's `ok` runs.
    pub fn variant_stat(
        &self,
        variant: &str,
        metric: fn(&SummaryRecord) -> Option<f64>,
    ) -> Option<(f64, f64)> {
        let values: Vec<f64> = self
            .runs_of(variant)
            .filter(|r| r.outcome.status == Status::Ok)
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
