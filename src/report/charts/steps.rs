//! Charts 3 and 4: cosines, spread and rank per step.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::*;

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
        let panels = [
            SpreadPanel {
                desc: "std of l2-normalised z",
                metric: |s| s.z_std,
                reference: 1.0 / d.sqrt(),
                reference_label: format!("1/√d = {:.3}", 1.0 / d.sqrt()),
            },
            SpreadPanel {
                desc: "effective rank of z (RankMe)",
                metric: |s| s.effective_rank,
                reference: d,
                reference_label: format!("d = {d}"),
            },
        ];
        for (k, (area, panel)) in [&left, &right].into_iter().zip(&panels).enumerate() {
            panel.draw(area, t, &variants, steps, k == 0)?;
        }
        Ok(())
    }
}

/// One panel of the spread chart: a per-step metric per variant and its reference line.
struct SpreadPanel {
    desc: &'static str,
    metric: fn(&crate::log::StepRecord) -> f64,
    reference: f64,
    reference_label: String,
}

impl SpreadPanel {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        t: &GridTables,
        variants: &[String],
        steps: f64,
        with_legend: bool,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (reference, top) = (self.reference, self.reference * 1.2);
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
            .y_desc(self.desc)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, v) in variants.iter().enumerate() {
            let c = colour(i);
            let s = chart
                .draw_series(LineSeries::new(
                    mean_series(t, v, self.metric),
                    c.stroke_width(2),
                ))
                .map_err(err)?;
            if with_legend {
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
                self.reference_label.clone(),
                (steps * 0.02, reference * 1.06),
                ("sans-serif", 14).into_font(),
            )))
            .map_err(err)?;
        if with_legend {
            legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
        }
        Ok(())
    }
}
