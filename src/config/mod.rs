//! Configuration as data: one serde struct per concept, TOML grids, `--set` overrides.

mod data;
mod error;
mod grid;
mod method;
mod rules;
mod run;
mod table;

pub use data::{AugmentConfig, DatasetConfig, DEFAULT_MAX_IMAGE_PIXELS};
pub use error::InputError;
pub use grid::{load_run_config, Grid, Override, RunSpec, Variant, BASELINE_VARIANT};
pub use method::{MethodConfig, MethodName, MethodSpec, TauSchedule};
pub use run::{
    EncoderName, EncoderNorm, HeadConfig, HeadNorm, LogConfig, LrSchedule, ModelConfig,
    OptimConfig, OptimizerName, ResnetStem, RunConfig, TrainConfig,
};
