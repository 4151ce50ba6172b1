//! Figures like the paper's Fig. 1–2: precision–recall with a shaded
//! bootstrap band, FROC, and recall by lesion size, for several
//! experiments on one figure; each as PNG and SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::{Error, Experiment};

/// The embedded font (DejaVu Sans, assets/fonts/DejaVu-LICENSE): plots
/// need no system font library.
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

const SIZE: (u32, u32) = (800, 600);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Registers the embedded font for plotters (idempotent).
pub fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

pub(crate) type DrawResult = Result<(), String>;

/// A chart builder with the house caption, margins and label areas.
pub(crate) fn builder<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(root);
    b.caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55);
    b
}

/// Draws the series legend in the house style.
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)
}

/// Writes `stem.png` and `stem.svg` in `out` with `draw`.
pub(crate) fn both(
    out: &Path,
    stem: &str,
    draw: &dyn Fn(&DrawingArea<BitMapBackend, Shift>) -> DrawResult,
    draw_svg: &dyn Fn(&DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<(), Error> {
    ensure_font();
    let png = out.join(format!("{stem}.png"));
    delineate_imaging::atomic::write_atomically(&png, ".png", |p, _| {
        let root = BitMapBackend::new(p, SIZE).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| e.to_string())
    })?;
    let svg = out.join(format!("{stem}.svg"));
    delineate_imaging::atomic::write_atomically(&svg, ".svg", |p, _| {
        let root = SVGBackend::new(p, SIZE).into_drawing_area();
        draw_svg(&root)?;
        root.present().map_err(|e| e.to_string())
    })?;
    Ok(())
}

macro_rules! both_backends {
    ($out:expr, $stem:expr, $f:ident, $($arg:expr),*) => {
        both($out, $stem, &|root| $f(root, $($arg),*), &|root| $f(root, $($arg),*))
    };
}

/// Writes prc, froc and recall_by_size figures.
pub fn write_figures(out: &Path, experiments: &[Experiment]) -> Result<(), Error> {
    both_backends!(out, "prc", draw_prc, experiments)?;
    both_backends!(out, "froc", draw_froc, experiments)?;
    both_backends!(out, "recall_by_size", draw_sizes, experiments)?;
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn draw_prc<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, exps: &[Experiment]) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let mut chart = builder(root, "Lesion-wise precision–recall")
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Recall (lesion-wise)")
        .y_desc("Precision")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (n, e) in exps.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        let pts: Vec<(usize, f64, f64)> = e
            .summary
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.precision.map(|pr| (i, p.recall, pr)))
            .filter(|(_, r, _)| r.is_finite())
            .collect();
        let mut band: Vec<(f64, f64)> = pts
            .iter()
            .filter(|(i, _, _)| e.intervals.point_precision[*i].hi.is_finite())
            .map(|(i, r, _)| (*r, e.intervals.point_precision[*i].hi))
            .collect();
        let lower: Vec<(f64, f64)> = pts
            .iter()
            .rev()
            .filter(|(i, _, _)| e.intervals.point_precision[*i].lo.is_finite())
            .map(|(i, r, _)| (*r, e.intervals.point_precision[*i].lo))
            .collect();
        band.extend(lower);
        if band.len() > 2 {
            chart
                .draw_series(std::iter::once(Polygon::new(band, c.mix(0.2))))
                .map_err(err)?;
        }
        let label = format!("{} (AP {:.3})", e.name, e.summary.average_precision);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(_, r, p)| (*r, *p)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    Ok(())
}

fn draw_froc<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, exps: &[Experiment]) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let max_fp = exps
        .iter()
        .flat_map(|e| e.summary.points.iter().map(|p| p.fp_per_case))
        .fold(8.0f64, f64::max)
        * 1.2;
    let mut chart = builder(root, "FROC")
        .build_cartesian_2d((0.05f64..max_fp).log_scale(), 0f64..1.02f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("False positives per case")
        .y_desc("Sensitivity (lesion-wise)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (n, e) in exps.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        let mut pts: Vec<(f64, f64, usize)> = e
            .summary
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.recall.is_finite())
            .map(|(i, p)| (p.fp_per_case.max(0.05), p.recall, i))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut band: Vec<(f64, f64)> = pts
            .iter()
            .map(|(x, _, i)| (*x, e.intervals.point_recall[*i].hi))
            .collect();
        band.extend(
            pts.iter()
                .rev()
                .map(|(x, _, i)| (*x, e.intervals.point_recall[*i].lo)),
        );
        band.retain(|(_, y)| y.is_finite());
        if band.len() > 2 {
            chart
                .draw_series(std::iter::once(Polygon::new(band, c.mix(0.2))))
                .map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(x, y, _)| (*x, *y)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(e.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(
                crate::curves::FP_RATES
                    .iter()
                    .zip(&e.summary.sensitivity_interpolated)
                    .map(|(x, y)| Circle::new((*x, *y), 4, c.filled())),
            )
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

fn draw_sizes<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    exps: &[Experiment],
) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let buckets: Vec<String> = exps
        .first()
        .map(|e| {
            e.summary
                .by_size
                .iter()
                .map(|g| format!("{} (n={})", g.name, g.lesions))
                .collect()
        })
        .unwrap_or_default();
    let nb = buckets.len().max(1);
    let mut chart = builder(root, "Recall by lesion size")
        .build_cartesian_2d(0f64..nb as f64, 0f64..1.05f64)
        .map_err(err)?;
    let labels = buckets.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(nb * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("Equivalent diameter")
        .y_desc("Recall (all components)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let ne = exps.len().max(1) as f64;
    let width = 0.8 / ne;
    for (n, e) in exps.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        let x0 = |i: usize| i as f64 + 0.1 + n as f64 * width;
        chart
            .draw_series(
                e.summary
                    .by_size
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.recall.is_finite())
                    .map(|(i, g)| {
                        Rectangle::new([(x0(i), 0.0), (x0(i) + width * 0.9, g.recall)], c.filled())
                    }),
            )
            .map_err(err)?
            .label(e.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
        chart
            .draw_series(
                e.intervals
                    .size_recall
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.lo.is_finite())
                    .map(|(i, iv)| {
                        let xm = x0(i) + width * 0.45;
                        PathElement::new(vec![(xm, iv.lo), (xm, iv.hi)], BLACK.stroke_width(2))
                    }),
            )
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}
