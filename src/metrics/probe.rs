//! Linear probe: multinomial logistic regression on frozen features, fitted on one half of
//! the evaluation split and scored on the other (the study's protocol).
//!
//! Objective as scikit-learn's default `LogisticRegression` (C = 1): mean cross-entropy +
//! ‖W‖² / (2·C·n), on features standardised with the fit half's statistics; minimised by
//! full-batch Adam for a fixed number of iterations (deterministic).

use super::knn::{accuracy, Labelled};

pub const PROBE_ITERATIONS: usize = 300;

/// A fitted probe: standardisation plus weights (classes × dim) and biases.
pub struct LinearProbe {
    dim: usize,
    classes: usize,
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    bias: Vec<f64>,
}

impl LinearProbe {
    /// Fits by full-batch Adam; the logits and the weight gradient are matrix products
    /// (faer), the same sums as [`tests::fit_by_loops`] in another order.
    pub fn fit(train: &Labelled, classes: usize, iterations: usize) -> Self {
        use faer::Mat;
        let d = train.dim;
        let n = train.labels.len();
        let (mean, scale) = standardisation(train.features, d);
        let xs = standardise(train.features, d, &mean, &scale);
        let x = Mat::<f64>::from_fn(n, d, |i, j| xs[i * d + j]);
        let c = classes.max(1);
        let mut w = Mat::<f64>::zeros(c, d);
        let mut b = vec![0.0f64; c];
        let lambda = 1.0 / n.max(1) as f64; // 1 / (C·n) with C = 1; gradient of ‖W‖²/(2Cn)
        let (lr, beta1, beta2, eps) = (0.05, 0.9, 0.999, 1e-8);
        let mut m = vec![0.0f64; c * d + c];
        let mut v = vec![0.0f64; c * d + c];
        let mut grad = vec![0.0f64; c * d + c];
        let inv_n = 1.0 / n.max(1) as f64;
        for t in 1..=iterations {
            // err = (softmax(x Wᵀ + b) − onehot) / n, then ∇W = errᵀ x + λW, ∇b = Σ err.
            let mut err = &x * w.transpose();
            for (i, &label) in train.labels.iter().enumerate() {
                let mut row: Vec<f64> = (0..c).map(|k| err[(i, k)] + b[k]).collect();
                softmax_in_place(&mut row);
                for (k, p) in row.into_iter().enumerate() {
                    err[(i, k)] = (p - if k == label as usize { 1.0 } else { 0.0 }) * inv_n;
                }
            }
            let gw = err.transpose() * &x;
            for k in 0..c {
                for j in 0..d {
                    grad[k * d + j] = gw[(k, j)] + lambda * w[(k, j)];
                }
                grad[c * d + k] = (0..n).map(|i| err[(i, k)]).sum();
            }
            let bc1 = 1.0 - beta1_pow(beta1, t);
            let bc2 = 1.0 - beta1_pow(beta2, t);
            for i in 0..grad.len() {
                m[i] = beta1 * m[i] + (1.0 - beta1) * grad[i];
                v[i] = beta2 * v[i] + (1.0 - beta2) * grad[i] * grad[i];
                let step = lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                if i < c * d {
                    w[(i / d, i % d)] -= step;
                } else {
                    b[i - c * d] -= step;
                }
            }
        }
        Self {
            dim: d,
            classes: c,
            mean,
            scale,
            weights: (0..c * d).map(|i| w[(i / d, i % d)]).collect(),
            bias: b,
        }
    }

    pub fn predict(&self, features: &[f32]) -> Vec<u32> {
        let x = standardise(features, self.dim, &self.mean, &self.scale);
        x.chunks(self.dim)
            .map(|row| {
                let mut best = (0usize, f64::NEG_INFINITY);
                for k in 0..self.classes {
                    let s = self.bias[k]
                        + self.weights[k * self.dim..(k + 1) * self.dim]
                            .iter()
                            .zip(row)
                            .map(|(a, b)| a * b)
                            .sum::<f64>();
                    if s > best.1 {
                        best = (k, s);
                    }
                }
                best.0 as u32
            })
            .collect()
    }
}

fn beta1_pow(beta: f64, t: usize) -> f64 {
    beta.powi(t as i32)
}

fn softmax_in_place(v: &mut [f64]) {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in v.iter_mut() {
        *x /= s;
    }
}

fn standardisation(x: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / d.max(1)).max(1) as f64;
    let mut mean = vec![0.0; d];
    for row in x.chunks(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n;
        }
    }
    let mut var = vec![0.0; d];
    for row in x.chunks(d) {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v as f64 - m).powi(2) / n;
        }
    }
    // A constant feature carries nothing; scale 1 keeps it at 0 instead of dividing by 0.
    let scale = var
        .iter()
        .map(|v| if *v > 1e-12 { v.sqrt() } else { 1.0 })
        .collect();
    (mean, scale)
}

fn standardise(x: &[f32], d: usize, mean: &[f64], scale: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        out.extend(
            row.iter()
                .zip(mean)
                .zip(scale)
                .map(|((&v, m), s)| (v as f64 - m) / s),
        );
    }
    out
}

/// Fits on `train`, returns accuracy on `test`.
pub fn probe_accuracy(train: &Labelled, test: &Labelled, classes: usize) -> f64 {
    let probe = LinearProbe::fit(train, classes, PROBE_ITERATIONS);
    accuracy(&probe.predict(test.features), test.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::knn::tests::clusters;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The probe's fit written as plain loops over examples and classes: the independent
    /// computation the matrix form is checked against.
    pub(crate) fn fit_by_loops(train: &Labelled, classes: usize, iterations: usize) -> LinearProbe {
        let d = train.dim;
        let n = train.labels.len();
        let (mean, scale) = standardisation(train.features, d);
        let x = standardise(train.features, d, &mean, &scale);
        let c = classes.max(1);
        let mut w = vec![0.0f64; c * d];
        let mut b = vec![0.0f64; c];
        let lambda = 1.0 / n.max(1) as f64;
        let (lr, beta1, beta2, eps) = (0.05, 0.9, 0.999, 1e-8);
        let mut m = vec![0.0f64; c * d + c];
        let mut v = vec![0.0f64; c * d + c];
        let mut grad = vec![0.0f64; c * d + c];
        let mut logits = vec![0.0f64; c];
        for t in 1..=iterations {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (row, &label) in x.chunks(d).zip(train.labels) {
                for k in 0..c {
                    logits[k] = b[k]
                        + w[k * d..(k + 1) * d]
                            .iter()
                            .zip(row)
                            .map(|(a, b)| a * b)
                            .sum::<f64>();
                }
                softmax_in_place(&mut logits);
                for k in 0..c {
                    let err = (logits[k] - if k == label as usize { 1.0 } else { 0.0 }) / n as f64;
                    for (g, xv) in grad[k * d..(k + 1) * d].iter_mut().zip(row) {
                        *g += err * xv;
                    }
                    grad[c * d + k] += err;
                }
            }
            for (g, wv) in grad[..c * d].iter_mut().zip(&w) {
                *g += lambda * wv;
            }
            let bc1 = 1.0 - beta1_pow(beta1, t);
            let bc2 = 1.0 - beta1_pow(beta2, t);
            for i in 0..grad.len() {
                m[i] = beta1 * m[i] + (1.0 - beta1) * grad[i];
                v[i] = beta2 * v[i] + (1.0 - beta2) * grad[i] * grad[i];
                let step = lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                if i < c * d {
                    w[i] -= step;
                } else {
                    b[i - c * d] -= step;
                }
            }
        }
        LinearProbe {
            dim: d,
            classes: c,
            mean,
            scale,
            weights: w,
            bias: b,
        }
    }

    #[test]
    fn the_matrix_fit_equals_the_loop_fit() {
        // Overlapping clusters, so the optimum is not at infinity and the weights move all along.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (n, d, c) = (150, 6, 3);
        let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
        let x: Vec<f32> = (0..n * d)
            .map(|k| (k % d == y[k / d] as usize) as u8 as f32 + rng.random_range(-1.0f32..1.0))
            .collect();
        let train = Labelled {
            features: &x,
            labels: &y,
            dim: d,
        };
        let (a, b) = (
            LinearProbe::fit(&train, c, 200),
            fit_by_loops(&train, c, 200),
        );
        let worst = a
            .weights
            .iter()
            .chain(&a.bias)
            .zip(b.weights.iter().chain(&b.bias))
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-9, "largest difference {worst}");
        assert!(a.weights.iter().any(|w| w.abs() > 0.1), "the weights moved");
        assert_eq!(a.predict(&x), b.predict(&x));
    }

    #[test]
    fn separable_is_perfect_and_shuffled_is_chance() {
        let (x, y) = clusters(400, 8, 4, 3);
        let (fx, tx) = x.split_at(200 * 8);
        let (fy, ty) = y.split_at(200);
        let fit = Labelled {
            features: fx,
            labels: fy,
            dim: 8,
        };
        let test = Labelled {
            features: tx,
            labels: ty,
            dim: 8,
        };
        assert_eq!(probe_accuracy(&fit, &test, 4), 1.0);
        // Labels independent of the features (fit and test alike): nothing to learn.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let shuffled: Vec<u32> = fy.iter().map(|_| rng.random_range(0..4)).collect();
        let shuffled_test: Vec<u32> = ty.iter().map(|_| rng.random_range(0..4)).collect();
        let fit = Labelled {
            features: fx,
            labels: &shuffled,
            dim: 8,
        };
        let test = Labelled {
            features: tx,
            labels: &shuffled_test,
            dim: 8,
        };
        let acc = probe_accuracy(&fit, &test, 4);
        assert!((acc - 0.25).abs() < 0.12, "chance is 0.25, got {acc}");
    }

    #[test]
    fn separates_classes_only_a_linear_map_can() {
        // Class = sign of x0 − x1 in a 2-D plane, with a large constant offset in x2: the
        // probe must learn the direction, not the offset. Labels 0/1.
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..300 {
            let a: f32 = rng.random_range(-1.0..1.0);
            let b: f32 = rng.random_range(-1.0..1.0);
            if (a - b).abs() < 0.1 {
                continue;
            }
            x.extend([a, b, 100.0]);
            y.push(u32::from(a > b));
        }
        let n = y.len() / 2;
        let fit = Labelled {
            features: &x[..n * 3],
            labels: &y[..n],
            dim: 3,
        };
        let test = Labelled {
            features: &x[n * 3..],
            labels: &y[n..],
            dim: 3,
        };
        assert!(probe_accuracy(&fit, &test, 2) > 0.95);
    }
}
