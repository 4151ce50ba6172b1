//! Planar contours of a binary slice, on voxel edges, and their even-odd
//! rasterisation at voxel centres.
//!
//! **Tracing.** The boundary of a mask is the set of unit pixel edges
//! between an inside and an outside pixel. Each edge is directed with the
//! inside on its left (counter-clockwise around regions, clockwise around
//! holes, in index space); the directed edges are linked into closed loops.
//! At a vertex where two inside pixels touch only diagonally, the loop turns
//! so as to keep the inside on its left, which keeps the pixels 4-connected
//! apart: loops touch at such vertices but never cross. Vertices where the
//! direction does not change are dropped (no collinear points).
//!
//! **Convention (holes).** Every loop is written as its own CLOSED_PLANAR
//! contour. A pixel belongs to the ROI when its centre lies inside an odd
//! number of that slice's contours (the even-odd / XOR rule planning systems
//! apply): a lesion's outline plus the outline of its necrotic core gives a
//! ring; an island inside the core gives the island back.
//!
//! **Exactness.** Loop vertices sit at half-integer indices (voxel corners),
//! never at a voxel centre, so the centre-inside rule has no ties and
//! rasterising the loops gives back exactly the traced mask.

/// A closed polygon in continuous (i, j) index coordinates; the last vertex
/// joins the first.
pub type Polygon = Vec<[f64; 2]>;

/// Directions of travel along pixel edges: +i, +j, −i, −j.
const STEP: [(i64, i64); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];

/// Traces the boundary loops of `mask` (`nx × ny`, i fastest). Vertex
/// (u, v) is the corner at index (u − 0.5, v − 0.5).
pub fn trace(mask: &[bool], nx: usize, ny: usize) -> Vec<Polygon> {
    let inside = |i: i64, j: i64| {
        i >= 0
            && j >= 0
            && (i as usize) < nx
            && (j as usize) < ny
            && mask[j as usize * nx + i as usize]
    };
    // Outgoing boundary edges per corner vertex and direction.
    let w = nx + 1;
    let mut out = vec![[false; 4]; (nx + 1) * (ny + 1)];
    let mut count = 0usize; // boundary edges
    for j in 0..ny as i64 {
        for i in 0..nx as i64 {
            if !inside(i, j) {
                continue;
            }
            let (u, v) = (i as usize, j as usize);
            // Inside on the left of each directed edge (index space, j down
            // is irrelevant: "left" is the +90° turn of the direction).
            if !inside(i, j - 1) {
                out[v * w + u][0] = true; // bottom edge, +i
                count += 1;
            }
            if !inside(i + 1, j) {
                out[v * w + u + 1][1] = true; // right edge, +j
                count += 1;
            }
            if !inside(i, j + 1) {
                out[(v + 1) * w + u + 1][2] = true; // top edge, −i
                count += 1;
            }
            if !inside(i - 1, j) {
                out[(v + 1) * w + u][3] = true; // left edge, −j
                count += 1;
            }
        }
    }
    // Each incoming edge continues along exactly one outgoing edge (left
    // turn first, then straight, then right), so every loop is the orbit of
    // its first edge.
    let edges = out.clone();
    let mut loops = Vec::new();
    let mut remaining = count;
    let mut start = 0usize;
    while remaining > 0 {
        // First vertex (raster order) with an unused edge: deterministic output.
        while out[start].iter().all(|e| !e) {
            start += 1;
        }
        let d0 = out[start].iter().position(|&e| e).unwrap_or(0);
        let (u0, v0) = ((start % w) as i64, (start / w) as i64);
        let (mut u, mut v, mut d) = (u0, v0, d0);
        let mut poly: Polygon = Vec::new();
        loop {
            out[v as usize * w + u as usize][d] = false;
            remaining -= 1;
            u += STEP[d].0;
            v += STEP[d].1;
            let here = &edges[v as usize * w + u as usize];
            let Some(nd) = [(d + 1) % 4, d, (d + 3) % 4].into_iter().find(|&c| here[c]) else {
                break; // cannot happen for a closed boundary
            };
            if nd != d {
                poly.push([u as f64 - 0.5, v as f64 - 0.5]);
            }
            if (u, v, nd) == (u0, v0, d0) {
                break;
            }
            d = nd;
        }
        loops.push(poly);
    }
    loops
}

/// Even-odd rasterisation of polygons (index coordinates) at the centres of
/// an `nx × ny` grid: a pixel is set when its centre is inside an odd
/// number of polygons. Polygons are XORed into `mask`.
pub fn rasterise_even_odd(polys: &[Polygon], nx: usize, ny: usize, mask: &mut [bool]) {
    let mut xs: Vec<f64> = Vec::new();
    for j in 0..ny {
        let y = j as f64;
        xs.clear();
        for poly in polys {
            let n = poly.len();
            for e in 0..n {
                let (a, b) = (poly[e], poly[(e + 1) % n]);
                // Half-open rule: an edge counts when y is in [min, max).
                let (lo, hi) = if a[1] < b[1] { (a, b) } else { (b, a) };
                if y >= lo[1] && y < hi[1] {
                    let t = (y - lo[1]) / (hi[1] - lo[1]);
                    xs.push(lo[0] + t * (hi[0] - lo[0]));
                }
            }
        }
        xs.sort_by(|a, b| a.total_cmp(b));
        for pair in xs.chunks_exact(2) {
            let first = pair[0].ceil().max(0.0);
            let last = pair[1].floor().min(nx as f64 - 1.0);
            let mut i = first;
            while i <= last {
                // Strictly inside: a centre exactly on an edge is outside.
                if i > pair[0] && i < pair[1] {
                    mask[j * nx + i as usize] ^= true;
                }
                i += 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(mask: &[bool], nx: usize, ny: usize) -> Vec<Polygon> {
        let loops = trace(mask, nx, ny);
        let mut back = vec![false; nx * ny];
        rasterise_even_odd(&loops, nx, ny, &mut back);
        assert_eq!(back, mask, "loops {loops:?}");
        loops
    }

    fn from_rows(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let ny = rows.len();
        let nx = rows[0].len();
        let mut m = vec![false; nx * ny];
        for (j, r) in rows.iter().enumerate() {
            for (i, c) in r.chars().enumerate() {
                m[j * nx + i] = c == '#';
            }
        }
        (m, nx, ny)
    }

    #[test]
    fn single_voxel_is_a_square_on_its_edges() {
        let (m, nx, ny) = from_rows(&["...", ".#.", "..."]);
        let loops = round_trip(&m, nx, ny);
        assert_eq!(loops.len(), 1);
        let mut pts = loops[0].clone();
        pts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(pts, vec![[0.5, 0.5], [0.5, 1.5], [1.5, 0.5], [1.5, 1.5]]);
    }

    #[test]
    fn ring_diagonals_border_and_no_collinear_points() {
        let (m, nx, ny) = from_rows(&["#####...", "#...#.#.", "#.#.#..#", "#...#.#.", "#####..."]);
        let loops = round_trip(&m, nx, ny);
        // Outer ring boundary, its hole, the island, and the diagonal pixels.
        assert!(loops.len() >= 6, "{}", loops.len());
        for l in &loops {
            let n = l.len();
            for k in 0..n {
                let (a, b, c) = (l[(k + n - 1) % n], l[k], l[(k + 1) % n]);
                let cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]);
                assert!(cross != 0.0, "collinear point {b:?} in {l:?}");
            }
        }
    }

    #[test]
    fn random_masks_round_trip_exactly() {
        let mut s = 12345u64;
        for trial in 0..200 {
            let (nx, ny) = (1 + trial % 13, 1 + (trial * 7) % 11);
            let density = 20 + (trial % 5) * 15;
            let m: Vec<bool> = (0..nx * ny)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 33) % 100) < density as u64
                })
                .collect();
            round_trip(&m, nx, ny);
        }
    }
}
