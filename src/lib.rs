//! collapse-lab: diagnose representation collapse in self-supervised learning.
//!
//! The data flows one way — config/data → model → method → train → log → analysis → report —
//! and each stage is a module that imports only from those before it. `analysis` holds pure
//! functions of embeddings that `train` also calls live, so there is one implementation of
//! every metric; `report` renders a grid's tables; `runner` runs a grid on top of all of them,
//! and `cli` only wires.
//! The study and the metric definitions: `../shared/science.md`.

pub mod block_cache;
pub mod cli;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod eval;
pub mod log;
pub mod method;
pub mod metrics;
pub mod model;
pub mod report;
pub mod runner;
pub mod train;
