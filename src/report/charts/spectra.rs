//! Chart 5: covariance spectra at the last evaluation.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::*;

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
            let curves = mean_spectra(t, &variants, space);
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

/// Per variant, the mean over seeds of the eigenvalues of `space` (`y` or `z`) at the last
/// evaluation, as (index from 1, value ≥ 1e-12) for the log scale; truncated to the shortest
/// seed's spectrum.
fn mean_spectra(t: &GridTables, variants: &[String], space: &str) -> Vec<Vec<(f64, f64)>> {
    variants
        .iter()
        .map(|v| {
            let lists: Vec<&Vec<f64>> = t
                .runs_of(v)
                .filter_map(|r| t.spectra.get(&r.run_id).and_then(|s| s.get(space)))
                .collect();
            let len = lists.iter().map(|l| l.len()).min().unwrap_or(0);
            (0..len)
                .map(|i| {
                    let m = lists.iter().map(|l| l[i]).sum::<f64>() / lists.len() as f64;
                    ((i + 1) as f64, m.max(1e-12))
                })
                .collect()
        })
        .collect()
}
