//! Weighted k-nearest-neighbour accuracy on frozen features (as solo-learn and lightly do):
//! cosine similarity, the k most similar memory examples vote with weight exp(sim / T).

/// Features as row-major (n, d) with labels.
pub struct Labelled<'a> {
    pub features: &'a [f32],
    pub labels: &'a [u32],
    pub dim: usize,
}

pub const KNN_K: usize = 20;
pub const KNN_TEMPERATURE: f64 = 0.07;

fn normalized_rows(x: &[f32], dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(dim) {
        let norm = row
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        out.extend(row.iter().map(|&v| v as f64 / norm));
    }
    out
}

/// Predicted class of every query; ties in similarity keep the lower memory index.
pub fn knn_predict(memory: &Labelled, queries: &[f32], k: usize, temperature: f64) -> Vec<u32> {
    let d = memory.dim;
    let num_classes = memory
        .labels
        .iter()
        .copied()
        .max()
        .map_or(1, |m| m as usize + 1);
    let mem = normalized_rows(memory.features, d);
    let qs = normalized_rows(queries, d);
    let n = memory.labels.len();
    let k = k.min(n).max(1);
    let mut preds = Vec::with_capacity(qs.len() / d.max(1));
    let mut sims: Vec<(f64, usize)> = Vec::with_capacity(n);
    for q in qs.chunks(d) {
        sims.clear();
        for (j, m) in mem.chunks(d).enumerate() {
            sims.push((q.iter().zip(m).map(|(a, b)| a * b).sum(), j));
        }
        sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut votes = vec![0.0f64; num_classes];
        for &(s, j) in &sims[..k] {
            votes[memory.labels[j] as usize] += (s / temperature).exp();
        }
        let best = votes
            .iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |acc, (c, &v)| {
                if v > acc.1 {
                    (c, v)
                } else {
                    acc
                }
            })
            .0;
        preds.push(best as u32);
    }
    preds
}

/// Fraction of queries whose weighted-kNN prediction equals their label.
pub fn knn_accuracy(memory: &Labelled, queries: &Labelled) -> f64 {
    let preds = knn_predict(memory, queries.features, KNN_K, KNN_TEMPERATURE);
    accuracy(&preds, queries.labels)
}

pub fn accuracy(preds: &[u32], labels: &[u32]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Well-separated clusters around orthogonal directions, labels = cluster.
    pub(crate) fn clusters(
        n: usize,
        dim: usize,
        classes: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * dim);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            for j in 0..dim {
                let centre = if j == c { 3.0 } else { 0.0 };
                x.push(centre + rng.random_range(-0.5f32..0.5));
            }
            y.push(c as u32);
        }
        (x, y)
    }

    #[test]
    fn separable_is_perfect_and_shuffled_is_chance() {
        let (x, y) = clusters(400, 8, 4, 1);
        let (mx, qx) = x.split_at(200 * 8);
        let (my, qy) = y.split_at(200);
        let mem = Labelled {
            features: mx,
            labels: my,
            dim: 8,
        };
        let q = Labelled {
            features: qx,
            labels: qy,
            dim: 8,
        };
        assert_eq!(knn_accuracy(&mem, &q), 1.0);
        // Labels independent of the features (memory and queries alike): nothing to learn.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let shuffled: Vec<u32> = my.iter().map(|_| rng.random_range(0..4)).collect();
        let shuffled_q: Vec<u32> = qy.iter().map(|_| rng.random_range(0..4)).collect();
        let mem = Labelled {
            features: mx,
            labels: &shuffled,
            dim: 8,
        };
        let q = Labelled {
            features: qx,
            labels: &shuffled_q,
            dim: 8,
        };
        let acc = knn_accuracy(&mem, &q);
        assert!((acc - 0.25).abs() < 0.12, "chance is 0.25, got {acc}");
    }

    #[test]
    fn matches_naive_sort_based_implementation() {
        let (x, y) = clusters(120, 5, 3, 9);
        // Add noise so neighbours are not trivial.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x: Vec<f32> = x
            .iter()
            .map(|v| v + rng.random_range(-2.0f32..2.0))
            .collect();
        let (mx, qx) = x.split_at(80 * 5);
        let (my, _) = y.split_at(80);
        let mem = Labelled {
            features: mx,
            labels: my,
            dim: 5,
        };
        let fast = knn_predict(&mem, qx, 7, 0.1);
        let norm = |r: &[f32]| {
            let n = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|v| *v as f64 / n).collect::<Vec<_>>()
        };
        for (qi, q) in qx.chunks(5).enumerate() {
            let q = norm(q);
            let mut all: Vec<(f64, usize)> = mx
                .chunks(5)
                .enumerate()
                .map(|(j, m)| (norm(m).iter().zip(&q).map(|(a, b)| a * b).sum(), j))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut votes = [0.0f64; 3];
            for &(s, j) in &all[..7] {
                votes[my[j] as usize] += (s / 0.1).exp();
            }
            let best = (0..3)
                .max_by(|&a, &b| votes[a].total_cmp(&votes[b]))
                .unwrap_or(0);
            assert_eq!(fast[qi], best as u32, "query {qi}");
        }
    }
}
