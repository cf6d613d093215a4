//! Runs a grid: every variant × seed is trained, logged and summarised. A run that fails or
//! diverges is recorded as such and the grid goes on.

mod datasets;
mod final_metrics;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::Device;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::analysis::{collapse_step, is_collapsed, verdict};
use crate::config::{Grid, RunSpec};
use crate::data::{Dataset, TwoViewBatch};
use crate::log::{write_summary, write_text, StepsLog, SummaryRow};
use crate::method::Embeddings;
use crate::train::{train, RunStatus, StepObserver, StepRecord};

pub use datasets::{open_dataset, DatasetPair};
pub use final_metrics::FinalMetrics;

/// Options of `collapse-lab run` beyond the grid itself.
pub struct RunOptions {
    pub out: PathBuf,
    pub device: Device,
    pub progress: bool,
    /// Runs trained at the same time. With more than one, each run computes on one thread
    /// (the CLI sets that up): small networks use cores better side by side than split.
    pub jobs: usize,
}

/// What a grid run leaves behind.
pub struct GridOutcome {
    pub dir: PathBuf,
    pub rows: Vec<SummaryRow>,
}

struct Recorder {
    steps: StepsLog,
}

impl StepObserver for Recorder {
    fn on_step(&mut self, record: &StepRecord, _e: &Embeddings, _b: &TwoViewBatch) -> anyhow::Result<()> {
        self.steps.rows.push(record.clone());
        Ok(())
    }
}

/// Trains every run of `grid` under `opts.out/<grid name>/`, `opts.jobs` runs at a time.
pub fn run_grid(grid: &Grid, opts: &RunOptions) -> anyhow::Result<GridOutcome> {
    let runs = grid.expand()?;
    let dir = opts.out.join(&grid.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_text(&dir.join("grid.toml"), &grid.to_toml())?;

    // Every data set the grid needs, opened once and shared by the runs.
    let mut datasets: HashMap<String, DatasetPair> = HashMap::new();
    for spec in &runs {
        let key = dataset_key(spec)?;
        if !datasets.contains_key(&key) {
            datasets.insert(key, open_dataset(&spec.config.dataset)?);
        }
    }

    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let grid_bar = multi.add(ProgressBar::new(runs.len() as u64));
    grid_bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} runs {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    grid_bar.set_prefix(grid.name.clone());
    let run_style = ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} steps {per_sec} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());

    let jobs = opts.jobs.clamp(1, runs.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SummaryRow>>> = Mutex::new(vec![None; runs.len()]);
    let summary_path = dir.join("summary.parquet");
    let write_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(run_style.clone());
            let (next, results, datasets, runs, dir, multi, grid_bar) =
                (&next, &results, &datasets, &runs, &dir, &multi, &grid_bar);
            let (summary_path, write_error) = (&summary_path, &write_error);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(spec) = runs.get(i) else {
                    bar.finish_and_clear();
                    break;
                };
                bar.set_prefix(spec.run_id.clone());
                let row = run_one(spec, dir, opts, datasets, &bar);
                let line = describe(&row);
                if opts.progress {
                    multi.println(line).ok();
                } else {
                    eprintln!("{line}");
                }
                let mut all = results.lock().unwrap_or_else(|p| p.into_inner());
                all[i] = Some(row);
                // The summary is rewritten after every run, in grid order, so an interrupted
                // grid keeps what it finished.
                let done: Vec<SummaryRow> = all.iter().flatten().cloned().collect();
                if let Err(e) = write_summary(summary_path, &done) {
                    *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
                grid_bar.inc(1);
            });
        }
    });
    grid_bar.finish();
    if let Some(e) = write_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let rows = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    Ok(GridOutcome { dir, rows })
}

fn dataset_key(spec: &RunSpec) -> anyhow::Result<String> {
    Ok(toml::to_string(&spec.config.dataset)?)
}

fn describe(row: &SummaryRow) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.3}"));
    format!(
        "{:<22} {:<9} pos {} neg {} z_std {} rank {} {:<9} {:.1}s",
        row.run_id,
        row.status,
        f(row.final_pos_cos),
        f(row.final_neg_cos),
        f(row.final_z_std),
        f(row.final_effective_rank),
        row.collapse_verdict.as_deref().unwrap_or("–"),
        row.wall_seconds
    )
}

fn run_one(
    spec: &RunSpec,
    grid_dir: &Path,
    opts: &RunOptions,
    datasets: &HashMap<String, DatasetPair>,
    bar: &ProgressBar,
) -> SummaryRow {
    let run_dir = grid_dir.join(&spec.run_id);
    let mut recorder = Recorder {
        steps: StepsLog::new(&spec.run_id, &spec.variant, spec.seed),
    };
    let started = std::time::Instant::now();
    let result = (|| -> anyhow::Result<_> {
        std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        write_text(&run_dir.join("config.toml"), &toml::to_string_pretty(&spec.config)?)?;
        let key = dataset_key(spec)?;
        let pair = datasets.get(&key).context("data set not opened")?;
        let train_set: Arc<dyn Dataset> = pair.train.clone();
        let (summary, method) = train(&spec.config, &opts.device, train_set, &mut recorder, Some(bar))?;
        let encoder: Vec<_> = method
            .online()
            .store
            .named_tensors()
            .into_iter()
            .filter(|(n, _)| n.starts_with("encoder."))
            .collect();
        let map: HashMap<String, candle_core::Tensor> = encoder.into_iter().collect();
        // candle writes to a path: write a temporary sibling, then rename (atomic).
        let tmp = run_dir.join(".encoder.safetensors.tmp");
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, run_dir.join("encoder.safetensors"))?;
        Ok(summary)
    })();
    // The steps are written whatever happened: a diverged or failed run keeps its log.
    let write_steps = recorder.steps.write(&run_dir.join("steps.parquet"));
    let records = &recorder.steps.rows;
    let dim = spec.config.model.projector.out;
    let fin = FinalMetrics::from_steps(records);
    let streak: Vec<(u64, bool)> = records
        .iter()
        .map(|r| (r.step, is_collapsed(r.pos_cos, r.neg_cos, r.z_std, dim)))
        .collect();
    let mut row = SummaryRow {
        run_id: spec.run_id.clone(),
        variant: spec.variant.clone(),
        seed: spec.seed,
        config: spec.config.clone(),
        status: "ok".into(),
        error: None,
        final_pos_cos: fin.as_ref().map(|f| f.pos_cos),
        final_neg_cos: fin.as_ref().map(|f| f.neg_cos),
        final_z_std: fin.as_ref().map(|f| f.z_std),
        final_effective_rank: fin.as_ref().map(|f| f.effective_rank),
        final_knn_acc: None,
        final_probe_acc: None,
        collapse_verdict: fin
            .as_ref()
            .map(|f| verdict(f.pos_cos, f.neg_cos, f.z_std, f.effective_rank, dim).as_str().to_string()),
        collapse_step: collapse_step(&streak),
        steps: records.len() as u64,
        wall_seconds: started.elapsed().as_secs_f64(),
        images_per_second: 0.0,
    };
    match (result, write_steps) {
        (Ok(summary), Ok(())) => {
            row.images_per_second = summary.images_per_second;
            if let RunStatus::Diverged { reason, .. } = summary.status {
                row.status = "diverged".into();
                row.error = Some(reason);
                row.collapse_verdict = None;
            }
        }
        (Err(e), _) | (Ok(_), Err(e)) => {
            row.status = "failed".into();
            row.error = Some(format!("{e:#}"));
        }
    }
    row
}

