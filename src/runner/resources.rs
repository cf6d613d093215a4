//! Memory a grid will need, estimated from its configs before anything is allocated, so that
//! a config too large for the machine is refused with one line instead of aborting on
//! allocation (or being killed) minutes later.
//!
//! The estimate is deliberately a lower bound: the synthetic data set's pixels, the loader's
//! batches, the weights with their gradient and optimizer copies, and the activations a
//! training step keeps for backward (three tensors per convolution per view, plus the largest
//! im2col buffer). Real use is higher (allocator slack, evaluation), so a refusal is certain
//! to be right; a config just under the line may still run out.

use crate::config::{EncoderName, InputError, ModelConfig, ResnetStem, RunConfig, RunSpec};

const GIB: f64 = (1u64 << 30) as f64;
const F32: f64 = 4.0;
/// Tensors kept per convolution and view for backward: its output, the normalised output and
/// the activation.
const KEPT_PER_CONV: f64 = 3.0;

/// One convolution of the encoder: input and output channels, kernel, output side.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Conv {
    input: usize,
    output: usize,
    kernel: usize,
    side: usize,
}

fn out_side(side: usize, kernel: usize, stride: usize) -> usize {
    (side + 2 * (kernel / 2)).saturating_sub(kernel) / stride.max(1) + 1
}

/// The encoder's convolutions for `size × size` inputs (same shapes as `model::ConvNet` and
/// `model::ResNet18` build; tested against their multiply-add counts).
fn convolutions(m: &ModelConfig, in_channels: usize, size: usize) -> Vec<Conv> {
    let mut convs = Vec::new();
    let mut push = |input: usize, output: usize, kernel: usize, stride: usize, side: usize| {
        let side = out_side(side, kernel, stride);
        convs.push(Conv {
            input,
            output,
            kernel,
            side,
        });
        side
    };
    // Widths double per stage; an absurd width saturates (and is then refused) rather than
    // wrapping around to a small one.
    let width_at = |stage: usize| {
        let factor = u32::try_from(stage)
            .ok()
            .and_then(|s| 1usize.checked_shl(s))
            .unwrap_or(usize::MAX);
        m.width.saturating_mul(factor)
    };
    match m.encoder {
        EncoderName::Convnet => {
            let (mut side, mut channels) = (size, in_channels);
            for i in 0..m.depth {
                let out = width_at(i);
                side = push(channels, out, 3, if i == 0 { 1 } else { 2 }, side);
                channels = out;
            }
        }
        EncoderName::Resnet18 => {
            let (kernel, stride) = match m.resnet_stem {
                ResnetStem::Imagenet => (7, 2),
                ResnetStem::Cifar => (3, 1),
            };
            let mut side = push(in_channels, m.width, kernel, stride, size);
            if m.resnet_stem == ResnetStem::Imagenet {
                side = out_side(side, 3, 2);
            }
            let mut channels = m.width;
            for stage in 0..4 {
                let out = width_at(stage);
                for b in 0..2 {
                    let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                    let input_side = side;
                    side = push(channels, out, 3, stride, input_side);
                    push(out, out, 3, 1, side);
                    if stride != 1 || channels != out {
                        push(channels, out, 1, stride, input_side);
                    }
                    channels = out;
                }
            }
        }
    }
    convs
}

/// Estimated bytes of one run's training, by what holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    /// The synthetic data set's pixels (other data sets: their files' size is known on opening).
    pub data: f64,
    pub batches: f64,
    pub weights: f64,
    pub activations: f64,
}

impl Estimate {
    pub fn of(cfg: &RunConfig, in_channels: usize) -> Self {
        let m = &cfg.model;
        let b = cfg.train.batch_size as f64;
        let s = cfg.dataset.image_size as f64;
        let convs = convolutions(m, in_channels, cfg.dataset.image_size);
        let encoder_out = convs.last().map_or(in_channels, |c| c.output) as f64;
        let conv_params: f64 = convs
            .iter()
            .map(|c| (c.kernel * c.kernel) as f64 * c.input as f64 * c.output as f64)
            .sum();
        let head = |input: f64, h: &crate::config::HeadConfig| {
            input * h.hidden as f64 + h.hidden as f64 * h.out as f64
        };
        let mut params = conv_params + head(encoder_out, &m.projector);
        if cfg.method.name.spec().predictor {
            params += head(m.projector.out as f64, &m.predictor);
        }
        let ema = cfg.method.name.spec().ema_target;
        // Online weights, their gradients and momentum, and the target's copy.
        let weights = params * F32 * if ema { 4.0 } else { 3.0 }
            + cfg.method.queue_size as f64 * m.projector.out as f64 * F32;
        let kept: f64 = convs
            .iter()
            .map(|c| b * c.output as f64 * (c.side * c.side) as f64)
            .sum();
        let im2col = convs
            .iter()
            .map(|c| b * (c.kernel * c.kernel * c.input) as f64 * (c.side * c.side) as f64)
            .fold(0.0, f64::max);
        let activations = (kept * KEPT_PER_CONV * 2.0 + im2col) * F32;
        let view = b * in_channels as f64 * s * s * F32;
        let batches = 2.0 * view * (cfg.train.prefetch as f64 + 2.0);
        let d = &cfg.dataset;
        let data = if d.name == "synthetic" {
            (d.train_size as f64 + d.eval_size as f64) * in_channels as f64 * s * s
        } else {
            0.0
        };
        Self {
            data,
            batches,
            weights,
            activations,
        }
    }

    /// What a run needs apart from its data set (shared by the runs that use it).
    fn per_run(&self) -> f64 {
        self.batches + self.weights + self.activations
    }
}

/// Memory the system says is available now (`MemAvailable`), if it can be read.
pub fn available_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Refuses the grid if `jobs` of its runs at a time (plus its synthetic data sets) need more
/// memory than `available`. Activations count on the host only for CPU training.
pub fn check(
    runs: &[RunSpec],
    jobs: usize,
    on_cpu: bool,
    available: f64,
) -> Result<(), InputError> {
    let mut data_sets: Vec<(String, f64)> = Vec::new();
    let mut largest: Option<(&RunSpec, Estimate)> = None;
    for spec in runs {
        // RGB for synthetic; real sets' channels are known on opening (1 or 3): 3 bounds both.
        let mut e = Estimate::of(&spec.config, 3);
        if !on_cpu {
            e.activations = 0.0;
            e.weights = 0.0;
        }
        let key = toml::to_string(&spec.config.dataset).unwrap_or_default();
        if !data_sets.iter().any(|(k, _)| *k == key) {
            data_sets.push((key, e.data));
        }
        if largest.is_none_or(|(_, l)| e.per_run() > l.per_run()) {
            largest = Some((spec, e));
        }
    }
    let Some((spec, e)) = largest else {
        return Ok(());
    };
    let data: f64 = data_sets.iter().map(|(_, d)| d).sum();
    let concurrent = jobs.clamp(1, runs.len().max(1)) as f64;
    let need = data + concurrent * e.per_run();
    if need <= available {
        return Ok(());
    }
    let gib = |x: f64| format!("{:.1} GiB", x / GIB);
    Err(InputError::new(
        format!("variant `{}`", spec.variant),
        format!(
            "needs an estimated {} ({} data, {} per run × {} at a time: activations {}, weights {}, batches {}) but {} of memory is available; lower dataset.image_size, train.batch_size, model.width, model.depth or --jobs",
            gib(need),
            gib(data),
            gib(e.per_run()),
            concurrent,
            gib(e.activations),
            gib(e.weights),
            gib(e.batches),
            gib(available)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EncoderName, ResnetStem};
    use crate::model::{Encoder, ParamStore};

    /// The walk gives the built encoders' multiply-add counts and parameter counts.
    #[test]
    fn shapes_match_the_built_encoders() -> anyhow::Result<()> {
        for (encoder, stem, width, depth, size) in [
            (EncoderName::Convnet, ResnetStem::Cifar, 8, 4, 32),
            (EncoderName::Convnet, ResnetStem::Cifar, 4, 3, 17),
            (EncoderName::Resnet18, ResnetStem::Cifar, 8, 0, 32),
            (EncoderName::Resnet18, ResnetStem::Imagenet, 4, 0, 64),
        ] {
            let m = ModelConfig {
                encoder,
                resnet_stem: stem,
                width,
                depth,
                ..ModelConfig::default()
            };
            let mut store = ParamStore::new(&candle_core::Device::Cpu, 0);
            let built = Encoder::new(&mut store, "encoder", &m, 3)?;
            let convs = convolutions(&m, 3, size);
            let macs: u64 = convs
                .iter()
                .map(|c| (c.kernel * c.kernel * c.input * c.output * c.side * c.side) as u64)
                .sum();
            assert_eq!(macs, built.macs(size).0, "{encoder:?} {size}");
            let conv_weights: usize = convs
                .iter()
                .map(|c| c.kernel * c.kernel * c.input * c.output)
                .sum();
            let stored: usize = store
                .params()
                .iter()
                .filter(|p| p.var.as_tensor().rank() == 4)
                .map(|p| p.var.as_tensor().elem_count())
                .sum();
            assert_eq!(conv_weights, stored, "{encoder:?}");
        }
        Ok(())
    }

    fn spec(cfg: RunConfig) -> RunSpec {
        RunSpec {
            run_id: "byol-s0".into(),
            variant: "byol".into(),
            seed: 0,
            config: cfg,
        }
    }

    #[test]
    fn refuses_what_cannot_fit_and_names_the_variant() {
        let small = RunConfig::default();
        assert!(check(&[spec(small.clone())], 2, true, 8.0 * GIB).is_ok());
        let mut huge = small.clone();
        huge.dataset.image_size = 4096;
        let e = check(&[spec(huge)], 1, true, 24.0 * GIB).expect_err("4096 px");
        assert_eq!(e.source, "variant `byol`");
        assert!(e.to_string().contains("dataset.image_size"), "{e}");
        let mut deep = small.clone();
        deep.model.depth = 12;
        assert!(check(&[spec(deep)], 1, true, 24.0 * GIB).is_err());
        // The estimate grows with runs trained side by side.
        let one = Estimate::of(&small, 3);
        let budget = one.data + 1.5 * one.per_run();
        assert!(check(&[spec(small.clone()), spec(small.clone())], 1, true, budget).is_ok());
        assert!(check(&[spec(small.clone()), spec(small)], 2, true, budget).is_err());
    }
}
