//! Chart 2: probe accuracy per epoch.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::*;

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
        let (curves, max_epoch) = probe_curves(t, &variants);
        let random = t.variant_stat(BASELINE_VARIANT, |r| {
            r.outcome.final_probe_acc.map(|p| 100.0 * p)
        });
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
            chart
                .draw_series(dashed(m, max_epoch as f64))
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

/// A variant and its (epoch, mean probe accuracy % over seeds) points.
type Curve = (String, Vec<(f64, f64)>);

/// Per variant, (epoch, mean probe accuracy % over seeds) at each evaluated epoch; and the
/// last epoch evaluated (at least 1).
fn probe_curves(t: &GridTables, variants: &[String]) -> (Vec<Curve>, u32) {
    let mut curves = Vec::new();
    let mut max_epoch = 1u32;
    for v in variants {
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
    (curves, max_epoch)
}

/// A dashed horizontal line at `y` from 0 to `x_max` (20 dashes).
fn dashed(y: f64, x_max: f64) -> Vec<PathElement<(f64, f64)>> {
    (0..40)
        .filter(|k| k % 2 == 0)
        .map(|k| {
            let a = x_max * k as f64 / 40.0;
            let b = x_max * (k + 1) as f64 / 40.0;
            PathElement::new(vec![(a, y), (b, y)], BLACK.stroke_width(2))
        })
        .collect()
}
