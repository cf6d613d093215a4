//! `collapse-lab data inspect`: recognises a data set on disk, opens each split it holds with
//! the crate's own loaders, and summarises it (counts, shape, label histogram, per-channel
//! pixel mean/std) with a contact sheet — so a download can be checked before a run uses it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::contact_sheet;
use super::fetch::default_dir;
use crate::config::InputError;
use crate::data::files::{file_error, find_file};
use crate::data::open::{DATASET_NAMES, FASHION_MNIST_DEFAULT_PATH};
use crate::data::{cifar, folder, idx, stl10, Dataset};

/// Pixel statistics read at most this many images of a split (all of every labelled split of
/// the supported sets; the first 60 000 of STL-10's 100 000 unlabeled images).
pub const STATS_MAX_IMAGES: usize = 60_000;
/// Image folders are decoded at this size (their files may differ in size).
pub const FOLDER_SIZE: usize = 64;

/// One split as opened by a loader.
struct Opened {
    name: String,
    data: Box<dyn Dataset>,
    class_names: Vec<String>,
}

/// What `inspect` found in one split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSummary {
    pub name: String,
    pub count: usize,
    /// Channels, height, width.
    pub shape: (usize, usize, usize),
    /// (class name, images) per class; empty for an unlabeled split.
    pub histogram: Vec<(String, usize)>,
    /// Whether the split is stored class by class (labels never decrease, ≥ 2 classes): its
    /// first N images are not a sample of it.
    pub sorted_by_label: bool,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// How many images the mean/std were computed over.
    pub stats_images: usize,
}

/// The summary of a data set on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub format: String,
    pub path: PathBuf,
    pub splits: Vec<SplitSummary>,
    /// The contact sheet written, of the first labelled split (or the first split).
    pub contact_sheet: PathBuf,
}

/// A path, or a data set name resolved to where it lives by default: Fashion-MNIST's
/// Debian path when that exists (`open_dataset`'s default), else `data/<name>` (where
/// `data fetch` puts it).
pub fn resolve(path_or_name: &str) -> Result<PathBuf, InputError> {
    let path = PathBuf::from(path_or_name);
    if path.exists() {
        return Ok(path);
    }
    if DATASET_NAMES.contains(&path_or_name) && !["synthetic", "folder"].contains(&path_or_name) {
        let debian = Path::new(FASHION_MNIST_DEFAULT_PATH);
        if path_or_name == "fashion-mnist" && debian.exists() {
            return Ok(debian.to_path_buf());
        }
        let dir = default_dir(path_or_name);
        if dir.exists() {
            return Ok(dir);
        }
        return Err(file_error(
            &dir,
            format!("no such folder (`collapse-lab data fetch {path_or_name}` would provide it)"),
        ));
    }
    Err(file_error(
        &path,
        "no such file or folder, nor a data set name",
    ))
}

/// Inspects `path_or_name` and writes its contact sheet to `out/contact_sheet.png`.
pub fn inspect(path_or_name: &str, out: &Path) -> Result<Inspection> {
    let path = resolve(path_or_name)?;
    let hint = DATASET_NAMES
        .contains(&path_or_name)
        .then_some(path_or_name);
    let (format, splits) = open_splits(&path, hint)?;
    if splits.is_empty() {
        return Err(file_error(&path, "holds no split of a recognised data set").into());
    }
    crate::log::create_given_dir(out)?;
    let contact_sheet = out.join("contact_sheet.png");
    // Written under a temporary name and renamed, never through a link (a planted
    // `contact_sheet.png` link, or the folder as one, is refused).
    crate::log::refuse_symlink(out)?;
    let shown = splits
        .iter()
        .find(|s| !s.data.is_empty() && s.data.label(0).is_some())
        .unwrap_or(&splits[0]);
    contact_sheet::write(shown.data.as_ref(), &contact_sheet)?;
    Ok(Inspection {
        format,
        path,
        splits: splits.iter().map(summarise).collect(),
        contact_sheet,
    })
}

/// Recognises the format at `path` and opens every split present.
fn open_splits(path: &Path, hint: Option<&str>) -> Result<(String, Vec<Opened>), InputError> {
    if path.is_file() {
        return open_batch_file(path);
    }
    let has = |subdir: &str, names: &[&str]| find_file(path, &[subdir], names, "").is_ok();
    if has(
        stl10::SUBDIR,
        &["train_X.bin", "test_X.bin", "unlabeled_X.bin"],
    ) {
        return open_stl10(path).map(|s| ("STL-10".into(), s));
    }
    for (format, label) in [
        (&cifar::CIFAR10, "CIFAR-10"),
        (&cifar::CIFAR100, "CIFAR-100"),
    ] {
        if has(
            format.subdir,
            &[format.train_files[0], format.test_files[0]],
        ) {
            let mut splits = Vec::new();
            for (name, train) in [("train", true), ("test", false)] {
                if let Some(d) = cifar::open_split(format, path, train)? {
                    splits.push(opened(name, d));
                }
            }
            return Ok((label.into(), splits));
        }
    }
    let idx_names = |prefix: &str| {
        [
            format!("{prefix}-images-idx3-ubyte.gz"),
            format!("{prefix}-images-idx3-ubyte"),
        ]
    };
    if ["train", "t10k"]
        .iter()
        .any(|p| idx_names(p).iter().any(|n| path.join(n).is_file()))
    {
        let family = idx_family(path, hint);
        let mut splits = Vec::new();
        for (prefix, name) in [("train", "train"), ("t10k", "test")] {
            if idx_names(prefix).iter().any(|n| path.join(n).is_file()) {
                splits.push(opened(name, idx::read_split(family, path, prefix, None)?));
            }
        }
        return Ok((format!("IDX ({})", family.name), splits));
    }
    let mut splits = Vec::new();
    for name in ["train", "test", "val"] {
        let dir = path.join(name);
        if dir.is_dir() {
            splits.push(opened(name, folder::open_split(&dir, FOLDER_SIZE)?));
        }
    }
    if splits.is_empty() {
        splits.push(opened("all", folder::open_split(path, FOLDER_SIZE)?));
    }
    Ok((
        format!("image folder (decoded at {FOLDER_SIZE}×{FOLDER_SIZE})"),
        splits,
    ))
}

fn opened(name: &str, data: crate::data::InMemoryDataset) -> Opened {
    Opened {
        name: name.into(),
        class_names: data.class_names().to_vec(),
        data: Box::new(data),
    }
}

/// Which IDX family's class names apply: the name asked for, else a guess from the folder.
fn idx_family(path: &Path, hint: Option<&str>) -> &'static idx::IdxFamily {
    let folder = path
        .canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .to_lowercase();
    match hint {
        Some("fashion-mnist") => &idx::FASHION_MNIST,
        Some("kmnist") => &idx::KMNIST,
        Some("mnist") => &idx::MNIST,
        _ if folder.contains("fashion") => &idx::FASHION_MNIST,
        _ if folder.contains("kmnist") => &idx::KMNIST,
        _ => &idx::MNIST,
    }
}

/// A single CIFAR batch file, told apart by its name or else its record size.
fn open_batch_file(path: &Path) -> Result<(String, Vec<Opened>), InputError> {
    let len = std::fs::metadata(path)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?
        .len();
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let by_name = |f: &cifar::CifarFormat| {
        name.as_deref()
            .is_some_and(|n| f.train_files.contains(&n) || f.test_files.contains(&n))
    };
    let by_size = |f: &cifar::CifarFormat| len > 0 && len % f.record_len() as u64 == 0;
    let format = [&cifar::CIFAR10, &cifar::CIFAR100]
        .into_iter()
        .find(|f| by_name(f))
        .or_else(|| [&cifar::CIFAR10, &cifar::CIFAR100].into_iter().find(|f| by_size(f)))
        .ok_or_else(|| {
            file_error(
                path,
                format!("not a recognised data file: {len} bytes is not a whole number of CIFAR-10 (3073-byte) or CIFAR-100 (3074-byte) records"),
            )
        })?;
    let names: Vec<String> = format.default_names.iter().map(|s| s.to_string()).collect();
    let data = cifar::read_batch_file(path, format, &names)?;
    let label = if format.name == "cifar10" {
        "CIFAR-10 batch file"
    } else {
        "CIFAR-100 batch file"
    };
    Ok((label.into(), vec![opened("file", data)]))
}

/// STL-10's labelled splits and, when present, the unlabeled one.
fn open_stl10(dir: &Path) -> Result<Vec<Opened>, InputError> {
    let names: Vec<String> = stl10::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let mut splits = Vec::new();
    for split in ["train", "test"] {
        if find_file(dir, &[stl10::SUBDIR], &[&format!("{split}_X.bin")], "stl10").is_ok() {
            splits.push(Opened {
                name: split.into(),
                data: Box::new(stl10::labelled(dir, split, None)?),
                class_names: names.clone(),
            });
        }
    }
    if let Ok(path) = find_file(dir, &[stl10::SUBDIR], &["unlabeled_X.bin"], "stl10") {
        splits.push(Opened {
            name: "unlabeled".into(),
            data: Box::new(stl10::StlImages::map(&path, None, None)?),
            class_names: Vec::new(),
        });
    }
    Ok(splits)
}

/// Counts, label histogram and per-channel mean/std of one split.
fn summarise(split: &Opened) -> SplitSummary {
    let d = split.data.as_ref();
    let (c, h, w) = (d.channels(), d.height(), d.width());
    let mut histogram = Vec::new();
    if let Some(k) = d.num_classes() {
        let mut counts = vec![0usize; k];
        for i in 0..d.len() {
            if let Some(slot) = d.label(i).and_then(|l| counts.get_mut(l as usize)) {
                *slot += 1;
            }
        }
        histogram = counts
            .into_iter()
            .enumerate()
            .map(|(j, n)| {
                let name = split
                    .class_names
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| j.to_string());
                (name, n)
            })
            .collect();
    }
    let labels: Vec<u32> = (0..d.len()).filter_map(|i| d.label(i)).collect();
    let sorted_by_label = labels.len() == d.len()
        && labels.windows(2).all(|w| w[0] <= w[1])
        && labels.first() != labels.last();
    let stats_images = d.len().min(STATS_MAX_IMAGES);
    let plane = h * w;
    let mut buf = vec![0f32; c * plane];
    let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
    for i in 0..stats_images {
        d.read_image(i, &mut buf);
        for (ch, values) in buf.chunks_exact(plane).enumerate() {
            let (s, q) = values.iter().fold((0f64, 0f64), |(s, q), &v| {
                let v = f64::from(v);
                (s + v, q + v * v)
            });
            sum[ch] += s;
            sq[ch] += q;
        }
    }
    let n = (stats_images * plane).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
        .collect();
    SplitSummary {
        name: split.name.clone(),
        count: d.len(),
        shape: (c, h, w),
        histogram,
        sorted_by_label,
        mean,
        std,
        stats_images,
    }
}

impl Inspection {
    /// The report printed by the CLI.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "{}: {}", self.path.display(), self.format);
        for s in &self.splits {
            let (c, h, w) = s.shape;
            let _ = writeln!(
                t,
                "  {}: {} images, {c}×{h}×{w}{}",
                s.name,
                s.count,
                if s.histogram.is_empty() {
                    ", unlabeled".to_string()
                } else {
                    format!(", {} classes", s.histogram.len())
                }
            );
            if !s.histogram.is_empty() {
                let labels: Vec<String> = s
                    .histogram
                    .iter()
                    .map(|(n, k)| format!("{n} {k}"))
                    .collect();
                let _ = writeln!(t, "    per class: {}", labels.join(", "));
                if s.sorted_by_label {
                    let _ = writeln!(
                        t,
                        "    stored sorted by label (class by class): its first images are not a \
                         sample; collapse-lab's limits and evaluation halves are class-stratified"
                    );
                }
            }
            let fmt = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let over = if s.stats_images < s.count {
                format!(" (first {} images)", s.stats_images)
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "    pixel mean [{}] std [{}]{over}",
                fmt(&s.mean),
                fmt(&s.std)
            );
        }
        let _ = writeln!(t, "contact sheet → {}", self.contact_sheet.display());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_path_or_name_is_input_error() {
        let err = resolve("/definitely/not/here").expect_err("missing");
        assert!(err.to_string().contains("no such file"), "{err}");
        let err = resolve("kmnist");
        if let Err(e) = err {
            assert!(e.to_string().contains("data fetch kmnist"), "{e}");
        }
    }

    #[test]
    fn cifar_batch_file_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("some.bin");
        let mut bytes = Vec::new();
        for i in 0..6u8 {
            bytes.push(i % 10);
            bytes.extend(std::iter::repeat_n(i * 40, cifar::IMAGE_BYTES));
        }
        std::fs::write(&path, bytes).expect("write");
        let report = inspect(path.to_str().expect("utf8"), &dir.path().join("out")).expect("ok");
        assert_eq!(report.format, "CIFAR-10 batch file");
        assert_eq!(report.splits[0].count, 6);
        assert_eq!(report.splits[0].histogram[0], ("airplane".to_string(), 1));
        assert!(report.splits[0].sorted_by_label, "labels 0..6 in order");
        assert!(report.to_text().contains("stored sorted by label"));
        assert!(report.contact_sheet.is_file());
        let m = report.splits[0].mean[0];
        let expect = (0..6).map(|i| f64::from(i * 40) / 255.0).sum::<f64>() / 6.0;
        assert!((m - expect).abs() < 1e-6, "{m} vs {expect}");
        assert!(report.splits[0].std[1] > 0.1);
        // The same records with two labels swapped are not sorted.
        let mut swapped = std::fs::read(&path).expect("read");
        let rec = cifar::IMAGE_BYTES + 1;
        swapped.swap(0, rec);
        std::fs::write(&path, &swapped).expect("write");
        let report = inspect(path.to_str().expect("utf8"), &dir.path().join("out")).expect("ok");
        assert!(!report.splits[0].sorted_by_label);
        assert!(!report.to_text().contains("stored sorted"));
        std::fs::write(&path, [1u8; 100]).expect("write");
        let err = inspect(path.to_str().expect("utf8"), &dir.path().join("out")).expect_err("bad");
        assert!(err.to_string().contains("not a recognised"), "{err}");
    }
}
