//! Gaussian blur with reflect padding (torchvision's `GaussianBlur`).

/// Kernel side for the Gaussian blur: the odd number ≥ 3 nearest to `frac · size`.
pub fn blur_kernel_size(frac: f64, size: usize) -> usize {
    let x = frac * size as f64;
    let k = 2.0 * ((x - 1.0) / 2.0).round() + 1.0;
    if k.is_finite() && k > 3.0 {
        k as usize
    } else {
        3
    }
}

/// torchvision's 1-D Gaussian kernel: samples at integer offsets, normalised to sum 1.
pub fn gaussian_kernel(size: usize, sigma: f32) -> Vec<f32> {
    let half = (size as f32 - 1.0) * 0.5;
    let mut k: Vec<f32> = (0..size)
        .map(|i| {
            let x = (i as f32 - half) / sigma;
            (-0.5 * x * x).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Index into `0..n` with reflect padding (edge pixel not repeated, like torch's `reflect`);
/// wraps around for offsets beyond one image width.
pub(super) fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let i = i.rem_euclid(period);
    let n = n as isize;
    (if i >= n { period - i } else { i }) as usize
}

/// Separable Gaussian blur of each `h×w` plane of `img` with reflect padding.
pub fn gaussian_blur(img: &mut [f32], channels: usize, h: usize, w: usize, kernel: &[f32]) {
    let half = (kernel.len() / 2) as isize;
    let mut tmp = vec![0.0f32; h * w];
    let cols: Vec<Vec<usize>> = (0..w)
        .map(|x| {
            (0..kernel.len())
                .map(|k| reflect(x as isize + k as isize - half, w))
                .collect()
        })
        .collect();
    let rows: Vec<Vec<usize>> = (0..h)
        .map(|y| {
            (0..kernel.len())
                .map(|k| reflect(y as isize + k as isize - half, h))
                .collect()
        })
        .collect();
    for plane in img.chunks_exact_mut(h * w).take(channels) {
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            for (x, idx) in cols.iter().enumerate() {
                tmp[y * w + x] = idx.iter().zip(kernel).map(|(&i, &k)| row[i] * k).sum();
            }
        }
        for (y, idx) in rows.iter().enumerate() {
            for x in 0..w {
                plane[y * w + x] = idx
                    .iter()
                    .zip(kernel)
                    .map(|(&i, &k)| tmp[i * w + x] * k)
                    .sum();
            }
        }
    }
}
