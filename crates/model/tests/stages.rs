//! Model format 3 and its intracranial stage: a stage travels inside the
//! model file and is checked (SHA-256; kind; what it was trained for);
//! format-2 files still load, without stages; and `segment` with the stage
//! drops a candidate in the scalp while every lesion inside the skull is
//! kept whole.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use delineate_imaging::{Geometry, Volume};
use delineate_model::backend::Cpu;
use delineate_model::contract::{Contract, Preprocessing};
use delineate_model::infer::TilePredictor;
use delineate_model::modelfile::{self, ModelInfo, StageKind};
use delineate_model::network::NetworkConfig;
use delineate_model::segment::{segment_staged, SegmentOptions, Stage, Stages};
use delineate_model::Error;

fn info(target: &str, spacing: f64, patch: usize) -> ModelInfo {
    ModelInfo {
        format_version: modelfile::FORMAT_VERSION,
        delineate_version: "test".into(),
        network: NetworkConfig::new("unet3d", Some(vec![4, 8])).unwrap(),
        contract: Contract::new(
            Preprocessing {
                spacing: [spacing; 3],
                ..Default::default()
            },
            [patch; 3],
        ),
        training: serde_json::json!({ "target": target }),
        weights_bytes: None,
        stages: Vec::new(),
    }
}

fn file(info: &ModelInfo) -> Vec<u8> {
    let net = info.network.init::<Cpu>(&Default::default());
    modelfile::to_bytes(&net, info).unwrap()
}

/// The header JSON of a model file, edited, with the rest unchanged.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let mut json: serde_json::Value = serde_json::from_slice(&bytes[24..24 + len]).unwrap();
    edit(&mut json);
    let j = serde_json::to_vec(&json).unwrap();
    let mut out = bytes[..16].to_vec();
    out.extend_from_slice(&(j.len() as u64).to_le_bytes());
    out.extend_from_slice(&j);
    out.extend_from_slice(&bytes[24 + len..]);
    out
}

fn err(r: Result<impl Sized, Error>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn stages_travel_in_the_model_file_and_are_checked() {
    let (mp, sp) = (Path::new("lesions.dlm"), Path::new("mask.dlm"));
    let lesion = file(&info("lesions", 1.0, 16));
    let mask = file(&info("intracranial", 2.0, 16));
    let both = modelfile::attach(&lesion, mp, StageKind::Intracranial, &mask, sp).unwrap();
    let out = Path::new("both.dlm");
    let (_, i) = modelfile::from_bytes::<Cpu>(&both, out, &Default::default()).unwrap();
    assert_eq!(i.format_version, 3);
    assert_eq!(i.stages.len(), 1);
    let stage = modelfile::stage(&both, out, StageKind::Intracranial).unwrap();
    assert_eq!(stage, Some(&mask[..]));
    let (_, si) = modelfile::from_bytes::<Cpu>(stage.unwrap(), sp, &Default::default()).unwrap();
    assert_eq!(si.contract.preprocessing.spacing, [2.0; 3]);
    // Attaching again replaces the stage.
    let again = modelfile::attach(&both, out, StageKind::Intracranial, &mask, sp).unwrap();
    assert_eq!(again, both);

    // A format-2 file (weights to the end, no stages) still loads.
    let v2 = with_header(&lesion, |j| {
        j["format_version"] = 2.into();
        j.as_object_mut().unwrap().remove("weights_bytes");
    });
    let (_, i2) =
        modelfile::from_bytes::<Cpu>(&v2, Path::new("v2.dlm"), &Default::default()).unwrap();
    assert_eq!(i2.format_version, 2);
    assert!(
        modelfile::stage(&v2, Path::new("v2.dlm"), StageKind::Intracranial)
            .unwrap()
            .is_none()
    );

    // A damaged stage is refused, naming the file.
    let mut bad = both.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x55;
    let e = err(modelfile::from_bytes::<Cpu>(&bad, out, &Default::default()));
    assert!(
        e.contains("both.dlm") && e.contains("intracranial stage is damaged"),
        "{e}"
    );
    // A truncated one too.
    let e = err(modelfile::from_bytes::<Cpu>(
        &both[..n - 1],
        out,
        &Default::default(),
    ));
    assert!(e.contains("both.dlm") && e.contains("truncated"), "{e}");
    // An unknown stage kind.
    let odd = with_header(&both, |j| j["stages"][0]["kind"] = "skull".into());
    let e = err(modelfile::from_bytes::<Cpu>(&odd, out, &Default::default()));
    assert!(e.contains("both.dlm") && e.contains("skull"), "{e}");
    // A lesion network is not an intracranial stage.
    let e = err(modelfile::attach(
        &lesion,
        mp,
        StageKind::Intracranial,
        &lesion,
        mp,
    ));
    assert!(
        e.contains("lesions.dlm") && e.contains("--target intracranial"),
        "{e}"
    );
}

/// The synthetic head: brain (100 ± 4) inside a dark skull shell (40)
/// inside scalp (100); lesions (150) in the brain and one bright blob in
/// the scalp.
const BRAIN_LESIONS: [([f64; 3], f64); 2] =
    [([-25.0, 10.0, 15.0], 6.0), ([20.0, -25.0, -5.0], 4.0)];
const SCALP_BLOB: ([f64; 3], f64) = ([66.5, 0.0, 0.0], 2.5);
const HEAD: [f64; 3] = [70.0, 85.0, 65.0];

fn head(p: [f64; 3]) -> f32 {
    let r = (0..3).map(|a| (p[a] / HEAD[a]).powi(2)).sum::<f64>().sqrt();
    if r > 1.0 {
        return 0.0;
    }
    for (c, rad) in BRAIN_LESIONS.iter().chain([&SCALP_BLOB]) {
        let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
        if d2 <= rad * rad {
            return 150.0;
        }
    }
    if (0.85..0.92).contains(&r) {
        return 40.0;
    }
    (100.0 + 4.0 * (p[0] * 0.37 + p[1] * 0.23 + p[2] * 0.41).sin()) as f32
}

fn acquire() -> Volume<f32> {
    let size = [150, 180, 140];
    let origin = [0, 1, 2].map(|a| -((size[a] as f64 - 1.0) / 2.0));
    let g = Geometry::new(size, [1.0; 3], origin, Geometry::IDENTITY).unwrap();
    let mut v = Vec::with_capacity(g.len());
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                v.push(head(g.index_to_world([i as f64, j as f64, k as f64])));
            }
        }
    }
    Volume::from_vec(g, v).unwrap()
}

/// A deterministic network: 0.9 above the normalised value of `cut`
/// (intensity), 0.02 below.
struct Above(f32);

impl Above {
    fn new(img: &Volume<f32>, pre: &Preprocessing, cut: f32) -> Self {
        let z = pre.normalise(&img.map(|&v| if v > 0.0 { v } else { 0.0 }));
        // The normalised value of intensity `cut`: z is affine in intensity.
        let (v, zs) = (img.as_slice(), z.as_slice());
        let (i0, i1) = (
            v.iter().position(|&x| x == 40.0).unwrap(),
            v.iter().position(|&x| x == 150.0).unwrap(),
        );
        let (z0, z1) = (zs[i0], zs[i1]);
        Self(z0 + (cut - 40.0) / 110.0 * (z1 - z0))
    }
}

impl TilePredictor for Above {
    fn predict(&self, tile: &[f32], _dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        Ok(tile
            .iter()
            .map(|&z| if z > self.0 { 0.9 } else { 0.02 })
            .collect())
    }
}

#[test]
fn the_intracranial_stage_drops_a_scalp_blob_and_keeps_every_lesion_whole() {
    let img = acquire();
    let lesion_info = info("lesions", 1.0, 48);
    let mask_info = info("intracranial", 2.0, 32);
    // The lesion "network" marks everything brighter than 125; the mask
    // "network" everything brighter than the skull (70): brain and scalp,
    // which the skull shell separates.
    let lesions = Above::new(&img, &lesion_info.contract.preprocessing, 125.0);
    let mask = Above::new(&img, &mask_info.contract.preprocessing, 70.0);
    let stages = Stages {
        intracranial: Some(Stage {
            predictor: &mask,
            info: &mask_info,
        }),
        classifier: None,
    };
    let opts = SegmentOptions::default();
    let without = segment_staged(
        &lesions,
        &lesion_info,
        Stages::default(),
        &img,
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        without.delivered.list.len(),
        3,
        "two lesions and the scalp blob"
    );
    let with = segment_staged(&lesions, &lesion_info, stages, &img, &opts, &mut |_, _| {}).unwrap();
    let report = &with.intracranial.as_ref().unwrap().report;
    assert!(report.applied, "{report:?}");
    assert!((900.0..1100.0).contains(&report.volume_ml), "{report:?}");
    assert_eq!(
        (report.removed_candidates, report.removed_delivered),
        (1, 1)
    );
    assert_eq!(with.delivered.list.len(), 2);
    for l in &with.delivered.list {
        assert!(l.centroid_lps_mm[0] < 60.0, "{l:?}");
    }
    // Kept whole: the same voxels as without the stage.
    let voxels = |s: &delineate_model::segment::Segmentation| -> Vec<usize> {
        let mut v: Vec<usize> = s.delivered.list.iter().map(|l| l.voxels).collect();
        v.sort();
        v
    };
    let mut inside_without: Vec<usize> = without
        .delivered
        .list
        .iter()
        .filter(|l| l.centroid_lps_mm[0] < 60.0)
        .map(|l| l.voxels)
        .collect();
    inside_without.sort();
    assert_eq!(voxels(&with), inside_without);
    // The mask on the input grid holds the brain, not the scalp.
    let m = &with.intracranial.as_ref().unwrap().mask;
    assert_eq!(m.geometry().size, img.geometry().size);
    let at = |p: [f64; 3]| {
        let ijk = img.geometry().world_to_index(p).map(|x| x.round() as usize);
        let s = img.geometry().size;
        m.as_slice()[ijk[0] + s[0] * (ijk[1] + s[1] * ijk[2])]
    };
    assert_eq!(at([0.0, 0.0, 0.0]), 1);
    assert_eq!(at(SCALP_BLOB.0), 0);

    // An implausible mask (empty, as from a network that saw no head) is
    // not applied: the case says so and nothing is removed.
    let nothing = Above::new(&img, &mask_info.contract.preprocessing, 1000.0);
    let off = Stages {
        intracranial: Some(Stage {
            predictor: &nothing,
            info: &mask_info,
        }),
        classifier: None,
    };
    let s = segment_staged(&lesions, &lesion_info, off, &img, &opts, &mut |_, _| {}).unwrap();
    let r = &s.intracranial.as_ref().unwrap().report;
    assert!(
        !r.applied && r.warning.as_deref().is_some_and(|w| w.contains("empty")),
        "{r:?}"
    );
    assert_eq!(s.delivered.list.len(), 3);
    assert!(
        s.warnings.iter().any(|w| w.contains("not applied")),
        "{:?}",
        s.warnings
    );
    // Switched off: no stage runs.
    let no = SegmentOptions {
        no_intracranial_mask: true,
        ..Default::default()
    };
    let s = segment_staged(&lesions, &lesion_info, stages, &img, &no, &mut |_, _| {}).unwrap();
    assert!(s.intracranial.is_none());
    assert_eq!(s.delivered.list.len(), 3);
}
