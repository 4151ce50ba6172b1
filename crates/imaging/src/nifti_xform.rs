//! NIfTI-1 qform quaternion maths, transcribed from the reference
//! implementation `nifti1_io.c` (`nifti_quatern_to_mat44`,
//! `nifti_mat44_to_quatern`).
//!
//! Written here rather than using `nifti::NiftiHeader::qform_affine` because
//! that function panics on a negative pixdim or an invalid qfac, and both
//! come straight from untrusted files. All matrices here are in RAS.

use nalgebra::{Matrix3, Vector3};

/// A qform: quaternion (b, c, d), offsets, voxel sizes and qfac.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quatern {
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub offset: [f64; 3],
    /// pixdim[1..=3]
    pub pixdim: [f64; 3],
    /// pixdim[0]: ±1
    pub qfac: f64,
}

/// qform → (3×3 RAS matrix including voxel sizes, offset), following
/// `nifti_quatern_to_mat44`: non-positive voxel sizes become 1 and any qfac
/// other than negative counts as +1 (callers warn about both).
pub fn quatern_to_matrix(q: &Quatern) -> (Matrix3<f64>, Vector3<f64>) {
    let (mut b, mut c, mut d) = (q.b, q.c, q.d);
    let mut a = 1.0 - (b * b + c * c + d * d);
    if a < 1e-7 {
        let n = (b * b + c * c + d * d).sqrt();
        if n > 0.0 {
            a = 1.0 / n;
            b *= a;
            c *= a;
            d *= a;
        }
        a = 0.0;
    } else {
        a = a.sqrt();
    }
    let size = q
        .pixdim
        .map(|v| if v > 0.0 && v.is_finite() { v } else { 1.0 });
    let zs = if q.qfac < 0.0 { -size[2] } else { size[2] };
    let r = Matrix3::new(
        a * a + b * b - c * c - d * d,
        2.0 * (b * c - a * d),
        2.0 * (b * d + a * c),
        2.0 * (b * c + a * d),
        a * a + c * c - b * b - d * d,
        2.0 * (c * d - a * b),
        2.0 * (b * d - a * c),
        2.0 * (c * d + a * b),
        a * a + d * d - c * c - b * b,
    );
    let scale = Matrix3::from_diagonal(&Vector3::new(size[0], size[1], zs));
    (r * scale, Vector3::from(q.offset))
}

/// Orthonormal 3×3 RAS direction (columns), voxel sizes and offset → qform,
/// following `nifti_mat44_to_quatern`. An improper rotation (det < 0) is
/// stored with qfac = −1 and the third column negated.
pub fn matrix_to_quatern(dir: &Matrix3<f64>, spacing: [f64; 3], offset: [f64; 3]) -> Quatern {
    let mut r = *dir;
    let qfac = if r.determinant() > 0.0 {
        1.0
    } else {
        let mut col = r.column_mut(2);
        col.neg_mut();
        -1.0
    };
    let (r11, r12, r13) = (r[(0, 0)], r[(0, 1)], r[(0, 2)]);
    let (r21, r22, r23) = (r[(1, 0)], r[(1, 1)], r[(1, 2)]);
    let (r31, r32, r33) = (r[(2, 0)], r[(2, 1)], r[(2, 2)]);
    let trace = r11 + r22 + r33 + 1.0;
    let (mut a, mut b, mut c, mut d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
            a = -a;
        }
    }
    let _ = a;
    Quatern {
        b,
        c,
        d,
        offset,
        pixdim: spacing,
        qfac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_round_trip(dir: Matrix3<f64>) {
        let q = matrix_to_quatern(&dir, [0.9, 1.1, 2.0], [1.0, 2.0, 3.0]);
        let (m, o) = quatern_to_matrix(&q);
        let expect = dir * Matrix3::from_diagonal(&Vector3::new(0.9, 1.1, 2.0));
        assert!((m - expect).abs().max() < 1e-12, "{m} vs {expect}");
        assert_eq!(o, Vector3::new(1.0, 2.0, 3.0));
    }

    #[test]
    fn rotations_and_reflections_round_trip() {
        check_round_trip(Matrix3::identity());
        check_round_trip(Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0)));
        check_round_trip(Matrix3::from_diagonal(&Vector3::new(-1.0, -1.0, 1.0)));
        // 180° about z (trace branch), sagittal, and an oblique rotation.
        check_round_trip(Matrix3::new(0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0));
        let rot = nalgebra::Rotation3::from_euler_angles(0.3, -0.2, 2.9);
        check_round_trip(*rot.matrix());
        check_round_trip(rot.matrix() * Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, 1.0)));
    }
}
