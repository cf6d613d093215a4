//! Collapse measures as pure functions of embeddings. One implementation serves the trainer
//! (live, per step) and `collapse-lab analyze` (offline, from the logs).

pub mod cosine;
pub mod rank;
pub mod spread;
pub mod verdict;

pub use cosine::{pos_neg_cos, symmetric_pos_neg_cos};
pub use rank::{effective_rank, effective_rank_from_singular_values, singular_values};
pub use spread::z_std;
pub use verdict::{collapse_step, is_collapsed, verdict, Verdict};
pub mod knn;
pub mod probe;

pub use knn::{knn_accuracy, Labelled};
pub use probe::{probe_accuracy, LinearProbe};
