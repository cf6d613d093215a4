//! Collapse measures as pure functions of embeddings (candle and faer only): the trainer calls
//! them live, `analyze` offline, so every metric has one implementation. The ground floor:
//! nothing here imports from the rest of the crate.

pub mod cosine;
pub mod difference;
pub mod geometry;
pub mod knn;
#[cfg(test)]
mod naive_check;
mod normalize;
pub mod probe;
pub mod rank;
pub mod spectrum;
pub mod spread;
pub mod streaming;
pub mod verdict;

pub use cosine::{pos_neg_cos, symmetric_pos_neg_cos};
pub use geometry::{alignment, dimension_variance, uniformity};
pub use knn::{knn_accuracy, Labelled};
pub use normalize::l2_normalize;
pub use probe::{probe_accuracy, LinearProbe};
pub use rank::{effective_rank, effective_rank_from_singular_values, singular_values};
pub use spectrum::{alpha_req, covariance_spectrum};
pub use spread::z_std;
pub use streaming::{CkaMoments, PairMetrics, PairMoments, SetMetrics, SetMoments};
pub use verdict::{is_collapsed, verdict, CollapseMonitor, Verdict};
