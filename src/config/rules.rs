//! The checks config validation is made of: each names the field and what was expected.

pub(super) fn positive(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be a positive number, got {v}"))
    }
}

pub(super) fn non_negative(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} must be ≥ 0, got {v}"))
    }
}

pub(super) fn at_most(name: &str, v: usize, max: usize) -> Result<(), String> {
    if v <= max {
        Ok(())
    } else {
        Err(format!("{name} must be ≤ {max}, got {v}"))
    }
}

pub(super) fn at_least_one(name: &str, v: usize) -> Result<(), String> {
    if v >= 1 {
        Ok(())
    } else {
        Err(format!("{name} must be ≥ 1, got {v}"))
    }
}
