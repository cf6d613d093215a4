//! Data set and augmentation settings (`[dataset]` and `[augment]` tables of a run).

use serde::{Deserialize, Serialize};

/// Which images a run trains and evaluates on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    /// `synthetic` (embedded, generated from `seed`), or a real data set read from `path`:
    /// `mnist`, `fashion-mnist`, `kmnist` (IDX), `cifar10`, `cifar100` (binary), `stl10`
    /// (binary), `folder` (`<class>/*.png|jpg`).
    pub name: String,
    /// Side of the square images fed to the encoder (pixels).
    pub image_size: usize,
    /// Images in the self-supervised training split (synthetic only).
    pub train_size: usize,
    /// Images in the labelled evaluation split (synthetic only).
    pub eval_size: usize,
    /// Seed of the data set itself (which images exist); independent of the run seed so
    /// every seed of a grid sees the same images.
    pub seed: u64,
    /// Synthetic: copies of the class's shape drawn in each image (several copies keep
    /// class evidence inside most random crops).
    pub objects: usize,
    /// Synthetic: radius range of each copy, as a fraction of the image side.
    pub object_scale: [f64; 2],
    /// Where a real data set lives on disk (unused by `synthetic`; `fashion-mnist` defaults to
    /// `/usr/share/datasets/fashion-mnist`, where Debian's `dataset-fashion-mnist` puts it).
    pub path: Option<String>,
    /// Real data sets: use a sample of N images of the training split (None: all), every
    /// class in proportion, drawn with `split_seed` (never the first N: files are often
    /// stored class by class). `train_size` stays synthetic-only because it has a non-zero
    /// default.
    pub limit_train: Option<usize>,
    /// Real data sets: a class-stratified sample of N images of the evaluation split (None:
    /// all), drawn as `limit_train`'s.
    pub limit_eval: Option<usize>,
    /// Seed of every class-stratified selection of images: the `limit_*` samples, a
    /// folder's held-out evaluation images, and the evaluation's fit/score halves (see
    /// `data::split`). Fixed per data set, independent of the run seed.
    pub split_seed: u64,
    /// An image folder without `train/` and `test/`: the fraction of every class held out as
    /// the evaluation split (never trained on).
    pub eval_fraction: f64,
    /// An image folder's largest image, in pixels (width × height, read from the file's header
    /// before anything is decoded): a small file can declare a huge image (a 97 KB PNG of
    /// 10 000 × 10 000 took 1.6 GB to decode).
    pub max_image_pixels: u64,
}

/// `dataset.max_image_pixels` unless a config says otherwise: 64 MPixel, far above any image
/// data set's (ImageNet's largest are ~20 MPixel).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 64_000_000;

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            name: "synthetic".into(),
            image_size: 32,
            train_size: 4096,
            eval_size: 1024,
            seed: 0,
            objects: 1,
            object_scale: [0.3, 0.45],
            path: None,
            limit_train: None,
            limit_eval: None,
            split_seed: 0,
            eval_fraction: 0.2,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

/// The study's augmentation pipeline (BYOL / SimCLR style), every parameter exposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Random resized crop: area fraction range.
    pub crop_scale: [f64; 2],
    /// Random resized crop: aspect ratio range.
    pub crop_ratio: [f64; 2],
    /// Colour jitter strengths: brightness, contrast, saturation, hue.
    pub jitter: [f64; 4],
    /// Probability that colour jitter is applied.
    pub jitter_p: f64,
    /// Probability of converting to grayscale.
    pub grayscale_p: f64,
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Probability of a Gaussian blur.
    pub blur_p: f64,
    /// Blur σ range, in pixels.
    pub blur_sigma: [f64; 2],
    /// Blur kernel side as a fraction of the image side (the nearest odd number, ≥ 3).
    pub blur_kernel_frac: f64,
    /// Per-channel normalisation mean (applied last); empty: 0.5 for every channel.
    pub mean: Vec<f64>,
    /// Per-channel normalisation std (applied last); empty: 0.25 for every channel.
    pub std: Vec<f64>,
}

impl AugmentConfig {
    /// Every range and probability, checked before any run starts (the channel-dependent
    /// `mean`/`std` lengths are checked against the data set when it is opened).
    pub fn validate(&self) -> Result<(), String> {
        fn prob(name: &str, p: f64) -> Result<(), String> {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("augment.{name} must be in [0, 1], got {p}"))
            }
        }
        fn range(name: &str, r: [f64; 2]) -> Result<(), String> {
            if r[0].is_finite() && r[1].is_finite() && r[0] > 0.0 && r[0] <= r[1] {
                Ok(())
            } else {
                Err(format!(
                    "augment.{name} must be an ordered range of positive numbers (0 < lo <= hi), got [{}, {}]",
                    r[0], r[1]
                ))
            }
        }
        range("crop_scale", self.crop_scale)?;
        if self.crop_scale[1] > 1.0 {
            return Err(format!(
                "augment.crop_scale must lie in (0, 1], got [{}, {}]",
                self.crop_scale[0], self.crop_scale[1]
            ));
        }
        range("crop_ratio", self.crop_ratio)?;
        const JITTER: [&str; 4] = ["brightness", "contrast", "saturation", "hue"];
        for (name, &v) in JITTER.iter().zip(&self.jitter) {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("augment.jitter ({name}) must be >= 0, got {v}"));
            }
        }
        if self.jitter[3] > 0.5 {
            return Err(format!(
                "augment.jitter (hue) must be in [0, 0.5], got {}",
                self.jitter[3]
            ));
        }
        prob("jitter_p", self.jitter_p)?;
        prob("grayscale_p", self.grayscale_p)?;
        prob("flip_p", self.flip_p)?;
        prob("blur_p", self.blur_p)?;
        range("blur_sigma", self.blur_sigma)?;
        // A kernel wider than the image blurs nothing more and costs its square.
        if !(self.blur_kernel_frac > 0.0 && self.blur_kernel_frac <= 1.0) {
            return Err(format!(
                "augment.blur_kernel_frac must be in (0, 1] (a fraction of the image side), got {}",
                self.blur_kernel_frac
            ));
        }
        if let Some(bad) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("augment.std must be finite and > 0, got {bad}"));
        }
        if let Some(bad) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("augment.mean must be finite, got {bad}"));
        }
        Ok(())
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_scale: [0.2, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            jitter: [0.4, 0.4, 0.4, 0.1],
            jitter_p: 0.8,
            grayscale_p: 0.2,
            flip_p: 0.5,
            blur_p: 0.5,
            blur_sigma: [0.1, 2.0],
            blur_kernel_frac: 0.1,
            mean: Vec::new(),
            std: Vec::new(),
        }
    }
}
