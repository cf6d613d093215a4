//! `data inspect` on a tiny fixture of every format it recognises.

mod common;

use std::io::Write;
use std::path::Path;

use common::{bin, stderr};

/// Runs `data inspect PATH --out OUT`; returns stdout after checking the PNG was written.
fn inspect(path: &Path, out: &Path) -> String {
    let o = bin()
        .args(["data", "inspect"])
        .arg(path)
        .arg("--out")
        .arg(out)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(out.join("contact_sheet.png")).expect("contact sheet written");
    assert_eq!(&png[1..4], b"PNG");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn idx(magic: u32, dims: &[u32], values: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
    b.extend(values);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn idx_gzip_folder_with_both_splits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fashion");
    std::fs::create_dir(&dir).expect("mkdir");
    for (prefix, n) in [("train", 12u32), ("t10k", 4)] {
        let images = idx(0x803, &[n, 28, 28], (0..n * 784).map(|i| (i % 256) as u8));
        let labels = idx(0x801, &[n], (0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), images).expect("w");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), labels).expect("w");
    }
    let text = inspect(&dir, &tmp.path().join("out"));
    assert!(text.contains("IDX (fashion-mnist)"), "{text}");
    assert!(
        text.contains("train: 12 images, 1×28×28, 10 classes"),
        "{text}"
    );
    assert!(text.contains("test: 4 images"), "{text}");
    assert!(text.contains("T-shirt/top 2"), "{text}");
    assert!(text.contains("pixel mean ["), "{text}");
}

fn cifar_records(label_bytes: usize, n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        b.extend(std::iter::repeat_n((i % 10) as u8, label_bytes));
        b.extend((0..3072).map(|p| ((p + i * 13) % 256) as u8));
    }
    b
}

#[test]
fn cifar10_folder_and_cifar100_test_only_and_a_batch_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c10 = tmp.path().join("c10");
    let sub = c10.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&sub).expect("mkdir");
    for k in 1..=5 {
        std::fs::write(sub.join(format!("data_batch_{k}.bin")), cifar_records(1, 3)).expect("w");
    }
    std::fs::write(sub.join("test_batch.bin"), cifar_records(1, 7)).expect("w");
    let text = inspect(&c10, &tmp.path().join("o1"));
    assert!(text.contains("CIFAR-10"), "{text}");
    assert!(
        text.contains("train: 15 images, 3×32×32, 10 classes"),
        "{text}"
    );
    assert!(text.contains("test: 7 images"), "{text}");
    assert!(text.contains("airplane 1"), "{text}");

    let c100 = tmp.path().join("c100");
    std::fs::create_dir(&c100).expect("mkdir");
    std::fs::write(c100.join("test.bin"), cifar_records(2, 5)).expect("w");
    let text = inspect(&c100, &tmp.path().join("o2"));
    assert!(text.contains("CIFAR-100"), "{text}");
    assert!(
        text.contains("test: 5 images, 3×32×32, 100 classes"),
        "{text}"
    );
    assert!(!text.contains("train:"), "{text}");

    let text = inspect(&sub.join("test_batch.bin"), &tmp.path().join("o3"));
    assert!(text.contains("CIFAR-10 batch file"), "{text}");
    assert!(text.contains("file: 7 images"), "{text}");
}

#[test]
fn stl10_labelled_and_unlabeled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stl10_binary");
    std::fs::create_dir(&dir).expect("mkdir");
    let images = |n: usize| (0..n * 27648).map(|p| (p % 251) as u8).collect::<Vec<_>>();
    std::fs::write(dir.join("train_X.bin"), images(3)).expect("w");
    std::fs::write(dir.join("train_y.bin"), [1u8, 2, 10]).expect("w");
    std::fs::write(dir.join("test_X.bin"), images(2)).expect("w");
    std::fs::write(dir.join("test_y.bin"), [3u8, 3]).expect("w");
    std::fs::write(dir.join("unlabeled_X.bin"), images(4)).expect("w");
    let text = inspect(tmp.path(), &tmp.path().join("out"));
    assert!(text.contains("STL-10"), "{text}");
    assert!(
        text.contains("train: 3 images, 3×96×96, 10 classes"),
        "{text}"
    );
    assert!(text.contains("airplane 1, bird 1, car 0"), "{text}");
    assert!(text.contains("test: 2 images"), "{text}");
    assert!(
        text.contains("unlabeled: 4 images, 3×96×96, unlabeled"),
        "{text}"
    );
}

#[test]
fn image_folder_with_splits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (split, n) in [("train", 3), ("test", 1)] {
        for class in ["cat", "dog"] {
            let d = tmp.path().join("imgs").join(split).join(class);
            std::fs::create_dir_all(&d).expect("mkdir");
            for i in 0..n {
                let img = image::RgbImage::from_fn(20, 12, |x, y| {
                    image::Rgb([(x * 10) as u8, (y * 20) as u8, i as u8 * 50])
                });
                img.save(d.join(format!("{i}.png"))).expect("png");
            }
        }
    }
    let text = inspect(&tmp.path().join("imgs"), &tmp.path().join("out"));
    assert!(text.contains("image folder"), "{text}");
    assert!(
        text.contains("train: 6 images, 3×64×64, 2 classes"),
        "{text}"
    );
    assert!(text.contains("cat 3, dog 3"), "{text}");
    assert!(text.contains("test: 2 images"), "{text}");
}

#[test]
fn unrecognised_input_is_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("junk.bin");
    std::fs::write(&f, [0u8; 10]).expect("w");
    let o = bin()
        .args(["data", "inspect"])
        .arg(&f)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("junk.bin"), "{}", stderr(&o));
}
