//! ColorJitter's four operations and RandomGrayscale, on planar CHW f32 pixels.

/// ITU-R 601 luma weights (torchvision's `rgb_to_grayscale`).
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Grayscale of pixel `i` of a planar image (the image itself for one channel).
fn gray_at(img: &[f32], plane: usize, i: usize, channels: usize) -> f32 {
    if channels == 3 {
        LUMA[0] * img[i] + LUMA[1] * img[plane + i] + LUMA[2] * img[2 * plane + i]
    } else {
        img[i]
    }
}

/// torchvision `adjust_brightness`: `clamp(x · factor)`.
pub fn adjust_brightness(img: &mut [f32], factor: f32) {
    img.iter_mut()
        .for_each(|v| *v = (*v * factor).clamp(0.0, 1.0));
}

/// torchvision `adjust_contrast`: blend with the mean of the grayscale image.
pub fn adjust_contrast(img: &mut [f32], channels: usize, factor: f32) {
    let plane = img.len() / channels;
    if plane == 0 {
        return;
    }
    let mean = (0..plane)
        .map(|i| gray_at(img, plane, i, channels) as f64)
        .sum::<f64>() as f32
        / plane as f32;
    img.iter_mut()
        .for_each(|v| *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0));
}

/// torchvision `adjust_saturation` (RGB only): blend each pixel with its grayscale value.
pub fn adjust_saturation(img: &mut [f32], factor: f32) {
    let plane = img.len() / 3;
    for i in 0..plane {
        let g = gray_at(img, plane, i, 3);
        for c in 0..3 {
            let v = &mut img[c * plane + i];
            *v = (factor * *v + (1.0 - factor) * g).clamp(0.0, 1.0);
        }
    }
}

/// torchvision `_rgb2hsv`: hue in [0, 1), saturation, value.
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    let eq = maxc == minc;
    let s = cr / if eq { 1.0 } else { maxc };
    let div = if eq { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0).rem_euclid(1.0), s, maxc)
}

/// torchvision `_hsv2rgb`.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let i = (i as i64).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// torchvision `adjust_hue` (RGB only): rotate the hue by `shift` (in turns, |shift| ≤ 0.5).
pub fn adjust_hue(img: &mut [f32], shift: f32) {
    let plane = img.len() / 3;
    for i in 0..plane {
        let (h, s, v) = rgb_to_hsv(img[i], img[plane + i], img[2 * plane + i]);
        let (r, g, b) = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
        img[i] = r;
        img[plane + i] = g;
        img[2 * plane + i] = b;
    }
}

/// Replaces every channel by the ITU-R 601 luma (no-op on one channel).
pub fn to_grayscale(img: &mut [f32], channels: usize) {
    if channels != 3 {
        return;
    }
    let plane = img.len() / 3;
    for i in 0..plane {
        let g = gray_at(img, plane, i, 3);
        for c in 0..3 {
            img[c * plane + i] = g;
        }
    }
}
