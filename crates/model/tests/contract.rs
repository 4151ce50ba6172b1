#![allow(clippy::unwrap_used)]
//! The train/inference contract end to end: a deterministic predictor
//! through the whole `segment` pipeline on axial, anisotropic, sagittal and
//! oblique acquisitions of one synthetic head; lesions one model voxel thick
//! on a 2 mm grid; training and inference normalisation; model selection
//! and the operating threshold.

mod support;

use std::sync::Arc;

use delineate_imaging::{write_nifti, Geometry, NiftiWriteOptions, Volume};
use delineate_model::contract::{Contract, Preprocessing};
use delineate_model::data::{case_folders, load_case, read_raw_case};
use delineate_model::engine::{engine_for, Device, EngineKind};
use delineate_model::infer::TilePredictor;
use delineate_model::modelfile::{self, ModelInfo, FORMAT_VERSION};
use delineate_model::network::NetworkConfig;
use delineate_model::segment::{lesions_on_model_grid, segment, SegmentOptions};
use delineate_model::trainer::{train, RunDir, Validation};
use delineate_model::Error;

/// Lesions of the synthetic head: LPS centre (mm) and radius (mm).
const LESIONS: [([f64; 3], f64); 3] = [
    ([-30.0, 10.0, 20.0], 8.0),
    ([25.0, -20.0, -5.0], 5.0),
    ([5.0, 35.0, 40.0], 3.5),
];

/// Intensity of the lesions (the head is 100 ± 4): within the z-score's
/// clip, so the midpoint between head and lesion stays a midpoint.
const LESION: f32 = 112.0;

/// The head: an ellipsoid with texture (so the z-score has a spread),
/// bright spheres at [`LESIONS`], air outside. A function of position only.
fn head(p: [f64; 3]) -> f32 {
    let e = (p[0] / 70.0).powi(2) + (p[1] / 85.0).powi(2) + (p[2] / 65.0).powi(2);
    if e > 1.0 {
        return 0.0;
    }
    for (c, r) in LESIONS {
        let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
        if d2 <= r * r {
            return LESION;
        }
    }
    (100.0 + 4.0 * (p[0] * 0.37 + p[1] * 0.23 + p[2] * 0.41).sin()) as f32
}

/// An acquisition of [`head`] on a grid of `spacing` whose voxel axes are
/// `direction` (columns), centred on the head, sampled at voxel centres.
fn acquire(spacing: [f64; 3], direction: [[f64; 3]; 3]) -> Volume<f32> {
    let extent = [190.0, 220.0, 180.0];
    // Field of view along each voxel axis: enough for the rotated head.
    let size = [0, 1, 2].map(|a| {
        let reach: f64 = (0..3).map(|w| (direction[w][a] * extent[w]).abs()).sum();
        (reach.max(extent[a]) / spacing[a]).ceil() as usize
    });
    // Origin such that the grid centre is at the world origin.
    let half = [0, 1, 2].map(|a| (size[a] as f64 - 1.0) * spacing[a] / 2.0);
    let origin = [0, 1, 2].map(|w| -(0..3).map(|a| direction[w][a] * half[a]).sum::<f64>());
    let g = Geometry::new(size, spacing, origin, direction).unwrap();
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

/// A deterministic "network": probability 0.9 where the normalised
/// intensity is above `z` (the midpoint between head and lesion), 0.02
/// elsewhere.
struct Bright {
    z: f32,
}

impl Bright {
    /// The midpoint between the head's median and the lesions' value, in
    /// the contract's normalised units for this acquisition.
    fn for_image(img: &Volume<f32>, pre: &Preprocessing) -> Self {
        let v = pre.prepare(img).unwrap();
        let lesion = v.as_slice().iter().cloned().fold(f32::MIN, f32::max);
        let mut head: Vec<f32> = v.as_slice().iter().cloned().filter(|&z| z > -2.5).collect();
        head.sort_by(f32::total_cmp);
        let median = head[head.len() / 2];
        assert!(lesion < 4.9, "lesions must stay within the clip: {lesion}");
        Self {
            z: (lesion + median) / 2.0,
        }
    }
}

impl TilePredictor for Bright {
    fn predict(&self, tile: &[f32], _dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        Ok(tile
            .iter()
            .map(|&z| if z > self.z { 0.9 } else { 0.02 })
            .collect())
    }
}

fn info() -> ModelInfo {
    ModelInfo {
        format_version: FORMAT_VERSION,
        delineate_version: "test".into(),
        network: NetworkConfig::new("unet3d", Some(vec![4, 8])).unwrap(),
        contract: Contract::new(Preprocessing::default(), [48, 48, 48]),
        training: serde_json::Value::Null,
        weights_bytes: None,
        stages: Vec::new(),
    }
}

fn rot_z(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// Lesions come out where they are, with their size and confidence, on
/// every acquisition; axial and sagittal give the same lesions.
#[test]
fn a_deterministic_predictor_through_the_pipeline_on_every_acquisition() {
    let axial = Geometry::IDENTITY;
    // Sagittal: voxel axes along A→P... i.e. columns (0,-1,0), (0,0,-1), (1,0,0).
    let sagittal = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let cases = [
        ("axial 1 mm", [1.0, 1.0, 1.0], axial),
        ("axial 0.5x0.5x2 mm", [0.5, 0.5, 2.0], axial),
        ("sagittal 1 mm", [1.0, 1.0, 1.0], sagittal),
        ("oblique 20°, 0.9x0.9x1.2 mm", [0.9, 0.9, 1.2], rot_z(20.0)),
    ];
    let info = info();
    let mut by_case = Vec::new();
    for (name, spacing, dir) in cases {
        let img = acquire(spacing, dir);
        let net = Bright::for_image(&img, &info.contract.preprocessing);
        let s = segment(
            &net,
            &info,
            &img,
            &SegmentOptions::default(),
            &mut |_, _| {},
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            s.probability.geometry().same_grid(img.geometry(), 1e-9),
            "{name}"
        );
        assert!(
            s.delivered
                .labels
                .geometry()
                .same_grid(img.geometry(), 1e-9),
            "{name}"
        );
        let found = &s.delivered.list;
        assert_eq!(found.len(), 3, "{name}: {found:?}");
        for (c, r) in LESIONS {
            let l = found
                .iter()
                .min_by(|a, b| {
                    let d = |l: &delineate_model::segment::Lesion| {
                        (0..3)
                            .map(|i| (l.centroid_lps_mm[i] - c[i]).powi(2))
                            .sum::<f64>()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            let dist = (0..3)
                .map(|i| (l.centroid_lps_mm[i] - c[i]).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                dist < 1.0,
                "{name}: lesion at {c:?} found {dist:.2} mm away"
            );
            // Against the truth as this acquisition samples it.
            let (mut both, mut mine, mut truth) = (0usize, 0usize, 0usize);
            let g = img.geometry();
            for (i, (&lab, &v)) in s
                .delivered
                .labels
                .as_slice()
                .iter()
                .zip(img.as_slice())
                .enumerate()
            {
                let [nx, ny, _] = g.size;
                let w = g.index_to_world([
                    (i % nx) as f64,
                    ((i / nx) % ny) as f64,
                    (i / (nx * ny)) as f64,
                ]);
                let near = (0..3).map(|a| (w[a] - c[a]).powi(2)).sum::<f64>().sqrt() < r + 4.0;
                let t = near && v > (LESION + 100.0) / 2.0;
                let m = lab == l.id;
                both += usize::from(t && m);
                mine += usize::from(m);
                truth += usize::from(t);
            }
            let dice = 2.0 * both as f64 / (mine + truth) as f64;
            assert!(
                dice > 0.85,
                "{name}: r {r}: Dice {dice:.3} ({mine} vs {truth} voxels)"
            );
            assert!(
                (l.max_probability - 0.9).abs() < 1e-5,
                "{name}: {}",
                l.max_probability
            );
        }
        by_case.push((name, found.clone()));
    }
    // Axial and sagittal acquisitions of the same head: the same lesions.
    let (a, s) = (&by_case[0].1, &by_case[2].1);
    for (x, y) in a.iter().zip(s) {
        let d = (0..3)
            .map(|i| (x.centroid_lps_mm[i] - y.centroid_lps_mm[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(d < 0.5, "axial vs sagittal: {d:.2} mm");
        assert_eq!(x.voxels, y.voxels, "axial vs sagittal voxel counts");
    }
}

/// A lesion one model voxel thick keeps its confidence on a 2 mm input
/// grid whose voxel centres fall halfway between model slices (trilinear
/// probabilities there would halve it), and is not lost.
#[test]
fn a_one_voxel_thick_lesion_keeps_its_confidence_on_a_2mm_grid() {
    let input = Geometry::new([20, 20, 10], [1.0, 1.0, 2.0], [0.0; 3], Geometry::IDENTITY).unwrap();
    let pre = Preprocessing::default();
    let model = delineate_model::contract::model_grid(&input, &pre).unwrap();
    assert_eq!(model.size, [20, 20, 20]);
    let mut p = Volume::filled(model.clone(), 0.01f32);
    // A 3×3 patch in model slice 9 only (world z = 8.5 mm), p = 0.9.
    for j in 8..11 {
        for i in 8..11 {
            p.as_mut_slice()[i + 20 * (j + 20 * 9)] = 0.9;
        }
    }
    let l = lesions_on_model_grid(&p, 0.5, 0.0, &input).unwrap();
    assert_eq!(l.list.len(), 1);
    assert_eq!(l.list[0].max_probability, 0.9);
    assert!(l.labels.as_slice().contains(&1), "lost on the input grid");
    // The old way: probabilities resampled first peak at half.
    let r = delineate_imaging::resample_linear(&p, &input, 0.0).unwrap();
    let peak = r.as_slice().iter().cloned().fold(0f32, f32::max);
    assert!(peak < 0.5, "trilinear peak {peak}");
}

fn write_case(dir: &std::path::Path, img: &Volume<f32>, brain: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let o = NiftiWriteOptions::default();
    write_nifti(&dir.join("image.nii.gz"), img, &o).unwrap();
    let truth = img.map(|&v| u8::from(v > (LESION + 100.0) / 2.0));
    write_nifti(&dir.join("truth.nii.gz"), &truth, &o).unwrap();
    if brain {
        let b = img.map(|&v| u8::from(v > 90.0 && v < 106.0));
        write_nifti(&dir.join("brain.nii.gz"), &b, &o).unwrap();
    }
}

/// Training's preprocessing of a case and inference's of the same image
/// are the same values, with or without a brain mask in the case folder.
#[test]
fn training_and_inference_normalise_the_same_way() {
    let tmp = tempfile::tempdir().unwrap();
    let img = acquire(
        [2.0, 2.0, 2.0],
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
    );
    write_case(&tmp.path().join("a"), &img, false);
    write_case(&tmp.path().join("b"), &img, true);
    let pre = Preprocessing::default();
    let cases = case_folders(tmp.path()).unwrap();
    let a = load_case(&cases[0].0, &cases[0].1, &pre).unwrap();
    let b = load_case(&cases[1].0, &cases[1].1, &pre).unwrap();
    assert_eq!(
        a.image.as_slice(),
        b.image.as_slice(),
        "a brain mask changed training"
    );
    // Inference: the image as read from the same file.
    let raw = read_raw_case(&cases[0].1).unwrap();
    let inf = pre.prepare(&raw.image).unwrap();
    assert!(inf.geometry().same_grid(a.image.geometry(), 1e-9));
    assert_eq!(inf.as_slice(), a.image.as_slice());
    assert_eq!(inf.geometry().orientation_code(), "RAS");
    // Not trivially equal: normalised values with a spread.
    let (lo, hi) = inf
        .as_slice()
        .iter()
        .fold((f32::MAX, f32::MIN), |m, &v| (m.0.min(v), m.1.max(v)));
    assert!(lo < -1.0 && hi > 0.5, "{lo} {hi}");
    assert_eq!(a.lesions.lesions.len(), 3);
}

/// Model selection keeps a later model when it scores better (ties too),
/// with the threshold its validation chose; model.dlm has the last one.
#[test]
fn model_selection_picks_a_later_better_model_with_its_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    support::tiny_dataset(&tmp.path().join("data"), 2);
    let cases: Vec<_> = case_folders(&tmp.path().join("data"))
        .unwrap()
        .iter()
        .map(|(n, d)| load_case(n, d, &Preprocessing::default()).unwrap())
        .collect();
    let opts = support::tiny_options(4);
    let scores = [(0.2, 0.3f32), (0.5, 0.6), (0.4, 0.7), (0.5, 0.65)];
    let calls = std::sync::Mutex::new(0usize);
    let val = |_: &_, c: &Contract| {
        assert_eq!(c.patch, [16, 16, 16]);
        let mut n = calls.lock().unwrap();
        let (score, threshold) = scores[*n];
        *n += 1;
        Ok(Validation {
            score,
            threshold,
            summary: serde_json::json!({"call": *n}),
        })
    };
    let e = engine_for(
        EngineKind::Fast,
        Device::Cpu,
        &opts.network,
        opts.optimizer,
        1,
    )
    .unwrap();
    let run = tmp.path().join("run");
    let dir = RunDir {
        path: &run,
        resume: false,
        split: None,
    };
    train(e, Arc::new(cases), &opts, dir, Some(&val), &|_| {}).unwrap();
    assert_eq!(*calls.lock().unwrap(), 4);
    let dev = Default::default();
    let (_, best) =
        modelfile::load::<delineate_model::backend::Cpu>(&run.join("best.dlm"), &dev).unwrap();
    // Epoch 4 ties epoch 2's score: the later model is kept.
    assert_eq!(best.contract.operating_threshold, 0.65);
    assert_eq!(best.training["iterations"], 12);
    assert_eq!(best.training["validation"]["summary"]["call"], 4);
    let (_, last) =
        modelfile::load::<delineate_model::backend::Cpu>(&run.join("model.dlm"), &dev).unwrap();
    assert_eq!(last.contract.operating_threshold, 0.65);
    assert_eq!(last.contract.patch, [16, 16, 16]);
}
