//! Batching: a prefetching two-view loader for training, a plain batcher for evaluation.
//!
//! The training loader renders batches on one background thread into a bounded channel, so the
//! trainer (which owns the cores) never waits for augmentation. All randomness is seeded from
//! `(seed, epoch)` for the shuffle and `(seed, step, position, view)` for each augmented view, so
//! batches are identical run to run whatever the timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::augment::Augmenter;
use super::dataset::Dataset;
use super::seeds::mix_seeds;

/// Stream tags so the shuffle and the views never share a seed.
const SHUFFLE_TAG: u64 = 0x0073_6875_6666_6c65;
const VIEW_TAG: u64 = 0x7669_6577;

/// Two augmented views of the same `B` images.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoViewBatch {
    /// Epoch this batch belongs to (from 0).
    pub epoch: u32,
    /// Global step (from 0, counting across epochs).
    pub step: u64,
    /// Data-set indices of the images, in batch order.
    pub image_ids: Vec<u64>,
    /// Their labels (if the data set has them; self-supervised training ignores them).
    pub labels: Vec<Option<u32>>,
    /// First view, B×C×S×S, normalised.
    pub view0: Vec<f32>,
    /// Second view, B×C×S×S, normalised.
    pub view1: Vec<f32>,
}

/// Iterator over [`TwoViewBatch`]es produced on a background thread.
///
/// Dropping it stops the producer: the consumer may stop at any point (a diverged run).
pub struct TwoViewLoader {
    receiver: Option<Receiver<TwoViewBatch>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    steps_per_epoch: usize,
    total_steps: u64,
    received: u64,
}

/// What the producer thread owns.
struct Producer {
    dataset: Arc<dyn Dataset>,
    augmenter: Augmenter,
    batch_size: usize,
    epochs: u32,
    seed: u64,
    steps_per_epoch: usize,
    /// First step to produce (a resumed run).
    start_step: u64,
    stop: Arc<AtomicBool>,
}

/// How a training loader batches: sizes, seed, threads and where to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderPlan {
    pub batch_size: usize,
    pub epochs: u32,
    pub seed: u64,
    /// Finished batches that may wait in the channel.
    pub prefetch: usize,
    /// Threads augmenting each batch.
    pub workers: usize,
    /// Global step of the first batch (0, or where a resumed run continues).
    pub start_step: u64,
}

impl std::fmt::Debug for TwoViewLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoViewLoader")
            .field("steps_per_epoch", &self.steps_per_epoch)
            .field("total_steps", &self.total_steps)
            .field("received", &self.received)
            .field("running", &self.receiver.is_some())
            .finish()
    }
}

impl TwoViewLoader {
    /// Starts the producer thread. `prefetch` is the number of finished batches that may wait in
    /// the channel (0: each batch is handed over as it is requested).
    ///
    /// Fails if `batch_size` is 0 or exceeds the data set, or if the data set's channel count
    /// differs from the augmenter's.
    pub fn spawn(
        dataset: Arc<dyn Dataset>,
        augmenter: Augmenter,
        batch_size: usize,
        epochs: u32,
        seed: u64,
        prefetch: usize,
    ) -> Result<Self> {
        Self::spawn_with_workers(dataset, augmenter, batch_size, epochs, seed, prefetch, 1)
    }

    /// As [`TwoViewLoader::spawn`], augmenting each batch on `workers` threads of the
    /// producer's own pool (a GPU needs more images per second than one core makes). The
    /// batches are identical for any number of workers: every view has its own seed.
    pub fn spawn_with_workers(
        dataset: Arc<dyn Dataset>,
        augmenter: Augmenter,
        batch_size: usize,
        epochs: u32,
        seed: u64,
        prefetch: usize,
        workers: usize,
    ) -> Result<Self> {
        Self::spawn_from(
            dataset,
            augmenter,
            &LoaderPlan {
                batch_size,
                epochs,
                seed,
                prefetch,
                workers,
                start_step: 0,
            },
        )
    }

    /// The first `steps` batches of a run of `cfg` on `dataset` (the run's seed, batch size,
    /// augmentation and prefetch; epochs enough for `steps`): what `bench` and `selftest` step
    /// through outside the trainer.
    pub fn for_steps(
        dataset: Arc<dyn Dataset>,
        cfg: &crate::config::RunConfig,
        steps: usize,
        workers: usize,
    ) -> Result<Self> {
        let augmenter = Augmenter::new(&cfg.augment, cfg.dataset.image_size, dataset.channels())?;
        let batch = cfg.train.batch_size;
        let epochs = (steps * batch / dataset.len().max(1) + 2) as u32;
        let (seed, prefetch) = (cfg.train.seed, cfg.train.prefetch);
        Self::spawn_with_workers(dataset, augmenter, batch, epochs, seed, prefetch, workers)
    }

    /// As [`TwoViewLoader::spawn_with_workers`], starting at `plan.start_step`: a resumed run
    /// gets exactly the batches an uninterrupted one would have had from there on (every
    /// epoch's shuffle and every view have their own seeds, so nothing before is replayed).
    pub fn spawn_from(
        dataset: Arc<dyn Dataset>,
        augmenter: Augmenter,
        plan: &LoaderPlan,
    ) -> Result<Self> {
        let LoaderPlan {
            batch_size,
            epochs,
            seed,
            prefetch,
            workers,
            start_step,
        } = *plan;
        let n = dataset.len();
        ensure!(batch_size > 0, "batch size must be positive");
        ensure!(
            batch_size <= n,
            "batch size {batch_size} exceeds the data set ({n} images)"
        );
        ensure!(
            dataset.channels() == augmenter.channels(),
            "data set has {} channels but the augmentation expects {}",
            dataset.channels(),
            augmenter.channels()
        );
        let steps_per_epoch = n / batch_size;
        let total_steps = steps_per_epoch as u64 * u64::from(epochs);
        let start_step = start_step.min(total_steps);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(prefetch);
        let producer = Producer {
            dataset,
            augmenter,
            batch_size,
            epochs,
            seed,
            steps_per_epoch,
            start_step,
            stop: Arc::clone(&stop),
        };
        let pool = if workers > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("two-view-augment-{i}"))
                    .build()
                    .context("could not start the loader's worker threads")?,
            )
        } else {
            None
        };
        let handle = std::thread::Builder::new()
            .name("two-view-loader".into())
            .spawn(move || match pool {
                Some(pool) => pool.install(|| producer.run(&tx, true)),
                None => producer.run(&tx, false),
            })
            .context("could not start the loader thread")?;
        Ok(Self {
            receiver: Some(rx),
            handle: Some(handle),
            stop,
            steps_per_epoch,
            total_steps,
            received: start_step,
        })
    }

    /// Batches per epoch: `floor(len / batch_size)` (the last incomplete batch is dropped, so
    /// every batch has the same size, which batch statistics need).
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// Batches over all epochs.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Stops and joins the producer; returns its panic payload if it panicked.
    fn shutdown(&mut self) -> Option<Box<dyn std::any::Any + Send>> {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes a blocked `send` return at once.
        self.receiver = None;
        self.handle.take().and_then(|h| h.join().err())
    }
}

impl Iterator for TwoViewLoader {
    type Item = TwoViewBatch;

    fn next(&mut self) -> Option<TwoViewBatch> {
        let batch = self.receiver.as_ref()?.recv();
        match batch {
            Ok(b) => {
                self.received += 1;
                Some(b)
            }
            Err(_) => {
                // The producer is gone: finished, or panicked — surface a panic rather than
                // silently ending training early.
                if let Some(panic) = self.shutdown() {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.receiver.is_none() {
            return (0, Some(0));
        }
        let left = usize::try_from(self.total_steps - self.received).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl Drop for TwoViewLoader {
    fn drop(&mut self) {
        // A producer panic is not re-raised while dropping (it could abort a panicking thread).
        let _ = self.shutdown();
    }
}

impl Producer {
    fn run(&self, tx: &SyncSender<TwoViewBatch>, parallel: bool) {
        let ds = &*self.dataset;
        let (c, h, w) = (ds.channels(), ds.height(), ds.width());
        let view_len = self.augmenter.out_len();
        let b = self.batch_size;
        let mut image = vec![0.0f32; c * h * w];
        let mut order: Vec<usize> = Vec::with_capacity(ds.len());
        let spe = self.steps_per_epoch as u64;
        let first_epoch = self.start_step.checked_div(spe).unwrap_or(0);
        let mut step = first_epoch * spe;
        for epoch in (first_epoch.min(u64::from(self.epochs)) as u32)..self.epochs {
            // A fresh permutation per epoch, from its own seed: epoch k does not depend on
            // epochs before it.
            order.clear();
            order.extend(0..ds.len());
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seeds(&[
                self.seed,
                SHUFFLE_TAG,
                u64::from(epoch),
            ])));
            for ids in order.chunks_exact(b).take(self.steps_per_epoch) {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if step < self.start_step {
                    step += 1;
                    continue;
                }
                let mut view0 = vec![0.0f32; b * view_len];
                let mut view1 = vec![0.0f32; b * view_len];
                let one =
                    |pos: usize, id: usize, v0: &mut [f32], v1: &mut [f32], image: &mut [f32]| {
                        ds.read_image(id, image);
                        for (view, buf) in [v0, v1].into_iter().enumerate() {
                            let mut rng = ChaCha8Rng::seed_from_u64(mix_seeds(&[
                                self.seed,
                                VIEW_TAG,
                                step,
                                pos as u64,
                                view as u64,
                            ]));
                            self.augmenter.apply(image, h, w, &mut rng, buf);
                        }
                    };
                if parallel {
                    view0
                        .par_chunks_mut(view_len)
                        .zip(view1.par_chunks_mut(view_len))
                        .enumerate()
                        .for_each_init(
                            || vec![0.0f32; c * h * w],
                            |image, (pos, (v0, v1))| one(pos, ids[pos], v0, v1, image),
                        );
                } else {
                    for (pos, (v0, v1)) in view0
                        .chunks_mut(view_len)
                        .zip(view1.chunks_mut(view_len))
                        .enumerate()
                    {
                        one(pos, ids[pos], v0, v1, &mut image);
                    }
                }
                let batch = TwoViewBatch {
                    epoch,
                    step,
                    image_ids: ids.iter().map(|&i| i as u64).collect(),
                    labels: ids.iter().map(|&i| ds.label(i)).collect(),
                    view0,
                    view1,
                };
                if tx.send(batch).is_err() {
                    return; // The consumer is gone.
                }
                step += 1;
            }
        }
    }
}

/// A batch of evaluation images (normalised, not augmented).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalBatch {
    /// Data-set indices, in the order asked for.
    pub image_ids: Vec<u64>,
    /// Their labels.
    pub labels: Vec<Option<u32>>,
    /// B×C×S×S.
    pub images: Vec<f32>,
}

/// Images `indices` of the data set, in that order, in batches of `batch_size` (the last may
/// be smaller), through [`Augmenter::normalise_only`]. Computed lazily on the calling thread.
///
/// A `batch_size` of 0 is treated as 1.
///
/// # Panics
/// When iterated, if the data set's channel count differs from the augmenter's or an index is
/// out of range.
pub fn eval_batches<'a>(
    dataset: &'a dyn Dataset,
    indices: &'a [usize],
    augmenter: &'a Augmenter,
    batch_size: usize,
) -> impl Iterator<Item = EvalBatch> + 'a {
    let (c, h, w) = (dataset.channels(), dataset.height(), dataset.width());
    let out_len = augmenter.out_len();
    let mut image = vec![0.0f32; c * h * w];
    indices.chunks(batch_size.max(1)).map(move |ids| {
        let mut images = vec![0.0f32; ids.len() * out_len];
        for (&id, out) in ids.iter().zip(images.chunks_exact_mut(out_len)) {
            dataset.read_image(id, &mut image);
            augmenter.normalise_only(&image, h, w, out);
        }
        EvalBatch {
            image_ids: ids.iter().map(|&i| i as u64).collect(),
            labels: ids.iter().map(|&i| dataset.label(i)).collect(),
            images,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::{AugmentConfig, DatasetConfig};
    use crate::data::synthetic::{generate, Split};

    fn dataset(n: usize) -> Arc<dyn Dataset> {
        let cfg = DatasetConfig {
            image_size: 8,
            train_size: n,
            eval_size: 4,
            seed: 1,
            ..DatasetConfig::default()
        };
        Arc::new(generate(&cfg, Split::Train))
    }

    fn augmenter() -> Augmenter {
        Augmenter::new(&AugmentConfig::default(), 8, 3).expect("defaults are valid")
    }

    fn run_loader(seed: u64) -> Vec<TwoViewBatch> {
        TwoViewLoader::spawn(dataset(23), augmenter(), 5, 2, seed, 2)
            .expect("valid loader")
            .collect()
    }

    #[test]
    fn deterministic_per_seed() {
        let a = run_loader(7);
        let b = run_loader(7);
        assert_eq!(a, b);
        let c = run_loader(8);
        assert_ne!(a[0].image_ids, c[0].image_ids);
        assert_ne!(a[0].view0, c[0].view0);
        // The two views of an image differ (independent augmentation seeds).
        assert_ne!(a[0].view0, a[0].view1);
    }

    #[test]
    fn counts_shapes_and_epoch_coverage() {
        let n = 23;
        let loader = TwoViewLoader::spawn(dataset(n), augmenter(), 5, 3, 0, 1).expect("valid");
        assert_eq!(loader.steps_per_epoch(), 4);
        assert_eq!(loader.total_steps(), 12);
        assert_eq!(loader.size_hint(), (12, Some(12)));
        let batches: Vec<_> = loader.collect();
        assert_eq!(batches.len(), 12);
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(b.step, i as u64);
            assert_eq!(b.epoch, (i / 4) as u32);
            assert_eq!(b.image_ids.len(), 5);
            assert_eq!(b.view0.len(), 5 * 3 * 8 * 8);
            assert_eq!(b.view1.len(), 5 * 3 * 8 * 8);
            assert!(b.labels.iter().all(|l| l.is_some_and(|l| l < 10)));
        }
        for epoch in 0..3u32 {
            let mut ids: Vec<u64> = batches
                .iter()
                .filter(|b| b.epoch == epoch)
                .flat_map(|b| b.image_ids.iter().copied())
                .collect();
            assert_eq!(ids.len(), 20);
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 20, "an image repeated within epoch {epoch}");
            assert!(ids.iter().all(|&i| i < n as u64));
        }
        // Epochs are shuffled differently.
        assert_ne!(batches[0].image_ids, batches[4].image_ids);
    }

    #[test]
    fn rejects_bad_batch_sizes() {
        let e = TwoViewLoader::spawn(dataset(4), augmenter(), 5, 1, 0, 1)
            .expect_err("batch larger than data set");
        assert!(e.to_string().contains("exceeds"));
        assert!(TwoViewLoader::spawn(dataset(4), augmenter(), 0, 1, 0, 1).is_err());
        let gray = Augmenter::new(
            &AugmentConfig {
                mean: vec![0.5],
                std: vec![0.25],
                ..AugmentConfig::default()
            },
            8,
            1,
        )
        .expect("valid");
        assert!(TwoViewLoader::spawn(dataset(4), gray, 2, 1, 0, 1).is_err());
    }

    #[test]
    fn dropping_early_does_not_hang() {
        let start = Instant::now();
        for prefetch in [0, 1, 4] {
            let mut loader =
                TwoViewLoader::spawn(dataset(40), augmenter(), 4, 1_000_000, 3, prefetch)
                    .expect("valid");
            assert!(loader.next().is_some());
            // Let the producer fill the channel and block on `send`.
            std::thread::sleep(Duration::from_millis(20));
            drop(loader);
        }
        // Zero epochs: nothing to produce, iteration ends at once.
        let mut empty = TwoViewLoader::spawn(dataset(8), augmenter(), 4, 0, 0, 1).expect("valid");
        assert!(empty.next().is_none());
        assert!(empty.next().is_none());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn eval_batches_cover_in_order() {
        let ds = dataset(11);
        let aug = augmenter();
        let all: Vec<usize> = (0..11).collect();
        let batches: Vec<_> = eval_batches(&*ds, &all, &aug, 4).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].image_ids, vec![8, 9, 10]);
        assert_eq!(batches[2].images.len(), 3 * aug.out_len());
        let ids: Vec<u64> = batches.iter().flat_map(|b| b.image_ids.clone()).collect();
        assert_eq!(ids, (0..11).collect::<Vec<u64>>());
        // Same size: normalise_only is (x − 0.5) / 0.25 of the stored pixels.
        let mut img = vec![0.0f32; aug.out_len()];
        ds.read_image(5, &mut img);
        let got = &batches[1].images[aug.out_len()..2 * aug.out_len()];
        assert!(got
            .iter()
            .zip(&img)
            .all(|(g, x)| (g - (x - 0.5) / 0.25).abs() < 1e-6));
        assert_eq!(batches[1].labels[1], ds.label(5));
    }

    #[test]
    fn worker_threads_give_identical_batches() {
        use crate::config::{AugmentConfig, DatasetConfig};
        let cfg = DatasetConfig {
            image_size: 12,
            train_size: 24,
            ..DatasetConfig::default()
        };
        let ds: Arc<dyn Dataset> = Arc::new(crate::data::synthetic::generate(
            &cfg,
            crate::data::synthetic::Split::Train,
        ));
        let aug = || Augmenter::new(&AugmentConfig::default(), 10, 3).expect("augmenter");
        let one: Vec<_> = TwoViewLoader::spawn_with_workers(ds.clone(), aug(), 8, 2, 5, 2, 1)
            .expect("loader")
            .collect();
        let three: Vec<_> = TwoViewLoader::spawn_with_workers(ds, aug(), 8, 2, 5, 2, 3)
            .expect("loader")
            .collect();
        assert_eq!(one.len(), 6);
        assert_eq!(one, three);
    }

    #[test]
    fn starting_at_a_step_gives_the_rest_of_the_full_sequence() {
        let full: Vec<_> = TwoViewLoader::spawn(dataset(23), augmenter(), 5, 3, 9, 2)
            .expect("valid")
            .collect();
        assert_eq!(full.len(), 12);
        // Mid-epoch, at an epoch boundary, the last step and past the end.
        for start in [0u64, 3, 4, 7, 11, 12, 40] {
            let plan = LoaderPlan {
                batch_size: 5,
                epochs: 3,
                seed: 9,
                prefetch: 1,
                workers: 1,
                start_step: start,
            };
            let loader = TwoViewLoader::spawn_from(dataset(23), augmenter(), &plan).expect("valid");
            let left = full.len().saturating_sub(start as usize);
            assert_eq!(loader.size_hint(), (left, Some(left)));
            let rest: Vec<_> = loader.collect();
            assert_eq!(
                rest.as_slice(),
                &full[(start as usize).min(12)..],
                "start {start}"
            );
        }
    }
}
