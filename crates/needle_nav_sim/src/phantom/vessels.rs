//! Vessels of the digital patient: a fixed aorta and pulmonary trunks, and seeded
//! branching pulmonary artery and vein trees that taper to `min_radius_mm` inside the lungs.

use super::anatomy::{segment_distance, Anatomy};
use nalgebra::{Point3, Rotation3, Unit, Vector3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Label values of the vessel classes (0 is background).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VesselClass {
    Artery = 1,
    Vein = 2,
    Aorta = 3,
}

impl VesselClass {
    /// Where vessels overlap, the larger structure keeps the voxel.
    pub fn priority(self) -> u8 {
        match self {
            VesselClass::Aorta => 3,
            VesselClass::Artery => 2,
            VesselClass::Vein => 1,
        }
    }
}

/// A tapered cylinder with rounded ends (capsule) from `a` to `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VesselSegment {
    pub a: Point3<f64>,
    pub b: Point3<f64>,
    pub radius_a: f64,
    pub radius_b: f64,
    pub class: VesselClass,
    /// Generation: 0 for the trunks, +1 per bifurcation.
    pub generation: u32,
    /// True for segments inside the lungs (they move with breathing).
    pub in_lung: bool,
}

impl VesselSegment {
    /// Distance from `p` to the vessel surface (negative inside) and the radius there.
    #[inline]
    pub fn signed_distance(&self, p: &Point3<f64>) -> (f64, f64) {
        let (d, t) = segment_distance(p, &self.a, &self.b);
        let r = self.radius_a + (self.radius_b - self.radius_a) * t;
        (d - r, r)
    }
}

fn polyline(points: &[(Point3<f64>, f64)], class: VesselClass) -> Vec<VesselSegment> {
    points
        .windows(2)
        .map(|w| VesselSegment {
            a: w[0].0,
            b: w[1].0,
            radius_a: w[0].1,
            radius_b: w[1].1,
            class,
            generation: 0,
            in_lung: false,
        })
        .collect()
}

/// Ascending aorta, arch and descending aorta down through the abdomen.
pub fn aorta() -> Vec<VesselSegment> {
    let p = Point3::new;
    polyline(
        &[
            (p(12.0, -28.0, -10.0), 14.0),
            (p(10.0, -30.0, 30.0), 14.0),
            (p(12.0, -24.0, 62.0), 13.0),
            (p(22.0, -8.0, 82.0), 12.5),
            (p(32.0, 18.0, 82.0), 12.0),
            (p(34.0, 40.0, 62.0), 11.5),
            (p(30.0, 48.0, 20.0), 11.0),
            (p(24.0, 46.0, -60.0), 10.5),
            (p(14.0, 44.0, -200.0), 10.0),
        ],
        VesselClass::Aorta,
    )
}

/// Parameters of tree growth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    pub min_radius_mm: f64,
    /// Segment length as a multiple of its radius.
    pub length_per_radius: f64,
    pub max_segments: usize,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams { min_radius_mm: 1.0, length_per_radius: 5.0, max_segments: 4000 }
    }
}

fn random_perpendicular(dir: &Vector3<f64>, rng: &mut ChaCha8Rng) -> Vector3<f64> {
    let any = if dir.x.abs() < 0.9 { Vector3::x() } else { Vector3::y() };
    let u = dir.cross(&any).normalize();
    let angle = rng.random_range(0.0..std::f64::consts::TAU);
    Rotation3::from_axis_angle(&Unit::new_normalize(*dir), angle) * u
}

fn rotate_towards(dir: &Vector3<f64>, perp: &Vector3<f64>, angle: f64) -> Vector3<f64> {
    (dir * angle.cos() + perp * angle.sin()).normalize()
}

/// Grows a tree from `start` along `dir` inside the lungs.
#[allow(clippy::too_many_arguments)]
fn grow(
    anatomy: &Anatomy,
    start: Point3<f64>,
    dir: Vector3<f64>,
    radius: f64,
    class: VesselClass,
    generation: u32,
    params: &TreeParams,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<VesselSegment>,
) {
    if out.len() >= params.max_segments {
        return;
    }
    let min_r = params.min_radius_mm;
    let length = (params.length_per_radius * radius * rng.random_range(0.8..1.2)).clamp(4.0, 30.0);
    let fits = |d: &Vector3<f64>, len: f64| {
        (1..=4).all(|s| anatomy.in_lung(&(start + d * (len * s as f64 / 4.0)), radius.min(4.0)))
    };
    // Try the preferred direction, then perturbed ones; a branch that cannot continue ends.
    let mut chosen = None;
    for attempt in 0..8 {
        let d = if attempt == 0 {
            dir
        } else {
            rotate_towards(&dir, &random_perpendicular(&dir, rng), 0.25 * attempt as f64)
        };
        if fits(&d, length) {
            chosen = Some(d);
            break;
        }
    }
    let Some(d) = chosen else {
        return;
    };
    let end = start + d * length;
    let end_radius = (radius * 0.93).max(min_r);
    out.push(VesselSegment {
        a: start,
        b: end,
        radius_a: radius,
        radius_b: end_radius,
        class,
        generation,
        in_lung: true,
    });
    if end_radius <= min_r * 1.05 {
        return;
    }
    // Asymmetric bifurcation, radii close to Murray's law (r^3 = r1^3 + r2^3).
    let split: f64 = rng.random_range(0.55..0.8);
    let r1 = end_radius * (1.0 / (1.0 + split.powi(3))).cbrt();
    let r2 = r1 * split;
    let perp = random_perpendicular(&d, rng);
    let a1 = rng.random_range(0.25..0.5);
    let a2 = rng.random_range(0.4..0.8);
    grow(anatomy, end, rotate_towards(&d, &perp, a1), r1.max(min_r), class, generation + 1, params, rng, out);
    if r2 >= min_r {
        grow(anatomy, end, rotate_towards(&d, &(-perp), a2), r2, class, generation + 1, params, rng, out);
    }
}

/// Pulmonary arteries: trunk from the right ventricle, left and right pulmonary arteries,
/// then lobar trees into each lung.
pub fn pulmonary_arteries(anatomy: &Anatomy, params: &TreeParams, rng: &mut ChaCha8Rng) -> Vec<VesselSegment> {
    let p = Point3::new;
    let mut out = polyline(&[(p(10.0, -52.0, -5.0), 13.0), (p(14.0, -32.0, 32.0), 13.0)], VesselClass::Artery);
    out.extend(polyline(
        &[(p(14.0, -32.0, 32.0), 11.0), (p(40.0, -5.0, 40.0), 10.0), (p(58.0, 8.0, 38.0), 9.0)],
        VesselClass::Artery,
    ));
    out.extend(polyline(
        &[(p(14.0, -32.0, 32.0), 11.0), (p(-25.0, -10.0, 30.0), 10.0), (p(-52.0, 6.0, 28.0), 9.0)],
        VesselClass::Artery,
    ));
    let roots = [
        (p(58.0, 8.0, 38.0), Vector3::new(0.3, 0.1, 0.9), 6.5),
        (p(58.0, 8.0, 38.0), Vector3::new(0.4, 0.2, -0.9), 7.0),
        (p(58.0, 8.0, 38.0), Vector3::new(0.9, 0.2, -0.1), 5.5),
        (p(-52.0, 6.0, 28.0), Vector3::new(-0.3, 0.1, 0.9), 6.5),
        (p(-52.0, 6.0, 28.0), Vector3::new(-0.4, 0.2, -0.9), 7.0),
        (p(-52.0, 6.0, 28.0), Vector3::new(-0.9, -0.3, 0.0), 5.5),
    ];
    for (start, dir, r) in roots {
        grow(anatomy, start, dir.normalize(), r, VesselClass::Artery, 1, params, rng, &mut out);
    }
    out
}

/// Pulmonary veins: four veins from the left atrium, then trees into each lung.
pub fn pulmonary_veins(anatomy: &Anatomy, params: &TreeParams, rng: &mut ChaCha8Rng) -> Vec<VesselSegment> {
    let p = Point3::new;
    let atrium = p(18.0, 8.0, -8.0);
    let mut out = Vec::new();
    let stems = [
        (p(-48.0, 14.0, 8.0), Vector3::new(-0.5, 0.2, 0.8)),
        (p(-48.0, 20.0, -22.0), Vector3::new(-0.5, 0.3, -0.8)),
        (p(52.0, 14.0, 14.0), Vector3::new(0.5, 0.2, 0.8)),
        (p(52.0, 20.0, -18.0), Vector3::new(0.5, 0.3, -0.8)),
    ];
    for (end, dir) in stems {
        out.extend(polyline(&[(atrium, 8.0), (end, 7.0)], VesselClass::Vein));
        grow(anatomy, end, dir.normalize(), 6.0, VesselClass::Vein, 1, params, rng, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn trees_branch_taper_to_the_minimum_radius_and_stay_in_the_lungs() {
        let anatomy = Anatomy::default();
        let params = TreeParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let arteries = pulmonary_arteries(&anatomy, &params, &mut rng);
        let veins = pulmonary_veins(&anatomy, &params, &mut rng);
        for tree in [&arteries, &veins] {
            assert!(tree.len() > 100, "only {} segments", tree.len());
            let min_r = tree.iter().map(|s| s.radius_b).fold(f64::INFINITY, f64::min);
            assert!((1.0..=1.1).contains(&min_r), "thinnest radius {min_r}");
            assert!(tree.iter().map(|s| s.generation).max().unwrap() >= 5);
            for s in tree.iter().filter(|s| s.in_lung) {
                assert!(anatomy.in_lung(&s.b, 0.0), "segment end {:?} outside the lungs", s.b);
                assert!(s.radius_b <= s.radius_a + 1e-12, "vessels taper");
            }
        }
    }

    #[test]
    fn murray_split_conserves_the_cube_of_the_radius() {
        let split: f64 = 0.7;
        let r = 4.0;
        let r1 = r * (1.0 / (1.0 + split.powi(3))).cbrt();
        let r2 = r1 * split;
        assert!((r1.powi(3) + r2.powi(3) - r.powi(3)).abs() < 1e-9);
    }

    #[test]
    fn same_seed_same_tree() {
        let anatomy = Anatomy::default();
        let a = pulmonary_arteries(&anatomy, &TreeParams::default(), &mut ChaCha8Rng::seed_from_u64(9));
        let b = pulmonary_arteries(&anatomy, &TreeParams::default(), &mut ChaCha8Rng::seed_from_u64(9));
        let c = pulmonary_arteries(&anatomy, &TreeParams::default(), &mut ChaCha8Rng::seed_from_u64(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
