//! Some of a data set's images, in a given order: what `dataset.limit_train` /
//! `limit_eval` leave of a split (see [`super::split`]).

use std::sync::Arc;

use super::Dataset;

/// Image `i` of the subset is image `indices[i]` of `inner`.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// # Panics
    /// If an index is out of range of `inner`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Self {
        let n = inner.len();
        assert!(
            indices.iter().all(|&i| i < n),
            "subset index out of range (len {n})"
        );
        Self { inner, indices }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn channels(&self) -> usize {
        self.inner.channels()
    }

    fn height(&self) -> usize {
        self.inner.height()
    }

    fn width(&self) -> usize {
        self.inner.width()
    }

    fn read_image(&self, index: usize, out: &mut [f32]) {
        self.inner.read_image(self.indices[index], out)
    }

    fn label(&self, index: usize) -> Option<u32> {
        self.inner.label(self.indices[index])
    }

    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }
}

/// The labels of every image of `ds` (`None` where unlabelled).
pub fn labels_of(ds: &dyn Dataset) -> Vec<Option<u32>> {
    (0..ds.len()).map(|i| ds.label(i)).collect()
}
