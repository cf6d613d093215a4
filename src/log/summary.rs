//! `summary.parquet`: one row per run of a grid, with its config as flat columns, its status
//! and its final metrics.

use std::path::Path;

use super::parquet::{read_parquet, write_parquet, ColumnReader, TableBuilder};
use crate::config::{InputError, RunConfig};
use crate::metrics::Verdict;

/// How a run ended, as `summary.parquet`'s `status` column spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Loss, gradient or embeddings became NaN/∞.
    Diverged,
    /// An error stopped it (recorded in `error`).
    Failed,
    /// SIGINT/SIGTERM: checkpointed, resumed by the next `run`.
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Diverged => "diverged",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    /// The status a table spells `s` (None for anything else).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Ok, Self::Diverged, Self::Failed, Self::Interrupted]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Also written per run (`run.toml`, without the config, which sits beside it as
/// `config.toml`) so that a re-run can keep a finished run's row as it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SummaryRow {
    pub run_id: String,
    pub variant: String,
    pub seed: u64,
    #[serde(skip)]
    pub config: RunConfig,
    /// Flattened: `run.toml` keeps one flat table.
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

/// How a run went: the measured columns of `summary.parquet`, the same whether a row is
/// being written ([`SummaryRow`]) or read back ([`SummaryRecord`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// The CPU model, its widest vector instruction set and the one the kernels ran on
    /// (`… (CPU AVX-512, kernels AVX-512)`): same seed ⇒ same numbers holds per kernels'
    /// instruction set, not across them.
    pub cpu: String,
    pub status: Status,
    pub error: Option<String>,
    /// Why a run stopped before its last step without failing (early stop on collapse).
    pub stop_reason: Option<String>,
    pub final_pos_cos: Option<f64>,
    pub final_neg_cos: Option<f64>,
    pub final_z_std: Option<f64>,
    pub final_effective_rank: Option<f64>,
    /// Effective rank of z over the evaluation split at the final evaluation (what the
    /// verdict's `partial` reads).
    pub eval_z_effective_rank: Option<f64>,
    pub final_knn_acc: Option<f64>,
    pub final_probe_acc: Option<f64>,
    pub collapse_verdict: Option<Verdict>,
    pub collapse_step: Option<u64>,
    pub steps: u64,
    pub wall_seconds: f64,
    pub images_per_second: f64,
}

/// `summary.parquet`'s columns, in order: the one definition (the writer names its columns
/// from it; tests hold the Python check and the report's reader to it).
pub const SUMMARY_COLUMNS: [&str; 33] = [
    "run_id",
    "variant",
    "seed",
    "method",
    "encoder",
    "encoder_norm",
    "projector_norm",
    "predictor_norm",
    "optimizer",
    "lr",
    "weight_decay",
    "tau",
    "batch_size",
    "epochs",
    "dataset",
    "dataset_path",
    "image_size",
    "cpu",
    "status",
    "error",
    "stop_reason",
    "final_pos_cos",
    "final_neg_cos",
    "final_z_std",
    "final_effective_rank",
    "eval_z_effective_rank",
    "final_knn_acc",
    "final_probe_acc",
    "collapse_verdict",
    "collapse_step",
    "steps",
    "wall_seconds",
    "images_per_second",
];

pub fn write_summary(path: &Path, rows: &[SummaryRow]) -> anyhow::Result<()> {
    let s = |f: fn(&SummaryRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let [run_id, variant, seed, method, encoder, encoder_norm, projector_norm, predictor_norm, optimizer, lr, weight_decay, tau, batch_size, epochs, dataset, dataset_path, image_size, ..] =
        SUMMARY_COLUMNS;
    let table = TableBuilder::new()
        .str(run_id, s(|r| r.run_id.clone()))
        .str(variant, s(|r| r.variant.clone()))
        .u64(seed, rows.iter().map(|r| r.seed).collect())
        .str(method, s(|r| r.config.method.name.as_str().into()))
        .str(encoder, s(|r| r.config.model.encoder.as_str().into()))
        .str(
            encoder_norm,
            s(|r| r.config.model.encoder_norm.as_str().into()),
        )
        .str(
            projector_norm,
            s(|r| r.config.model.projector.norm.as_str().into()),
        )
        .opt_str(
            predictor_norm,
            rows.iter()
                .map(|r| r.config.head_norms().1.map(|n| n.as_str().to_string()))
                .collect(),
        )
        .str(optimizer, s(|r| r.config.optim.name.as_str().into()))
        .f64(lr, rows.iter().map(|r| r.config.optim.lr).collect())
        .f64(
            weight_decay,
            rows.iter().map(|r| r.config.optim.weight_decay).collect(),
        )
        .opt_f64(
            tau,
            rows.iter()
                .map(|r| (r.config.method.name.spec().ema_target).then_some(r.config.method.tau))
                .collect(),
        )
        .u64(
            batch_size,
            rows.iter()
                .map(|r| r.config.train.batch_size as u64)
                .collect(),
        )
        .u32(epochs, rows.iter().map(|r| r.config.train.epochs).collect())
        .str(dataset, s(|r| r.config.dataset.name.clone()))
        .opt_str(
            dataset_path,
            rows.iter().map(|r| r.config.dataset.path.clone()).collect(),
        )
        .u64(
            image_size,
            rows.iter()
                .map(|r| r.config.dataset.image_size as u64)
                .collect(),
        );
    let outcomes: Vec<&RunOutcome> = rows.iter().map(|r| &r.outcome).collect();
    let mut df = outcome_columns(table, &outcomes).build()?;
    write_parquet(path, &mut df)
}

/// The measured columns, `cpu` … `images_per_second`, one row per outcome.
fn outcome_columns(table: TableBuilder, rows: &[&RunOutcome]) -> TableBuilder {
    let s = |f: fn(&RunOutcome) -> String| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let of = |f: fn(&RunOutcome) -> Option<f64>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let [.., cpu, status, error, stop_reason, final_pos_cos, final_neg_cos, final_z_std, final_effective_rank, eval_z_effective_rank, final_knn_acc, final_probe_acc, collapse_verdict, collapse_step, steps, wall_seconds, images_per_second] =
        SUMMARY_COLUMNS;
    table
        .str(cpu, s(|r| r.cpu.clone()))
        .str(status, s(|r| r.status.as_str().into()))
        .opt_str(error, rows.iter().map(|r| r.error.clone()).collect())
        .opt_str(
            stop_reason,
            rows.iter().map(|r| r.stop_reason.clone()).collect(),
        )
        .opt_f64(final_pos_cos, of(|r| r.final_pos_cos))
        .opt_f64(final_neg_cos, of(|r| r.final_neg_cos))
        .opt_f64(final_z_std, of(|r| r.final_z_std))
        .opt_f64(final_effective_rank, of(|r| r.final_effective_rank))
        .opt_f64(eval_z_effective_rank, of(|r| r.eval_z_effective_rank))
        .opt_f64(final_knn_acc, of(|r| r.final_knn_acc))
        .opt_f64(final_probe_acc, of(|r| r.final_probe_acc))
        .opt_str(
            collapse_verdict,
            rows.iter()
                .map(|r| r.collapse_verdict.map(|v| v.as_str().to_string()))
                .collect(),
        )
        .opt_u64(
            collapse_step,
            rows.iter().map(|r| r.collapse_step).collect(),
        )
        .u64(steps, rows.iter().map(|r| r.steps).collect())
        .f64(wall_seconds, rows.iter().map(|r| r.wall_seconds).collect())
        .f64(
            images_per_second,
            rows.iter().map(|r| r.images_per_second).collect(),
        )
}

/// One row of `summary.parquet` as read back: the columns the report and `finalize` use.
#[derive(Debug, Clone)]
pub struct SummaryRecord {
    pub run_id: String,
    pub variant: String,
    pub seed: u64,
    pub method: String,
    pub projector_norm: String,
    pub predictor_norm: Option<String>,
    /// `dataset` and, for a data set on disk, ` at <dataset_path>`.
    pub data: String,
    pub outcome: RunOutcome,
}

/// Reads `summary.parquet`. Columns added after the first release (`eval_z_effective_rank`,
/// `cpu`, `dataset_path`, `stop_reason`, `collapse_step`) may be absent; an unknown status or verdict is bad input naming its
/// record.
pub fn read_summary(path: &Path) -> Result<Vec<SummaryRecord>, InputError> {
    let df = read_parquet(path)?;
    let c = ColumnReader::new(&df, path);
    let (ids, variants, seeds) = (c.strs("run_id")?, c.strs("variant")?, c.u64s("seed")?);
    let (methods, proj, pred) = (
        c.strs("method")?,
        c.strs("projector_norm")?,
        c.strs("predictor_norm")?,
    );
    let n = df.height();
    let dataset = c.strs("dataset")?;
    let dataset_path = c.strs("dataset_path").unwrap_or_else(|_| vec![None; n]);
    let outcomes = read_outcomes(&c, n)?;
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| SummaryRecord {
            run_id: ids[i].clone().unwrap_or_default(),
            variant: variants[i].clone().unwrap_or_default(),
            seed: seeds[i].unwrap_or(0),
            method: methods[i].clone().unwrap_or_default(),
            projector_norm: proj[i].clone().unwrap_or_default(),
            predictor_norm: pred[i].clone(),
            data: match &dataset_path[i] {
                Some(p) => format!("{} at {p}", dataset[i].clone().unwrap_or_default()),
                None => dataset[i].clone().unwrap_or_default(),
            },
            outcome,
        })
        .collect())
}

/// The measured columns of `n` records (see [`read_summary`] for the optional ones).
fn read_outcomes(c: &ColumnReader, n: usize) -> Result<Vec<RunOutcome>, InputError> {
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
    let optional_f64 = |name: &str| c.f64s(name).unwrap_or_else(|_| vec![None; n]);
    let optional_str = |name: &str| c.strs(name).unwrap_or_else(|_| vec![None; n]);
    let (eval_rank, cpu, stop_reason) = (
        optional_f64("eval_z_effective_rank"),
        optional_str("cpu"),
        optional_str("stop_reason"),
    );
    let collapse_step = c.u64s("collapse_step").unwrap_or_else(|_| vec![None; n]);
    let steps = c.required("steps", c.u64s("steps")?)?;
    let wall_seconds = c.required("wall_seconds", c.f64s("wall_seconds")?)?;
    let images_per_second = c.required("images_per_second", c.f64s("images_per_second")?)?;
    (0..n)
        .map(|i| {
            let record = |what: String| InputError::new(&c.file, format!("record {i}: {what}"));
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
            Ok(RunOutcome {
                cpu: cpu[i].clone().unwrap_or_default(),
                status,
                error: error[i].clone(),
                stop_reason: stop_reason[i].clone(),
                final_pos_cos: pos[i],
                final_neg_cos: neg[i],
                final_z_std: zstd[i],
                final_effective_rank: rank[i],
                eval_z_effective_rank: eval_rank[i],
                final_knn_acc: knn[i],
                final_probe_acc: probe[i],
                collapse_verdict,
                collapse_step: collapse_step[i],
                steps: steps[i],
                wall_seconds: wall_seconds[i],
                images_per_second: images_per_second[i],
            })
        })
        .collect()
}
