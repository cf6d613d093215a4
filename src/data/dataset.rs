//! The image-source abstraction and an in-memory implementation.

use anyhow::{bail, ensure, Context, Result};

/// A finite, indexable set of images of one fixed size, optionally labelled.
///
/// `Send + Sync` so a loader thread can read it while the trainer holds it too.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Channels per image (1 or 3 for the pipelines in this crate).
    fn channels(&self) -> usize;
    /// Image height in pixels.
    fn height(&self) -> usize;
    /// Image width in pixels.
    fn width(&self) -> usize;
    /// Writes image `index` as CHW f32 in [0, 1] into `out` (len channels*height*width).
    fn read_image(&self, index: usize, out: &mut [f32]);
    /// Class of image `index`, if the set is labelled.
    fn label(&self, index: usize) -> Option<u32>;
    /// Number of classes, if the set is labelled.
    fn num_classes(&self) -> Option<usize>;
}

/// Images held as 8-bit pixels (N×C×H×W, row-major), a quarter of the memory of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct InMemoryDataset {
    channels: usize,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
    labels: Option<Vec<u32>>,
    num_classes: Option<usize>,
    class_names: Vec<String>,
}

impl InMemoryDataset {
    /// Checks that the parts fit together: `pixels` holds a whole number of C×H×W images,
    /// `labels` (if any) has one entry per image and each is `< num_classes`, and `class_names`
    /// is either empty or has `num_classes` entries.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        num_classes: Option<usize>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        ensure!(
            channels > 0 && height > 0 && width > 0,
            "dataset image shape must be positive, got {channels}×{height}×{width}"
        );
        let image_len = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .context("dataset image shape overflows usize")?;
        ensure!(
            pixels.len().is_multiple_of(image_len),
            "dataset pixel buffer of {} bytes is not a whole number of {channels}×{height}×{width} images",
            pixels.len()
        );
        let n = pixels.len() / image_len;
        if let Some(k) = num_classes {
            ensure!(k > 0, "dataset num_classes must be positive");
            ensure!(
                class_names.is_empty() || class_names.len() == k,
                "dataset has {} class names for {k} classes",
                class_names.len()
            );
        } else {
            ensure!(
                class_names.is_empty(),
                "dataset has class names but no num_classes"
            );
        }
        if let Some(labels) = &labels {
            ensure!(
                labels.len() == n,
                "dataset has {} labels for {n} images",
                labels.len()
            );
            let Some(k) = num_classes else {
                bail!("labelled dataset needs num_classes");
            };
            if let Some((i, &bad)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= k) {
                bail!("dataset label {bad} of image {i} is not < num_classes ({k})");
            }
        }
        Ok(Self {
            channels,
            height,
            width,
            pixels,
            labels,
            num_classes,
            class_names,
        })
    }

    /// Values per image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// All pixels, N×C×H×W.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The 8-bit pixels of image `index` (C×H×W).
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn image_u8(&self, index: usize) -> &[u8] {
        let len = self.image_len();
        assert!(
            index < self.len(),
            "image index {index} out of range (len {})",
            self.len()
        );
        &self.pixels[index * len..(index + 1) * len]
    }

    /// All labels, if labelled.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// Human-readable class names (empty when unknown).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.pixels.len() / self.image_len()
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn height(&self) -> usize {
        self.height
    }

    fn width(&self) -> usize {
        self.width
    }

    fn read_image(&self, index: usize, out: &mut [f32]) {
        let src = self.image_u8(index);
        assert_eq!(
            out.len(),
            src.len(),
            "read_image: output buffer must hold C·H·W values"
        );
        for (o, &p) in out.iter_mut().zip(src) {
            *o = f32::from(p) / 255.0;
        }
    }

    fn label(&self, index: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[index])
    }

    fn num_classes(&self) -> Option<usize> {
        self.num_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> InMemoryDataset {
        // Two 1×1×2 images.
        InMemoryDataset::new(
            1,
            1,
            2,
            vec![0, 255, 51, 102],
            Some(vec![1, 0]),
            Some(2),
            vec!["a".into(), "b".into()],
        )
        .expect("valid tiny dataset")
    }

    #[test]
    fn reads_images_as_unit_floats() {
        let d = tiny();
        assert_eq!(d.len(), 2);
        assert!(!d.is_empty());
        let mut out = [0.0f32; 2];
        d.read_image(1, &mut out);
        assert!((out[0] - 0.2).abs() < 1e-6 && (out[1] - 0.4).abs() < 1e-6);
        d.read_image(0, &mut out);
        assert_eq!(out, [0.0, 1.0]);
        assert_eq!(d.label(0), Some(1));
        assert_eq!(d.num_classes(), Some(2));
        assert_eq!(d.image_u8(1), &[51, 102]);
    }

    #[test]
    fn constructor_rejects_inconsistent_parts() {
        let err = |r: Result<InMemoryDataset>| r.expect_err("should fail").to_string();
        assert!(err(InMemoryDataset::new(
            1,
            2,
            2,
            vec![0; 5],
            None,
            None,
            vec![]
        ))
        .contains("whole number"));
        assert!(err(InMemoryDataset::new(
            1,
            1,
            1,
            vec![0; 2],
            Some(vec![0]),
            Some(2),
            vec![]
        ))
        .contains("1 labels for 2 images"));
        assert!(err(InMemoryDataset::new(
            1,
            1,
            1,
            vec![0; 2],
            Some(vec![0, 2]),
            Some(2),
            vec![]
        ))
        .contains("label 2 of image 1"));
        assert!(err(InMemoryDataset::new(
            1,
            1,
            1,
            vec![0],
            Some(vec![0]),
            None,
            vec![]
        ))
        .contains("num_classes"));
        assert!(err(InMemoryDataset::new(0, 1, 1, vec![], None, None, vec![])).contains("shape"));
        assert!(err(InMemoryDataset::new(
            1,
            1,
            1,
            vec![0],
            Some(vec![0]),
            Some(2),
            vec!["only one".into()]
        ))
        .contains("class names"));
    }
}
