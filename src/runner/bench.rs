//! `collapse-lab bench`: times a plain training step, the run's full method step, the
//! per-step diagnostics or the two-view loader on one run config, after a warm-up. Prints
//! one human line and one JSON line (the fields `bench/torch_reference.py` prints too).
//! Figures are only comparable within one invocation on one machine; compare with PyTorch
//! side by side (`bench/vs_torch.sh`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::config::RunConfig;
use crate::data::{open_dataset, TwoViewBatch, TwoViewLoader};
use candle_nn::ModuleT;

use crate::method::{Embeddings, OnlineNetwork};
use crate::train::{ms, step_metrics, training_step, Optimizer};

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchWhat {
    /// A plain step: one view through encoder and projector, forward, backward (of the mean
    /// squared projection) and the optimizer update; no target, no second view.
    Step,
    /// The run's full method step (for BYOL: both views, online forward and backward,
    /// target forward, optimizer update, EMA update), plus the per-step diagnostics timed
    /// separately.
    ByolStep,
    /// The per-step diagnostics alone (pos/neg cosine, z std, effective rank) on one step's
    /// embeddings.
    Metrics,
    /// The two-view augmentation loader alone.
    Loader,
}

impl BenchWhat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::ByolStep => "byol-step",
            Self::Metrics => "metrics",
            Self::Loader => "loader",
        }
    }
}

pub struct BenchReport {
    pub human: String,
    pub json: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// This machine's f32 peak for `threads` threads at the kernels' instruction set: measured
/// by running fused multiply-adds on all of them at once ([`measured_fma_gflops`]), with the
/// nominal estimate (threads × clock × FLOP per cycle, from `/proc/cpuinfo`) beside it in the
/// description. `None` without vector FMA.
pub fn peak_gflops(threads: usize) -> Option<(f64, String)> {
    let cpu = super::cpu::cpu_info();
    let measured = super::cpu::measured_fma_gflops(threads)?;
    let nominal = match cpu.mhz {
        Some(mhz) => format!(
            "; nominal {threads} thread(s) × {mhz:.0} MHz × {:.0} FLOP/cycle = {:.0}",
            cpu.flop_per_cycle,
            threads as f64 * mhz / 1e3 * cpu.flop_per_cycle
        ),
        None => String::new(),
    };
    Some((
        measured,
        format!(
            "measured: {threads} thread(s) of {} FMAs{nominal}",
            cpu.kernels.name()
        ),
    ))
}

/// Floating-point operations of one step (2 per multiply-add of the conv and linear
/// layers; backward = 2 × forward, less the first layer's input gradient, which is not
/// computed).
fn step_flops(
    online: &OnlineNetwork,
    image_size: usize,
    batch: usize,
    what: BenchWhat,
    target_views: usize,
) -> f64 {
    let (encoder, first) = online.encoder.macs(image_size);
    let projector = online.projector.macs();
    let predictor = online.predictor.as_ref().map_or(0, |p| p.macs());
    let trained = |macs: u64| 3 * macs - first;
    let per_example = match what {
        BenchWhat::Step => trained(encoder + projector),
        _ => {
            2 * trained(encoder + projector + predictor)
                + target_views as u64 * (encoder + projector)
        }
    };
    2.0 * per_example as f64 * batch as f64
}

/// Per-step phase times (ms) of the timed steps.
#[derive(Default)]
struct Timed {
    forward: Vec<f64>,
    backward: Vec<f64>,
    update: Vec<f64>,
    metrics: Vec<f64>,
    total: Vec<f64>,
}

/// Waits for the device before the clock is read.
fn sync(t: &Tensor) -> candle_core::Result<f64> {
    t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// What a bench times and on what: the run config, the device, the warm-up and timed
/// step counts and the thread setting.
struct Bench<'a> {
    cfg: &'a RunConfig,
    what: BenchWhat,
    device: &'a Device,
    warmup: usize,
    steps: usize,
    /// Threads the step may use (`RAYON_NUM_THREADS`, else the machine's).
    threads: usize,
    /// `RAYON_NUM_THREADS` as given, or `default`.
    threads_label: String,
}

/// The threads a step may use (`RAYON_NUM_THREADS`, else the machine's) and how to print
/// the setting (`RAYON_NUM_THREADS` as given, or `default`).
fn threads_setting() -> (usize, String) {
    let env = std::env::var("RAYON_NUM_THREADS").ok();
    let threads = env
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (threads, env.unwrap_or_else(|| "default".into()))
}

/// Times `steps` steps after `warmup` untimed ones.
pub fn bench(
    cfg: &RunConfig,
    what: BenchWhat,
    device: &Device,
    warmup: usize,
    steps: usize,
) -> anyhow::Result<BenchReport> {
    let pair = open_dataset(&cfg.dataset)?;
    let channels = pair.train.channels();
    let loader = TwoViewLoader::for_steps(
        pair.train.clone(),
        cfg,
        warmup + steps,
        cfg.train.loader_threads,
    )?;
    let (threads, threads_label) = threads_setting();
    let b = Bench {
        cfg,
        what,
        device,
        warmup,
        steps,
        threads,
        threads_label,
    };
    if what == BenchWhat::Loader {
        return Ok(b.loader(loader));
    }
    let mut method = crate::method::build(cfg, channels, device)?;
    let mut optimizer = Optimizer::new(&cfg.optim, method.online().store.params().len());
    // Every batch is augmented before the clock starts: the loader's thread would otherwise
    // take cores from the step it is timing (PyTorch's reference feeds fixed tensors).
    let batches: Vec<TwoViewBatch> = loader.take(warmup + steps).collect();
    let views = |batch: &TwoViewBatch| -> candle_core::Result<[Tensor; 2]> {
        let shape = (batch.image_ids.len(), channels, b.size(), b.size());
        Ok([
            Tensor::from_slice(&batch.view0, shape, device)?,
            Tensor::from_slice(&batch.view1, shape, device)?,
        ])
    };
    if what == BenchWhat::Metrics {
        let first = batches
            .first()
            .ok_or_else(|| anyhow::anyhow!("no batch to time"))?;
        let [v0, v1] = views(first)?;
        let step = training_step(
            method.as_mut(),
            &mut optimizer,
            [&v0, &v1],
            cfg.optim.lr,
            b.tau(),
        )?;
        return b.metrics(&step.out.embeddings);
    }
    let mut timed = Timed::default();
    for (i, batch) in batches.iter().enumerate() {
        let t0 = Instant::now();
        let [v0, v1] = views(batch)?;
        let [forward, backward, update, metrics] = match what {
            BenchWhat::Step => plain_step(method.online(), &mut optimizer, &v0, cfg, t0)?,
            _ => b.method_step(method.as_mut(), &mut optimizer, [&v0, &v1], t0)?,
        };
        if i >= warmup {
            timed.forward.push(forward);
            timed.backward.push(backward);
            timed.update.push(update);
            timed.metrics.push(metrics);
            timed.total.push(forward + backward + update);
        }
    }
    Ok(b.step_report(method.online(), timed))
}

/// One plain step's phases (forward, backward, update, metrics = 0), in ms from `t0`.
fn plain_step(
    online: &OnlineNetwork,
    optimizer: &mut Optimizer,
    v0: &Tensor,
    cfg: &RunConfig,
    t0: Instant,
) -> anyhow::Result<[f64; 4]> {
    let y = online.encoder.forward_t(v0, true)?;
    let loss = online.projector.forward_t(&y, true)?.sqr()?.mean_all()?;
    sync(&loss)?;
    let t1 = Instant::now();
    let grads = loss.backward()?;
    let t2 = Instant::now();
    let params = online.store.params().to_vec();
    optimizer.step(&params, &grads, cfg.optim.lr)?;
    sync(params[0].var.as_tensor())?;
    let t3 = Instant::now();
    Ok([ms(t0, t1), ms(t1, t2), ms(t2, t3), 0.0])
}

impl Bench<'_> {
    fn size(&self) -> usize {
        self.cfg.dataset.image_size
    }

    fn batch(&self) -> usize {
        self.cfg.train.batch_size
    }

    fn tau(&self) -> Option<f64> {
        (self.cfg.method.name.spec().ema_target).then_some(self.cfg.method.tau)
    }

    /// Two-view images per second out of the loader.
    fn loader(&self, loader: TwoViewLoader) -> BenchReport {
        let (size, batch, workers) = (self.size(), self.batch(), self.cfg.train.loader_threads);
        let mut it = loader.skip(self.warmup);
        let start = Instant::now();
        let mut images = 0usize;
        for b in it.by_ref().take(self.steps) {
            images += b.image_ids.len();
        }
        let per_s = images as f64 / start.elapsed().as_secs_f64();
        BenchReport {
            human: format!(
                "loader: {per_s:.0} two-view images/s ({size} px, batch {batch}, {workers} augmenting thread(s): {:.0} per thread)",
                per_s / workers as f64
            ),
            json: format!(
                r#"{{"what":"loader","image_size":{size},"batch_size":{batch},"loader_threads":{workers},"two_view_images_per_s":{per_s:.1}}}"#
            ),
        }
    }

    /// The per-step diagnostics on one step's embeddings, timed alone.
    fn metrics(&self, embeddings: &Embeddings) -> anyhow::Result<BenchReport> {
        let mut times = Vec::with_capacity(self.steps);
        for i in 0..self.warmup + self.steps {
            let t0 = Instant::now();
            step_metrics(embeddings)?;
            if i >= self.warmup {
                times.push(ms(t0, Instant::now()));
            }
        }
        let m = median(times);
        let (method, batch, threads) = (
            self.cfg.method.name.as_str(),
            self.batch(),
            &self.threads_label,
        );
        let dim = self.cfg.model.projector.out;
        Ok(BenchReport {
            human: format!(
                "metrics ({method}, batch {batch}, projection dim {dim}, threads {threads}): pos/neg cosine + z std + effective rank {m:.3} ms"
            ),
            json: format!(
                r#"{{"what":"metrics","method":"{method}","batch_size":{batch},"projection_dim":{dim},"threads":"{threads}","metrics_ms":{m:.4}}}"#
            ),
        })
    }

    /// One full method step's phases and its diagnostics, in ms from `t0` (the upload of
    /// the views counts as forward).
    fn method_step(
        &self,
        method: &mut dyn crate::method::Method,
        optimizer: &mut Optimizer,
        views: [&Tensor; 2],
        t0: Instant,
    ) -> anyhow::Result<[f64; 4]> {
        let upload = ms(t0, Instant::now());
        let step = training_step(method, optimizer, views, self.cfg.optim.lr, self.tau())?;
        let tm = Instant::now();
        step_metrics(&step.out.embeddings)?;
        let metrics = ms(tm, Instant::now());
        Ok([
            upload + step.forward_ms,
            step.backward_ms,
            step.update_ms,
            metrics,
        ])
    }

    /// The median step, its phases, throughput, GFLOP/s and fraction of peak.
    fn step_report(&self, online: &OnlineNetwork, t: Timed) -> BenchReport {
        let (what, size, batch) = (self.what, self.size(), self.batch());
        let method_name = self.cfg.method.name.as_str();
        let encoder = self.cfg.model.encoder.as_str();
        let threads_label = &self.threads_label;
        let (f, b, u, m, step) = (
            median(t.forward),
            median(t.backward),
            median(t.update),
            median(t.metrics),
            median(t.total),
        );
        let images_per_s = batch as f64 / (step / 1e3);
        let target_views = if self.tau().is_some() { 2 } else { 0 };
        let flops = step_flops(online, size, batch, what, target_views);
        let gflops = flops / (step / 1e3) / 1e9;
        let peak = if self.device.is_cpu() {
            peak_gflops(self.threads)
        } else {
            None
        };
        let cpu = match self.device.is_cpu() {
            true => super::cpu::cpu_description(),
            false => "(not the device)",
        };
        let (peak_human, peak_json) = match &peak {
            Some((p, how)) => (
                format!(
                    " = {:.0} % of peak ≈ {p:.0} GFLOP/s ({how})",
                    100.0 * gflops / p
                ),
                format!(r#","peak_gflops":{p:.1},"peak_fraction":{:.4}"#, gflops / p),
            ),
            None => (String::new(), String::new()),
        };
        let metrics_human = if what == BenchWhat::Step {
            String::new()
        } else {
            format!(
                "; per-step diagnostics {m:.2} ms ({:.1} % of the step)",
                100.0 * m / step
            )
        };
        let label = match what {
            BenchWhat::Step => "plain step".to_string(),
            _ => format!("{method_name} step"),
        };
        let what_str = what.as_str();
        BenchReport {
            human: format!(
                "{label} ({encoder}, {size} px, batch {batch}, threads {threads_label}): {step:.1} ms = forward {f:.1} + backward {b:.1} + update {u:.1} ms → {images_per_s:.0} img/s, {gflops:.1} GFLOP/s ({:.1} GFLOP a step){peak_human}{metrics_human}",
                flops / 1e9
            ),
            json: format!(
                r#"{{"what":"{what_str}","method":"{method_name}","encoder":"{encoder}","image_size":{size},"batch_size":{batch},"threads":"{threads_label}","step_ms":{step:.3},"forward_ms":{f:.3},"backward_ms":{b:.3},"update_ms":{u:.3},"metrics_ms":{m:.3},"images_per_s":{images_per_s:.1},"gflop_per_step":{:.3},"gflops":{gflops:.2},"cpu":"{cpu}"{peak_json}}}"#,
                flops / 1e9
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_count_of_the_small_net_and_resnet18_in_closed_form() -> anyhow::Result<()> {
        let mut cfg = RunConfig::default();
        cfg.model.width = 32;
        cfg.model.depth = 4;
        cfg.model.projector.hidden = 256;
        cfg.model.projector.out = 64;
        let online = crate::method::build(&cfg, 3, &Device::Cpu)?;
        // 3×3 convs 3→32 @32², 32→64 @16², 64→128 @8², 128→256 @4².
        let convs = 32 * 32 * 32 * 27 + 3 * (16 * 16 * 64 * 288);
        let (enc, first) = online.online().encoder.macs(32);
        assert_eq!((enc, first), (convs, 32 * 32 * 32 * 27));
        assert_eq!(online.online().projector.macs(), 256 * 256 + 256 * 64);

        cfg.model.encoder = crate::config::EncoderName::Resnet18;
        cfg.model.width = 64;
        cfg.model.resnet_stem = crate::config::ResnetStem::Cifar;
        let resnet = crate::method::build(&cfg, 3, &Device::Cpu)?;
        // The CIFAR ResNet-18's 0.56 G multiply-adds (stem + 16 convs + 3 shortcuts).
        assert_eq!(resnet.online().encoder.macs(32).0, 555_417_600);
        Ok(())
    }

    #[test]
    fn the_peak_names_the_kernels_instruction_set() {
        if let Some((p, how)) = peak_gflops(1) {
            assert!(p > 0.0, "{how}");
            assert!(
                how.contains(super::super::cpu::cpu_info().kernels.name()),
                "{how}"
            );
        }
    }
}
