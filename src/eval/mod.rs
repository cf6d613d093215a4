//! Evaluation of a network on the evaluation split (kNN, linear probe, spectra, geometry):
//! above `method` (it runs the online network), beside `train`. The metrics themselves live in
//! `crate::metrics`, the tables in `crate::log`.

pub(crate) mod cross_validation;
pub(crate) mod evaluate;
pub(crate) mod split;

pub use evaluate::{evaluate, EvalSetup, NonFiniteEmbeddings};
pub use split::EvalSplit;
