//! `Volume<T>`: voxel data on a [`Geometry`].
//!
//! Data are an `ndarray::Array3<T>` indexed `[i, j, k]` and always stored
//! with `i` fastest (Fortran order), the layout of NIfTI files and of DICOM
//! pixel data (column fastest, then row, then slice). Algorithms that scan
//! memory use [`Volume::as_slice`] with `index = i + nx·(j + ny·k)`.

use ndarray::{Array3, ShapeBuilder};

use crate::{Error, Geometry};

/// Voxel data plus geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume<T> {
    geometry: Geometry,
    data: Array3<T>,
}

impl<T: Clone> Volume<T> {
    /// Wraps `data` (logical shape `[nx, ny, nz]`, any memory layout) on
    /// `geometry`. Fails when the shapes differ.
    pub fn new(geometry: Geometry, data: Array3<T>) -> Result<Self, Error> {
        if data.shape() != geometry.size {
            return Err(Error::Geometry(format!(
                "data shape {:?} does not match grid size {:?}",
                data.shape(),
                geometry.size
            )));
        }
        let data = if data.t().is_standard_layout() {
            data
        } else {
            let mut f = Array3::from_elem(data.raw_dim().f(), data[[0, 0, 0]].clone());
            f.assign(&data);
            f
        };
        Ok(Self { geometry, data })
    }

    /// A volume filled with `value`.
    pub fn filled(geometry: Geometry, value: T) -> Self {
        let data = Array3::from_elem(geometry.size.f(), value);
        Self { geometry, data }
    }

    /// Builds a volume from voxels in memory order (`i` fastest).
    pub fn from_vec(geometry: Geometry, voxels: Vec<T>) -> Result<Self, Error> {
        let n = geometry.len();
        if voxels.len() != n {
            return Err(Error::Geometry(format!(
                "{} voxels given for a grid of {:?} ({n} voxels)",
                voxels.len(),
                geometry.size
            )));
        }
        let data = Array3::from_shape_vec(geometry.size.f(), voxels)
            .map_err(|e| Error::Geometry(e.to_string()))?;
        Ok(Self { geometry, data })
    }

    /// Same geometry, new values (one pass in memory order, no re-layout).
    pub fn map<U: Clone, F: Fn(&T) -> U>(&self, f: F) -> Volume<U> {
        let voxels: Vec<U> = self.as_slice().iter().map(f).collect();
        Volume::from_vec(self.geometry.clone(), voxels).unwrap_or_else(|_| unreachable!())
    }

    /// A copy of the box `[lo, hi)` (voxel indices); the origin moves so that
    /// every kept voxel stays where it was in patient space.
    pub fn crop(&self, lo: [usize; 3], hi: [usize; 3]) -> Result<Self, Error> {
        for a in 0..3 {
            if lo[a] >= hi[a] || hi[a] > self.geometry.size[a] {
                return Err(Error::Geometry(format!(
                    "crop box {lo:?}..{hi:?} is empty or outside the grid {:?}",
                    self.geometry.size
                )));
            }
        }
        let view = self
            .data
            .slice(ndarray::s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]]);
        let mut g = self.geometry.clone();
        g.origin = g.index_to_world(lo.map(|v| v as f64));
        g.size = [0, 1, 2].map(|a| hi[a] - lo[a]);
        Volume::new(g, view.to_owned())
    }

    /// Adds `before[a]` and `after[a]` voxels of `value` on each side of
    /// axis `a`; existing voxels keep their patient position.
    pub fn pad(&self, before: [usize; 3], after: [usize; 3], value: T) -> Self {
        let mut g = self.geometry.clone();
        g.origin = g.index_to_world(before.map(|v| -(v as f64)));
        g.size = [0, 1, 2].map(|a| self.geometry.size[a] + before[a] + after[a]);
        let mut out = Volume::filled(g, value);
        let s = self.geometry.size;
        out.data
            .slice_mut(ndarray::s![
                before[0]..before[0] + s[0],
                before[1]..before[1] + s[1],
                before[2]..before[2] + s[2]
            ])
            .assign(&self.data);
        out
    }
}

impl<T> Volume<T> {
    /// The grid.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Replaces the geometry (same size required).
    pub fn set_geometry(&mut self, geometry: Geometry) -> Result<(), Error> {
        if geometry.size != self.geometry.size {
            return Err(Error::Geometry(format!(
                "new grid size {:?} differs from {:?}",
                geometry.size, self.geometry.size
            )));
        }
        self.geometry = geometry;
        Ok(())
    }

    /// Voxels as `[i, j, k]`.
    pub fn data(&self) -> &Array3<T> {
        &self.data
    }

    /// Mutable voxels. The layout must stay Fortran order, so only element
    /// writes are possible through this view.
    pub fn data_mut(&mut self) -> ndarray::ArrayViewMut3<'_, T> {
        self.data.view_mut()
    }

    /// Voxels in memory order: `index = i + nx·(j + ny·k)`.
    pub fn as_slice(&self) -> &[T] {
        // Invariant: data are Fortran-contiguous (checked in every constructor).
        self.data.as_slice_memory_order().unwrap_or(&[])
    }

    /// Mutable voxels in memory order.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data.as_slice_memory_order_mut().unwrap_or(&mut [])
    }

    /// Takes the voxels out (memory order, `i` fastest).
    pub fn into_vec(self) -> Vec<T> {
        let (v, _) = self.data.into_raw_vec_and_offset();
        v
    }

    /// Consumes the volume into its parts.
    pub fn into_parts(self) -> (Geometry, Array3<T>) {
        (self.geometry, self.data)
    }

    /// Linear memory index of `[i, j, k]`.
    pub fn linear_index(&self, ijk: [usize; 3]) -> usize {
        let s = self.geometry.size;
        ijk[0] + s[0] * (ijk[1] + s[1] * ijk[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(size: [usize; 3]) -> Geometry {
        Geometry::new(
            size,
            [1.0, 2.0, 3.0],
            [10.0, 20.0, 30.0],
            Geometry::IDENTITY,
        )
        .unwrap()
    }

    #[test]
    fn layout_is_i_fastest_whatever_the_input_order() {
        let c_order = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| i + 10 * j + 100 * k);
        let v = Volume::new(grid([2, 3, 4]), c_order).unwrap();
        assert_eq!(&v.as_slice()[..4], &[0, 1, 10, 11]);
        assert_eq!(v.as_slice()[v.linear_index([1, 2, 3])], 321);
    }

    #[test]
    fn crop_and_pad_keep_patient_positions() {
        let v = Volume::from_vec(grid([4, 4, 4]), (0..64).collect()).unwrap();
        let c = v.crop([1, 2, 3], [3, 4, 4]).unwrap();
        assert_eq!(c.geometry().size, [2, 2, 1]);
        assert_eq!(c.geometry().origin, [11.0, 24.0, 39.0]);
        assert_eq!(c.data()[[0, 0, 0]], v.data()[[1, 2, 3]]);
        let p = v.pad([1, 0, 2], [0, 3, 0], -1);
        assert_eq!(p.geometry().size, [5, 7, 6]);
        assert_eq!(p.geometry().origin, [9.0, 20.0, 24.0]);
        assert_eq!(p.data()[[1, 0, 2]], v.data()[[0, 0, 0]]);
        assert_eq!(p.data()[[0, 0, 0]], -1);
        assert!(v.crop([0, 0, 0], [5, 1, 1]).is_err());
    }
}
