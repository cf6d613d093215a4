//! Which evaluation images the probe and kNN fit on and which they are scored on.
//!
//! The study fits its probe on one half of the labelled test split and scores it on the other.
//! "First half / second half" of a split stored class by class fits on some classes and scores
//! on others (0 % accuracy), so the halves here are class-stratified — half of every class on
//! each side — and chosen by a seeded hash of each image's *pixels*: the same images land on
//! the same side whatever order the split is stored in. The probe and kNN share the halves.

use crate::config::RunConfig;
use crate::data::split::{pixel_key, stratified_sample, stratified_split, Selection};
use crate::data::{labels_of, Dataset};

/// The images of one evaluation: `fit` (probe training set, kNN memory) and `score` (probe
/// test set, kNN queries), each in key order. An unlabelled split has every image in `fit`
/// and nothing to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalSplit {
    pub fit: Vec<usize>,
    pub score: Vec<usize>,
    /// `dataset.split_seed` the split was drawn with.
    pub seed: u64,
}

impl EvalSplit {
    /// The split of `ds` for `split_seed`; with `images > 0`, of a class-stratified sample of
    /// that many images (`log.eval_images`).
    pub fn new(ds: &dyn Dataset, images: usize, split_seed: u64) -> Self {
        let key_seed = Selection::EvalHalves.seed(split_seed);
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
        if all_labels.iter().any(Option::is_none) {
            return Self {
                fit: chosen,
                score: Vec::new(),
                seed: split_seed,
            };
        }
        let labels: Vec<Option<u32>> = chosen.iter().map(|&i| all_labels[i]).collect();
        let sub_keys: Vec<u64> = chosen.iter().map(|&i| keys[i]).collect();
        let (fit, score) = stratified_split(&labels, &sub_keys, 0.5);
        Self {
            fit: fit.into_iter().map(|j| chosen[j]).collect(),
            score: score.into_iter().map(|j| chosen[j]).collect(),
            seed: split_seed,
        }
    }

    /// The split a run's evaluations use: `log.eval_images` of the evaluation split (0: all),
    /// drawn with `dataset.split_seed`.
    pub fn for_run(cfg: &RunConfig, dataset: &dyn Dataset) -> Self {
        Self::new(dataset, cfg.log.eval_images, cfg.dataset.split_seed)
    }

    /// Every image evaluated: `fit`, then `score`.
    pub fn images(&self) -> Vec<usize> {
        self.fit.iter().chain(&self.score).copied().collect()
    }

    /// Whether the probe and kNN can be scored (a labelled split).
    pub fn scored(&self) -> bool {
        !self.score.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::{InMemoryDataset, Subset};

    /// 4 classes × 6 one-pixel images stored class by class, every image distinct.
    fn sorted_set() -> InMemoryDataset {
        let pixels: Vec<u8> = (0..24).map(|i| i as u8 * 10).collect();
        let labels: Vec<u32> = (0..24).map(|i| i / 6).collect();
        InMemoryDataset::new(1, 1, 1, pixels, Some(labels), Some(4), vec![]).expect("valid")
    }

    #[test]
    fn halves_hold_half_of_every_class() {
        let ds = sorted_set();
        let s = EvalSplit::new(&ds, 0, 0);
        assert_eq!((s.fit.len(), s.score.len()), (12, 12));
        for k in 0..4 {
            let count = |v: &[usize]| v.iter().filter(|&&i| ds.label(i) == Some(k)).count();
            assert_eq!((count(&s.fit), count(&s.score)), (3, 3), "class {k}");
        }
        // A sample of 8 images keeps every class: one a side.
        let s = EvalSplit::new(&ds, 8, 0);
        assert_eq!((s.fit.len(), s.score.len()), (4, 4));
        let mut fit_labels: Vec<_> = s.fit.iter().map(|&i| ds.label(i)).collect();
        fit_labels.sort();
        assert_eq!(fit_labels, [Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn the_same_images_land_on_the_same_side_whatever_the_storage_order() {
        let ds: Arc<dyn Dataset> = Arc::new(sorted_set());
        let s = EvalSplit::new(ds.as_ref(), 0, 5);
        // Reverse, then interleave: image j of the permuted set is image perm[j].
        let perm: Vec<usize> = (0..24).map(|j| (j * 7) % 24).rev().collect();
        let permuted = Subset::new(ds.clone(), perm.clone());
        let p = EvalSplit::new(&permuted, 0, 5);
        let back = |v: &[usize]| v.iter().map(|&j| perm[j]).collect::<Vec<_>>();
        assert_eq!(back(&p.fit), s.fit);
        assert_eq!(back(&p.score), s.score);
        assert_ne!(
            EvalSplit::new(ds.as_ref(), 0, 6),
            s,
            "another seed, other halves"
        );
    }
}
