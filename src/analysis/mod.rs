//! Collapse measures as pure functions of embeddings. One implementation serves the trainer
//! (live, per step) and `collapse-lab analyze` (offline, from the logs).

pub mod cosine;
pub mod eval_split;
pub mod eval_table;
pub mod evaluate;
pub mod geometry;
pub mod rank;
pub mod spectrum;
pub mod spread;
pub mod verdict;

pub use cosine::{pos_neg_cos, symmetric_pos_neg_cos};
pub use rank::{effective_rank, effective_rank_from_singular_values, singular_values};
pub use spread::z_std;
pub use verdict::{collapse_step, is_collapsed, verdict, Verdict};
pub mod knn;
#[cfg(test)]
mod naive_check;
pub mod offline;
pub mod probe;

pub use eval_split::EvalSplit;
pub use eval_table::{write_evals, write_spectrum};
pub use evaluate::{evaluate, EvalRecord, EvalSetup, NonFiniteEmbeddings};
pub use geometry::{alignment, dimension_variance, uniformity};
pub use knn::{knn_accuracy, Labelled};
pub use probe::{probe_accuracy, LinearProbe};
pub use spectrum::{alpha_req, covariance_spectrum};
