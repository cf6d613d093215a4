//! Parquet sinks with the schemas of ../shared/architecture.md; every write is atomic.

mod analysis;
mod atomic;
mod embeddings;
mod evals;
mod parquet;
mod steps;
mod summary;

pub use analysis::{
    write_analysis, write_eval_analysis, EvalAnalysis, LiveComparison, StepAnalysis,
    ANALYSIS_COLUMNS, LIVE_TOLERANCE,
};
pub use atomic::{refuse_symlink, remove_dir_if_present, write_atomic, write_text};
pub use embeddings::{
    read_embeddings, EmbeddingBlock, EmbeddingsWriter, LoggedStep, LoggedSteps, EMBEDDINGS_COLUMNS,
};
pub use evals::{
    metric_columns, read_evals, write_evals, write_spectrum, EvalRecord, EVALS_COLUMNS,
    SPECTRUM_COLUMNS,
};
pub use parquet::{parquet_rows, read_parquet, write_parquet, ColumnReader, TableBuilder};
pub use steps::{StepRecord, StepsLog, STEPS_COLUMNS};
pub use summary::{
    read_summary, write_summary, RunOutcome, Status, SummaryRecord, SummaryRow, SUMMARY_COLUMNS,
};
