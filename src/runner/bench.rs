//! `collapse-lab bench`: times the parts of a training step, the per-step diagnostics and the
//! two-view loader on one run config, after a warm-up. Prints one human line and one JSON
//! line. Figures are only comparable within one invocation on one machine.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::analysis::{effective_rank, symmetric_pos_neg_cos, z_std};
use crate::config::RunConfig;
use crate::data::{open_dataset, Augmenter, TwoViewLoader};
use crate::train::{grad_norm, Optimizer};

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchWhat {
    /// A full training step of the run's method (both views, backward, update, EMA) and the
    /// per-step diagnostics, timed separately.
    Step,
    /// The two-view augmentation loader alone.
    Loader,
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
    let size = cfg.dataset.image_size;
    let batch = cfg.train.batch_size;
    let augmenter = Augmenter::new(&cfg.augment, size, channels)?;
    let epochs = ((warmup + steps) * batch / pair.train.len().max(1) + 2) as u32;
    let loader = TwoViewLoader::spawn_with_workers(
        pair.train.clone(),
        augmenter,
        batch,
        epochs,
        cfg.train.seed,
        cfg.train.prefetch,
        cfg.train.loader_threads,
    )?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    match what {
        BenchWhat::Loader => {
            let workers = cfg.train.loader_threads;
            let mut it = loader.skip(warmup);
            let start = Instant::now();
            let mut images = 0usize;
            for b in it.by_ref().take(steps) {
                images += b.image_ids.len();
            }
            let secs = start.elapsed().as_secs_f64();
            let per_s = images as f64 / secs;
            Ok(BenchReport {
                human: format!(
                    "loader: {per_s:.0} two-view images/s ({size} px, batch {batch}, {workers} augmenting thread(s): {:.0} per thread)",
                    per_s / workers as f64
                ),
                json: format!(
                    r#"{{"what":"loader","image_size":{size},"batch_size":{batch},"loader_threads":{workers},"two_view_images_per_s":{per_s:.1}}}"#
                ),
            })
        }
        BenchWhat::Step => {
            let mut method = crate::method::build(cfg, channels, device)?;
            let mut optimizer = Optimizer::new(&cfg.optim, method.online().store.params().len());
            let tau = cfg.method.name.has_ema_target().then_some(cfg.method.tau);
            let (mut fwd, mut bwd, mut upd, mut met, mut total) =
                (vec![], vec![], vec![], vec![], vec![]);
            for (i, b) in loader.take(warmup + steps).enumerate() {
                let shape = (b.image_ids.len(), channels, size, size);
                let t0 = Instant::now();
                let v0 = Tensor::from_slice(&b.view0, shape, device)?;
                let v1 = Tensor::from_slice(&b.view1, shape, device)?;
                let out = method.forward([&v0, &v1])?;
                let _loss = out
                    .loss
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                let t1 = Instant::now();
                let grads = out.loss.backward()?;
                let params = method.online().store.params().to_vec();
                let _g = grad_norm(&params, &grads)?;
                let t2 = Instant::now();
                optimizer.step(&params, &grads, cfg.optim.lr)?;
                method.after_step(tau, &out)?;
                // Wait for the device before reading the clock.
                let _sync = params[0]
                    .var
                    .as_tensor()
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                let t3 = Instant::now();
                let e = &out.embeddings;
                let _ = symmetric_pos_neg_cos(&e.z, &e.z_target)?;
                let _ = z_std(&e.z[0])?;
                let _ = effective_rank(&e.z[0])?;
                let t4 = Instant::now();
                if i >= warmup {
                    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
                    fwd.push(ms(t0, t1));
                    bwd.push(ms(t1, t2));
                    upd.push(ms(t2, t3));
                    met.push(ms(t3, t4));
                    total.push(ms(t0, t3));
                }
            }
            let (f, b, u, m, t) = (
                median(fwd),
                median(bwd),
                median(upd),
                median(met),
                median(total),
            );
            let images_per_s = batch as f64 / (t / 1e3);
            let overhead = 100.0 * m / t;
            let method_name = cfg.method.name.as_str();
            let encoder = cfg.model.encoder.as_str();
            Ok(BenchReport {
                human: format!(
                    "{method_name} step ({encoder}, {size} px, batch {batch}, threads {threads}): {t:.1} ms = forward {f:.1} + backward {b:.1} + update {u:.1} ms → {images_per_s:.0} img/s; per-step diagnostics {m:.2} ms ({overhead:.1} % of the step)"
                ),
                json: format!(
                    r#"{{"what":"step","method":"{method_name}","encoder":"{encoder}","image_size":{size},"batch_size":{batch},"threads":"{threads}","step_ms":{t:.3},"forward_ms":{f:.3},"backward_ms":{b:.3},"update_ms":{u:.3},"metrics_ms":{m:.3},"metrics_pct_of_step":{overhead:.2},"images_per_s":{images_per_s:.1}}}"#
                ),
            })
        }
    }
}
