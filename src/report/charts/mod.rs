//! The report's charts with plotters, each written as PNG and SVG. Text is drawn with the
//! DejaVu Sans font embedded in the binary, so charts render on a machine without fonts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

mod bars;
mod history;
mod probe;
mod spectra;
mod steps;

pub use bars::CosineBars;
pub use history::{has_history, History};
pub use probe::ProbeCurves;
pub use spectra::Spectra;
pub use steps::{CosineSteps, SpreadSteps};

use super::tables::{mean_sd, GridTables};
use crate::config::BASELINE_VARIANT;
use crate::log::write_text;

const W: u32 = 960;
const H: u32 = 540;
const POS: RGBColor = RGBColor(31, 119, 180);
const NEG: RGBColor = RGBColor(214, 39, 40);
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The embedded font is valid; if registration ever failed, text would be missing and
        // plotters reports it when drawing.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

type DrawResult = anyhow::Result<()>;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// A chart that can draw itself on any plotters backend.
pub trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Renders `chart` to `dir/name.png` and `dir/name.svg`, each written under a temporary
/// name and renamed.
pub fn save(chart: &impl Chart, dir: &Path, name: &str) -> DrawResult {
    register_font();
    let png = dir.join(format!("{name}.png"));
    // The drawing library creates the file itself, at a temporary name (a leftover or planted
    // one goes first, a link removed itself, never its target); the extension picks PNG.
    crate::log::write_via_temp(&png, ".png", |tmp| {
        let root = BitMapBackend::new(tmp, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
        Ok(())
    })?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
    }
    write_text(&dir.join(format!("{name}.svg")), &svg)
}

/// The legend box every chart uses.
fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", font_size))
        .draw()
        .map_err(err)
}

/// Mean over a variant's seeds of a per-step series, by step.
fn mean_series(
    t: &GridTables,
    variant: &str,
    f: fn(&crate::log::StepRecord) -> f64,
) -> Vec<(f64, f64)> {
    let mut acc: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
    for r in t.runs_of(variant) {
        for s in t.steps.get(&r.run_id).into_iter().flatten() {
            let v = f(s);
            if v.is_finite() {
                let e = acc.entry(s.step).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    acc.into_iter()
        .map(|(s, (v, n))| (s as f64, v / n as f64))
        .collect()
}

fn max_step(t: &GridTables) -> f64 {
    t.steps
        .values()
        .flatten()
        .map(|s| s.step)
        .max()
        .unwrap_or(1)
        .max(1) as f64
}
