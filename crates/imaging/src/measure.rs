//! Physical measures of voxel sets: volume and equivalent diameter (the
//! size used for lesion-size buckets in the paper's evaluation).

use crate::Geometry;

/// Volume of one voxel in mm³ (|det| of the index→world matrix, so sheared
/// grids are measured correctly).
pub fn voxel_volume_mm3(g: &Geometry) -> f64 {
    g.index_to_world_matrix().determinant().abs()
}

/// Diameter (mm) of the sphere with volume `volume_mm3`: (6V/π)^(1/3).
pub fn equivalent_diameter_mm(volume_mm3: f64) -> f64 {
    (6.0 * volume_mm3 / std::f64::consts::PI).cbrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sphere_of_ten_mm() {
        let v = std::f64::consts::PI / 6.0 * 1000.0;
        assert!((equivalent_diameter_mm(v) - 10.0).abs() < 1e-12);
        let g = Geometry::new([2, 2, 2], [0.5, 0.5, 2.0], [0.0; 3], Geometry::IDENTITY).unwrap();
        assert!((voxel_volume_mm3(&g) - 0.5).abs() < 1e-12);
    }
}
