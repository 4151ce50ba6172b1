//! Whole-volume probabilities from a patch-trained network: sliding windows
//! with Gaussian importance weighting and optional mirror test-time
//! augmentation (the nnU-Net recipe).
//!
//! Windows of `tile` voxels are placed evenly so that neighbours overlap by
//! at least `overlap` of a tile (the first at 0, the last flush with the
//! far border). Each window's probabilities are weighted by a Gaussian
//! centred on the window (σ = tile/8 per axis, peak 1, the zero tail raised
//! to the smallest non-zero weight so that every voxel is covered), summed,
//! and divided by the summed weights: window borders, where the network
//! sees least context, count least. With `mirror`, every window is also
//! predicted mirrored along each subset of the three axes (8 passes) and
//! the sigmoid probabilities are averaged. The network behind a window is
//! a [`TilePredictor`]: burn on any backend, or the fast CPU U-Net. Where the image is
//! smaller than a tile it is padded with its minimum.

use burn::tensor::{activation::sigmoid, backend::Backend, Tensor, TensorData};
use delineate_imaging::Volume;

use crate::network::Network;
use crate::Error;

/// How windows are placed and predicted.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingOptions {
    /// Window size (x, y, z voxels); a multiple of the network's size
    /// multiple.
    pub tile: [usize; 3],
    /// Minimum overlap of neighbouring windows, as a fraction of a tile
    /// (0 ≤ overlap < 1).
    pub overlap: f64,
    /// Mirror test-time augmentation (8 flips).
    pub mirror: bool,
}

/// Window starts along one axis of `n` voxels: evenly spaced from 0 to
/// `n - tile` with steps of at most `tile × (1 − overlap)`.
pub fn window_starts(n: usize, tile: usize, overlap: f64) -> Vec<usize> {
    if n <= tile {
        return vec![0];
    }
    let step = ((tile as f64) * (1.0 - overlap.clamp(0.0, 0.95)))
        .floor()
        .max(1.0);
    let count = ((n - tile) as f64 / step).ceil() as usize + 1;
    (0..count)
        .map(|i| ((n - tile) as f64 * i as f64 / (count - 1) as f64).round() as usize)
        .collect()
}

/// Gaussian importance map of a tile (x-fastest).
pub fn gaussian_weights(tile: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let s = n as f64 / 8.0;
        (0..n)
            .map(|i| (-((i as f64 - c) / s).powi(2) / 2.0).exp())
            .collect()
    };
    let (wx, wy, wz) = (axis(tile[0]), axis(tile[1]), axis(tile[2]));
    let mut w = Vec::with_capacity(tile[0] * tile[1] * tile[2]);
    for z in &wz {
        for y in &wy {
            for x in &wx {
                w.push((x * y * z) as f32);
            }
        }
    }
    let min_pos = w
        .iter()
        .cloned()
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min);
    for v in &mut w {
        if *v <= 0.0 {
            *v = min_pos;
        }
    }
    w
}

/// Number of windows `predict_sliding` will run for an image of `size`.
pub fn window_count(size: [usize; 3], opts: &SlidingOptions) -> usize {
    (0..3)
        .map(|a| window_starts(size[a], opts.tile[a].max(1), opts.overlap).len())
        .product()
}

/// Maps one window (single channel, x-fastest, `dims` voxels) to
/// probabilities of the same layout; a failure is an error, never an empty
/// or zero prediction.
pub trait TilePredictor {
    fn predict(&self, tile: &[f32], dims: [usize; 3]) -> Result<Vec<f32>, Error>;
}

/// Any network on any burn backend.
pub struct BurnPredictor<'a, B: Backend> {
    pub net: &'a Network<B>,
    pub device: &'a B::Device,
}

impl<B: Backend> TilePredictor for BurnPredictor<'_, B> {
    fn predict(&self, tile: &[f32], t: [usize; 3]) -> Result<Vec<f32>, Error> {
        let input = Tensor::<B, 5>::from_data(
            TensorData::new(tile.to_vec(), [1, 1, t[2], t[1], t[0]]),
            self.device,
        );
        sigmoid(self.net.forward(input))
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| Error::Input(format!("a window's prediction could not be read: {e:?}")))
    }
}

impl<T: TilePredictor + ?Sized> TilePredictor for &T {
    fn predict(&self, tile: &[f32], dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        (**self).predict(tile, dims)
    }
}

impl TilePredictor for crate::fast::FastUNet {
    fn predict(&self, tile: &[f32], dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        crate::fast::FastUNet::predict(self, tile, dims)
    }
}

/// The predictor training uses on the CPU for validation and mining: the
/// fast engine for a U-Net (the same code `delineate segment` runs), burn
/// flex for the other architectures.
pub enum CpuPredictor<'a> {
    Fast(Box<crate::fast::FastUNet>),
    Burn {
        net: &'a Network<crate::backend::Cpu>,
        device: burn::tensor::Device<crate::backend::Cpu>,
    },
}

impl<'a> CpuPredictor<'a> {
    /// Packs a U-Net for the fast engine; any other network runs on burn.
    pub fn new(net: &'a Network<crate::backend::Cpu>) -> Result<Self, Error> {
        Ok(match net {
            Network::UNet(u) => CpuPredictor::Fast(Box::new(crate::fast::FastUNet::from_unet(u)?)),
            _ => CpuPredictor::Burn {
                net,
                device: Default::default(),
            },
        })
    }
}

impl TilePredictor for CpuPredictor<'_> {
    fn predict(&self, tile: &[f32], dims: [usize; 3]) -> Result<Vec<f32>, Error> {
        match self {
            CpuPredictor::Fast(f) => f.predict(tile, dims),
            CpuPredictor::Burn { net, device } => BurnPredictor { net, device }.predict(tile, dims),
        }
    }
}

/// `buf` (x-fastest, `dims`) mirrored along the axes whose bit is set in
/// `mask` (bit 0 = x, 1 = y, 2 = z). Its own inverse.
pub fn mirror(buf: &[f32], dims: [usize; 3], mask: usize) -> Vec<f32> {
    if mask == 0 {
        return buf.to_vec();
    }
    let [nx, ny, nz] = dims;
    let mut out = vec![0f32; buf.len()];
    for z in 0..nz {
        let zs = if mask & 4 != 0 { nz - 1 - z } else { z };
        for y in 0..ny {
            let ys = if mask & 2 != 0 { ny - 1 - y } else { y };
            let src = &buf[nx * (ys + ny * zs)..][..nx];
            let dst = &mut out[nx * (y + ny * z)..][..nx];
            dst.copy_from_slice(src);
            if mask & 1 != 0 {
                dst.reverse();
            }
        }
    }
    out
}

/// Probability per voxel of `image` (already preprocessed). `progress` is
/// called after each window with (done, total). A window whose prediction
/// fails, or has the wrong size, fails the whole volume.
pub fn predict_sliding(
    model: &dyn TilePredictor,
    image: &Volume<f32>,
    opts: &SlidingOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Volume<f32>, Error> {
    let s = image.geometry().size;
    let t = opts.tile.map(|v| v.max(1));
    let n = t[0] * t[1] * t[2];
    let fill = image
        .as_slice()
        .iter()
        .cloned()
        .fold(f32::INFINITY, f32::min);
    let fill = if fill.is_finite() { fill } else { 0.0 };
    let weights = gaussian_weights(t);
    let data = image.as_slice();
    let mut acc = vec![0f32; data.len()];
    let mut wsum = vec![0f32; data.len()];
    let starts: Vec<Vec<usize>> = (0..3)
        .map(|a| window_starts(s[a], t[a], opts.overlap))
        .collect();
    let total = starts.iter().map(Vec::len).product();
    let masks: Vec<usize> = if opts.mirror {
        (0..8).collect()
    } else {
        vec![0]
    };
    let mut done = 0;
    for &z0 in &starts[2] {
        for &y0 in &starts[1] {
            for &x0 in &starts[0] {
                let mut buf = vec![fill; n];
                for k in 0..t[2].min(s[2] - z0) {
                    for j in 0..t[1].min(s[1] - y0) {
                        let src = x0 + s[0] * (y0 + j + s[1] * (z0 + k));
                        let len = t[0].min(s[0] - x0);
                        let dst = t[0] * (j + t[1] * k);
                        buf[dst..dst + len].copy_from_slice(&data[src..src + len]);
                    }
                }
                let mut p = vec![0f32; n];
                for &m in &masks {
                    let out = model
                        .predict(&mirror(&buf, t, m), t)
                        .map_err(|e| Error::Input(format!("window at ({x0}, {y0}, {z0}): {e}")))?;
                    if out.len() != n {
                        return Err(Error::Input(format!(
                            "window at ({x0}, {y0}, {z0}): {} probabilities for {n} voxels",
                            out.len()
                        )));
                    }
                    for (a, b) in p.iter_mut().zip(mirror(&out, t, m)) {
                        *a += b / masks.len() as f32;
                    }
                }
                for k in 0..t[2].min(s[2] - z0) {
                    for j in 0..t[1].min(s[1] - y0) {
                        let dst = x0 + s[0] * (y0 + j + s[1] * (z0 + k));
                        let len = t[0].min(s[0] - x0);
                        let src = t[0] * (j + t[1] * k);
                        for i in 0..len {
                            let w = weights[src + i];
                            acc[dst + i] += w * p[src + i];
                            wsum[dst + i] += w;
                        }
                    }
                }
                done += 1;
                progress(done, total);
            }
        }
    }
    for (a, w) in acc.iter_mut().zip(&wsum) {
        *a = if *w > 0.0 { *a / *w } else { 0.0 };
    }
    Ok(Volume::from_vec(image.geometry().clone(), acc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_cover_the_axis_with_the_overlap() {
        assert_eq!(window_starts(40, 64, 0.5), vec![0]);
        assert_eq!(window_starts(64, 64, 0.5), vec![0]);
        assert_eq!(window_starts(128, 64, 0.0), vec![0, 64]);
        assert_eq!(window_starts(100, 64, 0.0), vec![0, 36]);
        // 0.5 overlap: steps of at most 32.
        let s = window_starts(181, 64, 0.5);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&(181 - 64)));
        assert!(s.windows(2).all(|w| w[1] - w[0] <= 32 && w[1] > w[0]));
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn mirror_is_its_own_inverse_and_flips_the_right_axes() {
        let dims = [3, 2, 2];
        let buf: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(mirror(&buf, dims, 1)[..3], [2.0, 1.0, 0.0]);
        assert_eq!(mirror(&buf, dims, 2)[..3], [3.0, 4.0, 5.0]);
        assert_eq!(mirror(&buf, dims, 4)[..3], [6.0, 7.0, 8.0]);
        for m in 0..8 {
            assert_eq!(mirror(&mirror(&buf, dims, m), dims, m), buf);
        }
    }

    #[test]
    fn gaussian_weights_peak_in_the_centre_and_never_vanish() {
        let w = gaussian_weights([9, 8, 7]);
        assert_eq!(w.len(), 9 * 8 * 7);
        let max = w.iter().cloned().fold(0f32, f32::max);
        let min = w.iter().cloned().fold(1f32, f32::min);
        assert!(min > 0.0 && max <= 1.0);
        // The centre voxel of the odd x axis is the peak along x.
        let at = |x: usize, y: usize, z: usize| w[x + 9 * (y + 8 * z)];
        assert!(at(4, 3, 3) > at(3, 3, 3) && at(4, 3, 3) > at(5, 3, 3));
        assert!((at(3, 3, 3) - at(5, 3, 3)).abs() < 1e-7);
        assert!(at(0, 0, 0) < 0.01 * at(4, 3, 3));
    }
}
