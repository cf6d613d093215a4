//! Image folders: `root/<class>/*.png|jpg|jpeg`, the class being the folder's name.
//!
//! Classes are the sub-folders sorted by name (label = position), files within a class sorted
//! by name; other files and hidden entries are ignored. With `root/train/<class>/…` and
//! `root/test/<class>/…` (or `root/val/…`) the two are the training and evaluation splits and
//! must have the same classes. Without them, `root` itself is one folder of classes, split
//! into disjoint training and evaluation images: `dataset.eval_fraction` of every class is held
//! out (chosen by a seeded hash of each file's path, see [`super::split`]), and training never
//! sees a held-out image. `dataset.limit_train` / `limit_eval` sample the file lists (every
//! class in proportion) before anything is decoded.
//!
//! Every image is decoded (format from its content), resized bilinearly (PIL semantics, the
//! augmenter's own resampler) to `image_size × image_size` — aspect ratio not kept — and kept
//! in memory as u8. The set is grayscale (1 channel) when every image is, RGB otherwise.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::augment::resize_whole;
use super::files::file_error;
use super::split::{name_key, stratified_sample, stratified_split, Selection};
use super::InMemoryDataset;
use crate::config::{DatasetConfig, InputError, DEFAULT_MAX_IMAGE_PIXELS};

/// File name endings read as images (case-insensitive).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One class folder: its name and its image files, sorted.
struct Class {
    name: String,
    files: Vec<PathBuf>,
}

/// A decoded image: RGB CHW at the target size, and whether the source was grayscale.
struct Decoded {
    rgb: Vec<u8>,
    gray: bool,
}

/// Sorted names of the visible entries of `dir` that satisfy `keep`.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, InputError> {
    let read = std::fs::read_dir(dir).map_err(|e| file_error(dir, format!("cannot list: {e}")))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| file_error(dir, format!("cannot list: {e}")))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// The class folders of `dir`, each with at least one image.
fn classes(dir: &Path) -> Result<Vec<Class>, InputError> {
    let dirs = entries(dir, Path::is_dir)?;
    if dirs.is_empty() {
        return Err(file_error(
            dir,
            "no class folders (expected <class>/*.png|jpg|jpeg)",
        ));
    }
    dirs.into_iter()
        .map(|d| {
            let files = entries(&d, is_image)?;
            if files.is_empty() {
                return Err(file_error(
                    &d,
                    "empty class folder: no .png, .jpg or .jpeg files",
                ));
            }
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Class { name, files })
        })
        .collect()
}

/// Decodes `path` and resizes it to `size × size` RGB, CHW. An image of more than
/// `max_pixels` pixels (by its header) is refused before anything is allocated for it.
fn decode(path: &Path, size: usize, max_pixels: u64) -> Result<Decoded, InputError> {
    let unreadable = |e: &dyn std::fmt::Display| file_error(path, format!("unreadable image: {e}"));
    let (w, h) = image::image_dimensions(path).map_err(|e| unreadable(&e))?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(file_error(
            path,
            format!(
                "image of {w} × {h} pixels is larger than dataset.max_image_pixels = {max_pixels}"
            ),
        ));
    }
    let img = image::io::Reader::open(path)
        .map_err(|e| unreadable(&e))?
        .with_guessed_format()
        .map_err(|e| unreadable(&e))?
        .decode()
        .map_err(|e| unreadable(&e))?;
    let gray = !img.color().has_color();
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err(file_error(path, "unreadable image: it has no pixels"));
    }
    let plane = h * w;
    let mut chw = vec![0f32; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        for k in 0..3 {
            chw[k * plane + i] = f32::from(px.0[k]) / 255.0;
        }
    }
    let mut out = vec![0f32; 3 * size * size];
    resize_whole(&chw, 3, h, w, size, &mut out);
    let rgb = out
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    Ok(Decoded { rgb, gray })
}

/// An image file and its label.
type File = (PathBuf, u32);

/// Every image file of `classes`, class by class.
fn files_of(classes: &[Class]) -> Vec<File> {
    classes
        .iter()
        .enumerate()
        .flat_map(|(k, c)| c.files.iter().map(move |f| (f.clone(), k as u32)))
        .collect()
}

/// Selection keys of `files`: a seeded hash of each path relative to `root`, so a selection
/// depends on what the files are called, not on how the directory lists them.
fn keys_of(files: &[File], root: &Path, seed: u64) -> Vec<u64> {
    files
        .iter()
        .map(|(f, _)| {
            let rel = f.strip_prefix(root).unwrap_or(f);
            name_key(&rel.to_string_lossy(), seed)
        })
        .collect()
}

fn file_labels(files: &[File]) -> Vec<Option<u32>> {
    files.iter().map(|&(_, k)| Some(k)).collect()
}

fn pick(files: &[File], mut indices: Vec<usize>) -> Vec<File> {
    indices.sort_unstable(); // storage order: class by class, names sorted
    indices.into_iter().map(|i| files[i].clone()).collect()
}

/// A class-stratified sample of `limit` of `files` (all without a limit).
fn sample(files: Vec<File>, root: &Path, limit: Option<usize>, seed: u64) -> Vec<File> {
    match limit {
        Some(n) if n < files.len() => {
            let keys = keys_of(&files, root, seed);
            pick(&files, stratified_sample(&file_labels(&files), &keys, n))
        }
        _ => files,
    }
}

/// `files` decoded in parallel, with their labels.
fn load(
    files: &[File],
    size: usize,
    max_pixels: u64,
) -> Result<(Vec<Decoded>, Vec<u32>), InputError> {
    let images = files
        .par_iter()
        .map(|(f, _)| decode(f, size, max_pixels))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((images, files.iter().map(|&(_, k)| k).collect()))
}

/// Builds the data set from decoded images, keeping one channel when `gray`.
fn build(
    images: &[Decoded],
    labels: Vec<u32>,
    names: &[String],
    size: usize,
    gray: bool,
    source: &Path,
) -> Result<InMemoryDataset, InputError> {
    let plane = size * size;
    let pixels: Vec<u8> = images
        .iter()
        .flat_map(|d| if gray { &d.rgb[..plane] } else { &d.rgb[..] })
        .copied()
        .collect();
    InMemoryDataset::new(
        if gray { 1 } else { 3 },
        size,
        size,
        pixels,
        Some(labels),
        Some(names.len()),
        names.to_vec(),
    )
    .map_err(|e| file_error(source, e.to_string()))
}

/// One split: the `<class>/*.png|jpg` tree at `dir`, at `size × size` (for `data inspect`,
/// which reports whichever splits exist).
pub fn open_split(dir: &Path, size: usize) -> Result<InMemoryDataset, InputError> {
    let all = classes(dir)?;
    let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let (images, labels) = load(&files_of(&all), size, DEFAULT_MAX_IMAGE_PIXELS)?;
    let gray = images.iter().all(|d| d.gray);
    build(&images, labels, &names, size, gray, dir)
}

/// The class names and the files of each split, with the folder each split was read from.
struct Splits {
    names: Vec<String>,
    train_files: Vec<File>,
    eval_files: Vec<File>,
    train_src: PathBuf,
    eval_src: PathBuf,
}

/// `root/train/` and `root/test/` (or `root/val/`), with the same class folders.
fn given_splits(root: &Path, train_dir: PathBuf) -> Result<Splits, InputError> {
    let Some(eval_dir) = ["test", "val"]
        .iter()
        .map(|s| root.join(s))
        .find(|p| p.is_dir())
    else {
        return Err(file_error(
            &root.join("test"),
            "missing evaluation split: found train/ but neither test/ nor val/",
        ));
    };
    let train_classes = classes(&train_dir)?;
    let eval_classes = classes(&eval_dir)?;
    let names: Vec<String> = train_classes.iter().map(|c| c.name.clone()).collect();
    let eval_names: Vec<String> = eval_classes.iter().map(|c| c.name.clone()).collect();
    if names != eval_names {
        return Err(file_error(
            &eval_dir,
            format!("class folders {eval_names:?} differ from train's {names:?}"),
        ));
    }
    Ok(Splits {
        names,
        train_files: files_of(&train_classes),
        eval_files: files_of(&eval_classes),
        train_src: train_dir,
        eval_src: eval_dir,
    })
}

/// Class folders directly under `root`: a stratified `dataset.eval_fraction` of each class,
/// chosen by keys that do not depend on storage order, is held out for evaluation.
fn held_out_split(root: &Path, cfg: &DatasetConfig) -> Result<Splits, InputError> {
    let all = classes(root)?;
    let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let files = files_of(&all);
    let keys = keys_of(&files, root, Selection::HeldOut.seed(cfg.split_seed));
    let (held_out, rest) = stratified_split(&file_labels(&files), &keys, cfg.eval_fraction);
    if held_out.is_empty() || rest.is_empty() {
        return Err(file_error(
            root,
            format!(
                "too few images ({}) to hold out dataset.eval_fraction = {} for evaluation \
                 and train on the rest (or add train/ and test/ folders)",
                files.len(),
                cfg.eval_fraction
            ),
        ));
    }
    Ok(Splits {
        names,
        train_files: pick(&files, rest),
        eval_files: pick(&files, held_out),
        train_src: root.to_path_buf(),
        eval_src: root.to_path_buf(),
    })
}

/// The training and evaluation splits of the image folder at `root`, at
/// `cfg.image_size × cfg.image_size`.
pub fn open(
    root: &Path,
    cfg: &DatasetConfig,
) -> Result<(InMemoryDataset, InMemoryDataset), InputError> {
    if !root.is_dir() {
        return Err(file_error(root, "image folder does not exist"));
    }
    let train_dir = root.join("train");
    let Splits {
        names,
        train_files,
        eval_files,
        train_src,
        eval_src,
    } = if train_dir.is_dir() {
        given_splits(root, train_dir)?
    } else {
        held_out_split(root, cfg)?
    };
    let train_files = sample(
        train_files,
        &train_src,
        cfg.limit_train,
        Selection::TrainSample.seed(cfg.split_seed),
    );
    let eval_files = sample(
        eval_files,
        &eval_src,
        cfg.limit_eval,
        Selection::EvalSample.seed(cfg.split_seed),
    );
    let size = cfg.image_size;
    let max = cfg.max_image_pixels;
    let (train, train_labels) = load(&train_files, size, max)?;
    let (eval, eval_labels) = load(&eval_files, size, max)?;
    let gray = train.iter().chain(&eval).all(|d| d.gray);
    Ok((
        build(&train, train_labels, &names, size, gray, &train_src)?,
        build(&eval, eval_labels, &names, size, gray, &eval_src)?,
    ))
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma, Rgb, RgbImage};

    use super::*;
    use crate::data::Dataset;

    fn open_at(
        root: &Path,
        size: usize,
        limit_train: Option<usize>,
        limit_eval: Option<usize>,
    ) -> Result<(InMemoryDataset, InMemoryDataset), InputError> {
        let cfg = DatasetConfig {
            name: "folder".into(),
            image_size: size,
            limit_train,
            limit_eval,
            ..DatasetConfig::default()
        };
        open(root, &cfg)
    }

    fn rgb_image(w: u32, h: u32, seed: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                seed.wrapping_add((x * 10 + y) as u8),
                (y * 20) as u8,
                255 - seed,
            ])
        })
    }

    fn save(dir: &Path, rel: &str, img: &RgbImage) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        img.save(&path).expect("encode");
    }

    #[test]
    fn an_image_larger_than_the_pixel_limit_is_refused_before_decoding() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, w) in [
            ("train/a/0.png", 8),
            ("train/a/big.png", 100),
            ("test/a/0.png", 8),
        ] {
            save(dir.path(), rel, &rgb_image(w, w, 1));
        }
        let cfg = DatasetConfig {
            name: "folder".into(),
            image_size: 8,
            max_image_pixels: 5_000,
            ..DatasetConfig::default()
        };
        let err = open(dir.path(), &cfg)
            .expect_err("100 × 100 is over 5 000 pixels")
            .to_string();
        assert!(
            err.contains("big.png")
                && err.contains("100 × 100")
                && err.contains("max_image_pixels"),
            "{err}"
        );
        let cfg = DatasetConfig {
            max_image_pixels: 10_000,
            ..cfg
        };
        assert!(
            open(dir.path(), &cfg).is_ok(),
            "exactly at the limit is allowed"
        );
    }

    /// CHW bytes of an RGB image.
    fn chw(img: &RgbImage) -> Vec<u8> {
        (0..3)
            .flat_map(|k| img.pixels().map(move |p| p.0[k]))
            .collect()
    }

    #[test]
    fn split_folders_load_exactly_in_sorted_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let (a, b, c) = (rgb_image(8, 8, 1), rgb_image(8, 8, 2), rgb_image(8, 8, 3));
        save(root, "train/zebra/b.png", &b);
        save(root, "train/zebra/a.png", &a);
        save(root, "train/ant/x.PNG", &c);
        std::fs::write(root.join("train/ant/notes.txt"), "ignored").expect("w");
        save(root, "val/ant/1.png", &b);
        save(root, "val/zebra/1.png", &a);
        let (train, eval) = open_at(root, 8, None, None).expect("loads");
        assert_eq!((train.len(), eval.len()), (3, 2));
        assert_eq!(train.class_names(), ["ant", "zebra"]);
        assert_eq!(train.labels(), Some(&[0, 1, 1][..]));
        assert_eq!(train.channels(), 3);
        assert_eq!(train.image_u8(0), &chw(&c)[..]);
        assert_eq!(train.image_u8(1), &chw(&a)[..]);
        assert_eq!(train.image_u8(2), &chw(&b)[..]);
        assert_eq!(eval.image_u8(0), &chw(&b)[..]);
        assert_eq!(eval.labels(), Some(&[0, 1][..]));

        let (train, eval) = open_at(root, 8, Some(2), Some(1)).expect("loads");
        assert_eq!((train.len(), eval.len()), (2, 1));
    }

    #[test]
    fn a_split_resizes_and_keeps_flat_colours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // A flat-coloured 12×6 PNG and JPEG, resized to 4×4: the colour survives.
        let flat = RgbImage::from_pixel(12, 6, Rgb([200, 100, 50]));
        save(root, "one/a.png", &flat);
        save(root, "two/b.jpg", &flat);
        let split = open_split(root, 4).expect("loads");
        assert_eq!((split.height(), split.width()), (4, 4));
        assert!(split
            .image_u8(0)
            .chunks(16)
            .zip([200, 100, 50])
            .all(|(p, v)| p.iter().all(|&x| x == v)));
        // JPEG is lossy: within a few levels.
        assert!(split
            .image_u8(1)
            .chunks(16)
            .zip([200i32, 100, 50])
            .all(|(p, v)| p.iter().all(|&x| (i32::from(x) - v).abs() <= 4)));
    }

    /// Without train/ and test/, every class gives `eval_fraction` of its images to
    /// evaluation and the rest to training: no image is in both.
    #[test]
    fn a_single_folder_trains_and_evaluates_on_disjoint_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // 3 classes × 10 images, each image a distinct flat colour.
        for k in 0..3u8 {
            for i in 0..10u8 {
                let img = RgbImage::from_pixel(4, 4, Rgb([k * 80, i * 20, 7]));
                save(root, &format!("class{k}/{i:02}.png"), &img);
            }
        }
        let (train, eval) = open_at(root, 4, None, None).expect("loads");
        assert_eq!((train.len(), eval.len()), (24, 6));
        let count = |d: &InMemoryDataset, k: u32| {
            d.labels()
                .expect("labelled")
                .iter()
                .filter(|&&l| l == k)
                .count()
        };
        for k in 0..3 {
            assert_eq!((count(&train, k), count(&eval, k)), (8, 2), "class {k}");
        }
        let mut seen: Vec<&[u8]> = (0..train.len()).map(|i| train.image_u8(i)).collect();
        seen.extend((0..eval.len()).map(|i| eval.image_u8(i)));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 30, "every image in exactly one split");
        // The held-out images are not simply the last (or first) two of each class.
        let held: Vec<u8> = (0..eval.len()).map(|i| eval.image_u8(i)[16] / 20).collect();
        assert_ne!(held, [8, 9, 8, 9, 8, 9]);
        assert_ne!(held, [0, 1, 0, 1, 0, 1]);
        // Another split seed holds out other images; the same seed the same ones.
        let other = DatasetConfig {
            name: "folder".into(),
            image_size: 4,
            split_seed: 1,
            ..DatasetConfig::default()
        };
        let (_, eval1) = open(root, &other).expect("loads");
        assert_ne!(eval1, eval);
        assert_eq!(open_at(root, 4, None, None).expect("loads").1, eval);
        // Too few images to hold any out is bad input naming the folder.
        let tiny = tempfile::tempdir().expect("tempdir");
        save(tiny.path(), "a/x.png", &rgb_image(4, 4, 0));
        let text = open_at(tiny.path(), 4, None, None)
            .expect_err("1 image")
            .to_string();
        assert!(text.contains("eval_fraction"), "{text}");
    }

    /// Limits sample every class, even when classes are stored one after the other.
    #[test]
    fn limits_keep_every_class() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for split in ["train", "test"] {
            for k in 0..4u8 {
                for i in 0..5u8 {
                    let img = RgbImage::from_pixel(4, 4, Rgb([k * 60, i * 40, 1]));
                    save(root, &format!("{split}/c{k}/{i}.png"), &img);
                }
            }
        }
        let (train, eval) = open_at(root, 4, Some(8), Some(4)).expect("loads");
        assert_eq!((train.len(), eval.len()), (8, 4));
        assert_eq!(train.labels(), Some(&[0, 0, 1, 1, 2, 2, 3, 3][..]));
        assert_eq!(eval.labels(), Some(&[0, 1, 2, 3][..]));
    }

    #[test]
    fn all_grayscale_images_give_one_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = GrayImage::from_fn(5, 5, |x, y| Luma([(x * 40 + y) as u8]));
        for rel in ["c0/a.png", "c1/b.png"] {
            let p = dir.path().join("train").join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            g.save(&p).expect("encode");
            let p = dir.path().join("test").join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            g.save(&p).expect("encode");
        }
        let (train, eval) = open_at(dir.path(), 5, None, None).expect("loads");
        assert_eq!((train.channels(), eval.channels()), (1, 1));
        assert_eq!(train.image_u8(1), g.as_raw().as_slice());
    }

    #[test]
    fn bad_folders_are_input_errors_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        save(root, "cat/a.png", &rgb_image(4, 4, 0));
        std::fs::create_dir(root.join("dog")).expect("mkdir");
        let text = open_at(root, 4, None, None).expect_err("empty").to_string();
        assert!(
            text.contains("dog") && text.contains("empty class folder"),
            "{text}"
        );

        std::fs::write(root.join("dog/broken.jpg"), b"not a jpeg").expect("w");
        for i in 0..4 {
            save(root, &format!("cat/{i}.png"), &rgb_image(4, 4, i));
            save(root, &format!("dog/{i}.png"), &rgb_image(4, 4, i));
        }
        let text = open_at(root, 4, None, None)
            .expect_err("broken")
            .to_string();
        assert!(
            text.contains("broken.jpg") && text.contains("unreadable image"),
            "{text}"
        );

        let text = open_at(&root.join("nope"), 4, None, None)
            .expect_err("missing")
            .to_string();
        assert!(text.contains("nope"), "{text}");

        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), "train/a/x.png", &rgb_image(4, 4, 0));
        let text = open_at(dir.path(), 4, None, None)
            .expect_err("no test")
            .to_string();
        assert!(
            text.contains("test") && text.contains("missing evaluation split"),
            "{text}"
        );
        save(dir.path(), "test/b/x.png", &rgb_image(4, 4, 0));
        let text = open_at(dir.path(), 4, None, None)
            .expect_err("classes differ")
            .to_string();
        assert!(text.contains("differ"), "{text}");

        let dir = tempfile::tempdir().expect("tempdir");
        let text = open_at(dir.path(), 4, None, None)
            .expect_err("no classes")
            .to_string();
        assert!(text.contains("no class folders"), "{text}");
    }
}
