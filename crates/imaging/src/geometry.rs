//! Voxel grid geometry in DICOM patient coordinates (LPS, millimetres).
//!
//! A voxel index `(i, j, k)` maps to the patient position
//!
//! ```text
//! world = origin + D · diag(spacing) · (i, j, k)ᵀ
//! ```
//!
//! where `origin` is the centre of voxel `(0, 0, 0)` and the columns of the
//! direction matrix `D` are the unit vectors of the `i`, `j` and `k` axes in
//! LPS (x towards the patient's Left, y towards Posterior, z towards
//! Superior), exactly as DICOM's Image Position/Orientation (Patient) define
//! them. NIfTI stores RAS; the conversion lives in [`crate::nifti_io`].
//!
//! ```
//! use delineate_imaging::Geometry;
//! let g = Geometry::new([10, 10, 5], [0.5, 0.5, 2.0], [-10.0, 20.0, 0.0], Geometry::IDENTITY)?;
//! let p = g.index_to_world([2.0, 4.0, 1.0]);
//! assert_eq!(p, [-9.0, 22.0, 2.0]);
//! let back = g.world_to_index(p);
//! assert!((back[0] - 2.0).abs() < 1e-12);
//! # Ok::<(), delineate_imaging::Error>(())
//! ```

use nalgebra::{Matrix3, Vector3};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Largest deviation from orthonormality we still call "orthonormal"
/// (DICOM orientation cosines are decimal strings with ~6 digits).
pub const ORTHONORMAL_TOLERANCE: f64 = 1e-4;

/// The geometry of a 3-D voxel grid in LPS patient space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Number of voxels along i, j, k.
    pub size: [usize; 3],
    /// Voxel spacing in mm along i, j, k (all > 0).
    pub spacing: [f64; 3],
    /// LPS position (mm) of the centre of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Direction cosines, row-major: `direction[r][c]` is the LPS component
    /// `r` of axis `c`. Columns are unit vectors.
    pub direction: [[f64; 3]; 3],
}

impl Geometry {
    /// Axis-aligned LPS directions: i → Left, j → Posterior, k → Superior.
    pub const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

    /// Builds a geometry after checking that it describes a real grid:
    /// non-zero size, finite positive spacing, finite origin and unit,
    /// linearly independent direction columns.
    pub fn new(
        size: [usize; 3],
        spacing: [f64; 3],
        origin: [f64; 3],
        direction: [[f64; 3]; 3],
    ) -> Result<Self, Error> {
        if size.contains(&0) {
            return Err(Error::Geometry(format!("empty grid size {size:?}")));
        }
        if spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Error::Geometry(format!(
                "voxel spacing must be finite and positive, got {spacing:?}"
            )));
        }
        if origin.iter().any(|o| !o.is_finite()) {
            return Err(Error::Geometry(format!("origin is not finite: {origin:?}")));
        }
        let d = Matrix3::from_fn(|r, c| direction[r][c]);
        if d.iter().any(|v| !v.is_finite()) {
            return Err(Error::Geometry("direction matrix is not finite".into()));
        }
        for c in 0..3 {
            let n = d.column(c).norm();
            if (n - 1.0).abs() > 1e-3 {
                return Err(Error::Geometry(format!(
                    "direction column {c} is not a unit vector (norm {n:.6})"
                )));
            }
        }
        if d.determinant().abs() < 1e-6 {
            return Err(Error::Geometry(
                "direction columns are linearly dependent (degenerate grid)".into(),
            ));
        }
        Ok(Self {
            size,
            spacing,
            origin,
            direction,
        })
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.size.iter().product()
    }

    /// True when the grid has no voxels (never, for a validated geometry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The direction matrix as nalgebra (columns = axes).
    pub fn direction_matrix(&self) -> Matrix3<f64> {
        Matrix3::from_fn(|r, c| self.direction[r][c])
    }

    /// `D · diag(spacing)`: maps an index step to an LPS displacement in mm.
    pub fn index_to_world_matrix(&self) -> Matrix3<f64> {
        let mut m = self.direction_matrix();
        for c in 0..3 {
            m.column_mut(c).scale_mut(self.spacing[c]);
        }
        m
    }

    /// LPS position (mm) of a (possibly fractional) voxel index.
    pub fn index_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let w = self.index_to_world_matrix() * Vector3::from(ijk) + Vector3::from(self.origin);
        [w.x, w.y, w.z]
    }

    /// Continuous voxel index of an LPS position (mm).
    pub fn world_to_index(&self, xyz: [f64; 3]) -> [f64; 3] {
        // The matrix is invertible: `new` rejects degenerate directions.
        let inv = self
            .index_to_world_matrix()
            .try_inverse()
            .unwrap_or_else(Matrix3::zeros);
        let v = inv * (Vector3::from(xyz) - Vector3::from(self.origin));
        [v.x, v.y, v.z]
    }

    /// The 4×4 homogeneous index→LPS matrix, row-major.
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let m = self.index_to_world_matrix();
        let mut a = [[0.0; 4]; 4];
        for (r, row) in a.iter_mut().enumerate().take(3) {
            for (c, v) in row.iter_mut().enumerate().take(3) {
                *v = m[(r, c)];
            }
            row[3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// The 4×4 index→RAS matrix (NIfTI and nibabel convention), row-major.
    pub fn affine_ras(&self) -> [[f64; 4]; 4] {
        let mut a = self.affine_lps();
        for row in a.iter_mut().take(2) {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
        a
    }

    /// Builds a geometry from a 4×4 index→LPS affine (columns may carry
    /// spacing; they are factored into spacing × unit direction).
    pub fn from_affine_lps(size: [usize; 3], a: &[[f64; 4]; 4]) -> Result<Self, Error> {
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for c in 0..3 {
            let n = (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt();
            if n.is_nan() || n <= 0.0 {
                return Err(Error::Geometry(format!(
                    "affine column {c} has zero length"
                )));
            }
            spacing[c] = n;
            for r in 0..3 {
                direction[r][c] = a[r][c] / n;
            }
        }
        Self::new(size, spacing, [a[0][3], a[1][3], a[2][3]], direction)
    }

    /// Largest |DᵀD − I| entry: 0 for a rotation (possibly improper),
    /// larger for sheared grids (e.g. CT with gantry tilt).
    pub fn orthonormality_error(&self) -> f64 {
        let d = self.direction_matrix();
        (d.transpose() * d - Matrix3::identity()).abs().max()
    }

    /// True when the direction columns are mutually orthogonal.
    pub fn is_orthonormal(&self) -> bool {
        self.orthonormality_error() <= ORTHONORMAL_TOLERANCE
    }

    /// Three-letter orientation code (nibabel's convention: each letter is
    /// where the axis points *to*). An axial DICOM slice stack with rows
    /// running right→left and columns anterior→posterior is `"LPS"`.
    pub fn orientation_code(&self) -> String {
        crate::orient::axis_codes(&self.direction).iter().collect()
    }

    /// Size of the physical field of view (mm) along each axis, edge to edge.
    pub fn extent(&self) -> [f64; 3] {
        [0, 1, 2].map(|a| self.size[a] as f64 * self.spacing[a])
    }

    /// LPS position of the centre of the field of view.
    pub fn center(&self) -> [f64; 3] {
        self.index_to_world([0, 1, 2].map(|a| (self.size[a] as f64 - 1.0) / 2.0))
    }

    /// A grid with new spacing covering the same field of view, centred on
    /// the same point, with the same directions (`size = round(extent /
    /// spacing)`, at least 1). Used to resample to a model's spacing.
    pub fn with_spacing(&self, spacing: [f64; 3]) -> Result<Self, Error> {
        let ext = self.extent();
        let size = [0, 1, 2].map(|a| ((ext[a] / spacing[a]).round() as usize).max(1));
        let mut g = Self::new(size, spacing, self.origin, self.direction)?;
        let c_old = Vector3::from(self.center());
        let half = Vector3::from([0, 1, 2].map(|a| (size[a] as f64 - 1.0) / 2.0));
        let o = c_old - g.index_to_world_matrix() * half;
        g.origin = [o.x, o.y, o.z];
        Ok(g)
    }

    /// True when both grids have the same size and place every voxel within
    /// `tol_mm` of the same position.
    pub fn same_grid(&self, other: &Geometry, tol_mm: f64) -> bool {
        if self.size != other.size {
            return false;
        }
        let corners = [0usize, 1].iter().flat_map(|&a| {
            [0usize, 1]
                .iter()
                .flat_map(move |&b| [0usize, 1].iter().map(move |&c| [a, b, c]))
        });
        for corner in corners {
            let ijk = [0, 1, 2].map(|ax| (corner[ax] * (self.size[ax] - 1)) as f64);
            let p = self.index_to_world(ijk);
            let q = other.index_to_world(ijk);
            let d = (0..3).map(|r| (p[r] - q[r]).powi(2)).sum::<f64>().sqrt();
            if d > tol_mm {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oblique_round_trip_and_affines() {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let dir = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let g = Geometry::new([7, 9, 11], [0.9, 1.1, 2.5], [1.0, -2.0, 3.0], dir).unwrap();
        let p = g.index_to_world([3.0, 4.0, 5.0]);
        let expect = [
            1.0 + c * 0.9 * 3.0 - s * 1.1 * 4.0,
            -2.0 + s * 0.9 * 3.0 + c * 1.1 * 4.0,
            3.0 + 2.5 * 5.0,
        ];
        for r in 0..3 {
            assert!((p[r] - expect[r]).abs() < 1e-12);
        }
        let back = g.world_to_index(p);
        assert!((back[0] - 3.0).abs() < 1e-12 && (back[2] - 5.0).abs() < 1e-12);
        let ras = g.affine_ras();
        assert_eq!(ras[0][3], -1.0);
        assert_eq!(ras[1][3], 2.0);
        let g2 = Geometry::from_affine_lps(g.size, &g.affine_lps()).unwrap();
        assert!(g.same_grid(&g2, 1e-9));
    }

    #[test]
    fn rejects_degenerate_geometry() {
        assert!(Geometry::new([1, 1, 0], [1.0; 3], [0.0; 3], Geometry::IDENTITY).is_err());
        assert!(Geometry::new([1, 1, 1], [1.0, 0.0, 1.0], [0.0; 3], Geometry::IDENTITY).is_err());
        let dup = [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(Geometry::new([1, 1, 1], [1.0; 3], [0.0; 3], dup).is_err());
    }

    #[test]
    fn with_spacing_keeps_field_of_view_centre() {
        let g = Geometry::new(
            [100, 80, 40],
            [1.0, 1.0, 2.5],
            [5.0, 6.0, 7.0],
            Geometry::IDENTITY,
        )
        .unwrap();
        let h = g.with_spacing([2.0, 2.0, 2.0]).unwrap();
        assert_eq!(h.size, [50, 40, 50]);
        for r in 0..3 {
            assert!((g.center()[r] - h.center()[r]).abs() < 1e-9);
        }
        // Outer edges coincide: voxel (-0.5) of both grids is the same plane.
        assert!(
            (g.index_to_world([-0.5, 0.0, 0.0])[0] - h.index_to_world([-0.5, 0.0, 0.0])[0]).abs()
                < 1e-9
        );
    }
}
