//! Which evaluation images the probe and kNN fit on and which they are scored on.
//!
//! The study fits its probe on one half of the labelled test split and scores it on the other;
//! one half scores ~500 images, a sampling error of ≈ 2 points per run. Here every evaluation
//! image is scored once, by k-fold cross-validation: the images are dealt into `k` folds, each
//! fold scored by a probe (and a kNN memory) fitted on the other `k − 1`. The folds are
//! class-stratified — "first half / second half" of a split stored class by class fits on some
//! classes and scores on others (0 % accuracy) — and dealt by a seeded hash of each image's
//! *pixels*, so the same images land in the same fold whatever order the split is stored in.
//! The probe and kNN share the folds, and every run of a grid (the untrained baseline too)
//! gets the same ones.

use crate::config::RunConfig;
use crate::data::split::{pixel_key, stratified_folds, stratified_sample, Selection};
use crate::data::{labels_of, Dataset};

/// The images of one evaluation and their cross-validation folds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalSplit {
    /// Every image evaluated, in key order (independent of storage order).
    pub images: Vec<usize>,
    /// Fold of each entry of `images` (`0..folds`); empty for an unlabelled split, which has
    /// nothing to score.
    pub fold: Vec<usize>,
    /// Number of folds (`log.eval_folds`).
    pub folds: usize,
    /// `dataset.split_seed` the folds were dealt with.
    pub seed: u64,
}

impl EvalSplit {
    /// The folds of `ds` for `split_seed`; with `images > 0`, of a class-stratified sample of
    /// that many images (`log.eval_images`).
    pub fn new(ds: &dyn Dataset, images: usize, folds: usize, split_seed: u64) -> Self {
        let key_seed = Selection::EvalFolds.seed(split_seed);
        let mut pixels = vec![0f32; ds.channels() * ds.height() * ds.width()];
        let keys: Vec<u64> = (0..ds.len())
            .map(|i| {
                ds.read_image(i, &mut pixels);
                pixel_key(&pixels, key_seed)
            })
            .collect();
        let all_labels = labels_of(ds);
        let n = if images == 0 { ds.len() } else { images };
        let chosen = stratified_sample(&all_labels, &keys, n);
        let folds = folds.max(2);
        if all_labels.iter().any(Option::is_none) {
            return Self {
                images: chosen,
                fold: Vec::new(),
                folds,
                seed: split_seed,
            };
        }
        let labels: Vec<Option<u32>> = chosen.iter().map(|&i| all_labels[i]).collect();
        let sub_keys: Vec<u64> = chosen.iter().map(|&i| keys[i]).collect();
        let fold = stratified_folds(&labels, &sub_keys, folds);
        Self {
            images: chosen,
            fold,
            folds,
            seed: split_seed,
        }
    }

    /// The split a run's evaluations use: `log.eval_images` of the evaluation split (0: all)
    /// in `log.eval_folds` folds, dealt with `dataset.split_seed`.
    pub fn for_run(cfg: &RunConfig, dataset: &dyn Dataset) -> Self {
        Self::new(
            dataset,
            cfg.log.eval_images,
            cfg.log.eval_folds,
            cfg.dataset.split_seed,
        )
    }

    /// Whether the probe and kNN can be scored (a labelled split).
    pub fn scored(&self) -> bool {
        !self.fold.is_empty()
    }

    /// Positions (in `images`) of fold `f`'s images and of the others.
    pub fn score_and_fit(&self, f: usize) -> (Vec<usize>, Vec<usize>) {
        (0..self.fold.len()).partition(|&j| self.fold[j] == f)
    }

    /// The most images any fold's probe is fitted on.
    pub fn fit_size(&self) -> usize {
        (0..self.folds)
            .map(|f| self.score_and_fit(f).1.len())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::{InMemoryDataset, Subset};

    /// 4 classes × 10 one-pixel images stored class by class, every image distinct.
    fn sorted_set() -> InMemoryDataset {
        let pixels: Vec<u8> = (0..40).map(|i| i as u8 * 6).collect();
        let labels: Vec<u32> = (0..40).map(|i| i / 10).collect();
        InMemoryDataset::new(1, 1, 1, pixels, Some(labels), Some(4), vec![]).expect("valid")
    }

    #[test]
    fn every_fold_holds_a_share_of_every_class() {
        let ds = sorted_set();
        let s = EvalSplit::new(&ds, 0, 5, 0);
        assert_eq!(s.images.len(), 40);
        for f in 0..5 {
            let (score, fit) = s.score_and_fit(f);
            assert_eq!((score.len(), fit.len()), (8, 32), "fold {f}");
            for k in 0..4 {
                let count = score
                    .iter()
                    .filter(|&&j| ds.label(s.images[j]) == Some(k))
                    .count();
                assert_eq!(count, 2, "fold {f}, class {k}");
            }
        }
        assert_eq!(s.fit_size(), 32);
        // A sample of 20 images keeps every class, five of each.
        let s = EvalSplit::new(&ds, 20, 5, 0);
        assert_eq!(s.images.len(), 20);
        for k in 0..4 {
            let n = s.images.iter().filter(|&&i| ds.label(i) == Some(k)).count();
            assert_eq!(n, 5);
        }
    }

    #[test]
    fn the_same_images_land_in_the_same_fold_whatever_the_storage_order() {
        let ds: Arc<dyn Dataset> = Arc::new(sorted_set());
        let s = EvalSplit::new(ds.as_ref(), 0, 5, 5);
        // Reverse, then interleave: image j of the permuted set is image perm[j].
        let perm: Vec<usize> = (0..40).map(|j| (j * 7) % 40).rev().collect();
        let permuted = Subset::new(ds.clone(), perm.clone());
        let p = EvalSplit::new(&permuted, 0, 5, 5);
        let back: Vec<usize> = p.images.iter().map(|&j| perm[j]).collect();
        assert_eq!(back, s.images);
        assert_eq!(p.fold, s.fold);
        assert_ne!(
            EvalSplit::new(ds.as_ref(), 0, 5, 6),
            s,
            "another seed, other folds"
        );
    }
}
