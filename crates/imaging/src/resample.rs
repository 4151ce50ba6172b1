//! Resampling onto another grid, in patient space.
//!
//! Every target voxel centre is mapped to a continuous source index through
//! both geometries, so any pair of grids works (different spacing, origin,
//! direction, even sheared sources). The map is affine in the target index,
//! so it is evaluated incrementally along each row.
//!
//! * [`resample_linear`]: trilinear, for images. Outside the source grid the
//!   value is `fill`; within half a voxel of the border the edge value is
//!   extended (no darkening of the outermost voxels).
//! * [`resample_nearest`]: nearest neighbour, any voxel type.
//! * [`resample_labels`]: nearest neighbour that never loses a lesion. When
//!   downsampling, a 1–2 voxel component can fall between target voxel
//!   centres and vanish. Each source component (26-connected, same label)
//!   that left no voxel behind is restored at the target voxel that received
//!   most of its source voxels.

use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;

use crate::components::{label_components, Connectivity};
use crate::{Error, Geometry, Volume};

/// Source index = `m · target_index + b`.
fn index_map(src: &Geometry, dst: &Geometry) -> Result<(Matrix3<f64>, Vector3<f64>), Error> {
    let inv = src
        .index_to_world_matrix()
        .try_inverse()
        .ok_or_else(|| Error::Geometry("source grid is degenerate".into()))?;
    let m = inv * dst.index_to_world_matrix();
    let b = inv * (Vector3::from(dst.origin) - Vector3::from(src.origin));
    Ok((m, b))
}

/// Calls `f(row_out, j, k, start, step)` for every row of the target, in
/// parallel over slices; `start + i·step` is the source index of voxel `i`.
fn for_each_row<U, F>(src: &Geometry, dst: &Geometry, out: &mut [U], f: F) -> Result<(), Error>
where
    U: Send,
    F: Fn(&mut [U], Vector3<f64>, Vector3<f64>) + Sync,
{
    let (m, b) = index_map(src, dst)?;
    let [nx, ny, _] = dst.size;
    let step = m.column(0).into_owned();
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slab)| {
            for (j, row) in slab.chunks_mut(nx).enumerate() {
                let start = m * Vector3::new(0.0, j as f64, k as f64) + b;
                f(row, start, step);
            }
        });
    Ok(())
}

/// Trilinear value of `vol` at the continuous voxel index `p`; `None` when
/// `p` lies more than `border` voxels beyond the outermost voxel centres
/// (positions between the border and the centres take the edge values).
pub fn trilinear_at(vol: &Volume<f32>, p: [f64; 3], border: f64) -> Option<f32> {
    let [sx, sy, sz] = vol.geometry().size;
    let data = vol.as_slice();
    let mut w = [[0usize; 2]; 3];
    let mut t = [0.0f64; 3];
    for a in 0..3 {
        let n = [sx, sy, sz][a];
        let x = p[a];
        if !(x >= -border && x <= n as f64 - 1.0 + border) {
            return None;
        }
        let xc = x.clamp(0.0, (n - 1) as f64);
        let x0 = (xc.floor() as usize).min(n - 1);
        let x1 = (x0 + 1).min(n - 1);
        w[a] = [x0, x1];
        t[a] = xc - x0 as f64;
    }
    let at = |i: usize, j: usize, k: usize| data[i + sx * (j + sy * k)] as f64;
    let mut acc = 0.0;
    for (dk, wk) in [(0, 1.0 - t[2]), (1, t[2])] {
        if wk == 0.0 {
            continue;
        }
        for (dj, wj) in [(0, 1.0 - t[1]), (1, t[1])] {
            if wj == 0.0 {
                continue;
            }
            let (k, j) = (w[2][dk], w[1][dj]);
            let row_val = at(w[0][0], j, k) * (1.0 - t[0]) + at(w[0][1], j, k) * t[0];
            acc += wk * wj * row_val;
        }
    }
    Some(acc as f32)
}

/// Trilinear resampling of an image onto `target`.
pub fn resample_linear(
    src: &Volume<f32>,
    target: &Geometry,
    fill: f32,
) -> Result<Volume<f32>, Error> {
    let g = src.geometry();
    let mut out = vec![fill; target.len()];
    for_each_row(g, target, &mut out, |row, start, step| {
        for (i, o) in row.iter_mut().enumerate() {
            let p = start + step * i as f64;
            // Half a voxel beyond the outermost centre still belongs to the grid.
            if let Some(v) = trilinear_at(src, [p[0], p[1], p[2]], 0.5) {
                *o = v;
            }
        }
    })?;
    Volume::from_vec(target.clone(), out)
}

/// Nearest-neighbour resampling (ties round half away from zero).
pub fn resample_nearest<T>(src: &Volume<T>, target: &Geometry, fill: T) -> Result<Volume<T>, Error>
where
    T: Copy + Send + Sync,
{
    let g = src.geometry();
    let [sx, sy, sz] = g.size;
    let data = src.as_slice();
    let mut out = vec![fill; target.len()];
    for_each_row(g, target, &mut out, |row, start, step| {
        for (i, o) in row.iter_mut().enumerate() {
            let p = start + step * i as f64;
            if let Some(idx) = nearest_index(&p, [sx, sy, sz]) {
                *o = data[idx];
            }
        }
    })?;
    Volume::from_vec(target.clone(), out)
}

fn nearest_index(p: &Vector3<f64>, size: [usize; 3]) -> Option<usize> {
    let mut ijk = [0usize; 3];
    for a in 0..3 {
        let r = p[a].round();
        if !(r >= 0.0 && r < size[a] as f64) {
            return None;
        }
        ijk[a] = r as usize;
    }
    Some(ijk[0] + size[0] * (ijk[1] + size[1] * ijk[2]))
}

/// Nearest-neighbour label resampling that keeps every connected component
/// (see the module documentation). Label 0 is background.
pub fn resample_labels(src: &Volume<u32>, target: &Geometry) -> Result<Volume<u32>, Error> {
    let mut out = resample_nearest(src, target, 0)?;
    let comps = label_components(src, Connectivity::TwentySix, |&v| v != 0, true);
    let (m, b) = index_map(target, src.geometry())?; // source index -> target index
    let [nx, ny, _] = src.geometry().size;
    let tsize = target.size;
    // For each component: the target voxels its source voxels fall into.
    let mut hits: Vec<Vec<usize>> = vec![Vec::new(); comps.stats.len()];
    for (idx, &c) in comps.labels.as_slice().iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
        let p = m * Vector3::new(i as f64, j as f64, k as f64) + b;
        if let Some(t) = nearest_index(&p, tsize) {
            hits[(c - 1) as usize].push(t);
        }
    }
    let src_data = src.as_slice();
    let out_data = out.as_mut_slice();
    for (c, stat) in comps.stats.iter().enumerate() {
        let first = stat.first_voxel;
        let label = src_data[first];
        let targets = &mut hits[c];
        if targets.is_empty() || targets.iter().any(|&t| out_data[t] == label) {
            continue; // outside the target grid, or still present
        }
        targets.sort_unstable();
        // Mode of the target voxels (smallest index on ties: deterministic).
        let (mut best, mut best_n, mut run_start) = (targets[0], 0usize, 0usize);
        for n in 1..=targets.len() {
            if n == targets.len() || targets[n] != targets[run_start] {
                if n - run_start > best_n {
                    best = targets[run_start];
                    best_n = n - run_start;
                }
                run_start = n;
            }
        }
        out_data[best] = label;
    }
    Ok(out)
}

impl Volume<f32> {
    /// Trilinear resampling to a new spacing over the same field of view
    /// (see [`Geometry::with_spacing`]).
    pub fn resample_to_spacing(&self, spacing: [f64; 3]) -> Result<Volume<f32>, Error> {
        resample_linear(self, &self.geometry().with_spacing(spacing)?, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(size: [usize; 3], spacing: [f64; 3]) -> Geometry {
        Geometry::new(size, spacing, [0.0; 3], Geometry::IDENTITY).unwrap()
    }

    #[test]
    fn linear_reproduces_affine_intensity_exactly() {
        // Trilinear interpolation is exact for functions linear in space.
        let g = grid([20, 18, 16], [1.0, 1.2, 1.5]);
        let f = |p: [f64; 3]| (2.0 * p[0] - 0.5 * p[1] + 0.25 * p[2] + 3.0) as f32;
        let mut v = Volume::filled(g.clone(), 0.0f32);
        for ((i, j, k), x) in v.data_mut().indexed_iter_mut() {
            *x = f(g.index_to_world([i as f64, j as f64, k as f64]));
        }
        let mut t = grid([10, 10, 10], [0.7, 0.9, 1.1]);
        t.origin = [2.3, 1.9, 3.1];
        let r = resample_linear(&v, &t, -1.0).unwrap();
        for ((i, j, k), x) in r.data().indexed_iter() {
            let expect = f(t.index_to_world([i as f64, j as f64, k as f64]));
            assert!((x - expect).abs() < 1e-4, "{x} vs {expect}");
        }
        // Outside the source field of view: fill.
        t.origin = [100.0, 0.0, 0.0];
        assert!(resample_linear(&v, &t, -1.0)
            .unwrap()
            .as_slice()
            .iter()
            .all(|&x| x == -1.0));
    }

    #[test]
    fn identity_grid_is_a_copy() {
        let g = grid([5, 6, 7], [1.0, 1.0, 1.0]);
        let v = Volume::from_vec(g.clone(), (0..210).map(|x| x as f32).collect()).unwrap();
        assert_eq!(resample_linear(&v, &g, 0.0).unwrap(), v);
        assert_eq!(resample_nearest(&v, &g, 0.0).unwrap(), v);
    }

    #[test]
    fn label_downsampling_keeps_single_voxel_lesions() {
        let g = grid([40, 40, 40], [0.5, 0.5, 0.5]);
        let mut v = Volume::filled(g.clone(), 0u32);
        // Single voxels at odd indices fall between 1 mm target centres.
        for (n, p) in [[1usize, 1, 1], [13, 21, 7], [33, 5, 39], [20, 20, 21]]
            .iter()
            .enumerate()
        {
            v.data_mut()[*p] = n as u32 + 1;
        }
        let t = g.with_spacing([2.0, 2.0, 2.0]).unwrap();
        let plain = resample_nearest(&v, &t, 0).unwrap();
        let kept = resample_labels(&v, &t).unwrap();
        let count = |vol: &Volume<u32>, l: u32| vol.as_slice().iter().filter(|&&x| x == l).count();
        assert!(
            (1..=4).any(|l| count(&plain, l) == 0),
            "test needs a lesion that NN loses"
        );
        for l in 1..=4 {
            assert_eq!(count(&kept, l), 1, "label {l}");
        }
    }
}
