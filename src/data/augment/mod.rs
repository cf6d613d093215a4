//! The study's augmentation pipeline, with torchvision / BYOL semantics.
//!
//! Order (as in BYOL and the study's `train_blog.py`): RandomResizedCrop → horizontal flip →
//! ColorJitter (applied with `jitter_p`, its four ops in a random order) → RandomGrayscale →
//! Gaussian blur → clamp to [0, 1] → normalise.
//!
//! Images are planar CHW f32 in [0, 1]. Resizing follows PIL's bilinear filter (the one
//! torchvision uses on PIL images, and on tensors with `antialias=True`): plain bilinear with
//! half-pixel centres when upscaling, a widened triangle filter when downscaling.
//!
//! The colour helpers are public and pure so they can be tested on known pixels.

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::AugmentConfig;

mod blur;
mod color;
mod geometry;

pub use blur::*;
pub use color::*;
pub use geometry::*;

/// Uniform in [lo, hi] (returns `lo` when the range is empty, as torch's `uniform_` does).
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// The validated augmentation pipeline for one output size and channel count.
#[derive(Debug, Clone)]
pub struct Augmenter {
    out_size: usize,
    channels: usize,
    crop_scale: [f64; 2],
    crop_ratio: [f64; 2],
    /// Factor ranges of brightness, contrast, saturation, hue (`None`: op disabled, as
    /// torchvision does for a zero strength — it then draws no random number either).
    jitter: [Option<[f64; 2]>; 4],
    jitter_p: f64,
    grayscale_p: f64,
    flip_p: f64,
    blur_p: f64,
    blur_sigma: [f64; 2],
    blur_kernel: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Augmenter {
    /// Validates `cfg` for images of `channels` channels (1 or 3) resized to
    /// `out_size × out_size`.
    pub fn new(cfg: &AugmentConfig, out_size: usize, channels: usize) -> Result<Self> {
        ensure!(out_size > 0, "augmentation output size must be positive");
        ensure!(
            channels == 1 || channels == 3,
            "augmentation supports 1- or 3-channel images, got {channels} channels"
        );
        cfg.validate().map_err(anyhow::Error::msg)?;
        // Unset mean/std: 0.5 / 0.25 for every channel the data set has (documented default).
        let mean = if cfg.mean.is_empty() {
            vec![0.5; channels]
        } else {
            cfg.mean.clone()
        };
        let std = if cfg.std.is_empty() {
            vec![0.25; channels]
        } else {
            cfg.std.clone()
        };
        for (name, v) in [("mean", &mean), ("std", &std)] {
            ensure!(
                v.len() == channels,
                "augment.{name} must have one entry per channel ({channels}), got {}",
                v.len()
            );
            ensure!(
                v.iter().all(|x| x.is_finite()),
                "augment.{name} must be finite, got {v:?}"
            );
        }
        ensure!(
            std.iter().all(|&s| s > 0.0),
            "augment.std must be > 0, got {:?}",
            std
        );
        let [b, c, s, h] = cfg.jitter;
        let factor = |x: f64| (x > 0.0).then_some([(1.0 - x).max(0.0), 1.0 + x]);
        Ok(Self {
            out_size,
            channels,
            crop_scale: cfg.crop_scale,
            crop_ratio: cfg.crop_ratio,
            jitter: [
                factor(b),
                factor(c),
                factor(s),
                (h > 0.0).then_some([-h, h]),
            ],
            jitter_p: cfg.jitter_p,
            grayscale_p: cfg.grayscale_p,
            flip_p: cfg.flip_p,
            blur_p: cfg.blur_p,
            blur_sigma: cfg.blur_sigma,
            blur_kernel: blur_kernel_size(cfg.blur_kernel_frac, out_size),
            mean: mean.iter().map(|&v| v as f32).collect(),
            std: std.iter().map(|&v| v as f32).collect(),
        })
    }

    /// Side of the (square) output images.
    pub fn out_size(&self) -> usize {
        self.out_size
    }

    /// Channels of input and output images.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Values per output image (C·S·S).
    pub fn out_len(&self) -> usize {
        self.channels * self.out_size * self.out_size
    }

    /// Gaussian blur kernel side in pixels.
    pub fn blur_kernel(&self) -> usize {
        self.blur_kernel
    }

    /// One random view of `src` (CHW in [0, 1], `h×w`) written to `out` (C×S×S, normalised).
    ///
    /// # Panics
    /// If the buffer lengths do not match the shapes (a caller bug).
    pub fn apply<R: Rng + ?Sized>(
        &self,
        src: &[f32],
        h: usize,
        w: usize,
        rng: &mut R,
        out: &mut [f32],
    ) {
        let c = self.channels;
        let s = self.out_size;
        assert_eq!(src.len(), c * h * w, "augment: source is not C×H×W");
        assert_eq!(out.len(), c * s * s, "augment: output is not C×S×S");

        let crop = sample_crop(h, w, self.crop_scale, self.crop_ratio, rng);
        resize_crop(src, c, h, w, crop, s, out);

        if rng.random::<f64>() < self.flip_p {
            flip_horizontal(out, s);
        }

        if rng.random::<f64>() < self.jitter_p {
            // torchvision: a random permutation of the four ops, then the factors.
            let mut order = [0usize, 1, 2, 3];
            order.shuffle(rng);
            let mut factors = [0.0f32; 4];
            for (f, range) in factors.iter_mut().zip(&self.jitter) {
                if let Some([lo, hi]) = range {
                    *f = uniform(rng, *lo, *hi) as f32;
                }
            }
            for op in order {
                if self.jitter[op].is_none() {
                    continue;
                }
                let f = factors[op];
                match op {
                    0 => adjust_brightness(out, f),
                    1 => adjust_contrast(out, c, f),
                    2 if c == 3 => adjust_saturation(out, f),
                    3 if c == 3 => adjust_hue(out, f),
                    _ => {}
                }
            }
        }

        if rng.random::<f64>() < self.grayscale_p {
            to_grayscale(out, c);
        }

        if rng.random::<f64>() < self.blur_p {
            let sigma = uniform(rng, self.blur_sigma[0], self.blur_sigma[1]) as f32;
            gaussian_blur(out, c, s, s, &gaussian_kernel(self.blur_kernel, sigma));
        }

        self.clamp_and_normalise(out);
    }

    /// The evaluation transform: bilinear resize of the whole image to S×S (when its size
    /// differs), then normalisation. Deterministic.
    ///
    /// # Panics
    /// If the buffer lengths do not match the shapes (a caller bug).
    pub fn normalise_only(&self, src: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let c = self.channels;
        let s = self.out_size;
        assert_eq!(src.len(), c * h * w, "normalise_only: source is not C×H×W");
        assert_eq!(out.len(), c * s * s, "normalise_only: output is not C×S×S");
        resize_whole(src, c, h, w, s, out);
        self.clamp_and_normalise(out);
    }

    fn clamp_and_normalise(&self, img: &mut [f32]) {
        let plane = self.out_size * self.out_size;
        for (ch, values) in img.chunks_exact_mut(plane).enumerate() {
            let (m, sd) = (self.mean[ch], self.std[ch]);
            values
                .iter_mut()
                .for_each(|v| *v = (v.clamp(0.0, 1.0) - m) / sd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blur::reflect;
    use super::geometry::resample_coeffs;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn identity_cfg(channels: usize) -> AugmentConfig {
        AugmentConfig {
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.0, 1.0],
            jitter: [0.4, 0.4, 0.4, 0.1],
            jitter_p: 0.0,
            grayscale_p: 0.0,
            flip_p: 0.0,
            blur_p: 0.0,
            blur_sigma: [0.1, 2.0],
            blur_kernel_frac: 0.1,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    fn ramp(c: usize, h: usize, w: usize) -> Vec<f32> {
        (0..c * h * w)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn identity_config_returns_input() {
        let (h, w) = (7, 7);
        let aug = Augmenter::new(&identity_cfg(3), 7, 3).expect("valid");
        let src = ramp(3, h, w);
        let mut out = vec![0.0; 3 * 49];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..5 {
            aug.apply(&src, h, w, &mut rng, &mut out);
            assert_eq!(out, src);
        }
        aug.normalise_only(&src, h, w, &mut out);
        assert_eq!(out, src);
    }

    #[test]
    fn normalisation_and_resize() {
        let mut cfg = identity_cfg(1);
        cfg.mean = vec![0.5];
        cfg.std = vec![0.25];
        let aug = Augmenter::new(&cfg, 4, 1).expect("valid");
        // A constant 0.75 image of another size resizes to the constant, normalised to 1.
        let src = vec![0.75f32; 9];
        let mut out = vec![0.0; 16];
        aug.normalise_only(&src, 3, 3, &mut out);
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-5), "{out:?}");
        // 2× downscale of a 1-D ramp with PIL's widened triangle filter.
        let src: Vec<f32> = (0..64).map(|i| (i % 8) as f32 / 8.0).collect();
        let mut out = vec![0.0; 16];
        aug.normalise_only(&src, 8, 8, &mut out);
        // Output column 1 is centred between input columns 2 and 3; weights 1/8, 3/8, 3/8, 1/8
        // over columns 1..=4 holding 1/8, 2/8, 3/8, 4/8.
        let expected = (0.125 * 1.0 + 0.375 * 2.0 + 0.375 * 3.0 + 0.125 * 4.0) / 8.0;
        let expected = (expected - 0.5) / 0.25;
        assert!((out[1] - expected).abs() < 1e-5, "{} vs {expected}", out[1]);
    }

    #[test]
    fn upscale_matches_half_pixel_bilinear() {
        // 2 → 4 upscale of [0, 1]: centres at 0.25, 0.75, 1.25, 1.75 (−0.5 → source index space).
        let xs = resample_coeffs(2, 4);
        let src = [0.0f32, 1.0];
        let vals: Vec<f32> = xs
            .iter()
            .map(|(lo, w)| w.iter().zip(&src[*lo..]).map(|(a, b)| a * b).sum())
            .collect();
        assert_eq!(vals, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn flip_mirrors_known_pattern() {
        let mut cfg = identity_cfg(1);
        cfg.flip_p = 1.0;
        let aug = Augmenter::new(&cfg, 3, 1).expect("valid");
        let src = vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        let mut out = vec![0.0; 9];
        aug.apply(&src, 3, 3, &mut ChaCha8Rng::seed_from_u64(0), &mut out);
        assert_eq!(out, vec![0.3, 0.2, 0.1, 0.6, 0.5, 0.4, 0.9, 0.8, 0.7]);
    }

    #[test]
    fn grayscale_makes_channels_equal_to_luma() {
        let mut cfg = identity_cfg(3);
        cfg.grayscale_p = 1.0;
        let aug = Augmenter::new(&cfg, 2, 3).expect("valid");
        let src = vec![
            1.0, 0.0, 0.2, 0.4, // R
            0.0, 1.0, 0.6, 0.4, // G
            0.0, 0.0, 0.9, 0.4, // B
        ];
        let mut out = vec![0.0; 12];
        aug.apply(&src, 2, 2, &mut ChaCha8Rng::seed_from_u64(0), &mut out);
        for i in 0..4 {
            let luma = 0.299 * src[i] + 0.587 * src[4 + i] + 0.114 * src[8 + i];
            for c in 0..3 {
                assert!((out[c * 4 + i] - luma).abs() < 1e-6);
            }
        }
        assert!((out[0] - 0.299).abs() < 1e-6);
    }

    #[test]
    fn blur_of_constant_is_constant() {
        let mut cfg = identity_cfg(3);
        cfg.blur_p = 1.0;
        cfg.blur_kernel_frac = 0.5; // kernel 5 on 9 px
        let aug = Augmenter::new(&cfg, 9, 3).expect("valid");
        assert_eq!(aug.blur_kernel(), 5);
        let src = vec![0.37f32; 3 * 81];
        let mut out = vec![0.0; 3 * 81];
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..4 {
            aug.apply(&src, 9, 9, &mut rng, &mut out);
            assert!(out.iter().all(|&v| (v - 0.37).abs() < 1e-6));
        }
    }

    #[test]
    fn blur_spreads_an_impulse_symmetrically_with_reflect_padding() {
        let k = gaussian_kernel(3, 1.0);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((k[0] - k[2]).abs() < 1e-7 && k[1] > k[0]);
        // Impulse at the left edge of a 1×5 row: reflect gives the edge twice the side weight.
        let mut img = vec![1.0, 0.0, 0.0, 0.0, 0.0];
        gaussian_blur(&mut img, 1, 1, 5, &k);
        assert!((img[0] - k[1]).abs() < 1e-6 && (img[1] - k[0]).abs() < 1e-6);
        assert_eq!(img[2], 0.0);
        // Reflect indices without edge repetition, and wrap-around for tiny images.
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(-3, 2), 1);
        assert_eq!(reflect(7, 1), 0);
    }

    #[test]
    fn kernel_size_is_nearest_odd_at_least_three() {
        assert_eq!(blur_kernel_size(0.1, 32), 3);
        assert_eq!(blur_kernel_size(0.1, 96), 9);
        assert_eq!(blur_kernel_size(0.1, 224), 23);
        assert_eq!(blur_kernel_size(0.1, 8), 3);
        assert_eq!(blur_kernel_size(0.5, 14), 7);
    }

    #[test]
    fn brightness_contrast_saturation_math() {
        let mut px = vec![0.2, 0.5, 0.8];
        adjust_brightness(&mut px, 1.5);
        assert!((px[0] - 0.3).abs() < 1e-6 && (px[1] - 0.75).abs() < 1e-6 && px[2] == 1.0);

        // One RGB pixel: contrast blends with its own luma → factor 0 gives the luma.
        let mut img = vec![0.2, 0.5, 0.8];
        let luma = 0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.8;
        adjust_contrast(&mut img, 3, 0.0);
        assert!(img.iter().all(|&v| (v - luma).abs() < 1e-6));
        // Gray image, two pixels: contrast 2 doubles the distance to the mean 0.5.
        let mut gray = vec![0.4, 0.6];
        adjust_contrast(&mut gray, 1, 2.0);
        assert!((gray[0] - 0.3).abs() < 1e-6 && (gray[1] - 0.7).abs() < 1e-6);
        // Saturation 0 → grayscale; saturation 1 → unchanged.
        let mut img = vec![0.2, 0.5, 0.8];
        adjust_saturation(&mut img, 1.0);
        assert_eq!(img, vec![0.2, 0.5, 0.8]);
        adjust_saturation(&mut img, 0.0);
        assert!(img.iter().all(|&v| (v - luma).abs() < 1e-6));
    }

    #[test]
    fn hsv_roundtrip_and_zero_hue_shift() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..2000 {
            let (r, g, b) = (
                rng.random::<f32>(),
                rng.random::<f32>(),
                rng.random::<f32>(),
            );
            let (h, s, v) = rgb_to_hsv(r, g, b);
            assert!((0.0..1.0).contains(&h) && (0.0..=1.0).contains(&s));
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!(
                (r - r2).abs() < 1e-5 && (g - g2).abs() < 1e-5 && (b - b2).abs() < 1e-5,
                "({r}, {g}, {b}) → ({r2}, {g2}, {b2})"
            );
        }
        let src = ramp(3, 4, 4);
        let mut img = src.clone();
        adjust_hue(&mut img, 0.0);
        assert!(img.iter().zip(&src).all(|(a, b)| (a - b).abs() < 1e-5));
        // Known values: pure red; a third of a turn makes it green.
        assert_eq!(rgb_to_hsv(1.0, 0.0, 0.0), (0.0, 1.0, 1.0));
        let mut red = vec![1.0, 0.0, 0.0];
        adjust_hue(&mut red, 1.0 / 3.0);
        assert!(red[0].abs() < 1e-5 && (red[1] - 1.0).abs() < 1e-5 && red[2].abs() < 1e-5);
    }

    #[test]
    fn crop_area_and_ratio_within_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (h, w) = (64usize, 64usize);
        let (scale, ratio) = ([0.2, 1.0], [0.75, 4.0 / 3.0]);
        let mut fractions = Vec::new();
        for _ in 0..5000 {
            let b = sample_crop(h, w, scale, ratio, &mut rng);
            assert!(b.top + b.height <= h && b.left + b.width <= w);
            assert!(b.height > 0 && b.width > 0);
            let frac = (b.height * b.width) as f64 / (h * w) as f64;
            // Rounding of each side to whole pixels moves the area by < 1 px per side.
            let slack = (b.height + b.width + 1) as f64 / (h * w) as f64;
            assert!(
                frac >= scale[0] - slack && frac <= scale[1] + slack,
                "area fraction {frac}"
            );
            let r = b.width as f64 / b.height as f64;
            assert!(r > 0.75 * 0.9 && r < 4.0 / 3.0 * 1.1, "ratio {r}");
            fractions.push(frac);
        }
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        // Uniform in [0.2, 1] has mean 0.6; rejected large non-square draws pull it down a bit.
        assert!(mean > 0.5 && mean < 0.65, "mean area fraction {mean}");
        assert!(fractions.iter().any(|&f| f < 0.3) && fractions.iter().any(|&f| f > 0.9));
    }

    #[test]
    fn crop_falls_back_to_centre() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // A 4×20 image can never hold a square crop of half its area: fallback clamps the ratio.
        let b = sample_crop(4, 20, [0.5, 0.5], [1.0, 1.0], &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 0,
                left: 8,
                height: 4,
                width: 4
            }
        );
    }

    #[test]
    fn default_pipeline_is_deterministic_and_in_range() {
        let aug = Augmenter::new(&AugmentConfig::default(), 16, 3).expect("defaults are valid");
        let src = ramp(3, 20, 20);
        let mut a = vec![0.0; aug.out_len()];
        let mut b = vec![0.0; aug.out_len()];
        aug.apply(&src, 20, 20, &mut ChaCha8Rng::seed_from_u64(5), &mut a);
        aug.apply(&src, 20, 20, &mut ChaCha8Rng::seed_from_u64(5), &mut b);
        assert_eq!(a, b);
        aug.apply(&src, 20, 20, &mut ChaCha8Rng::seed_from_u64(6), &mut b);
        assert_ne!(a, b);
        // Normalised from [0, 1] with mean 0.5, std 0.25 → [−2, 2].
        assert!(a.iter().all(|&v| (-2.0..=2.0).contains(&v)));
        // One-channel pipeline runs too (saturation and hue skipped).
        let cfg = AugmentConfig {
            mean: vec![0.5],
            std: vec![0.25],
            ..AugmentConfig::default()
        };
        let aug1 = Augmenter::new(&cfg, 8, 1).expect("valid");
        let mut o = vec![0.0; 64];
        aug1.apply(
            &ramp(1, 10, 10),
            10,
            10,
            &mut ChaCha8Rng::seed_from_u64(1),
            &mut o,
        );
        assert!(o.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn validation_names_the_field() {
        fn bad(f: impl Fn(&mut AugmentConfig), channels: usize) -> String {
            let mut cfg = AugmentConfig::default();
            if channels == 1 {
                cfg.mean = vec![0.5];
                cfg.std = vec![0.25];
            }
            f(&mut cfg);
            Augmenter::new(&cfg, 16, channels)
                .expect_err("should be rejected")
                .to_string()
        }
        assert_eq!(
            bad(|c| c.jitter_p = 1.5, 3),
            "augment.jitter_p must be in [0, 1], got 1.5"
        );
        assert!(bad(|c| c.grayscale_p = -0.1, 3).contains("augment.grayscale_p"));
        assert!(bad(|c| c.flip_p = f64::NAN, 3).contains("augment.flip_p"));
        assert!(bad(|c| c.blur_p = 2.0, 3).contains("augment.blur_p"));
        assert!(bad(|c| c.crop_scale = [0.8, 0.2], 3).contains("augment.crop_scale"));
        assert!(bad(|c| c.crop_scale = [0.0, 1.0], 3).contains("augment.crop_scale"));
        assert!(bad(|c| c.crop_scale = [0.5, 1.5], 3).contains("augment.crop_scale"));
        assert!(bad(|c| c.crop_ratio = [1.5, 0.5], 3).contains("augment.crop_ratio"));
        assert!(bad(|c| c.blur_sigma = [0.0, 1.0], 3).contains("augment.blur_sigma"));
        assert!(bad(|c| c.blur_kernel_frac = 0.0, 3).contains("augment.blur_kernel_frac"));
        assert!(bad(|c| c.jitter[0] = -0.1, 3).contains("augment.jitter (brightness)"));
        assert!(bad(|c| c.jitter[3] = 0.6, 3).contains("augment.jitter (hue)"));
        assert!(bad(|c| c.std = vec![0.25, 0.0, 0.25], 3).contains("augment.std"));
        // Mean/std must match the channel count exactly, also for 1-channel images.
        assert!(bad(|c| c.mean = vec![0.5, 0.5], 3).contains("augment.mean"));
        assert!(bad(|c| c.mean = vec![0.5; 3], 1).contains("augment.mean"));
        assert!(bad(|c| c.std = vec![0.25; 3], 1).contains("augment.std"));
        assert!(Augmenter::new(&AugmentConfig::default(), 16, 4).is_err());
        assert!(Augmenter::new(&AugmentConfig::default(), 0, 3).is_err());
    }
}
