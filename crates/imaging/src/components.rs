//! 3-D connected components with 6- or 26-connectivity.
//!
//! Two raster passes with a union–find over provisional labels (the
//! classic Rosenfeld–Pfaltz scheme). Written here rather than taken from
//! `ndarray-ndimage::label` because every caller (loss weights, lesion
//! lists, evaluation) needs per-component sizes, bounding boxes and
//! centroids in the same pass, and an instance mode in which neighbours
//! join only when their values are equal. `examples/bench_components.rs`
//! compares the speed with `ndarray-ndimage` on a 256³ mask.
//!
//! Final labels are `1..=n` in raster order (i fastest) of each
//! component's first voxel, like `scipy.ndimage.label` on a Fortran array.

use crate::Volume;

/// Neighbourhood used to connect voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Connectivity {
    /// Faces only.
    Six,
    /// Faces, edges and corners (the paper's and its authors' default).
    TwentySix,
}

impl Connectivity {
    /// The already-visited half of the neighbourhood, as (di, dj, dk).
    fn backward_offsets(self) -> Vec<[isize; 3]> {
        let mut v = Vec::new();
        for dk in -1..=1isize {
            for dj in -1..=1isize {
                for di in -1..=1isize {
                    let backward = dk < 0 || (dk == 0 && (dj < 0 || (dj == 0 && di < 0)));
                    let manhattan = di.abs() + dj.abs() + dk.abs();
                    let ok = match self {
                        Connectivity::Six => manhattan == 1,
                        Connectivity::TwentySix => manhattan >= 1,
                    };
                    if backward && ok {
                        v.push([di, dj, dk]);
                    }
                }
            }
        }
        v
    }
}

/// One connected component.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Component {
    /// Label in [`Components::labels`] (1-based).
    pub label: u32,
    /// Number of voxels.
    pub voxels: usize,
    /// Inclusive lower corner of the bounding box (voxel indices).
    pub bbox_min: [usize; 3],
    /// Inclusive upper corner of the bounding box.
    pub bbox_max: [usize; 3],
    /// Mean voxel index.
    pub centroid: [f64; 3],
    /// Memory index of the first voxel in raster order.
    pub first_voxel: usize,
}

/// Labelled components of a volume.
#[derive(Clone, Debug)]
pub struct Components {
    /// 0 = background, `c` = voxel of component `stats[c - 1]`.
    pub labels: Volume<u32>,
    /// Per component, in label order.
    pub stats: Vec<Component>,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize]; // path halving
        x = p;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (find(parent, a), find(parent, b));
    // Keep the smaller label as root: it belongs to the earlier voxel, so
    // final labels follow raster order of first voxels.
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
    lo
}

/// Labels the voxels for which `foreground` holds. With `same_value`,
/// neighbours join only when their values are equal (instance maps).
pub fn label_components<T, F>(
    vol: &Volume<T>,
    connectivity: Connectivity,
    foreground: F,
    same_value: bool,
) -> Components
where
    T: PartialEq + Clone,
    F: Fn(&T) -> bool,
{
    let g = vol.geometry().clone();
    let [nx, ny, nz] = g.size;
    let data = vol.as_slice();
    let fg: Vec<bool> = data.iter().map(&foreground).collect();
    // Rows (fixed j, k) holding foreground: both passes skip the others,
    // which are most of a brain-sized mask with a few lesions.
    let rows: Vec<usize> = (0..ny * nz)
        .filter(|&r| fg[r * nx..(r + 1) * nx].contains(&true))
        .collect();
    let offsets: Vec<([isize; 3], isize)> = connectivity
        .backward_offsets()
        .into_iter()
        .map(|o| (o, o[0] + o[1] * nx as isize + o[2] * (nx * ny) as isize))
        .collect();
    let mut labels = vec![0u32; data.len()];
    let mut parent: Vec<u32> = vec![0]; // index 0 = background
    for &r in &rows {
        let (j, k) = (r % ny, r / ny);
        let row = nx * r;
        {
            for i in 0..nx {
                let idx = row + i;
                if !fg[idx] {
                    continue;
                }
                let mut current = 0u32;
                for &(o, delta) in &offsets {
                    let (ni, nj, nk) = (i as isize + o[0], j as isize + o[1], k as isize + o[2]);
                    if ni < 0 || nj < 0 || nk < 0 || ni >= nx as isize || nj >= ny as isize {
                        continue;
                    }
                    let nidx = (idx as isize + delta) as usize;
                    let l = labels[nidx];
                    if l == 0 || (same_value && data[nidx] != data[idx]) {
                        continue;
                    }
                    current = if current == 0 || current == l {
                        l
                    } else {
                        union(&mut parent, current, l)
                    };
                }
                if current == 0 {
                    current = parent.len() as u32;
                    parent.push(current);
                }
                labels[idx] = current;
            }
        }
    }
    // Resolve roots to consecutive labels and gather statistics.
    let mut final_of = vec![0u32; parent.len()];
    let mut stats: Vec<Component> = Vec::new();
    let mut sums: Vec<[f64; 3]> = Vec::new();
    for &r in &rows {
        let (j, k) = (r % ny, r / ny);
        let row = nx * r;
        {
            for i in 0..nx {
                let idx = row + i;
                let l = labels[idx];
                if l == 0 {
                    continue;
                }
                let root = find(&mut parent, l);
                let mut f = final_of[root as usize];
                if f == 0 {
                    stats.push(Component {
                        label: stats.len() as u32 + 1,
                        voxels: 0,
                        bbox_min: [i, j, k],
                        bbox_max: [i, j, k],
                        centroid: [0.0; 3],
                        first_voxel: idx,
                    });
                    sums.push([0.0; 3]);
                    f = stats.len() as u32;
                    final_of[root as usize] = f;
                }
                labels[idx] = f;
                let s = &mut stats[(f - 1) as usize];
                s.voxels += 1;
                for (a, v) in [i, j, k].into_iter().enumerate() {
                    s.bbox_min[a] = s.bbox_min[a].min(v);
                    s.bbox_max[a] = s.bbox_max[a].max(v);
                    sums[(f - 1) as usize][a] += v as f64;
                }
            }
        }
    }
    for (s, sum) in stats.iter_mut().zip(&sums) {
        s.centroid = sum.map(|x| x / s.voxels as f64);
    }
    let labels = Volume::from_vec(g, labels).unwrap_or_else(|_| unreachable!());
    Components { labels, stats }
}

/// Components of the non-zero voxels of a mask (binary or instance values
/// treated alike).
pub fn connected_components<T>(mask: &Volume<T>, connectivity: Connectivity) -> Components
where
    T: PartialEq + Clone + Default,
{
    let zero = T::default();
    label_components(mask, connectivity, |v| *v != zero, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    fn vol(size: [usize; 3], on: &[[usize; 3]]) -> Volume<u8> {
        let g = Geometry::new(size, [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
        let mut v = Volume::filled(g, 0u8);
        for p in on {
            v.data_mut()[*p] = 1;
        }
        v
    }

    #[test]
    fn diagonal_voxels_join_only_with_26() {
        let v = vol([4, 4, 4], &[[0, 0, 0], [1, 1, 1], [2, 2, 1], [3, 0, 3]]);
        let c6 = connected_components(&v, Connectivity::Six);
        let c26 = connected_components(&v, Connectivity::TwentySix);
        assert_eq!(c6.stats.len(), 4);
        assert_eq!(c26.stats.len(), 2);
        assert_eq!(c26.stats[0].voxels, 3);
        assert_eq!(c26.stats[0].bbox_min, [0, 0, 0]);
        assert_eq!(c26.stats[0].bbox_max, [2, 2, 1]);
        assert_eq!(c26.stats[1].centroid, [3.0, 0.0, 3.0]);
    }

    #[test]
    fn u_shape_merges_and_labels_follow_raster_order() {
        // A U in the i/j plane: two arms that meet only at j = 3.
        let mut on = vec![];
        for j in 0..4 {
            on.push([0, j, 0]);
            on.push([4, j, 0]);
        }
        on.extend([[1, 3, 0], [2, 3, 0], [3, 3, 0]]);
        on.push([2, 0, 0]); // separate dot, first seen between the arms
        let c = connected_components(&vol([5, 4, 1], &on), Connectivity::Six);
        assert_eq!(c.stats.len(), 2);
        assert_eq!(c.stats[0].voxels, 11);
        assert_eq!(c.labels.data()[[0, 0, 0]], 1);
        assert_eq!(c.labels.data()[[2, 0, 0]], 2);
        assert_eq!(c.labels.data()[[4, 0, 0]], 1);
    }

    #[test]
    fn instance_mode_separates_touching_labels() {
        let mut v = vol([4, 1, 1], &[[0, 0, 0], [1, 0, 0], [2, 0, 0]]);
        v.data_mut()[[2, 0, 0]] = 2;
        let merged = connected_components(&v, Connectivity::Six);
        let split = label_components(&v, Connectivity::Six, |&x| x != 0, true);
        assert_eq!(merged.stats.len(), 1);
        assert_eq!(split.stats.len(), 2);
    }
}
