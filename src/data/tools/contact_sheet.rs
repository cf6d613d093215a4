//! A contact sheet: a grid of a data set's images, one row per class, as a PNG — the quickest
//! way to see that a loader decodes what the publisher meant (orientation, channel order).
//!
//! Drawn with plotters' bitmap backend and no text, so `data` needs nothing from `report`.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::data::Dataset;

/// Images per row.
pub const COLUMNS: usize = 8;
/// At most this many rows (classes) are drawn; CIFAR-100 shows its first 20 classes.
pub const MAX_ROWS: usize = 20;
/// Images smaller than this are enlarged by a whole factor (nearest neighbour).
const MIN_CELL: usize = 64;
/// White space between images, in pixels.
const GAP: usize = 4;

/// Which images go on which row: the first [`COLUMNS`] of each class in order of the data
/// set, or, without labels, the first images in reading order.
pub fn pick(data: &dyn Dataset) -> Vec<Vec<usize>> {
    match data.num_classes() {
        Some(k) if !data.is_empty() && data.label(0).is_some() => {
            let rows = k.min(MAX_ROWS);
            let mut picked = vec![Vec::new(); rows];
            let mut left = rows * COLUMNS;
            for i in 0..data.len() {
                if left == 0 {
                    break;
                }
                if let Some(row) = data.label(i).and_then(|l| picked.get_mut(l as usize)) {
                    if row.len() < COLUMNS {
                        row.push(i);
                        left -= 1;
                    }
                }
            }
            picked
        }
        _ => (0..data.len().min(COLUMNS * MAX_ROWS))
            .collect::<Vec<_>>()
            .chunks(COLUMNS)
            .map(<[usize]>::to_vec)
            .collect(),
    }
}

/// Writes the contact sheet of `data` to `path` (a `.png`), under a temporary name renamed
/// once drawn (never through a link).
pub fn write(data: &dyn Dataset, path: &Path) -> Result<()> {
    crate::log::write_via_temp(path, ".png", |tmp| draw(data, tmp, path))
}

/// Draws the contact sheet into file `to` (errors name `path`, where it is going).
fn draw(data: &dyn Dataset, to: &Path, path: &Path) -> Result<()> {
    let rows = pick(data);
    let (c, h, w) = (data.channels(), data.height(), data.width());
    let scale = (MIN_CELL / h.max(w)).max(1);
    let (cell_w, cell_h) = (w * scale + GAP, h * scale + GAP);
    let size = (
        (GAP + COLUMNS * cell_w) as u32,
        (GAP + rows.len().max(1) * cell_h) as u32,
    );
    let root = BitMapBackend::new(to, size).into_drawing_area();
    let err =
        |e: &dyn std::fmt::Debug| anyhow!("{}: drawing the contact sheet: {e:?}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let plane = h * w;
    let mut buf = vec![0f32; c * plane];
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for (r, row) in rows.iter().enumerate() {
        for (col, &i) in row.iter().enumerate() {
            data.read_image(i, &mut buf);
            let (x0, y0) = (GAP + col * cell_w, GAP + r * cell_h);
            for y in 0..h * scale {
                for x in 0..w * scale {
                    let p = (y / scale) * w + x / scale;
                    let colour = if c >= 3 {
                        RGBColor(byte(buf[p]), byte(buf[plane + p]), byte(buf[2 * plane + p]))
                    } else {
                        let g = byte(buf[p]);
                        RGBColor(g, g, g)
                    };
                    root.draw_pixel(((x0 + x) as i32, (y0 + y) as i32), &colour)
                        .map_err(|e| err(&e))?;
                }
            }
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
