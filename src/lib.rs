//! collapse-lab: diagnose representation collapse in self-supervised learning.
//!
//! Layers, each importing only from the ones before it (`../shared/architecture.md`):
//! - ground floor: `config` (serde structs, validation), `metrics` (pure functions of
//!   embeddings: cosines, spread, rank, spectra, geometry, kNN, probe, the verdict rules and
//!   `CollapseMonitor`), `log` (every table: row types, column lists, writers and readers);
//! - `data` (formats, augmentation, loaders), `ops` (CPU kernels), `model` (networks);
//! - `method` (BYOL, SimSiam, SimCLR, MoCo, contrastive: forward → loss + embeddings);
//! - `train` (one `Step`, the loop, checkpoints) and `eval` (a network on the evaluation split);
//! - `runner` (grids, resume, analyze, bench, export, parity dumps); `report`; `cli` wires.
//!
//! `cuda` holds the CUDA kernels (feature `cuda`) beside `model`.
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
pub mod ops;
pub mod report;
pub mod runner;
pub mod train;
