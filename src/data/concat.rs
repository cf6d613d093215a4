//! Several data sets of one image shape read as one, in order (STL-10's labelled training
//! images followed by its unlabeled ones). Labels come from each part, so a part without
//! labels yields `None` for its images.

use std::sync::Arc;

use anyhow::{ensure, Result};

use super::Dataset;

/// The images of `parts`, one after the other.
pub struct ConcatDataset {
    parts: Vec<Arc<dyn Dataset>>,
    /// Index of the first image of each part, plus the total at the end.
    starts: Vec<usize>,
}

impl ConcatDataset {
    /// Checks that there is at least one part and that all parts share channels, height and
    /// width, and that labelled parts agree on the class count.
    pub fn new(parts: Vec<Arc<dyn Dataset>>) -> Result<Self> {
        ensure!(!parts.is_empty(), "a concatenation needs at least one part");
        let shape = |d: &Arc<dyn Dataset>| (d.channels(), d.height(), d.width());
        let first = shape(&parts[0]);
        for (i, p) in parts.iter().enumerate() {
            ensure!(
                shape(p) == first,
                "part {i} has images {:?}, part 0 {first:?}",
                shape(p)
            );
        }
        let classes: Vec<usize> = parts.iter().filter_map(|p| p.num_classes()).collect();
        ensure!(
            classes.windows(2).all(|w| w[0] == w[1]),
            "parts disagree on the number of classes: {classes:?}"
        );
        let mut starts = Vec::with_capacity(parts.len() + 1);
        let mut total = 0usize;
        for p in &parts {
            starts.push(total);
            total += p.len();
        }
        starts.push(total);
        Ok(Self { parts, starts })
    }

    /// The part holding image `index` and the index within it.
    fn locate(&self, index: usize) -> (&Arc<dyn Dataset>, usize) {
        assert!(
            index < self.len(),
            "image index {index} out of range (len {})",
            self.len()
        );
        // The last part whose start is ≤ index (empty parts are skipped by `partition_point`).
        let part = self.starts.partition_point(|&s| s <= index) - 1;
        (&self.parts[part], index - self.starts[part])
    }
}

impl Dataset for ConcatDataset {
    fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    fn channels(&self) -> usize {
        self.parts[0].channels()
    }

    fn height(&self) -> usize {
        self.parts[0].height()
    }

    fn width(&self) -> usize {
        self.parts[0].width()
    }

    fn read_image(&self, index: usize, out: &mut [f32]) {
        let (part, i) = self.locate(index);
        part.read_image(i, out);
    }

    fn label(&self, index: usize) -> Option<u32> {
        let (part, i) = self.locate(index);
        part.label(i)
    }

    fn num_classes(&self) -> Option<usize> {
        self.parts.iter().find_map(|p| p.num_classes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::InMemoryDataset;

    fn part(pixels: Vec<u8>, labels: Option<Vec<u32>>) -> Arc<dyn Dataset> {
        let k = labels.as_ref().map(|_| 3);
        Arc::new(InMemoryDataset::new(1, 1, 1, pixels, labels, k, vec![]).expect("valid"))
    }

    #[test]
    fn reads_parts_in_order_with_their_labels() {
        let d = ConcatDataset::new(vec![
            part(vec![10, 20], Some(vec![2, 1])),
            part(vec![], None),
            part(vec![30, 40, 50], None),
        ])
        .expect("same shape");
        assert_eq!(d.len(), 5);
        assert_eq!(d.num_classes(), Some(3));
        let mut out = [0f32];
        let got: Vec<(u8, Option<u32>)> = (0..5)
            .map(|i| {
                d.read_image(i, &mut out);
                ((out[0] * 255.0).round() as u8, d.label(i))
            })
            .collect();
        assert_eq!(
            got,
            [
                (10, Some(2)),
                (20, Some(1)),
                (30, None),
                (40, None),
                (50, None)
            ]
        );
    }

    #[test]
    fn rejects_mixed_shapes() {
        let other: Arc<dyn Dataset> =
            Arc::new(InMemoryDataset::new(1, 1, 2, vec![0, 0], None, None, vec![]).expect("ok"));
        let err = ConcatDataset::new(vec![part(vec![1], None), other])
            .err()
            .expect("mixed");
        assert!(err.to_string().contains("part 1"));
    }
}
