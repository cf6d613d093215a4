//! Parquet sinks with the schemas of ../shared/architecture.md, and the one module every
//! write, rename and delete goes through ([`safe_fs`]: atomic, never through a link).

mod analysis;
mod embeddings;
mod evals;
mod parquet;
mod safe_fs;
mod steps;
mod summary;

pub use analysis::{
    write_analysis, write_eval_analysis, EvalAnalysis, LiveComparison, StepAnalysis,
    ANALYSIS_COLUMNS, LIVE_TOLERANCE,
};
pub use embeddings::{
    read_embeddings, EmbeddingBlock, EmbeddingsWriter, LoggedStep, LoggedSteps, EMBEDDINGS_COLUMNS,
};
pub use evals::{
    metric_columns, read_evals, write_evals, write_spectrum, EvalRecord, EVALS_COLUMNS,
    SPECTRUM_COLUMNS,
};
pub use parquet::{parquet_rows, read_parquet, write_parquet, ColumnReader, TableBuilder};
pub use safe_fs::{
    available_space, create_dir, create_dir_in_given, create_given_dir, create_new, open_append,
    refuse_symlink, refuse_symlink_at, remove_dir_if_present, remove_file_if_present,
    remove_temp_files_below, rename, temp_path, write_atomic, write_text, write_via_temp,
};
pub use steps::{StepRecord, StepsLog, STEPS_COLUMNS};
pub use summary::{
    read_summary, write_summary, RunOutcome, Status, SummaryRecord, SummaryRow, SUMMARY_COLUMNS,
};
