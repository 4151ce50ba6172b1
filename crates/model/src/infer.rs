//! Whole-volume probabilities by tiling (used for validation during
//! training). Tiles of the training patch size cover the volume without
//! overlap, the last ones shifted back inside; the image is padded with its
//! minimum where it is smaller than a tile. (Gaussian-weighted overlapping
//! windows and test-time augmentation belong to `delineate segment`.)

use burn::tensor::{activation::sigmoid, backend::Backend, Tensor, TensorData};
use delineate_imaging::Volume;

use crate::network::Network;

fn starts(n: usize, tile: usize) -> Vec<usize> {
    if n <= tile {
        return vec![0];
    }
    let mut v: Vec<usize> = (0..n).step_by(tile).collect();
    if let Some(last) = v.last_mut() {
        *last = (*last).min(n - tile);
    }
    v.dedup();
    v
}

/// Probability per voxel of `image` (already preprocessed), x-fastest.
pub fn predict_tiled<B: Backend>(
    net: &Network<B>,
    image: &Volume<f32>,
    tile: [usize; 3],
    device: &B::Device,
) -> Volume<f32> {
    let s = image.geometry().size;
    let t = [0, 1, 2].map(|a| tile[a].max(1));
    let min = image
        .as_slice()
        .iter()
        .cloned()
        .fold(f32::INFINITY, f32::min);
    let fill = if min.is_finite() { min } else { 0.0 };
    let mut out = Volume::filled(image.geometry().clone(), 0f32);
    let data = image.as_slice();
    for &z0 in &starts(s[2], t[2]) {
        for &y0 in &starts(s[1], t[1]) {
            for &x0 in &starts(s[0], t[0]) {
                let n = t[0] * t[1] * t[2];
                let mut buf = vec![fill; n];
                for k in 0..t[2] {
                    for j in 0..t[1] {
                        for i in 0..t[0] {
                            let (x, y, z) = (x0 + i, y0 + j, z0 + k);
                            if x < s[0] && y < s[1] && z < s[2] {
                                buf[i + t[0] * (j + t[1] * k)] = data[x + s[0] * (y + s[1] * z)];
                            }
                        }
                    }
                }
                let input = Tensor::<B, 5>::from_data(
                    TensorData::new(buf, [1, 1, t[2], t[1], t[0]]),
                    device,
                );
                let p = sigmoid(net.forward(input))
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap_or_default();
                let o = out.as_mut_slice();
                for k in 0..t[2] {
                    for j in 0..t[1] {
                        for i in 0..t[0] {
                            let (x, y, z) = (x0 + i, y0 + j, z0 + k);
                            if x < s[0] && y < s[1] && z < s[2] {
                                if let Some(v) = p.get(i + t[0] * (j + t[1] * k)) {
                                    o[x + s[0] * (y + s[1] * z)] = *v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}
