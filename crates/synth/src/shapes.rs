//! Lesion and vessel shapes as signed distance functions (mm, negative
//! inside), and their partial-volume occupancy on a voxel grid.
//!
//! The distances are exact for spheres and capsules and first-order
//! approximations for lobulated ellipsoids; the surface itself (distance 0)
//! is exact in all cases, so the ground truth "voxel centre inside" is exact.

use serde::Serialize;

use crate::sample::{add, dot, mat_vec, norm, scale, sub, V3};

/// A solid in patient space (LPS mm).
#[derive(Clone, Debug, Serialize)]
pub enum Shape {
    /// Ellipsoid with radii along the rows of `axes`, its radius modulated
    /// by `lobes` (direction, amplitude) through the Legendre polynomial P2.
    Blob {
        center: V3,
        axes: [[f64; 3]; 3],
        radii: V3,
        lobes: Vec<(V3, f64)>,
    },
    /// A blob cut by a plane: only points with `dot(x - center, normal) >= -offset` remain.
    Dome {
        blob: Box<Shape>,
        center: V3,
        normal: V3,
        offset: f64,
    },
    /// Chain of rounded cones from `points[i]` to `points[i+1]`.
    Tube {
        points: Vec<V3>,
        radii: Vec<f64>,
    },
    Union(Vec<Shape>),
}

impl Shape {
    pub fn sphere(center: V3, r: f64) -> Self {
        Shape::Blob {
            center,
            axes: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            radii: [r; 3],
            lobes: Vec::new(),
        }
    }

    /// Signed distance (mm), negative inside.
    pub fn sdf(&self, x: V3) -> f64 {
        match self {
            Shape::Blob {
                center,
                axes,
                radii,
                lobes,
            } => {
                let y = mat_vec(axes, sub(x, *center));
                let q = [y[0] / radii[0], y[1] / radii[1], y[2] / radii[2]];
                let qn = norm(q);
                let r_mean = (radii[0] * radii[1] * radii[2]).cbrt();
                let mut m = 1.0;
                let yn = norm(y);
                if yn > 1e-9 {
                    for (u, a) in lobes {
                        let c = dot(*u, y) / yn;
                        m += a * 0.5 * (3.0 * c * c - 1.0);
                    }
                }
                (qn - m) * r_mean
            }
            Shape::Dome {
                blob,
                center,
                normal,
                offset,
            } => {
                let plane = -(dot(sub(x, *center), *normal) + offset);
                blob.sdf(x).max(plane)
            }
            Shape::Tube { points, radii } => {
                let mut best = f64::INFINITY;
                for s in 0..points.len().saturating_sub(1) {
                    let (a, b) = (points[s], points[s + 1]);
                    let ab = sub(b, a);
                    let len2 = dot(ab, ab).max(1e-12);
                    let t = (dot(sub(x, a), ab) / len2).clamp(0.0, 1.0);
                    let p = add(a, scale(ab, t));
                    let r = radii[s] + t * (radii[s + 1] - radii[s]);
                    best = best.min(norm(sub(x, p)) - r);
                }
                best
            }
            Shape::Union(parts) => parts.iter().map(|p| p.sdf(x)).fold(f64::INFINITY, f64::min),
        }
    }

    /// Axis-aligned box (LPS mm) that contains the solid.
    pub fn bounds(&self) -> (V3, V3) {
        match self {
            Shape::Blob {
                center,
                radii,
                lobes,
                ..
            } => {
                let lob: f64 = lobes.iter().map(|(_, a)| a.abs()).sum();
                let r = radii.iter().cloned().fold(0.0, f64::max) * (1.0 + lob) + 1.0;
                (sub(*center, [r; 3]), add(*center, [r; 3]))
            }
            Shape::Dome { blob, .. } => blob.bounds(),
            Shape::Tube { points, radii } => {
                let r = radii.iter().cloned().fold(0.0, f64::max) + 1.0;
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for p in points {
                    for a in 0..3 {
                        lo[a] = lo[a].min(p[a] - r);
                        hi[a] = hi[a].max(p[a] + r);
                    }
                }
                (lo, hi)
            }
            Shape::Union(parts) => {
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for p in parts {
                    let (l, h) = p.bounds();
                    for a in 0..3 {
                        lo[a] = lo[a].min(l[a]);
                        hi[a] = hi[a].max(h[a]);
                    }
                }
                (lo, hi)
            }
        }
    }
}

/// Fraction of a voxel inside the solid, from the signed distance at its
/// centre: a box filter across the surface, as wide as the voxel measured
/// along the surface normal (`axes` are the grid's unit axes, `spacing`
/// their voxel sizes).
pub fn occupancy(shape: &Shape, x: V3, axes: &[V3; 3], spacing: V3) -> (f64, f64) {
    let d = shape.sdf(x);
    let reach = spacing.iter().cloned().fold(0.0, f64::max);
    if d >= reach {
        return (0.0, d);
    }
    if d <= -reach {
        return (1.0, d);
    }
    let e = 0.05;
    let g = [0, 1, 2].map(|a| {
        let mut y = x;
        y[a] += e;
        (shape.sdf(y) - d) / e
    });
    let gn = norm(g).max(1e-9);
    let n = scale(g, 1.0 / gn);
    let width = (0..3)
        .map(|a| (dot(n, axes[a]) * spacing[a]).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-6);
    ((0.5 - d * gn / width).clamp(0.0, 1.0), d)
}
