//! Split, prepare and train: a dataset folder to a trained run folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use delineate_dicom::RoiSelection;
use delineate_eval::layout::{Layout, LesionLabels};

use crate::backend::Cpu;
use crate::contract::Contract;
use crate::data::{
    dataset, load_case_ref, load_case_ref_cached, on_test_background, read_case, Case, CaseRef,
    CaseSource, TEST_BACKGROUND,
};
use crate::engine::{engine_for, Device};
use crate::intracranial::Target;
use crate::modelfile::{self, StageKind};
use crate::network::Network;
use crate::split::{Role, Split, SplitConfig};
use crate::trainer::{train, Progress, RunDir, TrainOptions, TrainSummary, Validate};
use crate::validate::{validate, StageNet, ValCase, ValidationOptions};
use crate::Error;

/// Which cases of a dataset folder, and what is learnt from them.
#[derive(Clone, Debug)]
pub struct DataSpec {
    pub data: PathBuf,
    /// `None`: detected.
    pub layout: Option<Layout>,
    pub labels: Option<Vec<u32>>,
    /// nnU-Net channel of the contrast-enhanced T1.
    pub channel: usize,
    pub rois: RoiSelection,
    pub target: Target,
    /// Train even on cases of the held-out test background.
    pub allow_test_background: bool,
}

/// Where prepared (resampled, normalised) cases are kept.
#[derive(Clone, Debug)]
pub enum CacheChoice {
    /// `DATA/.delineate-cache`.
    Beside,
    At(PathBuf),
    Off,
}

/// Prepared cases of one split.
pub struct Prepared {
    pub split: Split,
    pub train: Vec<Case>,
    /// As acquired: validation is deployment.
    pub validation: Vec<ValCase>,
    /// Training cases read from the cache.
    pub cached: usize,
}

/// The dataset's cases, checked: none from the test background unless
/// allowed, and the intracranial target where that is what is learnt.
pub fn cases(spec: &DataSpec) -> Result<Vec<CaseRef>, Error> {
    let folders = dataset(
        &spec.data,
        spec.layout,
        spec.labels.clone(),
        spec.channel,
        &spec.rois,
    )?;
    let leaked = on_test_background(&folders)?;
    if !leaked.is_empty() && !spec.allow_test_background {
        return Err(Error::Input(format!(
            "{}: {} case(s) were synthesised on the {TEST_BACKGROUND} background, the held-out \
             test background ({}{}); draw training data on another (synth --background) or pass \
             --allow-test-background",
            spec.data.display(),
            leaked.len(),
            leaked[..leaked.len().min(3)].join(", "),
            if leaked.len() > 3 { ", …" } else { "" }
        )));
    }
    match spec.target {
        Target::Lesions => Ok(folders),
        Target::Intracranial => folders.into_iter().map(intracranial_case).collect(),
    }
}

/// A case with its intracranial cavity as the truth.
fn intracranial_case(c: CaseRef) -> Result<CaseRef, Error> {
    match &c.source {
        CaseSource::Folder(d) if d.join("intracranial.nii.gz").is_file() => Ok(CaseRef {
            source: CaseSource::Files {
                image: d.join("image.nii.gz"),
                truth: d.join("intracranial.nii.gz"),
                lesions: LesionLabels(None),
            },
            ..c
        }),
        CaseSource::Folder(d) => Err(Error::Input(format!(
            "{}: no intracranial.nii.gz: --target intracranial needs cases from \
             `delineate synth` (which writes the target)",
            d.display()
        ))),
        CaseSource::Files { image, .. } => Err(Error::Input(format!(
            "{}: --target intracranial needs delineate case folders from `delineate synth`",
            image.display()
        ))),
    }
}

/// Splits `cases` and prepares them: training cases on the model grid
/// (from the cache where it has them), validation cases as acquired.
/// `on_case` is called after each case.
pub fn prepare(
    cases: &[CaseRef],
    split: SplitConfig,
    opts: &TrainOptions,
    cache: &CacheChoice,
    data: &Path,
    on_case: &dyn Fn(usize, usize),
) -> Result<Prepared, Error> {
    let names: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    let split = Split::draw(&names, split).map_err(|e| Error::Case {
        what: "splitting the dataset",
        path: data.to_path_buf(),
        source: Box::new(e),
    })?;
    let cache_dir = match cache {
        CacheChoice::Beside => Some(data.join(".delineate-cache")),
        CacheChoice::At(p) => Some(p.clone()),
        CacheChoice::Off => None,
    };
    let mut p = Prepared {
        split,
        train: Vec::new(),
        validation: Vec::new(),
        cached: 0,
    };
    let case_err = |c: &CaseRef| {
        let path = PathBuf::from(&c.name);
        move |e| Error::Case {
            what: "preparing the case",
            path,
            source: Box::new(e),
        }
    };
    for (i, case) in cases.iter().enumerate() {
        match p.split.role(&case.name) {
            Some(Role::Validation) => {
                let raw = read_case(case).map_err(case_err(case))?;
                p.validation.push(ValCase {
                    name: case.name.clone(),
                    image: raw.image,
                    truth: raw.truth,
                });
            }
            Some(Role::Train) => {
                let c = match &cache_dir {
                    None => load_case_ref(case, &opts.preprocessing),
                    Some(dir) => {
                        load_case_ref_cached(case, &opts.preprocessing, dir).map(|(c, hit)| {
                            p.cached += usize::from(hit);
                            c
                        })
                    }
                }
                .map_err(case_err(case))?;
                p.train.push(c);
            }
            Some(Role::Test) | None => {}
        }
        on_case(i + 1, cases.len());
    }
    Ok(p)
}

/// Where and how a run trains.
pub struct RunSpec<'a> {
    pub dir: &'a Path,
    pub resume: bool,
    pub device: Device,
    /// False positives per case at the operating threshold chosen on the
    /// validation cases.
    pub target_fp: f64,
    /// An intracranial-mask model that validation runs and the run's model
    /// files carry as their stage.
    pub intracranial: Option<&'a Path>,
}

/// Trains on prepared cases into the run folder, validating as `segment`
/// runs; with an intracranial stage, best.dlm and model.dlm carry it.
pub fn train_run(
    prepared: Prepared,
    opts: &TrainOptions,
    run: &RunSpec<'_>,
    on_progress: &dyn Fn(&Progress),
) -> Result<TrainSummary, Error> {
    let stage = match run.intracranial {
        Some(p) => {
            let (net, info) = modelfile::load::<Cpu>(p, &Default::default())?;
            if info.training.get("target").and_then(|t| t.as_str()) != Some("intracranial") {
                return Err(Error::Input(format!(
                    "--intracranial {}: not an intracranial-mask model (delineate train --target intracranial)",
                    p.display()
                )));
            }
            Some(Arc::new(StageNet { net, info }))
        }
        None => None,
    };
    let engine = engine_for(
        opts.engine,
        run.device,
        &opts.network,
        opts.optimizer,
        opts.seed,
    )?;
    let vopts = ValidationOptions {
        target_fp_per_case: run.target_fp,
        save: Some(run.dir.join("validation")),
        intracranial: stage,
    };
    let val_cases = &prepared.validation;
    let val = |net: &Network<Cpu>, contract: &Contract| {
        validate(net, &opts.network, contract, val_cases, &vopts)
    };
    let validate_fn: Option<Validate> = if val_cases.is_empty() {
        None
    } else {
        Some(&val)
    };
    let summary = train(
        engine,
        Arc::new(prepared.train),
        opts,
        RunDir {
            path: run.dir,
            resume: run.resume,
            split: Some(&prepared.split),
        },
        validate_fn,
        on_progress,
    )?;
    if let Some(p) = run.intracranial {
        let mask = std::fs::read(p).map_err(|source| {
            Error::Io(delineate_imaging::IoFailure {
                what: "read the intracranial model",
                path: p.to_path_buf(),
                source,
            })
        })?;
        for f in ["best.dlm", "model.dlm"] {
            let path = run.dir.join(f);
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| {
                Error::Io(delineate_imaging::IoFailure {
                    what: "read the run's model",
                    path: path.clone(),
                    source,
                })
            })?;
            let both = modelfile::attach(&bytes, &path, StageKind::Intracranial, &mask, p)?;
            delineate_imaging::atomic::write_atomically(&path, ".dlm", |t, _| {
                std::fs::write(t, &both).map_err(|e| e.to_string())
            })?;
        }
    }
    Ok(summary)
}
