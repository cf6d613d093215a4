//! Finite-difference gradient checks (f64), shared by the tests of layers and losses.
//!
//! The objective is Σ f(x)·r with a fixed, non-constant r: a plain sum would have zero
//! gradient through any normalization and prove nothing.

use candle_core::{DType, Device, Result, Tensor, Var};

fn probe_values(n: usize, phase: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 + 1.0) * 0.731 + phase).sin() * 1.3 + 0.05 * i as f64 / n as f64)
        .collect()
}

/// Checks d/dx and d/dθ (every named parameter in `params`) of Σ f(x)·r against central
/// differences, x of `shape` on `dev` in f64. Fails if any gradient is missing (an op that
/// records none) or disagrees.
pub fn check_gradients(
    label: &str,
    shape: &[usize],
    dev: &Device,
    params: &[(String, Var)],
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    let dev = dev.clone();
    let n: usize = shape.iter().product();
    let x = Var::from_tensor(&Tensor::from_vec(probe_values(n, 0.3), shape, &dev)?)?;
    let out_shape = f(x.as_tensor())?.dims().to_vec();
    let m: usize = out_shape.iter().product();
    let r = Tensor::from_vec(probe_values(m, 1.7), out_shape.as_slice(), &dev)?;
    let objective = |t: &Tensor| -> Result<f64> {
        (f(t)?.to_dtype(DType::F64)? * &r)?
            .sum_all()?
            .to_scalar::<f64>()
    };
    let loss = (f(x.as_tensor())?.to_dtype(DType::F64)? * &r)?.sum_all()?;
    let grads = loss.backward()?;

    let h = 1e-6;
    let compare = |what: &str, analytic: &[f64], numeric: &[f64]| -> Result<()> {
        let scale = numeric.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
        for (i, (a, nu)) in analytic.iter().zip(numeric).enumerate() {
            if (a - nu).abs() > 1e-5 * scale + 1e-7 {
                candle_core::bail!("{label}: d/d{what}[{i}] analytic {a} vs numeric {nu}");
            }
        }
        if numeric.iter().any(|v| v.abs() > 1e-8) && analytic.iter().all(|v| *v == 0.0) {
            candle_core::bail!("{label}: gradient of {what} is all zero");
        }
        Ok(())
    };

    // Input.
    let gx = grads
        .get(x.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg(format!("{label}: no gradient reached the input")))?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let x0 = x.as_tensor().flatten_all()?.to_vec1::<f64>()?;
    let mut numeric = Vec::with_capacity(n);
    for i in 0..n {
        let mut xp = x0.clone();
        xp[i] += h;
        let mut xm = x0.clone();
        xm[i] -= h;
        let fp = objective(&Tensor::from_vec(xp, shape, &dev)?)?;
        let fm = objective(&Tensor::from_vec(xm, shape, &dev)?)?;
        numeric.push((fp - fm) / (2.0 * h));
    }
    compare("x", &gx, &numeric)?;

    // Parameters.
    for (name, var) in params {
        let g = grads.get(var.as_tensor()).ok_or_else(|| {
            candle_core::Error::Msg(format!("{label}: no gradient reached parameter {name}"))
        })?;
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        let dims = var.dims().to_vec();
        let p0 = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let mut numeric = Vec::with_capacity(p0.len());
        for i in 0..p0.len() {
            let mut v = p0.clone();
            v[i] += h;
            var.set(&Tensor::from_vec(v.clone(), dims.as_slice(), &dev)?)?;
            let fp = objective(x.as_tensor())?;
            v[i] -= 2.0 * h;
            var.set(&Tensor::from_vec(v, dims.as_slice(), &dev)?)?;
            let fm = objective(x.as_tensor())?;
            numeric.push((fp - fm) / (2.0 * h));
        }
        var.set(&Tensor::from_vec(p0, dims.as_slice(), &dev)?)?;
        compare(name, &g, &numeric)?;
    }
    Ok(())
}
