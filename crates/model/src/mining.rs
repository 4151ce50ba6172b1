//! Hard negatives from the model's own mistakes. At each validation the
//! trainer runs the current network over a few training cases (on the model
//! grid, sliding windows as at inference) and records where it is wrong: a
//! probability of at least 0.5 more than two voxels away from any lesion.
//! The sampler then centres its `false_positive` share of patches there
//! ([`crate::sampling::Negatives`]), so that training spends its effort on
//! the look-alikes this model actually confuses, not only those the
//! generator recorded.
//!
//! The lists are written to `RUN/hard_negatives/ITERATION.json`; a resumed
//! run takes the latest list from before its checkpoint, so it draws the
//! same patches as a run that was never interrupted.

use std::path::{Path, PathBuf};

use delineate_imaging::{morphology::dilate, Connectivity, Volume};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::Cpu;
use crate::data::Case;
use crate::infer::{predict_sliding, CpuPredictor, SlidingOptions};
use crate::network::Network;
use crate::Error;

/// Training cases examined at each validation.
pub const MINE_CASES: usize = 8;
/// Voxels kept per case (an even subsample beyond this).
pub const MAX_FP_VOXELS: usize = 20_000;
/// Probability from which a voxel counts as predicted lesion.
pub const FP_THRESHOLD: f32 = 0.5;
/// Voxels this close to a lesion (dilation steps) are its border, not a
/// false positive.
pub const LESION_MARGIN: usize = 2;

/// The training cases examined after `iteration`: up to [`MINE_CASES`],
/// a different draw each time, fixed by the seed.
pub fn choose(cases: usize, seed: u64, iteration: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_6e65 ^ ((iteration as u64) << 20));
    let mut all: Vec<usize> = (0..cases).collect();
    all.shuffle(&mut rng);
    all.truncate(MINE_CASES.min(cases));
    all.sort_unstable();
    all
}

/// Where `net` gives false positives on `cases[which]`: linear voxel
/// indices per case (empty for cases not examined).
pub fn mine(
    net: &Network<Cpu>,
    cases: &[Case],
    which: &[usize],
    patch: [usize; 3],
) -> Result<Vec<Vec<usize>>, Error> {
    let predictor = CpuPredictor::new(net)?;
    let sliding = SlidingOptions {
        tile: patch,
        overlap: 0.25,
        mirror: false,
    };
    let mut out = vec![Vec::new(); cases.len()];
    for &c in which {
        let case = &cases[c];
        let p = predict_sliding(&predictor, &case.image, &sliding, &mut |_, _| {})?;
        out[c] = false_positives(&p, &case.truth);
    }
    Ok(out)
}

/// Voxels of `probability` ≥ [`FP_THRESHOLD`] farther than
/// [`LESION_MARGIN`] voxels from `truth`, evenly subsampled.
pub fn false_positives(probability: &Volume<f32>, truth: &Volume<u8>) -> Vec<usize> {
    let lesion: Volume<bool> = truth.map(|&v| v > 0);
    let near = dilate(&lesion, Connectivity::TwentySix, LESION_MARGIN);
    let v: Vec<usize> = probability
        .as_slice()
        .iter()
        .zip(near.as_slice())
        .enumerate()
        .filter(|(_, (&p, &n))| p >= FP_THRESHOLD && !n)
        .map(|(i, _)| i)
        .collect();
    let step = v.len().div_ceil(MAX_FP_VOXELS).max(1);
    v.into_iter().step_by(step).collect()
}

/// The lists mined after one iteration.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Mined {
    pub iteration: usize,
    /// Per training case (in the run's case order).
    pub false_positives: Vec<Vec<usize>>,
}

fn dir(run: &Path) -> PathBuf {
    run.join("hard_negatives")
}

/// Writes the lists mined after `m.iteration`.
pub fn save(run: &Path, m: &Mined) -> Result<(), Error> {
    let d = dir(run);
    std::fs::create_dir_all(&d)
        .map_err(delineate_imaging::IoFailure::on("create the folder", &d))?;
    let path = d.join(format!("{:09}.json", m.iteration));
    let bytes = serde_json::to_vec(m).map_err(|e| Error::Input(e.to_string()))?;
    delineate_imaging::atomic::write_atomically(&path, ".json", |p, _| {
        std::fs::write(p, &bytes).map_err(|e| e.to_string())
    })?;
    Ok(())
}

/// The latest lists mined at or before `iteration` (a resumed run's start).
pub fn load_latest(run: &Path, iteration: usize) -> Result<Option<Mined>, Error> {
    let d = dir(run);
    let Ok(rd) = std::fs::read_dir(&d) else {
        return Ok(None);
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(it) = name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if it <= iteration && best.as_ref().is_none_or(|b| it > b.0) {
            best = Some((it, e.path()));
        }
    }
    let Some((_, path)) = best else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(delineate_imaging::IoFailure::on(
        "read the mined false positives",
        &path,
    ))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use delineate_imaging::Geometry;

    #[test]
    fn false_positives_are_confident_voxels_away_from_lesions() {
        let g = Geometry::new([20, 20, 20], [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
        let mut truth = Volume::filled(g.clone(), 0u8);
        let mut p = Volume::filled(g, 0.1f32);
        let at = |x: usize, y: usize, z: usize| x + 20 * (y + 20 * z);
        truth.as_mut_slice()[at(5, 5, 5)] = 1;
        // On the lesion, at its border (2 voxels off) and far away.
        for i in [at(5, 5, 5), at(7, 5, 5), at(15, 15, 15), at(15, 16, 15)] {
            p.as_mut_slice()[i] = 0.9;
        }
        p.as_mut_slice()[at(1, 18, 1)] = 0.49;
        assert_eq!(
            false_positives(&p, &truth),
            vec![at(15, 15, 15), at(15, 16, 15)]
        );
        let a = choose(30, 7, 1000);
        assert_eq!(a.len(), MINE_CASES);
        assert_eq!(a, choose(30, 7, 1000));
        assert_ne!(a, choose(30, 7, 2000));
        assert_eq!(choose(3, 7, 1000), vec![0, 1, 2]);
    }

    #[test]
    fn the_latest_list_before_a_resume_is_found() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_latest(d.path(), 10).unwrap(), None);
        for it in [500, 1000, 1500] {
            save(
                d.path(),
                &Mined {
                    iteration: it,
                    false_positives: vec![vec![it]],
                },
            )
            .unwrap();
        }
        assert_eq!(
            load_latest(d.path(), 1200).unwrap().unwrap().iteration,
            1000
        );
        assert_eq!(
            load_latest(d.path(), 1500).unwrap().unwrap().iteration,
            1500
        );
        assert_eq!(load_latest(d.path(), 499).unwrap(), None);
    }
}
