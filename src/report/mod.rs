//! The report of a grid: charts (PNG + SVG), the claims table (F1–F7) and the study's
//! variant table, as Markdown, self-contained HTML (charts beside it) and Parquet.

pub(crate) mod charts;
pub(crate) mod claims;
pub(crate) mod page;
pub(crate) mod statistics;
pub(crate) mod tables;

use std::path::{Path, PathBuf};

pub use claims::evaluate_claims;
pub use tables::GridTables;

/// Renders the report of `grid_dir` into `out` (default `grid_dir/report`). Returns the folder.
pub fn render(grid_dir: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let tables = GridTables::load(grid_dir)?;
    let out = out.map_or_else(|| grid_dir.join("report"), Path::to_path_buf);
    // A link in place of the report folder is refused (its parent is the user's to choose).
    crate::log::refuse_symlink(&out)?;
    crate::log::create_given_dir(&out)?;
    let claims = evaluate_claims(&tables);
    charts::save(&charts::CosineBars(&tables), &out, "cosine_bars")?;
    charts::save(&charts::ProbeCurves(&tables), &out, "probe_accuracy")?;
    charts::save(&charts::CosineSteps(&tables), &out, "cosine_steps")?;
    charts::save(&charts::SpreadSteps(&tables), &out, "spread_steps")?;
    charts::save(&charts::Spectra(&tables), &out, "spectra")?;
    if charts::has_history(&tables) {
        charts::save(&charts::History(&tables), &out, page::HISTORY_CHART.0)?;
    }
    page::write_page(&tables, &claims, &out)?;
    Ok(out)
}
