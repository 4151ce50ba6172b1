//! The clinical study: inter-rater agreement with and without CNN
//! initialisation, and contouring time (the paper's Tables 1–2, Fig. 3).
//!
//! For every case and rater *r* (at least 3 raters):
//! - **1 vs 3**: r's manual contour against the averaged manual contour of
//!   the other raters;
//! - **1′ vs 3**: r's CNN-initialised contour against the same reference;
//! - **1′ vs 3′**: r's CNN-initialised contour against the averaged
//!   CNN-initialised contours of the others.
//!
//! The averaged contour is the voxel-wise mean of the others' binary masks,
//! kept where it is ≥ 0.5: a tie (possible with an even number of other
//! raters) counts as inside. Lesions are the 26-connected components of the
//! union of every contour of the case, so each lesion is the same region in
//! all comparisons; Dice is computed inside each lesion's region and is
//! undefined (skipped) when both masks are empty there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use delineate_dicom::{read_rtstruct, read_series, ReadOptions};
use delineate_imaging::{
    components::label_components, read_nifti_any, Connectivity, Geometry, Volume,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::stats::{median, parse_time, range, sign_test};
use crate::Error;

/// The study design file (TOML). Paths are relative to the file; `{case}`
/// and `{rater}` are replaced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Design {
    pub raters: Vec<String>,
    pub cases: Vec<String>,
    /// Manual contour of a rater (NIfTI mask, or RTSTRUCT .dcm with `reference`).
    pub manual: String,
    /// CNN-initialised contour of a rater.
    pub cnn: String,
    /// Image series for RTSTRUCT contours.
    #[serde(default)]
    pub reference: Option<String>,
    /// CSV with columns case, rater, mode (manual | cnn), time (seconds or m:ss).
    pub times: String,
}

/// The three comparisons.
pub const COMPARISONS: [&str; 3] = ["1 vs 3", "1' vs 3", "1' vs 3'"];

/// One lesion of one case for one rater.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LesionDice {
    pub case: String,
    pub rater: String,
    pub lesion: u32,
    pub voxels: usize,
    /// Dice for [`COMPARISONS`] (NaN when undefined).
    pub dice: [f64; 3],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseTimes {
    pub case: String,
    pub rater: String,
    pub manual_s: f64,
    pub cnn_s: f64,
    pub lesions: usize,
    /// Whole-case Dice, 1 vs 3 and 1′ vs 3′ (for the quality–time plot).
    pub dice_manual: f64,
    pub dice_cnn: f64,
}

/// Agreement of one rater (or "all").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgreementRow {
    pub rater: String,
    pub lesions: usize,
    pub median_dice: [f64; 3],
    /// Sign test (1 vs 3) vs (1′ vs 3): p, untied pairs, pairs where CNN is higher.
    pub case_i: SignTest,
    /// Sign test (1 vs 3) vs (1′ vs 3′).
    pub case_ii: SignTest,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SignTest {
    pub p: f64,
    pub n: usize,
    pub improved: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimeRow {
    pub rater: String,
    pub cases: usize,
    pub median_manual_s: f64,
    pub manual_range_s: (f64, f64),
    pub median_reduction_s: f64,
    pub reduction_range_s: (f64, f64),
    /// Median manual time / median CNN-initialised time.
    pub speedup: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyResult {
    pub raters: Vec<String>,
    pub lesions: Vec<LesionDice>,
    pub times: Vec<CaseTimes>,
    pub agreement: Vec<AgreementRow>,
    pub time_all: Vec<TimeRow>,
    pub time_multi: Vec<TimeRow>,
}

fn fill(t: &str, case: &str, rater: &str) -> String {
    t.replace("{case}", case).replace("{rater}", rater)
}

pub fn read_design(path: &Path) -> Result<Design, Error> {
    let text = std::fs::read_to_string(path).map_err(delineate_imaging::IoFailure::on(
        "read the study design",
        path,
    ))?;
    parse_design(&text, path)
}

/// Parses and checks a design file's text; `path` names it in messages.
pub fn parse_design(text: &str, path: &Path) -> Result<Design, Error> {
    let d: Design =
        toml::from_str(text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    if d.raters.len() < 3 {
        return Err(Error::Input(format!(
            "{}: the study needs at least 3 raters, got {}",
            path.display(),
            d.raters.len()
        )));
    }
    let mut r = d.raters.clone();
    r.sort();
    r.dedup();
    if r.len() != d.raters.len() {
        return Err(Error::Input(format!(
            "{}: a rater is listed twice",
            path.display()
        )));
    }
    if d.cases.is_empty() {
        return Err(Error::Input(format!("{}: no cases listed", path.display())));
    }
    Ok(d)
}

/// Reads a contour as a binary mask.
fn load_mask(path: &Path, reference: Option<&Path>) -> Result<Volume<bool>, Error> {
    let is_dcm = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    if is_dcm {
        let reference = reference.ok_or_else(|| {
            Error::Input(format!(
                "{}: an RTSTRUCT contour needs `reference` (its image series) in the design",
                path.display()
            ))
        })?;
        let series = read_series(reference, &ReadOptions::default(), None)?;
        let g = series.volume.geometry().clone();
        let rt = read_rtstruct(path, &g, &series.meta.frame_of_reference_uid)?;
        // The study compares lesion contours: GTV-type ROIs, as everywhere.
        let selected = rt.select(&delineate_dicom::RoiSelection::default(), &g, path)?;
        return Ok(selected.labels.map(|&v| v > 0));
    }
    let (v, _) = read_nifti_any(path)?;
    let labels = v.to_labels().map_err(|bad| {
        Error::Input(format!(
            "{}: a contour must be a mask of non-negative integers; found {bad}",
            path.display()
        ))
    })?;
    Ok(labels.map(|&l| l > 0))
}

fn read_times(path: &Path) -> Result<Times, Error> {
    let text = std::fs::read_to_string(path).map_err(delineate_imaging::IoFailure::on(
        "read the contouring times",
        path,
    ))?;
    parse_times(&text, path)
}

/// Contouring times by (case, rater, mode).
pub type Times = BTreeMap<(String, String, String), f64>;

/// Parses a times CSV (`case,rater,mode,time`, optional header line);
/// `path` names it in messages.
pub fn parse_times(text: &str, path: &Path) -> Result<Times, Error> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty()
            || (n == 0 && cols.first().is_some_and(|c| c.eq_ignore_ascii_case("case")))
        {
            continue;
        }
        if cols.len() != 4 {
            return Err(Error::Input(format!(
                "{}:{}: expected case,rater,mode,time",
                path.display(),
                n + 1
            )));
        }
        let mode = cols[2].to_ascii_lowercase();
        if mode != "manual" && mode != "cnn" {
            return Err(Error::Input(format!(
                "{}:{}: mode must be manual or cnn, got {:?}",
                path.display(),
                n + 1,
                cols[2]
            )));
        }
        let t = parse_time(cols[3]).ok_or_else(|| {
            Error::Input(format!(
                "{}:{}: cannot read the time {:?} (seconds or m:ss)",
                path.display(),
                n + 1,
                cols[3]
            ))
        })?;
        out.insert((cols[0].to_string(), cols[1].to_string(), mode), t);
    }
    Ok(out)
}

fn dice(a: usize, b: usize, both: usize) -> f64 {
    if a + b == 0 {
        f64::NAN
    } else {
        2.0 * both as f64 / (a + b) as f64
    }
}

/// Counts for one comparison: |X|, |Y|, |X ∩ Y|.
#[derive(Clone, Copy, Default)]
struct Counts(usize, usize, usize);

impl Counts {
    fn add(&mut self, x: bool, y: bool) {
        self.0 += usize::from(x);
        self.1 += usize::from(y);
        self.2 += usize::from(x && y);
    }
}

/// Agreement of one case: per-lesion and whole-case Dice for every rater.
fn case_agreement(
    case: &str,
    raters: &[String],
    manual: &[Volume<bool>],
    cnn: &[Volume<bool>],
) -> (Vec<LesionDice>, Vec<[f64; 3]>, usize) {
    let nr = raters.len();
    let g = manual[0].geometry().clone();
    let union_data: Vec<bool> = (0..g.len())
        .map(|i| manual.iter().chain(cnn).any(|m| m.as_slice()[i]))
        .collect();
    let union = Volume::from_vec(g.clone(), union_data)
        .unwrap_or_else(|_| Volume::filled(g.clone(), false));
    let cc = label_components(&union, Connectivity::TwentySix, |&b| b, false);
    let nl = cc.stats.len();
    // counts[lesion][rater][comparison]; whole[rater][comparison].
    let mut counts = vec![vec![[Counts::default(); 3]; nr]; nl];
    let mut whole = vec![[Counts::default(); 3]; nr];
    let half = (nr - 1) as f64 / 2.0;
    for (i, &l) in cc.labels.as_slice().iter().enumerate() {
        if l == 0 {
            continue;
        }
        let m: Vec<bool> = manual.iter().map(|v| v.as_slice()[i]).collect();
        let c: Vec<bool> = cnn.iter().map(|v| v.as_slice()[i]).collect();
        let (sm, sc) = (
            m.iter().filter(|&&b| b).count(),
            c.iter().filter(|&&b| b).count(),
        );
        for r in 0..nr {
            // Mean of the others ≥ 0.5 ⇔ count of the others ≥ (n - 1) / 2.
            let ref_m = (sm - usize::from(m[r])) as f64 >= half;
            let ref_c = (sc - usize::from(c[r])) as f64 >= half;
            let pairs = [(m[r], ref_m), (c[r], ref_m), (c[r], ref_c)];
            for (k, (x, y)) in pairs.into_iter().enumerate() {
                counts[l as usize - 1][r][k].add(x, y);
                whole[r][k].add(x, y);
            }
        }
    }
    let mut out = Vec::new();
    for (l, per_rater) in counts.iter().enumerate() {
        for (r, cs) in per_rater.iter().enumerate() {
            out.push(LesionDice {
                case: case.to_string(),
                rater: raters[r].clone(),
                lesion: l as u32 + 1,
                voxels: cc.stats[l].voxels,
                dice: cs.map(|c| dice(c.0, c.1, c.2)),
            });
        }
    }
    let whole_dice = whole
        .iter()
        .map(|cs| cs.map(|c| dice(c.0, c.1, c.2)))
        .collect();
    (out, whole_dice, nl)
}

fn agreement_row(name: &str, lesions: &[&LesionDice]) -> AgreementRow {
    let col = |k: usize| lesions.iter().map(|l| l.dice[k]).collect::<Vec<f64>>();
    let (c0, c1, c2) = (col(0), col(1), col(2));
    let test = |a: &[f64], b: &[f64]| {
        let (p, n, improved) = sign_test(a, b);
        SignTest { p, n, improved }
    };
    AgreementRow {
        rater: name.to_string(),
        lesions: lesions.len(),
        median_dice: [median(&c0), median(&c1), median(&c2)],
        case_i: test(&c0, &c1),
        case_ii: test(&c0, &c2),
    }
}

fn time_row(name: &str, times: &[&CaseTimes]) -> TimeRow {
    let manual: Vec<f64> = times.iter().map(|t| t.manual_s).collect();
    let cnn: Vec<f64> = times.iter().map(|t| t.cnn_s).collect();
    let red: Vec<f64> = times.iter().map(|t| t.manual_s - t.cnn_s).collect();
    TimeRow {
        rater: name.to_string(),
        cases: times.len(),
        median_manual_s: median(&manual),
        manual_range_s: range(&manual),
        median_reduction_s: median(&red),
        reduction_range_s: range(&red),
        speedup: median(&manual) / median(&cnn),
    }
}

/// Runs the study described by `design_path`.
pub fn run_study(design_path: &Path) -> Result<StudyResult, Error> {
    let d = read_design(design_path)?;
    let base = design_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let times = read_times(&base.join(&d.times))?;
    let per_case: Vec<(Vec<LesionDice>, Vec<CaseTimes>)> = d
        .cases
        .par_iter()
        .map(|case| {
            let reference = d.reference.as_ref().map(|r| base.join(fill(r, case, "")));
            let load = |tpl: &str, rater: &str| {
                load_mask(&base.join(fill(tpl, case, rater)), reference.as_deref())
            };
            let manual: Vec<Volume<bool>> = d
                .raters
                .iter()
                .map(|r| load(&d.manual, r))
                .collect::<Result<_, _>>()?;
            let cnn: Vec<Volume<bool>> = d
                .raters
                .iter()
                .map(|r| load(&d.cnn, r))
                .collect::<Result<_, _>>()?;
            let g: &Geometry = manual[0].geometry();
            for (n, v) in manual.iter().chain(&cnn).enumerate() {
                if !v.geometry().same_grid(g, 1e-3) {
                    let (tpl, r) = if n < d.raters.len() {
                        (&d.manual, n)
                    } else {
                        (&d.cnn, n - d.raters.len())
                    };
                    return Err(Error::Input(format!(
                        "{}: not on the grid of {}",
                        base.join(fill(tpl, case, &d.raters[r])).display(),
                        base.join(fill(&d.manual, case, &d.raters[0])).display()
                    )));
                }
            }
            let (lesions, whole, nl) = case_agreement(case, &d.raters, &manual, &cnn);
            let mut ts = Vec::new();
            for (r, rater) in d.raters.iter().enumerate() {
                let get = |mode: &str| {
                    times
                        .get(&(case.clone(), rater.clone(), mode.to_string()))
                        .copied()
                        .ok_or_else(|| {
                            Error::Input(format!(
                                "{}: no {mode} time for case {case}, rater {rater}",
                                base.join(&d.times).display()
                            ))
                        })
                };
                ts.push(CaseTimes {
                    case: case.clone(),
                    rater: rater.clone(),
                    manual_s: get("manual")?,
                    cnn_s: get("cnn")?,
                    lesions: nl,
                    dice_manual: whole[r][0],
                    dice_cnn: whole[r][2],
                });
            }
            Ok((lesions, ts))
        })
        .collect::<Result<_, Error>>()?;
    let lesions: Vec<LesionDice> = per_case.iter().flat_map(|(l, _)| l.clone()).collect();
    let times: Vec<CaseTimes> = per_case.iter().flat_map(|(_, t)| t.clone()).collect();
    let mut agreement: Vec<AgreementRow> = d
        .raters
        .iter()
        .map(|r| {
            agreement_row(
                r,
                &lesions.iter().filter(|l| &l.rater == r).collect::<Vec<_>>(),
            )
        })
        .collect();
    agreement.push(agreement_row("all", &lesions.iter().collect::<Vec<_>>()));
    let rows = |multi: bool| {
        let sel: Vec<&CaseTimes> = times.iter().filter(|t| !multi || t.lesions > 1).collect();
        let mut v: Vec<TimeRow> = d
            .raters
            .iter()
            .map(|r| {
                time_row(
                    r,
                    &sel.iter()
                        .copied()
                        .filter(|t| &t.rater == r)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        v.push(time_row("all", &sel));
        v
    };
    Ok(StudyResult {
        raters: d.raters.clone(),
        time_all: rows(false),
        time_multi: rows(true),
        lesions,
        times,
        agreement,
    })
}
