//! The collapse metrics of an embedding set of any size, accumulated chunk by chunk in f64:
//! what `collapse-lab diagnose` computes for embeddings dumped by other frameworks. Nothing
//! of size N × N or N × d is held: the sums are Σz (d), ZᵀZ (d × d), and per-dimension sums of
//! the l2-normalised rows. The finished metrics equal the batch functions of this module's
//! siblings (tested against them): RankMe of the uncentred matrix (singular values as
//! √eig(ZᵀZ)), the covariance spectrum (eig of (ZᵀZ − n·μμᵀ)/(n − 1)), α-ReQ over it, the
//! std of l2-normalised rows, the mean cosine between distinct rows, per-dimension variance.
//! Rows holding NaN or ∞ are counted and left out, never used.

use faer::Mat;

use super::rank::effective_rank_from_singular_values;
use super::spectrum::alpha_req;

/// Norm floor of the l2 normalization (as `F.normalize` and [`super::l2_normalize`]).
const NORM_FLOOR: f64 = 1e-12;

/// Sums over the rows of one embedding set.
#[derive(Debug, Clone)]
pub struct SetMoments {
    d: usize,
    n: u64,
    nonfinite: u64,
    sum: Vec<f64>,
    gram: Mat<f64>,
    sum_hat: Vec<f64>,
    sumsq_hat: Vec<f64>,
}

/// The finished metrics of one embedding set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetMetrics {
    /// Finite rows used, and rows left out for NaN or ∞.
    pub rows: u64,
    pub nonfinite_rows: u64,
    pub dim: usize,
    /// RankMe of the uncentred rows (ε of [`super::rank`]); at most `rank_cap`.
    pub effective_rank: f64,
    /// min(rows, dim): the largest rank the data can show. Below `dim`, a low rank may be the
    /// sample's, not the embedding's.
    pub rank_cap: usize,
    /// Eigenvalues of the covariance (n − 1 denominator), descending.
    pub spectrum: Vec<f64>,
    pub alpha_req: f64,
    /// Mean over dimensions of the std (unbiased) of the l2-normalised rows: 0 collapsed,
    /// ≈ 1/√d isotropic.
    pub z_std: f64,
    /// Mean cosine between distinct rows.
    pub neg_cos: f64,
    /// Per-dimension variance (unbiased): min, median, max.
    pub var_min: f64,
    pub var_median: f64,
    pub var_max: f64,
}

fn is_finite_row(row: &[f32]) -> bool {
    row.iter().all(|v| v.is_finite())
}

fn unit(row: &[f32]) -> Vec<f64> {
    let norm = row
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
        .max(NORM_FLOOR);
    row.iter().map(|&v| f64::from(v) / norm).collect()
}

impl SetMoments {
    pub fn new(d: usize) -> Self {
        Self {
            d,
            n: 0,
            nonfinite: 0,
            sum: vec![0.0; d],
            gram: Mat::zeros(d, d),
            sum_hat: vec![0.0; d],
            sumsq_hat: vec![0.0; d],
        }
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// Adds the rows of `chunk` (row-major, `d` columns); rows with NaN or ∞ are counted only.
    pub fn add(&mut self, chunk: &[f32]) {
        let d = self.d;
        let finite: Vec<&[f32]> = chunk
            .chunks_exact(d)
            .filter(|r| {
                let ok = is_finite_row(r);
                if !ok {
                    self.nonfinite += 1;
                }
                ok
            })
            .collect();
        if finite.is_empty() {
            return;
        }
        let m = Mat::<f64>::from_fn(finite.len(), d, |i, j| f64::from(finite[i][j]));
        self.gram += m.transpose() * &m;
        for row in &finite {
            for (s, &v) in self.sum.iter_mut().zip(row.iter()) {
                *s += f64::from(v);
            }
            for (j, u) in unit(row).into_iter().enumerate() {
                self.sum_hat[j] += u;
                self.sumsq_hat[j] += u * u;
            }
        }
        self.n += finite.len() as u64;
    }

    /// The metrics, or why there are none (fewer than 2 finite rows).
    pub fn finish(&self) -> Result<SetMetrics, String> {
        let (n, d) = (self.n, self.d);
        if n < 2 {
            return Err(format!(
                "{n} finite row(s) ({} with NaN or ∞): at least 2 are needed",
                self.nonfinite
            ));
        }
        let nf = n as f64;
        let sv = |m: &Mat<f64>| -> Result<Vec<f64>, String> {
            m.singular_values()
                .map_err(|e| format!("eigenvalues did not converge: {e:?}"))
        };
        // ZᵀZ is symmetric positive semi-definite: its singular values are its eigenvalues,
        // the squared singular values of Z.
        let sigma: Vec<f64> = sv(&self.gram)?
            .into_iter()
            .map(|l| l.max(0.0).sqrt())
            .collect();
        let cov = Mat::<f64>::from_fn(d, d, |i, j| {
            (self.gram[(i, j)] - self.sum[i] * self.sum[j] / nf) / (nf - 1.0)
        });
        let spectrum: Vec<f64> = sv(&cov)?;
        let mut var: Vec<f64> = (0..d).map(|j| cov[(j, j)].max(0.0)).collect();
        var.sort_by(f64::total_cmp);
        let median = if d % 2 == 1 {
            var[d / 2]
        } else {
            (var[d / 2 - 1] + var[d / 2]) / 2.0
        };
        let z_std = (0..d)
            .map(|j| {
                let v = (self.sumsq_hat[j] - self.sum_hat[j] * self.sum_hat[j] / nf) / (nf - 1.0);
                v.max(0.0).sqrt()
            })
            .sum::<f64>()
            / d as f64;
        // Σ_{i≠j} ûᵢ·ûⱼ = ‖Σû‖² − Σ‖ûᵢ‖²; a row of zeros has ‖û‖ = 0, not 1.
        let self_dots: f64 = (0..d).map(|j| self.sumsq_hat[j]).sum();
        let total: f64 = self.sum_hat.iter().map(|s| s * s).sum();
        let neg_cos = (total - self_dots) / (nf * nf - nf);
        Ok(SetMetrics {
            rows: n,
            nonfinite_rows: self.nonfinite,
            dim: d,
            effective_rank: effective_rank_from_singular_values(&sigma),
            rank_cap: (n as usize).min(d),
            alpha_req: alpha_req(&spectrum),
            spectrum,
            z_std,
            neg_cos,
            var_min: var[0],
            var_median: median,
            var_max: var[d - 1],
        })
    }
}

/// Sums over paired rows (two views of the same images, row i with row i): each view's
/// [`SetMoments`] and the cross terms of pos/neg cosine and alignment.
#[derive(Debug, Clone)]
pub struct PairMoments {
    pub first: SetMoments,
    pub second: SetMoments,
    pairs: u64,
    dropped: u64,
    pos_sum: f64,
    align_sum: f64,
    sum_hat_1: Vec<f64>,
    sum_hat_2: Vec<f64>,
}

/// The finished metrics of a pair of views.
#[derive(Debug, Clone, PartialEq)]
pub struct PairMetrics {
    pub pairs: u64,
    /// Pairs left out because either row held NaN or ∞.
    pub nonfinite_pairs: u64,
    /// Mean cosine of the two views of the same image, and of different images (both orders).
    pub pos_cos: f64,
    pub neg_cos: f64,
    /// E‖û − û′‖² over pairs (Wang & Isola).
    pub alignment: f64,
}

impl PairMoments {
    pub fn new(d: usize) -> Self {
        Self {
            first: SetMoments::new(d),
            second: SetMoments::new(d),
            pairs: 0,
            dropped: 0,
            pos_sum: 0.0,
            align_sum: 0.0,
            sum_hat_1: vec![0.0; d],
            sum_hat_2: vec![0.0; d],
        }
    }

    /// Adds paired chunks (the same number of rows, row-major, `d` columns).
    pub fn add(&mut self, a: &[f32], b: &[f32]) {
        let d = self.first.dim();
        self.first.add(a);
        self.second.add(b);
        for (ra, rb) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
            if !(is_finite_row(ra) && is_finite_row(rb)) {
                self.dropped += 1;
                continue;
            }
            let (ua, ub) = (unit(ra), unit(rb));
            let mut dot = 0.0;
            let mut dist = 0.0;
            for j in 0..d {
                dot += ua[j] * ub[j];
                dist += (ua[j] - ub[j]).powi(2);
                self.sum_hat_1[j] += ua[j];
                self.sum_hat_2[j] += ub[j];
            }
            self.pos_sum += dot;
            self.align_sum += dist;
            self.pairs += 1;
        }
    }

    pub fn finish(&self) -> Result<PairMetrics, String> {
        let n = self.pairs as f64;
        if self.pairs < 2 {
            return Err(format!(
                "{} finite pair(s): at least 2 are needed",
                self.pairs
            ));
        }
        let all: f64 = self
            .sum_hat_1
            .iter()
            .zip(&self.sum_hat_2)
            .map(|(a, b)| a * b)
            .sum();
        Ok(PairMetrics {
            pairs: self.pairs,
            nonfinite_pairs: self.dropped,
            pos_cos: self.pos_sum / n,
            neg_cos: (all - self.pos_sum) / (n * n - n),
            alignment: self.align_sum / n,
        })
    }
}

/// Linear CKA (Kornblith et al. 2019) between two embeddings of the same images (row i of
/// each: image i), from column-centred cross products accumulated chunk by chunk:
/// CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F). 1 for representations equal up to rotation and
/// isotropic scale; near 0 for unrelated ones.
#[derive(Debug, Clone)]
pub struct CkaMoments {
    n: u64,
    skipped: u64,
    sum_x: Vec<f64>,
    sum_y: Vec<f64>,
    xx: Mat<f64>,
    yy: Mat<f64>,
    xy: Mat<f64>,
}

impl CkaMoments {
    pub fn new(dx: usize, dy: usize) -> Self {
        Self {
            n: 0,
            skipped: 0,
            sum_x: vec![0.0; dx],
            sum_y: vec![0.0; dy],
            xx: Mat::zeros(dx, dx),
            yy: Mat::zeros(dy, dy),
            xy: Mat::zeros(dx, dy),
        }
    }

    /// Adds paired chunks (the same rows of both, row-major); a pair with NaN or ∞ on either
    /// side is counted and left out.
    pub fn add(&mut self, x: &[f32], y: &[f32]) {
        let (dx, dy) = (self.sum_x.len(), self.sum_y.len());
        let rows: Vec<(&[f32], &[f32])> = x
            .chunks_exact(dx)
            .zip(y.chunks_exact(dy))
            .filter(|(a, b)| {
                let ok = is_finite_row(a) && is_finite_row(b);
                if !ok {
                    self.skipped += 1;
                }
                ok
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let mx = Mat::<f64>::from_fn(rows.len(), dx, |i, j| f64::from(rows[i].0[j]));
        let my = Mat::<f64>::from_fn(rows.len(), dy, |i, j| f64::from(rows[i].1[j]));
        self.xx += mx.transpose() * &mx;
        self.yy += my.transpose() * &my;
        self.xy += mx.transpose() * &my;
        for (a, b) in &rows {
            for (s, &v) in self.sum_x.iter_mut().zip(a.iter()) {
                *s += f64::from(v);
            }
            for (s, &v) in self.sum_y.iter_mut().zip(b.iter()) {
                *s += f64::from(v);
            }
        }
        self.n += rows.len() as u64;
    }

    /// (CKA, rows used, rows left out).
    pub fn finish(&self) -> Result<(f64, u64, u64), String> {
        if self.n < 2 {
            return Err(format!(
                "{} finite paired row(s): at least 2 are needed",
                self.n
            ));
        }
        let n = self.n as f64;
        // Centred products: AᵀB − Σa Σbᵀ / n; the squared Frobenius norm of each.
        let frob2 = |m: &Mat<f64>, sa: &[f64], sb: &[f64]| -> f64 {
            let mut t = 0.0;
            for i in 0..sa.len() {
                for j in 0..sb.len() {
                    let c = m[(i, j)] - sa[i] * sb[j] / n;
                    t += c * c;
                }
            }
            t
        };
        let xy = frob2(&self.xy, &self.sum_x, &self.sum_y);
        let xx = frob2(&self.xx, &self.sum_x, &self.sum_x).sqrt();
        let yy = frob2(&self.yy, &self.sum_y, &self.sum_y).sqrt();
        if xx == 0.0 || yy == 0.0 {
            return Err("one side has no variance (every row the same): CKA is undefined".into());
        }
        Ok((xy / (xx * yy), self.n, self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{
        alignment, covariance_spectrum, dimension_variance, effective_rank, pos_neg_cos, z_std,
    };
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn random(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Columns with different scales and a shared offset, so centring matters.
        (0..n * d)
            .map(|k| {
                let x: f64 = StandardNormal.sample(&mut rng);
                (x * (1.0 + (k % d) as f64 * 0.3) + 0.5) as f32
            })
            .collect()
    }

    fn tensor(v: &[f32], n: usize, d: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (n, d), &Device::Cpu).expect("tensor")
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn chunked_sums_equal_the_batch_metrics_in_any_chunking() -> candle_core::Result<()> {
        let (n, d) = (300, 12);
        let v = random(n, d, 7);
        let t = tensor(&v, n, d);
        let want_rank = effective_rank(&t)?;
        let want_spec = covariance_spectrum(&t)?;
        let want_std = z_std(&t)?;
        let (vmin, vmed, vmax) = dimension_variance(&t)?;
        for chunk_rows in [1usize, 7, 64, 300] {
            let mut m = SetMoments::new(d);
            for c in v.chunks(chunk_rows * d) {
                m.add(c);
            }
            let got = m.finish().expect("metrics");
            assert!(
                close(got.effective_rank, want_rank, 1e-9),
                "{got:?} vs {want_rank}"
            );
            for (a, b) in got.spectrum.iter().zip(&want_spec) {
                assert!(close(*a, *b, 1e-9), "{a} vs {b}");
            }
            assert!(
                close(got.z_std, want_std, 1e-5),
                "{} vs {want_std}",
                got.z_std
            );
            assert!(close(got.var_min, vmin, 1e-9) && close(got.var_median, vmed, 1e-9));
            assert!(close(got.var_max, vmax, 1e-9));
            assert_eq!((got.rows, got.rank_cap), (300, 12));
        }
        Ok(())
    }

    #[test]
    fn pairs_equal_the_batch_cosines_and_alignment() -> candle_core::Result<()> {
        let (n, d) = (200, 8);
        let (a, b) = (random(n, d, 1), random(n, d, 2));
        let (ta, tb) = (tensor(&a, n, d), tensor(&b, n, d));
        let (pos, neg) = pos_neg_cos(&ta, &tb)?;
        let align = alignment(&ta, &tb)?;
        let mut m = PairMoments::new(d);
        for (ca, cb) in a.chunks(33 * d).zip(b.chunks(33 * d)) {
            m.add(ca, cb);
        }
        let got = m.finish().expect("metrics");
        assert!(
            close(got.pos_cos, pos, 1e-5) && close(got.neg_cos, neg, 1e-5),
            "{got:?}"
        );
        assert!(close(got.alignment, align, 1e-9));
        // A set's own neg cosine (distinct rows of one view) against the pair form of a view
        // with itself (its off-diagonal).
        let (_, self_neg) = pos_neg_cos(&ta, &ta)?;
        let own = m.first.finish().expect("metrics").neg_cos;
        assert!(close(own, self_neg, 1e-5), "{own} vs {self_neg}");
        Ok(())
    }

    /// CKA by its definition on whole matrices (centred, Frobenius norms), independently.
    fn cka_direct(x: &[f32], y: &[f32], n: usize, dx: usize, dy: usize) -> f64 {
        let centre = |v: &[f32], d: usize| -> Mat<f64> {
            let m = Mat::<f64>::from_fn(n, d, |i, j| f64::from(v[i * d + j]));
            let mean: Vec<f64> = (0..d)
                .map(|j| (0..n).map(|i| m[(i, j)]).sum::<f64>() / n as f64)
                .collect();
            Mat::<f64>::from_fn(n, d, |i, j| m[(i, j)] - mean[j])
        };
        let (cx, cy) = (centre(x, dx), centre(y, dy));
        let f = |m: Mat<f64>| m.norm_l2();
        let yx = cy.transpose() * &cx;
        let xx = cx.transpose() * &cx;
        let yy = cy.transpose() * &cy;
        f(yx).powi(2) / (f(xx) * f(yy))
    }

    #[test]
    fn cka_equals_its_definition_and_its_invariances_hold() {
        let (n, dx, dy) = (150, 6, 4);
        let x = random(n, dx, 3);
        let y = random(n, dy, 4);
        let mut m = CkaMoments::new(dx, dy);
        for (cx, cy) in x.chunks(40 * dx).zip(y.chunks(40 * dy)) {
            m.add(cx, cy);
        }
        let (got, rows, _) = m.finish().expect("cka");
        assert_eq!(rows, 150);
        assert!(close(got, cka_direct(&x, &y, n, dx, dy), 1e-9), "{got}");
        // Invariant to an orthogonal transform (a permutation with signs) and isotropic
        // scale, and to a shift: CKA(X, X') = 1.
        let moved: Vec<f32> = x
            .chunks_exact(dx)
            .flat_map(|r| {
                let mut o: Vec<f32> = (0..dx).map(|j| -3.0 * r[(j + 2) % dx] + 7.0).collect();
                o[1] = -o[1] + 14.0;
                o
            })
            .collect();
        let mut m = CkaMoments::new(dx, dx);
        m.add(&x, &moved);
        assert!((m.finish().expect("cka").0 - 1.0).abs() < 1e-9);
        // Unrelated random representations: small (≈ d/n scale).
        assert!(got < 0.2, "{got}");
        // A constant side: undefined, said so.
        let mut m = CkaMoments::new(dx, dy);
        m.add(&x, &vec![1.0; n * dy]);
        assert!(m.finish().expect_err("constant").contains("no variance"));
    }

    #[test]
    fn closed_forms_identical_rows_orthonormal_rows_and_nonfinite_rows() {
        // Identical rows: every cosine 1, no spread, rank 1.
        let d = 6;
        let row: Vec<f32> = (0..d).map(|j| j as f32 - 2.5).collect();
        let same: Vec<f32> = row.iter().copied().cycle().take(10 * d).collect();
        let mut m = SetMoments::new(d);
        m.add(&same);
        let got = m.finish().expect("metrics");
        assert!(
            (got.neg_cos - 1.0).abs() < 1e-12 && got.z_std < 1e-6,
            "{got:?}"
        );
        assert!(
            (got.effective_rank - 1.0).abs() < 1e-4,
            "{}",
            got.effective_rank
        );
        // An orthonormal set (the identity): rank d, distinct rows orthogonal.
        let eye: Vec<f32> = (0..d * d)
            .map(|k| if k / d == k % d { 1.0 } else { 0.0 })
            .collect();
        let mut m = SetMoments::new(d);
        m.add(&eye);
        let got = m.finish().expect("metrics");
        assert!((got.effective_rank - d as f64).abs() < 1e-4 && got.neg_cos.abs() < 1e-12);
        // Rows with NaN or ∞ are counted and left out; what remains gives the same metrics.
        let mut bad = eye.clone();
        bad.extend([f32::NAN; 6]);
        bad.extend([1.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0]);
        let mut m = SetMoments::new(d);
        m.add(&bad);
        let with_bad = m.finish().expect("metrics");
        assert_eq!((with_bad.rows, with_bad.nonfinite_rows), (6, 2));
        assert_eq!(with_bad.effective_rank, got.effective_rank);
        // Fewer than two finite rows: no metrics, and the reason.
        let mut m = SetMoments::new(d);
        m.add(&[f32::NAN; 6]);
        assert!(m.finish().expect_err("none").contains("NaN"));
        // Fewer rows than dimensions: the cap says so.
        let mut m = SetMoments::new(d);
        m.add(&eye[..3 * d]);
        assert_eq!(m.finish().expect("metrics").rank_cap, 3);
    }
}
