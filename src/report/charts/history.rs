//! The history of a long run: per epoch, the gap pos − neg (from the step log), the probe
//! accuracy and the effective rank of the evaluation images' projections (at each evaluation),
//! each variant's mean over seeds with a band of ± one seed standard deviation — so that a
//! "collapse, then recover" (F6) is visible, or visibly absent.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::*;

/// Evaluations per run from which a grid's report draws its history (the default grid's
/// three — before training, halfway, at the end — draw none).
pub const HISTORY_MIN_EVALS: usize = 4;

/// Whether any run of the grid was evaluated often enough to draw a history.
pub fn has_history(t: &GridTables) -> bool {
    t.evals.values().any(|e| e.len() >= HISTORY_MIN_EVALS)
}

/// One panel's series: per variant, (epoch, mean, sd) over seeds.
type Series = Vec<(String, Vec<(f64, f64, f64)>)>;

/// Per variant, the values `per_run` gives each run (epoch → value), gathered by epoch.
fn by_epoch(t: &GridTables, per_run: impl Fn(&str) -> BTreeMap<u32, f64>) -> Series {
    t.variants()
        .into_iter()
        .map(|v| {
            let mut acc: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
            for r in t.runs_of(&v) {
                for (e, x) in per_run(&r.run_id) {
                    acc.entry(e).or_default().push(x);
                }
            }
            let pts = acc
                .into_iter()
                .filter_map(|(e, xs)| mean_sd(&xs).map(|(m, s)| (e as f64, m, s)))
                .collect();
            (v, pts)
        })
        .collect()
}

/// Values of each run's evaluations by epoch.
fn eval_metric(
    t: &GridTables,
    run_id: &str,
    f: fn(&crate::log::EvalRecord) -> Option<f64>,
) -> BTreeMap<u32, f64> {
    t.evals
        .get(run_id)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.epoch, f(e).filter(|x| x.is_finite())?)))
        .collect()
}

pub struct History<'a>(pub &'a GridTables);

impl Chart for History<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let t = self.0;
        // The gap of epoch e (0-based in the step log) is drawn at e + 1: the evaluation that
        // ends that epoch.
        let gap = by_epoch(t, |id| {
            t.gap_by_epoch(id)
                .into_iter()
                .map(|(e, g)| (e + 1, g))
                .collect()
        });
        let probe = by_epoch(t, |id| {
            eval_metric(t, id, |e| e.probe_acc.map(|p| 100.0 * p))
        });
        let rank = by_epoch(t, |id| eval_metric(t, id, |e| Some(e.z_effective_rank)));
        let panels = root.split_evenly((1, 3));
        let title = [
            "gap pos − neg (epoch mean)",
            "probe accuracy (%)",
            "effective rank (eval z)",
        ];
        for (k, (area, series)) in panels.iter().zip([&gap, &probe, &rank]).enumerate() {
            panel(area, title[k], series, k == 0)?;
        }
        Ok(())
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &Series,
    with_legend: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut lo, mut hi, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY, 1f64);
    for &(e, m, s) in pts {
        lo = lo.min(m - s);
        hi = hi.max(m + s);
        x_max = x_max.max(e);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(45)
        .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((x_max as usize + 1).min(10))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    for (i, (v, p)) in series.iter().enumerate() {
        let c = colour(i);
        // The seeds' band: mean ± sd, as a closed polygon.
        let band: Vec<(f64, f64)> = p
            .iter()
            .map(|&(e, m, s)| (e, m + s))
            .chain(p.iter().rev().map(|&(e, m, s)| (e, m - s)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15).filled())))
            .map_err(err)?;
        let line = chart
            .draw_series(LineSeries::new(
                p.iter().map(|&(e, m, _)| (e, m)),
                c.stroke_width(2),
            ))
            .map_err(err)?;
        if with_legend {
            line.label(v.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2))
            });
        }
    }
    if with_legend {
        legend(&mut chart, SeriesLabelPosition::UpperRight, 11)?;
    }
    Ok(())
}
