//! kNN and linear-probe accuracy by k-fold cross-validation over the evaluation images: each
//! fold is scored by a probe fitted on (and a kNN memory holding) the other folds, so every
//! image is scored once. The accuracy is pooled over all images; its standard error is the
//! folds' accuracies' standard deviation / √k (the usual k-fold estimate: it ignores that
//! the fitted sets overlap, so it is a lower bound on the spread a new split would show).

use rayon::prelude::*;

use super::split::EvalSplit;
use crate::metrics::knn::{knn_predict, Labelled, KNN_K, KNN_TEMPERATURE};
use crate::metrics::probe::{LinearProbe, PROBE_ITERATIONS};

/// An accuracy over every scored image and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossValidated {
    pub accuracy: f64,
    pub standard_error: f64,
}

/// Cross-validated kNN and probe accuracy of `features` (rows in `split.images` order,
/// `dim` columns) with their `labels`, on `split`'s folds.
pub fn knn_and_probe(
    features: &[f32],
    dim: usize,
    labels: &[u32],
    split: &EvalSplit,
    classes: usize,
) -> (CrossValidated, CrossValidated) {
    let rows = |idx: &[usize]| -> (Vec<f32>, Vec<u32>) {
        let mut f = Vec::with_capacity(idx.len() * dim);
        for &j in idx {
            f.extend_from_slice(&features[j * dim..(j + 1) * dim]);
        }
        (f, idx.iter().map(|&j| labels[j]).collect())
    };
    // Per fold: (images scored, kNN correct, probe correct).
    let per_fold: Vec<(usize, usize, usize)> = (0..split.folds)
        .into_par_iter()
        .map(|f| {
            let (score, fit) = split.score_and_fit(f);
            let (fit_x, fit_y) = rows(&fit);
            let (score_x, score_y) = rows(&score);
            let memory = Labelled {
                features: &fit_x,
                labels: &fit_y,
                dim,
            };
            let correct =
                |preds: Vec<u32>| preds.iter().zip(&score_y).filter(|(p, l)| p == l).count();
            let knn = correct(knn_predict(&memory, &score_x, KNN_K, KNN_TEMPERATURE));
            let probe = LinearProbe::fit(&memory, classes, PROBE_ITERATIONS);
            (score.len(), knn, correct(probe.predict(&score_x)))
        })
        .collect();
    let summarise = |correct: fn(&(usize, usize, usize)) -> usize| {
        let scored: usize = per_fold.iter().map(|f| f.0).sum();
        let accs: Vec<f64> = per_fold
            .iter()
            .filter(|f| f.0 > 0)
            .map(|f| correct(f) as f64 / f.0 as f64)
            .collect();
        let k = accs.len() as f64;
        let mean = accs.iter().sum::<f64>() / k;
        let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (k - 1.0).max(1.0);
        CrossValidated {
            accuracy: per_fold.iter().map(correct).sum::<usize>() as f64 / scored.max(1) as f64,
            standard_error: (var / k).sqrt(),
        }
    };
    (summarise(|f| f.1), summarise(|f| f.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::stratified_folds;
    use crate::metrics::knn::tests::clusters;

    fn split_of(labels: &[u32], keys: &[u64], folds: usize) -> EvalSplit {
        let l: Vec<Option<u32>> = labels.iter().map(|&x| Some(x)).collect();
        EvalSplit {
            images: (0..labels.len()).collect(),
            fold: stratified_folds(&l, keys, folds),
            folds,
            seed: 0,
        }
    }

    #[test]
    fn separable_clusters_score_everything_and_noise_scores_chance() {
        let (x, y) = clusters(200, 8, 4, 3);
        let keys: Vec<u64> = (0..200).map(|i| (i * 7919 % 200) as u64).collect();
        let split = split_of(&y, &keys, 5);
        let (knn, probe) = knn_and_probe(&x, 8, &y, &split, 4);
        assert_eq!((knn.accuracy, probe.accuracy), (1.0, 1.0));
        assert_eq!((knn.standard_error, probe.standard_error), (0.0, 0.0));
        // Labels independent of the features: chance (0.25), with a non-zero spread.
        let noise: Vec<u32> = (0..200u64)
            .map(|i| (crate::data::splitmix64(i) % 4) as u32)
            .collect();
        let split = split_of(&noise, &keys, 5);
        let (knn, probe) = knn_and_probe(&x, 8, &noise, &split, 4);
        for cv in [knn, probe] {
            assert!((cv.accuracy - 0.25).abs() < 0.1, "{cv:?}");
            assert!(cv.standard_error > 0.0, "{cv:?}");
        }
    }
}
