//! Class-stratified, seeded selection of images: the one rule behind `dataset.limit_train` /
//! `limit_eval`, a folder's held-out evaluation images, and the evaluation's cross-validation folds.
//!
//! Real data sets are often stored class by class (image folders always are), so "the first N"
//! or "the first half" of a split can hold whole classes and miss others. Every selection here
//! instead ranks the images of each stratum (a class, or "unlabelled") by a key — a seeded hash
//! of the image's position, file name or pixels — and takes the lowest-ranked ones, a fixed
//! share of every stratum. Selections are returned in key order, so with content keys the
//! result does not depend on the order the images are stored in at all.

use std::collections::BTreeMap;

use super::seeds::{mix_seeds, splitmix64};

/// What a selection is for: each draws its keys from its own stream of `dataset.split_seed`,
/// so changing one (say `limit_eval`) never reshuffles another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// `dataset.limit_train`'s sample of the training split.
    TrainSample = 1,
    /// `dataset.limit_eval`'s sample of the evaluation split.
    EvalSample = 2,
    /// A folder without `train/` and `test/`: the images held out for evaluation.
    HeldOut = 3,
    /// The evaluation's cross-validation folds (and `log.eval_images`' sample).
    EvalFolds = 4,
}

impl Selection {
    /// The seed of this selection's keys.
    pub fn seed(self, split_seed: u64) -> u64 {
        mix_seeds(&[split_seed, self as u64])
    }
}

/// Keys from positions: image `i` gets a seeded hash of `i` (a seeded random order).
pub fn position_keys(n: usize, seed: u64) -> Vec<u64> {
    (0..n).map(|i| mix_seeds(&[seed, i as u64])).collect()
}

/// Key from a name (a file's path relative to its data set's root).
pub fn name_key(name: &str, seed: u64) -> u64 {
    content_key(name.bytes().map(u64::from), seed)
}

/// Key from an image's values: depends on what the image is, not where it is stored.
pub fn pixel_key(values: &[f32], seed: u64) -> u64 {
    content_key(values.iter().map(|v| u64::from(v.to_bits())), seed)
}

fn content_key(words: impl Iterator<Item = u64>, seed: u64) -> u64 {
    let h = words.fold(mix_seeds(&[seed, 0x5EED]), |h, w| {
        splitmix64(h.rotate_left(17) ^ w)
    });
    splitmix64(h)
}

/// The indices of each stratum (label; `None` is the unlabelled stratum), ordered by
/// (key, index) — the index only breaks ties between equal keys (identical images).
fn strata(labels: &[Option<u32>], keys: &[u64]) -> Vec<Vec<usize>> {
    assert_eq!(labels.len(), keys.len(), "one key per label");
    let mut by: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by.entry(*l).or_default().push(i);
    }
    by.into_values()
        .map(|mut v| {
            v.sort_by_key(|&i| (keys[i], i));
            v
        })
        .collect()
}

fn key_order(mut v: Vec<usize>, keys: &[u64]) -> Vec<usize> {
    v.sort_by_key(|&i| (keys[i], i));
    v
}

/// `n` of the images (all when `n ≥` their number), every stratum in proportion to its size
/// (largest-remainder rounding, ties to the larger stratum, then the earlier one); in key
/// order.
pub fn stratified_sample(labels: &[Option<u32>], keys: &[u64], n: usize) -> Vec<usize> {
    let total = labels.len();
    if n >= total {
        return key_order((0..total).collect(), keys);
    }
    let strata = strata(labels, keys);
    let mut quota: Vec<usize> = strata.iter().map(|s| s.len() * n / total).collect();
    let left = n - quota.iter().sum::<usize>();
    // Remainders s·n mod total, compared exactly in integers.
    let mut order: Vec<usize> = (0..strata.len()).collect();
    order.sort_by_key(|&k| {
        let s = strata[k].len();
        (std::cmp::Reverse(s * n % total), std::cmp::Reverse(s), k)
    });
    for &k in order.iter().take(left) {
        quota[k] += 1;
    }
    let taken = strata
        .iter()
        .zip(&quota)
        .flat_map(|(s, &q)| s[..q].iter().copied())
        .collect();
    key_order(taken, keys)
}

/// Splits every stratum in two: `round(size · fraction)` of its lowest-keyed images to the
/// first part, the rest to the second. Both parts in key order.
pub fn stratified_split(
    labels: &[Option<u32>],
    keys: &[u64],
    fraction: f64,
) -> (Vec<usize>, Vec<usize>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for s in strata(labels, keys) {
        let q = ((s.len() as f64 * fraction).round() as usize).min(s.len());
        first.extend_from_slice(&s[..q]);
        second.extend_from_slice(&s[q..]);
    }
    (key_order(first, keys), key_order(second, keys))
}

/// Deals the images into `k` folds, every stratum in key order round-robin, the deal carried
/// on from one stratum to the next (so fold sizes differ by at most one and every class is
/// spread over the folds as evenly as its size allows). Returns each image's fold.
pub fn stratified_folds(labels: &[Option<u32>], keys: &[u64], k: usize) -> Vec<usize> {
    let k = k.max(1);
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for s in strata(labels, keys) {
        for i in s {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

#[cfg(test)]
/// Per-stratum counts of `indices`: (label, count), labels ascending, `None` first.
pub fn class_counts(labels: &[Option<u32>], indices: &[usize]) -> Vec<(Option<u32>, usize)> {
    let mut by: BTreeMap<Option<u32>, usize> = BTreeMap::new();
    for &i in indices {
        *by.entry(labels[i]).or_default() += 1;
    }
    by.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 classes stored class by class: 50, 30, 20 images.
    fn sorted_labels() -> Vec<Option<u32>> {
        [(0u32, 50usize), (1, 30), (2, 20)]
            .iter()
            .flat_map(|&(k, n)| std::iter::repeat_n(Some(k), n))
            .collect()
    }

    #[test]
    fn samples_keep_every_class_in_proportion() {
        let labels = sorted_labels();
        let keys = position_keys(labels.len(), 7);
        let take = stratified_sample(&labels, &keys, 10);
        assert_eq!(take.len(), 10);
        assert_eq!(
            class_counts(&labels, &take),
            vec![(Some(0), 5), (Some(1), 3), (Some(2), 2)]
        );
        // 11 of 100: remainders 0.5, 0.3, 0.2 → the extra image goes to class 0.
        let take = stratified_sample(&labels, &keys, 11);
        assert_eq!(
            class_counts(&labels, &take),
            vec![(Some(0), 6), (Some(1), 3), (Some(2), 2)]
        );
        // No duplicates, and a larger sample contains the smaller one of each class.
        let mut sorted = take.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 11);
        assert_eq!(stratified_sample(&labels, &keys, 1000).len(), 100);
    }

    #[test]
    fn samples_are_seeded_and_not_a_prefix() {
        let labels = sorted_labels();
        let a = stratified_sample(&labels, &position_keys(100, 1), 10);
        let b = stratified_sample(&labels, &position_keys(100, 1), 10);
        let c = stratified_sample(&labels, &position_keys(100, 2), 10);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().any(|&i| i >= 10), "not the first ten: {a:?}");
    }

    #[test]
    fn halves_split_every_class_and_cover_everything_once() {
        let labels = sorted_labels();
        let keys = position_keys(labels.len(), 3);
        let (fit, score) = stratified_split(&labels, &keys, 0.5);
        assert_eq!(
            class_counts(&labels, &fit),
            vec![(Some(0), 25), (Some(1), 15), (Some(2), 10)]
        );
        assert_eq!(class_counts(&labels, &fit), class_counts(&labels, &score));
        let mut all: Vec<usize> = fit.iter().chain(&score).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Each part is in key order.
        assert!(fit.windows(2).all(|w| keys[w[0]] <= keys[w[1]]));
    }

    #[test]
    fn folds_spread_every_class_and_balance_their_sizes() {
        let labels = sorted_labels();
        let keys = position_keys(labels.len(), 3);
        let fold = stratified_folds(&labels, &keys, 5);
        for f in 0..5 {
            let members: Vec<usize> = (0..100).filter(|&i| fold[i] == f).collect();
            assert_eq!(members.len(), 20, "fold {f}");
            assert_eq!(
                class_counts(&labels, &members),
                vec![(Some(0), 10), (Some(1), 6), (Some(2), 4)],
                "fold {f}"
            );
        }
        // 3 folds of 100: sizes 34, 33, 33; every class within one of its share.
        let fold = stratified_folds(&labels, &keys, 3);
        let sizes: Vec<usize> = (0..3)
            .map(|f| fold.iter().filter(|&&x| x == f).count())
            .collect();
        assert_eq!(sizes, [34, 33, 33]);
    }

    #[test]
    fn content_keys_make_selections_independent_of_storage_order() {
        // 40 distinct "images" of 4 values, labels by class; then the same images reversed.
        let images: Vec<Vec<f32>> = (0..40).map(|i| vec![i as f32; 4]).collect();
        let labels: Vec<Option<u32>> = (0..40).map(|i| Some(i / 10)).collect();
        let keys: Vec<u64> = images.iter().map(|v| pixel_key(v, 0)).collect();
        let (fit, score) = stratified_split(&labels, &keys, 0.5);
        let perm: Vec<usize> = (0..40).rev().collect();
        let p_labels: Vec<Option<u32>> = perm.iter().map(|&i| labels[i]).collect();
        let p_keys: Vec<u64> = perm.iter().map(|&i| keys[i]).collect();
        let (p_fit, p_score) = stratified_split(&p_labels, &p_keys, 0.5);
        let back = |v: &[usize]| v.iter().map(|&j| perm[j]).collect::<Vec<_>>();
        assert_eq!(back(&p_fit), fit);
        assert_eq!(back(&p_score), score);
        assert_ne!(pixel_key(&[1.0], 0), pixel_key(&[1.0], 1));
        assert_ne!(name_key("a/1.png", 0), name_key("a/2.png", 0));
    }

    #[test]
    fn unlabelled_images_are_one_stratum() {
        let labels: Vec<Option<u32>> = (0..30).map(|i| (i < 10).then_some(0)).collect();
        let take = stratified_sample(&labels, &position_keys(30, 0), 6);
        assert_eq!(class_counts(&labels, &take), vec![(None, 4), (Some(0), 2)]);
    }
}
