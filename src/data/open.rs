//! Opens the train and eval splits a run's `[dataset]` asks for.

use std::path::PathBuf;
use std::sync::Arc;

use super::split::{position_keys, stratified_sample, Selection};
use super::subset::{labels_of, Subset};
use super::{cifar, folder, idx, stl10, synthetic, Dataset};
use crate::config::{DatasetConfig, InputError};

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files; the default
/// `dataset.path` of `fashion-mnist`.
pub const FASHION_MNIST_DEFAULT_PATH: &str = "/usr/share/datasets/fashion-mnist";

/// Every `dataset.name` this build can open.
pub const DATASET_NAMES: [&str; 8] = [
    "synthetic",
    "mnist",
    "fashion-mnist",
    "kmnist",
    "cifar10",
    "cifar100",
    "stl10",
    "folder",
];

/// The self-supervised training split and the labelled evaluation split.
#[derive(Clone)]
pub struct DatasetPair {
    pub train: Arc<dyn Dataset>,
    pub eval: Arc<dyn Dataset>,
}

impl DatasetPair {
    fn of<T: Dataset + 'static, E: Dataset + 'static>((train, eval): (T, E)) -> Self {
        Self {
            train: Arc::new(train),
            eval: Arc::new(eval),
        }
    }
}

/// Opens `cfg.name`: the embedded synthetic set, or a real one read from `cfg.path` (with
/// `limit_train` / `limit_eval`, a class-stratified sample of each split). Every defect of the
/// files is an [`InputError`] naming the file.
pub fn open_dataset(cfg: &DatasetConfig) -> Result<DatasetPair, InputError> {
    let name = cfg.name.as_str();
    if name == "synthetic" {
        let split = |s| {
            synthetic::try_generate(cfg, s).map_err(|e| InputError::new("dataset", e.to_string()))
        };
        return Ok(DatasetPair {
            train: Arc::new(split(synthetic::Split::Train)?),
            eval: Arc::new(split(synthetic::Split::Eval)?),
        });
    }
    if !DATASET_NAMES.contains(&name) {
        return Err(InputError::new(
            "dataset.name",
            format!(
                "unknown data set `{name}`, expected one of {}",
                DATASET_NAMES.join(", ")
            ),
        ));
    }
    for (field, limit) in [
        ("dataset.limit_train", cfg.limit_train),
        ("dataset.limit_eval", cfg.limit_eval),
    ] {
        if limit == Some(0) {
            return Err(InputError::new(
                field,
                "must be ≥ 1 (leave it out to use every image)",
            ));
        }
    }
    let dir = match (&cfg.path, name) {
        (Some(p), _) => PathBuf::from(p),
        (None, "fashion-mnist") => PathBuf::from(FASHION_MNIST_DEFAULT_PATH),
        (None, _) => {
            return Err(InputError::new(
                "dataset.path",
                format!("required for data set `{name}`: the folder holding its files"),
            ))
        }
    };
    let (lt, le) = (cfg.limit_train, cfg.limit_eval);
    let pair = match name {
        "mnist" => idx::open(&idx::MNIST, &dir).map(DatasetPair::of),
        "fashion-mnist" => idx::open(&idx::FASHION_MNIST, &dir).map(DatasetPair::of),
        "kmnist" => idx::open(&idx::KMNIST, &dir).map(DatasetPair::of),
        "cifar10" => cifar::open(&cifar::CIFAR10, &dir).map(DatasetPair::of),
        "cifar100" => cifar::open(&cifar::CIFAR100, &dir).map(DatasetPair::of),
        "stl10" => stl10::open(&dir).map(|(train, eval)| DatasetPair { train, eval }),
        // A folder samples its file lists before decoding anything.
        _ => return folder::open(&dir, cfg).map(DatasetPair::of),
    }?;
    Ok(DatasetPair {
        train: sample(pair.train, lt, Selection::TrainSample.seed(cfg.split_seed)),
        eval: sample(pair.eval, le, Selection::EvalSample.seed(cfg.split_seed)),
    })
}

/// A class-stratified sample of `limit` images of `split` (all of it without a limit).
fn sample(split: Arc<dyn Dataset>, limit: Option<usize>, seed: u64) -> Arc<dyn Dataset> {
    match limit {
        Some(n) if n < split.len() => {
            let labels = labels_of(split.as_ref());
            let mut picked = stratified_sample(&labels, &position_keys(labels.len(), seed), n);
            // Storage order within the sample: memory-mapped sets read forwards.
            picked.sort_unstable();
            Arc::new(Subset::new(split, picked))
        }
        _ => split,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::config::AugmentConfig;
    use crate::data::Augmenter;

    fn idx_file(magic: u32, dims: &[u32], values: impl Iterator<Item = u8>) -> Vec<u8> {
        let mut b: Vec<u8> = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend(values);
        b
    }

    /// Writes `<prefix>-images-idx3-ubyte` (`n` images of `rows × cols`, pixel values
    /// counting up) and `<prefix>-labels-idx1-ubyte` (`label(i)`) into `dir`.
    fn write_idx_split(
        dir: &std::path::Path,
        prefix: &str,
        [n, rows, cols]: [u32; 3],
        label: impl Fn(u32) -> u8,
    ) {
        let images = idx_file(
            idx::IMAGES_MAGIC,
            &[n, rows, cols],
            (0..n * rows * cols).map(|i| i as u8),
        );
        let labels = idx_file(idx::LABELS_MAGIC, &[n], (0..n).map(label));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).expect("w");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).expect("w");
    }

    /// A non-square (20 rows × 28 columns) raw MNIST fixture: 4 train, 2 test images.
    fn mnist_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (prefix, n) in [("train", 4u32), ("t10k", 2)] {
            write_idx_split(dir.path(), prefix, [n, 20, 28], |i| i as u8);
        }
        dir
    }

    fn cfg(name: &str, path: Option<&std::path::Path>) -> DatasetConfig {
        DatasetConfig {
            name: name.into(),
            path: path.map(|p| p.display().to_string()),
            image_size: 16,
            ..DatasetConfig::default()
        }
    }

    #[test]
    fn dispatches_real_sets_and_applies_limits() {
        let dir = mnist_fixture();
        for name in ["mnist", "fashion-mnist", "kmnist"] {
            let pair = open_dataset(&cfg(name, Some(dir.path()))).expect("opens");
            assert_eq!((pair.train.len(), pair.eval.len()), (4, 2));
            assert_eq!(pair.train.channels(), 1);
        }
        let mut c = cfg("mnist", Some(dir.path()));
        c.limit_train = Some(3);
        c.limit_eval = Some(1);
        let pair = open_dataset(&c).expect("opens");
        assert_eq!((pair.train.len(), pair.eval.len()), (3, 1));
        c.limit_eval = Some(0);
        let err = open_dataset(&c).err().expect("zero limit");
        assert_eq!(err.source, "dataset.limit_eval");
    }

    /// Limits sample every class in proportion, even from a split stored class by class.
    #[test]
    fn limits_keep_every_class_of_a_sorted_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 40 images per split, 10 classes of 4, stored class by class.
        for prefix in ["train", "t10k"] {
            write_idx_split(dir.path(), prefix, [40, 2, 2], |i| i as u8 / 4);
        }
        let mut c = cfg("mnist", Some(dir.path()));
        c.limit_train = Some(20);
        c.limit_eval = Some(10);
        let pair = open_dataset(&c).expect("opens");
        let labels = |d: &dyn Dataset| (0..d.len()).filter_map(|i| d.label(i)).collect::<Vec<_>>();
        let want: Vec<u32> = (0..10).flat_map(|k| [k, k]).collect();
        assert_eq!(labels(pair.train.as_ref()), want);
        assert_eq!(labels(pair.eval.as_ref()), (0..10).collect::<Vec<u32>>());
        // A sample, not the first images of each class; another seed draws another.
        let first = |d: &dyn Dataset| {
            let mut px = vec![0f32; 4];
            (0..d.len())
                .map(|i| {
                    d.read_image(i, &mut px);
                    (px[0] * 255.0).round() as u32 / 4
                })
                .collect::<Vec<_>>()
        };
        let picked = first(pair.train.as_ref());
        assert_ne!(
            picked,
            (0..10).flat_map(|k| [4 * k, 4 * k + 1]).collect::<Vec<_>>()
        );
        c.split_seed = 1;
        assert_ne!(
            first(open_dataset(&c).expect("opens").train.as_ref()),
            picked
        );
    }

    #[test]
    fn path_is_required_except_for_fashion_mnist() {
        let err = open_dataset(&cfg("cifar10", None)).err().expect("no path");
        assert_eq!(err.source, "dataset.path");
        assert!(err.to_string().contains("cifar10"));
        match open_dataset(&cfg("fashion-mnist", None)) {
            Ok(pair) => assert_eq!(pair.train.len(), 60_000),
            Err(e) => assert!(e.to_string().contains(FASHION_MNIST_DEFAULT_PATH), "{e}"),
        }
        let err = open_dataset(&cfg("imagenet", None)).err().expect("unknown");
        assert_eq!(err.source, "dataset.name");
        assert!(err.to_string().contains("stl10"), "{err}");
    }

    /// Real sets arrive at their native size, here 20×28: both the random view and the
    /// evaluation transform bring them to the square `image_size`.
    #[test]
    fn non_square_native_images_go_through_the_augmenter() {
        let dir = mnist_fixture();
        let pair = open_dataset(&cfg("mnist", Some(dir.path()))).expect("opens");
        let (c, h, w) = (
            pair.train.channels(),
            pair.train.height(),
            pair.train.width(),
        );
        assert_eq!((c, h, w), (1, 20, 28));
        let aug_cfg = AugmentConfig {
            mean: vec![0.5],
            std: vec![0.25],
            ..AugmentConfig::default()
        };
        let aug = Augmenter::new(&aug_cfg, 16, c).expect("valid");
        let mut src = vec![0f32; c * h * w];
        let mut out = vec![0f32; aug.out_len()];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for i in 0..pair.train.len() {
            pair.train.read_image(i, &mut src);
            for _ in 0..20 {
                aug.apply(&src, h, w, &mut rng, &mut out);
                assert!(out
                    .iter()
                    .all(|v| v.is_finite() && (-2.0..=2.0).contains(v)));
            }
            aug.normalise_only(&src, h, w, &mut out);
            assert!(out.iter().all(|v| (-2.0..=2.0).contains(v)));
        }
        // A flat source stays flat through the evaluation resize.
        let flat = vec![0.75f32; h * w];
        aug.normalise_only(&flat, h, w, &mut out);
        assert!(
            out.iter().all(|v| (v - 1.0).abs() < 1e-5),
            "{:?}",
            &out[..4]
        );
    }
}
