//! Images, augmentation and batching.
//!
//! * [`dataset`]: the [`Dataset`] trait the rest of the crate reads images through, and an
//!   in-memory implementation.
//! * [`synthetic`]: the embedded, seed-generated data set (ten shape classes under strong
//!   nuisance variation) that the CPU-sized default runs on.
//! * Real data sets on disk, each delivering images at their native size: [`idx`] (MNIST,
//!   Fashion-MNIST, KMNIST), [`cifar`] (CIFAR-10/100 binary), [`stl10`] (STL-10 binary,
//!   memory-mapped), [`folder`] (`<class>/*.png|jpg`); [`concat`] joins STL-10's labelled and
//!   unlabeled training images; [`files`] holds the shared file checks; [`open`] dispatches
//!   on `dataset.name`.
//! * [`split`]: class-stratified, seeded selection (limits, held-out images, evaluation
//!   halves); [`subset`] reads a selection as a data set.
//! * [`tools`], apart from the formats and the pipeline: `fetch` downloads the public sets
//!   (`data fetch`); `inspect` summarises a set on disk (`data inspect`) and draws its
//!   `contact_sheet`.
//! * [`augment`]: the study's BYOL / SimCLR augmentation pipeline with torchvision semantics.
//! * [`loader`]: a background-thread two-view loader for training and a plain batcher for
//!   evaluation.
//!
//! Every random choice is seeded from explicit values mixed with [`mix_seeds`], so results do not
//! depend on thread counts or scheduling.

#[cfg(test)]
mod alloc_probe;
pub(crate) mod augment;
pub(crate) mod cifar;
pub(crate) mod concat;
pub(crate) mod dataset;
mod files;
pub(crate) mod folder;
pub(crate) mod idx;
pub(crate) mod loader;
pub mod open;
pub(crate) mod seeds;
pub(crate) mod split;
pub(crate) mod stl10;
pub(crate) mod subset;
pub(crate) mod synthetic;
pub mod tools;

pub use augment::{sample_crop, Augmenter, CropBox};
pub use concat::ConcatDataset;
pub use dataset::{Dataset, InMemoryDataset};
pub use loader::{eval_batches, EvalBatch, LoaderPlan, TwoViewBatch, TwoViewLoader};
pub use open::{open_dataset, DatasetPair, DATASET_NAMES};
pub use seeds::{mix_seeds, splitmix64};
pub use subset::{labels_of, Subset};
pub use synthetic::{generate, try_generate, Split, CLASS_NAMES, NUM_CLASSES};
