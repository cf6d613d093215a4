//! NumPy `.npy` files (format versions 1–3): float16, float32 or float64, little- or
//! big-endian, C or Fortran order. Read a block of rows at a time, converted to f32: an array
//! larger than memory is never held whole. C-order rows are contiguous and read with
//! positioned reads (no page of the file stays resident); Fortran order is memory-mapped and
//! gathered.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::config::InputError;

/// Element types collapse-lab reads: floats for embeddings, integers for labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F16,
    F32,
    F64,
    /// Signed or unsigned integers of this many bytes (labels only).
    Int {
        bytes: usize,
        signed: bool,
    },
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int { bytes, .. } => bytes,
        }
    }
}

/// A `.npy` array, read on demand.
pub struct NpyArray {
    path: PathBuf,
    file: std::fs::File,
    map: Mmap,
    offset: usize,
    pub dtype: Dtype,
    big_endian: bool,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

fn bad(path: &Path, what: impl Into<String>) -> InputError {
    InputError::new(path.display().to_string(), what.into())
}

/// The value of `key` in the header's Python dict literal, as written by NumPy.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

impl NpyArray {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
        // SAFETY: read-only map of a file we do not write; a file truncated under us by
        // another process is the one hazard, as for any reader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(path, format!("cannot map: {e}")))?;
        if map.len() < 10 || &map[..6] != b"\x93NUMPY" {
            return Err(bad(path, "not a NumPy .npy file (no \\x93NUMPY magic)"));
        }
        let (header_len, start): (usize, usize) = match map[6] {
            1 => (u16::from_le_bytes([map[8], map[9]]) as usize, 10),
            2 | 3 if map.len() >= 12 => (
                u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize,
                12,
            ),
            v => return Err(bad(path, format!("unsupported .npy format version {v}"))),
        };
        let end = start
            .checked_add(header_len)
            .filter(|&e| e <= map.len())
            .ok_or_else(|| bad(path, "header runs past the end of the file"))?;
        let header =
            std::str::from_utf8(&map[start..end]).map_err(|_| bad(path, "header is not text"))?;
        let descr = field(header, "descr")
            .map(|d| d.trim_matches(|c| c == '\'' || c == '"'))
            .ok_or_else(|| bad(path, "header has no 'descr'"))?;
        let (big_endian, kind) = match descr.split_at(1) {
            ("<", k) | ("|", k) | ("=", k) => (false, k),
            (">", k) => (true, k),
            _ => (false, descr),
        };
        let dtype = match kind {
            "f2" => Dtype::F16,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            "i1" | "i2" | "i4" | "i8" | "u1" | "u2" | "u4" | "u8" => Dtype::Int {
                bytes: kind[1..].parse().unwrap_or(1),
                signed: kind.starts_with('i'),
            },
            other => {
                return Err(bad(
                    path,
                    format!("dtype `{other}` ({descr}): expected float16, float32 or float64"),
                ))
            }
        };
        let fortran_order = match field(header, "fortran_order") {
            Some("True") => true,
            Some("False") => false,
            _ => return Err(bad(path, "header has no 'fortran_order' True/False")),
        };
        let shape_text =
            field(header, "shape").ok_or_else(|| bad(path, "header has no 'shape'"))?;
        let shape: Vec<usize> = shape_text
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad(path, format!("shape {shape_text} is not a tuple of sizes")))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| bad(path, "shape overflows"))?;
        let needed = count
            .checked_mul(dtype.size())
            .and_then(|b| b.checked_add(end))
            .ok_or_else(|| bad(path, "shape overflows"))?;
        if map.len() < needed {
            return Err(bad(
                path,
                format!(
                    "holds {} bytes of data; shape {shape:?} of {kind} needs {}: cut short",
                    map.len() - end,
                    needed - end
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            offset: end,
            dtype,
            big_endian,
            fortran_order,
            shape,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses an integer array where embeddings are expected.
    pub fn require_float(&self) -> Result<(), InputError> {
        match self.dtype {
            Dtype::Int { .. } => Err(bad(
                &self.path,
                "integer array: expected float16, float32 or float64 embeddings",
            )),
            _ => Ok(()),
        }
    }

    /// A 1-D array of class labels (integers, or floats holding integers).
    pub fn labels(&self) -> Result<Vec<i64>, InputError> {
        let [n] = self.shape.as_slice() else {
            return Err(bad(
                &self.path,
                format!("labels of shape {:?}: expected (N,)", self.shape),
            ));
        };
        (0..*n)
            .map(|i| {
                let size = self.dtype.size();
                let at = self.offset + i * size;
                let b = &self.map[at..at + size];
                match self.dtype {
                    Dtype::Int { bytes, signed } => {
                        let mut raw = [0u8; 8];
                        if self.big_endian {
                            raw[8 - bytes..].copy_from_slice(b);
                            raw.reverse();
                        } else {
                            raw[..bytes].copy_from_slice(b);
                        }
                        let u = u64::from_le_bytes(raw);
                        Ok(if signed && bytes < 8 && (u >> (8 * bytes - 1)) & 1 == 1 {
                            (u | (u64::MAX << (8 * bytes))) as i64
                        } else {
                            u as i64
                        })
                    }
                    _ => {
                        let v = self.decode(b);
                        if v.fract() == 0.0 && v.is_finite() {
                            Ok(v as i64)
                        } else {
                            Err(bad(
                                &self.path,
                                format!("label {i} is {v}: expected an integer"),
                            ))
                        }
                    }
                }
            })
            .collect()
    }

    fn element(&self, index: usize) -> f32 {
        let size = self.dtype.size();
        let at = self.offset + index * size;
        self.decode(&self.map[at..at + size])
    }

    /// One element from its bytes.
    fn decode(&self, b: &[u8]) -> f32 {
        match (self.dtype, self.big_endian) {
            (Dtype::Int { .. }, _) => f32::NAN,
            (Dtype::F16, false) => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
            (Dtype::F16, true) => half_to_f32(u16::from_be_bytes([b[0], b[1]])),
            (Dtype::F32, false) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (Dtype::F32, true) => f32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            (Dtype::F64, big) => {
                let a: [u8; 8] = b.try_into().unwrap_or([0; 8]);
                (if big {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                }) as f32
            }
        }
    }

    /// Rows `start..start + count` of the (rows, cols) matrix at leading index `lead` of the
    /// array (`lead` picks z1 or z2 of a (2, N, d) array, or a view of (n, q, d)), row-major.
    /// `dims` = (leading count, rows, cols) as the caller reads the shape.
    pub fn rows(
        &self,
        dims: (usize, usize, usize),
        lead: usize,
        start: usize,
        count: usize,
    ) -> Vec<f32> {
        let (l, n, d) = dims;
        let mut out = Vec::with_capacity(count * d);
        #[cfg(unix)]
        if !self.fortran_order {
            use std::os::unix::fs::FileExt;
            let size = self.dtype.size();
            let at = self.offset + (lead * n + start) * d * size;
            let mut bytes = vec![0u8; count * d * size];
            if self.file.read_exact_at(&mut bytes, at as u64).is_ok() {
                out.extend(bytes.chunks_exact(size).map(|b| self.decode(b)));
                return out;
            }
        }
        for i in start..start + count {
            for j in 0..d {
                // C order: index (lead, i, j) = (lead·n + i)·d + j; Fortran: lead + l·(i + n·j).
                let index = if self.fortran_order {
                    lead + l * (i + n * j)
                } else {
                    (lead * n + i) * d + j
                };
                out.push(self.element(index));
            }
        }
        out
    }
}

/// IEEE half to single precision.
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (f << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Writes a `.npy` file (version 1, little-endian f32 or f64, C order): the test fixtures'
/// format, as NumPy writes it.
#[cfg(test)]
pub fn write_npy(path: &Path, shape: &[usize], values: &[f64], descr: &str, fortran: bool) {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_text}, }}",
        if fortran { "True" } else { "False" }
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for &v in values {
        match descr {
            "<f4" => bytes.extend((v as f32).to_le_bytes()),
            ">f4" => bytes.extend((v as f32).to_be_bytes()),
            "<f8" => bytes.extend(v.to_le_bytes()),
            "<f2" => bytes.extend(f32_to_half(v as f32).to_le_bytes()),
            "|u1" => bytes.push(v as u8),
            "<i8" => bytes.extend((v as i64).to_le_bytes()),
            _ => bytes.extend((v as i32).to_le_bytes()),
        }
    }
    std::fs::write(path, bytes).expect("write fixture");
}

/// Single to half precision for the fixtures (normal numbers, truncated).
#[cfg(test)]
fn f32_to_half(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if x == 0.0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_and_dtype_reads_the_same_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (l, n, d) = (2usize, 3usize, 4usize);
        // C-order values of a (2, 3, 4) array: v(a, i, j) = 100a + 10i + j (exact in f16).
        let c: Vec<f64> = (0..l * n * d)
            .map(|k| (100 * (k / (n * d)) + 10 * ((k / d) % n) + k % d) as f64)
            .collect();
        // The same array in Fortran order: index a + l·(i + n·j).
        let mut f = vec![0.0; c.len()];
        for a in 0..l {
            for i in 0..n {
                for j in 0..d {
                    f[a + l * (i + n * j)] = c[(a * n + i) * d + j];
                }
            }
        }
        for (name, descr, values, fortran) in [
            ("c4.npy", "<f4", &c, false),
            ("be4.npy", ">f4", &c, false),
            ("c8.npy", "<f8", &c, false),
            ("c2.npy", "<f2", &c, false),
            ("f4.npy", "<f4", &f, true),
        ] {
            let p = dir.path().join(name);
            write_npy(&p, &[l, n, d], values, descr, fortran);
            let a = NpyArray::open(&p).expect(name);
            assert_eq!(a.shape, vec![l, n, d]);
            let z2 = a.rows((l, n, d), 1, 1, 2);
            assert_eq!(
                z2,
                vec![110.0, 111.0, 112.0, 113.0, 120.0, 121.0, 122.0, 123.0],
                "{name}"
            );
        }
    }

    #[test]
    fn labels_read_from_integer_and_float_arrays() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (descr, name) in [
            ("<i4", "a.npy"),
            ("<i8", "b.npy"),
            ("|u1", "c.npy"),
            ("<f4", "d.npy"),
        ] {
            let p = dir.path().join(name);
            write_npy(&p, &[4], &[3.0, 0.0, 7.0, 3.0], descr, false);
            let l = NpyArray::open(&p).expect(name).labels().expect(name);
            assert_eq!(l, vec![3, 0, 7, 3], "{descr}");
        }
        let p = dir.path().join("neg.npy");
        write_npy(&p, &[2], &[-1.0, 2.0], "<i4", false);
        assert_eq!(
            NpyArray::open(&p).expect("neg").labels().expect("neg"),
            vec![-1, 2]
        );
    }

    #[test]
    fn bad_files_are_one_line_naming_what_was_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ints.npy");
        write_npy(&p, &[2, 2], &[1.0, 2.0, 3.0, 4.0], "<i4", false);
        let e = NpyArray::open(&p)
            .expect("opens")
            .require_float()
            .expect_err("ints")
            .to_string();
        assert!(e.contains("ints.npy") && e.contains("float32"), "{e}");
        let p = dir.path().join("c8.npy");
        write_npy(&p, &[3], &[0.0, 1.5, 2.0], "<c8", false);
        let e = NpyArray::open(&p).err().expect("complex").to_string();
        assert!(e.contains("c8") && e.contains("float32"), "{e}");
        let p = dir.path().join("short.npy");
        write_npy(&p, &[4, 4], &[1.0; 8], "<f4", false);
        let e = NpyArray::open(&p).err().expect("short").to_string();
        assert!(e.contains("cut short"), "{e}");
        let p = dir.path().join("text.npy");
        std::fs::write(&p, "hello, not numpy").expect("write");
        assert!(NpyArray::open(&p)
            .err()
            .expect("text")
            .to_string()
            .contains("magic"));
    }
}
