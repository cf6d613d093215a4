//! `evals.parquet` (one row per evaluation) and `spectrum.parquet` (covariance eigenvalues of
//! y and z at each evaluation). The metric columns are written by one function, which
//! `analysis_evals.parquet` shares.

use std::path::Path;

use std::collections::BTreeMap;

use super::parquet::{read_parquet, write_parquet, ColumnReader, TableBuilder};
use crate::config::InputError;

/// One row of `evals.parquet` plus the spectra for `spectrum.parquet`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRecord {
    /// 0 = before training, then the number of epochs completed.
    pub epoch: u32,
    pub step: u64,
    /// kNN and probe accuracy over every evaluation image, each scored once by the fold that
    /// left it out (k-fold cross-validation).
    pub knn_acc: Option<f64>,
    pub probe_acc: Option<f64>,
    /// Standard errors of those accuracies: the folds' accuracies' sd / √folds.
    pub knn_acc_se: Option<f64>,
    pub probe_acc_se: Option<f64>,
    pub y_std: f64,
    pub y_effective_rank: f64,
    pub z_std: f64,
    pub z_effective_rank: f64,
    /// α-ReQ of the covariance spectrum of y.
    pub alpha_req: f64,
    /// Alignment of y over two augmented views of each evaluation image.
    pub align: f64,
    /// Uniformity of y (first view).
    pub uniform: f64,
    pub z_var_min: f64,
    pub z_var_median: f64,
    pub z_var_max: f64,
    /// `dataset.split_seed` the folds were dealt with.
    pub split_seed: u64,
    /// The most images one fold's probe was fitted on (and its kNN memory holds).
    pub fit_size: u64,
    /// Images the probe and kNN were scored on (each once, over all folds).
    pub score_size: u64,
    /// Cross-validation folds (`log.eval_folds`; 0 in tables written before folds existed,
    /// whose probe fitted on one half and scored on the other).
    pub folds: u32,
    pub y_spectrum: Vec<f64>,
    pub z_spectrum: Vec<f64>,
}

/// Adds `epoch`, `step` and every evaluation metric, one row per record.
pub fn metric_columns(table: TableBuilder, rows: &[&EvalRecord]) -> TableBuilder {
    let col = |f: fn(&EvalRecord) -> f64| rows.iter().map(|r| f(r)).collect::<Vec<f64>>();
    table
        .u32("epoch", rows.iter().map(|r| r.epoch).collect())
        .u64("step", rows.iter().map(|r| r.step).collect())
        .opt_f64("knn_acc", rows.iter().map(|r| r.knn_acc).collect())
        .opt_f64("probe_acc", rows.iter().map(|r| r.probe_acc).collect())
        .f64("y_std", col(|r| r.y_std))
        .f64("y_effective_rank", col(|r| r.y_effective_rank))
        .f64("z_std", col(|r| r.z_std))
        .f64("z_effective_rank", col(|r| r.z_effective_rank))
        .f64("alpha_req", col(|r| r.alpha_req))
        .f64("align", col(|r| r.align))
        .f64("uniform", col(|r| r.uniform))
        .f64("z_var_min", col(|r| r.z_var_min))
        .f64("z_var_median", col(|r| r.z_var_median))
        .f64("z_var_max", col(|r| r.z_var_max))
        .u64("split_seed", rows.iter().map(|r| r.split_seed).collect())
        .u64("fit_size", rows.iter().map(|r| r.fit_size).collect())
        .u64("score_size", rows.iter().map(|r| r.score_size).collect())
        .u32("folds", rows.iter().map(|r| r.folds).collect())
        .opt_f64("knn_acc_se", rows.iter().map(|r| r.knn_acc_se).collect())
        .opt_f64(
            "probe_acc_se",
            rows.iter().map(|r| r.probe_acc_se).collect(),
        )
}

/// `evals.parquet`'s columns, in order (the run's identity, then [`metric_columns`]).
pub const EVALS_COLUMNS: [&str; 23] = [
    "run_id",
    "variant",
    "seed",
    "epoch",
    "step",
    "knn_acc",
    "probe_acc",
    "y_std",
    "y_effective_rank",
    "z_std",
    "z_effective_rank",
    "alpha_req",
    "align",
    "uniform",
    "z_var_min",
    "z_var_median",
    "z_var_max",
    "split_seed",
    "fit_size",
    "score_size",
    "folds",
    "knn_acc_se",
    "probe_acc_se",
];

/// `spectrum.parquet`'s columns, in order.
pub const SPECTRUM_COLUMNS: [&str; 5] = ["run_id", "epoch", "space", "index", "singular_value"];

pub fn write_evals(
    path: &Path,
    run_id: &str,
    variant: &str,
    seed: u64,
    rows: &[EvalRecord],
) -> anyhow::Result<()> {
    let n = rows.len();
    let [c_run_id, c_variant, c_seed, ..] = EVALS_COLUMNS;
    let base = TableBuilder::new()
        .str(c_run_id, vec![run_id.to_string(); n])
        .str(c_variant, vec![variant.to_string(); n])
        .u64(c_seed, vec![seed; n]);
    let mut df = metric_columns(base, &rows.iter().collect::<Vec<_>>()).build()?;
    write_parquet(path, &mut df)
}

pub fn write_spectrum(path: &Path, run_id: &str, rows: &[EvalRecord]) -> anyhow::Result<()> {
    let (mut epoch, mut space, mut index, mut value) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        for (name, spectrum) in [("y", &r.y_spectrum), ("z", &r.z_spectrum)] {
            for (i, v) in spectrum.iter().enumerate() {
                epoch.push(r.epoch);
                space.push(name.to_string());
                index.push(i as u32);
                value.push(*v);
            }
        }
    }
    let n = value.len();
    let [c_run_id, c_epoch, c_space, c_index, c_value] = SPECTRUM_COLUMNS;
    let mut df = TableBuilder::new()
        .str(c_run_id, vec![run_id.to_string(); n])
        .u32(c_epoch, epoch)
        .str(c_space, space)
        .u32(c_index, index)
        .f64(c_value, value)
        .build()?;
    write_parquet(path, &mut df)
}

/// Reads what [`write_evals`] wrote, and, given `spectrum`, what [`write_spectrum`] wrote into
/// each record's spectra (otherwise they are left empty). Every value exact.
pub fn read_evals(path: &Path, spectrum: Option<&Path>) -> Result<Vec<EvalRecord>, InputError> {
    let df = read_parquet(path)?;
    let c = ColumnReader::new(&df, path);
    let f = |name: &str| c.required(name, c.f64s(name)?);
    let u = |name: &str| c.required(name, c.u64s(name)?);
    let (epoch, step) = (c.required("epoch", c.u32s("epoch")?)?, u("step")?);
    let (knn_acc, probe_acc) = (c.f64s("knn_acc")?, c.f64s("probe_acc")?);
    let (y_std, y_effective_rank) = (f("y_std")?, f("y_effective_rank")?);
    let (z_std, z_effective_rank) = (f("z_std")?, f("z_effective_rank")?);
    let (alpha_req, align, uniform) = (f("alpha_req")?, f("align")?, f("uniform")?);
    let (z_var_min, z_var_median, z_var_max) =
        (f("z_var_min")?, f("z_var_median")?, f("z_var_max")?);
    let (split_seed, fit_size, score_size) = (u("split_seed")?, u("fit_size")?, u("score_size")?);
    // Columns added with cross-validation: absent from older run folders.
    let n = df.height();
    let folds = if c.has("folds") {
        c.required("folds", c.u32s("folds")?)?
    } else {
        vec![0; n]
    };
    let se = |name: &str| {
        if c.has(name) {
            c.f64s(name)
        } else {
            Ok(vec![None; n])
        }
    };
    let (knn_acc_se, probe_acc_se) = (se("knn_acc_se")?, se("probe_acc_se")?);
    let mut spectra = match spectrum {
        Some(path) => read_spectrum(path)?,
        None => BTreeMap::new(),
    };
    Ok((0..df.height())
        .map(|i| {
            let mut take = |space: &str| spectra.remove(&(epoch[i], space.to_string()));
            EvalRecord {
                epoch: epoch[i],
                step: step[i],
                knn_acc: knn_acc[i],
                probe_acc: probe_acc[i],
                knn_acc_se: knn_acc_se[i],
                probe_acc_se: probe_acc_se[i],
                y_std: y_std[i],
                y_effective_rank: y_effective_rank[i],
                z_std: z_std[i],
                z_effective_rank: z_effective_rank[i],
                alpha_req: alpha_req[i],
                align: align[i],
                uniform: uniform[i],
                z_var_min: z_var_min[i],
                z_var_median: z_var_median[i],
                z_var_max: z_var_max[i],
                split_seed: split_seed[i],
                fit_size: fit_size[i],
                score_size: score_size[i],
                folds: folds[i],
                y_spectrum: take("y").unwrap_or_default(),
                z_spectrum: take("z").unwrap_or_default(),
            }
        })
        .collect())
}

/// `spectrum.parquet` by (epoch, space), each spectrum in index order.
fn read_spectrum(path: &Path) -> Result<BTreeMap<(u32, String), Vec<f64>>, InputError> {
    let df = read_parquet(path)?;
    let c = ColumnReader::new(&df, path);
    let [_, c_epoch, c_space, c_index, c_value] = SPECTRUM_COLUMNS;
    let epoch = c.required(c_epoch, c.u32s(c_epoch)?)?;
    let space = c.required(c_space, c.strs(c_space)?)?;
    let index = c.required(c_index, c.u32s(c_index)?)?;
    let value = c.required(c_value, c.f64s(c_value)?)?;
    let mut out: BTreeMap<(u32, String), Vec<(u32, f64)>> = BTreeMap::new();
    for i in 0..df.height() {
        out.entry((epoch[i], space[i].clone()))
            .or_default()
            .push((index[i], value[i]));
    }
    Ok(out
        .into_iter()
        .map(|(key, mut values)| {
            values.sort_by_key(|v| v.0);
            (key, values.into_iter().map(|v| v.1).collect())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &Path) -> Vec<String> {
        super::super::read_parquet(path)
            .expect("readable")
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn written_columns_are_the_declared_ones() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let record = EvalRecord {
            epoch: 1,
            step: 8,
            knn_acc: Some(0.5),
            probe_acc: None,
            knn_acc_se: Some(0.01),
            probe_acc_se: None,
            y_std: 0.1,
            y_effective_rank: 3.0,
            z_std: 0.2,
            z_effective_rank: 2.0,
            alpha_req: 1.1,
            align: 0.3,
            uniform: -1.0,
            z_var_min: 0.0,
            z_var_median: 0.1,
            z_var_max: 0.2,
            split_seed: 0,
            fit_size: 10,
            score_size: 10,
            folds: 5,
            y_spectrum: vec![2.0, 1.0],
            z_spectrum: vec![1.0],
        };
        let (evals, spectrum) = (dir.path().join("e.parquet"), dir.path().join("s.parquet"));
        write_evals(&evals, "r", "v", 0, std::slice::from_ref(&record))?;
        write_spectrum(&spectrum, "r", std::slice::from_ref(&record))?;
        assert_eq!(names(&evals), EVALS_COLUMNS);
        assert_eq!(names(&spectrum), SPECTRUM_COLUMNS);
        // The readers give back what was written, spectra included.
        assert_eq!(read_evals(&evals, Some(&spectrum))?, vec![record.clone()]);
        let bare = read_evals(&evals, None)?;
        assert!(bare[0].y_spectrum.is_empty() && bare[0].epoch == 1);
        Ok(())
    }
}
