//! Static anatomy of the digital patient as analytic shapes in CT patient coordinates
//! (LPS, mm; +x left, +y posterior, +z superior). z = 0 is near the carina; the field
//! covers the upper abdomen (z < -60) to the clavicles (z ~ 130).

use nalgebra::{Point3, Vector3};

/// Plain-CT Hounsfield units of the tissues (typical published values).
pub mod hu {
    pub const AIR: f32 = -1000.0;
    pub const LUNG: f32 = -850.0;
    pub const FAT: f32 = -100.0;
    pub const SOFT_TISSUE: f32 = 40.0;
    pub const MUSCLE: f32 = 50.0;
    pub const LIVER: f32 = 60.0;
    pub const BLOOD_PLAIN: f32 = 40.0;
    pub const CANCELLOUS_BONE: f32 = 300.0;
    pub const CORTICAL_BONE: f32 = 900.0;
    pub const LESION: f32 = 30.0;
    /// Radiopaque skin markers (metal or ceramic): far above bone.
    pub const MARKER: f32 = 3000.0;
}

/// An ellipsoid given by centre and semi-axes along x, y, z.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ellipsoid {
    pub centre: Point3<f64>,
    pub semi_axes: Vector3<f64>,
}

impl Ellipsoid {
    /// < 1 inside, 1 on the surface.
    #[inline]
    pub fn level(&self, p: &Point3<f64>) -> f64 {
        let d = p - self.centre;
        (d.x / self.semi_axes.x).powi(2) + (d.y / self.semi_axes.y).powi(2) + (d.z / self.semi_axes.z).powi(2)
    }

    #[inline]
    pub fn contains(&self, p: &Point3<f64>) -> bool {
        self.level(p) < 1.0
    }
}

/// Shortest distance from `p` to the segment a-b and the position along it (0 at a, 1 at b).
#[inline]
pub fn segment_distance(p: &Point3<f64>, a: &Point3<f64>, b: &Point3<f64>) -> (f64, f64) {
    let ab = b - a;
    let len2 = ab.norm_squared();
    let t = if len2 > 0.0 { ((p - a).dot(&ab) / len2).clamp(0.0, 1.0) } else { 0.0 };
    ((p - (a + ab * t)).norm(), t)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anatomy {
    /// Body cross-section: semi-axes left-right and anterior-posterior [mm], centred on x = y = 0.
    pub body_semi_lr: f64,
    pub body_semi_ap: f64,
    pub fat_thickness: f64,
    pub right_lung: Ellipsoid,
    pub left_lung: Ellipsoid,
    pub heart: Ellipsoid,
    pub liver: Ellipsoid,
    /// Vertebral bodies: a vertical cylinder.
    pub spine_centre_xy: [f64; 2],
    pub spine_radius: f64,
    /// z levels of the ribs' posterior ends [mm]; each rib slopes down anteriorly.
    pub rib_levels: Vec<f64>,
    pub rib_radius: f64,
    /// Sternum: box [x0, x1] x [y0, y1] x [z0, z1].
    pub sternum: [[f64; 2]; 3],
    /// Clavicles as segments with a radius.
    pub clavicles: [(Point3<f64>, Point3<f64>); 2],
    pub clavicle_radius: f64,
}

impl Default for Anatomy {
    fn default() -> Self {
        Anatomy {
            body_semi_lr: 160.0,
            body_semi_ap: 110.0,
            fat_thickness: 10.0,
            right_lung: Ellipsoid { centre: Point3::new(-72.0, 8.0, 30.0), semi_axes: Vector3::new(58.0, 80.0, 100.0) },
            left_lung: Ellipsoid { centre: Point3::new(74.0, 8.0, 35.0), semi_axes: Vector3::new(54.0, 78.0, 95.0) },
            heart: Ellipsoid { centre: Point3::new(22.0, -30.0, -15.0), semi_axes: Vector3::new(55.0, 45.0, 50.0) },
            liver: Ellipsoid { centre: Point3::new(-55.0, 5.0, -125.0), semi_axes: Vector3::new(90.0, 85.0, 75.0) },
            spine_centre_xy: [0.0, 72.0],
            spine_radius: 18.0,
            rib_levels: vec![-50.0, -25.0, 0.0, 25.0, 50.0, 75.0, 100.0],
            rib_radius: 5.0,
            sternum: [[-16.0, 16.0], [-106.0, -92.0], [-45.0, 110.0]],
            clavicles: [
                (Point3::new(-20.0, -94.0, 118.0), Point3::new(-135.0, -35.0, 132.0)),
                (Point3::new(20.0, -94.0, 118.0), Point3::new(135.0, -35.0, 132.0)),
            ],
            clavicle_radius: 7.0,
        }
    }
}

/// Which organ a point falls in (used for masks and vessel confinement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tissue {
    Outside,
    Body,
    Lung,
    Bone,
}

impl Anatomy {
    /// Elliptic radius of the body cross-section at (x, y): < 1 inside. `ap_expansion_mm`
    /// pushes the anterior wall outward (breathing).
    #[inline]
    pub fn body_level(&self, x: f64, y: f64, ap_expansion_mm: f64) -> f64 {
        let b = if y < 0.0 { self.body_semi_ap + ap_expansion_mm } else { self.body_semi_ap };
        (x / self.body_semi_lr).powi(2) + (y / b).powi(2)
    }

    /// Point on the skin at polar angle `theta` (0 = left, -pi/2 = anterior) and height z, and its outward normal.
    pub fn skin_point(&self, theta: f64, z: f64) -> (Point3<f64>, Vector3<f64>) {
        let (a, b) = (self.body_semi_lr, self.body_semi_ap);
        let p = Point3::new(a * theta.cos(), b * theta.sin(), z);
        let n = Vector3::new(p.x / (a * a), p.y / (b * b), 0.0).normalize();
        (p, n)
    }

    fn in_rib(&self, p: &Point3<f64>) -> bool {
        if p.y < 0.0 && p.x.abs() < 28.0 {
            return false; // costal cartilage gap at the sternum
        }
        // Ribs run 14 mm inside the skin, following the body ellipse.
        let (a, b) = (self.body_semi_lr - 14.0, self.body_semi_ap - 14.0);
        let rho = ((p.x / a).powi(2) + (p.y / b).powi(2)).sqrt();
        let radial_mm = (rho - 1.0) * 0.5 * (a + b);
        if radial_mm.abs() > self.rib_radius {
            return false;
        }
        // Anterior ends lie about 30 mm lower than the posterior ends.
        let slope = 15.0 * (p.y / b);
        let cross = self.rib_radius * self.rib_radius - radial_mm * radial_mm;
        self.rib_levels.iter().any(|&z0| {
            let dz = p.z - (z0 + slope);
            dz * dz < cross
        })
    }

    /// Plain-CT HU and tissue of the static anatomy (no vessels, lesion or markers) at `p`.
    pub fn sample(&self, p: &Point3<f64>, ap_expansion_mm: f64) -> (f32, Tissue) {
        self.sample_deformed(p, p, ap_expansion_mm)
    }

    /// As [`Anatomy::sample`], with breathing: the body wall and bones are evaluated at `p`,
    /// the organs that move with the diaphragm (lungs, heart, liver) at `organ_p`.
    pub fn sample_deformed(&self, p: &Point3<f64>, organ_p: &Point3<f64>, ap_expansion_mm: f64) -> (f32, Tissue) {
        let level = self.body_level(p.x, p.y, ap_expansion_mm);
        if level >= 1.0 {
            return (hu::AIR, Tissue::Outside);
        }
        let [sx, sy] = self.spine_centre_xy;
        let spine_r2 = (p.x - sx).powi(2) + (p.y - sy).powi(2);
        if spine_r2 < self.spine_radius * self.spine_radius {
            let cortical = spine_r2 > (self.spine_radius - 2.5).powi(2);
            return (if cortical { hu::CORTICAL_BONE } else { hu::CANCELLOUS_BONE }, Tissue::Bone);
        }
        let [xs, ys, zs] = self.sternum;
        if p.x > xs[0] && p.x < xs[1] && p.y > ys[0] && p.y < ys[1] && p.z > zs[0] && p.z < zs[1] {
            return (hu::CANCELLOUS_BONE + 150.0, Tissue::Bone);
        }
        if self.in_rib(p) {
            return (hu::CORTICAL_BONE, Tissue::Bone);
        }
        for (a, b) in &self.clavicles {
            if segment_distance(p, a, b).0 < self.clavicle_radius {
                return (hu::CORTICAL_BONE, Tissue::Bone);
            }
        }
        if self.right_lung.contains(organ_p) || self.left_lung.contains(organ_p) {
            return (hu::LUNG, Tissue::Lung);
        }
        if self.heart.contains(organ_p) {
            return (hu::MUSCLE, Tissue::Body);
        }
        if self.liver.contains(organ_p) {
            return (hu::LIVER, Tissue::Body);
        }
        // Subcutaneous fat: the outer fat_thickness of the body.
        let inner = 1.0 - self.fat_thickness / self.body_semi_ap.min(self.body_semi_lr);
        if level > inner * inner {
            return (hu::FAT, Tissue::Body);
        }
        (hu::SOFT_TISSUE, Tissue::Body)
    }

    /// Is `p` inside one of the lungs (with a margin in mm kept from the lung surface)?
    pub fn in_lung(&self, p: &Point3<f64>, margin_mm: f64) -> bool {
        let shrink = |e: &Ellipsoid| Ellipsoid { centre: e.centre, semi_axes: e.semi_axes.add_scalar(-margin_mm) };
        (shrink(&self.right_lung).contains(p) || shrink(&self.left_lung).contains(p)) && !self.heart.contains(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tissues_are_where_anatomy_puts_them() {
        let a = Anatomy::default();
        assert_eq!(a.sample(&Point3::new(0.0, 0.0, 0.0), 0.0).1, Tissue::Body);
        assert_eq!(a.sample(&Point3::new(0.0, -150.0, 0.0), 0.0).1, Tissue::Outside);
        assert_eq!(a.sample(&Point3::new(-72.0, 8.0, 30.0), 0.0), (hu::LUNG, Tissue::Lung));
        assert_eq!(a.sample(&Point3::new(0.0, 72.0, 0.0), 0.0).1, Tissue::Bone);
        assert_eq!(a.sample(&Point3::new(0.0, -100.0, 50.0), 0.0).1, Tissue::Bone); // sternum
        assert_eq!(a.sample(&Point3::new(-30.0, 0.0, -130.0), 0.0).0, hu::LIVER);
        // The anterior wall moves out with breathing.
        assert_eq!(a.sample(&Point3::new(0.0, -112.0, -100.0), 0.0).1, Tissue::Outside);
        assert_eq!(a.sample(&Point3::new(0.0, -112.0, -100.0), 5.0).1, Tissue::Body);
    }

    #[test]
    fn skin_points_lie_on_the_body_surface_with_outward_normals() {
        let a = Anatomy::default();
        for theta in [-1.5, -1.0, -0.3, 0.2] {
            let (p, n) = a.skin_point(theta, 10.0);
            assert!((a.body_level(p.x, p.y, 0.0) - 1.0).abs() < 1e-9);
            assert!(a.body_level(p.x + n.x, p.y + n.y, 0.0) > 1.0);
            assert!((n.norm() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn segment_distance_closed_form() {
        let (d, t) = segment_distance(&Point3::new(1.0, 1.0, 0.0), &Point3::origin(), &Point3::new(2.0, 0.0, 0.0));
        assert!((d - 1.0).abs() < 1e-12 && (t - 0.5).abs() < 1e-12);
        let (d, t) = segment_distance(&Point3::new(-3.0, 4.0, 0.0), &Point3::origin(), &Point3::new(2.0, 0.0, 0.0));
        assert!((d - 5.0).abs() < 1e-12 && t == 0.0);
    }
}
