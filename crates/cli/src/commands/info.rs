//! `delineate info`: what an image is and where its voxels are.

use std::path::PathBuf;

use anyhow::Result;
use delineate_dicom::{plan, scan, select, summarize, SeriesSelector};
use delineate_imaging::{read_nifti_header, Geometry};
use serde_json::{json, Value};

use crate::input::{detect, InputKind, SeriesArgs};

/// Describe a NIfTI file or a DICOM folder: grid size, voxel spacing,
/// origin, direction cosines and orientation code (in DICOM LPS patient
/// coordinates, mm), plus series, patient/study IDs and warnings.
///
/// For a DICOM folder every series is listed; the geometry is shown for
/// the one 3-D series (or the one chosen with --series/--series-description).
/// Slice problems (missing, duplicated, uneven or tilted slices) are errors,
/// exactly as `convert` would report them.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// A .nii/.nii.gz file, or a folder (searched recursively) of DICOM files.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub series: SeriesArgs,
}

fn geometry_json(g: &Geometry) -> Value {
    json!({
        "size": g.size,
        "spacing_mm": g.spacing,
        "origin_lps_mm": g.origin,
        "direction": g.direction,
        "orientation": g.orientation_code(),
        "affine_ras": g.affine_ras(),
        "orthonormal": g.is_orthonormal(),
    })
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let report = match detect(&args.path)? {
        InputKind::Nifti => nifti_report(args)?,
        InputKind::Dicom => dicom_report(args)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn nifti_report(args: &InfoArgs) -> Result<Value> {
    let (g, info) = read_nifti_header(&args.path)?;
    Ok(json!({
        "path": args.path,
        "format": if info.compressed { "NIfTI-1 (gzip)" } else { "NIfTI-1" },
        "geometry": geometry_json(&g),
        "nifti": {
            "datatype": info.datatype,
            "dims": info.dims,
            "sform_code": info.sform_code,
            "qform_code": info.qform_code,
            "transform": info.transform,
            "scl_slope": info.scl_slope,
            "scl_inter": info.scl_inter,
            "description": info.description,
        },
        "warnings": info.warnings,
    }))
}

fn dicom_report(args: &InfoArgs) -> Result<Value> {
    let pb = crate::progress::bar("scanning", "files");
    let rep = scan(&args.path, Some(&pb))?;
    pb.finish_and_clear();
    let summaries = summarize(&rep);
    let opts = args.series.options();
    let volumes = summaries.iter().filter(|s| s.is_volume).count();
    let mut out = json!({
        "path": args.path,
        "format": "DICOM",
        "files": {
            "dicom": rep.instances.len(),
            "non_dicom_ignored": rep.non_dicom.len(),
            "dicomdir_ignored": rep.dicomdir.len(),
            "unreadable": rep.unreadable.iter().map(|(p, m)| format!("{}: {m}", p.display())).collect::<Vec<_>>(),
        },
        "series": summaries,
        "geometry": Value::Null,
        "warnings": [],
    });
    if rep.instances.is_empty() {
        if let Some((p, m)) = rep.unreadable.first() {
            anyhow::bail!("{}: {m}", p.display());
        }
        anyhow::bail!(
            "{}: no DICOM files found ({} other files ignored)",
            args.path.display(),
            rep.non_dicom.len()
        );
    }
    if matches!(opts.selector, SeriesSelector::Auto) && volumes != 1 {
        out["note"] = json!(if volumes == 0 {
            "no 3-D image series here".to_string()
        } else {
            format!("{volumes} 3-D series: pass --series UID or --series-description TEXT to see one's geometry")
        });
        return Ok(out);
    }
    let chosen = select(&rep, &opts)?;
    let p = plan(&args.path, &chosen, &opts)?;
    let h = &p.slices[0];
    out["geometry"] = geometry_json(&p.geometry);
    out["selected"] = json!({
        "series_instance_uid": h.series_instance_uid,
        "series_description": h.series_description,
        "series_number": h.series_number,
        "modality": h.modality,
        "sop_class_uid": h.sop_class_uid,
        "manufacturer": h.manufacturer,
        "patient_id": h.patient.id,
        "study_instance_uid": h.study.instance_uid,
        "study_id": h.study.id,
        "accession_number": h.study.accession_number,
        "frame_of_reference_uid": h.frame_of_reference_uid,
        "slices": p.slices.len(),
        "slice_spacing_mm": p.slice_spacing,
        "transfer_syntax": h.transfer_syntax_name(),
        "resampled": !p.slices_are_instances(),
    });
    out["warnings"] = json!(p.warnings);
    Ok(out)
}

fn fmt3(v: &Value, digits: usize) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{:.*}", digits, x.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(" x ")
        })
        .unwrap_or_default()
}

fn text(r: &Value) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
    line("Path:", r["path"].as_str().unwrap_or("").to_string());
    line("Format:", r["format"].as_str().unwrap_or("").to_string());
    if let Some(f) = r.get("files") {
        line(
            "Files:",
            format!(
                "{} DICOM, {} other ignored",
                f["dicom"], f["non_dicom_ignored"]
            ),
        );
        for u in f["unreadable"].as_array().into_iter().flatten() {
            line("Unreadable:", u.as_str().unwrap_or("").to_string());
        }
    }
    if let Some(series) = r.get("series").and_then(|v| v.as_array()) {
        line("Series:", format!("{}", series.len()));
        for x in series {
            let vol = if x["is_volume"].as_bool() == Some(true) {
                "volume".to_string()
            } else {
                format!("not a volume: {}", x["note"].as_str().unwrap_or(""))
            };
            let number = x["series_number"]
                .as_i64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into());
            line(
                "",
                format!(
                    "{} #{} {} \"{}\" {} instance(s), {}",
                    x["series_instance_uid"].as_str().unwrap_or(""),
                    number,
                    x["modality"].as_str().unwrap_or(""),
                    x["description"].as_str().unwrap_or(""),
                    x["instances"],
                    vol
                ),
            );
        }
    }
    if let Some(sel) = r.get("selected") {
        line(
            "Selected:",
            format!(
                "{} ({}, \"{}\")",
                sel["series_instance_uid"].as_str().unwrap_or(""),
                sel["modality"].as_str().unwrap_or(""),
                sel["series_description"].as_str().unwrap_or("")
            ),
        );
        line(
            "Patient ID:",
            sel["patient_id"].as_str().unwrap_or("").to_string(),
        );
        line(
            "Study:",
            format!(
                "ID {} / UID {}",
                sel["study_id"].as_str().unwrap_or(""),
                sel["study_instance_uid"].as_str().unwrap_or("")
            ),
        );
        line(
            "Frame of ref:",
            sel["frame_of_reference_uid"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        line(
            "Transfer:",
            sel["transfer_syntax"].as_str().unwrap_or("").to_string(),
        );
    }
    if let Some(n) = r.get("nifti") {
        line(
            "Datatype:",
            n["datatype"].as_str().unwrap_or("").to_string(),
        );
        line(
            "Transform:",
            format!(
                "{} (sform_code {}, qform_code {})",
                n["transform"].as_str().unwrap_or(""),
                n["sform_code"],
                n["qform_code"]
            ),
        );
        line(
            "Scaling:",
            format!("slope {} inter {}", n["scl_slope"], n["scl_inter"]),
        );
    }
    let g = &r["geometry"];
    if !g.is_null() {
        line("Size:", format!("{} voxels", fmt3(&g["size"], 0)));
        line("Spacing:", format!("{} mm", fmt3(&g["spacing_mm"], 6)));
        line(
            "Origin:",
            format!(
                "({}) mm LPS",
                fmt3(&g["origin_lps_mm"], 4).replace(" x ", ", ")
            ),
        );
        for (i, axis) in ["i", "j", "k"].iter().enumerate() {
            let col: Vec<String> = (0..3)
                .map(|r| {
                    format!(
                        "{:+.6}",
                        g["direction"][r][i].as_f64().unwrap_or(f64::NAN) + 0.0
                    )
                })
                .collect();
            line(
                if i == 0 { "Direction:" } else { "" },
                format!("{axis} -> ({})", col.join(", ")),
            );
        }
        line(
            "Orientation:",
            g["orientation"].as_str().unwrap_or("").to_string(),
        );
    }
    if let Some(n) = r.get("note") {
        line("Note:", n.as_str().unwrap_or("").to_string());
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        line("Warning:", w.as_str().unwrap_or("").to_string());
    }
    s
}
