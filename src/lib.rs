//! collapse-lab: diagnose representation collapse in self-supervised learning.
//!
//! Layers, each importing only from the ones before it (`../shared/architecture.md`):
//! - ground floor: `config` (serde structs, validation), `metrics` (pure functions of
//!   embeddings: cosines, spread, rank, spectra, geometry, kNN, probe, the verdict rules and
//!   `CollapseMonitor`), `log` (every table: row types, column lists, writers and readers);
//! - `data` (formats, augmentation, loaders), `ops` (CPU kernels), `model` (networks);
//! - `method` (BYOL, SimSiam, SimCLR, MoCo, contrastive: forward → loss + embeddings);
//! - `train` (one `Step`, the loop, checkpoints) and `eval` (a network on the evaluation split);
//! - `runner` (grids, resume, Slurm array tasks, finalize and status, analyze, bench, export,
//!   parity dumps); `report`; `cli` wires.
//!
//! `cuda` holds the CUDA kernels (feature `cuda`) beside `model`.
//! The study and the metric definitions: `../shared/science.md`.
//!
//! The library's surface is the stages a notebook or another tool builds on: `config`,
//! `metrics`, `log` (the tables), `data`, `model`, `method`, `train`, `eval`, `runner` (grids,
//! locks) and `cli`. The CPU kernels (`ops`) and the report are crate-private, and so are most
//! files inside a folder (their items are re-exported by the folder's `mod.rs`), so the
//! compiler reports code nothing uses.

pub mod block_cache;
pub mod cli;
pub mod config;
/// `outln!`, `out!`, `errln!`: printing that a closed pipe cannot panic.
pub mod console;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod diagnose;
pub mod eval;
pub mod log;
pub mod method;
pub mod metrics;
pub mod model;
pub(crate) mod ops;
pub(crate) mod report;
pub mod runner;
pub mod train;
