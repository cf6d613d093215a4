//! Parquet sinks with the schemas of ../shared/architecture.md; every write is atomic.

mod atomic;
mod embeddings;
mod evals;
mod parquet;
mod steps;
mod summary;

pub use atomic::{remove_dir_if_present, write_atomic, write_text};
pub use embeddings::{EmbeddingBlock, EmbeddingsWriter, LoggedStep, EMBEDDINGS_COLUMNS};
pub use evals::{
    metric_columns, write_evals, write_spectrum, EvalRecord, EVALS_COLUMNS, SPECTRUM_COLUMNS,
};
pub use parquet::{read_parquet, write_parquet, ColumnReader, TableBuilder};
pub use steps::{StepRecord, StepsLog, STEPS_COLUMNS};
pub use summary::{write_summary, Status, SummaryRow, SUMMARY_COLUMNS};
