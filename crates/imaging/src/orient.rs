//! Orientation codes and exact reorientation (axis permutation and flips,
//! no interpolation).
//!
//! Codes follow nibabel's `aff2axcodes`: the letter names where an axis
//! points *to* (`L`, `P`, `S` for the positive LPS directions, `R`, `A`, `I`
//! for the negative ones). [`CANONICAL`] is `RAS`, the order nibabel's
//! `as_closest_canonical` produces, so our output can be checked against it.

use crate::{Error, Geometry, Volume};

/// The canonical axis order of reoriented volumes (nibabel's closest canonical).
pub const CANONICAL: &str = "RAS";

const POSITIVE: [char; 3] = ['L', 'P', 'S'];
const NEGATIVE: [char; 3] = ['R', 'A', 'I'];

/// For each voxel axis, the LPS world axis it is closest to and its sign.
///
/// Axes are assigned greedily by the largest absolute cosine, so every world
/// axis is used exactly once even for oblique grids (nibabel's
/// `io_orientation` gives the same answer for rotations below 45°).
pub fn axis_assignment(direction: &[[f64; 3]; 3]) -> [(usize, f64); 3] {
    let mut out = [(usize::MAX, 1.0); 3];
    let mut used_world = [false; 3];
    for _ in 0..3 {
        let mut best = (0.0f64, 0usize, 0usize);
        for (c, slot) in out.iter().enumerate() {
            if slot.0 != usize::MAX {
                continue;
            }
            for (r, used) in used_world.iter().enumerate() {
                let v = direction[r][c].abs();
                if !used && v >= best.0 {
                    best = (v, r, c);
                }
            }
        }
        let (_, r, c) = best;
        used_world[r] = true;
        out[c] = (r, if direction[r][c] < 0.0 { -1.0 } else { 1.0 });
    }
    out
}

/// Orientation letters of the three voxel axes.
pub fn axis_codes(direction: &[[f64; 3]; 3]) -> [char; 3] {
    axis_assignment(direction).map(|(world, sign)| {
        if sign > 0.0 {
            POSITIVE[world]
        } else {
            NEGATIVE[world]
        }
    })
}

/// Parses a code such as `"RAS"` or `"lps"` into (world axis, sign) per voxel axis.
pub fn parse_code(code: &str) -> Result<[(usize, f64); 3], Error> {
    let chars: Vec<char> = code.trim().to_ascii_uppercase().chars().collect();
    let bad = || {
        Error::Geometry(format!(
            "invalid orientation code {code:?}: use three of L/R, P/A, S/I, e.g. RAS or LPS"
        ))
    };
    if chars.len() != 3 {
        return Err(bad());
    }
    let mut out = [(0usize, 1.0f64); 3];
    let mut seen = [false; 3];
    for (a, ch) in chars.iter().enumerate() {
        let (w, s) = if let Some(w) = POSITIVE.iter().position(|p| p == ch) {
            (w, 1.0)
        } else if let Some(w) = NEGATIVE.iter().position(|p| p == ch) {
            (w, -1.0)
        } else {
            return Err(bad());
        };
        if seen[w] {
            return Err(bad());
        }
        seen[w] = true;
        out[a] = (w, s);
    }
    Ok(out)
}

impl<T: Clone> Volume<T> {
    /// Permutes and flips axes so that the orientation code becomes `code`
    /// (e.g. `"RAS"`). Exact: voxels are moved, not interpolated, and every
    /// voxel keeps its patient position.
    pub fn reorient(&self, code: &str) -> Result<Volume<T>, Error> {
        let target = parse_code(code)?;
        let current = axis_assignment(&self.geometry().direction);
        // perm[new_axis] = old_axis; flip[new_axis] when the sign changes.
        let mut perm = [0usize; 3];
        let mut flip = [false; 3];
        for (new_axis, &(world, sign)) in target.iter().enumerate() {
            let old_axis = current
                .iter()
                .position(|&(w, _)| w == world)
                .ok_or_else(|| {
                    Error::Geometry("direction matrix has no axis along a world axis".into())
                })?;
            perm[new_axis] = old_axis;
            flip[new_axis] = current[old_axis].1 != sign;
        }
        let g = self.geometry();
        let mut first = [0.0f64; 3]; // old index of the new voxel (0,0,0)
        for a in 0..3 {
            if flip[a] {
                first[perm[a]] = (g.size[perm[a]] - 1) as f64;
            }
        }
        let mut direction = [[0.0; 3]; 3];
        for a in 0..3 {
            let s = if flip[a] { -1.0 } else { 1.0 };
            for (r, row) in direction.iter_mut().enumerate() {
                row[a] = s * g.direction[r][perm[a]];
            }
        }
        let new_geometry = Geometry {
            size: perm.map(|p| g.size[p]),
            spacing: perm.map(|p| g.spacing[p]),
            origin: g.index_to_world(first),
            direction,
        };
        let mut view = self.data().view().permuted_axes(perm);
        for (a, &f) in flip.iter().enumerate() {
            if f {
                view.invert_axis(ndarray::Axis(a));
            }
        }
        Volume::new(new_geometry, view.to_owned())
    }

    /// Reorients to [`CANONICAL`] (`RAS`).
    pub fn to_canonical(&self) -> Result<Volume<T>, Error> {
        self.reorient(CANONICAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_common_acquisitions() {
        assert_eq!(axis_codes(&Geometry::IDENTITY), ['L', 'P', 'S']);
        // NIfTI RAS-stored volume: i → R, j → A, k → S.
        let ras = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(axis_codes(&ras), ['R', 'A', 'S']);
        // Sagittal DICOM: rows along P, columns along I, slices along L.
        let sag = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
        assert_eq!(axis_codes(&sag), ['P', 'I', 'L']);
        assert!(parse_code("RAX").is_err());
        assert!(parse_code("RRS").is_err());
    }

    #[test]
    fn reorient_moves_voxels_not_anatomy() {
        let sag = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
        let g = Geometry::new([3, 4, 5], [1.0, 2.0, 3.0], [7.0, -3.0, 2.0], sag).unwrap();
        let v = Volume::from_vec(g.clone(), (0..60).collect::<Vec<i32>>()).unwrap();
        let r = v.reorient("RAS").unwrap();
        assert_eq!(r.geometry().orientation_code(), "RAS");
        assert_eq!(r.geometry().size, [5, 3, 4]);
        // Every voxel value sits at the same patient position as before.
        for (idx, val) in r.data().indexed_iter() {
            let w = r
                .geometry()
                .index_to_world([idx.0 as f64, idx.1 as f64, idx.2 as f64]);
            let o = g.world_to_index(w).map(|x| x.round() as usize);
            assert_eq!(*val, v.data()[[o[0], o[1], o[2]]]);
        }
        let back = r.reorient("PIL").unwrap();
        assert_eq!(back, v);
    }
}
