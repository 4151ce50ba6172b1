//! `delineate candidates`: how many lesions the second stage's candidates
//! reach, by size, and how many candidates a case has.

use std::path::PathBuf;

use anyhow::{Context, Result};
use delineate_model::backend::Cpu;
use delineate_model::candidates::{case_candidates, CandidateOptions, CandidateSet, CaseEntry};
use delineate_model::data::{dataset, read_case};

use delineate_model::pipeline::load_model;

/// Lesion candidates on cases with known lesions: the recall they reach by
/// size and their number per case.
///
/// Candidates are what a second stage (a lesion classifier) sorts: local
/// maxima of the scale-normalised Laplacian of Gaussian of the normalised
/// image (bright round spots 2.5–10 mm across) inside the intracranial mask
/// (or the head), and the network's components above a low probability.
/// A lesion is reached when a candidate lies in it or touches it. Prints a
/// table by size (< 3, 3–5, 5–10, ≥ 10 mm); writes OUT/candidates.json
/// with every case's candidates and lesions.
#[derive(clap::Args)]
pub struct CandidatesArgs {
    /// Dataset folder (one subfolder per case with image and truth).
    pub data: PathBuf,
    /// Output folder (candidates.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Model file; default: the built-in model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Smallest LoG response (z-score units).
    #[arg(long, default_value_t = delineate_model::candidates::MIN_BLOB_RESPONSE)]
    pub min_response: f32,
    /// Network components above this probability are candidates.
    #[arg(long, default_value_t = delineate_model::candidates::NETWORK_THRESHOLD)]
    pub network_threshold: f32,
}

const BUCKETS: [(f64, f64, &str); 4] = [
    (0.0, 3.0, "< 3 mm"),
    (3.0, 5.0, "3–5 mm"),
    (5.0, 10.0, "5–10 mm"),
    (10.0, f64::INFINITY, "≥ 10 mm"),
];

pub fn run(a: &CandidatesArgs) -> Result<()> {
    let model = load_model::<Cpu>(a.model.as_deref(), &Default::default(), true)?;
    let opts = CandidateOptions {
        min_response: a.min_response,
        network_threshold: a.network_threshold,
        ..Default::default()
    };
    let cases = dataset(&a.data, None, None, 0, &Default::default())?;
    let engines = model.engines();
    let stage = model.stages(&engines).intracranial;
    let bar = crate::progress::bar("candidates", "cases");
    bar.set_length(cases.len() as u64);
    let mut all = Vec::new();
    for c in &cases {
        let raw = read_case(c).with_context(|| format!("case {}", c.name))?;
        let r = case_candidates(
            engines.lesion.as_ref(),
            &model.info,
            stage,
            &raw.image,
            &raw.truth,
            &opts,
        )
        .with_context(|| format!("case {}", c.name))?;
        all.push((c.name.clone(), r));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = all.len().max(1) as f64;
    let per_case = |f: &dyn Fn(&delineate_model::candidates::Candidate) -> bool| {
        all.iter()
            .map(|(_, r)| r.candidates.iter().filter(|c| f(c)).count())
            .sum::<usize>() as f64
            / n
    };
    println!(
        "{} cases; candidates per case: {:.1} (blobs {:.1}, network above {} {:.1})",
        all.len(),
        per_case(&|_| true),
        per_case(&|c| c.blob_response.is_some()),
        a.network_threshold,
        per_case(&|c| c.from_network)
    );
    println!("| lesions | n | blobs | network | either |");
    println!("|---|---|---|---|---|");
    for (lo, hi, name) in BUCKETS {
        let ls: Vec<_> = all
            .iter()
            .flat_map(|(_, r)| r.reach.iter())
            .filter(|l| l.diameter_mm >= lo && l.diameter_mm < hi)
            .collect();
        let k = ls.len().max(1) as f64;
        let frac = |f: &dyn Fn(&&delineate_model::candidates::LesionReach) -> bool| {
            ls.iter().filter(|l| f(l)).count() as f64 / k
        };
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            ls.len(),
            frac(&|l| l.by_blob),
            frac(&|l| l.by_network),
            frac(&|l| l.by_blob || l.by_network)
        );
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let path = a.out.join("candidates.json");
    let set = CandidateSet {
        model: model.name.clone(),
        lesion_network_sha256: model.lesion_network_sha256.clone(),
        options: opts,
        cases: all
            .into_iter()
            .map(|(case, result)| CaseEntry { case, result })
            .collect(),
    };
    let json = serde_json::to_vec(&set)?;
    delineate_imaging::atomic::write_atomically(&path, ".json", |p, _| {
        std::fs::write(p, &json).map_err(|e| e.to_string())
    })?;
    println!("wrote {}", path.display());
    Ok(())
}
