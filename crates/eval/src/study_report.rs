//! Study outputs: `study.md`, `study.html`, `study.json`,
//! `study_lesions.csv` and the quality-versus-time figure (paper Fig. 3).

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::write_text;
use crate::stats::mmss;
use crate::study::{StudyResult, TimeRow, COMPARISONS};
use crate::Error;

fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

fn p(v: f64) -> String {
    if v < 0.001 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// Table rows as cells: Table 1 (agreement) and Table 2 (times).
fn table1(r: &StudyResult) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let head = vec![
        "Rater",
        "Lesions",
        "1 vs 3",
        "1' vs 3",
        "1' vs 3'",
        "p (I: 1 vs 3 / 1' vs 3)",
        "p (II: 1 vs 3 / 1' vs 3')",
    ];
    let rows = r
        .agreement
        .iter()
        .map(|a| {
            vec![
                a.rater.clone(),
                a.lesions.to_string(),
                f3(a.median_dice[0]),
                f3(a.median_dice[1]),
                f3(a.median_dice[2]),
                format!(
                    "{} ({}/{} higher)",
                    p(a.case_i.p),
                    a.case_i.improved,
                    a.case_i.n
                ),
                format!(
                    "{} ({}/{} higher)",
                    p(a.case_ii.p),
                    a.case_ii.improved,
                    a.case_ii.n
                ),
            ]
        })
        .collect();
    (head, rows)
}

fn table2(rows: &[TimeRow]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let head = vec![
        "Rater",
        "Cases",
        "Manual time, median (range)",
        "Time reduction, median (range)",
        "Speed-up",
    ];
    let rows = rows
        .iter()
        .map(|t| {
            vec![
                t.rater.clone(),
                t.cases.to_string(),
                format!(
                    "{} ({}–{})",
                    mmss(t.median_manual_s),
                    mmss(t.manual_range_s.0),
                    mmss(t.manual_range_s.1)
                ),
                format!(
                    "{} ({}–{})",
                    mmss(t.median_reduction_s),
                    mmss(t.reduction_range_s.0),
                    mmss(t.reduction_range_s.1)
                ),
                if t.speedup.is_finite() {
                    format!("{:.2}×", t.speedup)
                } else {
                    "–".into()
                },
            ]
        })
        .collect();
    (head, rows)
}

fn md_table(s: &mut String, (head, rows): (Vec<&str>, Vec<Vec<String>>)) {
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s.push('\n');
}

fn html_table(s: &mut String, (head, rows): (Vec<&str>, Vec<Vec<String>>)) {
    s.push_str("<table>\n<tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(&c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const NOTE: &str = "Dice per lesion (lesions: 26-connected components of the union of all contours of a case). \
Reference \"3\": the voxel-wise mean of the other raters' manual masks ≥ 0.5 (ties count as inside); \"3'\": the same of their CNN-initialised masks. \
p: exact two-sided sign test over lesions, ties dropped; \"higher\": pairs where the CNN-initialised Dice is higher.";

pub fn write_study(out: &Path, r: &StudyResult) -> Result<(), Error> {
    std::fs::create_dir_all(out).map_err(delineate_imaging::IoFailure::on(
        "create the report folder",
        out,
    ))?;
    let mut md =
        String::from("# Clinical study\n\n## Table 1. Inter-rater agreement (median Dice)\n\n");
    md_table(&mut md, table1(r));
    md.push_str(NOTE);
    md.push_str("\n\n## Table 2. Contouring time\n\nAll cases:\n\n");
    md_table(&mut md, table2(&r.time_all));
    md.push_str("Cases with more than one lesion:\n\n");
    md_table(&mut md, table2(&r.time_multi));
    md.push_str("Time reduction: manual minus CNN-initialised time of the same case and rater. Speed-up: median manual time / median CNN-initialised time.\n\n![quality vs time](quality_vs_time.png)\n");
    write_text(&out.join("study.md"), &md)?;

    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Clinical study</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:4px 8px;text-align:right}th{background:#eee}</style></head><body>\n<h1>Clinical study</h1>\n<h2>Table 1. Inter-rater agreement (median Dice)</h2>\n",
    );
    html_table(&mut html, table1(r));
    let _ = writeln!(
        html,
        "<p>{}</p>\n<h2>Table 2. Contouring time</h2>\n<h3>All cases</h3>",
        esc(NOTE)
    );
    html_table(&mut html, table2(&r.time_all));
    html.push_str("<h3>Cases with more than one lesion</h3>\n");
    html_table(&mut html, table2(&r.time_multi));
    html.push_str(
        "<img src=\"quality_vs_time.png\" alt=\"quality versus time\">\n</body></html>\n",
    );
    write_text(&out.join("study.html"), &html)?;

    let mut json = serde_json::to_string_pretty(r).map_err(|e| Error::Input(e.to_string()))?;
    json.push('\n');
    write_text(&out.join("study.json"), &json)?;
    let mut csv = format!(
        "case,rater,lesion,voxels,{}\n",
        COMPARISONS
            .map(|c| format!("dice_{}", c.replace(' ', "_").replace('\'', "p")))
            .join(",")
    );
    for l in &r.lesions {
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.4},{:.4},{:.4}",
            l.case, l.rater, l.lesion, l.voxels, l.dice[0], l.dice[1], l.dice[2]
        );
    }
    write_text(&out.join("study_lesions.csv"), &csv)?;

    crate::plots::both(out, "quality_vs_time", &|root| scatter(root, r), &|root| {
        scatter(root, r)
    })?;
    Ok(())
}

/// Paper Fig. 3: case-level Dice against contouring time, manual (1 vs 3)
/// and CNN-initialised (1′ vs 3′).
fn scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &StudyResult,
) -> Result<(), String> {
    let e = |x: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let tmax = r
        .times
        .iter()
        .map(|t| t.manual_s.max(t.cnn_s))
        .fold(60.0, f64::max)
        / 60.0
        * 1.05;
    let dmin = r
        .times
        .iter()
        .flat_map(|t| [t.dice_manual, t.dice_cnn])
        .filter(|d| d.is_finite())
        .fold(1.0, f64::min)
        .min(0.5);
    let mut chart = crate::plots::builder(root, "Contour quality versus contouring time")
        .build_cartesian_2d(0f64..tmax, (dmin - 0.02)..1.01f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("Contouring time per case (min)")
        .y_desc("Dice with the other raters' average")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(
            r.times
                .iter()
                .filter(|t| t.dice_manual.is_finite())
                .map(|t| Circle::new((t.manual_s / 60.0, t.dice_manual), 5, blue.filled())),
        )
        .map_err(e)?
        .label("manual (1 vs 3)")
        .legend(move |(x, y)| Circle::new((x + 8, y), 5, blue.filled()));
    chart
        .draw_series(
            r.times
                .iter()
                .filter(|t| t.dice_cnn.is_finite())
                .map(|t| TriangleMarker::new((t.cnn_s / 60.0, t.dice_cnn), 6, red.filled())),
        )
        .map_err(e)?
        .label("CNN-initialised (1' vs 3')")
        .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 6, red.filled()));
    crate::plots::legend(&mut chart, SeriesLabelPosition::LowerRight)
}
