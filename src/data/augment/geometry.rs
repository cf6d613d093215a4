//! RandomResizedCrop (crop sampling and PIL-bilinear resizing) and the horizontal flip.

use rand::Rng;

use super::uniform;

/// A crop rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 attempts at a box of area fraction in
/// `scale` and aspect ratio (log-uniform) in `ratio` that fits; otherwise a centre crop with the
/// ratio clamped to `ratio`.
pub fn sample_crop<R: Rng + ?Sized>(
    height: usize,
    width: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut R,
) -> CropBox {
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale[0], scale[1]);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    // Fallback: centre crop.
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio[0] {
        let h = (width as f64 / ratio[0]).round() as usize;
        (h.clamp(1, height), width)
    } else if in_ratio > ratio[1] {
        let w = (height as f64 * ratio[1]).round() as usize;
        (height, w.clamp(1, width))
    } else {
        (height, width)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// Per-output-pixel source range and weights of PIL's bilinear resampling of `in_size` samples
/// to `out_size` (PIL `precompute_coeffs` with the triangle filter).
pub(super) fn resample_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..out_size)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5) as isize).max(0) as usize;
            let hi = ((centre + support + 0.5) as isize).clamp(0, in_size as isize) as usize;
            let mut weights: Vec<f64> = (lo..hi)
                .map(|i| {
                    let x = (i as f64 - centre + 0.5) / filterscale;
                    (1.0 - x.abs()).max(0.0)
                })
                .collect();
            let sum: f64 = weights.iter().sum();
            if sum != 0.0 {
                weights.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, weights.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Bilinear (PIL semantics) resize of the `crop` region of every plane of `src` (`h×w` planes)
/// to `out_size × out_size` planes in `out`.
pub fn resize_crop(
    src: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    crop: CropBox,
    out_size: usize,
    out: &mut [f32],
) {
    assert!(crop.top + crop.height <= h && crop.left + crop.width <= w);
    assert_eq!(out.len(), channels * out_size * out_size);
    let xs = resample_coeffs(crop.width, out_size);
    let ys = resample_coeffs(crop.height, out_size);
    let mut tmp = vec![0.0f32; crop.height * out_size];
    for c in 0..channels {
        let plane = &src[c * h * w..(c + 1) * h * w];
        for y in 0..crop.height {
            let row = &plane[(crop.top + y) * w + crop.left..][..crop.width];
            for (ox, (lo, wts)) in xs.iter().enumerate() {
                tmp[y * out_size + ox] = wts.iter().zip(&row[*lo..]).map(|(k, v)| k * v).sum();
            }
        }
        let dst = &mut out[c * out_size * out_size..(c + 1) * out_size * out_size];
        for (oy, (lo, wts)) in ys.iter().enumerate() {
            for ox in 0..out_size {
                dst[oy * out_size + ox] = wts
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * tmp[(lo + k) * out_size + ox])
                    .sum();
            }
        }
    }
}

/// Mirrors every row of every `h×w` plane.
pub fn flip_horizontal(img: &mut [f32], w: usize) {
    for row in img.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// The whole `h × w` image, resized to `size × size` (copied when it already is): what
/// evaluation and the image-folder loader do without augmentation.
pub fn resize_whole(src: &[f32], c: usize, h: usize, w: usize, size: usize, out: &mut [f32]) {
    if h == size && w == size {
        out.copy_from_slice(src);
    } else {
        let full = CropBox {
            top: 0,
            left: 0,
            height: h,
            width: w,
        };
        resize_crop(src, c, h, w, full, size, out);
    }
}
