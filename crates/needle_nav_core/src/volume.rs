//! A 3-D image on a regular grid in patient coordinates (LPS, mm).

use nalgebra::{Matrix3, Point3, Vector3};
use serde::{Deserialize, Serialize};

/// Voxel sizes outside this range [mm] are not a patient image (CT: 0.2-10 mm; 10 um to 100 mm
/// leaves room for any scanner while refusing header garbage such as 1e30 or 1e-30).
pub const VOXEL_SIZE_RANGE_MM: (f64, f64) = (0.01, 100.0);
/// Largest extent of a grid along an axis [mm]: a body is under 2.5 m.
pub const MAX_EXTENT_MM: f64 = 5_000.0;
/// Largest distance of the first voxel from the scanner origin along an axis [mm].
pub const MAX_ABS_ORIGIN_MM: f64 = 10_000.0;
/// The axis directions must be unit and perpendicular to within this (cosine), as the index
/// <-> patient mapping assumes (sheared grids, e.g. gantry tilt, are refused).
pub const DIRECTION_TOL: f64 = 1e-3;

/// Why a grid is not a physical image; `field` names the quantity (the file readers name
/// their header fields in their own errors).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct GeometryError {
    pub field: String,
    pub reason: String,
}

/// Grid geometry: voxel (i, j, k) (column, row, slice) is at
/// `origin + direction * diag(spacing) * (i, j, k)` in patient LPS millimetres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Number of columns, rows and slices.
    pub dims: [usize; 3],
    /// Voxel size along columns, rows and slices [mm].
    pub spacing_mm: [f64; 3],
    /// Centre of voxel (0, 0, 0) [mm, LPS].
    pub origin_mm: [f64; 3],
    /// Columns of this matrix: the patient directions of the i, j and k axes (unit vectors).
    pub direction: [[f64; 3]; 3],
}

impl Geometry {
    /// Axial slices with the standard orientation (i -> L, j -> P, k -> S).
    pub fn axial(dims: [usize; 3], spacing_mm: [f64; 3], origin_mm: [f64; 3]) -> Geometry {
        Geometry { dims, spacing_mm, origin_mm, direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] }
    }

    /// Axial grid of `dims` voxels centred on `centre_mm`.
    pub fn axial_centred(dims: [usize; 3], spacing_mm: [f64; 3], centre_mm: [f64; 3]) -> Geometry {
        let origin = [0, 1, 2].map(|a| centre_mm[a] - 0.5 * (dims[a] as f64 - 1.0) * spacing_mm[a]);
        Geometry::axial(dims, spacing_mm, origin)
    }

    /// Number of voxels; saturates instead of wrapping for grids no memory could hold.
    pub fn voxel_count(&self) -> usize {
        self.dims[0].saturating_mul(self.dims[1]).saturating_mul(self.dims[2])
    }

    /// Refuses grids that are not a physical image: no voxels, a voxel count that overflows,
    /// voxel sizes that are not finite or outside [`VOXEL_SIZE_RANGE_MM`], an extent beyond
    /// [`MAX_EXTENT_MM`], an origin that is not finite or beyond [`MAX_ABS_ORIGIN_MM`], axis
    /// directions that are not finite, unit and perpendicular ([`DIRECTION_TOL`]).
    pub fn validate(&self) -> Result<(), GeometryError> {
        let bad = |field: String, reason: String| Err(GeometryError { field, reason });
        if self.dims.contains(&0) {
            return bad("dims".into(), format!("{:?} has no voxels", self.dims));
        }
        let count = self.dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if count.map_or(true, |n| n > isize::MAX as usize / 8) {
            return bad("dims".into(), format!("{:?} is more voxels than any memory holds", self.dims));
        }
        let (lo, hi) = VOXEL_SIZE_RANGE_MM;
        for axis in 0..3 {
            let s = self.spacing_mm[axis];
            if !(s.is_finite() && (lo..=hi).contains(&s)) {
                return bad(
                    format!("voxel size along axis {axis}"),
                    format!("{s:e} mm is not a voxel size of a patient image ({lo}..{hi} mm)"),
                );
            }
            let extent = (self.dims[axis] as f64 - 1.0) * s;
            if extent > MAX_EXTENT_MM {
                return bad(
                    format!("extent along axis {axis}"),
                    format!("{} voxels of {s} mm span {:.0} mm, more than {MAX_EXTENT_MM} mm", self.dims[axis], extent),
                );
            }
            let o = self.origin_mm[axis];
            if !(o.is_finite() && o.abs() <= MAX_ABS_ORIGIN_MM) {
                return bad(
                    format!("origin along axis {axis}"),
                    format!("{o:e} mm is not finite or farther than {MAX_ABS_ORIGIN_MM} mm from the scanner origin"),
                );
            }
        }
        let d = self.direction_matrix();
        if !d.iter().all(|x| x.is_finite()) {
            return bad("direction".into(), format!("{:?} is not finite", self.direction));
        }
        let gram = d.transpose() * d;
        for a in 0..3 {
            for b in 0..3 {
                let expected = if a == b { 1.0 } else { 0.0 };
                if (gram[(a, b)] - expected).abs() > DIRECTION_TOL {
                    return bad(
                        "direction".into(),
                        format!(
                            "the axes {:?} are not unit and perpendicular (axes {a} and {b}: {:.4}); sheared grids \
                             (gantry tilt) and singular ones are not supported",
                            self.direction,
                            gram[(a, b)]
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The 3x3 matrix whose columns are the axis directions.
    pub fn direction_matrix(&self) -> Matrix3<f64> {
        let d = self.direction;
        Matrix3::from_columns(&[Vector3::from(d[0]), Vector3::from(d[1]), Vector3::from(d[2])])
    }

    /// Patient position of a (possibly fractional) voxel index.
    pub fn index_to_patient(&self, ijk: [f64; 3]) -> Point3<f64> {
        let scaled =
            Vector3::new(ijk[0] * self.spacing_mm[0], ijk[1] * self.spacing_mm[1], ijk[2] * self.spacing_mm[2]);
        Point3::from(self.origin_mm) + self.direction_matrix() * scaled
    }

    /// Fractional voxel index of a patient position.
    pub fn patient_to_index(&self, p: &Point3<f64>) -> [f64; 3] {
        let local = self.direction_matrix().transpose() * (p - Point3::from(self.origin_mm));
        [local.x / self.spacing_mm[0], local.y / self.spacing_mm[1], local.z / self.spacing_mm[2]]
    }

    /// Linear offset of voxel (i, j, k): i fastest, then j, then k.
    #[inline]
    pub fn offset(&self, i: usize, j: usize, k: usize) -> usize {
        (k * self.dims[1] + j) * self.dims[0] + i
    }

    /// Index range (inclusive start, exclusive end) of voxels whose centres may lie within
    /// `radius_mm` of `centre` along each axis (axial grids), clamped to the grid.
    pub fn index_box(&self, centre: &Point3<f64>, radius_mm: f64) -> Option<[(usize, usize); 3]> {
        let c = self.patient_to_index(centre);
        let mut out = [(0, 0); 3];
        for a in 0..3 {
            let r = radius_mm / self.spacing_mm[a];
            let lo = (c[a] - r).floor().max(0.0);
            let hi = (c[a] + r).ceil() + 1.0;
            let hi = hi.min(self.dims[a] as f64);
            if hi <= lo {
                return None;
            }
            out[a] = (lo as usize, hi as usize);
        }
        Some(out)
    }
}

/// Voxel values with their geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    pub geometry: Geometry,
    pub data: Vec<T>,
}

impl<T: Copy> Volume<T> {
    pub fn filled(geometry: Geometry, value: T) -> Volume<T> {
        let n = geometry.voxel_count();
        Volume { geometry, data: vec![value; n] }
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> T {
        self.data[self.geometry.offset(i, j, k)]
    }

    /// One axial slice (k), row-major (j rows of i columns).
    pub fn slice(&self, k: usize) -> &[T] {
        let n = self.geometry.dims[0] * self.geometry.dims[1];
        &self.data[k * n..(k + 1) * n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn index_and_patient_coordinates_are_inverse_and_centred() {
        let g = Geometry::axial_centred([10, 20, 5], [1.5, 0.5, 2.0], [1.0, -2.0, 30.0]);
        // The centre of the grid is the requested centre.
        assert_relative_eq!(g.index_to_patient([4.5, 9.5, 2.0]), Point3::new(1.0, -2.0, 30.0), epsilon = 1e-12);
        let p = Point3::new(3.3, -1.1, 27.5);
        let ijk = g.patient_to_index(&p);
        assert_relative_eq!(g.index_to_patient(ijk), p, epsilon = 1e-12);
        assert_eq!(g.offset(1, 2, 3), (3 * 20 + 2) * 10 + 1);
    }

    #[test]
    fn geometry_outside_physical_sense_is_refused_naming_the_quantity() {
        let good = Geometry::axial([512, 512, 300], [0.7, 0.7, 1.0], [-180.0, -180.0, -1200.0]);
        assert_eq!(good.validate(), Ok(()));
        let field = |g: Geometry| g.validate().unwrap_err().field;
        for (s, axis) in [(1e30, 0), (1e-30, 1), (0.0, 2), (-1.0, 0), (f64::NAN, 1), (f64::INFINITY, 2)] {
            let mut g = good.clone();
            g.spacing_mm[axis] = s;
            assert_eq!(field(g), format!("voxel size along axis {axis}"), "{s}");
        }
        let mut g = good.clone();
        g.spacing_mm[2] = 50.0; // 300 slices of 5 cm: 15 m
        assert_eq!(field(g), "extent along axis 2");
        let mut g = good.clone();
        g.origin_mm[1] = 1e12;
        assert_eq!(field(g), "origin along axis 1");
        let mut g = good.clone();
        g.direction[2] = [0.0, 0.3, 0.95]; // gantry tilt: not perpendicular
        assert_eq!(field(g), "direction");
        let mut g = good.clone();
        g.direction[0] = [0.0; 3];
        assert_eq!(field(g), "direction");
        let mut g = good.clone();
        g.dims = [usize::MAX / 2, 4, 4];
        assert_eq!(field(g.clone()), "dims");
        assert_eq!(g.voxel_count(), usize::MAX, "saturates, never wraps");
        g.dims = [0, 4, 4];
        assert_eq!(field(g), "dims");
    }

    #[test]
    fn index_box_covers_the_sphere_and_is_clamped() {
        let g = Geometry::axial([10, 10, 10], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
        let b = g.index_box(&Point3::new(5.0, 5.0, 5.0), 2.0).unwrap();
        assert_eq!(b, [(3, 8), (3, 8), (3, 8)]);
        let b = g.index_box(&Point3::new(0.0, 9.0, 5.0), 2.0).unwrap();
        assert_eq!(b[0], (0, 3));
        assert_eq!(b[1], (7, 10));
        assert!(g.index_box(&Point3::new(-20.0, 0.0, 0.0), 2.0).is_none());
    }
}
