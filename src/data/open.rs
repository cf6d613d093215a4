//! Opens the train and eval splits a run's `[dataset]` asks for.

use std::sync::Arc;

use super::{synthetic, Dataset};
use crate::config::{DatasetConfig, InputError};

/// The self-supervised training split and the labelled evaluation split.
#[derive(Clone)]
pub struct DatasetPair {
    pub train: Arc<dyn Dataset>,
    pub eval: Arc<dyn Dataset>,
}

pub fn open_dataset(cfg: &DatasetConfig) -> Result<DatasetPair, InputError> {
    match cfg.name.as_str() {
        "synthetic" => Ok(DatasetPair {
            train: Arc::new(synthetic::generate(cfg, synthetic::Split::Train)),
            eval: Arc::new(synthetic::generate(cfg, synthetic::Split::Eval)),
        }),
        other => Err(InputError::new(
            "dataset.name",
            format!("unknown data set `{other}`, expected synthetic"),
        )),
    }
}
