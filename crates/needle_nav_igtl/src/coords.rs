//! Units and axes between needle_nav and OpenIGTLink peers, stated once.
//!
//! - Units: needle_nav is SI (metres); OpenIGTLink peers (PLUS, Slicer) use millimetres.
//! - Tracker frame: positions and the needle target are in the tracker's own frame on both sides;
//!   it has no patient axes, so only the unit changes.
//! - CT frame: needle_nav's `ct` frame is DICOM patient coordinates, LPS; Slicer's world is RAS.
//!   Every CT-frame value sent to Slicer (the registration's output side, the plan, the label map)
//!   goes through [`LPS_TO_RAS`]: x and y change sign, z stays.

use nalgebra::{Isometry3, Matrix3, Matrix4, Point3, Vector3};

pub const MM_PER_M: f64 = 1000.0;

/// diag(-1, -1, 1): LPS to RAS and back (its own inverse).
pub const LPS_TO_RAS: Matrix3<f64> = Matrix3::new(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0);

/// A point in millimetres (tracker frame) as metres.
pub fn mm_to_m(p: [f32; 3]) -> Point3<f64> {
    Point3::new(p[0] as f64, p[1] as f64, p[2] as f64) / MM_PER_M
}

/// A CT point (LPS, metres) as Slicer's RAS millimetres.
pub fn ct_m_to_ras_mm(p: &Point3<f64>) -> [f32; 3] {
    let r = LPS_TO_RAS * p.coords * MM_PER_M;
    [r.x as f32, r.y as f32, r.z as f32]
}

/// The translation of an OpenIGTLink matrix (rows of a 4x4, millimetres) in metres.
pub fn translation_m(matrix: &[[f32; 4]; 4]) -> Point3<f64> {
    mm_to_m([matrix[0][3], matrix[1][3], matrix[2][3]])
}

/// A homogeneous matrix (rows, millimetres) for OpenIGTLink.
pub fn to_rows(m: &Matrix4<f64>) -> [[f32; 4]; 4] {
    let mut out = [[0.0f32; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = m[(r, c)] as f32;
        }
    }
    out
}

/// The matrix Slicer's `TrackerToCT` transform takes: a tracker point (mm) to CT RAS (mm), from
/// needle_nav's registration `image_to_tracker` (CT LPS metres to tracker metres).
pub fn tracker_to_ct_ras_mm(image_to_tracker: &Isometry3<f64>) -> Matrix4<f64> {
    let tracker_to_ct = image_to_tracker.inverse();
    let r = LPS_TO_RAS * tracker_to_ct.rotation.to_rotation_matrix().matrix();
    let t = LPS_TO_RAS * tracker_to_ct.translation.vector * MM_PER_M;
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&r);
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&t);
    m
}

/// The needle as a pose in the tracker frame (mm): origin at the target, z axis the unit vector
/// from entry to target (the insertion direction), x and y completing a right-handed frame (x is
/// the tracker x axis made perpendicular to z, or the tracker y axis when z is nearly along x).
/// The entry point is the origin minus the insertion depth along z. None when entry and target
/// coincide or are not finite.
pub fn needle_to_tracker_mm(entry_m: &Point3<f64>, target_m: &Point3<f64>) -> Option<Matrix4<f64>> {
    let d = target_m - entry_m;
    let z = d.try_normalize(1e-9)?;
    if !(z.iter().all(|v| v.is_finite()) && target_m.iter().all(|v| v.is_finite())) {
        return None;
    }
    let helper = if z.x.abs() < 0.9 { Vector3::x() } else { Vector3::y() };
    let x = (helper - z * helper.dot(&z)).normalize();
    let y = z.cross(&x);
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 1>(0, 0).copy_from(&x);
    m.fixed_view_mut::<3, 1>(0, 1).copy_from(&y);
    m.fixed_view_mut::<3, 1>(0, 2).copy_from(&z);
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&(target_m.coords * MM_PER_M));
    Some(m)
}

/// A grid's voxel-to-RAS matrix in millimetres: columns i, j, k (direction times spacing) and
/// the centre of voxel (0, 0, 0), from its LPS geometry.
pub fn ijk_to_ras_mm(g: &needle_nav_core::volume::Geometry) -> Matrix4<f64> {
    let mut m = Matrix4::identity();
    for c in 0..3 {
        let axis = LPS_TO_RAS * Vector3::from(g.direction[c]) * g.spacing_mm[c];
        m.fixed_view_mut::<3, 1>(0, c).copy_from(&axis);
    }
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&(LPS_TO_RAS * Vector3::from(g.origin_mm)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use nalgebra::{Translation3, UnitQuaternion};

    #[test]
    fn tracker_to_ct_maps_a_tracker_point_onto_the_ras_of_its_ct_point() {
        let image_to_tracker =
            Isometry3::from_parts(Translation3::new(0.1, -0.2, 0.3), UnitQuaternion::from_euler_angles(0.1, -0.4, 0.7));
        let ct_lps_m = Point3::new(0.05, 0.12, -0.3);
        let tracker_m = image_to_tracker * ct_lps_m;
        let m = tracker_to_ct_ras_mm(&image_to_tracker);
        let got = m * (tracker_m.coords * MM_PER_M).push(1.0);
        // Closed form: RAS = (-x, -y, z) of LPS, in mm.
        assert_relative_eq!(got.x, -50.0, epsilon = 1e-9);
        assert_relative_eq!(got.y, -120.0, epsilon = 1e-9);
        assert_relative_eq!(got.z, -300.0, epsilon = 1e-9);
    }

    #[test]
    fn the_needle_pose_has_its_origin_at_the_target_and_z_towards_it() {
        let entry = Point3::new(0.0, 0.0, 0.1);
        let target = Point3::new(0.0, 0.0, 0.0);
        let m = needle_to_tracker_mm(&entry, &target).unwrap();
        assert_relative_eq!(m.fixed_view::<3, 1>(0, 2).into_owned(), Vector3::new(0.0, 0.0, -1.0));
        assert_relative_eq!(m.fixed_view::<3, 1>(0, 3).into_owned(), Vector3::zeros());
        let r = m.fixed_view::<3, 3>(0, 0).into_owned();
        assert_relative_eq!(r.determinant(), 1.0, epsilon = 1e-12);
        assert!(needle_to_tracker_mm(&entry, &entry).is_none());
    }

    #[test]
    fn an_lps_axial_grid_is_flipped_in_x_and_y() {
        let g = needle_nav_core::volume::Geometry::axial([2, 2, 2], [0.5, 0.7, 2.0], [-10.0, 20.0, 30.0]);
        let m = ijk_to_ras_mm(&g);
        assert_eq!(m[(0, 0)], -0.5);
        assert_eq!(m[(1, 1)], -0.7);
        assert_eq!(m[(2, 2)], 2.0);
        assert_eq!((m[(0, 3)], m[(1, 3)], m[(2, 3)]), (10.0, -20.0, 30.0));
    }
}
