//! Overlay montages for people to check a segmentation: one zoomed slice
//! per lesion with the truth outlined in green, the prediction in red (and
//! yellow where both outlines fall on the same pixel).

use std::path::Path;

use delineate_imaging::Volume;
use plotters::prelude::*;

use crate::plots::ensure_font;
use crate::Error;

const TILE: u32 = 220;
const COLUMNS: u32 = 4;

/// One montage tile: the slice (third grid axis) through `centre` (voxel
/// indices), `half_mm` of field around it, and a title.
#[derive(Clone, Debug)]
pub struct Tile {
    pub centre: [usize; 3],
    pub half_mm: f64,
    pub title: String,
}

/// Display window: 1st and 99.5th percentiles of the non-zero voxels.
fn window(image: &Volume<f32>) -> (f32, f32) {
    let mut v: Vec<f32> = image
        .as_slice()
        .iter()
        .cloned()
        .filter(|&x| x > 0.0)
        .step_by(7)
        .collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_by(f32::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
    (q(0.01), q(0.995).max(q(0.01) + 1e-3))
}

/// Writes the montage as PNG (atomically).
pub fn write_overlay(
    path: &Path,
    image: &Volume<f32>,
    truth: &Volume<u32>,
    pred: &Volume<u32>,
    tiles: &[Tile],
) -> Result<(), Error> {
    let g = image.geometry();
    if truth.geometry().size != g.size || pred.geometry().size != g.size {
        return Err(Error::Input(format!(
            "{}: image, truth and prediction must share one grid",
            path.display()
        )));
    }
    ensure_font();
    let win = window(image);
    let n = tiles.len().max(1) as u32;
    let (cols, rows) = (n.min(COLUMNS), n.div_ceil(COLUMNS));
    let (width, height) = (cols * TILE, rows * TILE);
    let mut buf = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| Error::Input(format!("{}: {e}", path.display()));
        root.fill(&BLACK).map_err(|e| err(&e))?;
        for (i, t) in tiles.iter().enumerate() {
            let origin = ((i as u32 % COLUMNS) * TILE, (i as u32 / COLUMNS) * TILE);
            draw_tile(&root, image, truth, pred, t, origin, win);
            root.draw(&Text::new(
                t.title.clone(),
                (origin.0 as i32 + 4, origin.1 as i32 + 4),
                ("sans-serif", 13).into_font().color(&WHITE),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    delineate_imaging::atomic::write_png(path, &buf, width, height)?;
    Ok(())
}

fn draw_tile<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    image: &Volume<f32>,
    truth: &Volume<u32>,
    pred: &Volume<u32>,
    t: &Tile,
    origin: (u32, u32),
    (lo, hi): (f32, f32),
) {
    let g = image.geometry();
    let (s, sp) = (g.size, g.spacing);
    let k = t.centre[2].min(s[2] - 1);
    let mm_per_px = 2.0 * t.half_mm / TILE as f64;
    let (data, tr, pr) = (image.as_slice(), truth.as_slice(), pred.as_slice());
    // Voxel under pixel (u, v); None outside the grid.
    let at = |u: i64, v: i64| -> Option<usize> {
        let i = t.centre[0] as f64 + ((u as f64 + 0.5) * mm_per_px - t.half_mm) / sp[0];
        let j = t.centre[1] as f64 + ((v as f64 + 0.5) * mm_per_px - t.half_mm) / sp[1];
        if i < 0.0 || j < 0.0 || i >= s[0] as f64 || j >= s[1] as f64 {
            return None;
        }
        Some(i as usize + s[0] * (j as usize + s[1] * k))
    };
    let edge = |labels: &[u32], u: i64, v: i64, here: usize| -> bool {
        let l = labels[here];
        l > 0
            && [(1, 0), (-1, 0), (0, 1), (0, -1)]
                .iter()
                .any(|(du, dv)| at(u + du, v + dv).is_none_or(|q| labels[q] != l))
    };
    for v in 0..TILE as i64 {
        for u in 0..TILE as i64 {
            let Some(q) = at(u, v) else { continue };
            let grey = (((data[q] - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
            let color = match (edge(tr, u, v, q), edge(pr, u, v, q)) {
                (true, true) => RGBColor(255, 230, 0),
                (true, false) => RGBColor(0, 230, 60),
                (false, true) => RGBColor(255, 40, 40),
                _ => RGBColor(grey, grey, grey),
            };
            let _ = root.draw_pixel(
                ((origin.0 as i64 + u) as i32, (origin.1 as i64 + v) as i32),
                &color,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delineate_imaging::Geometry;

    #[test]
    fn outlines_are_drawn_in_their_colours() {
        let g = Geometry::new([40, 40, 5], [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
        let image = Volume::filled(g.clone(), 100f32);
        let mut truth = Volume::filled(g.clone(), 0u32);
        let mut pred = Volume::filled(g, 0u32);
        for y in 10..20 {
            for x in 10..20 {
                truth.as_mut_slice()[x + 40 * (y + 40 * 2)] = 1;
                pred.as_mut_slice()[x + 5 + 40 * (y + 40 * 2)] = 1;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.png");
        let tile = Tile {
            centre: [15, 15, 2],
            half_mm: 20.0,
            title: "t".into(),
        };
        write_overlay(&p, &image, &truth, &pred, &[tile]).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut px = vec![0u8; r.output_buffer_size()];
        r.next_frame(&mut px).unwrap();
        let count = |c: [u8; 3]| px.chunks(3).filter(|p| *p == c).count();
        assert!(count([0, 230, 60]) > 100, "truth outline");
        assert!(count([255, 40, 40]) > 100, "prediction outline");
    }
}
