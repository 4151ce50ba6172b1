//! `delineate synth`: synthetic radiosurgery cases on a real brain MRI.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use delineate_eval::layout::Layout;
use delineate_synth::dataset::{self, write_dataset, DatasetSpec};
use delineate_synth::{
    backgrounds, randomise::Randomisation, GridSpec, Kind, MetCount, SynthParams, Template,
    TemplateSource,
};

/// Make synthetic contrast-enhanced T1 cases with instance-labelled truth.
///
/// Each case is Colin27 (Debian's mricron-data) under a random affine and
/// elastic deformation, with metastases, a meningioma or a vestibular
/// schwannoma, enhancing look-alikes (venous sinuses, choroid plexus, dura,
/// cortical vessels), scanned on a realistic grid with bias field and
/// Rician noise. Without Colin27 a procedural head phantom stands in (with
/// a warning).
///
/// --background draws cases on other real brains too (colin27, oasis, itk;
/// `all` = every one installed; mni152 is the held-out test background and
/// is never used for training). --randomise adds SynthSeg-style domain
/// randomisation: random tissue contrast, random grids from 0.45 mm
/// in-plane to 6.5 mm slices (axial, sagittal, coronal) with slice-profile
/// averaging, Nyquist ghosts, wrap-around and field-of-view cuts
/// (docs/synth.md).
///
/// Writes DIR/case_NNN/{image,truth,brain,lookalikes}.nii.gz and
/// lesions.json (lookalikes: 1 = vessel, 2 = sinus, plexus or dura; for
/// hard-negative sampling in training), with
/// --dicom a DICOM MR series and the truth RTSTRUCT, with --preview a PNG
/// montage per case in DIR/preview/, and DIR/manifest.json last. The same
/// --seed and version give byte-identical NIfTI and JSON files.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// Number of cases.
    #[arg(long, default_value_t = 20)]
    pub cases: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Any T1 NIfTI instead of Colin27.
    #[arg(long, conflicts_with = "phantom")]
    pub template: Option<PathBuf>,
    /// Brain mask for --template (non-zero = brain); derived when omitted.
    #[arg(long, requires = "template")]
    pub brain_mask: Option<PathBuf>,
    /// Use the procedural head phantom.
    #[arg(long)]
    pub phantom: bool,
    /// Background brains, comma-separated: colin27, oasis, itk, mni152
    /// (test only), or all (every installed training background). Each case
    /// gets one, by its seed.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["template", "phantom"])]
    pub background: Vec<String>,
    /// Domain randomisation: contrast, resolution, artefacts.
    #[arg(long)]
    pub randomise: bool,
    /// Output layout: delineate (a folder per case) or nnunet (an nnU-Net
    /// raw dataset: dataset.json, imagesTr/, labelsTr/; lesions as class 1).
    #[arg(long, value_enum, default_value_t = Layout::Delineate)]
    pub layout: Layout,
    /// Lesion kinds: met, men, schw (comma-separated).
    #[arg(long, default_value = "met,men,schw", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Metastases per metastasis case: "auto" (heavy-tailed, mean 3.5) or MIN-MAX.
    #[arg(long, default_value = "auto")]
    pub met_count: String,
    /// Metastasis diameter range in mm (log-uniform).
    #[arg(long, default_value = "2-30")]
    pub met_diameter: String,
    #[arg(long, default_value = "10-50")]
    pub men_diameter: String,
    #[arg(long, default_value = "5-30")]
    pub schw_diameter: String,
    /// Half-length range (mm) of the vessels running through the slice in
    /// deep white matter (look-alikes: dots on one slice, tubes in 3-D).
    /// Datasets before 2026-12-06 used 3-8: capsules as small as small
    /// metastases, the cause of the missed small lesions (docs/model-card.md).
    #[arg(long, default_value = "12-32")]
    pub through_plane_mm: String,
    /// Share of cases skull-stripped (everything beyond the cranial cavity
    /// set to air, as in BraTS): training data for the intracranial mask.
    #[arg(long, default_value_t = 0.0)]
    pub skull_strip_p: f64,
    /// Lesion-like nodules (3–9 mm, as bright as enhancing lesions) placed
    /// in scalp and orbital fat per case, as a count or a range (e.g. 2-4):
    /// look-alikes beyond the skull that the intracranial mask must keep
    /// out of a result (labelled 3 in lookalikes.nii.gz, listed in
    /// lesions.json). None in skull-stripped cases.
    #[arg(long, default_value = "0")]
    pub extracranial_lookalikes: String,
    /// Acquisition grids to draw from: 1mm, 0.9x0.9x1, 0.5x0.5x2.
    #[arg(long, value_delimiter = ',')]
    pub grid: Vec<String>,
    /// Fraction of sagittal acquisitions (the rest are axial).
    #[arg(long, default_value_t = 0.3)]
    pub sagittal_fraction: f64,
    /// White-matter SNR range.
    #[arg(long, default_value = "15-40")]
    pub snr: String,
    /// Also write each case as a DICOM MR series with the truth RTSTRUCT.
    #[arg(long)]
    pub dicom: bool,
    /// Write a PNG montage per case into DIR/preview/.
    #[arg(long)]
    pub preview: bool,
}

fn range(s: &str, what: &str) -> Result<[f64; 2]> {
    let parts: Vec<&str> = s.split('-').collect();
    let parse = |t: &str| {
        t.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    match parts.as_slice() {
        [a] => parse(a).map(|v| [v, v]),
        [a, b] => parse(a).zip(parse(b)).map(|(a, b)| [a, b]),
        _ => None,
    }
    .filter(|r| r[0] <= r[1])
    .with_context(|| format!("--{what}: expected MIN-MAX with 0 <= MIN <= MAX, got {s:?}"))
}

pub fn params(a: &SynthArgs) -> Result<SynthParams> {
    let kinds: Vec<Kind> = a
        .kinds
        .iter()
        .map(|k| {
            Kind::parse(k).with_context(|| format!("--kinds: unknown kind {k:?} (met, men, schw)"))
        })
        .collect::<Result<_>>()?;
    let mut p = SynthParams {
        kinds,
        ..Default::default()
    };
    if p.kinds.is_empty() {
        bail!("--kinds: give at least one of met, men, schw");
    }
    if a.met_count != "auto" {
        let r = range(&a.met_count, "met-count")?;
        if r[1] > 200.0 {
            bail!("--met-count: at most 200 metastases per case");
        }
        p.met_count = MetCount::Range {
            min: r[0] as u32,
            max: r[1] as u32,
        };
    }
    p.met_diameter_mm = range(&a.met_diameter, "met-diameter")?;
    p.men_diameter_mm = range(&a.men_diameter, "men-diameter")?;
    p.schw_diameter_mm = range(&a.schw_diameter, "schw-diameter")?;
    for (r, what) in [
        (p.met_diameter_mm, "met-diameter"),
        (p.men_diameter_mm, "men-diameter"),
        (p.schw_diameter_mm, "schw-diameter"),
    ] {
        if r[0] < 1.0 || r[1] > 80.0 {
            bail!("--{what}: diameters must lie in 1-80 mm");
        }
    }
    p.through_plane_half_mm = range(&a.through_plane_mm, "through-plane-mm")?;
    if p.through_plane_half_mm[0] < 1.0 || p.through_plane_half_mm[1] > 100.0 {
        bail!("--through-plane-mm: half-lengths must lie in 1-100 mm");
    }
    if !(0.0..=1.0).contains(&a.skull_strip_p) {
        bail!("--skull-strip-p: must lie in 0-1");
    }
    p.skull_strip_p = a.skull_strip_p;
    let n = range(&a.extracranial_lookalikes, "extracranial-lookalikes")?;
    if n[1] > 20.0 || n.iter().any(|v| v.fract() != 0.0) {
        bail!("--extracranial-lookalikes: a whole number or range within 0-20");
    }
    p.extracranial_lookalikes = n.map(|v| v as usize);
    p.snr = range(&a.snr, "snr")?;
    if p.snr[0] < 1.0 {
        bail!("--snr: must be at least 1");
    }
    if !(0.0..=1.0).contains(&a.sagittal_fraction) {
        bail!("--sagittal-fraction: must lie in 0-1");
    }
    p.sagittal_fraction = a.sagittal_fraction;
    if !a.grid.is_empty() {
        let known = SynthParams::default().grids;
        let mut grids: Vec<GridSpec> = Vec::new();
        for name in &a.grid {
            let g = known.iter().find(|g| &g.name == name).with_context(|| {
                format!("--grid: unknown grid {name:?} (1mm, 0.9x0.9x1, 0.5x0.5x2)")
            })?;
            grids.push(GridSpec {
                weight: 1.0,
                ..g.clone()
            });
        }
        p.grids = grids;
    }
    if a.randomise {
        p.randomisation = Some(Randomisation::default());
    }
    Ok(p)
}

/// The anatomy sources a run draws from, with their names (None: the
/// template's own).
fn sources(a: &SynthArgs) -> Result<Vec<(Option<String>, TemplateSource)>> {
    if a.phantom {
        return Ok(vec![(None, TemplateSource::Phantom)]);
    }
    if let Some(t) = &a.template {
        return Ok(vec![(
            None,
            TemplateSource::File {
                t1: t.clone(),
                brain: a.brain_mask.clone(),
            },
        )]);
    }
    if a.background.is_empty() {
        return Ok(vec![(None, TemplateSource::Default)]);
    }
    let mut names: Vec<String> = Vec::new();
    for b in &a.background {
        if b == "all" {
            names.extend(
                backgrounds::installed_training()
                    .iter()
                    .map(|s| s.to_string()),
            );
        } else {
            names.push(b.clone());
        }
    }
    names.dedup();
    names
        .iter()
        .map(|n| {
            backgrounds::source(n).map(|s| (Some(n.clone()), s)).with_context(|| {
                format!(
                    "--background {n}: not installed or unknown (known: {}, {}; ./setup.sh installs them)",
                    backgrounds::TRAINING.join(", "),
                    backgrounds::TEST_ONLY
                )
            })
        })
        .collect()
}

pub fn run(a: &SynthArgs) -> Result<()> {
    let p = params(a)?;
    if a.layout == Layout::Brats {
        bail!("--layout brats: synth writes delineate or nnunet datasets");
    }
    if a.layout == Layout::Nnunet && a.dicom {
        bail!("--dicom: not with --layout nnunet (an nnU-Net dataset holds NIfTI files)");
    }
    if a.cases == 0 {
        bail!("--cases: must be at least 1");
    }
    crate::input::fresh_output_dir(&a.out)?;
    let t0 = Instant::now();
    let mut templates = Vec::new();
    for (name, source) in sources(a)? {
        let (mut template, warning) = Template::load(&source)?;
        if let Some(n) = name {
            template.name = n;
        }
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        tracing::info!(
            "template {} prepared in {:.1} s",
            template.name,
            t0.elapsed().as_secs_f64()
        );
        templates.push(template);
    }
    if a.background.iter().any(|b| b == backgrounds::TEST_ONLY) {
        eprintln!(
            "note: {} is the held-out test background: do not train on these cases",
            backgrounds::TEST_ONLY
        );
    }
    let pb = crate::progress::bar("synth", "cases");
    pb.set_length(a.cases as u64);
    let t1 = Instant::now();
    let summary = write_dataset(
        &DatasetSpec {
            out: &a.out,
            cases: a.cases,
            seed: a.seed,
            templates: &templates,
            params: &p,
            layout: match a.layout {
                Layout::Nnunet => dataset::Layout::Nnunet,
                _ => dataset::Layout::Delineate { dicom: a.dicom },
            },
            preview: a.preview,
        },
        &|| pb.inc(1),
    )?;
    pb.finish_and_clear();
    if a.layout == Layout::Nnunet {
        delineate_eval::layout::write_nnunet_dataset_json(&a.out, a.cases)?;
    }
    let lesions = summary.lesions;
    let secs = t1.elapsed().as_secs_f64();
    println!(
        "{} cases, {} lesions in {} ({:.1} s, {:.2} s per case; template {:.1} s)",
        a.cases,
        lesions,
        a.out.display(),
        secs,
        secs / a.cases as f64,
        (t1 - t0).as_secs_f64()
    );
    Ok(())
}
