//! The second stage: a lesion classifier fitted on candidates tells small
//! round lesions from vessels of the same brightness, which a network that
//! gives everything small the same low probability cannot; it travels in
//! the model file tied to its lesion network, and `segment` delivers the
//! lesions it finds with local masks.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use delineate_imaging::{Geometry, Volume};
use delineate_model::backend::Cpu;
use delineate_model::candidates::{
    find_candidates, reach, CandidateOptions, CandidateSet, CaseCandidates, CaseEntry,
};
use delineate_model::classifier::{network_confidence, ClassifierConfig, LesionClassifier};
use delineate_model::contract::{Contract, Preprocessing};
use delineate_model::infer::TilePredictor;
use delineate_model::modelfile::{self, ModelInfo, StageKind};
use delineate_model::network::NetworkConfig;
use delineate_model::segment::{segment_staged, SegmentOptions, Stages};
use delineate_model::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 72;

/// A brain (100 with a smooth texture and noise) holding spheres (lesions,
/// 3.5–6 mm across) and straight tubes 2.4 mm across (vessels), all 150.
/// Returns the image and the lesions' instance labels.
fn case(seed: u64) -> (Volume<f32>, Volume<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = Geometry::new([N; 3], [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
    let c = (N as f64 - 1.0) / 2.0;
    let mut img = vec![0f32; g.len()];
    let mut lab = vec![0u32; g.len()];
    let at = |i: usize, j: usize, k: usize| i + N * (j + N * k);
    for k in 0..N {
        for j in 0..N {
            for i in 0..N {
                let p = [i as f64, j as f64, k as f64];
                let r = (0..3).map(|a| ((p[a] - c) / 33.0).powi(2)).sum::<f64>();
                if r <= 1.0 {
                    let texture = 4.0 * (p[0] * 0.31 + p[1] * 0.17).sin() * (p[2] * 0.23).cos();
                    img[at(i, j, k)] = (100.0 + texture + rng.random_range(-3.0..3.0)) as f32;
                }
            }
        }
    }
    let mut taken: Vec<([f64; 3], f64)> = Vec::new();
    let mut free = |rng: &mut ChaCha8Rng, r: f64| loop {
        let p = [0, 1, 2].map(|_| rng.random_range(c - 20.0..c + 20.0));
        if taken
            .iter()
            .all(|(q, s)| (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>().sqrt() > r + s + 4.0)
        {
            taken.push((p, r));
            return p;
        }
    };
    for l in 1..=4u32 {
        let r = rng.random_range(1.75..3.0);
        let p = free(&mut rng, r);
        for k in 0..N {
            for j in 0..N {
                for i in 0..N {
                    let d2 = (i as f64 - p[0]).powi(2)
                        + (j as f64 - p[1]).powi(2)
                        + (k as f64 - p[2]).powi(2);
                    if d2 <= r * r {
                        img[at(i, j, k)] = 150.0;
                        lab[at(i, j, k)] = l;
                    }
                }
            }
        }
    }
    for _ in 0..4 {
        let p = free(&mut rng, 9.0);
        let axis = rng.random_range(0..3usize);
        for k in 0..N {
            for j in 0..N {
                for i in 0..N {
                    let q = [i as f64, j as f64, k as f64];
                    let (mut d2, mut along) = (0.0, 0.0);
                    for a in 0..3 {
                        if a == axis {
                            along = (q[a] - p[a]).abs();
                        } else {
                            d2 += (q[a] - p[a]).powi(2);
                        }
                    }
                    if d2 <= 1.2 * 1.2 && along <= 9.0 && lab[at(i, j, k)] == 0 {
                        img[at(i, j, k)] = 150.0;
                    }
                }
            }
        }
    }
    (
        Volume::from_vec(g.clone(), img).unwrap(),
        Volume::from_vec(g, lab).unwrap(),
    )
}

fn info() -> ModelInfo {
    ModelInfo {
        format_version: modelfile::FORMAT_VERSION,
        delineate_version: "test".into(),
        network: NetworkConfig::new("unet3d", Some(vec![4, 8])).unwrap(),
        contract: Contract::new(Preprocessing::default(), [32; 3]),
        training: serde_json::json!({ "target": "lesions" }),
        weights_bytes: None,
        stages: Vec::new(),
    }
}

/// A network that has learned nothing small: 0.005 everywhere.
struct Blind;

impl TilePredictor for Blind {
    fn predict(&self, tile: &[f32], _dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        Ok(vec![0.005; tile.len()])
    }
}

/// A network sure of everything bright (normalised value above 2).
struct Sure;

impl TilePredictor for Sure {
    fn predict(&self, tile: &[f32], _dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        Ok(tile
            .iter()
            .map(|&z| if z > 2.0 { 0.99 } else { 0.005 })
            .collect())
    }
}

fn candidates(seeds: &[u64], sha: &str) -> CandidateSet {
    let pre = Preprocessing::default();
    let opts = CandidateOptions::default();
    let cases = seeds
        .iter()
        .map(|&s| {
            let (img, truth) = case(s);
            let z = pre.normalise(&img);
            let head = img.map(|&v| u8::from(v > 50.0));
            let p = img.map(|_| 0.005f32);
            let mut c = find_candidates(&z, Some(&p), Some(&head), &opts, &[]);
            let r = reach(&mut c, &truth);
            CaseEntry {
                case: format!("case_{s}"),
                result: CaseCandidates {
                    candidates: c,
                    reach: r,
                    intracranial_ml: None,
                },
            }
        })
        .collect();
    CandidateSet {
        model: "blind".into(),
        lesion_network_sha256: sha.into(),
        options: opts,
        cases,
    }
}

#[test]
fn the_classifier_finds_small_lesions_among_vessels_and_travels_in_the_model_file() {
    let net_info = info();
    let net = net_info.network.init::<Cpu>(&Default::default());
    let model = modelfile::to_bytes(&net, &net_info).unwrap();
    let mp = Path::new("lesions.dlm");
    let sha = modelfile::lesion_network_sha256(&model, mp).unwrap();
    let fit = candidates(&(1..=14).collect::<Vec<_>>(), &sha);
    let validation = candidates(&[21, 22, 23, 24, 25, 26], &sha);
    // Every lesion is reached by a candidate.
    assert!(
        fit.reach().all(|l| l.by_blob),
        "a lesion without a candidate"
    );
    let config = ClassifierConfig {
        trees: 120,
        ..Default::default()
    };
    let (fp, vp) = (Path::new("fit.json"), Path::new("val.json"));
    let clf = LesionClassifier::fit(&fit, fp, &validation, vp, &config).unwrap();
    assert!(clf.summary.validation_recall >= 0.75, "{:?}", clf.summary);

    // In the model file, tied to its network.
    let with = modelfile::attach_classifier(&model, mp, &clf).unwrap();
    let out = Path::new("with.dlm");
    let stage = modelfile::stage(&with, out, StageKind::LesionClassifier)
        .unwrap()
        .unwrap();
    let clf = LesionClassifier::from_bytes(stage, out).unwrap();
    let other_info = ModelInfo {
        network: NetworkConfig::new("unet3d", Some(vec![8, 16])).unwrap(),
        ..info()
    };
    let other = modelfile::to_bytes(
        &other_info.network.init::<Cpu>(&Default::default()),
        &other_info,
    )
    .unwrap();
    let e = modelfile::attach_classifier(&other, Path::new("other.dlm"), &clf)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("other.dlm") && e.contains("another model"),
        "{e}"
    );
    // A damaged classifier stage is refused, naming the file.
    let mut bad = with.clone();
    let n = bad.len();
    bad[n - 40] ^= 0x20;
    let e = modelfile::from_bytes::<Cpu>(&bad, out, &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("with.dlm") && e.contains("damaged"), "{e}");
    // Features it does not know are refused.
    let json = String::from_utf8(stage.to_vec())
        .unwrap()
        .replacen("\"contrast\"", "\"glow\"", 1);
    let e = LesionClassifier::from_bytes(json.as_bytes(), out)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("with.dlm") && e.contains("glow"), "{e}");

    // `segment` on a new case: the network alone finds nothing; with the
    // classifier every lesion is delivered, whole enough, and at most one
    // vessel.
    let (img, truth) = case(42);
    let stages = Stages {
        intracranial: None,
        classifier: Some(&clf),
    };
    let alone = SegmentOptions {
        no_classifier: true,
        ..Default::default()
    };
    let s = segment_staged(&Blind, &net_info, stages, &img, &alone, &mut |_, _| {}).unwrap();
    assert!(s.delivered.list.is_empty());
    let s = segment_staged(
        &Blind,
        &net_info,
        stages,
        &img,
        &SegmentOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(s.threshold, clf.operating_threshold);
    let (lab, t) = (s.delivered.labels.as_slice(), truth.as_slice());
    let mut false_positives = Vec::new();
    for l in &s.delivered.list {
        let hits = (0..lab.len())
            .filter(|&i| lab[i] == l.id && t[i] > 0)
            .count();
        if hits == 0 {
            false_positives.push(l.id);
        }
        assert!(l.confidence >= clf.operating_threshold);
        assert!(l.max_probability < 0.01);
    }
    for lesion in 1..=4u32 {
        let size = t.iter().filter(|&&v| v == lesion).count();
        let overlap = (0..t.len())
            .filter(|&i| t[i] == lesion && lab[i] > 0)
            .count();
        assert!(
            overlap as f64 >= 0.5 * size as f64,
            "lesion {lesion}: {overlap} of {size} voxels delivered; {:?}",
            s.delivered.list
        );
    }
    // The lesions rank above every look-alike, and few look-alikes pass
    // (the threshold allows one per case on average: 3 here at most).
    assert!(
        false_positives.iter().all(|&id| id > 4) && false_positives.len() <= 3,
        "false positives {false_positives:?} in {:?}",
        s.delivered.list
    );

    // The classifier ranks and adds; it does not veto what the network
    // delivers: with a network sure of every bright thing, the vessels are
    // delivered too, at the network's confidence on the classifier's scale.
    let s = segment_staged(
        &Sure,
        &net_info,
        stages,
        &img,
        &SegmentOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(s.delivered.list.len() >= 8, "{:?}", s.delivered.list);
    let on_scale = network_confidence(
        0.99,
        net_info.contract.operating_threshold,
        clf.operating_threshold,
    );
    assert!(s.delivered.list.iter().all(|l| l.confidence >= on_scale));

    // With the veto, the classifier's score alone ranks the network's
    // lesions too: nothing is floored at the network's confidence, and most
    // of what the sure network delivers is dropped. (Its 0.99 on every
    // vessel lies outside what the classifier was fitted on, where the
    // network gave 0.005: the network's probability is one of its
    // measurements, so here it drops lesions too. What the veto does to
    // real lesions is measured in docs/model-card.md.)
    let mut vetoing = LesionClassifier::from_bytes(stage, out).unwrap();
    vetoing.config.veto = true;
    let stages = Stages {
        intracranial: None,
        classifier: Some(&vetoing),
    };
    let v = segment_staged(
        &Sure,
        &net_info,
        stages,
        &img,
        &SegmentOptions {
            operating_threshold: Some(0.0),
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert!(
        v.delivered.list.iter().any(|l| l.confidence < on_scale),
        "{:?}",
        v.delivered.list
    );
    let delivered = v
        .delivered
        .list
        .iter()
        .filter(|l| l.confidence >= vetoing.operating_threshold)
        .count();
    assert!(
        delivered < s.delivered.list.len(),
        "{delivered} with the veto, {} without",
        s.delivered.list.len()
    );
}
