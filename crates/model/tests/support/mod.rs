#![allow(clippy::unwrap_used, dead_code)]
//! Shared by the model crate's tests: a tiny dataset on disk and tiny
//! training options.

use delineate_imaging::{Geometry, Volume};

/// A tiny dataset on disk: 24³ volumes with two bright cubes each.
pub fn tiny_dataset(dir: &std::path::Path, cases: usize) {
    use delineate_imaging::{write_nifti, NiftiWriteOptions};
    let n = 24usize;
    for c in 0..cases {
        let d = dir.join(format!("case_{c}"));
        std::fs::create_dir_all(&d).unwrap();
        let g = Geometry {
            size: [n; 3],
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: Geometry::IDENTITY,
        };
        let mut img = vec![100f32; n * n * n];
        let mut tgt = vec![0u8; n * n * n];
        for (lo, hi) in [(3 + c, 9 + c), (15, 17)] {
            for k in lo..hi {
                for j in lo..hi {
                    for i in lo..hi {
                        img[i + n * (j + n * k)] = 180.0;
                        tgt[i + n * (j + n * k)] = 1;
                    }
                }
            }
        }
        for (i, v) in img.iter_mut().enumerate() {
            *v += ((i * 7919) % 13) as f32;
        }
        write_nifti(
            &d.join("image.nii.gz"),
            &Volume::from_vec(g.clone(), img).unwrap(),
            &NiftiWriteOptions::default(),
        )
        .unwrap();
        write_nifti(
            &d.join("truth.nii.gz"),
            &Volume::from_vec(g, tgt).unwrap(),
            &NiftiWriteOptions::default(),
        )
        .unwrap();
    }
}

pub fn tiny_options(epochs: usize) -> delineate_model::trainer::TrainOptions {
    use delineate_model::contract::Preprocessing;
    use delineate_model::data::Augment;
    delineate_model::trainer::TrainOptions {
        network: delineate_model::network::NetworkConfig::new("unet3d", Some(vec![4, 8])).unwrap(),
        loss: delineate_model::train::LossKind::IwBce,
        sampling: delineate_model::sampling::Sampling::Tumor { p: 0.5 },
        patch: [16, 16, 16],
        batch: 2,
        epochs,
        iterations_per_epoch: 3,
        optimizer: delineate_model::engine::OptimizerChoice::Adam,
        engine: Default::default(),
        lr: 1e-3,
        lr_drop_epoch: Some(1),
        lr_drop_factor: 0.5,
        seed: 9,
        checkpoint_every: 3,
        augment: Augment::default(),
        preprocessing: Preprocessing::default(),
        val_every: 1,
        negatives: Default::default(),
        target: Default::default(),
    }
}
