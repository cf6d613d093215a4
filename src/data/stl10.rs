//! STL-10 binary: `train_X.bin`, `train_y.bin`, `test_X.bin`, `test_y.bin`, `unlabeled_X.bin`.
//!
//! Images are 3×96×96 u8 records of 27 648 bytes, each channel plane stored column-major (as
//! MATLAB wrote it): pixel (row r, column c) of channel k is byte `k·9216 + c·96 + r` of its
//! record. Labels are one byte each, 1..=10, turned into 0..=9.
//!
//! The image files are memory-mapped and each image is transposed to CHW only when read —
//! `unlabeled_X.bin` is 2.8 GB and must never be read whole; mapping the labelled files too
//! keeps start-up instant and memory to what the page cache holds. Self-supervised training
//! reads train + unlabeled (the unlabeled images have no label), evaluation reads test. The
//! files may sit in `dataset.path` or in `stl10_binary/` below it (as the archive unpacks).

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::concat::ConcatDataset;
use super::files::{file_error, find_file, limited, open_sized, read_exact_vec};
use super::Dataset;
use crate::config::InputError;

/// Image side in pixels.
pub const SIDE: usize = 96;
/// Bytes of one channel plane.
pub const PLANE: usize = SIDE * SIDE;
/// Bytes of one 3×96×96 record.
pub const IMAGE_BYTES: usize = 3 * PLANE;
/// Class names, in label order (label byte 1 is `airplane`).
pub const CLASS_NAMES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];
const NAME: &str = "stl10";
pub const SUBDIR: &str = "stl10_binary";

/// The bytes of an image file: mapped from disk, or owned (tests).
pub enum Bytes {
    Mapped(Mmap),
    #[cfg(test)]
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            #[cfg(test)]
            Bytes::Owned(v) => v,
        }
    }
}

/// Checks a label file's bytes (each 1..=10) and returns them as classes 0..=9.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u32>, InputError> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (1..=10).contains(&b) {
                Ok(u32::from(b) - 1)
            } else {
                Err(file_error(
                    path,
                    format!("label {b} of image {i} is out of range 1..=10"),
                ))
            }
        })
        .collect()
}

/// Writes one column-major record as CHW f32 in [0, 1].
///
/// # Panics
/// If `record` is not [`IMAGE_BYTES`] long or `out` is not as long (a caller bug).
pub fn decode_image(record: &[u8], out: &mut [f32]) {
    assert_eq!(record.len(), IMAGE_BYTES, "STL-10 record must be 3×96×96");
    assert_eq!(
        out.len(),
        IMAGE_BYTES,
        "read_image: output buffer must hold C·H·W values"
    );
    for (src, dst) in record.chunks_exact(PLANE).zip(out.chunks_exact_mut(PLANE)) {
        for (c, column) in src.chunks_exact(SIDE).enumerate() {
            for (r, &v) in column.iter().enumerate() {
                dst[r * SIDE + c] = f32::from(v) / 255.0;
            }
        }
    }
}

/// The images of one `*_X.bin` file (the first `count` of them), with labels when the split
/// has them.
pub struct StlImages {
    bytes: Bytes,
    count: usize,
    labels: Option<Vec<u32>>,
}

impl StlImages {
    /// Checks that `bytes` is a whole, non-empty number of records and that `labels` (if any)
    /// has one entry per record; keeps the first `limit` images. `path` names the image file,
    /// `labels.1` the label file, in errors.
    pub fn new(
        bytes: Bytes,
        labels: Option<(Vec<u32>, &Path)>,
        limit: Option<usize>,
        path: &Path,
    ) -> Result<Self, InputError> {
        check_image_len(bytes.len() as u64, path)?;
        let n = bytes.len() / IMAGE_BYTES;
        let count = limited(n, limit);
        let labels = match labels {
            Some((mut l, labels_path)) => {
                if l.len() != n {
                    return Err(file_error(
                        labels_path,
                        format!(
                            "holds {} labels but {} holds {n} images",
                            l.len(),
                            path.display()
                        ),
                    ));
                }
                l.truncate(count);
                Some(l)
            }
            None => None,
        };
        Ok(Self {
            bytes,
            count,
            labels,
        })
    }

    /// Memory-maps the image file at `path` after checking its size.
    pub fn map(
        path: &Path,
        labels: Option<(Vec<u32>, &Path)>,
        limit: Option<usize>,
    ) -> Result<Self, InputError> {
        let (file, len) = open_sized(path, NAME)?;
        check_image_len(len, path)?;
        // SAFETY: the map is read-only and only ever read as bytes. If another process
        // truncated the file while we run, reads past the new end would fault (SIGBUS); data
        // sets are not rewritten under a run, and reading 2.8 GB into memory is not an option.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| file_error(path, format!("cannot memory-map: {e}")))?;
        Self::new(Bytes::Mapped(map), labels, limit, path)
    }
}

fn check_image_len(len: u64, path: &Path) -> Result<(), InputError> {
    if len == 0 {
        return Err(file_error(path, "empty file"));
    }
    if !len.is_multiple_of(IMAGE_BYTES as u64) {
        return Err(file_error(
            path,
            format!("truncated record: {len} bytes is not a whole number of {IMAGE_BYTES}-byte 3×96×96 images"),
        ));
    }
    Ok(())
}

impl Dataset for StlImages {
    fn len(&self) -> usize {
        self.count
    }

    fn channels(&self) -> usize {
        3
    }

    fn height(&self) -> usize {
        SIDE
    }

    fn width(&self) -> usize {
        SIDE
    }

    fn read_image(&self, index: usize, out: &mut [f32]) {
        assert!(
            index < self.count,
            "image index {index} out of range (len {})",
            self.count
        );
        decode_image(&self.bytes[index * IMAGE_BYTES..][..IMAGE_BYTES], out);
    }

    fn label(&self, index: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[index])
    }

    fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| CLASS_NAMES.len())
    }
}

/// Reads and checks a label file (its size first: one byte an image, at most `max_images`).
fn read_labels(path: &Path, max_images: u64) -> Result<Vec<u32>, InputError> {
    let (mut file, len) = open_sized(path, NAME)?;
    if len > max_images {
        return Err(file_error(
            path,
            format!("holds {len} labels, more than the {max_images} images of its image file"),
        ));
    }
    let bytes = read_exact_vec(&mut file, len as usize, path)?;
    parse_labels(&bytes, path)
}

/// One labelled split (`train` or `test`).
pub fn labelled(dir: &Path, split: &str, limit: Option<usize>) -> Result<StlImages, InputError> {
    let x = find_file(dir, &[SUBDIR], &[&format!("{split}_X.bin")], NAME)?;
    let y = find_file(dir, &[SUBDIR], &[&format!("{split}_y.bin")], NAME)?;
    let (_, x_len) = open_sized(&x, NAME)?;
    check_image_len(x_len, &x)?;
    let labels = read_labels(&y, x_len / IMAGE_BYTES as u64)?;
    StlImages::map(&x, Some((labels, &y)), limit)
}

/// The training and the evaluation split.
pub type Splits = (Arc<dyn Dataset>, Arc<dyn Dataset>);

/// Training (train, then unlabeled; both memory-mapped) and evaluation (test).
pub fn open(dir: &Path) -> Result<Splits, InputError> {
    let train = labelled(dir, "train", None)?;
    let path = find_file(dir, &[SUBDIR], &["unlabeled_X.bin"], NAME)?;
    let parts: Vec<Arc<dyn Dataset>> = vec![
        Arc::new(train),
        Arc::new(StlImages::map(&path, None, None)?),
    ];
    let train = ConcatDataset::new(parts)
        .map_err(|e| file_error(dir, format!("cannot combine train and unlabeled: {e}")))?;
    let test = labelled(dir, "test", None)?;
    Ok((Arc::new(train), Arc::new(test)))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::data::alloc_probe::largest_allocation;

    /// The known pattern: value of (image, channel, row, col).
    fn f(i: usize, k: usize, r: usize, c: usize) -> u8 {
        ((i * 53 + k * 101 + r * 3 + c * 5) % 256) as u8
    }

    /// Images in STL-10's on-disk order: per channel, column by column.
    fn images(first: usize, n: usize) -> Vec<u8> {
        let mut b = Vec::with_capacity(n * IMAGE_BYTES);
        for i in first..first + n {
            for k in 0..3 {
                for c in 0..SIDE {
                    for r in 0..SIDE {
                        b.push(f(i, k, r, c));
                    }
                }
            }
        }
        b
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |name: &str, b: &[u8]| std::fs::write(dir.path().join(name), b).expect("w");
        w("train_X.bin", &images(0, 3));
        w("train_y.bin", &[1, 10, 4]);
        w("test_X.bin", &images(10, 2));
        w("test_y.bin", &[2, 3]);
        w("unlabeled_X.bin", &images(20, 4));
        dir
    }

    fn u8_image(d: &dyn Dataset, i: usize) -> Vec<u8> {
        let mut out = vec![0f32; IMAGE_BYTES];
        d.read_image(i, &mut out);
        out.iter().map(|v| (v * 255.0).round() as u8).collect()
    }

    #[test]
    fn column_major_records_come_out_row_major_chw() {
        let dir = fixture();
        let (train, test) = open(dir.path()).expect("loads");
        assert_eq!((train.len(), test.len()), (7, 2));
        assert_eq!(
            (train.channels(), train.height(), train.width()),
            (3, 96, 96)
        );
        for (d, i, id) in [
            (&train, 0, 0),
            (&train, 2, 2),
            (&train, 3, 20),
            (&train, 6, 23),
            (&test, 1, 11),
        ] {
            let img = u8_image(d.as_ref(), i);
            for k in 0..3 {
                for r in [0, 1, 50, 95] {
                    for c in [0, 2, 77, 95] {
                        assert_eq!(
                            img[k * PLANE + r * SIDE + c],
                            f(id, k, r, c),
                            "{i} {k} {r} {c}"
                        );
                    }
                }
            }
        }
        let labels: Vec<Option<u32>> = (0..7).map(|i| train.label(i)).collect();
        assert_eq!(labels, [Some(0), Some(9), Some(3), None, None, None, None]);
        assert_eq!((test.label(0), test.label(1)), (Some(1), Some(2)));
        assert_eq!(train.num_classes(), Some(10));
    }

    #[test]
    fn a_read_limit_takes_the_first_records() {
        let dir = fixture();
        let train = labelled(dir.path(), "train", Some(2)).expect("loads");
        assert_eq!(train.len(), 2);
        assert_eq!(u8_image(&train, 1)[7], f(1, 0, 0, 7));
    }

    #[test]
    fn bad_files_are_input_errors_naming_the_file() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "train_X.bin",
                images(0, 3)[..IMAGE_BYTES * 2 + 5].to_vec(),
                "truncated record",
            ),
            ("unlabeled_X.bin", vec![], "empty file"),
            (
                "train_y.bin",
                vec![1, 0, 2],
                "label 0 of image 1 is out of range",
            ),
            ("test_y.bin", vec![11, 1], "label 11 of image 0"),
            ("test_y.bin", vec![1], "holds 1 labels but"),
            (
                "test_y.bin",
                vec![1, 1, 1],
                "holds 3 labels, more than the 2 images",
            ),
        ];
        for (name, bytes, expect) in cases {
            let dir = fixture();
            std::fs::write(dir.path().join(name), bytes).expect("w");
            let text = open(dir.path()).err().expect("bad").to_string();
            assert!(
                text.contains(name) && text.contains(expect),
                "{name}: {text}"
            );
        }
        let dir = fixture();
        std::fs::remove_file(dir.path().join("unlabeled_X.bin")).expect("rm");
        let text = open(dir.path()).err().expect("missing").to_string();
        assert!(text.contains("unlabeled_X.bin"), "{text}");
        assert!(text.contains("collapse-lab data fetch stl10"), "{text}");
    }

    /// Random bytes and truncations as image and label files: no panic, no allocation beyond
    /// the input, and every accepted image decodes.
    #[test]
    fn random_and_truncated_input_never_panics_or_overallocates() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let valid = images(0, 2);
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
            .map(|_| {
                let n = if rng.random_bool(0.3) {
                    rng.random_range(0..3) * IMAGE_BYTES
                } else {
                    rng.random_range(0..IMAGE_BYTES * 2 + 10)
                };
                let x = (0..n).map(|_| rng.random()).collect();
                let y = (0..rng.random_range(0..4))
                    .map(|_| rng.random_range(0..13))
                    .collect();
                (x, y)
            })
            .collect();
        cases.extend(
            (0..valid.len())
                .step_by(4099)
                .map(|c| (valid[..c].to_vec(), vec![1, 2])),
        );
        let mut out = vec![0f32; IMAGE_BYTES];
        for (x, y) in cases {
            let x_len = x.len();
            let (r, largest) = largest_allocation(|| {
                let labels = parse_labels(&y, Path::new("y"))?;
                StlImages::new(
                    Bytes::Owned(x),
                    Some((labels, Path::new("y"))),
                    None,
                    Path::new("x"),
                )
            });
            // Nothing is copied: at most the labels and an error message.
            assert!(largest <= 1024, "allocated {largest} for {x_len} bytes");
            if let Ok(d) = r {
                for i in 0..d.len() {
                    d.read_image(i, &mut out);
                    assert!(d.label(i).is_some_and(|l| l < 10));
                }
            }
        }
    }
}
