//! `collapse-lab diagnose`: the collapse diagnosis for embeddings from any framework. Reads
//! NumPy `.npy` and `.safetensors` files, or a folder of them, one per training step (the
//! step from the file name: `step_001200.npy`), recognises the arrays by shape and name, and
//! computes every metric with its constants pinned ([`Constants`]) chunk by chunk in f64
//! ([`crate::metrics::streaming`]): an array is never held whole.
//!
//! Arrays: an `.npy` of shape (N, d) is one set `z`; (2, N, d) is a pair of views `z1`, `z2`
//! (row i of each: two views of image i). In a `.safetensors` file, `z1` and `z2` form a pair
//! and every other 2-D float tensor is a set of its own name.

pub mod npy;
mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::config::InputError;
use crate::metrics::verdict::{verdict, Verdict, COSINE_THRESHOLD, RANK_FRACTION, STD_FRACTION};
use crate::metrics::{PairMetrics, PairMoments, SetMetrics, SetMoments};
use npy::NpyArray;

pub use table::{write_cka, write_diagnostics, CKA_FILE, DIAGNOSTICS_FILE};

/// Rows read and accumulated at a time.
const CHUNK_ROWS: usize = 4096;

/// Every constant a metric depends on, written beside each row of diagnostics.parquet.
pub struct Constants;

impl Constants {
    /// RankMe's ε (p_k = σ_k / Σσ + ε), on the uncentred rows.
    pub const RANKME_EPS: f64 = 1e-7;
    /// Rows are l2-normalised with this norm floor before cosines and spread.
    pub const NORM_FLOOR: f64 = 1e-12;
    /// α-ReQ: least-squares fit of log λ_i on log i over the covariance eigenvalues above
    /// this fraction of the largest.
    pub const ALPHA_FIT_FLOOR: f64 = 1e-12;
}

/// One embedding set's diagnosis at one step.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub source: String,
    pub step: Option<u64>,
    pub set: String,
    pub metrics: SetMetrics,
    /// With a paired view: pos/neg cosine and alignment of the pair.
    pub pair: Option<PairMetrics>,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// What one input file holds, read lazily.
enum Input {
    Npy(NpyArray),
    Tensors(Vec<(String, Vec<f32>, usize)>),
}

/// Linear CKA between the first embedding set of two files (the same images, row by row).
#[derive(Debug, Clone)]
pub struct CkaResult {
    pub a: String,
    pub set_a: String,
    pub b: String,
    pub set_b: String,
    pub cka: f64,
    pub rows: u64,
    pub nonfinite_rows: u64,
}

/// [`CkaResult`] of files `a` and `b`: their first sets (`z`, or `z1` of a pair) must have
/// the same number of rows.
pub fn compare(a: &Path, b: &Path) -> anyhow::Result<CkaResult> {
    let (ia, ib) = (open(a)?, open(b)?);
    let first = |input: &Input, path: &Path| -> anyhow::Result<(String, usize, usize)> {
        matrices(input)
            .into_iter()
            .next()
            .map(|(s, n, d, _)| (s, n, d))
            .ok_or_else(|| bad(path, "holds no (N, d) embeddings"))
    };
    let ((sa, na, da), (sb, nb, db)) = (first(&ia, a)?, first(&ib, b)?);
    if na != nb {
        return Err(bad(
            b,
            format!(
                "`{sb}` has {nb} rows but `{sa}` of {} has {na}: CKA compares embeddings of the same images",
                a.display()
            ),
        ));
    }
    let (ma, mb) = (matrices(&ia), matrices(&ib));
    let (ra, rb) = (&ma[0].3, &mb[0].3);
    let mut m = crate::metrics::CkaMoments::new(da, db);
    for start in (0..na).step_by(CHUNK_ROWS) {
        let count = CHUNK_ROWS.min(na - start);
        m.add(&ra(start, count), &rb(start, count));
    }
    let (cka, rows, skipped) = m.finish().map_err(|why| bad(b, why))?;
    Ok(CkaResult {
        a: a.display().to_string(),
        set_a: sa,
        b: b.display().to_string(),
        set_b: sb,
        cka,
        rows,
        nonfinite_rows: skipped,
    })
}

fn bad(path: &Path, what: impl Into<String>) -> anyhow::Error {
    InputError::new(path.display().to_string(), what.into()).into()
}

/// The step a file name carries (its last run of digits): `step_001200.npy` → 1200.
fn step_of(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let digits: String = stem
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

fn is_embedding_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("npy") | Some("safetensors")
    )
}

/// The files `paths` name, with their steps: a folder contributes every `.npy` and
/// `.safetensors` in it (each must carry a step in its name), sorted by step.
pub fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Option<u64>)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<(PathBuf, Option<u64>)> = Vec::new();
            let entries = std::fs::read_dir(p).map_err(|e| bad(p, format!("cannot read: {e}")))?;
            for e in entries.flatten() {
                let f = e.path();
                if f.is_file() && is_embedding_file(&f) {
                    let step = step_of(&f).ok_or_else(|| {
                        bad(
                            &f,
                            "no step number in the file name (expected e.g. step_001200.npy)",
                        )
                    })?;
                    found.push((f, Some(step)));
                }
            }
            if found.is_empty() {
                return Err(bad(p, "holds no .npy or .safetensors file"));
            }
            found.sort_by_key(|(f, s)| (*s, f.clone()));
            out.extend(found);
        } else if is_embedding_file(p) {
            out.push((p.clone(), None));
        } else {
            return Err(bad(
                p,
                "expected a .npy or .safetensors file, or a folder of them",
            ));
        }
    }
    Ok(out)
}

fn open(path: &Path) -> anyhow::Result<Input> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let a = NpyArray::open(path)?;
            a.require_float()?;
            Ok(Input::Npy(a))
        }
        _ => {
            let tensors = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;
            let mut out = Vec::new();
            let mut names: Vec<_> = tensors.keys().cloned().collect();
            names.sort();
            for name in names {
                let t = &tensors[&name];
                if !matches!(
                    t.dtype(),
                    DType::F16 | DType::BF16 | DType::F32 | DType::F64
                ) {
                    continue;
                }
                if let Ok((n, d)) = t.dims2() {
                    let v = t
                        .to_dtype(DType::F32)
                        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                        .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
                    let _ = n;
                    out.push((name, v, d));
                }
            }
            if out.is_empty() {
                return Err(bad(
                    path,
                    "holds no 2-D float tensor (expected z, or z1 and z2, of shape (N, d))",
                ));
            }
            Ok(Input::Tensors(out))
        }
    }
}

/// Accumulates a set (or pair) from row blocks given by `rows(lead, start, count)`.
fn accumulate_npy(a: &NpyArray) -> anyhow::Result<Vec<(String, SetMoments, Option<PairMoments>)>> {
    match a.shape.as_slice() {
        &[n, d] if d > 0 => {
            let mut m = SetMoments::new(d);
            for start in (0..n).step_by(CHUNK_ROWS) {
                let count = CHUNK_ROWS.min(n - start);
                m.add(&a.rows((1, n, d), 0, start, count));
            }
            Ok(vec![("z".into(), m, None)])
        }
        &[2, n, d] if d > 0 => {
            let mut p = PairMoments::new(d);
            for start in (0..n).step_by(CHUNK_ROWS) {
                let count = CHUNK_ROWS.min(n - start);
                p.add(
                    &a.rows((2, n, d), 0, start, count),
                    &a.rows((2, n, d), 1, start, count),
                );
            }
            Ok(pair_sets(p))
        }
        shape => Err(bad(
            a.path(),
            format!(
                "array of shape {shape:?}: expected (N, d) embeddings or (2, N, d) paired views"
            ),
        )),
    }
}

fn pair_sets(p: PairMoments) -> Vec<(String, SetMoments, Option<PairMoments>)> {
    vec![
        ("z1".into(), p.first.clone(), Some(p.clone())),
        ("z2".into(), p.second.clone(), Some(p)),
    ]
}

fn accumulate_tensors(
    path: &Path,
    tensors: Vec<(String, Vec<f32>, usize)>,
) -> anyhow::Result<Vec<(String, SetMoments, Option<PairMoments>)>> {
    let by_name: BTreeMap<String, (Vec<f32>, usize)> =
        tensors.into_iter().map(|(n, v, d)| (n, (v, d))).collect();
    let mut out = Vec::new();
    if let (Some((a, da)), Some((b, db))) = (by_name.get("z1"), by_name.get("z2")) {
        if da != db || a.len() != b.len() {
            return Err(bad(
                path,
                format!(
                    "z1 ({} × {da}) and z2 ({} × {db}) must have the same shape to be paired views",
                    a.len() / da.max(&1),
                    b.len() / db.max(&1)
                ),
            ));
        }
        let mut p = PairMoments::new(*da);
        for (ca, cb) in a.chunks(CHUNK_ROWS * da).zip(b.chunks(CHUNK_ROWS * da)) {
            p.add(ca, cb);
        }
        out.extend(pair_sets(p));
    }
    for (name, (v, d)) in &by_name {
        if out.iter().any(|(n, _, _)| n == name) {
            continue;
        }
        let mut m = SetMoments::new(*d);
        for c in v.chunks(CHUNK_ROWS * d) {
            m.add(c);
        }
        out.push((name.clone(), m, None));
    }
    Ok(out)
}

/// The verdict of one set, with the rule's reasons in words (the rules of `run`,
/// [`crate::metrics::verdict`]): without a paired view, pos cosine is read as neg cosine — a
/// set whose distinct rows all point the same way has collapsed whatever its views do.
fn judge(m: &SetMetrics, pair: Option<&PairMetrics>) -> (Verdict, Vec<String>) {
    let neg = pair.map_or(m.neg_cos, |p| p.neg_cos);
    let pos = pair.map_or(neg, |p| p.pos_cos);
    let v = verdict(pos, neg, m.z_std, m.effective_rank, m.dim);
    let mut reasons = Vec::new();
    if pos > COSINE_THRESHOLD && neg > COSINE_THRESHOLD {
        reasons.push(match pair {
            Some(_) => format!("pos {pos:.4} and neg {neg:.4} cosine > {COSINE_THRESHOLD}"),
            None => format!("distinct rows' cosine {neg:.4} > {COSINE_THRESHOLD}"),
        });
    }
    let std_floor = STD_FRACTION / (m.dim as f64).sqrt();
    if m.z_std < std_floor {
        reasons.push(format!(
            "std of l2-normalised rows {:.4} < {STD_FRACTION}/√d = {std_floor:.4}",
            m.z_std
        ));
    }
    let rank_floor = RANK_FRACTION * m.dim as f64;
    if v != Verdict::Collapsed && m.effective_rank < rank_floor {
        reasons.push(format!(
            "effective rank {:.2} < {:.0} % of d = {rank_floor:.2}",
            m.effective_rank,
            100.0 * RANK_FRACTION
        ));
    }
    if m.rank_cap < m.dim {
        reasons.push(format!(
            "only {} rows for d = {}: the rank cannot exceed {} (a sample limit, not the embedding's)",
            m.rows, m.dim, m.rank_cap
        ));
    }
    if m.nonfinite_rows > 0 {
        reasons.push(format!("{} rows with NaN or ∞ left out", m.nonfinite_rows));
    }
    (v, reasons)
}

/// The (N, d) matrices of a file, each as a row reader: (set name, N, d, rows(start, count)).
type RowReader<'a> = Box<dyn Fn(usize, usize) -> Vec<f32> + 'a>;

fn matrices(input: &Input) -> Vec<(String, usize, usize, RowReader<'_>)> {
    match input {
        Input::Npy(a) => match *a.shape.as_slice() {
            [n, d] => vec![(
                "z".into(),
                n,
                d,
                Box::new(move |s, c| a.rows((1, n, d), 0, s, c)),
            )],
            [2, n, d] => (0..2)
                .map(|lead| {
                    let r: RowReader<'_> = Box::new(move |s, c| a.rows((2, n, d), lead, s, c));
                    (format!("z{}", lead + 1), n, d, r)
                })
                .collect(),
            _ => Vec::new(),
        },
        Input::Tensors(t) => t
            .iter()
            .map(|(name, v, d)| {
                let d = *d;
                let r: RowReader<'_> = Box::new(move |s, c| v[s * d..(s + c) * d].to_vec());
                (name.clone(), v.len() / d.max(1), d, r)
            })
            .collect(),
    }
}

/// Per class of `labels`, the moments of the rows of one matrix, chunk by chunk.
fn class_moments(
    n: usize,
    d: usize,
    labels: &[i64],
    read: &RowReader<'_>,
) -> BTreeMap<i64, SetMoments> {
    let mut by_class: BTreeMap<i64, SetMoments> = BTreeMap::new();
    for start in (0..n).step_by(CHUNK_ROWS) {
        let count = CHUNK_ROWS.min(n - start);
        let rows = read(start, count);
        let mut groups: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
        for (i, row) in rows.chunks_exact(d).enumerate() {
            groups
                .entry(labels[start + i])
                .or_default()
                .extend_from_slice(row);
        }
        for (class, block) in groups {
            by_class
                .entry(class)
                .or_insert_with(|| SetMoments::new(d))
                .add(&block);
        }
    }
    by_class
}

/// Diagnoses every file of `paths` (a folder gives one step per file).
pub fn diagnose(paths: &[PathBuf]) -> anyhow::Result<Vec<Diagnosis>> {
    diagnose_with_labels(paths, None)
}

/// [`diagnose`], and with `labels` (one class per row, as `--labels` reads them) each set's
/// classes one at a time as sets `NAME|class=K`: the effective rank of each class shows a
/// collapse that one class suffers and a single number hides.
pub fn diagnose_with_labels(
    paths: &[PathBuf],
    labels: Option<&Path>,
) -> anyhow::Result<Vec<Diagnosis>> {
    let labels = labels
        .map(|p| -> anyhow::Result<(PathBuf, Vec<i64>)> {
            Ok((p.to_path_buf(), NpyArray::open(p)?.labels()?))
        })
        .transpose()?;
    let mut out = Vec::new();
    for (path, step) in files(paths)? {
        let input = open(&path)?;
        let sets = match &input {
            Input::Npy(a) => accumulate_npy(a)?,
            Input::Tensors(t) => accumulate_tensors(&path, t.clone())?,
        };
        let mut per_class = Vec::new();
        if let Some((lpath, l)) = &labels {
            for (set, n, d, read) in matrices(&input) {
                if n != l.len() {
                    return Err(bad(
                        &path,
                        format!(
                            "`{set}` has {n} rows but {} holds {} labels",
                            lpath.display(),
                            l.len()
                        ),
                    ));
                }
                for (class, m) in class_moments(n, d, l, &read) {
                    per_class.push((format!("{set}|class={class}"), m, None));
                }
            }
        }
        let sets = sets.into_iter().chain(per_class);
        for (set, moments, pair) in sets {
            let metrics = moments
                .finish()
                .map_err(|why| bad(&path, format!("`{set}`: {why}")))?;
            let pair = pair
                .map(|p| p.finish())
                .transpose()
                .map_err(|why| bad(&path, format!("`{set}` pair: {why}")))?;
            let (verdict, reasons) = judge(&metrics, pair.as_ref());
            out.push(Diagnosis {
                source: path.display().to_string(),
                step,
                set,
                metrics,
                pair,
                verdict,
                reasons,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_from_file_names() {
        assert_eq!(step_of(Path::new("d/step_001200.npy")), Some(1200));
        assert_eq!(step_of(Path::new("emb-7.safetensors")), Some(7));
        assert_eq!(step_of(Path::new("final.npy")), None);
    }

    #[test]
    fn a_collapsed_set_and_a_spread_one_are_told_apart_with_reasons() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (n, d) = (64usize, 16usize);
        // Collapsed: every row the same direction, small noise.
        let same: Vec<f64> = (0..n * d)
            .map(|k| 1.0 + 1e-4 * ((k * 7919 % 13) as f64))
            .collect();
        npy::write_npy(&dir.path().join("c.npy"), &[n, d], &same, "<f4", false);
        // Spread: two views of Gaussian-like rows (a deterministic scramble), the second a
        // small perturbation of the first.
        let spread: Vec<f64> = (0..2 * n * d)
            .map(|k| {
                let base = ((k % (n * d)) as f64 * 0.618_033_988).fract() - 0.5;
                base + if k >= n * d { 0.05 } else { 0.0 }
            })
            .collect();
        npy::write_npy(&dir.path().join("p.npy"), &[2, n, d], &spread, "<f4", false);
        let c = diagnose(&[dir.path().join("c.npy")])?;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].verdict, Verdict::Collapsed, "{:?}", c[0]);
        assert!(
            c[0].reasons.iter().any(|r| r.contains("cosine")),
            "{:?}",
            c[0].reasons
        );
        let p = diagnose(&[dir.path().join("p.npy")])?;
        assert_eq!(p.len(), 2);
        let pair = p[0].pair.as_ref().expect("paired");
        assert!(pair.pos_cos > 0.9 && pair.neg_cos < 0.5, "{pair:?}");
        assert_ne!(p[0].verdict, Verdict::Collapsed, "{:?}", p[0]);
        // A folder of steps, in step order.
        let steps = dir.path().join("steps");
        std::fs::create_dir(&steps)?;
        std::fs::copy(dir.path().join("p.npy"), steps.join("step_000200.npy"))?;
        std::fs::copy(dir.path().join("c.npy"), steps.join("step_000010.npy"))?;
        let s = diagnose(std::slice::from_ref(&steps))?;
        let order: Vec<_> = s.iter().map(|x| (x.step, x.set.as_str())).collect();
        assert_eq!(
            order,
            [(Some(10), "z"), (Some(200), "z1"), (Some(200), "z2")]
        );
        // A shape it cannot use: one line naming the file and the expected shapes.
        npy::write_npy(&dir.path().join("v.npy"), &[n * d], &same, "<f4", false);
        let e = diagnose(&[dir.path().join("v.npy")]).expect_err("1-D");
        assert!(
            e.to_string().contains("v.npy") && e.to_string().contains("(N, d)"),
            "{e}"
        );
        Ok(())
    }
}
