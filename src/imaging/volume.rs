//! A 3-D image on a regular grid in patient coordinates (LPS, mm).

use nalgebra::{Matrix3, Point3, Vector3};
use serde::{Deserialize, Serialize};

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

    pub fn voxel_count(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
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
