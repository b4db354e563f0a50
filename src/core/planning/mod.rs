//! Straight needle path planning on the planning CT: a clearance map (exact Euclidean distance
//! to the nearest vessel or bone voxel, in mm, on the CT grid), the skin (boundary of the body
//! after filling the lungs), and a search over straight paths from the skin to the target
//! within a cone around the preferred approach direction. The path with the largest minimum
//! clearance wins; one below the safety margin is refused, never returned.

use crate::imaging::volume::{Geometry, Volume};
use nalgebra::{Point3, Vector3};
use std::collections::VecDeque;

pub mod morphology;
pub mod obstacles;
pub mod vesselness;

#[derive(Debug, Clone, PartialEq)]
pub struct PlannerOptions {
    pub safety_margin_mm: f64,
    pub max_depth_mm: f64,
    pub max_angle_deg: f64,
    /// Preferred insertion direction seen from the skin, i.e. from entry towards target, negated:
    /// the unit vector from the target out to the entry side (LPS). [0, -1, 0]: enter anteriorly.
    pub approach_direction: Vector3<f64>,
    /// Voxels at or above this HU count as bone (contrast vessels are labelled, so also excluded).
    pub bone_hu: f32,
    /// Voxels above this HU are body (lungs are filled in per slice).
    pub body_hu: f32,
    /// Directions tried inside the cone.
    pub directions: usize,
    /// Sampling step along a path [mm].
    pub step_mm: f64,
    /// Optional entry region: [x_min, x_max, y_min, y_max, z_min, z_max] in CT mm (LPS).
    pub entry_region_mm: Option<[f64; 6]>,
    /// Radius of the lesion around the target [mm]. Vessel labels inside it are lesion tissue
    /// mislabelled (an enhancing lesion looks like a vessel to the segmentation), not obstacles;
    /// how many were ignored is reported with the plan. 0: the target is a point.
    pub lesion_radius_mm: f64,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        PlannerOptions {
            safety_margin_mm: 5.0,
            max_depth_mm: 150.0,
            max_angle_deg: 45.0,
            approach_direction: Vector3::new(0.0, -1.0, 0.0),
            bone_hu: 300.0,
            body_hu: -400.0,
            directions: 3000,
            step_mm: 0.5,
            entry_region_mm: None,
            lesion_radius_mm: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannedPath {
    /// Skin entry and target, CT patient coordinates (LPS) [mm].
    pub entry_mm: [f64; 3],
    pub target_mm: [f64; 3],
    /// Smallest distance from the path to a vessel or bone voxel centre [mm].
    pub min_clearance_mm: f64,
    pub length_mm: f64,
    /// Angle between the path (target → entry) and the approach direction [deg].
    pub angle_deg: f64,
    /// Directions tried, and those giving a skin entry within depth and region.
    pub candidates: usize,
    pub reachable: usize,
    /// Vessel-labelled voxels inside the lesion radius, not treated as obstacles.
    pub lesion_voxels_ignored: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the target {0:?} mm lies outside the CT")]
    TargetOutsideImage([f64; 3]),
    #[error("the target {0:?} mm lies outside the body")]
    TargetOutsideBody([f64; 3]),
    #[error("the target lies inside a vessel or bone (clearance {0:.1} mm)")]
    TargetInObstacle(f64),
    #[error(
        "no skin entry within {max_depth_mm:.0} mm, {max_angle_deg:.0}° of the approach direction{}",
        if *.region { " and inside the entry region" } else { "" }
    )]
    NoEntry { max_depth_mm: f64, max_angle_deg: f64, region: bool },
    #[error(
        "no safe path: the best of {reachable} reachable paths keeps only {best_clearance_mm:.1} mm from vessels \
         and bone, less than the {margin_mm:.1} mm safety margin"
    )]
    NoSafePath { best_clearance_mm: f64, margin_mm: f64, reachable: usize, best: Box<PlannedPath> },
}

/// Squared Euclidean distance [mm²] from every voxel centre to the nearest `obstacle` voxel
/// centre (f32::INFINITY when there is none): exact, separable (Felzenszwalb & Huttenlocher),
/// with anisotropic spacing.
pub fn squared_distance_mm2(obstacle: &[bool], dims: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let mut d: Vec<f64> = obstacle.iter().map(|o| if *o { 0.0 } else { f64::INFINITY }).collect();
    let n_max = nx.max(ny).max(nz);
    let mut line = vec![0.0f64; n_max];
    let mut out = vec![0.0f64; n_max];
    let mut v = vec![0usize; n_max];
    let mut z = vec![0.0f64; n_max + 1];
    let strides = [1, nx, nx * ny];
    for axis in 0..3 {
        let len = dims[axis];
        let w = spacing_mm[axis] * spacing_mm[axis];
        let stride = strides[axis];
        let (a1, a2) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        for q in 0..dims[a2] {
            for p in 0..dims[a1] {
                let start = p * strides[a1] + q * strides[a2];
                for (t, l) in line.iter_mut().enumerate().take(len) {
                    *l = d[start + t * stride];
                }
                envelope(&line[..len], w, &mut out[..len], &mut v, &mut z);
                for (t, o) in out.iter().enumerate().take(len) {
                    d[start + t * stride] = *o;
                }
            }
        }
    }
    d.into_iter().map(|x| x as f32).collect()
}

/// 1-D squared distance transform: out[t] = min_s f[s] + w (t - s)².
fn envelope(f: &[f64], w: f64, out: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&s| f[s].is_finite()).collect();
    if finite.is_empty() {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    }
    let mut k = 0;
    v[0] = finite[0];
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let inter = |q: usize, p: usize| {
        ((f[q] + w * (q * q) as f64) - (f[p] + w * (p * p) as f64)) / (2.0 * w * (q as f64 - p as f64))
    };
    for &q in &finite[1..] {
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (t, o) in out.iter_mut().enumerate() {
        while z[k + 1] < t as f64 {
            k += 1;
        }
        let dt = t as f64 - v[k] as f64;
        *o = w * dt * dt + f[v[k]];
    }
}

/// Voxels outside the body: per axial slice, the air connected to the slice border (so the
/// lungs and bowel gas stay inside).
pub fn outside_body(hu: &Volume<f32>, body_hu: f32) -> Vec<bool> {
    let [nx, ny, nz] = hu.geometry.dims;
    let mut outside = vec![false; nx * ny * nz];
    let mut queue = VecDeque::new();
    for k in 0..nz {
        let base = k * nx * ny;
        let air = |i: usize, j: usize| hu.data[base + j * nx + i] <= body_hu;
        for i in 0..nx {
            for j in [0, ny - 1] {
                queue.push_back((i, j));
            }
        }
        for j in 0..ny {
            for i in [0, nx - 1] {
                queue.push_back((i, j));
            }
        }
        while let Some((i, j)) = queue.pop_front() {
            let v = base + j * nx + i;
            if outside[v] || !air(i, j) {
                continue;
            }
            outside[v] = true;
            if i > 0 {
                queue.push_back((i - 1, j));
            }
            if i + 1 < nx {
                queue.push_back((i + 1, j));
            }
            if j > 0 {
                queue.push_back((i, j - 1));
            }
            if j + 1 < ny {
                queue.push_back((i, j + 1));
            }
        }
    }
    outside
}

/// Clearance map [mm] for `labels` (vessels > 0) and bone (HU ≥ bone_hu).
pub fn clearance_map_mm(hu: &Volume<f32>, vessels: &Volume<u8>, bone_hu: f32) -> Vec<f32> {
    let obstacle: Vec<bool> = hu.data.iter().zip(&vessels.data).map(|(h, l)| *l > 0 || *h >= bone_hu).collect();
    squared_distance_mm2(&obstacle, hu.geometry.dims, hu.geometry.spacing_mm).into_iter().map(f32::sqrt).collect()
}

/// Directions within `max_angle_deg` of `axis` (Fibonacci points on the sphere's cap).
fn cone_directions(axis: &Vector3<f64>, max_angle_deg: f64, count: usize) -> Vec<Vector3<f64>> {
    let axis = axis.normalize();
    let cos_max = max_angle_deg.to_radians().cos();
    // Points spread evenly over the cap [cos_max, 1] of the z axis, then rotated onto `axis`.
    let helper = if axis.x.abs() < 0.9 { Vector3::x() } else { Vector3::y() };
    let u = axis.cross(&helper).normalize();
    let w = axis.cross(&u);
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..count.max(1))
        .map(|n| {
            let c = 1.0 - (1.0 - cos_max) * (n as f64 + 0.5) / count.max(1) as f64;
            let s = (1.0 - c * c).max(0.0).sqrt();
            let phi = golden * n as f64;
            (axis * c + u * (s * phi.cos()) + w * (s * phi.sin())).normalize()
        })
        .collect()
}

fn nearest_voxel(g: &Geometry, p: &Point3<f64>) -> Option<usize> {
    let idx = g.patient_to_index(p).map(|v| v.round());
    if (0..3).any(|a| idx[a] < 0.0 || idx[a] > (g.dims[a] - 1) as f64) {
        return None;
    }
    Some(g.offset(idx[0] as usize, idx[1] as usize, idx[2] as usize))
}

/// The labels with those inside the lesion sphere cleared, and how many were cleared.
fn without_lesion(vessels: &Volume<u8>, target_mm: &Point3<f64>, radius_mm: f64) -> (Volume<u8>, usize) {
    let mut out = vessels.clone();
    if radius_mm <= 0.0 {
        return (out, 0);
    }
    let g = &vessels.geometry;
    let [nx, ny, _] = g.dims;
    let mut cleared = 0;
    for (v, label) in out.data.iter_mut().enumerate() {
        if *label == 0 {
            continue;
        }
        let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
        if (g.index_to_patient([i as f64, j as f64, k as f64]) - target_mm).norm() <= radius_mm {
            *label = 0;
            cleared += 1;
        }
    }
    (out, cleared)
}

/// Plans the straight path to `target_mm` (CT LPS mm) that keeps farthest from vessels and bone.
pub fn plan_path(
    hu: &Volume<f32>,
    vessels: &Volume<u8>,
    target_mm: Point3<f64>,
    o: &PlannerOptions,
) -> Result<PlannedPath, PlanError> {
    let g = &hu.geometry;
    let t = [target_mm.x, target_mm.y, target_mm.z];
    let target_voxel = nearest_voxel(g, &target_mm).ok_or(PlanError::TargetOutsideImage(t))?;
    let outside = outside_body(hu, o.body_hu);
    if outside[target_voxel] {
        return Err(PlanError::TargetOutsideBody(t));
    }
    let (vessels, lesion_voxels_ignored) = without_lesion(vessels, &target_mm, o.lesion_radius_mm);
    let clearance = clearance_map_mm(hu, &vessels, o.bone_hu);
    if f64::from(clearance[target_voxel]) < 1e-6 {
        return Err(PlanError::TargetInObstacle(clearance[target_voxel] as f64));
    }
    let directions = cone_directions(&o.approach_direction, o.max_angle_deg, o.directions);
    let in_region = |p: &Point3<f64>| {
        o.entry_region_mm
            .map_or(true, |r| p.x >= r[0] && p.x <= r[1] && p.y >= r[2] && p.y <= r[3] && p.z >= r[4] && p.z <= r[5])
    };
    let mut best: Option<PlannedPath> = None;
    let mut reachable = 0;
    for dir in &directions {
        // March out from the target; the entry is the last body sample before outside air.
        let mut s = 0.0;
        let mut min_clear = f64::INFINITY;
        let mut entry = None;
        while s <= o.max_depth_mm + o.step_mm {
            let p = target_mm + dir * s;
            let Some(v) = nearest_voxel(g, &p) else { break };
            if outside[v] {
                entry = Some(target_mm + dir * (s - o.step_mm).max(0.0));
                break;
            }
            min_clear = min_clear.min(clearance[v] as f64);
            s += o.step_mm;
        }
        let Some(entry) = entry else { continue };
        let length = (entry - target_mm).norm();
        if length > o.max_depth_mm || !in_region(&entry) {
            continue;
        }
        reachable += 1;
        let better = match &best {
            None => true,
            Some(b) => {
                min_clear > b.min_clearance_mm + 1e-9 || (min_clear > b.min_clearance_mm - 1e-9 && length < b.length_mm)
            }
        };
        if better {
            let angle = dir.dot(&o.approach_direction.normalize()).clamp(-1.0, 1.0).acos().to_degrees();
            best = Some(PlannedPath {
                entry_mm: [entry.x, entry.y, entry.z],
                target_mm: t,
                min_clearance_mm: min_clear,
                length_mm: length,
                angle_deg: angle,
                candidates: 0,
                reachable: 0,
                lesion_voxels_ignored,
            });
        }
    }
    let Some(mut best) = best else {
        return Err(PlanError::NoEntry {
            max_depth_mm: o.max_depth_mm,
            max_angle_deg: o.max_angle_deg,
            region: o.entry_region_mm.is_some(),
        });
    };
    best.candidates = directions.len();
    best.reachable = reachable;
    if best.min_clearance_mm < o.safety_margin_mm {
        return Err(PlanError::NoSafePath {
            best_clearance_mm: best.min_clearance_mm,
            margin_mm: o.safety_margin_mm,
            reachable,
            best: Box::new(best),
        });
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn distance_transform_equals_brute_force_with_anisotropic_spacing() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let dims = [13, 9, 7];
        let spacing = [0.7, 1.3, 2.5];
        let n = dims.iter().product::<usize>();
        let obstacle: Vec<bool> = (0..n).map(|_| rng.random_bool(0.03)).collect();
        let d = squared_distance_mm2(&obstacle, dims, spacing);
        let pos = |v: usize| {
            let (i, j, k) = (v % dims[0], (v / dims[0]) % dims[1], v / (dims[0] * dims[1]));
            [i as f64 * spacing[0], j as f64 * spacing[1], k as f64 * spacing[2]]
        };
        for v in 0..n {
            let p = pos(v);
            let brute = (0..n)
                .filter(|&w| obstacle[w])
                .map(|w| {
                    let q = pos(w);
                    (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            assert!((d[v] as f64 - brute).abs() < 1e-4 * (1.0 + brute), "voxel {v}: {} vs {brute}", d[v]);
        }
        assert!(squared_distance_mm2(&[false; 8], [2, 2, 2], [1.0; 3]).iter().all(|v| v.is_infinite()));
    }

    /// A body cylinder (axis along z, radius 60 mm) with an air "lung" inside, a target at the
    /// centre and a vessel tube right in front of it (anterior, -y).
    fn body_with_vessel() -> (Volume<f32>, Volume<u8>, Point3<f64>) {
        let g = Geometry::axial_centred([81, 81, 41], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
        let mut hu = Volume::filled(g.clone(), -1000.0f32);
        let mut lab = Volume::filled(g.clone(), 0u8);
        for k in 0..41 {
            for j in 0..81 {
                for i in 0..81 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let r = (p.x * p.x + p.y * p.y).sqrt();
                    let v = g.offset(i, j, k);
                    if r <= 60.0 {
                        hu.data[v] = 40.0;
                    }
                    // Lung: air inside the body, away from the front.
                    if ((p.x - 30.0).powi(2) + (p.y - 10.0).powi(2)).sqrt() < 15.0 {
                        hu.data[v] = -850.0;
                    }
                    // Vessel along z at y = -20, x = 0, radius 4 mm.
                    if (p.x * p.x + (p.y + 20.0).powi(2)).sqrt() <= 4.0 {
                        lab.data[v] = 2;
                        hu.data[v] = 200.0;
                    }
                }
            }
        }
        (hu, lab, Point3::new(0.0, 0.0, 0.0))
    }

    #[test]
    fn the_path_goes_around_the_vessel_with_the_clearance_the_geometry_allows() {
        let (hu, lab, target) = body_with_vessel();
        let o = PlannerOptions { safety_margin_mm: 3.0, max_depth_mm: 80.0, ..Default::default() };
        let plan = plan_path(&hu, &lab, target, &o).unwrap();
        // Straight anterior is blocked; the best path is tilted. Its clearance is limited by the
        // vessel (centre 20 mm away, radius 4 mm) and bounded by the cone: for a path at angle a
        // from -y, the distance from the vessel axis is 20 sin(a) (a <= 45°) minus the voxel
        // centres' 4 mm radius -> at most 20 sin 45° - ~4 = ~10 mm.
        assert!(plan.angle_deg > 20.0, "{plan:?}");
        assert!(plan.min_clearance_mm > 6.0 && plan.min_clearance_mm <= 20.0 * 45f64.to_radians().sin(), "{plan:?}");
        // The entry is on the skin (radius 60 mm) and the length matches.
        let e = Point3::from(plan.entry_mm);
        assert!(((e.x * e.x + e.y * e.y).sqrt() - 60.0).abs() < 2.5, "{plan:?}");
        assert!((plan.length_mm - (e - target).norm()).abs() < 1e-9);
        assert!(plan.reachable > 0 && plan.reachable <= plan.candidates);
    }

    #[test]
    fn refusals_say_why() {
        let (hu, lab, target) = body_with_vessel();
        let strict = PlannerOptions { safety_margin_mm: 30.0, ..Default::default() };
        match plan_path(&hu, &lab, target, &strict) {
            Err(PlanError::NoSafePath { best_clearance_mm, .. }) => assert!(best_clearance_mm < 30.0),
            other => panic!("{other:?}"),
        }
        let narrow = PlannerOptions { max_angle_deg: 3.0, safety_margin_mm: 3.0, ..Default::default() };
        assert!(matches!(plan_path(&hu, &lab, target, &narrow), Err(PlanError::NoSafePath { .. })));
        let shallow = PlannerOptions { max_depth_mm: 30.0, ..Default::default() };
        assert!(matches!(plan_path(&hu, &lab, target, &shallow), Err(PlanError::NoEntry { .. })));
        let o = PlannerOptions::default();
        assert!(matches!(plan_path(&hu, &lab, Point3::new(0.0, -20.0, 0.0), &o), Err(PlanError::TargetInObstacle(_))));
        assert!(matches!(
            plan_path(&hu, &lab, Point3::new(0.0, 0.0, 500.0), &o),
            Err(PlanError::TargetOutsideImage(_))
        ));
        assert!(matches!(plan_path(&hu, &lab, Point3::new(70.0, 70.0, 0.0), &o), Err(PlanError::TargetOutsideBody(_))));
        // The lung is inside the body, not outside.
        let out = outside_body(&hu, -400.0);
        let lung = hu.geometry.patient_to_index(&Point3::new(30.0, 10.0, 0.0)).map(|v| v.round() as usize);
        assert!(!out[hu.geometry.offset(lung[0], lung[1], lung[2])]);
    }

    #[test]
    fn vessel_labels_inside_the_lesion_are_not_obstacles_and_are_counted() {
        let (hu, mut lab, target) = body_with_vessel();
        // A labelled blob at the target (an enhancing lesion mistaken for a vessel), radius 6 mm.
        let g = lab.geometry.clone();
        let mut blob = 0;
        for v in 0..lab.data.len() {
            let (i, j, k) = (v % 81, (v / 81) % 81, v / (81 * 81));
            if (g.index_to_patient([i as f64, j as f64, k as f64]) - target).norm() <= 6.0 {
                lab.data[v] = 1;
                blob += 1;
            }
        }
        let point = PlannerOptions { safety_margin_mm: 3.0, max_depth_mm: 80.0, ..Default::default() };
        assert!(matches!(plan_path(&hu, &lab, target, &point), Err(PlanError::TargetInObstacle(_))));
        let lesion = PlannerOptions { lesion_radius_mm: 8.0, ..point };
        let plan = plan_path(&hu, &lab, target, &lesion).unwrap();
        // Every blob voxel is inside 8 mm; the tube (20 mm away, radius 4) is not.
        assert_eq!(plan.lesion_voxels_ignored, blob);
        assert!(plan.min_clearance_mm > 6.0, "{plan:?}");
    }
}
