//! Geometry preparation around the network: the canonical grid the network sees (axis-aligned
//! LPS at the model spacing, covering the input whatever its orientation), the body's bounding
//! box (the network need not look at air), and crops in and out of that box.

use nalgebra::Point3;
use needle_nav_core::volume::{Geometry, Volume};

/// HU above which a voxel counts as body for cropping (air is about -1000, lung -900..-500).
pub const BODY_HU: f32 = -500.0;

/// An axis-aligned LPS grid at `spacing_mm` covering every voxel centre of `g`.
pub fn canonical_grid(g: &Geometry, spacing_mm: [f64; 3]) -> Geometry {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for &ci in &[0.0, (g.dims[0] as f64 - 1.0).max(0.0)] {
        for &cj in &[0.0, (g.dims[1] as f64 - 1.0).max(0.0)] {
            for &ck in &[0.0, (g.dims[2] as f64 - 1.0).max(0.0)] {
                let p = g.index_to_patient([ci, cj, ck]);
                for a in 0..3 {
                    lo[a] = lo[a].min(p[a]);
                    hi[a] = hi[a].max(p[a]);
                }
            }
        }
    }
    // Round the extent to whole voxels (1e-6 absorbs float noise in exact multiples).
    let dims = [0, 1, 2].map(|a| (((hi[a] - lo[a]) / spacing_mm[a]) + 1e-6).floor() as usize + 1);
    Geometry::axial(dims, spacing_mm, lo)
}

/// Inclusive-exclusive voxel box [lo, hi) per axis.
pub type IndexBox = [(usize, usize); 3];

/// Bounding box of voxels above `threshold_hu`, grown by `margin` voxels and clamped; None when
/// no voxel qualifies. Isolated bright specks (a table edge, noise) count as well: the box
/// only limits work, it never removes anything the network would see in context.
pub fn bounding_box_above(vol: &Volume<f32>, threshold_hu: f32, margin: usize) -> Option<IndexBox> {
    let [nx, ny, nz] = vol.geometry.dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for k in 0..nz {
        for j in 0..ny {
            let row = &vol.data[(k * ny + j) * nx..(k * ny + j + 1) * nx];
            let first = row.iter().position(|v| *v > threshold_hu);
            let Some(first) = first else { continue };
            let last = row.iter().rposition(|v| *v > threshold_hu).unwrap_or(first);
            lo = [lo[0].min(first), lo[1].min(j), lo[2].min(k)];
            hi = [hi[0].max(last + 1), hi[1].max(j + 1), hi[2].max(k + 1)];
        }
    }
    if lo[0] == usize::MAX {
        return None;
    }
    let dims = vol.geometry.dims;
    Some([0, 1, 2].map(|a| (lo[a].saturating_sub(margin), (hi[a] + margin).min(dims[a]))))
}

/// The part of `vol` inside `b`, with its geometry moved accordingly.
pub fn crop<T: Copy>(vol: &Volume<T>, b: &IndexBox) -> Volume<T> {
    let g = &vol.geometry;
    let dims = [b[0].1 - b[0].0, b[1].1 - b[1].0, b[2].1 - b[2].0];
    let origin = g.index_to_patient([b[0].0 as f64, b[1].0 as f64, b[2].0 as f64]);
    let geometry = Geometry { dims, origin_mm: [origin.x, origin.y, origin.z], ..g.clone() };
    let mut data = Vec::with_capacity(geometry.voxel_count());
    for k in b[2].0..b[2].1 {
        for j in b[1].0..b[1].1 {
            let start = g.offset(b[0].0, j, k);
            data.extend_from_slice(&vol.data[start..start + dims[0]]);
        }
    }
    Volume { geometry, data }
}

/// Writes `part` (cropped with `b`) back into `whole`.
pub fn paste<T: Copy>(whole: &mut Volume<T>, part: &Volume<T>, b: &IndexBox) {
    let nx = part.geometry.dims[0];
    for (kk, k) in (b[2].0..b[2].1).enumerate() {
        for (jj, j) in (b[1].0..b[1].1).enumerate() {
            let dst = whole.geometry.offset(b[0].0, j, k);
            let src = part.geometry.offset(0, jj, kk);
            whole.data[dst..dst + nx].copy_from_slice(&part.data[src..src + nx]);
        }
    }
}

/// Patient position of the centre of voxel `v` (linear index) of `g`.
pub fn voxel_centre(g: &Geometry, v: usize) -> Point3<f64> {
    let [nx, ny, _] = g.dims;
    g.index_to_patient([(v % nx) as f64, ((v / nx) % ny) as f64, (v / (nx * ny)) as f64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn canonical_grid_of_a_flipped_oblique_free_image_covers_the_same_box() {
        // LAS image (j runs anterior), as nibabel writes many NIfTI files.
        let g = Geometry {
            dims: [10, 20, 5],
            spacing_mm: [1.5, 1.5, 3.0],
            origin_mm: [-10.0, 50.0, 100.0],
            direction: [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let c = canonical_grid(&g, [1.5, 1.5, 3.0]);
        assert_eq!(c.dims, [10, 20, 5]);
        assert_relative_eq!(c.origin_mm[1], 50.0 - 19.0 * 1.5, epsilon = 1e-9);
        // Coarser spacing: the extent (28.5 mm in y) holds 10 whole 3 mm steps plus the start.
        let c = canonical_grid(&g, [3.0, 3.0, 3.0]);
        assert_eq!(c.dims, [5, 10, 5]);
    }

    #[test]
    fn crop_and_paste_are_inverse_and_keep_patient_positions() {
        let g = Geometry::axial([6, 5, 4], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]);
        let vol = Volume { data: (0..g.voxel_count()).map(|v| v as f32).collect(), geometry: g };
        let b = [(1, 4), (2, 5), (1, 3)];
        let part = crop(&vol, &b);
        assert_eq!(part.geometry.dims, [3, 3, 2]);
        assert_eq!(part.get(0, 0, 0), vol.get(1, 2, 1));
        assert_eq!(part.get(2, 2, 1), vol.get(3, 4, 2));
        assert_relative_eq!(part.geometry.index_to_patient([0.0; 3]), vol.geometry.index_to_patient([1.0, 2.0, 1.0]));
        let mut blank = Volume::filled(vol.geometry.clone(), -1.0f32);
        paste(&mut blank, &part, &b);
        assert_eq!(blank.get(3, 4, 2), vol.get(3, 4, 2));
        assert_eq!(blank.get(0, 0, 0), -1.0);
        assert_eq!(blank.data.iter().filter(|v| **v >= 0.0).count(), 18);
    }

    #[test]
    fn bounding_box_finds_the_body_with_margin_and_none_in_air() {
        let g = Geometry::axial([20, 20, 10], [1.0; 3], [0.0; 3]);
        let mut vol = Volume::filled(g, -1000.0f32);
        assert_eq!(bounding_box_above(&vol, BODY_HU, 2), None);
        let o = vol.geometry.offset(5, 7, 3);
        vol.data[o] = 40.0;
        let o = vol.geometry.offset(9, 8, 4);
        vol.data[o] = 40.0;
        assert_eq!(bounding_box_above(&vol, BODY_HU, 2), Some([(3, 12), (5, 11), (1, 7)]));
        assert_eq!(bounding_box_above(&vol, BODY_HU, 50), Some([(0, 20), (0, 20), (0, 10)]));
    }
}
