//! Parquet tables through polars: a small column builder and atomic write / checked read.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use super::safe_fs::write_atomic;
use crate::config::InputError;

/// Builds a DataFrame column by column (all columns must have the same length).
#[derive(Default)]
pub struct TableBuilder {
    columns: Vec<Column>,
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn str(mut self, name: &str, values: Vec<String>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }
    pub fn opt_str(mut self, name: &str, values: Vec<Option<String>>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }
    pub fn u64(mut self, name: &str, values: Vec<u64>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }
    pub fn opt_u64(mut self, name: &str, values: Vec<Option<u64>>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }
    pub fn u32(mut self, name: &str, values: Vec<u32>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }
    pub fn f64(mut self, name: &str, values: Vec<f64>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }
    pub fn opt_f64(mut self, name: &str, values: Vec<Option<f64>>) -> Self {
        self.columns.push(Column::new(name.into(), values));
        self
    }

    pub fn build(self) -> anyhow::Result<DataFrame> {
        Ok(DataFrame::new_infer_height(self.columns)?)
    }
}

/// Writes `df` to `path` atomically (zstd-compressed Parquet).
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> anyhow::Result<()> {
    write_atomic(path, |file| {
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(df)
            .map_err(|e| anyhow::anyhow!("encoding Parquet: {e}"))?;
        Ok(())
    })
}

/// Reads a Parquet file; a missing or corrupt file is bad input naming the file.
pub fn read_parquet(path: &Path) -> Result<DataFrame, InputError> {
    let src = path.display().to_string();
    let file = File::open(path).map_err(|e| InputError::new(&src, format!("cannot open: {e}")))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| InputError::new(&src, format!("not a readable Parquet file: {e}")))
}

/// The row count a Parquet file's footer declares, without reading its data (a truncated
/// file has no footer: bad input naming the file).
pub fn parquet_rows(path: &Path) -> Result<usize, InputError> {
    let src = path.display().to_string();
    let file = File::open(path).map_err(|e| InputError::new(&src, format!("cannot open: {e}")))?;
    ParquetReader::new(file)
        .num_rows()
        .map_err(|e| InputError::new(&src, format!("not a readable Parquet file: {e}")))
}

/// Typed columns of a table read from `file`: a missing column or one of another type is bad
/// input naming the file and the column; nulls come back as `None`.
pub struct ColumnReader<'a> {
    pub df: &'a DataFrame,
    pub file: String,
}

impl<'a> ColumnReader<'a> {
    pub fn new(df: &'a DataFrame, file: &Path) -> Self {
        Self {
            df,
            file: file.display().to_string(),
        }
    }

    fn col(&self, name: &str) -> Result<&Column, InputError> {
        self.df
            .column(name)
            .map_err(|_| InputError::new(&self.file, format!("missing column `{name}`")))
    }

    /// Whether the table has column `name` (for columns added after older files were written).
    pub fn has(&self, name: &str) -> bool {
        self.df.column(name).is_ok()
    }

    fn wrong(&self, name: &str, want: &str) -> InputError {
        InputError::new(&self.file, format!("column `{name}` is not {want}"))
    }

    pub fn strs(&self, name: &str) -> Result<Vec<Option<String>>, InputError> {
        let c = self
            .col(name)?
            .str()
            .map_err(|_| self.wrong(name, "strings"))?;
        Ok(c.iter().map(|v| v.map(str::to_string)).collect())
    }

    pub fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>, InputError> {
        let c = self.col(name)?.f64().map_err(|_| self.wrong(name, "f64"))?;
        Ok(c.iter().collect())
    }

    pub fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>, InputError> {
        let c = self.col(name)?.u64().map_err(|_| self.wrong(name, "u64"))?;
        Ok(c.iter().collect())
    }

    pub fn u32s(&self, name: &str) -> Result<Vec<Option<u32>>, InputError> {
        let c = self.col(name)?.u32().map_err(|_| self.wrong(name, "u32"))?;
        Ok(c.iter().collect())
    }

    /// The values of a column that must have no nulls; a null is bad input naming its record.
    pub fn required<T>(&self, name: &str, values: Vec<Option<T>>) -> Result<Vec<T>, InputError> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| InputError::new(&self.file, format!("record {i}: null `{name}`")))
            })
            .collect()
    }
}
