//! IDX files: MNIST, Fashion-MNIST and KMNIST, gzip-compressed or raw.
//!
//! An IDX file is a big-endian header — a magic number whose last byte is the number of
//! dimensions (`0x00000803`: u8 images N×rows×cols; `0x00000801`: u8 labels N), then one u32
//! per dimension — followed by the values. A folder holds `train-images-idx3-ubyte`,
//! `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each
//! optionally with `.gz` (detected by the gzip magic bytes, not the name). Self-supervised
//! training reads the train split, evaluation the test (`t10k`) split. Images are grayscale:
//! one channel at their native 28×28.
//!
//! Sizes are checked before anything is allocated: a raw file must hold exactly what its
//! header claims; a gzip file may not claim more than deflate can expand its size to.

use std::io::{Cursor, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use super::files::{file_error, find_file, limited, open_sized};
use super::InMemoryDataset;
use crate::config::InputError;

/// Magic number of an IDX file of u8 images (N×rows×cols).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (N).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Deflate expands at most ~1032:1, so a gzip file of n bytes cannot honestly hold more than
/// this many times n bytes; a header claiming more is rejected before decompressing anything.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// One IDX data set: its name (also the `collapse-lab data fetch` argument) and classes.
#[derive(Debug, Clone, Copy)]
pub struct IdxFamily {
    pub name: &'static str,
    pub class_names: &'static [&'static str],
}

/// The handwritten digits.
pub const MNIST: IdxFamily = IdxFamily {
    name: "mnist",
    class_names: &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
};

/// Zalando's clothing images in MNIST's format.
pub const FASHION_MNIST: IdxFamily = IdxFamily {
    name: "fashion-mnist",
    class_names: &[
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
};

/// Kuzushiji-MNIST: ten cursive hiragana (romanised names).
pub const KMNIST: IdxFamily = IdxFamily {
    name: "kmnist",
    class_names: &["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
};

/// What an IDX file is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxKind {
    /// u8 images, N×rows×cols.
    Images,
    /// u8 labels, N.
    Labels,
}

impl IdxKind {
    fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }

    fn what(self) -> &'static str {
        match self {
            IdxKind::Images => "u8 images N×rows×cols",
            IdxKind::Labels => "u8 labels N",
        }
    }
}

/// A decoded IDX file: its header dimensions (N first) and the values of the first `count`
/// items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions from the header; `dims[0]` is the number of items in the file.
    pub dims: Vec<usize>,
    /// Items read (the header's N, or fewer under a limit).
    pub count: usize,
    /// `count` items' values, row-major.
    pub values: Vec<u8>,
}

/// Decodes an IDX file of `kind` from `reader`, whose size on disk is `file_len` bytes,
/// reading at most `limit` items. Gzip is detected by its magic bytes. `path` names the file in
/// errors.
pub fn decode<R: Read>(
    mut reader: R,
    file_len: u64,
    kind: IdxKind,
    limit: Option<usize>,
    path: &Path,
) -> Result<Idx, InputError> {
    let mut sniff = [0u8; 2];
    reader
        .read_exact(&mut sniff)
        .map_err(|_| file_error(path, "too short for an IDX header"))?;
    let rest = Cursor::new(sniff).chain(reader);
    if sniff == GZIP_MAGIC {
        let bound = file_len.saturating_mul(MAX_DEFLATE_RATIO);
        decode_stream(
            GzDecoder::new(rest),
            Payload::AtMost(bound),
            kind,
            limit,
            path,
        )
    } else {
        decode_stream(rest, Payload::Exact(file_len), kind, limit, path)
    }
}

/// What the stream's length is known to be.
#[derive(Debug, Clone, Copy)]
enum Payload {
    /// A raw file of exactly this many bytes (header included).
    Exact(u64),
    /// A decompressed stream of at most this many bytes.
    AtMost(u64),
}

fn decode_stream<R: Read>(
    mut r: R,
    payload: Payload,
    kind: IdxKind,
    limit: Option<usize>,
    path: &Path,
) -> Result<Idx, InputError> {
    let gz = matches!(payload, Payload::AtMost(_));
    let read_err = |e: std::io::Error, what: &str| {
        if gz && e.kind() != std::io::ErrorKind::UnexpectedEof {
            file_error(path, format!("corrupt gzip data while reading {what}: {e}"))
        } else {
            file_error(path, format!("truncated: the file ends inside {what}"))
        }
    };
    let dims = read_header(&mut r, kind, path, &read_err)?;
    let item_len: u64 = dims[1..].iter().map(|&d| d as u64).product();
    let claimed = check_size(&dims, item_len, payload, path)?;
    let n = dims[0];
    let count = limited(n, limit);
    // count ≤ n, so this fits in u64 and, checked against the file above, in memory terms too.
    let want = count as u64 * item_len;
    let values = match payload {
        Payload::Exact(_) => {
            let len = usize::try_from(want)
                .map_err(|_| file_error(path, "data does not fit in memory"))?;
            let mut v = vec![0u8; len];
            r.read_exact(&mut v).map_err(|e| read_err(e, "the data"))?;
            v
        }
        Payload::AtMost(_) => {
            // No preallocation: the buffer grows only with data that actually arrives.
            let mut v = Vec::new();
            (&mut r)
                .take(want)
                .read_to_end(&mut v)
                .map_err(|e| read_err(e, "the data"))?;
            if (v.len() as u64) < want {
                return Err(file_error(
                    path,
                    format!(
                        "truncated: the decompressed data ends after {} of the {claimed} bytes the header claims",
                        v.len()
                    ),
                ));
            }
            if count == n {
                let mut extra = [0u8; 1];
                let more = r.read(&mut extra).map_err(|e| read_err(e, "the data"))?;
                if more > 0 {
                    return Err(file_error(
                        path,
                        format!(
                            "size does not match the header: data continues after the {claimed} bytes {dims:?} needs"
                        ),
                    ));
                }
            }
            v
        }
    };
    Ok(Idx {
        dims,
        count,
        values,
    })
}

/// The magic number and dimensions of an IDX header.
fn read_header<R: Read>(
    r: &mut R,
    kind: IdxKind,
    path: &Path,
    read_err: &dyn Fn(std::io::Error, &str) -> InputError,
) -> Result<Vec<usize>, InputError> {
    let mut word = [0u8; 4];
    r.read_exact(&mut word)
        .map_err(|e| read_err(e, "the IDX header"))?;
    let magic = u32::from_be_bytes(word);
    if magic != kind.magic() {
        return Err(file_error(
            path,
            format!(
                "wrong magic number {magic:#010x}, expected {:#010x} (IDX {})",
                kind.magic(),
                kind.what()
            ),
        ));
    }
    let ndims = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        r.read_exact(&mut word)
            .map_err(|e| read_err(e, "the IDX header"))?;
        dims.push(u32::from_be_bytes(word) as usize);
    }
    Ok(dims)
}

/// Checks the header's dimensions against what the file can hold; returns the data bytes
/// the header claims.
fn check_size(
    dims: &[usize],
    item_len: u64,
    payload: Payload,
    path: &Path,
) -> Result<u64, InputError> {
    let header_len = 4 + 4 * dims.len() as u64;
    if item_len == 0 {
        return Err(file_error(
            path,
            format!("header gives an empty item shape {:?}", &dims[1..]),
        ));
    }
    let n = dims[0];
    if n == 0 {
        return Err(file_error(path, "header says the file holds no items"));
    }
    let claimed = (n as u64).checked_mul(item_len).ok_or_else(|| {
        file_error(
            path,
            format!("header dimensions {dims:?} overflow a 64-bit size"),
        )
    })?;
    match payload {
        Payload::Exact(file_len) => {
            let held = file_len.saturating_sub(header_len);
            if held < claimed {
                return Err(file_error(
                    path,
                    format!(
                        "header claims {dims:?} ({claimed} bytes of data) but the file holds only {held} bytes after the header (truncated?)"
                    ),
                ));
            }
            if held > claimed {
                return Err(file_error(
                    path,
                    format!(
                        "size does not match the header: {held} bytes after the header, {dims:?} needs {claimed}"
                    ),
                ));
            }
        }
        Payload::AtMost(bound) => {
            if claimed > bound {
                return Err(file_error(
                    path,
                    format!(
                        "header claims {dims:?} ({claimed} bytes of data), more than this gzip file can hold"
                    ),
                ));
            }
        }
    }
    Ok(claimed)
}

/// Decodes the IDX file at `path` (raw or gzip).
pub fn read_file(
    path: &Path,
    kind: IdxKind,
    limit: Option<usize>,
    dataset: &str,
) -> Result<Idx, InputError> {
    let (file, len) = open_sized(path, dataset)?;
    decode(std::io::BufReader::new(file), len, kind, limit, path)
}

/// Reads one split (`train` or `t10k`) of `family` from `dir`: images and labels, checked to
/// agree in count and to hold labels below the class count.
pub fn read_split(
    family: &IdxFamily,
    dir: &Path,
    prefix: &str,
    limit: Option<usize>,
) -> Result<InMemoryDataset, InputError> {
    let name =
        |what: &str, gz: bool| format!("{prefix}-{what}-ubyte{}", if gz { ".gz" } else { "" });
    let images_path = find_file(
        dir,
        &[],
        &[&name("images-idx3", true), &name("images-idx3", false)],
        family.name,
    )?;
    let labels_path = find_file(
        dir,
        &[],
        &[&name("labels-idx1", true), &name("labels-idx1", false)],
        family.name,
    )?;
    let images = read_file(&images_path, IdxKind::Images, limit, family.name)?;
    let labels = read_file(&labels_path, IdxKind::Labels, limit, family.name)?;
    if labels.dims[0] != images.dims[0] {
        return Err(file_error(
            &labels_path,
            format!(
                "holds {} labels but {} holds {} images",
                labels.dims[0],
                images_path.display(),
                images.dims[0]
            ),
        ));
    }
    let classes = family.class_names.len();
    if let Some((i, &bad)) = labels
        .values
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(file_error(
            &labels_path,
            format!("label {bad} of item {i} is out of range 0..{classes}"),
        ));
    }
    InMemoryDataset::new(
        1,
        images.dims[1],
        images.dims[2],
        images.values,
        Some(labels.values.iter().map(|&l| u32::from(l)).collect()),
        Some(classes),
        family.class_names.iter().map(|s| s.to_string()).collect(),
    )
    .map_err(|e| file_error(&images_path, e.to_string()))
}

/// The train split (self-supervised training) and the test split (evaluation) of `family`.
pub fn open(
    family: &IdxFamily,
    dir: &Path,
) -> Result<(InMemoryDataset, InMemoryDataset), InputError> {
    Ok((
        read_split(family, dir, "train", None)?,
        read_split(family, dir, "t10k", None)?,
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::data::alloc_probe::largest_allocation;
    use crate::data::Dataset;

    fn images_bytes(n: u32, rows: u32, cols: u32, f: impl Fn(u32) -> u8) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, n, rows, cols] {
            b.extend(v.to_be_bytes());
        }
        b.extend((0..n * rows * cols).map(f));
        b
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(LABELS_MAGIC.to_be_bytes());
        b.extend((labels.len() as u32).to_be_bytes());
        b.extend(labels);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn pixel(i: u32) -> u8 {
        (i * 7 % 251) as u8
    }

    /// A folder with 5 train and 3 test images of 4×3, raw or gzip.
    fn fixture(gz: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let ext = if gz { ".gz" } else { "" };
        let write = |name: &str, bytes: Vec<u8>| {
            let bytes = if gz { gzip(&bytes) } else { bytes };
            std::fs::write(dir.path().join(format!("{name}{ext}")), bytes).expect("write");
        };
        write("train-images-idx3-ubyte", images_bytes(5, 4, 3, pixel));
        write("train-labels-idx1-ubyte", labels_bytes(&[3, 1, 4, 1, 5]));
        write(
            "t10k-images-idx3-ubyte",
            images_bytes(3, 4, 3, |i| 255 - pixel(i)),
        );
        write("t10k-labels-idx1-ubyte", labels_bytes(&[9, 2, 6]));
        dir
    }

    fn check_fixture(dir: &Path) {
        let (train, test) = open(&FASHION_MNIST, dir).expect("loads");
        assert_eq!((train.len(), test.len()), (5, 3));
        assert_eq!((train.channels(), train.height(), train.width()), (1, 4, 3));
        let expect: Vec<u8> = (0..60).map(pixel).collect();
        assert_eq!(train.pixels(), &expect[..]);
        assert_eq!(train.labels(), Some(&[3, 1, 4, 1, 5][..]));
        assert_eq!(test.labels(), Some(&[9, 2, 6][..]));
        assert_eq!(test.image_u8(2)[0], 255 - pixel(24));
        assert_eq!(train.class_names()[0], "T-shirt/top");
        assert_eq!(test.num_classes(), Some(10));
        let mut out = vec![0f32; 12];
        train.read_image(1, &mut out);
        assert!((out[0] - f32::from(pixel(12)) / 255.0).abs() < 1e-7);
    }

    #[test]
    fn raw_files_load_exactly() {
        check_fixture(fixture(false).path());
    }

    #[test]
    fn gzip_files_load_exactly() {
        check_fixture(fixture(true).path());
    }

    #[test]
    fn a_read_limit_takes_the_first_images() {
        for gz in [false, true] {
            let dir = fixture(gz);
            let train = read_split(&MNIST, dir.path(), "train", Some(2)).expect("loads");
            let test = read_split(&MNIST, dir.path(), "t10k", Some(10)).expect("loads");
            assert_eq!((train.len(), test.len()), (2, 3));
            assert_eq!(train.labels(), Some(&[3, 1][..]));
            assert_eq!(train.pixels(), &(0..24).map(pixel).collect::<Vec<_>>()[..]);
        }
    }

    fn err_of(dir: &Path) -> String {
        open(&MNIST, dir)
            .expect_err("bad input must fail")
            .to_string()
    }

    #[test]
    fn bad_files_are_input_errors_naming_the_file() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "train-images-idx3-ubyte",
                labels_bytes(&[1, 2]),
                "wrong magic number 0x00000801",
            ),
            (
                "train-images-idx3-ubyte",
                images_bytes(6, 4, 3, pixel)[..16 + 60].to_vec(),
                "file holds only 60 bytes",
            ),
            (
                "train-images-idx3-ubyte",
                [images_bytes(5, 4, 3, pixel), vec![0; 3]].concat(),
                "size does not match the header",
            ),
            (
                "train-images-idx3-ubyte",
                images_bytes(5, 4, 3, pixel)[..10].to_vec(),
                "truncated",
            ),
            (
                "train-labels-idx1-ubyte",
                labels_bytes(&[1, 2, 10, 0, 0]),
                "label 10 of item 2 is out of range",
            ),
            (
                "train-labels-idx1-ubyte",
                labels_bytes(&[1, 2, 3]),
                "holds 3 labels but",
            ),
        ];
        for (name, bytes, expect) in cases {
            let dir = fixture(false);
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).expect("write");
            let text = err_of(dir.path());
            assert!(text.contains(name), "{text}");
            assert!(text.contains(expect), "{name}: {text}");
        }
    }

    #[test]
    fn lying_headers_are_rejected_before_allocating() {
        // 2^32-1 images of 2^16×2^16 in 20 bytes: raw and gzip.
        let mut lie = images_bytes(0, 0, 0, pixel);
        lie[4..16].copy_from_slice(&[0xff; 12]);
        lie.extend([1, 2, 3, 4]);
        for bytes in [lie.clone(), gzip(&lie)] {
            let path = Path::new("lie-idx3-ubyte");
            let (r, largest) = largest_allocation(|| {
                decode(&bytes[..], bytes.len() as u64, IdxKind::Images, None, path)
            });
            let text = r.expect_err("lying header").to_string();
            assert!(text.contains("lie-idx3-ubyte"), "{text}");
            assert!(largest < 1 << 20, "allocated {largest} bytes");
        }
    }

    #[test]
    fn gzip_shorter_or_longer_than_its_header_is_rejected() {
        let good = images_bytes(5, 4, 3, pixel);
        let path = Path::new("x.gz");
        let short = gzip(&good[..good.len() - 1]);
        let text = decode(&short[..], short.len() as u64, IdxKind::Images, None, path)
            .expect_err("short")
            .to_string();
        assert!(text.contains("truncated"), "{text}");
        let long = gzip(&[&good[..], &[0]].concat());
        let text = decode(&long[..], long.len() as u64, IdxKind::Images, None, path)
            .expect_err("long")
            .to_string();
        assert!(text.contains("size does not match"), "{text}");
        let mut corrupt = gzip(&good);
        let mid = corrupt.len() / 2;
        corrupt[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
        let text = decode(
            &corrupt[..],
            corrupt.len() as u64,
            IdxKind::Images,
            None,
            path,
        )
        .expect_err("corrupt")
        .to_string();
        assert!(text.contains("x.gz"), "{text}");
    }

    #[test]
    fn missing_split_file_names_it_and_the_fetch_command() {
        let dir = fixture(true);
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).expect("rm");
        let text = open(&KMNIST, dir.path()).expect_err("missing").to_string();
        assert!(text.contains("t10k-labels-idx1-ubyte"), "{text}");
        assert!(text.contains("collapse-lab data fetch kmnist"), "{text}");
    }

    /// Random bytes (some with a valid magic and small dims), truncations of valid files, raw
    /// and gzip: never a panic, never an allocation beyond what the input justifies.
    #[test]
    fn random_and_truncated_input_never_panics_or_overallocates() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let valid = images_bytes(3, 5, 4, pixel);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for _ in 0..300 {
            let len = rng.random_range(0..200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && b.len() >= 4 {
                let magic = if rng.random_bool(0.5) {
                    IMAGES_MAGIC
                } else {
                    LABELS_MAGIC
                };
                b[..4].copy_from_slice(&magic.to_be_bytes());
            }
            if rng.random_bool(0.2) {
                b = gzip(&b);
            }
            inputs.push(b);
        }
        for cut in 0..valid.len() {
            inputs.push(valid[..cut].to_vec());
            inputs.push(gzip(&valid[..cut]));
        }
        let gz_valid = gzip(&valid);
        for cut in 0..gz_valid.len() {
            inputs.push(gz_valid[..cut].to_vec());
        }
        for bytes in &inputs {
            for kind in [IdxKind::Images, IdxKind::Labels] {
                let (r, largest) = largest_allocation(|| {
                    decode(&bytes[..], bytes.len() as u64, kind, None, Path::new("f"))
                });
                if let Ok(idx) = r {
                    let item: usize = idx.dims[1..].iter().product();
                    assert_eq!(idx.values.len(), idx.count * item);
                }
                // gzip's decoder state is ~40 KiB; data never more than the input can expand to.
                assert!(
                    largest < 256 << 10,
                    "allocated {largest} for {} bytes",
                    bytes.len()
                );
            }
        }
    }
}
