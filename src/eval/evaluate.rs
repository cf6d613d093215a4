//! Evaluation of a network on the labelled evaluation split: kNN and linear-probe accuracy on
//! encoder features y (the study's probe, cross-validated over class-stratified folds that are
//! independent of storage order, see [`EvalSplit`]), spread and effective rank of y and z,
//! covariance spectra, α-ReQ, alignment and uniformity.

use anyhow::Context;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cross_validation::{knn_and_probe, CrossValidated};
use super::split::EvalSplit;
use crate::config::RunConfig;
use crate::data::{eval_batches, mix_seeds, Augmenter, Dataset};
use crate::log::EvalRecord;
use crate::method::OnlineNetwork;
use crate::metrics::geometry::{alignment, dimension_variance, uniformity};
use crate::metrics::rank::effective_rank;
use crate::metrics::spectrum::{alpha_req, covariance_spectrum};
use crate::metrics::spread::z_std;

/// The network's outputs on the evaluation split are NaN or infinite: the run diverged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteEmbeddings;

impl std::fmt::Display for NonFiniteEmbeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the network's embeddings of the evaluation split are not finite"
        )
    }
}

impl std::error::Error for NonFiniteEmbeddings {}

fn all_finite(t: &Tensor) -> anyhow::Result<bool> {
    Ok(t.abs()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        .is_finite())
}

/// What evaluation runs on.
pub struct EvalSetup<'a> {
    pub dataset: &'a dyn Dataset,
    pub augmenter: &'a Augmenter,
    pub batch_size: usize,
    /// The images evaluated and their cross-validation folds.
    pub split: &'a EvalSplit,
    /// Seed of the augmented views used for alignment.
    pub seed: u64,
    pub device: &'a Device,
}

impl<'a> EvalSetup<'a> {
    /// The evaluation a run's trainer performs (and `analyze` repeats).
    pub fn for_run(
        cfg: &RunConfig,
        dataset: &'a dyn Dataset,
        augmenter: &'a Augmenter,
        split: &'a EvalSplit,
        device: &'a Device,
    ) -> Self {
        Self {
            dataset,
            augmenter,
            batch_size: cfg.train.batch_size.max(64),
            split,
            seed: cfg.train.seed,
            device,
        }
    }
}

fn stack_rows(parts: Vec<Tensor>) -> anyhow::Result<Tensor> {
    Ok(Tensor::cat(&parts, 0)?)
}

/// Evaluates `online` (in eval mode) on `setup`.
pub fn evaluate(
    online: &OnlineNetwork,
    setup: &EvalSetup,
    epoch: u32,
    step: u64,
) -> anyhow::Result<EvalRecord> {
    let ds = setup.dataset;
    let order = &setup.split.images;
    let n = order.len();
    if n < 4 {
        anyhow::bail!("evaluation needs at least 4 images, the evaluation split has {n}");
    }
    let (c, s) = (ds.channels(), setup.augmenter.out_size());
    let mut ys = Vec::new();
    let mut zs = Vec::new();
    let mut labels: Vec<Option<u32>> = Vec::with_capacity(n);
    for batch in eval_batches(ds, order, setup.augmenter, setup.batch_size) {
        let x = Tensor::from_vec(batch.images, (batch.labels.len(), c, s, s), setup.device)?;
        let (y, z) = online.embed(&x)?;
        ys.push(y);
        zs.push(z);
        labels.extend(&batch.labels);
    }
    let y = stack_rows(ys)?;
    let z = stack_rows(zs)?;
    if !all_finite(&y)? || !all_finite(&z)? {
        return Err(NonFiniteEmbeddings.into());
    }

    let [y0, y1] = two_view_features(online, setup)?;
    let (knn, probe) = match labels.iter().copied().collect::<Option<Vec<u32>>>() {
        Some(labels) if setup.split.scored() => {
            let (knn, probe) = cross_validated(&y, &labels, setup)?;
            (Some(knn), Some(probe))
        }
        _ => (None, None),
    };
    let (scored, fit_n) = if setup.split.scored() {
        (n, setup.split.fit_size())
    } else {
        (0, 0)
    };
    let y_spectrum = covariance_spectrum(&y).context("spectrum of y")?;
    let z_spectrum = covariance_spectrum(&z).context("spectrum of z")?;
    let (z_var_min, z_var_median, z_var_max) = dimension_variance(&z)?;
    Ok(EvalRecord {
        epoch,
        step,
        knn_acc: knn.map(|c| c.accuracy),
        probe_acc: probe.map(|c| c.accuracy),
        knn_acc_se: knn.map(|c| c.standard_error),
        probe_acc_se: probe.map(|c| c.standard_error),
        y_std: z_std(&y)?,
        y_effective_rank: effective_rank(&y)?,
        z_std: z_std(&z)?,
        z_effective_rank: effective_rank(&z)?,
        alpha_req: alpha_req(&y_spectrum),
        align: alignment(&y0, &y1)?,
        uniform: uniformity(&y0)?,
        z_var_min,
        z_var_median,
        z_var_max,
        split_seed: setup.split.seed,
        fit_size: fit_n as u64,
        score_size: scored as u64,
        folds: setup.split.folds as u32,
        y_spectrum,
        z_spectrum,
    })
}

/// Encoder features of two augmented views of each evaluation image (for alignment and
/// uniformity), each view seeded by the image's place in the storage-independent order.
fn two_view_features(online: &OnlineNetwork, setup: &EvalSetup) -> anyhow::Result<[Tensor; 2]> {
    let ds = setup.dataset;
    let order = &setup.split.images;
    let n = order.len();
    let (c, s) = (ds.channels(), setup.augmenter.out_size());
    let mut raw = vec![0f32; c * ds.height() * ds.width()];
    let mut views: [Vec<Tensor>; 2] = [Vec::new(), Vec::new()];
    let chunk = setup.batch_size.max(1);
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        for (v, out) in views.iter_mut().enumerate() {
            let mut buf = vec![0f32; (end - start) * c * s * s];
            for (k, j) in (start..end).enumerate() {
                ds.read_image(order[j], &mut raw);
                let mut rng =
                    ChaCha8Rng::seed_from_u64(mix_seeds(&[setup.seed, j as u64, v as u64]));
                setup.augmenter.apply(
                    &raw,
                    ds.height(),
                    ds.width(),
                    &mut rng,
                    &mut buf[k * c * s * s..(k + 1) * c * s * s],
                );
            }
            let x = Tensor::from_vec(buf, (end - start, c, s, s), setup.device)?;
            out.push(online.embed(&x)?.0);
        }
    }
    let [v0, v1] = views;
    Ok([stack_rows(v0)?, stack_rows(v1)?])
}

/// Cross-validated kNN and linear-probe accuracy of features `y` (rows in `split.images`
/// order) with their labels.
fn cross_validated(
    y: &Tensor,
    labels: &[u32],
    setup: &EvalSetup,
) -> anyhow::Result<(CrossValidated, CrossValidated)> {
    let classes = setup
        .dataset
        .num_classes()
        .unwrap_or_else(|| labels.iter().max().map_or(1, |m| *m as usize + 1));
    let feats: Vec<f32> = y
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(knn_and_probe(
        &feats,
        y.dim(1)?,
        labels,
        setup.split,
        classes,
    ))
}
