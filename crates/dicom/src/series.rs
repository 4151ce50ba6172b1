//! Grouping instances into series, choosing the 3-D series, and checking
//! that its slices form one regular volume (the "plan": order and geometry,
//! before any pixel is decoded).
//!
//! Rules, each with its tolerance below:
//! * same Rows/Columns, PixelSpacing, ImageOrientationPatient and Frame of
//!   Reference on every slice; orientation cosines unit and orthogonal;
//! * slices sorted by ImagePositionPatient projected on the slice normal
//!   (row cosine × column cosine), so k grows along the normal;
//! * the same SOP Instance twice (a copied file) is dropped with a warning;
//!   two different instances at one position are an error;
//! * gaps equal to the median gap; a gap of about m × the median is reported
//!   as m − 1 missing slices, anything else as irregular spacing
//!   (`allow_irregular_spacing` resamples to the median spacing);
//! * slice origins on a line along the normal; a linear in-plane drift is a
//!   gantry tilt or sheared stack (`allow_tilt` resamples onto an
//!   orthogonal grid), any other drift is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use delineate_imaging::Geometry;
use nalgebra::Vector3;
use serde::Serialize;

use crate::header::InstanceHeader;
use crate::scan::ScanReport;
use crate::Error;

/// Direction cosines of two slices agree within this (unitless).
pub const ORIENTATION_TOLERANCE: f64 = 1e-4;
/// Cosine vectors must be unit and orthogonal within this.
pub const COSINE_NORM_TOLERANCE: f64 = 1e-3;
/// Pixel spacings agree within this fraction.
pub const PIXEL_SPACING_RELATIVE_TOLERANCE: f64 = 1e-4;
/// A slice gap may differ from the median gap by this much (mm) ...
pub const GAP_ABSOLUTE_TOLERANCE_MM: f64 = 0.01;
/// ... or by this fraction of the median gap, whichever is larger.
pub const GAP_RELATIVE_TOLERANCE: f64 = 0.01;
/// Two slices closer than this (mm) along the normal are at one position.
pub const DUPLICATE_POSITION_MM: f64 = 1e-3;
/// In-plane drift of slice origins below this (mm) is ignored.
pub const IN_PLANE_SHIFT_TOLERANCE_MM: f64 = 0.05;
/// Largest volume we agree to build (voxels): 2³⁰, 4 GiB of float32.
pub const MAX_VOXELS: usize = 1 << 30;
/// At most this many offending files are listed in one error.
const MAX_LISTED: usize = 8;

/// Which series to read from a folder.
#[derive(Clone, Debug, Default)]
pub enum SeriesSelector {
    /// The only 3-D series; an error listing candidates when there are several.
    #[default]
    Auto,
    /// By SeriesInstanceUID.
    Uid(String),
    /// By a case-insensitive substring of SeriesDescription (must match one series).
    Description(String),
}

/// Options for reading a series.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    pub selector: SeriesSelector,
    /// Resample non-uniform or gapped slice positions to the median spacing.
    pub allow_irregular_spacing: bool,
    /// Resample a tilted/sheared stack onto an orthogonal grid.
    pub allow_tilt: bool,
    /// Ignore files that have the DICM prefix but cannot be parsed.
    pub skip_unreadable: bool,
}

/// One series found in a folder.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub description: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub sop_class_uid: String,
    pub instances: usize,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    /// Could be a 3-D volume (image slices with geometry).
    pub is_volume: bool,
    /// Why not, when it is not.
    pub note: String,
    /// One file of the series.
    pub example_file: PathBuf,
}

impl SeriesSummary {
    /// One line for listings and error messages.
    pub fn line(&self) -> String {
        format!(
            "{} | #{} | {} | \"{}\" | {} instance(s){}",
            self.series_instance_uid,
            self.series_number
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            if self.modality.is_empty() {
                "?"
            } else {
                &self.modality
            },
            self.description,
            self.instances,
            if self.is_volume {
                String::new()
            } else {
                format!(" — not a volume: {}", self.note)
            }
        )
    }
}

fn group(report: &ScanReport) -> BTreeMap<&str, Vec<&InstanceHeader>> {
    let mut m: BTreeMap<&str, Vec<&InstanceHeader>> = BTreeMap::new();
    for h in &report.instances {
        m.entry(h.series_instance_uid.as_str()).or_default().push(h);
    }
    m
}

fn volume_problem(slices: &[&InstanceHeader]) -> Option<String> {
    let h = slices[0];
    if !h.has_pixel_data {
        return Some("no pixel data (not an image)".into());
    }
    if h.number_of_frames > 1 && h.frame.is_none() {
        return Some(format!(
            "multi-frame instance ({} frames): Enhanced/multi-frame images are not supported yet",
            h.number_of_frames
        ));
    }
    let missing: Vec<&str> = [
        (
            "ImagePositionPatient",
            slices.iter().any(|s| s.image_position.is_none()),
        ),
        (
            "ImageOrientationPatient",
            slices.iter().any(|s| s.image_orientation.is_none()),
        ),
        (
            "PixelSpacing",
            slices.iter().any(|s| s.pixel_spacing.is_none()),
        ),
        (
            "Rows/Columns",
            slices
                .iter()
                .any(|s| s.rows.is_none() || s.columns.is_none()),
        ),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() {
        return Some(format!("missing {}", missing.join(", ")));
    }
    if slices.len() < 2 {
        return Some("a single slice".into());
    }
    None
}

/// Every series in the report, ordered by series number then UID.
pub fn summarize(report: &ScanReport) -> Vec<SeriesSummary> {
    let mut out: Vec<SeriesSummary> = group(report)
        .into_iter()
        .map(|(uid, slices)| {
            let h = slices[0];
            let problem = volume_problem(&slices);
            SeriesSummary {
                series_instance_uid: uid.to_string(),
                description: h.series_description.clone(),
                modality: h.modality.clone(),
                series_number: h.series_number,
                sop_class_uid: h.sop_class_uid.clone(),
                instances: slices.len(),
                rows: h.rows,
                columns: h.columns,
                is_volume: problem.is_none(),
                note: problem.unwrap_or_default(),
                example_file: h.path.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.series_number, &a.series_instance_uid).cmp(&(b.series_number, &b.series_instance_uid))
    });
    out
}

/// Chooses the series to read and returns its instances.
pub fn select<'a>(
    report: &'a ScanReport,
    opts: &ReadOptions,
) -> Result<Vec<&'a InstanceHeader>, Error> {
    let root = &report.root;
    if !report.unreadable.is_empty() && !opts.skip_unreadable {
        let list: Vec<String> = report
            .unreadable
            .iter()
            .take(MAX_LISTED)
            .map(|(p, m)| format!("  {}: {m}", p.display()))
            .collect();
        return Err(Error::series(
            root,
            format!(
                "{} file(s) look like DICOM but cannot be parsed (one may be a slice of the series); \
                 fix or remove them, or pass --skip-unreadable:\n{}",
                report.unreadable.len(),
                list.join("\n")
            ),
        ));
    }
    let summaries = summarize(report);
    if report.instances.is_empty() {
        return Err(Error::series(
            root,
            format!(
                "no DICOM instances found ({} other file(s) ignored)",
                report.non_dicom.len()
            ),
        ));
    }
    let listing = |items: &[&SeriesSummary]| {
        items
            .iter()
            .map(|s| format!("  {}", s.line()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let all: Vec<&SeriesSummary> = summaries.iter().collect();
    let chosen: &SeriesSummary = match &opts.selector {
        SeriesSelector::Uid(uid) => summaries
            .iter()
            .find(|s| &s.series_instance_uid == uid)
            .ok_or_else(|| {
                Error::series(
                    root,
                    format!(
                        "no series with SeriesInstanceUID {uid}; the folder holds:\n{}",
                        listing(&all)
                    ),
                )
            })?,
        SeriesSelector::Description(text) => {
            let needle = text.to_lowercase();
            let hits: Vec<&SeriesSummary> = summaries
                .iter()
                .filter(|s| s.description.to_lowercase().contains(&needle))
                .collect();
            match hits.len() {
                1 => hits[0],
                0 => {
                    return Err(Error::series(
                        root,
                        format!(
                            "no series description contains {text:?}; the folder holds:\n{}",
                            listing(&all)
                        ),
                    ))
                }
                _ => {
                    return Err(Error::series(
                        root,
                        format!(
                            "{} series descriptions contain {text:?}; pass --series UID:\n{}",
                            hits.len(),
                            listing(&hits)
                        ),
                    ))
                }
            }
        }
        SeriesSelector::Auto => {
            let volumes: Vec<&SeriesSummary> = summaries.iter().filter(|s| s.is_volume).collect();
            match volumes.len() {
                1 => volumes[0],
                0 => return Err(Error::series(root, format!("no 3-D image series found; the folder holds:\n{}", listing(&all)))),
                n => {
                    return Err(Error::series(
                        root,
                        format!(
                            "{n} 3-D series found; choose one with --series UID or --series-description TEXT:\n{}",
                            listing(&volumes)
                        ),
                    ))
                }
            }
        }
    };
    if !chosen.is_volume {
        return Err(Error::series(
            root,
            format!(
                "series {} is not a 3-D volume: {}",
                chosen.series_instance_uid, chosen.note
            ),
        ));
    }
    Ok(report
        .instances
        .iter()
        .filter(|h| h.series_instance_uid == chosen.series_instance_uid)
        .collect())
}

/// The checked order and geometry of a series.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesPlan {
    /// Slices in order of increasing position along the normal.
    pub slices: Vec<InstanceHeader>,
    /// Position of each slice along the normal (mm).
    pub positions: Vec<f64>,
    /// Geometry of the stack as stored: uniform (median) slice spacing, and
    /// a sheared third axis when the stack is tilted.
    pub stack_geometry: Geometry,
    /// Geometry of the volume we return (equals `stack_geometry` unless
    /// the stack is resampled).
    pub geometry: Geometry,
    /// Distance between slices along the normal (median gap, mm).
    pub slice_spacing: f64,
    /// Slice positions are irregular and will be resampled.
    pub resample_spacing: bool,
    /// Tilt angle (degrees) of a sheared stack that will be resampled.
    pub tilt_degrees: Option<f64>,
    pub warnings: Vec<String>,
}

impl SeriesPlan {
    /// True when voxel slice k is exactly DICOM instance k (no resampling),
    /// which RTSTRUCT writing relies on.
    pub fn slices_are_instances(&self) -> bool {
        !self.resample_spacing && self.tilt_degrees.is_none()
    }
}

fn name(p: &Path) -> String {
    p.display().to_string()
}

fn check_consistency(root: &Path, slices: &[&InstanceHeader]) -> Result<(), Error> {
    let r = slices[0];
    let first = |what: &str, odd: &InstanceHeader, a: String, b: String| {
        Error::series(
            root,
            format!(
                "slices disagree on {what}: {} has {a}, {} has {b}; a series must be one volume \
                 (a localizer or a mixed series?)",
                name(&r.path),
                name(&odd.path)
            ),
        )
    };
    for s in slices {
        if (s.rows, s.columns) != (r.rows, r.columns) {
            return Err(first(
                "image size",
                s,
                format!("{:?}x{:?}", r.rows, r.columns),
                format!("{:?}x{:?}", s.rows, s.columns),
            ));
        }
        let (a, b) = (
            r.pixel_spacing.unwrap_or_default(),
            s.pixel_spacing.unwrap_or_default(),
        );
        if (0..2)
            .any(|i| (a[i] - b[i]).abs() > PIXEL_SPACING_RELATIVE_TOLERANCE * a[i].abs().max(1e-6))
        {
            return Err(first("PixelSpacing", s, format!("{a:?}"), format!("{b:?}")));
        }
        let (a, b) = (
            r.image_orientation.unwrap_or_default(),
            s.image_orientation.unwrap_or_default(),
        );
        if (0..6).any(|i| (a[i] - b[i]).abs() > ORIENTATION_TOLERANCE) {
            return Err(first(
                "ImageOrientationPatient",
                s,
                format!("{a:?}"),
                format!("{b:?}"),
            ));
        }
        if s.frame_of_reference_uid != r.frame_of_reference_uid {
            return Err(first(
                "FrameOfReferenceUID",
                s,
                r.frame_of_reference_uid.clone(),
                s.frame_of_reference_uid.clone(),
            ));
        }
        if s.samples_per_pixel.unwrap_or(1) != 1 {
            return Err(Error::file(
                &s.path,
                format!(
                    "{} samples per pixel: only greyscale images are read",
                    s.samples_per_pixel.unwrap_or(0)
                ),
            ));
        }
        if !s.problems.is_empty() {
            return Err(Error::file(&s.path, s.problems.join("; ")));
        }
    }
    Ok(())
}

/// Orders and checks `slices` (one series) and computes its geometry.
pub fn plan(
    root: &Path,
    slices: &[&InstanceHeader],
    opts: &ReadOptions,
) -> Result<SeriesPlan, Error> {
    if slices.is_empty() {
        return Err(Error::series(root, "the series has no slices"));
    }
    check_consistency(root, slices)?;
    let r = slices[0];
    let iop = r.image_orientation.unwrap_or_default();
    let row = Vector3::new(iop[0], iop[1], iop[2]);
    let col = Vector3::new(iop[3], iop[4], iop[5]);
    if (row.norm() - 1.0).abs() > COSINE_NORM_TOLERANCE
        || (col.norm() - 1.0).abs() > COSINE_NORM_TOLERANCE
        || row.dot(&col).abs() > COSINE_NORM_TOLERANCE
    {
        return Err(Error::file(
            &r.path,
            format!("ImageOrientationPatient {iop:?} is not two orthogonal unit vectors"),
        ));
    }
    let (row, col) = (row.normalize(), col.normalize());
    let normal = row.cross(&col).normalize();
    let ipp = |h: &InstanceHeader| Vector3::from(h.image_position.unwrap_or_default());
    let mut order: Vec<(f64, &InstanceHeader)> =
        slices.iter().map(|h| (ipp(h).dot(&normal), *h)).collect();
    order.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.instance_number.cmp(&b.1.instance_number))
            .then(a.1.path.cmp(&b.1.path))
    });
    let mut warnings = Vec::new();
    // Duplicates.
    let mut kept: Vec<(f64, &InstanceHeader)> = Vec::with_capacity(order.len());
    for (p, h) in order {
        if let Some((q, prev)) = kept.last() {
            if (p - q).abs() < DUPLICATE_POSITION_MM {
                if prev.sop_instance_uid == h.sop_instance_uid && prev.frame != h.frame {
                    return Err(Error::series(
                        root,
                        format!(
                            "{}: frames {} and {} lie at the same position {p:.3} mm \
                             (several stacks, e.g. echoes or time points, in one instance): not supported",
                            name(&h.path),
                            prev.frame.map_or(1, |f| f + 1),
                            h.frame.map_or(1, |f| f + 1)
                        ),
                    ));
                }
                if prev.sop_instance_uid == h.sop_instance_uid {
                    warnings.push(format!(
                        "{} is a second copy of SOP instance {} ({}); ignored",
                        name(&h.path),
                        h.sop_instance_uid,
                        name(&prev.path)
                    ));
                    continue;
                }
                return Err(Error::series(
                    root,
                    format!(
                        "two different slices at the same position {p:.3} mm: {} and {} \
                         (a duplicated slice, or several echoes/phases mixed in one series)",
                        name(&prev.path),
                        name(&h.path)
                    ),
                ));
            }
        }
        kept.push((p, h));
    }
    if kept.len() < 2 {
        return Err(Error::series(
            root,
            "the series has a single distinct slice position: not a 3-D volume",
        ));
    }
    let positions: Vec<f64> = kept.iter().map(|k| k.0).collect();
    let slices: Vec<InstanceHeader> = kept.iter().map(|k| k.1.clone()).collect();
    // Spacing.
    let mut gaps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    let gap_list = gaps.clone();
    gaps.sort_by(|a, b| a.total_cmp(b));
    let spacing = gaps[gaps.len() / 2];
    let tol = GAP_ABSOLUTE_TOLERANCE_MM.max(GAP_RELATIVE_TOLERANCE * spacing);
    let mut bad = Vec::new();
    for (k, g) in gap_list.iter().enumerate() {
        if (g - spacing).abs() <= tol {
            continue;
        }
        let m = (g / spacing).round();
        let what = if m >= 2.0 && (g - m * spacing).abs() <= tol * m {
            format!("{} slice(s) missing", m as usize - 1)
        } else {
            format!("gap of {g:.4} mm instead of {spacing:.4} mm")
        };
        bad.push(format!(
            "  {what} between {:.3} mm ({}) and {:.3} mm ({})",
            positions[k],
            name(&slices[k].path),
            positions[k + 1],
            name(&slices[k + 1].path)
        ));
    }
    let resample_spacing = !bad.is_empty();
    if resample_spacing {
        let n = bad.len();
        bad.truncate(MAX_LISTED);
        let msg = format!("slice positions are not uniform (median spacing {spacing:.4} mm, {n} irregular gap(s)):\n{}", bad.join("\n"));
        if !opts.allow_irregular_spacing {
            return Err(Error::series(
                root,
                format!("{msg}\npass --allow-irregular-spacing to resample to the median spacing"),
            ));
        }
        warnings.push(format!(
            "{msg}\nresampled to {spacing:.4} mm by linear interpolation between slices"
        ));
    }
    // Tilt / shear: in-plane drift of the slice origins.
    let origin0 = ipp(&slices[0]);
    let drift: Vec<(f64, Vector3<f64>)> = slices
        .iter()
        .zip(&positions)
        .map(|(h, p)| {
            let d = ipp(h) - origin0;
            (p - positions[0], d - normal * d.dot(&normal))
        })
        .collect();
    let max_drift = drift.iter().map(|(_, v)| v.norm()).fold(0.0, f64::max);
    let mut shear = Vector3::zeros(); // in-plane mm per mm along the normal
    let mut tilt_degrees = None;
    if max_drift > IN_PLANE_SHIFT_TOLERANCE_MM {
        let den: f64 = drift.iter().map(|(t, _)| t * t).sum();
        shear = drift
            .iter()
            .fold(Vector3::zeros(), |acc, (t, v)| acc + v * *t)
            / den;
        let residual = drift
            .iter()
            .map(|(t, v)| (v - shear * *t).norm())
            .fold(0.0, f64::max);
        if residual > IN_PLANE_SHIFT_TOLERANCE_MM {
            return Err(Error::series(
                root,
                format!("slice origins shift in-plane irregularly (up to {max_drift:.3} mm, not a straight line): not one volume"),
            ));
        }
        let angle = shear.norm().atan().to_degrees();
        let msg = format!("gantry tilt or sheared stack: slices step {angle:.3}° off the slice normal (in-plane drift up to {max_drift:.3} mm)");
        if !opts.allow_tilt {
            return Err(Error::series(
                root,
                format!("{msg}\npass --allow-tilt to resample onto an orthogonal grid"),
            ));
        }
        warnings.push(format!("{msg}; resampled onto an orthogonal grid"));
        tilt_degrees = Some(angle);
    }
    let step = normal + shear;
    let ps = r.pixel_spacing.unwrap_or_default();
    let n_slices = if resample_spacing {
        (((positions[positions.len() - 1] - positions[0]) / spacing).round() as usize)
            .saturating_add(1)
    } else {
        slices.len()
    };
    let dir = |v: [Vector3<f64>; 3]| [0, 1, 2].map(|r| [v[0][r], v[1][r], v[2][r]]);
    let size = [
        r.columns.unwrap_or(0) as usize,
        r.rows.unwrap_or(0) as usize,
        n_slices,
    ];
    // PixelSpacing is (between rows, between columns): i runs along a row.
    let stack_geometry = Geometry::new(
        size,
        [ps[1], ps[0], spacing * step.norm()],
        [origin0.x, origin0.y, origin0.z],
        dir([row, col, step.normalize()]),
    )
    .map_err(|e| Error::file(&r.path, e.to_string()))?;
    let geometry = if tilt_degrees.is_some() {
        deshear(&stack_geometry, [row, col, normal], spacing)?
    } else {
        stack_geometry.clone()
    };
    for g in [&stack_geometry, &geometry] {
        if g.size
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .is_none_or(|n| n > MAX_VOXELS)
        {
            return Err(Error::series(
                root,
                format!(
                    "the volume would have {:?} voxels, more than the {MAX_VOXELS} allowed",
                    g.size
                ),
            ));
        }
    }
    Ok(SeriesPlan {
        slices,
        positions,
        stack_geometry,
        geometry,
        slice_spacing: spacing,
        resample_spacing,
        tilt_degrees,
        warnings,
    })
}

/// The orthogonal grid (axes `frame`, spacings of the stack) that covers a
/// sheared stack.
fn deshear(
    stack: &Geometry,
    frame: [Vector3<f64>; 3],
    slice_spacing: f64,
) -> Result<Geometry, Error> {
    let spacing = [stack.spacing[0], stack.spacing[1], slice_spacing];
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let ijk = [0, 1, 2].map(|a| {
            if c >> a & 1 == 1 {
                (stack.size[a] - 1) as f64
            } else {
                0.0
            }
        });
        let w = Vector3::from(stack.index_to_world(ijk));
        for a in 0..3 {
            let t = w.dot(&frame[a]);
            lo[a] = lo[a].min(t);
            hi[a] = hi[a].max(t);
        }
    }
    let size =
        [0, 1, 2].map(|a| (((hi[a] - lo[a]) / spacing[a]).round() as usize).saturating_add(1));
    let origin = frame[0] * lo[0] + frame[1] * lo[1] + frame[2] * lo[2];
    let direction = [0, 1, 2].map(|r| [frame[0][r], frame[1][r], frame[2][r]]);
    Ok(Geometry::new(
        size,
        spacing,
        [origin.x, origin.y, origin.z],
        direction,
    )?)
}
