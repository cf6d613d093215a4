//! The report's charts with plotters, each written as PNG and SVG. Text is drawn with the
//! DejaVu Sans font embedded in the binary, so charts render on a machine without fonts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

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
    let tmp = dir.join(format!(".{name}.tmp-{}.png", std::process::id()));
    let drawn = (|| -> DrawResult {
        let root = BitMapBackend::new(&tmp, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
        Ok(())
    })();
    if let Err(e) = drawn.and_then(|_| std::fs::rename(&tmp, &png).map_err(anyhow::Error::from)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", png.display())));
    }
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

/// Chart 1: positive (blue) and negative (red) cosine per variant, mean over seeds of the
/// last epoch's mean, with the seed spread (±1 sd).
pub struct CosineBars<'a>(pub &'a GridTables);

impl Chart for CosineBars<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let t = self.0;
        let variants = t.variants();
        let n = variants.len().max(1) as f64;
        let (upper, lower) = root.split_vertically(H - 60);
        let mut chart = ChartBuilder::on(&upper)
            .caption(
                format!(
                    "{}: cosine similarity, last epoch (mean ± sd over seeds)",
                    t.name
                ),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(10)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..n, -0.05f64..1.3)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(7)
            .y_label_formatter(&|v| {
                if *v <= 1.0 + 1e-9 {
                    format!("{v:.1}")
                } else {
                    String::new()
                }
            })
            .y_desc("cosine")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        for (i, v) in variants.iter().enumerate() {
            let pos = t.variant_stat(v, |r| r.final_pos_cos);
            let neg = t.variant_stat(v, |r| r.final_neg_cos);
            for (k, stat, c) in [(0.0, pos, POS), (1.0, neg, NEG)] {
                let Some((m, sd)) = stat else { continue };
                let x0 = i as f64 + 0.12 + k * 0.38;
                let x1 = x0 + 0.36;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x1, m)],
                        c.filled(),
                    )))
                    .map_err(err)?;
                let xc = (x0 + x1) / 2.0;
                let whisker = vec![
                    PathElement::new(vec![(xc, m - sd), (xc, m + sd)], BLACK.stroke_width(2)),
                    PathElement::new(
                        vec![(xc - 0.06, m - sd), (xc + 0.06, m - sd)],
                        BLACK.stroke_width(2),
                    ),
                    PathElement::new(
                        vec![(xc - 0.06, m + sd), (xc + 0.06, m + sd)],
                        BLACK.stroke_width(2),
                    ),
                ];
                chart.draw_series(whisker).map_err(err)?;
            }
            // Variant name under its bars, in the strip below the plot.
            let (px, _) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            lower
                .draw(&Text::new(
                    v.clone(),
                    (px, 8),
                    ("sans-serif", 16).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Top,
                        ),
                    ),
                ))
                .map_err(err)?;
        }
        chart
            .draw_series([Rectangle::new([(0.0, -1.0), (0.0, -1.0)], POS.filled())])
            .map_err(err)?
            .label("positive pairs (two views of an image)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], POS.filled()));
        chart
            .draw_series([Rectangle::new([(0.0, -1.0), (0.0, -1.0)], NEG.filled())])
            .map_err(err)?
            .label("negative pairs (different images)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], NEG.filled()));
        legend(&mut chart, SeriesLabelPosition::UpperRight, 15)?;
        Ok(())
    }
}

/// Chart 2: linear-probe accuracy per evaluation epoch per variant, with the
/// untrained-encoder baseline as a dashed line.
pub struct ProbeCurves<'a>(pub &'a GridTables);

impl Chart for ProbeCurves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let t = self.0;
        let variants = t.variants();
        let mut curves = Vec::new();
        let mut max_epoch = 1u32;
        for v in &variants {
            let mut acc: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
            for r in t.runs_of(v) {
                for e in t.evals.get(&r.run_id).into_iter().flatten() {
                    if let Some(p) = e.probe_acc {
                        acc.entry(e.epoch).or_default().push(100.0 * p);
                        max_epoch = max_epoch.max(e.epoch);
                    }
                }
            }
            let pts: Vec<(f64, f64)> = acc
                .into_iter()
                .filter_map(|(e, v)| mean_sd(&v).map(|(m, _)| (e as f64, m)))
                .collect();
            curves.push((v.clone(), pts));
        }
        let random = t.variant_stat(BASELINE_VARIANT, |r| r.final_probe_acc.map(|p| 100.0 * p));
        let top = curves
            .iter()
            .flat_map(|c| c.1.iter().map(|p| p.1))
            .chain(random.map(|r| r.0))
            .fold(10.0f64, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: linear-probe accuracy (mean over seeds)", t.name),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..max_epoch as f64, 0f64..(top * 1.15).min(100.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch (0 = before training)")
            // One label per epoch when there are few: plotters' default 10 would put
            // labels at fractional epochs, printed rounded (0, 0, 1, 2, 2, …).
            .x_labels((max_epoch as usize + 1).min(10))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("probe accuracy (%)")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;
        for (i, (v, pts)) in curves.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
                .map_err(err)?
                .label(v.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(err)?;
        }
        if let Some((m, _)) = random {
            let dashes: Vec<_> = (0..40)
                .filter(|k| k % 2 == 0)
                .map(|k| {
                    let a = max_epoch as f64 * k as f64 / 40.0;
                    let b = max_epoch as f64 * (k + 1) as f64 / 40.0;
                    PathElement::new(vec![(a, m), (b, m)], BLACK.stroke_width(2))
                })
                .collect();
            chart
                .draw_series(dashes)
                .map_err(err)?
                .label(format!("random encoder ({m:.1} %)"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 15)?;
        Ok(())
    }
}

/// Chart 3: pos_cos and neg_cos per step, one panel per variant (mean over seeds).
pub struct CosineSteps<'a>(pub &'a GridTables);

impl Chart for CosineSteps<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let t = self.0;
        let variants = t.variants();
        let cols = 3usize;
        let rows = variants.len().div_ceil(cols).max(1);
        let (title, body) = root.split_vertically(36);
        title
            .titled(
                &format!(
                    "{}: positive (blue) and negative (red) cosine per step",
                    t.name
                ),
                ("sans-serif", 22),
            )
            .map_err(err)?;
        let panels = body.split_evenly((rows, cols));
        let steps = max_step(t);
        for (i, v) in variants.iter().enumerate() {
            let mut chart = ChartBuilder::on(&panels[i])
                .caption(v.as_str(), ("sans-serif", 17))
                .margin(6)
                .x_label_area_size(28)
                .y_label_area_size(40)
                .build_cartesian_2d(0f64..steps, -0.2f64..1.05)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_labels(4)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_labels(5)
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            for (f, c) in [
                (mean_series(t, v, |s| s.pos_cos), POS),
                (mean_series(t, v, |s| s.neg_cos), NEG),
            ] {
                chart
                    .draw_series(LineSeries::new(f, c.stroke_width(2)))
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

/// Chart 4: z_std and effective rank per step per variant, with 1/√d and d marked.
pub struct SpreadSteps<'a>(pub &'a GridTables);

impl Chart for SpreadSteps<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let t = self.0;
        let variants = t.variants();
        let d = t.projection_dim.unwrap_or(1) as f64;
        let steps = max_step(t);
        let (title, body) = root.split_vertically(36);
        title
            .titled(
                &format!(
                    "{}: spread of the projections z per step (mean over seeds)",
                    t.name
                ),
                ("sans-serif", 22),
            )
            .map_err(err)?;
        let (left, right) = body.split_horizontally(W / 2);
        type Getter = fn(&crate::log::StepRecord) -> f64;
        type Panel<'p, DB> = (
            &'p DrawingArea<DB, Shift>,
            &'static str,
            Getter,
            f64,
            String,
        );
        let panels: [Panel<DB>; 2] = [
            (
                &left,
                "std of l2-normalised z",
                |s| s.z_std,
                1.0 / d.sqrt(),
                format!("1/√d = {:.3}", 1.0 / d.sqrt()),
            ),
            (
                &right,
                "effective rank of z (RankMe)",
                |s| s.effective_rank,
                d,
                format!("d = {d}"),
            ),
        ];
        for (k, (area, desc, f, reference, ref_label)) in panels.into_iter().enumerate() {
            let top = reference * 1.2;
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..steps, 0f64..top)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_desc(desc)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(err)?;
            for (i, v) in variants.iter().enumerate() {
                let c = colour(i);
                let s = chart
                    .draw_series(LineSeries::new(mean_series(t, v, f), c.stroke_width(2)))
                    .map_err(err)?;
                if k == 0 {
                    s.label(v.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
                }
            }
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, reference), (steps, reference)],
                    BLACK.stroke_width(1),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    ref_label,
                    (steps * 0.02, reference * 1.06),
                    ("sans-serif", 14).into_font(),
                )))
                .map_err(err)?;
            if k == 0 {
                legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
            }
        }
        Ok(())
    }
}

/// Chart 5: covariance spectra (log scale) of y and z at the last evaluation, per variant.
pub struct Spectra<'a>(pub &'a GridTables);

impl Chart for Spectra<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let t = self.0;
        let variants = t.variants();
        let (title, body) = root.split_vertically(36);
        title
            .titled(
                &format!(
                    "{}: covariance spectrum at the last evaluation (mean over seeds)",
                    t.name
                ),
                ("sans-serif", 22),
            )
            .map_err(err)?;
        let (left, right) = body.split_horizontally(W / 2);
        for (k, (area, space)) in [(&left, "y"), (&right, "z")].into_iter().enumerate() {
            let mut curves = Vec::new();
            for v in &variants {
                let lists: Vec<&Vec<f64>> = t
                    .runs_of(v)
                    .filter_map(|r| t.spectra.get(&r.run_id).and_then(|s| s.get(space)))
                    .collect();
                let len = lists.iter().map(|l| l.len()).min().unwrap_or(0);
                let pts: Vec<(f64, f64)> = (0..len)
                    .map(|i| {
                        let m = lists.iter().map(|l| l[i]).sum::<f64>() / lists.len() as f64;
                        ((i + 1) as f64, m.max(1e-12))
                    })
                    .collect();
                curves.push(pts);
            }
            let xmax = curves.iter().map(|c| c.len()).max().unwrap_or(1).max(2) as f64;
            let ymax = curves.iter().flatten().map(|p| p.1).fold(1e-6f64, f64::max) * 2.0;
            let ymin = (curves
                .iter()
                .flatten()
                .map(|p| p.1)
                .fold(f64::INFINITY, f64::min)
                / 2.0)
                .clamp(1e-12, ymax / 10.0);
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .caption(
                    format!(
                        "{space} ({})",
                        if space == "y" {
                            "encoder"
                        } else {
                            "projection"
                        }
                    ),
                    ("sans-serif", 17),
                )
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(1f64..xmax, (ymin..ymax).log_scale())
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("index")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_desc("eigenvalue")
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(err)?;
            for (i, (v, pts)) in variants.iter().zip(curves).enumerate() {
                let c = colour(i);
                let s = chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(err)?;
                if k == 1 {
                    s.label(v.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
                }
            }
            if k == 1 {
                legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
            }
        }
        Ok(())
    }
}
