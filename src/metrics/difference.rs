//! How far one tensor is from another, for the checks that compare two computations of the
//! same thing (a GPU kernel against its CPU code, a device's training against the CPU's).

use candle_core::{DType, Result, Tensor};

/// max |got − want| / max |want| (the scale floored at 1e-12), in f64; NaN when either
/// holds a NaN, so that a check reading it fails.
pub fn relative_max_diff(got: &Tensor, want: &Tensor) -> Result<f64> {
    let (got, want) = (got.to_dtype(DType::F64)?, want.to_dtype(DType::F64)?);
    let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-12);
    Ok(err / scale)
}

/// The larger of two differences, NaN if either is (`f64::max` would drop a NaN).
pub fn worst(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn relative_to_the_largest_magnitude_and_nan_is_kept() -> Result<()> {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu);
        let d = relative_max_diff(&t(&[1.0, -2.002])?, &t(&[1.0, -2.0])?)?;
        assert!((d - 1e-3).abs() < 1e-6, "{d}");
        assert_eq!(relative_max_diff(&t(&[3.0])?, &t(&[3.0])?)?, 0.0);
        assert!(relative_max_diff(&t(&[f32::NAN])?, &t(&[1.0])?)?.is_nan());
        assert!(worst(0.1, f64::NAN).is_nan() && worst(f64::NAN, 0.1).is_nan());
        assert_eq!(worst(0.1, 0.3), 0.3);
        Ok(())
    }
}
