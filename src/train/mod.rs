//! Training: optimizers, schedules, the step loop, device selection.

pub mod checkpoint;
mod device;
pub(crate) mod optim;
mod schedule;
mod step;
mod trainer;

pub use device::parse_device;
pub use optim::{grad_norm, Optimizer, VELOCITY_PREFIX};
pub use schedule::{lr_at, tau_at};
pub use step::{ms, step_metrics, training_step, Step};
pub use trainer::{
    checkpoint_state, train, train_with, EpochEnd, RunControl, RunStatus, StepObserver,
    TrainSummary, ONLINE_PREFIX,
};
