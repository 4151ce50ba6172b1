//! Binary morphology on masks (`true`/non-zero = inside).
//!
//! Structuring elements are the 6- or 26-neighbourhood, applied
//! `iterations` times; outside the grid counts as background. The 26
//! case is a separable 3×3×3 box (three 1-D passes).

use rayon::prelude::*;

use crate::{label_components, Connectivity, Volume};

/// Fills the holes of a mask: background parts (6-connected) that touch no
/// face of the volume become inside.
pub fn fill_holes(mask: &Volume<u8>) -> Volume<u8> {
    let bg = label_components(mask, Connectivity::Six, |&v| v == 0, false);
    let s = mask.geometry().size;
    let open: Vec<bool> = std::iter::once(false)
        .chain(
            bg.stats
                .iter()
                .map(|c| (0..3).any(|a| c.bbox_min[a] == 0 || c.bbox_max[a] + 1 >= s[a])),
        )
        .collect();
    let mut out = mask.clone();
    for (v, &l) in out.as_mut_slice().iter_mut().zip(bg.labels.as_slice()) {
        if l > 0 && !open[l as usize] {
            *v = 1;
        }
    }
    out
}

fn pass_axis(src: &[bool], size: [usize; 3], axis: usize, dilate: bool) -> Vec<bool> {
    let [nx, ny, _] = size;
    let stride = [1, nx, nx * ny][axis];
    let n = size[axis];
    let mut out = vec![false; src.len()];
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slab)| {
            for (off, o) in slab.iter_mut().enumerate() {
                let idx = k * nx * ny + off;
                let pos = (idx / stride) % n;
                let mut v = src[idx];
                for (cond, nidx) in [
                    (pos > 0, idx.wrapping_sub(stride)),
                    (pos + 1 < n, idx + stride),
                ] {
                    let nv = cond && src[nidx];
                    v = if dilate { v || nv } else { v && nv };
                }
                *o = v;
            }
        });
    out
}

fn six_step(src: &[bool], size: [usize; 3], dilate: bool) -> Vec<bool> {
    let [nx, ny, nz] = size;
    let mut out = vec![false; src.len()];
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slab)| {
            for (off, o) in slab.iter_mut().enumerate() {
                let idx = k * nx * ny + off;
                let (i, j) = (off % nx, off / nx);
                let neighbours = [
                    (i > 0, idx.wrapping_sub(1)),
                    (i + 1 < nx, idx + 1),
                    (j > 0, idx.wrapping_sub(nx)),
                    (j + 1 < ny, idx + nx),
                    (k > 0, idx.wrapping_sub(nx * ny)),
                    (k + 1 < nz, idx + nx * ny),
                ];
                let mut v = src[idx];
                for (cond, nidx) in neighbours {
                    let nv = cond && src[nidx];
                    v = if dilate { v || nv } else { v && nv };
                }
                *o = v;
            }
        });
    out
}

fn apply(mask: &Volume<bool>, c: Connectivity, iterations: usize, dilate: bool) -> Volume<bool> {
    let size = mask.geometry().size;
    let mut cur = mask.as_slice().to_vec();
    for _ in 0..iterations {
        cur = match c {
            Connectivity::Six => six_step(&cur, size, dilate),
            Connectivity::TwentySix => {
                let a = pass_axis(&cur, size, 0, dilate);
                let b = pass_axis(&a, size, 1, dilate);
                pass_axis(&b, size, 2, dilate)
            }
        };
    }
    Volume::from_vec(mask.geometry().clone(), cur).unwrap_or_else(|_| unreachable!())
}

/// Binary dilation.
pub fn dilate(mask: &Volume<bool>, connectivity: Connectivity, iterations: usize) -> Volume<bool> {
    apply(mask, connectivity, iterations, true)
}

/// Binary erosion (voxels outside the grid count as background).
pub fn erode(mask: &Volume<bool>, connectivity: Connectivity, iterations: usize) -> Volume<bool> {
    apply(mask, connectivity, iterations, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    #[test]
    fn dilation_shapes_and_erosion_inverse() {
        let g = Geometry::new([7, 7, 7], [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
        let mut m = Volume::filled(g, false);
        m.data_mut()[[3, 3, 3]] = true;
        let count = |v: &Volume<bool>| v.as_slice().iter().filter(|&&x| x).count();
        let d6 = dilate(&m, Connectivity::Six, 1);
        let d26 = dilate(&m, Connectivity::TwentySix, 1);
        assert_eq!(count(&d6), 7);
        assert_eq!(count(&d26), 27);
        assert_eq!(count(&dilate(&m, Connectivity::Six, 2)), 25);
        assert_eq!(erode(&d26, Connectivity::TwentySix, 1), m);
        assert_eq!(count(&erode(&d6, Connectivity::Six, 1)), 1);
        // Touching the border: erosion treats outside as background.
        let full = m.map(|_| true);
        assert_eq!(count(&erode(&full, Connectivity::Six, 1)), 125);
    }
}
