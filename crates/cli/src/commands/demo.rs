//! `delineate demo`: the whole pipeline on one synthetic case, end to end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use delineate_eval::matching::{match_case, MatchOptions, Prediction};
use delineate_eval::overlay::{write_overlay, Tile};
use delineate_imaging::{read_nifti_any, Volume};
use delineate_model::backend::Cpu;
use delineate_synth::{case_seed, generate_case, write_case, Kind, MetCount, SynthParams};
use delineate_synth::{Template, TemplateSource};

use delineate_model::pipeline::{load_model, predict_case, PredictOptions};

/// Run the whole pipeline on one synthetic case and report.
///
/// Makes a synthetic case with metastases (on Colin27 when mricron-data is
/// installed, the procedural phantom otherwise) and writes it as a DICOM
/// series; segments it with the built-in model (or --model) as `delineate
/// segment` would; evaluates the result against the truth; writes
/// OUT/overlay.png (a slice through every lesion and every false positive:
/// truth green, prediction red) and the RTSTRUCT; prints a short report
/// with the time of each stage.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output folder (must not exist, or be empty).
    #[arg(long, default_value = "delineate-demo")]
    pub out: PathBuf,
    /// Seed of the synthetic case.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Model file; default: the built-in model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Use the procedural head phantom even when Colin27 is installed.
    #[arg(long)]
    pub phantom: bool,
}

pub fn run(a: &DemoArgs) -> Result<()> {
    let t_all = Instant::now();
    crate::input::fresh_output_dir(&a.out)?;
    let mut stages: Vec<(String, f64)> = Vec::new();

    // 1. A synthetic case, as DICOM.
    let t = Instant::now();
    let source = if a.phantom {
        TemplateSource::Phantom
    } else {
        TemplateSource::Default
    };
    let (template, warning) = Template::load(&source)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let mut p = SynthParams {
        kinds: vec![Kind::Metastasis],
        met_count: MetCount::Range { min: 3, max: 6 },
        sagittal_fraction: 0.0,
        ..Default::default()
    };
    p.grids.retain(|g| g.name == "1mm");
    let case = generate_case(&template, &p, "case", case_seed(a.seed, 0));
    let case_dir = write_case(&a.out, &case, true)?;
    stages.push(("synthetic case".into(), t.elapsed().as_secs_f64()));
    println!(
        "case: {} on {} ({} grid), {} lesion(s) -> {}",
        case.record.name,
        template.name,
        case.record.acquisition.grid,
        case.record.lesions.len(),
        case_dir.display()
    );

    // 2. Segment the DICOM series, exactly as `delineate segment` does.
    let seg_out = a.out.join("segmentation");
    let t = Instant::now();
    let model = load_model::<Cpu>(a.model.as_deref(), &Default::default(), true)?;
    stages.push(("load model".into(), t.elapsed().as_secs_f64()));
    let opts = PredictOptions {
        revision: 1,
        force: true,
        ..Default::default()
    };
    let bar = crate::progress::bar("segmenting", "windows");
    let input = case_dir.join("dicom");
    let out = predict_case(
        &model,
        "case",
        &input,
        &seg_out,
        &opts,
        None,
        &mut |d, n| {
            bar.set_length(n as u64);
            bar.set_position(d as u64);
        },
    )?;
    bar.finish_and_clear();
    for (s, secs) in &out.timings {
        stages.push((format!("segment: {s}"), *secs));
    }

    // 3. Evaluate the lesions `segment` wrote (mask.nii.gz) against the truth.
    let t = Instant::now();
    let (mask, _) = read_nifti_any(&seg_out.join("mask.nii.gz"))?;
    let mask = mask
        .to_labels()
        .map_err(|v| anyhow::anyhow!("mask.nii.gz: value {v} is not a label"))?;
    let truth: Volume<u32> = case.truth.map(|&v| u32::from(v));
    if !mask.geometry().same_grid(truth.geometry(), 1e-3) {
        bail!("the segmentation is not on the grid of the synthetic truth (DICOM round trip changed the grid)");
    }
    let kinds: HashMap<u32, String> = case
        .record
        .lesions
        .iter()
        .map(|l| (l.id, l.kind.short().to_string()))
        .collect();
    let result = match_case(
        "case",
        &truth,
        &Prediction::Labels(mask.clone()),
        &kinds,
        &MatchOptions::default(),
    );
    stages.push(("evaluate".into(), t.elapsed().as_secs_f64()));

    // 4. Overlay: a slice through every truth lesion and false positive.
    let t = Instant::now();
    let image = case.image.map(|&v| v as f32);
    let g = image.geometry().clone();
    let idx = |c: [f64; 3]| {
        let i = g.world_to_index(c);
        [0, 1, 2].map(|a| (i[a].round().max(0.0) as usize).min(g.size[a] - 1))
    };
    let mut tiles = Vec::new();
    let mut lines = Vec::new();
    for tl in &result.truth {
        let rec = case.record.lesions.iter().find(|l| l.id == tl.label);
        let Some(rec) = rec else { continue };
        let found = tl.hit_confidence.is_some();
        let verdict = if found {
            format!("found, Dice {:.2}", tl.best_dice)
        } else {
            "MISSED".to_string()
        };
        lines.push(format!(
            "  {} {} {:>5.1} mm at ({:.0}, {:.0}, {:.0}) mm: {verdict}",
            rec.kind.short(),
            rec.id,
            tl.diameter_mm,
            rec.centre_mm[0],
            rec.centre_mm[1],
            rec.centre_mm[2]
        ));
        tiles.push(Tile {
            centre: idx(rec.centre_mm),
            half_mm: (tl.diameter_mm * 1.5).max(20.0),
            title: format!(
                "{} {} {:.1} mm: {verdict}",
                rec.kind.short(),
                rec.id,
                tl.diameter_mm
            ),
        });
    }
    let fps: Vec<_> = result
        .preds
        .iter()
        .filter(|p| p.matches.is_empty())
        .collect();
    const SHOWN: usize = 10;
    for p in fps.iter().take(SHOWN) {
        lines.push(format!(
            "  false positive: {:.1} mm at ({:.0}, {:.0}, {:.0}) mm",
            p.diameter_mm, p.centre_mm[0], p.centre_mm[1], p.centre_mm[2]
        ));
        if tiles.len() < 16 {
            tiles.push(Tile {
                centre: idx(p.centre_mm),
                half_mm: (p.diameter_mm * 1.5).max(20.0),
                title: format!("false positive {:.1} mm", p.diameter_mm),
            });
        }
    }
    if fps.len() > SHOWN {
        lines.push(format!(
            "  ... and {} more false positives (segmentation/lesions.json)",
            fps.len() - SHOWN
        ));
    }
    let overlay = a.out.join("overlay.png");
    write_overlay(&overlay, &image, &truth, &mask, &tiles)?;
    stages.push(("overlay".into(), t.elapsed().as_secs_f64()));

    // 5. Report.
    let found = result.hits(0.0);
    let dice: Vec<f64> = result
        .truth
        .iter()
        .filter(|t| t.hit_confidence.is_some())
        .map(|t| t.best_dice)
        .collect();
    let mut report = format!(
        "delineate demo (model {})\n\nlesions: {} of {} found, {} missed, {} false positive(s); mean Dice of found lesions {}\n",
        model.name,
        found,
        result.truth.len(),
        result.truth.len() - found,
        fps.len(),
        if dice.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", dice.iter().sum::<f64>() / dice.len() as f64)
        }
    );
    for l in &lines {
        report += &format!("{l}\n");
    }
    report += "\ntime per stage:\n";
    for (s, secs) in &stages {
        report += &format!("  {s:<24} {secs:>6.2} s\n");
    }
    report += &format!(
        "  {:<24} {:>6.2} s\n",
        "total",
        t_all.elapsed().as_secs_f64()
    );
    report += &format!(
        "\noutputs: {} (RTSTRUCT: {}), {}\n",
        seg_out.display(),
        out.rtstruct
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none: no lesion found".into()),
        overlay.display()
    );
    std::fs::write(a.out.join("report.txt"), &report)
        .with_context(|| format!("{}: cannot write report.txt", a.out.display()))?;
    print!("{report}");
    Ok(())
}
