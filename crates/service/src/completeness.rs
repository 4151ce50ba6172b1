//! Is a received series whole? A quiet period alone cannot tell: a sender
//! that pauses longer than it delivers the first slab, and a slab contoured
//! as if it were the head misses every lesion outside it. The geometry can
//! tell more: slices of one acquisition lie at regular positions along
//! their normal, so a gap is visible, and Images in Acquisition (when the
//! scanner writes it) gives the count. What the geometry cannot judge
//! (multi-frame instances, mixed orientations, repeated positions of
//! dynamic or multi-echo series) is left to `delineate segment`, which
//! refuses what is not one regular volume.

use crate::batches::InstanceGeometry;

/// A spacing this many times the typical one is a gap.
pub const GAP_FACTOR: f64 = 1.5;
/// Positions closer than this (mm) are the same slice position.
const SAME_MM: f64 = 1e-3;

/// What the geometry says.
#[derive(Debug, PartialEq)]
pub enum Completeness {
    Complete,
    /// Slices are missing; the reason names where or how many.
    Incomplete(String),
}

fn normal(o: &[f64; 6]) -> [f64; 3] {
    [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ]
}

/// Checks a series' instances.
pub fn check(instances: &[InstanceGeometry]) -> Completeness {
    if instances.is_empty() {
        return Completeness::Incomplete("no instances".into());
    }
    if instances.iter().any(|g| g.frames > 1) {
        return Completeness::Complete;
    }
    let n = instances.len() as i64;
    let expected: Vec<i64> = instances
        .iter()
        .filter_map(|g| g.images_in_acquisition)
        .filter(|&e| e > 0)
        .collect();
    if let Some(&e) = expected.first() {
        if expected.iter().all(|&x| x == e) && n < e {
            return Completeness::Incomplete(format!("{n} of {e} images (Images in Acquisition)"));
        }
    }
    let Some(o) = instances[0].orientation else {
        return Completeness::Complete;
    };
    let same_orientation = instances.iter().all(|g| {
        g.orientation
            .is_some_and(|x| x.iter().zip(&o).all(|(a, b)| (a - b).abs() < 1e-4))
    });
    if !same_orientation || instances.iter().any(|g| g.position.is_none()) {
        return Completeness::Complete;
    }
    let nrm = normal(&o);
    let mut d: Vec<f64> = instances
        .iter()
        .filter_map(|g| g.position)
        .map(|p| p[0] * nrm[0] + p[1] * nrm[1] + p[2] * nrm[2])
        .collect();
    d.sort_by(f64::total_cmp);
    let steps: Vec<f64> = d.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.iter().any(|&s| s < SAME_MM) || steps.is_empty() {
        return Completeness::Complete;
    }
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let typical = sorted[sorted.len() / 2];
    if let Some(i) = steps.iter().position(|&s| s > GAP_FACTOR * typical) {
        let missing = (steps[i] / typical).round() as i64 - 1;
        return Completeness::Incomplete(format!(
            "about {missing} slice(s) missing between {:.2} and {:.2} mm along the slice normal (spacing {typical:.2} mm)",
            d[i],
            d[i + 1]
        ));
    }
    Completeness::Complete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial(z: &[f64], expected: Option<i64>) -> Vec<InstanceGeometry> {
        z.iter()
            .map(|&z| InstanceGeometry {
                position: Some([-100.0, -120.0, z]),
                orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                frames: 1,
                images_in_acquisition: expected,
            })
            .collect()
    }

    #[test]
    fn gaps_and_counts_are_incomplete() {
        let z: Vec<f64> = (0..40).map(|k| k as f64 * 1.5).collect();
        assert_eq!(check(&axial(&z, None)), Completeness::Complete);
        assert_eq!(check(&axial(&z, Some(40))), Completeness::Complete);
        // The first half of a series that says it has 40 images.
        match check(&axial(&z[..20], Some(40))) {
            Completeness::Incomplete(m) => assert!(m.contains("20 of 40"), "{m}"),
            c => panic!("{c:?}"),
        }
        // Slices 10..20 missing, order of arrival shuffled.
        let mut gap: Vec<f64> = z[..10].iter().chain(&z[20..]).copied().collect();
        gap.reverse();
        match check(&axial(&gap, None)) {
            Completeness::Incomplete(m) => {
                assert!(
                    m.contains("about 10 slice(s) missing between 13.50 and 30.00"),
                    "{m}"
                )
            }
            c => panic!("{c:?}"),
        }
        // Sagittal slices: the normal is x.
        let sag: Vec<InstanceGeometry> = [0.0, 1.0, 2.0, 5.0]
            .iter()
            .map(|&x| InstanceGeometry {
                position: Some([x, 0.0, 0.0]),
                orientation: Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]),
                frames: 1,
                images_in_acquisition: None,
            })
            .collect();
        assert!(matches!(check(&sag), Completeness::Incomplete(_)));
    }

    #[test]
    fn what_geometry_cannot_judge_is_left_to_segment() {
        // Repeated positions (a dynamic series), a multi-frame instance.
        assert_eq!(
            check(&axial(&[0.0, 0.0, 1.0, 1.0, 5.0, 5.0], None)),
            Completeness::Complete
        );
        let mut mf = axial(&[0.0], None);
        mf[0].frames = 120;
        assert_eq!(check(&mf), Completeness::Complete);
        assert!(matches!(check(&[]), Completeness::Incomplete(_)));
    }
}
