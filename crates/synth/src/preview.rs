//! Preview montages: a slice through each lesion with the truth outlined,
//! so a person can judge realism at a glance.

use std::path::Path;

use delineate_imaging::Volume;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::case::SynthCase;
use crate::Error;

/// The embedded font (DejaVu Sans, see assets/fonts/DejaVu-LICENSE).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

const TILE: u32 = 200;
const COLUMNS: u32 = 4;
const MAX_TILES: usize = 12;

pub fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One montage tile: slice `k`, index box `a..b` in-plane, title, lesion in focus.
type Tile = (usize, [f64; 2], [f64; 2], String, u32);

/// Window for display: the 1st and 99.5th percentiles of brain voxels.
fn window(case: &SynthCase) -> (f32, f32) {
    let mut v: Vec<u16> = case
        .image
        .as_slice()
        .iter()
        .zip(case.brain.as_slice())
        .filter(|(_, &b)| b > 0)
        .map(|(&x, _)| x)
        .step_by(7)
        .collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_unstable();
    let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize] as f32;
    (q(0.01), q(0.995).max(q(0.01) + 1.0))
}

/// Writes a PNG montage for `case`: the first tile is the whole slice
/// through the largest lesion (or the middle slice), then one zoomed tile
/// per lesion (largest first, at most 11), each cut along the grid's slice
/// axis through the lesion's centre.
pub fn write_preview(path: &Path, case: &SynthCase) -> Result<(), Error> {
    ensure_font();
    let g = case.image.geometry();
    let s = g.size;
    let (lo, hi) = window(case);
    let mut lesions: Vec<_> = case
        .record
        .lesions
        .iter()
        .filter(|l| l.voxels > 0)
        .collect();
    lesions.sort_by_key(|l| std::cmp::Reverse(l.voxels));
    lesions.truncate(MAX_TILES - 1);
    let centre_idx = |c: [f64; 3]| g.world_to_index(c).map(|v| v.round().max(0.0) as usize);
    let mut tiles: Vec<Tile> = Vec::new();
    let whole_k = lesions
        .first()
        .map(|l| centre_idx(l.centre_mm)[2])
        .unwrap_or(s[2] / 2);
    tiles.push((
        whole_k.min(s[2] - 1),
        [0.0, 0.0],
        [s[0] as f64, s[1] as f64],
        format!(
            "{} ({}, {})",
            case.record.name, case.record.acquisition.orientation, case.record.acquisition.grid
        ),
        0,
    ));
    for l in &lesions {
        let c = centre_idx(l.centre_mm);
        let half_mm = (l.equivalent_diameter_mm * 1.5).max(20.0);
        let hi_ = [half_mm / g.spacing[0], half_mm / g.spacing[1]];
        tiles.push((
            c[2].min(s[2] - 1),
            [c[0] as f64 - hi_[0], c[1] as f64 - hi_[1]],
            [c[0] as f64 + hi_[0], c[1] as f64 + hi_[1]],
            format!(
                "{} {} {:.1} mm",
                l.kind.short(),
                l.id,
                l.equivalent_diameter_mm
            ),
            l.id,
        ));
    }
    let rows = (tiles.len() as u32).div_ceil(COLUMNS);
    let width = COLUMNS * TILE;
    let height = rows * TILE;
    let mut buf = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&BLACK)
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        for (n, (k, a, b, title, id)) in tiles.iter().enumerate() {
            let ox = (n as u32 % COLUMNS) * TILE;
            let oy = (n as u32 / COLUMNS) * TILE;
            draw_tile(&root, case, (ox, oy), *k, *a, *b, (lo, hi), *id);
            root.draw(&Text::new(
                title.clone(),
                (ox as i32 + 4, oy as i32 + 4),
                ("sans-serif", 13).into_font().color(&YELLOW),
            ))
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        }
        root.present()
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    }
    delineate_imaging::atomic::write_png(path, &buf, width, height)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn draw_tile<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    case: &SynthCase,
    origin: (u32, u32),
    k: usize,
    a: [f64; 2],
    b: [f64; 2],
    (lo, hi): (f32, f32),
    focus: u32,
) {
    let s = case.image.geometry().size;
    let sp = case.image.geometry().spacing;
    // Keep the aspect ratio in mm.
    let (wmm, hmm) = ((b[0] - a[0]) * sp[0], (b[1] - a[1]) * sp[1]);
    let px_per_mm = (TILE as f64 / wmm).min(TILE as f64 / hmm);
    let img: &Volume<u16> = &case.image;
    let truth = case.truth.as_slice();
    let data = img.as_slice();
    let at = |u: u32, v: u32| -> Option<usize> {
        let i = a[0] + u as f64 / px_per_mm / sp[0];
        let j = a[1] + v as f64 / px_per_mm / sp[1];
        if i < 0.0 || j < 0.0 || i >= s[0] as f64 || j >= s[1] as f64 || i > b[0] || j > b[1] {
            return None;
        }
        Some(i as usize + j as usize * s[0] + k * s[0] * s[1])
    };
    for v in 0..TILE {
        for u in 0..TILE {
            let Some(lin) = at(u, v) else { continue };
            let g = (((data[lin] as f32 - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
            let l = truth[lin];
            let edge = l > 0
                && [(1i32, 0i32), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .any(|(du, dv)| {
                        let (uu, vv) = (u as i32 + du, v as i32 + dv);
                        uu < 0
                            || vv < 0
                            || at(uu as u32, vv as u32)
                                .map(|q| truth[q] != l)
                                .unwrap_or(true)
                    });
            let color = if edge {
                if focus == 0 || l as u32 == focus {
                    RGBColor(255, 40, 40)
                } else {
                    RGBColor(255, 200, 0)
                }
            } else {
                RGBColor(g, g, g)
            };
            let _ = root.draw_pixel(((origin.0 + u) as i32, (origin.1 + v) as i32), &color);
        }
    }
}
