//! The embedded synthetic data set: ten shape classes under strong nuisance variation.
//!
//! Class is carried only by *shape*: colours (foreground and background), position, scale,
//! rotation (where it does not change the class), background texture and pixel noise are drawn
//! independently of the class. So a network must become invariant to the nuisances the
//! augmentations imitate before a linear probe can read the class, and an untrained network —
//! whose features mostly encode colour and texture — stays clearly worse than a trained one.
//!
//! Shapes are rendered from signed distance functions with a one-pixel linear edge ramp, which
//! anti-aliases them so they stay recognisable at 16–32 px.
//!
//! Everything is deterministic from [`DatasetConfig::seed`]: each split has its own seed, each
//! image its own seed derived from (split seed, index), so the pixels do not depend on how many
//! threads rendered them.

use std::f32::consts::{FRAC_PI_4, TAU};

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::augment::hsv_to_rgb;
use super::dataset::InMemoryDataset;
use super::seeds::mix_seeds;
use crate::config::DatasetConfig;

/// Number of classes of the synthetic data set.
pub const NUM_CLASSES: usize = 10;

/// Class names, indexed by label.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "disc",
    "ring",
    "square_outline",
    "triangle",
    "plus",
    "x_cross",
    "bar_pair",
    "bullseye",
    "crescent",
    "l_shape",
];

/// Which split to generate. The two use different seeds, so they hold different images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The self-supervised training images (`train_size` of them).
    Train,
    /// The labelled evaluation images (`eval_size` of them).
    Eval,
}

impl Split {
    /// Lower-case name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6e00_0001,
            Split::Eval => 0x6576_616c_0000_0002,
        }
    }
}

/// Stream tag for the label shuffle, so it never shares a seed with an image.
const LABEL_TAG: u64 = 0x6c61_6265_6c73;

/// The seed of one split, derived from the data-set seed.
pub fn split_seed(data_seed: u64, split: Split) -> u64 {
    mix_seeds(&[data_seed, split.tag()])
}

/// Generates one split of the synthetic data set (RGB, `cfg.image_size` square, 10 balanced
/// classes).
///
/// # Panics
/// If `cfg.image_size` is 0 (configuration validation rejects that); use [`try_generate`] to get
/// an error instead.
pub fn generate(cfg: &DatasetConfig, split: Split) -> InMemoryDataset {
    try_generate(cfg, split).expect("synthetic data set: image_size must be positive")
}

/// [`generate`], returning an error for an unusable configuration instead of panicking.
pub fn try_generate(cfg: &DatasetConfig, split: Split) -> Result<InMemoryDataset> {
    let size = cfg.image_size;
    ensure!(size > 0, "dataset.image_size must be positive, got {size}");
    let n = match split {
        Split::Train => cfg.train_size,
        Split::Eval => cfg.eval_size,
    };
    let seed = split_seed(cfg.seed, split);

    // Balanced labels (counts differ by at most one), in a seeded random order.
    let mut labels: Vec<u32> = (0..n).map(|i| (i % NUM_CLASSES) as u32).collect();
    labels.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seeds(&[
        seed, LABEL_TAG,
    ])));

    ensure!(
        cfg.objects >= 1,
        "dataset.objects must be ≥ 1, got {}",
        cfg.objects
    );
    let [lo, hi] = cfg.object_scale;
    ensure!(
        lo > 0.0 && lo <= hi && hi <= 0.5,
        "dataset.object_scale must be an ordered range within (0, 0.5], got [{lo}, {hi}]"
    );
    let style = Style {
        objects: cfg.objects,
        scale: [lo as f32, hi as f32],
    };
    let image_len = 3 * size * size;
    let mut pixels = vec![0u8; n * image_len];
    pixels
        .par_chunks_mut(image_len)
        .zip(labels.par_iter())
        .enumerate()
        .for_each(|(i, (out, &label))| {
            render_image(
                size,
                label as usize,
                &style,
                mix_seeds(&[seed, i as u64]),
                out,
            );
        });

    InMemoryDataset::new(
        3,
        size,
        size,
        pixels,
        Some(labels),
        Some(NUM_CLASSES),
        CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    )
}

/// ITU-R 601 luma.
fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// A muted colour: any hue, saturation ≤ 0.35, value in [0.2, 0.9]. Colour differences
/// between images stay within what the colour-jitter and grayscale augmentations produce, so
/// matching two views by colour alone does not work and shape has to be learnt.
fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    let h = rng.random::<f32>();
    let sat = uniform(rng, 0.0, 0.35);
    let v = uniform(rng, 0.2, 0.9);
    let (r, g, b) = hsv_to_rgb(h, sat, v);
    [r, g, b]
}

/// Background texture; none of them depends on the class.
enum Texture {
    Flat,
    /// Linear ramp along a random direction.
    Gradient {
        dir: [f32; 2],
    },
    /// Soft stripes of random orientation, period (pixels), phase and hardness.
    Stripes {
        dir: [f32; 2],
        freq: f32,
        phase: f32,
        hardness: f32,
    },
    /// Sum of three low-frequency plane waves (smooth blotches).
    Blotches {
        waves: [([f32; 2], f32); 3],
    },
}

impl Texture {
    fn sample(rng: &mut ChaCha8Rng, size: f32) -> Self {
        let unit = |rng: &mut ChaCha8Rng| {
            let a = uniform(rng, 0.0, TAU);
            [a.cos(), a.sin()]
        };
        match rng.random_range(0..4u32) {
            0 => Texture::Flat,
            1 => Texture::Gradient { dir: unit(rng) },
            2 => {
                let dir = unit(rng);
                let period = uniform(rng, 3.0, (size / 2.5).max(3.5));
                Texture::Stripes {
                    dir,
                    freq: TAU / period,
                    phase: uniform(rng, 0.0, TAU),
                    hardness: uniform(rng, 0.5, 2.5),
                }
            }
            _ => {
                let mut waves = [([0.0; 2], 0.0); 3];
                for w in &mut waves {
                    let d = unit(rng);
                    // 0.5–2.5 cycles per image side.
                    let f = uniform(rng, 0.5, 2.5) * TAU / size;
                    *w = ([d[0] * f, d[1] * f], uniform(rng, 0.0, TAU));
                }
                Texture::Blotches { waves }
            }
        }
    }

    /// Blend weight in [0, 1] between the two background colours at pixel centre (x, y),
    /// measured from the image centre.
    fn weight(&self, x: f32, y: f32, size: f32) -> f32 {
        match self {
            Texture::Flat => 0.0,
            Texture::Gradient { dir } => (0.5 + (x * dir[0] + y * dir[1]) / size).clamp(0.0, 1.0),
            Texture::Stripes {
                dir,
                freq,
                phase,
                hardness,
            } => {
                let s = ((x * dir[0] + y * dir[1]) * freq + phase).sin();
                (0.5 + 0.5 * hardness * s).clamp(0.0, 1.0)
            }
            Texture::Blotches { waves } => {
                let s: f32 = waves
                    .iter()
                    .map(|(k, ph)| (x * k[0] + y * k[1] + ph).sin())
                    .sum();
                (0.5 + s / 6.0).clamp(0.0, 1.0)
            }
        }
    }
}

/// A foreground colour that stays visible against both background colours, also after the
/// grayscale augmentation (so the luma must differ, not only the hue).
fn foreground_colour(rng: &mut ChaCha8Rng, bg_a: [f32; 3], bg_b: [f32; 3]) -> [f32; 3] {
    let (la, lb) = (luma(bg_a), luma(bg_b));
    for _ in 0..64 {
        let c = random_colour(rng);
        let l = luma(c);
        if (l - la).abs().min((l - lb).abs()) >= 0.2 {
            return c;
        }
    }
    // Rare fallback: a random colour pushed to the luma extreme away from the background.
    let c = random_colour(rng);
    if (la + lb) * 0.5 > 0.5 {
        c.map(|v| 0.15 * v)
    } else {
        c.map(|v| 0.85 + 0.15 * v)
    }
}

/// Rotation of the shape: free where the class does not depend on it; limited for the classes
/// defined by orientation (a plus turned 45° would be an X).
fn rotation(rng: &mut ChaCha8Rng, class: usize) -> f32 {
    let jitter = 15f32.to_radians();
    match class {
        4 | 6 => uniform(rng, -jitter, jitter),
        5 => FRAC_PI_4 + uniform(rng, -jitter, jitter),
        _ => uniform(rng, 0.0, TAU),
    }
}

fn length(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

/// Signed distance to an axis-aligned box of half-extents (bx, by) centred at the origin.
fn sd_box(x: f32, y: f32, bx: f32, by: f32) -> f32 {
    let qx = x.abs() - bx;
    let qy = y.abs() - by;
    length(qx.max(0.0), qy.max(0.0)) + qx.max(qy).min(0.0)
}

/// Signed distance to an equilateral triangle of half-side `r`, centroid at the origin
/// (Inigo Quilez's formula).
fn sd_triangle(x: f32, y: f32, r: f32) -> f32 {
    let k = 3f32.sqrt();
    let mut px = x.abs() - r;
    let mut py = y + r / k;
    if px + k * py > 0.0 {
        let (nx, ny) = ((px - k * py) * 0.5, (-k * px - py) * 0.5);
        px = nx;
        py = ny;
    }
    px -= px.clamp(-2.0 * r, 0.0);
    -length(px, py) * py.signum()
}

/// Signed distance of class `class`'s shape, in shape units (the shape fits a disc of radius ~1).
fn shape_sdf(class: usize, x: f32, y: f32) -> f32 {
    match class {
        // disc
        0 => length(x, y) - 0.8,
        // ring
        1 => (length(x, y) - 0.7).abs() - 0.2,
        // square outline
        2 => sd_box(x, y, 0.6, 0.6).abs() - 0.15,
        // filled triangle (circumradius ≈ 0.98)
        3 => sd_triangle(x, y, 0.85),
        // plus (and the X, which is a plus rotated by ~45°)
        4 | 5 => sd_box(x, y, 0.9, 0.2).min(sd_box(x, y, 0.2, 0.9)),
        // two parallel horizontal bars
        6 => sd_box(x, y.abs() - 0.48, 0.9, 0.2),
        // bullseye: centre dot inside a ring
        7 => (length(x, y) - 0.27).min((length(x, y) - 0.78).abs() - 0.16),
        // crescent: a disc minus an offset disc
        8 => (length(x, y) - 0.85).max(-(length(x - 0.4, y) - 0.7)),
        // L: a vertical bar and a foot
        9 => sd_box(x + 0.4, y, 0.22, 0.85).min(sd_box(x, y - 0.63, 0.62, 0.22)),
        _ => unreachable!("class {class} out of range"),
    }
}

/// How the shapes of an image are drawn.
struct Style {
    objects: usize,
    /// Radius range as a fraction of the side.
    scale: [f32; 2],
}

/// One copy of the class's shape: centre, radius (pixels), rotation.
struct Placement {
    cx: f32,
    cy: f32,
    radius: f32,
    sin_t: f32,
    cos_t: f32,
}

/// Renders one RGB image (CHW, 8-bit) of class `class` from its own seed.
fn render_image(size: usize, class: usize, style: &Style, seed: u64, out: &mut [u8]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = size as f32;

    // Background: two colours blended by a random texture.
    let bg_a = random_colour(&mut rng);
    let bg_b = bg_a.map(|v| (v + uniform(&mut rng, -0.12, 0.12)).clamp(0.0, 1.0));
    let texture = Texture::sample(&mut rng, s);

    // Foreground: one colour, gentle linear shading across the image, copies of the shape.
    let fg = foreground_colour(&mut rng, bg_a, bg_b);
    let shade_angle = uniform(&mut rng, 0.0, TAU);
    let shade = uniform(&mut rng, 0.0, 0.3);
    let (shade_x, shade_y) = (shade * shade_angle.cos(), shade * shade_angle.sin());
    let copies: Vec<Placement> = (0..style.objects)
        .map(|_| {
            let radius = s * uniform(&mut rng, style.scale[0], style.scale[1]);
            let margin = 0.85 * radius;
            let cx = uniform(&mut rng, margin, (s - margin).max(margin));
            let cy = uniform(&mut rng, margin, (s - margin).max(margin));
            let (sin_t, cos_t) = rotation(&mut rng, class).sin_cos();
            Placement {
                cx,
                cy,
                radius,
                sin_t,
                cos_t,
            }
        })
        .collect();
    let noise = uniform(&mut rng, 0.0, 0.06);

    let plane = size * size;
    let centre = s * 0.5;
    for y in 0..size {
        let py = y as f32 + 0.5;
        for x in 0..size {
            let px = x as f32 + 0.5;
            let t = texture.weight(px - centre, py - centre, s);
            // Distance (pixels) to the union of the copies: into each copy's frame
            // (translate, rotate by −θ, scale to shape units), evaluate, scale back.
            let d_px = copies
                .iter()
                .map(|c| {
                    let (dx, dy) = ((px - c.cx) / c.radius, (py - c.cy) / c.radius);
                    let u = c.cos_t * dx + c.sin_t * dy;
                    let v = -c.sin_t * dx + c.cos_t * dy;
                    shape_sdf(class, u, v) * c.radius
                })
                .fold(f32::INFINITY, f32::min);
            let alpha = (0.5 - d_px).clamp(0.0, 1.0);
            let shading = 1.0 + (shade_x * (px - centre) + shade_y * (py - centre)) / (0.3 * s);
            for c in 0..3 {
                let bg = bg_a[c] + (bg_b[c] - bg_a[c]) * t;
                let fgc = fg[c] * shading;
                let e: f32 = rng.sample(StandardNormal);
                let value = bg + (fgc - bg) * alpha + noise * e;
                out[c * plane + y * size + x] = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    fn config(size: usize, train: usize, eval: usize, seed: u64) -> DatasetConfig {
        DatasetConfig {
            image_size: size,
            train_size: train,
            eval_size: eval,
            seed,
            ..DatasetConfig::default()
        }
    }

    #[test]
    fn deterministic_from_seed() {
        let a = generate(&config(16, 40, 20, 3), Split::Train);
        let b = generate(&config(16, 40, 20, 3), Split::Train);
        assert_eq!(a, b);
        let c = generate(&config(16, 40, 20, 4), Split::Train);
        assert_ne!(a.pixels(), c.pixels());
    }

    #[test]
    fn independent_of_thread_count() {
        let c = config(16, 30, 10, 9);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("thread pool");
        let single = pool.install(|| generate(&c, Split::Eval));
        assert_eq!(single, generate(&c, Split::Eval));
    }

    #[test]
    fn splits_differ() {
        let c = config(16, 20, 20, 0);
        let train = generate(&c, Split::Train);
        let eval = generate(&c, Split::Eval);
        assert_eq!(train.len(), 20);
        assert_eq!(eval.len(), 20);
        for i in 0..20 {
            assert_ne!(train.image_u8(i), eval.image_u8(i), "image {i} repeated");
        }
    }

    #[test]
    fn shape_sizes_and_labels() {
        let d = generate(&config(12, 53, 7, 1), Split::Train);
        assert_eq!((d.channels(), d.height(), d.width()), (3, 12, 12));
        assert_eq!(d.len(), 53);
        assert_eq!(d.num_classes(), Some(10));
        assert_eq!(d.class_names().len(), 10);
        let mut counts = [0usize; NUM_CLASSES];
        for i in 0..d.len() {
            let l = d.label(i).expect("labelled") as usize;
            assert!(l < NUM_CLASSES);
            counts[l] += 1;
        }
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        assert_eq!((lo, hi), (Some(&5), Some(&6)), "unbalanced: {counts:?}");
        // Labels are shuffled, not round-robin.
        let labels = d.labels().expect("labelled");
        assert!(labels
            .iter()
            .enumerate()
            .any(|(i, &l)| l as usize != i % 10));
    }

    #[test]
    fn pixels_in_unit_range_and_use_the_range() {
        let d = generate(&config(16, 50, 5, 2), Split::Train);
        let mut img = vec![0.0f32; 3 * 16 * 16];
        let (mut lo, mut hi) = (f32::MAX, f32::MIN);
        for i in 0..d.len() {
            d.read_image(i, &mut img);
            for &v in &img {
                assert!((0.0..=1.0).contains(&v));
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        assert!(lo < 0.1 && hi > 0.9, "dynamic range too small: {lo}..{hi}");
    }

    #[test]
    fn same_class_images_are_not_identical() {
        let d = generate(&config(16, 100, 5, 5), Split::Train);
        let labels = d.labels().expect("labelled");
        for class in 0..NUM_CLASSES as u32 {
            let ids: Vec<usize> = (0..d.len()).filter(|&i| labels[i] == class).collect();
            assert!(ids.len() >= 2);
            assert_ne!(d.image_u8(ids[0]), d.image_u8(ids[1]), "class {class}");
        }
    }

    /// Render the bare shapes (no nuisance) and check every pair of classes differs in many
    /// pixels at 16 px, so the classes are distinct at the smallest supported size.
    #[test]
    fn classes_are_structurally_distinct_at_16px() {
        let size = 16usize;
        let masks: Vec<Vec<f32>> = (0..NUM_CLASSES)
            .map(|class| {
                let theta = match class {
                    5 => FRAC_PI_4,
                    _ => 0.0,
                };
                let (sin_t, cos_t) = f32::sin_cos(theta);
                let radius = 0.3 * size as f32;
                let c = size as f32 * 0.5;
                (0..size * size)
                    .map(|p| {
                        let dx = ((p % size) as f32 + 0.5 - c) / radius;
                        let dy = ((p / size) as f32 + 0.5 - c) / radius;
                        let u = cos_t * dx + sin_t * dy;
                        let v = -sin_t * dx + cos_t * dy;
                        (0.5 - shape_sdf(class, u, v) * radius).clamp(0.0, 1.0)
                    })
                    .collect()
            })
            .collect();
        for a in 0..NUM_CLASSES {
            let area: f32 = masks[a].iter().sum();
            assert!(area > 10.0, "{} covers only {area} px", CLASS_NAMES[a]);
            for b in a + 1..NUM_CLASSES {
                let diff: f32 = masks[a]
                    .iter()
                    .zip(&masks[b])
                    .map(|(x, y)| (x - y).abs())
                    .sum();
                assert!(
                    diff > 8.0,
                    "{} vs {} differ in only {diff} px",
                    CLASS_NAMES[a],
                    CLASS_NAMES[b]
                );
            }
        }
    }

    #[test]
    fn zero_size_is_an_error() {
        let e = try_generate(&config(0, 1, 1, 0), Split::Train).expect_err("size 0");
        assert!(e.to_string().contains("dataset.image_size"));
        // Empty splits are fine.
        assert!(generate(&config(8, 0, 0, 0), Split::Eval).is_empty());
    }
}
