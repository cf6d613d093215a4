//! Images, augmentation and batching.
//!
//! * [`dataset`]: the [`Dataset`] trait the rest of the crate reads images through, and an
//!   in-memory implementation.
//! * [`synthetic`]: the embedded, seed-generated data set (ten shape classes under strong
//!   nuisance variation) that the CPU-sized default runs on.
//! * [`augment`]: the study's BYOL / SimCLR augmentation pipeline with torchvision semantics.
//! * [`loader`]: a background-thread two-view loader for training and a plain batcher for
//!   evaluation.
//!
//! Every random choice is seeded from explicit values mixed with [`mix_seeds`], so results do not
//! depend on thread counts or scheduling.

pub mod augment;
pub mod dataset;
pub mod loader;
pub mod open;
pub mod seeds;
pub mod synthetic;

pub use augment::{sample_crop, Augmenter, CropBox};
pub use dataset::{Dataset, InMemoryDataset};
pub use loader::{eval_batches, EvalBatch, TwoViewBatch, TwoViewLoader};
pub use open::{open_dataset, DatasetPair};
pub use seeds::{mix_seeds, splitmix64};
pub use synthetic::{generate, try_generate, Split, CLASS_NAMES, NUM_CLASSES};
