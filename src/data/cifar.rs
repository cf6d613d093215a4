//! CIFAR-10 and CIFAR-100 in their binary ("for C programs") versions.
//!
//! Both are flat files of fixed-size records: label byte(s), then 3072 bytes of a 32×32 RGB
//! image stored CHW (the red plane, then green, then blue, each row-major) — exactly the layout
//! [`InMemoryDataset`] keeps, so records are copied without reordering.
//!
//! * CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` (training), `test_batch.bin`
//!   (evaluation); a record is 1 label byte (0..10) + 3072; class names from
//!   `batches.meta.txt` when present.
//! * CIFAR-100: `train.bin`, `test.bin`; a record is a coarse label byte (0..20), a fine label
//!   byte (0..100) + 3072. The fine labels are used; names from `fine_label_names.txt` when
//!   present.
//!
//! The files may sit in `dataset.path` itself or in the folder the official archive unpacks
//! to (`cifar-10-batches-bin`, `cifar-100-binary`).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::files::{file_error, find_file, limited, open_sized, read_exact_vec};
use super::InMemoryDataset;
use crate::config::InputError;

/// Bytes of one 3×32×32 image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// One of the two CIFAR binary layouts.
#[derive(Debug, Clone, Copy)]
pub struct CifarFormat {
    /// Data-set name (also the `collapse-lab data fetch` argument).
    pub name: &'static str,
    /// Folder the official archive unpacks to.
    pub subdir: &'static str,
    /// Training files, in order.
    pub train_files: &'static [&'static str],
    /// Evaluation files, in order.
    pub test_files: &'static [&'static str],
    /// Label bytes before each image, each with its exclusive upper bound.
    pub label_bounds: &'static [u8],
    /// Which of the label bytes is the class.
    pub label_index: usize,
    /// Optional text file with one class name a line.
    pub names_file: &'static str,
    /// Names used when that file is absent (may be empty).
    pub default_names: &'static [&'static str],
}

impl CifarFormat {
    /// Bytes of one record (labels + image).
    pub fn record_len(&self) -> usize {
        self.label_bounds.len() + IMAGE_BYTES
    }

    /// Number of classes of the label used.
    pub fn classes(&self) -> usize {
        usize::from(self.label_bounds[self.label_index])
    }
}

/// CIFAR-10 binary.
pub const CIFAR10: CifarFormat = CifarFormat {
    name: "cifar10",
    subdir: "cifar-10-batches-bin",
    train_files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test_files: &["test_batch.bin"],
    label_bounds: &[10],
    label_index: 0,
    names_file: "batches.meta.txt",
    default_names: &[
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
};

/// CIFAR-100 binary (fine labels).
pub const CIFAR100: CifarFormat = CifarFormat {
    name: "cifar100",
    subdir: "cifar-100-binary",
    train_files: &["train.bin"],
    test_files: &["test.bin"],
    label_bounds: &[20, 100],
    label_index: 1,
    names_file: "fine_label_names.txt",
    default_names: &[],
};

/// Splits `bytes` (whole records of `format`) into CHW pixels and class labels, checking the
/// record size and every label byte. `path` names the file in errors.
pub fn parse_records(
    bytes: &[u8],
    format: &CifarFormat,
    path: &Path,
) -> Result<(Vec<u8>, Vec<u32>), InputError> {
    let rec = format.record_len();
    if !bytes.len().is_multiple_of(rec) {
        return Err(file_error(
            path,
            format!(
                "truncated record: {} bytes is not a whole number of {rec}-byte {} records",
                bytes.len(),
                format.name
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(rec).enumerate() {
        let (head, image) = record.split_at(format.label_bounds.len());
        for (j, (&l, &bound)) in head.iter().zip(format.label_bounds).enumerate() {
            if l >= bound {
                let which = match (format.label_bounds.len(), j) {
                    (1, _) => "label",
                    (_, 0) => "coarse label",
                    _ => "fine label",
                };
                return Err(file_error(
                    path,
                    format!("{which} {l} of record {i} is out of range 0..{bound}"),
                ));
            }
        }
        labels.push(u32::from(head[format.label_index]));
        pixels.extend_from_slice(image);
    }
    Ok((pixels, labels))
}

/// Reads the records of one file, at most `max_records` of them; the file size is checked to
/// be a whole number of records before anything is read.
fn read_records(
    path: &Path,
    format: &CifarFormat,
    max_records: usize,
) -> Result<(Vec<u8>, Vec<u32>), InputError> {
    let (mut file, len) = open_sized(path, format.name)?;
    let rec = format.record_len() as u64;
    if len == 0 {
        return Err(file_error(path, "empty file"));
    }
    if len % rec != 0 {
        return Err(file_error(
            path,
            format!(
                "truncated record: {len} bytes is not a whole number of {rec}-byte {} records",
                format.name
            ),
        ));
    }
    let take = (len / rec).min(max_records as u64);
    let bytes = read_exact_vec(
        &mut (&mut file).take(take * rec),
        (take * rec) as usize,
        path,
    )?;
    parse_records(&bytes, format, path)
}

/// Reads a split from its files in order, stopping once `limit` images are in.
/// A single batch file (e.g. `test_batch.bin`), all its records, with `class_names` (for
/// `data inspect`).
pub fn read_batch_file(
    path: &Path,
    format: &CifarFormat,
    class_names: &[String],
) -> Result<InMemoryDataset, InputError> {
    let (pixels, labels) = read_records(path, format, usize::MAX)?;
    InMemoryDataset::new(
        3,
        32,
        32,
        pixels,
        Some(labels),
        Some(format.classes()),
        class_names.to_vec(),
    )
    .map_err(|e| file_error(path, e.to_string()))
}

/// One split (`train` or `test`) of the set in `dir`, or None when its first file is absent
/// (a folder may hold only the test split).
pub fn open_split(
    format: &CifarFormat,
    dir: &Path,
    train: bool,
) -> Result<Option<InMemoryDataset>, InputError> {
    let files = if train {
        format.train_files
    } else {
        format.test_files
    };
    if find_file(dir, &[format.subdir], &[files[0]], format.name).is_err() {
        return Ok(None);
    }
    let names = class_names(dir, format)?;
    read_split(dir, files, format, None, &names).map(Some)
}

fn read_split(
    dir: &Path,
    files: &[&str],
    format: &CifarFormat,
    limit: Option<usize>,
    class_names: &[String],
) -> Result<InMemoryDataset, InputError> {
    let paths = files
        .iter()
        .map(|f| find_file(dir, &[format.subdir], &[f], format.name))
        .collect::<Result<Vec<PathBuf>, _>>()?;
    let mut want = limited(usize::MAX, limit);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in &paths {
        if want == 0 {
            break;
        }
        let (p, l) = read_records(path, format, want)?;
        want -= l.len();
        pixels.extend(p);
        labels.extend(l);
    }
    InMemoryDataset::new(
        3,
        32,
        32,
        pixels,
        Some(labels),
        Some(format.classes()),
        class_names.to_vec(),
    )
    .map_err(|e| file_error(&paths[0], e.to_string()))
}

/// Class names from `format.names_file` next to the data (one a line, blank lines ignored),
/// else the format's defaults.
fn class_names(dir: &Path, format: &CifarFormat) -> Result<Vec<String>, InputError> {
    let Ok(path) = find_file(dir, &[format.subdir], &[format.names_file], format.name) else {
        return Ok(format.default_names.iter().map(|s| s.to_string()).collect());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| file_error(&path, format!("cannot read class names: {e}")))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != format.classes() {
        return Err(file_error(
            &path,
            format!(
                "lists {} class names, expected {}",
                names.len(),
                format.classes()
            ),
        ));
    }
    Ok(names)
}

/// The training split (self-supervised training) and the test split (evaluation).
pub fn open(
    format: &CifarFormat,
    dir: &Path,
) -> Result<(InMemoryDataset, InMemoryDataset), InputError> {
    let names = class_names(dir, format)?;
    Ok((
        read_split(dir, format.train_files, format, None, &names)?,
        read_split(dir, format.test_files, format, None, &names)?,
    ))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::data::alloc_probe::largest_allocation;
    use crate::data::Dataset;

    /// Pixel `p` of image `i`.
    fn pixel(i: usize, p: usize) -> u8 {
        ((i * 31 + p * 7) % 256) as u8
    }

    fn records(format: &CifarFormat, labels: &[&[u8]], first: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, l) in labels.iter().enumerate() {
            assert_eq!(l.len(), format.label_bounds.len());
            b.extend(*l);
            b.extend((0..IMAGE_BYTES).map(|p| pixel(first + k, p)));
        }
        b
    }

    /// CIFAR-10 fixture: batches of 2 images each (labels 0..9 in order), a test batch of 3.
    fn cifar10_fixture(subdir: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = if subdir {
            let d = dir.path().join("cifar-10-batches-bin");
            std::fs::create_dir(&d).expect("mkdir");
            d
        } else {
            dir.path().to_path_buf()
        };
        for b in 0..5u8 {
            let bytes = records(&CIFAR10, &[&[2 * b], &[2 * b + 1]], 2 * b as usize);
            std::fs::write(root.join(format!("data_batch_{}.bin", b + 1)), bytes).expect("w");
        }
        let test = records(&CIFAR10, &[&[9], &[0], &[5]], 100);
        std::fs::write(root.join("test_batch.bin"), test).expect("w");
        dir
    }

    #[test]
    fn cifar10_loads_exactly_with_default_and_file_names() {
        for subdir in [false, true] {
            let dir = cifar10_fixture(subdir);
            let (train, test) = open(&CIFAR10, dir.path()).expect("loads");
            assert_eq!((train.len(), test.len()), (10, 3));
            assert_eq!(
                (train.channels(), train.height(), train.width()),
                (3, 32, 32)
            );
            assert_eq!(train.labels(), Some(&(0..10).collect::<Vec<u32>>()[..]));
            assert_eq!(test.labels(), Some(&[9, 0, 5][..]));
            for i in 0..10 {
                let expect: Vec<u8> = (0..IMAGE_BYTES).map(|p| pixel(i, p)).collect();
                assert_eq!(train.image_u8(i), &expect[..]);
            }
            assert_eq!(test.image_u8(1)[5], pixel(101, 5));
            assert_eq!(train.class_names()[1], "automobile");
        }
        let dir = cifar10_fixture(false);
        let names: String = (0..10).map(|i| format!("class {i}\n")).collect();
        std::fs::write(dir.path().join("batches.meta.txt"), names + "\n").expect("w");
        let (train, _) = open(&CIFAR10, dir.path()).expect("loads");
        assert_eq!(train.class_names()[9], "class 9");
        std::fs::write(dir.path().join("batches.meta.txt"), "a\nb\n").expect("w");
        let text = open(&CIFAR10, dir.path()).expect_err("2 names").to_string();
        assert!(text.contains("batches.meta.txt") && text.contains("lists 2 class names"));
    }

    #[test]
    fn cifar10_read_limits_take_the_first_records_across_files() {
        let dir = cifar10_fixture(false);
        let names = class_names(dir.path(), &CIFAR10).expect("names");
        let read = |files, limit| read_split(dir.path(), files, &CIFAR10, limit, &names);
        let train = read(CIFAR10.train_files, Some(3)).expect("loads");
        let test = read(CIFAR10.test_files, Some(1)).expect("loads");
        assert_eq!(train.labels(), Some(&[0, 1, 2][..]));
        assert_eq!(test.labels(), Some(&[9][..]));
        assert_eq!(train.image_u8(2)[0], pixel(2, 0));
    }

    #[test]
    fn cifar100_uses_fine_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let train = records(&CIFAR100, &[&[3, 99], &[19, 0], &[0, 42]], 0);
        std::fs::write(dir.path().join("train.bin"), train).expect("w");
        std::fs::write(
            dir.path().join("test.bin"),
            records(&CIFAR100, &[&[1, 7]], 50),
        )
        .expect("w");
        let (train, test) = open(&CIFAR100, dir.path()).expect("loads");
        assert_eq!(train.labels(), Some(&[99, 0, 42][..]));
        assert_eq!(train.num_classes(), Some(100));
        assert_eq!(test.labels(), Some(&[7][..]));
        assert_eq!(train.image_u8(2)[3071], pixel(2, 3071));
        assert!(train.class_names().is_empty());
    }

    #[test]
    fn bad_files_are_input_errors_naming_the_file() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "data_batch_3.bin",
                records(&CIFAR10, &[&[1]], 0)[..3000].to_vec(),
                "truncated record",
            ),
            (
                "test_batch.bin",
                records(&CIFAR10, &[&[1], &[10]], 0),
                "label 10 of record 1 is out of range 0..10",
            ),
            ("data_batch_1.bin", vec![], "empty file"),
        ];
        for (name, bytes, expect) in cases {
            let dir = cifar10_fixture(false);
            std::fs::write(dir.path().join(name), bytes).expect("w");
            let text = open(&CIFAR10, dir.path()).expect_err("bad").to_string();
            assert!(text.contains(name) && text.contains(expect), "{text}");
        }
        let dir = cifar10_fixture(false);
        std::fs::remove_file(dir.path().join("data_batch_4.bin")).expect("rm");
        let text = open(&CIFAR10, dir.path()).expect_err("missing").to_string();
        assert!(text.contains("data_batch_4.bin"), "{text}");
        assert!(text.contains("collapse-lab data fetch cifar10"), "{text}");

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("train.bin"),
            records(&CIFAR100, &[&[20, 1]], 0),
        )
        .expect("w");
        std::fs::write(
            dir.path().join("test.bin"),
            records(&CIFAR100, &[&[1, 1]], 0),
        )
        .expect("w");
        let text = open(&CIFAR100, dir.path())
            .expect_err("coarse 20")
            .to_string();
        assert!(
            text.contains("train.bin") && text.contains("coarse label 20"),
            "{text}"
        );
    }

    /// Random bytes and truncations of valid files: no panic, allocation bounded by the input.
    #[test]
    fn random_and_truncated_input_never_panics_or_overallocates() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let valid = records(&CIFAR100, &[&[1, 2], &[3, 4]], 0);
        let mut inputs: Vec<Vec<u8>> = (0..300)
            .map(|_| {
                let n = if rng.random_bool(0.5) {
                    rng.random_range(0..3) * 3074
                } else {
                    rng.random_range(0..8000)
                };
                (0..n).map(|_| rng.random()).collect()
            })
            .collect();
        inputs.extend((0..valid.len()).step_by(97).map(|c| valid[..c].to_vec()));
        for bytes in &inputs {
            for format in [&CIFAR10, &CIFAR100] {
                let (r, largest) =
                    largest_allocation(|| parse_records(bytes, format, Path::new("f")));
                if let Ok((p, l)) = r {
                    assert_eq!(p.len(), l.len() * IMAGE_BYTES);
                    assert!(l.iter().all(|&c| (c as usize) < format.classes()));
                }
                // The data itself, plus slack for an error message.
                assert!(largest <= bytes.len() + 1024, "allocated {largest}");
            }
        }
    }
}
