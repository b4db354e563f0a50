//! Binary-mask tools for the obstacle layers: boxes to crop to, 3-D connected components,
//! per-slice hole filling and convex hulls, and ball morphology through the exact distance
//! transform (`squared_distance_mm2`). Masks are flags per voxel, x fastest, then y, then z.

use super::squared_distance_mm2;

/// A box of voxels [lo, hi) per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoxelBox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl VoxelBox {
    pub fn dims(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.hi[a] - self.lo[a])
    }

    /// The box grown by `margin` voxels per axis, clipped to the grid.
    pub fn grown(&self, margin: [usize; 3], dims: [usize; 3]) -> VoxelBox {
        VoxelBox {
            lo: [0, 1, 2].map(|a| self.lo[a].saturating_sub(margin[a])),
            hi: [0, 1, 2].map(|a| (self.hi[a] + margin[a]).min(dims[a])),
        }
    }
}

/// The smallest box holding every set voxel, None for an empty mask.
pub fn bounding_box(mask: &[bool], dims: [usize; 3]) -> Option<VoxelBox> {
    let [nx, ny, _] = dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for (v, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let idx = [v % nx, (v / nx) % ny, v / (nx * ny)];
        for a in 0..3 {
            lo[a] = lo[a].min(idx[a]);
            hi[a] = hi[a].max(idx[a] + 1);
        }
    }
    (lo[0] != usize::MAX).then_some(VoxelBox { lo, hi })
}

/// The values inside `b` as a volume of its own (x fastest).
pub fn crop<T: Copy>(data: &[T], dims: [usize; 3], b: &VoxelBox) -> Vec<T> {
    let [cx, cy, cz] = b.dims();
    let mut out = Vec::with_capacity(cx * cy * cz);
    for k in b.lo[2]..b.hi[2] {
        for j in b.lo[1]..b.hi[1] {
            let start = (k * dims[1] + j) * dims[0];
            out.extend_from_slice(&data[start + b.lo[0]..start + b.hi[0]]);
        }
    }
    out
}

/// Writes a cropped volume back into the full grid; voxels outside the box get `fill`.
pub fn uncrop<T: Copy>(cropped: &[T], dims: [usize; 3], b: &VoxelBox, fill: T) -> Vec<T> {
    let mut out = vec![fill; dims[0] * dims[1] * dims[2]];
    let cx = b.dims()[0];
    let mut rows = cropped.chunks_exact(cx);
    for k in b.lo[2]..b.hi[2] {
        for j in b.lo[1]..b.hi[1] {
            let start = (k * dims[1] + j) * dims[0];
            if let Some(row) = rows.next() {
                out[start + b.lo[0]..start + b.hi[0]].copy_from_slice(row);
            }
        }
    }
    out
}

/// The up to six face neighbours of voxel `v` (x fastest) inside the grid.
pub fn face_neighbours(v: usize, dims: [usize; 3]) -> [Option<usize>; 6] {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    let (i, j, k) = (v % nx, (v / nx) % ny, v / plane);
    [
        (i > 0).then(|| v - 1),
        (i + 1 < nx).then(|| v + 1),
        (j > 0).then(|| v - nx),
        (j + 1 < ny).then(|| v + nx),
        (k > 0).then(|| v - plane),
        (k + 1 < nz).then(|| v + plane),
    ]
}

/// 6-connected components of `mask`: a label per voxel (0: not in the mask, else 1..) and the
/// voxel count of each label (index 0 unused).
pub fn label_components(mask: &[bool], dims: [usize; 3]) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = vec![0usize];
    let mut stack = Vec::new();
    for seed in 0..mask.len() {
        if !mask[seed] || labels[seed] != 0 {
            continue;
        }
        let label = sizes.len() as u32;
        let mut size = 0;
        labels[seed] = label;
        stack.push(seed);
        while let Some(v) = stack.pop() {
            size += 1;
            for w in face_neighbours(v, dims).into_iter().flatten() {
                if mask[w] && labels[w] == 0 {
                    labels[w] = label;
                    stack.push(w);
                }
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// Flood fill within one axial slice (4-connected) from `seeds` through voxels where
/// `passable` holds; returns the reached flags of the slice.
pub fn flood_slice(passable: &[bool], nx: usize, ny: usize, seeds: impl IntoIterator<Item = usize>) -> Vec<bool> {
    let mut reached = vec![false; nx * ny];
    let mut stack: Vec<usize> = seeds.into_iter().filter(|&p| passable[p]).collect();
    for &p in &stack {
        reached[p] = true;
    }
    while let Some(p) = stack.pop() {
        let (i, j) = (p % nx, p / nx);
        let mut visit = |q: usize| {
            if passable[q] && !reached[q] {
                reached[q] = true;
                stack.push(q);
            }
        };
        if i > 0 {
            visit(p - 1);
        }
        if i + 1 < nx {
            visit(p + 1);
        }
        if j > 0 {
            visit(p - nx);
        }
        if j + 1 < ny {
            visit(p + nx);
        }
    }
    reached
}

/// The border pixels of an nx × ny slice.
pub fn slice_border(nx: usize, ny: usize) -> impl Iterator<Item = usize> {
    (0..nx).flat_map(move |i| [i, (ny - 1) * nx + i]).chain((0..ny).flat_map(move |j| [j * nx, j * nx + nx - 1]))
}

/// Per axial slice, the mask with its holes (background not connected to the slice border)
/// filled.
pub fn fill_holes_per_slice(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, _] = dims;
    let mut out = mask.to_vec();
    for (slice, filled) in mask.chunks_exact(nx * ny).zip(out.chunks_exact_mut(nx * ny)) {
        if !slice.iter().any(|m| *m) {
            continue;
        }
        let background: Vec<bool> = slice.iter().map(|m| !m).collect();
        let open = flood_slice(&background, nx, ny, slice_border(nx, ny));
        for (f, o) in filled.iter_mut().zip(&open) {
            *f = !o;
        }
    }
    out
}

/// Pixels (of an nx × ny slice) whose centres lie in the convex hull of the set pixels' centres.
pub fn convex_hull_slice(slice: &[bool], nx: usize, ny: usize) -> Vec<bool> {
    let mut points: Vec<(i64, i64)> =
        slice.iter().enumerate().filter(|(_, m)| **m).map(|(p, _)| ((p % nx) as i64, (p / nx) as i64)).collect();
    let mut out = vec![false; nx * ny];
    if points.is_empty() {
        return out;
    }
    let hull = convex_hull(&mut points);
    // Per row, the x range where the row crosses the hull (a convex polygon: one interval).
    let mut range = vec![(f64::INFINITY, f64::NEG_INFINITY); ny];
    let n = hull.len();
    for e in 0..n {
        let (a, b) = (hull[e], hull[(e + 1) % n]);
        let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
        for y in y0..=y1 {
            let x = if a.1 == b.1 {
                let r = &mut range[y as usize];
                r.0 = r.0.min(a.0.min(b.0) as f64);
                r.1 = r.1.max(a.0.max(b.0) as f64);
                continue;
            } else {
                a.0 as f64 + (b.0 - a.0) as f64 * (y - a.1) as f64 / (b.1 - a.1) as f64
            };
            let r = &mut range[y as usize];
            r.0 = r.0.min(x);
            r.1 = r.1.max(x);
        }
    }
    for (y, (x0, x1)) in range.into_iter().enumerate() {
        if x0 > x1 {
            continue;
        }
        let lo = (x0 - 1e-9).ceil().max(0.0) as usize;
        let hi = ((x1 + 1e-9).floor() as usize).min(nx - 1);
        for x in lo..=hi {
            out[y * nx + x] = true;
        }
    }
    out
}

/// Andrew's monotone chain; collinear points dropped. One or two points come back as they are.
fn convex_hull(points: &mut [(i64, i64)]) -> Vec<(i64, i64)> {
    points.sort_unstable();
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(2 * points.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(i64, i64)>> =
            if pass == 0 { Box::new(points.iter()) } else { Box::new(points.iter().rev()) };
        for &p in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    if hull.is_empty() {
        hull.push(points[0]);
    }
    hull
}

/// Voxels within `radius_mm` of the mask (dilation by a ball).
pub fn dilate_mm(mask: &[bool], dims: [usize; 3], spacing_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let r2 = (radius_mm * radius_mm) as f32;
    squared_distance_mm2(mask, dims, spacing_mm).into_iter().map(|d| d <= r2).collect()
}

/// Voxels farther than `radius_mm` from every voxel outside the mask (erosion by a ball: the
/// ball of that radius centred there lies in the mask). The grid border is not background.
pub fn erode_mm(mask: &[bool], dims: [usize; 3], spacing_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let background: Vec<bool> = mask.iter().map(|m| !m).collect();
    let r2 = (radius_mm * radius_mm) as f32;
    squared_distance_mm2(&background, dims, spacing_mm).into_iter().map(|d| d > r2).collect()
}

/// Opening by a ball: the union of the balls of `radius_mm` that fit in the mask.
pub fn open_mm(mask: &[bool], dims: [usize; 3], spacing_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let centres = erode_mm(mask, dims, spacing_mm, radius_mm);
    let opened = dilate_mm(&centres, dims, spacing_mm, radius_mm);
    opened.into_iter().zip(mask).map(|(o, m)| o && *m).collect()
}

/// Closing by a ball: the mask plus what no ball of `radius_mm` outside it can reach.
pub fn close_mm(mask: &[bool], dims: [usize; 3], spacing_mm: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let dilated = dilate_mm(mask, dims, spacing_mm, radius_mm);
    let closed = erode_mm(&dilated, dims, spacing_mm, radius_mm);
    closed.into_iter().zip(mask).map(|(c, m)| c || *m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_hulls_and_holes_match_hand_counts() {
        // Two 2x2x2 cubes touching only at an edge are two 6-connected components.
        let dims = [5, 5, 3];
        let mut mask = vec![false; 75];
        for (i, j, k) in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1)] {
            mask[(k * 5 + j) * 5 + i] = true;
            mask[(k * 5 + j + 2) * 5 + i + 2] = true;
        }
        let (labels, sizes) = label_components(&mask, dims);
        assert_eq!(sizes, vec![0, 8, 8]);
        assert_ne!(labels[0], labels[(2 * 5) + 2]);
        // A ring's hole is filled; an open "C" is not.
        let mut ring = vec![false; 25];
        for p in [6, 7, 8, 11, 13, 16, 17, 18] {
            ring[p] = true;
        }
        assert!(fill_holes_per_slice(&ring, [5, 5, 1])[12]);
        ring[13] = false;
        assert!(!fill_holes_per_slice(&ring, [5, 5, 1])[12]);
        // The hull of three corners of a square is the triangle: 15 of the 25 pixel centres
        // (x + y <= 4 from corner (0,0), (4,0), (0,4)).
        let mut corners = vec![false; 25];
        corners[0] = true;
        corners[4] = true;
        corners[20] = true;
        let hull = convex_hull_slice(&corners, 5, 5);
        assert_eq!(hull.iter().filter(|h| **h).count(), 15);
        assert!(hull[12] && !hull[24]);
    }

    #[test]
    fn opening_keeps_a_ball_that_fits_and_drops_a_thin_rod() {
        let dims = [21, 21, 21];
        let mut mask = vec![false; 21 * 21 * 21];
        for k in 0..21usize {
            for j in 0..21usize {
                for i in 0..21usize {
                    let ball =
                        (i as f64 - 10.0).powi(2) + (j as f64 - 10.0).powi(2) + (k as f64 - 10.0).powi(2) <= 16.0;
                    let rod = j == 3 && k == 3;
                    mask[(k * 21 + j) * 21 + i] = ball || rod;
                }
            }
        }
        let opened = open_mm(&mask, dims, [1.0; 3], 2.0);
        assert!(opened[(10 * 21 + 10) * 21 + 10]);
        assert!((0..21).all(|i| !opened[(3 * 21 + 3) * 21 + i]));
        let closed = close_mm(&opened, dims, [1.0; 3], 1.0);
        assert!(closed.iter().zip(&opened).all(|(c, o)| *c || !*o));
    }
}
