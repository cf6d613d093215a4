//! Independent cross-checks: every metric against a second, naïve implementation (plain
//! loops, f64) on random inputs.

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::geometry::{alignment, dimension_variance};
use super::rank::effective_rank;
use super::spectrum::covariance_spectrum;
use super::spread::z_std;

fn random(rows: usize, cols: usize, seed: u64) -> (Vec<Vec<f64>>, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m: Vec<Vec<f64>> = (0..rows)
        .map(|_| (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let flat: Vec<f32> = m.iter().flatten().map(|&v| v as f32).collect();
    let t = Tensor::from_vec(flat, (rows, cols), &Device::Cpu).expect("tensor");
    // The naïve side sees the same f32-rounded values.
    let m = m
        .iter()
        .map(|r| r.iter().map(|&v| v as f32 as f64).collect())
        .collect();
    (m, t)
}

fn normalized(r: &[f64]) -> Vec<f64> {
    let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
    r.iter().map(|v| v / n).collect()
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations.
fn jacobi_eigenvalues(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (row_p, row_q) = (a[p].clone(), a[q].clone());
                for (k, (apk, aqk)) in row_p.into_iter().zip(row_q).enumerate() {
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| a[i][i]).collect();
    ev.sort_by(|x, y| y.total_cmp(x));
    ev
}

#[test]
fn z_std_matches_loops() -> Result<()> {
    let (m, t) = random(37, 6, 1);
    let rows: Vec<Vec<f64>> = m.iter().map(|r| normalized(r)).collect();
    let n = rows.len() as f64;
    let mut total = 0.0;
    for j in 0..6 {
        let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
        let var = rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / (n - 1.0);
        total += var.sqrt();
    }
    assert!((z_std(&t)? - total / 6.0).abs() < 1e-6);
    Ok(())
}

#[test]
fn effective_rank_and_spectrum_match_jacobi() -> Result<()> {
    let (m, t) = random(12, 5, 2);
    // Singular values² = eigenvalues of MᵀM.
    let gram: Vec<Vec<f64>> = (0..5)
        .map(|i| {
            (0..5)
                .map(|j| m.iter().map(|r| r[i] * r[j]).sum())
                .collect()
        })
        .collect();
    let sigma: Vec<f64> = jacobi_eigenvalues(gram)
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    let total: f64 = sigma.iter().sum();
    let entropy: f64 = sigma
        .iter()
        .map(|s| s / total + 1e-7)
        .map(|p| -p * p.ln())
        .sum();
    assert!((effective_rank(&t)? - entropy.exp()).abs() < 1e-6);
    // Covariance eigenvalues of centred rows.
    let n = m.len() as f64;
    let means: Vec<f64> = (0..5)
        .map(|j| m.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let cov: Vec<Vec<f64>> = (0..5)
        .map(|i| {
            (0..5)
                .map(|j| {
                    m.iter()
                        .map(|r| (r[i] - means[i]) * (r[j] - means[j]))
                        .sum::<f64>()
                        / (n - 1.0)
                })
                .collect()
        })
        .collect();
    let want = jacobi_eigenvalues(cov);
    let got = covariance_spectrum(&t)?;
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    Ok(())
}

#[test]
fn alignment_and_variance_match_loops() -> Result<()> {
    let (a, ta) = random(20, 4, 3);
    let (b, tb) = random(20, 4, 4);
    let naive: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            let (x, y) = (normalized(x), normalized(y));
            x.iter().zip(&y).map(|(u, v)| (u - v).powi(2)).sum::<f64>()
        })
        .sum::<f64>()
        / 20.0;
    assert!((alignment(&ta, &tb)? - naive).abs() < 1e-9);
    let mut vars: Vec<f64> = (0..4)
        .map(|j| {
            let mean = a.iter().map(|r| r[j]).sum::<f64>() / 20.0;
            a.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / 19.0
        })
        .collect();
    vars.sort_by(f64::total_cmp);
    let (lo, med, hi) = dimension_variance(&ta)?;
    assert!((lo - vars[0]).abs() < 1e-9 && (hi - vars[3]).abs() < 1e-9);
    assert!((med - (vars[1] + vars[2]) / 2.0).abs() < 1e-9);
    Ok(())
}
