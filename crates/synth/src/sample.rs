//! Fast world-space sampling of template volumes, and small vector helpers.

use delineate_imaging::{Geometry, Volume};

pub type V3 = [f64; 3];

pub fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}
pub fn normalize(a: V3) -> V3 {
    let n = norm(a);
    if n > 0.0 {
        scale(a, 1.0 / n)
    } else {
        [0.0, 0.0, 1.0]
    }
}
pub fn mat_vec(m: &[[f64; 3]; 3], v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// World (LPS mm) to continuous voxel index, precomputed for one grid.
#[derive(Clone, Debug)]
pub struct WorldToIndex {
    m: [[f64; 3]; 3],
    origin: V3,
    size: [usize; 3],
}

impl WorldToIndex {
    pub fn new(g: &Geometry) -> Self {
        let inv = g
            .index_to_world_matrix()
            .try_inverse()
            .unwrap_or_else(nalgebra::Matrix3::identity);
        let m = [0, 1, 2].map(|r| [0, 1, 2].map(|c| inv[(r, c)]));
        Self {
            m,
            origin: g.origin,
            size: g.size,
        }
    }

    pub fn index(&self, x: V3) -> V3 {
        mat_vec(&self.m, sub(x, self.origin))
    }

    /// Trilinear interpolation of `vol` at world point `x`; `outside` beyond the grid.
    /// (Not `imaging::resample::trilinear_at`: this is the inner loop of
    /// rendering, several samples per output voxel, so it stays in f32 with
    /// no branches per corner; and changing it would change every case's bytes.)
    pub fn linear(&self, vol: &Volume<f32>, x: V3, outside: f32) -> f32 {
        let p = self.index(x);
        let s = self.size;
        if p.iter().zip(s).any(|(&c, n)| c < 0.0 || c > (n - 1) as f64) {
            return outside;
        }
        let data = vol.as_slice();
        let i0 = [0, 1, 2].map(|a| (p[a].floor() as usize).min(s[a].saturating_sub(2)));
        let f = [0, 1, 2].map(|a| (p[a] - i0[a] as f64) as f32);
        let (sx, sxy) = (s[0], s[0] * s[1]);
        let base = i0[0] + i0[1] * sx + i0[2] * sxy;
        let dx = usize::from(s[0] > 1);
        let dy = if s[1] > 1 { sx } else { 0 };
        let dz = if s[2] > 1 { sxy } else { 0 };
        let c = |o: usize| data[base + o];
        let c00 = c(0) + (c(dx) - c(0)) * f[0];
        let c10 = c(dy) + (c(dy + dx) - c(dy)) * f[0];
        let c01 = c(dz) + (c(dz + dx) - c(dz)) * f[0];
        let c11 = c(dz + dy) + (c(dz + dy + dx) - c(dz + dy)) * f[0];
        let c0 = c00 + (c10 - c00) * f[1];
        let c1 = c01 + (c11 - c01) * f[1];
        c0 + (c1 - c0) * f[2]
    }

    /// Nearest-voxel value of `vol` at `x`; `outside` beyond the grid.
    pub fn nearest<T: Copy>(&self, vol: &Volume<T>, x: V3, outside: T) -> T {
        let p = self.index(x);
        let s = self.size;
        let mut idx = [0usize; 3];
        for a in 0..3 {
            let r = p[a].round();
            if r < 0.0 || r > (s[a] - 1) as f64 {
                return outside;
            }
            idx[a] = r as usize;
        }
        vol.as_slice()[idx[0] + idx[1] * s[0] + idx[2] * s[0] * s[1]]
    }
}

/// Separable box blur of radius `r` voxels along each axis, `passes` times
/// (three passes approximate a Gaussian). Zero outside the grid.
pub fn box_blur(vol: &Volume<f32>, r: usize, passes: usize) -> Volume<f32> {
    let s = vol.geometry().size;
    let mut data = vol.as_slice().to_vec();
    let strides = [1, s[0], s[0] * s[1]];
    let mut line = Vec::new();
    for _ in 0..passes {
        for axis in 0..3 {
            let n = s[axis];
            let stride = strides[axis];
            let others: Vec<usize> = (0..s[0] * s[1] * s[2])
                .filter(|&lin| (lin / stride) % n == 0)
                .collect();
            for start in others {
                line.clear();
                line.extend((0..n).map(|t| data[start + t * stride]));
                let w = 1.0 / (2 * r + 1) as f32;
                let mut acc: f32 = line[..=r.min(n - 1)].iter().sum();
                for t in 0..n {
                    data[start + t * stride] = acc * w;
                    if t + r + 1 < n {
                        acc += line[t + r + 1];
                    }
                    if t >= r {
                        acc -= line[t - r];
                    }
                }
            }
        }
    }
    Volume::from_vec(vol.geometry().clone(), data).unwrap_or_else(|_| vol.clone())
}
