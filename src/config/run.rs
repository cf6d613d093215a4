//! One training run: every choice that changes its numbers, as data.

use serde::{Deserialize, Serialize};

use super::data::{AugmentConfig, DatasetConfig};
use super::method::MethodConfig;
use super::rules::{at_least_one, at_most, non_negative, positive};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderName {
    /// Small plain conv net (3×3 conv → norm → ReLU per stage, stride 2 after the first,
    /// global average pool): the CPU default.
    Convnet,
    /// ResNet-18 (the study's encoder).
    Resnet18,
}

impl EncoderName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Convnet => "convnet",
            Self::Resnet18 => "resnet18",
        }
    }
}

/// Normalization inside the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderNorm {
    Bn,
    Gn,
    /// Group norm with weight-standardised convolutions (Richemond et al. 2020).
    GnWs,
    None,
}

impl EncoderNorm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bn => "bn",
            Self::Gn => "gn",
            Self::GnWs => "gn_ws",
            Self::None => "none",
        }
    }
}

/// Normalization after the hidden layer of a projector / predictor MLP: batch, layer or
/// group norm, none, or batch norm taken apart (the mechanism ablations, ../shared/science.md):
/// `bn_center` (subtract the batch mean only), `bn_scale` (divide by the batch standard
/// deviation only), `bn_detached` (batch statistics treated as constants in the backward
/// pass), `ghost_bn` (statistics over groups of `model.ghost_batch` examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadNorm {
    Bn,
    Ln,
    Gn,
    BnCenter,
    BnScale,
    BnDetached,
    GhostBn,
    None,
}

impl HeadNorm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bn => "bn",
            Self::Ln => "ln",
            Self::Gn => "gn",
            Self::BnCenter => "bn_center",
            Self::BnScale => "bn_scale",
            Self::BnDetached => "bn_detached",
            Self::GhostBn => "ghost_bn",
            Self::None => "none",
        }
    }
}

/// ResNet stem: the torchvision 7×7/2 + max-pool stem, or a 3×3/1 stem for small images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResnetStem {
    Imagenet,
    Cifar,
}

/// An MLP head: Linear → norm → ReLU → Linear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    pub hidden: usize,
    pub out: usize,
    pub norm: HeadNorm,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            hidden: 512,
            out: 128,
            norm: HeadNorm::Bn,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub encoder: EncoderName,
    pub encoder_norm: EncoderNorm,
    /// Channels of the first conv stage (doubled at each later stage).
    pub width: usize,
    /// Conv stages of `convnet`.
    pub depth: usize,
    pub resnet_stem: ResnetStem,
    /// Groups of group norm (capped at the channel count, which it must divide).
    pub gn_groups: usize,
    /// Examples per group of ghost batch norm (`ghost_bn` heads); the last group of a batch
    /// that is not a multiple holds the rest.
    pub ghost_batch: usize,
    pub projector: HeadConfig,
    pub predictor: HeadConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            encoder: EncoderName::Convnet,
            encoder_norm: EncoderNorm::Bn,
            width: 32,
            depth: 4,
            resnet_stem: ResnetStem::Cifar,
            gn_groups: 8,
            ghost_batch: 16,
            projector: HeadConfig::default(),
            predictor: HeadConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    /// SGD with momentum and (coupled) weight decay, PyTorch semantics.
    Sgd,
    /// LARS (You et al. 2017) as in BYOL; biases and norm parameters optionally excluded.
    Lars,
}

impl OptimizerName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sgd => "sgd",
            Self::Lars => "lars",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    /// Cosine decay from `lr` to `lr_min` over the run (after warm-up).
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub name: OptimizerName,
    pub lr: f64,
    pub lr_min: f64,
    pub schedule: LrSchedule,
    /// Linear warm-up from 0 over this many steps.
    pub warmup_steps: u64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// LARS trust coefficient η.
    pub lars_eta: f64,
    /// LARS: biases and norm parameters get neither trust-ratio adaptation nor weight decay.
    pub lars_exclude_bias_and_norm: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            name: OptimizerName::Sgd,
            lr: 0.8,
            lr_min: 0.0,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            momentum: 0.9,
            weight_decay: 1e-4,
            lars_eta: 1e-3,
            lars_exclude_bias_and_norm: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub epochs: u32,
    /// Stop after this many optimizer steps even if epochs remain (None: all epochs).
    pub max_steps: Option<u64>,
    /// The run seed: weights, augmentation, shuffling. The grid sets it per run.
    pub seed: u64,
    /// Batches the loader thread prepares ahead.
    pub prefetch: usize,
    /// Threads augmenting each batch (1: the loader's own thread; more to feed a GPU).
    pub loader_threads: usize,
    /// Stop a run once the collapse signature has held for this many consecutive steps
    /// (None: never). Saves time in large grids; leave it off where recovery is the point.
    pub stop_on_collapse: Option<u64>,
    /// Save a checkpoint (weights, optimizer, EMA target, queue, logs so far) every this many
    /// steps, so a killed grid resumes where it was (0: only when interrupted by SIGINT or
    /// SIGTERM). Does not change any number.
    pub checkpoint_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            epochs: 10,
            max_steps: None,
            seed: 0,
            prefetch: 4,
            loader_threads: 1,
            stop_on_collapse: None,
            checkpoint_every: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Write the embeddings (y, z, z_target, p of both views, whole batch) of every N-th
    /// step, starting at step 0, to `embeddings.parquet` (0: never).
    pub embeddings_every: u64,
    /// Evaluate (kNN, linear probe, spectra) every N epochs; epoch 0 (before training) and
    /// the last epoch are always evaluated.
    pub eval_every_epochs: u32,
    /// Images of the evaluation split used for evaluation (0: all).
    pub eval_images: usize,
    /// Folds of the probe's and kNN's cross-validation over the evaluation images
    /// (class-stratified, dealt with `dataset.split_seed`; every image scored once).
    pub eval_folds: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            embeddings_every: 10,
            eval_every_epochs: 1,
            eval_images: 0,
            eval_folds: DEFAULT_EVAL_FOLDS,
        }
    }
}

/// The probe's and kNN's folds unless a config says otherwise: each fold fits on 80 % of the
/// evaluation images, as common k-fold practice.
pub const DEFAULT_EVAL_FOLDS: usize = 5;
/// Evaluation images a fold needs at the least (scored images, and a kNN memory beside them).
const MIN_EVAL_IMAGES_PER_FOLD: usize = 2;
/// Upper bound of `log.eval_folds` (each fold fits a probe).
const MAX_EVAL_FOLDS: usize = 20;

/// A fully resolved run. Written as `config.toml` next to the run's logs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub method: MethodConfig,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    pub dataset: DatasetConfig,
    pub augment: AugmentConfig,
    pub log: LogConfig,
}

/// Upper bound of `train.prefetch` and `train.loader_threads`.
const MAX_THREADS_OR_BATCHES: usize = 1024;
/// Upper bound of `model.depth` (convnet stages; each doubles the channels).
const MAX_DEPTH: usize = 32;
/// Upper bound of `dataset.objects` (copies of the class shape per synthetic image).
const MAX_OBJECTS: usize = 64;

impl RunConfig {
    /// Checks what serde cannot: ranges and combinations. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.optim.validate()?;
        self.method.validate()?;
        self.model.validate()?;
        let (m, md) = (&self.method, &self.model);
        if m.name.spec().predictor && md.predictor.out != md.projector.out {
            return Err(format!(
                "model.predictor.out must equal model.projector.out ({}) for {}, got {}",
                md.projector.out,
                m.name.as_str(),
                md.predictor.out
            ));
        }
        self.train.validate()?;
        let t = &self.train;
        for (name, seed) in [
            ("train.seed", t.seed),
            ("dataset.seed", self.dataset.seed),
            ("dataset.split_seed", self.dataset.split_seed),
        ] {
            if seed > i64::MAX as u64 {
                return Err(format!("{name} must be ≤ {} (configs are TOML, whose integers are signed 64-bit), got {seed}", i64::MAX));
            }
        }
        if t.stop_on_collapse == Some(0) {
            return Err("train.stop_on_collapse must be ≥ 1 (or absent), got 0".into());
        }
        at_least_one("log.eval_every_epochs", self.log.eval_every_epochs as usize)?;
        if !(2..=MAX_EVAL_FOLDS).contains(&self.log.eval_folds) {
            return Err(format!(
                "log.eval_folds must be in 2..={MAX_EVAL_FOLDS}, got {}",
                self.log.eval_folds
            ));
        }
        let least = MIN_EVAL_IMAGES_PER_FOLD * self.log.eval_folds;
        if self.log.eval_images != 0 && self.log.eval_images < least {
            return Err(format!(
                "log.eval_images must be 0 (all) or ≥ {least} ({MIN_EVAL_IMAGES_PER_FOLD} images for each of log.eval_folds = {}), got {}",
                self.log.eval_folds, self.log.eval_images
            ));
        }
        let d = &self.dataset;
        if d.image_size < 8 {
            return Err(format!(
                "dataset.image_size must be ≥ 8, got {}",
                d.image_size
            ));
        }
        self.augment.validate()?;
        if d.name == "synthetic" {
            at_least_one("dataset.objects", d.objects)?;
            // Each object is drawn over every pixel of every image.
            at_most("dataset.objects", d.objects, MAX_OBJECTS)?;
            let [lo, hi] = d.object_scale;
            if !(lo > 0.0 && lo <= hi && hi <= 0.5) {
                return Err(format!(
                    "dataset.object_scale must be an ordered range within (0, 0.5], got [{lo}, {hi}]"
                ));
            }
            at_least_one("dataset.eval_size", d.eval_size)?;
            let least = MIN_EVAL_IMAGES_PER_FOLD * self.log.eval_folds;
            if d.eval_size < least {
                return Err(format!(
                    "dataset.eval_size must be ≥ {least} ({MIN_EVAL_IMAGES_PER_FOLD} images for each of log.eval_folds = {}), got {}",
                    self.log.eval_folds, d.eval_size
                ));
            }
        }
        if t.max_steps == Some(0) {
            return Err("train.max_steps must be ≥ 1 (or absent), got 0".into());
        }
        if d.max_image_pixels == 0 {
            return Err("dataset.max_image_pixels must be ≥ 1, got 0".into());
        }
        if !(d.eval_fraction > 0.0 && d.eval_fraction < 1.0) {
            return Err(format!(
                "dataset.eval_fraction must be in (0, 1), got {}",
                d.eval_fraction
            ));
        }
        if d.name == "synthetic" && d.train_size < t.batch_size {
            return Err(format!(
                "dataset.train_size ({}) must be ≥ train.batch_size ({})",
                d.train_size, t.batch_size
            ));
        }
        Ok(())
    }

    /// A fingerprint of everything that decides a run's numbers: the resolved config without
    /// the fields that only say how fast it is computed (`train.prefetch`,
    /// `train.loader_threads`, `train.checkpoint_every`). A finished run is kept when a new
    /// invocation's fingerprint equals the one it recorded, and re-run otherwise.
    pub fn numbers_hash(&self) -> String {
        let mut c = self.clone();
        let defaults = TrainConfig::default();
        c.train.prefetch = defaults.prefetch;
        c.train.loader_threads = defaults.loader_threads;
        c.train.checkpoint_every = defaults.checkpoint_every;
        // Serialising a validated config cannot fail; the Debug form stands in if it ever did.
        let text = toml::to_string(&c).unwrap_or_else(|_| format!("{c:?}"));
        format!("{:x}", md5::compute(text.as_bytes()))
    }

    /// A short, stable run description for tables: `byol` with `projector=bn predictor=bn`.
    pub fn head_norms(&self) -> (HeadNorm, Option<HeadNorm>) {
        let predictor = (self.method.name.spec().predictor).then_some(self.model.predictor.norm);
        (self.model.projector.norm, predictor)
    }
}

impl OptimConfig {
    fn validate(&self) -> Result<(), String> {
        let o = self;
        positive("optim.lr", o.lr)?;
        non_negative("optim.lr_min", o.lr_min)?;
        if o.lr_min > o.lr {
            return Err(format!(
                "optim.lr_min must be ≤ optim.lr, got {} > {}",
                o.lr_min, o.lr
            ));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(format!(
                "optim.momentum must be in [0, 1), got {}",
                o.momentum
            ));
        }
        non_negative("optim.weight_decay", o.weight_decay)?;
        positive("optim.lars_eta", o.lars_eta)?;
        Ok(())
    }
}

impl ModelConfig {
    fn validate(&self) -> Result<(), String> {
        let md = self;
        at_least_one("model.width", md.width)?;
        at_least_one("model.depth", md.depth)?;
        // Channels double per stage: beyond this the widths overflow any machine.
        at_most("model.depth", md.depth, MAX_DEPTH)?;
        at_least_one("model.gn_groups", md.gn_groups)?;
        if md.ghost_batch < 2 {
            return Err(format!(
                "model.ghost_batch must be at least 2 (a group of one example has no spread), got {}",
                md.ghost_batch
            ));
        }
        for (name, h) in [("projector", &md.projector), ("predictor", &md.predictor)] {
            at_least_one(&format!("model.{name}.hidden"), h.hidden)?;
            at_least_one(&format!("model.{name}.out"), h.out)?;
            if h.norm == HeadNorm::Gn && h.hidden % md.gn_groups != 0 {
                return Err(format!(
                    "model.{name}.hidden ({}) must be a multiple of model.gn_groups ({}) for group norm",
                    h.hidden, md.gn_groups
                ));
            }
        }
        if matches!(md.encoder_norm, EncoderNorm::Gn | EncoderNorm::GnWs)
            && !md.width.is_multiple_of(md.gn_groups)
        {
            return Err(format!(
                "model.width ({}) must be a multiple of model.gn_groups ({}) for group norm in the encoder",
                md.width, md.gn_groups
            ));
        }
        Ok(())
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<(), String> {
        let t = self;
        if t.batch_size < 2 {
            return Err(format!(
                "train.batch_size must be ≥ 2 (negatives and batch statistics need two examples), got {}",
                t.batch_size
            ));
        }
        at_least_one("train.epochs", t.epochs as usize)?;
        at_least_one("train.prefetch", t.prefetch)?;
        at_least_one("train.loader_threads", t.loader_threads)?;
        // Threads and queued batches are real allocations: a typo of a few zeros would
        // exhaust the machine before the first step.
        at_most("train.prefetch", t.prefetch, MAX_THREADS_OR_BATCHES)?;
        at_most(
            "train.loader_threads",
            t.loader_threads,
            MAX_THREADS_OR_BATCHES,
        )?;
        Ok(())
    }
}
