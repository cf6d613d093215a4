//! `collapse-lab selftest [--device cpu|cuda[:N]]`: the checks a device needs, inside the main
//! binary — a GPU machine gets this binary alone, with no test binaries and no Rust toolchain.
//!
//! On every device: a few training steps of a small config run twice from the same seed must
//! give the same numbers bit for bit (same seed ⇒ same numbers). On a CUDA device besides:
//! each of collapse-lab's CUDA kernels against the CPU code it replaces (EMA update, per-step
//! diagnostics, fused LARS), and the same training steps on the device against the CPU.
//!
//! Tolerances, each stated with its check:
//! - EMA kernel: 0 — it computes the CPU formula's two f32 products and sum exactly.
//! - diagnostics kernel: 1e-5 relative — both sum in f64 from the same f32 inputs, in
//!   another order.
//! - fused LARS: 1e-5 relative — only the f32 norms' summation order differs.
//! - training on the device against the CPU: `STEP_TOLERANCE` × steps on the loss, the
//!   cosines and every weight (relative to the tensor's largest magnitude). A GPU sums convs
//!   and matmuls in other orders than the CPU (f32 rounding ~1e-7 relative per op); the
//!   step-parity bound against PyTorch on the CPU is 1e-4 per step for the same reason, and
//!   the differences grow at most linearly over a handful of steps at a small learning rate.

use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::config::RunConfig;
use crate::data::{open_dataset, TwoViewLoader};
use crate::metrics::difference::{relative_max_diff, worst};
use crate::train::{step_metrics, training_step, Optimizer};

/// Per-step bound of a device's training against the CPU's (see the module doc).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub const STEP_TOLERANCE: f64 = 1e-4;

/// One check: the largest difference found and what it may be.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub max_diff: f64,
    pub tolerance: f64,
    pub passed: bool,
    pub seconds: f64,
}

impl Check {
    fn new(name: &str, max_diff: f64, tolerance: f64, seconds: f64) -> Self {
        Self {
            name: name.to_string(),
            max_diff,
            tolerance,
            // NaN never passes.
            passed: max_diff <= tolerance,
            seconds,
        }
    }
}

/// What `selftest` found on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTest {
    /// The device as the machine names it (CPU model and kernels; GPU name, compute
    /// capability, driver).
    pub device: String,
    pub checks: Vec<Check>,
}

impl SelfTest {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// One JSON object for scripts: `{"device", "passed", "checks": [{"name", "max_diff",
    /// "tolerance", "passed", "seconds"}]}` (a NaN difference is written as null).
    pub fn json(&self) -> String {
        let text = |s: &str| format!("{:?}", s); // Rust's escaping is valid JSON for these.
        let num = |x: f64| {
            if x.is_finite() {
                format!("{x:e}")
            } else {
                "null".into()
            }
        };
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{{\"name\": {}, \"max_diff\": {}, \"tolerance\": {}, \"passed\": {}, \"seconds\": {}}}",
                    text(&c.name),
                    num(c.max_diff),
                    num(c.tolerance),
                    c.passed,
                    num(c.seconds)
                )
            })
            .collect();
        format!(
            "{{\"device\": {}, \"passed\": {}, \"checks\": [{}]}}",
            text(&self.device),
            self.passed(),
            checks.join(", ")
        )
    }

    /// The report a person reads: the device, then a line per check.
    pub fn text(&self) -> String {
        let mut out = format!("selftest on {}\n", self.device);
        for c in &self.checks {
            out += &format!(
                "  {:<4} {:<44} largest difference {:.3e} (tolerance {:.1e}, {:.1} s)\n",
                if c.passed { "ok" } else { "FAIL" },
                c.name,
                c.max_diff,
                c.tolerance,
                c.seconds
            );
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        out += &if failed == 0 {
            format!("selftest passed: {} checks\n", self.checks.len())
        } else {
            format!(
                "selftest FAILED: {failed} of {} checks\n",
                self.checks.len()
            )
        };
        out
    }
}

/// The loss, cosines and final online weights of `steps` training steps.
struct Trace {
    loss: Vec<f64>,
    pos: Vec<f64>,
    neg: Vec<f64>,
    weights: Vec<(String, Tensor)>,
}

/// Trains `steps` steps of `cfg` on `device` from its seed, on batches the loader draws on the
/// host (the same for every device).
fn train_steps(cfg: &RunConfig, device: &Device, steps: usize) -> anyhow::Result<Trace> {
    let pair = open_dataset(&cfg.dataset)?;
    let channels = pair.train.channels();
    let size = cfg.dataset.image_size;
    let loader = TwoViewLoader::for_steps(pair.train.clone(), cfg, steps, 1)?;
    let mut method = crate::method::build(cfg, channels, device)?;
    let mut optimizer = Optimizer::new(&cfg.optim, method.online().store.params().len());
    let tau = cfg.method.name.spec().ema_target.then_some(cfg.method.tau);
    let mut trace = Trace {
        loss: Vec::new(),
        pos: Vec::new(),
        neg: Vec::new(),
        weights: Vec::new(),
    };
    for b in loader.take(steps) {
        let shape = (b.image_ids.len(), channels, size, size);
        let v0 = Tensor::from_slice(&b.view0, shape, device)?;
        let v1 = Tensor::from_slice(&b.view1, shape, device)?;
        let step = training_step(
            method.as_mut(),
            &mut optimizer,
            [&v0, &v1],
            cfg.optim.lr,
            tau,
        )?;
        let (pos, neg, _, _) = step_metrics(&step.out.embeddings)?;
        trace.loss.push(step.loss);
        trace.pos.push(pos);
        trace.neg.push(neg);
    }
    if trace.loss.len() != steps {
        anyhow::bail!(
            "selftest: the loader gave {} of {steps} batches",
            trace.loss.len()
        );
    }
    trace.weights = method
        .online()
        .store
        .named_tensors()
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    Ok(trace)
}

/// Largest |a − b| over two series (NaN if either holds one, or the lengths differ).
fn series_diff(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, worst)
}

/// Largest difference of same-named weights, relative to each tensor's largest magnitude.
fn weight_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> anyhow::Result<f64> {
    if a.len() != b.len() {
        return Ok(f64::NAN);
    }
    let mut largest = 0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        if na != nb || ta.dims() != tb.dims() {
            return Ok(f64::NAN);
        }
        largest = worst(largest, relative_max_diff(tb, ta)?);
    }
    Ok(largest)
}

/// The three comparisons of two traces, as checks named `what` (loss, cosines, weights).
fn compare(
    what: &str,
    a: &Trace,
    b: &Trace,
    tolerance: f64,
    seconds: f64,
) -> anyhow::Result<Vec<Check>> {
    let cos = worst(series_diff(&a.pos, &b.pos), series_diff(&a.neg, &b.neg));
    Ok(vec![
        Check::new(
            &format!("{what}: loss"),
            series_diff(&a.loss, &b.loss),
            tolerance,
            seconds,
        ),
        Check::new(&format!("{what}: pos/neg cosine"), cos, tolerance, 0.0),
        Check::new(
            &format!("{what}: weights (relative)"),
            weight_diff(&a.weights, &b.weights)?,
            tolerance,
            0.0,
        ),
    ])
}

/// Runs the checks for `device` with `cfg` (a small config: the smoke grid's `byol`) trained
/// for `steps` steps.
pub fn selftest(cfg: &RunConfig, device: &Device, steps: usize) -> anyhow::Result<SelfTest> {
    let mut checks = Vec::new();
    let t = Instant::now();
    let first = train_steps(cfg, device, steps)?;
    let again = train_steps(cfg, device, steps)?;
    checks.extend(compare(
        &format!("{steps} steps twice on {}", device_label(device)),
        &first,
        &again,
        0.0,
        t.elapsed().as_secs_f64(),
    )?);
    if !device.is_cpu() {
        checks.extend(device_checks(cfg, device, steps, &first)?);
    }
    Ok(SelfTest {
        device: describe(device),
        checks,
    })
}

fn device_label(device: &Device) -> &'static str {
    if device.is_cpu() {
        "cpu"
    } else {
        "the device"
    }
}

#[cfg(feature = "cuda")]
fn device_checks(
    cfg: &RunConfig,
    device: &Device,
    steps: usize,
    on_device: &Trace,
) -> anyhow::Result<Vec<Check>> {
    use crate::cuda::diagnostics::DIAGNOSTICS_TOLERANCE;
    use crate::train::optim::{fused_lars_self_check, FUSED_LARS_TOLERANCE};
    let mut checks = Vec::new();
    let timed = |f: &dyn Fn() -> candle_core::Result<f64>| -> anyhow::Result<(f64, f64)> {
        let t = Instant::now();
        let v = f()?;
        Ok((v, t.elapsed().as_secs_f64()))
    };
    let (d, s) = timed(&|| crate::cuda::ema::self_check(device))?;
    checks.push(Check::new("EMA kernel vs CPU formula", d, 0.0, s));
    let (d, s) = timed(&|| crate::cuda::diagnostics::self_check(device))?;
    checks.push(Check::new(
        "diagnostics kernel vs CPU metrics",
        d,
        DIAGNOSTICS_TOLERANCE,
        s,
    ));
    let (d, s) = timed(&|| fused_lars_self_check(device))?;
    checks.push(Check::new(
        "fused LARS kernel vs CPU optimizer",
        d,
        FUSED_LARS_TOLERANCE,
        s,
    ));
    let t = Instant::now();
    let cpu = train_steps(cfg, &Device::Cpu, steps)?;
    checks.extend(compare(
        &format!("{steps} steps, device vs cpu"),
        on_device,
        &cpu,
        STEP_TOLERANCE * steps as f64,
        t.elapsed().as_secs_f64(),
    )?);
    Ok(checks)
}

#[cfg(not(feature = "cuda"))]
fn device_checks(
    _cfg: &RunConfig,
    _device: &Device,
    _steps: usize,
    _on_device: &Trace,
) -> anyhow::Result<Vec<Check>> {
    anyhow::bail!("this binary was built without the `cuda` feature")
}

/// The device in words: the CPU's model and kernels, or the GPU's name, compute capability
/// and driver.
fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu: {}", super::cpu::cpu_description()),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => crate::cuda::describe(d),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RunConfig {
        let mut cfg = RunConfig::default();
        cfg.model.width = 8;
        cfg.model.depth = 2;
        cfg.model.projector.hidden = 32;
        cfg.model.projector.out = 16;
        cfg.model.predictor.hidden = 32;
        cfg.model.predictor.out = 16;
        cfg.train.batch_size = 16;
        cfg.dataset.image_size = 16;
        cfg.dataset.train_size = 64;
        cfg.dataset.eval_size = 64;
        cfg.optim.lr = 0.1;
        cfg
    }

    #[test]
    fn the_cpu_half_passes_and_names_the_cpu() -> anyhow::Result<()> {
        let report = selftest(&small(), &Device::Cpu, 3)?;
        assert!(report.passed(), "{}", report.text());
        assert_eq!(report.checks.len(), 3);
        assert!(report.device.starts_with("cpu: "), "{}", report.device);
        assert!(report.text().contains("selftest passed: 3 checks"));
        let json = report.json();
        assert!(
            json.starts_with("{\"device\": \"cpu: ") && json.contains("\"passed\": true"),
            "{json}"
        );
        assert_eq!(json.matches("\"max_diff\": 0e0").count(), 3, "{json}");
        Ok(())
    }

    #[test]
    fn a_difference_or_nan_fails_a_check() {
        let a = [1.0, 2.0];
        assert_eq!(series_diff(&a, &[1.0, 2.5]), 0.5);
        assert!(series_diff(&a, &[1.0, f64::NAN]).is_nan());
        assert!(series_diff(&a, &[1.0]).is_nan());
        assert!(!Check::new("x", f64::NAN, 1.0, 0.0).passed);
        assert!(!Check::new("x", 1e-3, 1e-4, 0.0).passed);
        assert!(Check::new("x", 0.0, 0.0, 0.0).passed);
        let report = SelfTest {
            device: "d".into(),
            checks: vec![Check::new("x", 1.0, 0.0, 0.0)],
        };
        assert!(!report.passed());
        assert!(report.text().contains("FAIL") && report.text().contains("FAILED: 1 of 1"));
    }

    #[test]
    fn weights_that_differ_are_found() -> anyhow::Result<()> {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu);
        let a = vec![("w".to_string(), t(&[1.0, -2.0])?)];
        let b = vec![("w".to_string(), t(&[1.0, -2.002])?)];
        assert!((weight_diff(&a, &b)? - 1e-3).abs() < 1e-6);
        let renamed = vec![("v".to_string(), t(&[1.0, -2.0])?)];
        assert!(weight_diff(&a, &renamed)?.is_nan());
        Ok(())
    }
}
