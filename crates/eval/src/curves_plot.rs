//! Learning curves of training runs: the training loss (a moving median,
//! log scale) and the validation score (lesion-wise average precision of
//! the deployment pipeline on held-out cases) against the iteration, one
//! colour per run, so that runs (BCE against iwBCE, say) compare on one
//! figure. PNG and SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plots::{both, builder, legend, DrawResult};
use crate::Error;

/// One run's curve.
#[derive(Clone, Debug)]
pub struct RunCurve {
    pub name: String,
    /// (iteration, loss) of every iteration.
    pub loss: Vec<(f64, f64)>,
    /// (iteration, validation score).
    pub validation: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

/// The moving median of `v` over `w` points (robust to the loss spikes of
/// lesion-centred batches), one point per `w / 4` iterations.
pub fn moving_median(v: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let w = w.max(1);
    let step = (w / 4).max(1);
    let mut out = Vec::new();
    let mut i = w.min(v.len());
    while i <= v.len() && i > 0 {
        let mut win: Vec<f64> = v[i - w.min(i)..i].iter().map(|p| p.1).collect();
        win.sort_by(f64::total_cmp);
        out.push((v[i - 1].0, win[win.len() / 2]));
        i += step;
    }
    out
}

/// Writes `learning_curves.png` and `.svg` into `out`.
pub fn write_learning_curves(out: &Path, runs: &[RunCurve]) -> Result<(), Error> {
    both(out, "learning_curves", &|root| draw(root, runs), &|root| {
        draw(root, runs)
    })
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunCurve]) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(300);
    let max_it = runs
        .iter()
        .flat_map(|r| r.loss.last().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let smooth: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| moving_median(&r.loss, (r.loss.len() / 40).clamp(25, 1000)))
        .collect();
    let (lo, hi) = smooth
        .iter()
        .flatten()
        .map(|p| p.1)
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo * 0.8, hi * 1.25)
    } else {
        (1e-3, 1.0)
    };
    let mut chart = builder(&top, "Training loss (moving median)")
        .build_cartesian_2d(0f64..max_it, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Iteration")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("Loss")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (n, (r, s)) in runs.iter().zip(&smooth).enumerate() {
        let c = COLORS[n % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label(r.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    let mut chart = builder(
        &bottom,
        "Validation: lesion-wise AP of the deployment pipeline",
    )
    .build_cartesian_2d(0f64..max_it, 0f64..1.02f64)
    .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Iteration")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("Average precision")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (n, r) in runs.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                r.validation.iter().copied(),
                c.stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(r.validation.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_figure() {
        let v: Vec<(f64, f64)> = (0..1000)
            .map(|i| {
                (
                    i as f64,
                    if i % 50 == 0 {
                        10.0
                    } else {
                        1.0 / (1.0 + i as f64 / 100.0)
                    },
                )
            })
            .collect();
        let m = moving_median(&v, 40);
        assert!(m.iter().all(|p| p.1 < 1.5), "spikes survive the median");
        assert!(m.first().unwrap().1 > m.last().unwrap().1);
        let dir = tempfile::tempdir().unwrap();
        let runs = [RunCurve {
            name: "iwBCE".into(),
            loss: v,
            validation: vec![(500.0, 0.2), (1000.0, 0.5)],
        }];
        write_learning_curves(dir.path(), &runs).unwrap();
        let png = std::fs::read(dir.path().join("learning_curves.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(
            std::fs::read_to_string(dir.path().join("learning_curves.svg"))
                .unwrap()
                .contains("iwBCE")
        );
    }
}
