//! Chart 1: the cosine bars.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::*;

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
            let pos = t.variant_stat(v, |r| r.outcome.final_pos_cos);
            let neg = t.variant_stat(v, |r| r.outcome.final_neg_cos);
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
                chart
                    .draw_series(whisker((x0 + x1) / 2.0, m, sd))
                    .map_err(err)?;
            }
            // Variant name under its bars, in the strip below the plot.
            let (px, _) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            lower.draw(&centred_label(v, px)).map_err(err)?;
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

/// A ±1 sd error bar at `x` around `mean`, with caps.
fn whisker(x: f64, mean: f64, sd: f64) -> Vec<PathElement<(f64, f64)>> {
    let (lo, hi) = (mean - sd, mean + sd);
    [
        vec![(x, lo), (x, hi)],
        vec![(x - 0.06, lo), (x + 0.06, lo)],
        vec![(x - 0.06, hi), (x + 0.06, hi)],
    ]
    .into_iter()
    .map(|points| PathElement::new(points, BLACK.stroke_width(2)))
    .collect()
}

/// `text` centred under pixel column `px`, at the top of the label strip.
fn centred_label(text: &str, px: i32) -> Text<'static, (i32, i32), String> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Text::new(
        text.to_string(),
        (px, 8),
        ("sans-serif", 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    )
}
