//! The path search: obstacle layers from the CT united with the network's labels (the lesion's own
//! voxels excepted), one exact clearance map per layer, then every straight path in a cone around
//! the preferred approach direction judged by `risk`. Hard limits refuse; among the paths that pass
//! the lowest weighted cost wins, and the best few others (entries apart) are reported with it.

use super::obstacles::{ct_anatomy, CtAnatomy, Layer, ObstacleOptions};
use super::risk::{judge_path, CostWeights, Field, HardLimits, Judging, LayerMargins, PathTerms, SEVERITY};
use super::{cone_directions, nearest_voxel, squared_distance_mm2};
use nalgebra::{Point3, Vector3};
use needle_nav_core::volume::Volume;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannerOptions {
    pub obstacles: ObstacleOptions,
    pub margins: LayerMargins,
    pub limits: HardLimits,
    pub weights: CostWeights,
    /// Largest angle from the approach direction [deg].
    pub max_angle_deg: f64,
    /// Preferred direction from the target out to the skin (LPS). [0, -1, 0]: enter anteriorly.
    pub approach_direction: Vector3<f64>,
    /// Directions tried inside the cone.
    pub directions: usize,
    /// Sampling step along a path [mm].
    pub step_mm: f64,
    /// Optional entry region: [x_min, x_max, y_min, y_max, z_min, z_max] in CT mm (LPS).
    pub entry_region_mm: Option<[f64; 6]>,
    /// Radius of the lesion around the target [mm]: vessel, lung-vessel, airway and contrast voxels
    /// inside it are the lesion (an enhancing or solid lesion looks like them), not obstacles; how
    /// many were ignored is reported. Mediastinum and bone are never excepted. 0: a point target.
    pub lesion_radius_mm: f64,
    /// Other passing paths reported besides the chosen one, with entries at least this far apart [mm].
    pub alternatives: usize,
    pub alternative_separation_mm: f64,
    /// Judge only the path from the target through this point (a proposed entry), CT mm (LPS).
    pub proposed_entry_mm: Option<[f64; 3]>,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        PlannerOptions {
            obstacles: ObstacleOptions::default(),
            margins: LayerMargins::default(),
            limits: HardLimits::default(),
            weights: CostWeights::default(),
            max_angle_deg: 45.0,
            approach_direction: Vector3::new(0.0, -1.0, 0.0),
            directions: 3000,
            step_mm: 0.5,
            entry_region_mm: None,
            lesion_radius_mm: 0.0,
            alternatives: 4,
            alternative_separation_mm: 10.0,
            proposed_entry_mm: None,
        }
    }
}

/// One obstacle layer as the plan used it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerSummary {
    pub layer: Layer,
    pub voxels: usize,
    pub volume_ml: f64,
    pub margin_mm: f64,
    /// Voxels inside the lesion radius left out of this layer.
    pub lesion_voxels_ignored: usize,
}

/// A plan: the chosen path and the best few others, all passing every hard limit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub chosen: PathTerms,
    pub alternatives: Vec<PathTerms>,
    /// Directions tried, those reaching the skin or the image edge, and those passing.
    pub candidates: usize,
    pub reachable: usize,
    pub passing: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the target {0:?} mm lies outside the CT")]
    TargetOutsideImage([f64; 3]),
    #[error("the target {0:?} mm lies outside the body")]
    TargetOutsideBody([f64; 3]),
    #[error("the target lies inside the {} layer", .0.name())]
    TargetInObstacle(Layer),
    #[error("the proposed entry {0:?} mm is the target itself: no direction")]
    DegenerateProposal([f64; 3]),
    #[error("no path leaves the target within {max_angle_deg:.0}° of the approach direction")]
    NoEntry { max_angle_deg: f64 },
    #[error("{}", refusal_summary(.best, *.reachable, .counts))]
    NoSafePath { best: Box<PathTerms>, reachable: usize, counts: Vec<(String, usize)> },
}

impl PlanError {
    /// The obstacle layer that blocked the plan, if one did.
    pub fn refused_layer(&self) -> Option<Layer> {
        match self {
            PlanError::TargetInObstacle(l) => Some(*l),
            PlanError::NoSafePath { best, .. } => best.refused_layer(),
            _ => None,
        }
    }
}

fn refusal_summary(best: &PathTerms, reachable: usize, counts: &[(String, usize)]) -> String {
    let why: Vec<String> = best.refusals.iter().map(|r| r.to_string()).collect();
    if reachable <= 1 {
        return format!("the path is refused: {}", why.join("; "));
    }
    let tally: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "no safe path: none of {reachable} paths passes every limit ({}); the best is refused because it {}",
        tally.join(", "),
        why.join("; ")
    )
}

/// Everything a planning run produced: the layers as used (after the lesion exception, for writing
/// and display), their summaries, and the plan or why there is none.
#[derive(Debug)]
pub struct Planning {
    pub anatomy: CtAnatomy,
    pub layers: Vec<LayerSummary>,
    pub result: Result<Plan, PlanError>,
}

/// Layers whose voxels inside the lesion are the lesion itself.
fn excepted_in_lesion(layer: Layer) -> bool {
    matches!(layer, Layer::NetworkVessels | Layer::LungVessels | Layer::Airways | Layer::ContrastVessels)
}

/// Plans the straight path to `target_mm` (CT LPS mm) on the CT `hu` with the network's `labels`
/// (same grid; vessels > 0).
pub fn plan_on_ct(hu: &Volume<f32>, labels: &Volume<u8>, target_mm: Point3<f64>, o: &PlannerOptions) -> Planning {
    let g = &hu.geometry;
    let mut anatomy = ct_anatomy(hu, labels, &o.obstacles);
    let voxel_ml = g.spacing_mm.iter().product::<f64>() / 1000.0;
    let [nx, ny, _] = g.dims;
    let mut layers = Vec::with_capacity(anatomy.layers.len());
    for l in &mut anatomy.layers {
        let mut ignored = 0;
        if o.lesion_radius_mm > 0.0 && excepted_in_lesion(l.layer) {
            for (v, m) in l.mask.iter_mut().enumerate() {
                if *m {
                    let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
                    if (g.index_to_patient([i as f64, j as f64, k as f64]) - target_mm).norm() <= o.lesion_radius_mm {
                        *m = false;
                        ignored += 1;
                    }
                }
            }
        }
        let voxels = l.mask.iter().filter(|m| **m).count();
        layers.push(LayerSummary {
            layer: l.layer,
            voxels,
            volume_ml: voxels as f64 * voxel_ml,
            margin_mm: o.margins.get(l.layer),
            lesion_voxels_ignored: ignored,
        });
    }
    let result = search(hu, &anatomy, target_mm, o);
    Planning { anatomy, layers, result }
}

fn search(hu: &Volume<f32>, anatomy: &CtAnatomy, target: Point3<f64>, o: &PlannerOptions) -> Result<Plan, PlanError> {
    let g = &hu.geometry;
    let t = [target.x, target.y, target.z];
    let target_voxel = nearest_voxel(g, &target).ok_or(PlanError::TargetOutsideImage(t))?;
    if anatomy.outside[target_voxel] {
        return Err(PlanError::TargetOutsideBody(t));
    }
    // Worst layer first, as the refusals order them.
    for layer in SEVERITY {
        if anatomy.layer(layer).is_some_and(|l| l.mask[target_voxel]) {
            return Err(PlanError::TargetInObstacle(layer));
        }
    }
    let directions: Vec<Vector3<f64>> = match o.proposed_entry_mm {
        Some(e) => {
            let d = Point3::from(e) - target;
            if d.norm() < 1e-6 {
                return Err(PlanError::DegenerateProposal(e));
            }
            vec![d.normalize()]
        }
        None => cone_directions(&o.approach_direction, o.max_angle_deg, o.directions),
    };
    let field = Field { geometry: g, anatomy, clearance: clearance_maps(anatomy, g.dims, g.spacing_mm) };
    let judging = Judging {
        margins: &o.margins,
        limits: &o.limits,
        weights: &o.weights,
        approach_direction: o.approach_direction,
        step_mm: o.step_mm,
        max_march_mm: (o.limits.instrument_length_mm * 2.0).max(300.0),
        entry_region_mm: o.entry_region_mm,
        lesion_radius_mm: o.lesion_radius_mm,
    };
    let judged: Vec<PathTerms> = directions.iter().filter_map(|d| judge_path(&field, &target, d, &judging)).collect();
    if judged.is_empty() {
        return Err(PlanError::NoEntry { max_angle_deg: o.max_angle_deg });
    }
    let reachable = judged.len();
    let (mut passing, mut refused): (Vec<PathTerms>, Vec<PathTerms>) = judged.into_iter().partition(|p| p.passes());
    if passing.is_empty() {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for p in &refused {
            for r in &p.refusals {
                match counts.iter_mut().find(|(k, _)| *k == r.kind()) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((r.kind(), 1)),
                }
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1));
        // The best refused path: fewest failed limits, then the lowest cost.
        refused.sort_by(|a, b| a.refusals.len().cmp(&b.refusals.len()).then(a.cost.total_cmp(&b.cost)));
        let best = refused.swap_remove(0);
        return Err(PlanError::NoSafePath { best: Box::new(best), reachable, counts });
    }
    passing.sort_by(|a, b| a.cost.total_cmp(&b.cost));
    let n_passing = passing.len();
    let mut picked: Vec<PathTerms> = Vec::with_capacity(o.alternatives + 1);
    for p in passing {
        if picked.len() > o.alternatives {
            break;
        }
        let apart = picked
            .iter()
            .all(|q| (Point3::from(q.entry_mm) - Point3::from(p.entry_mm)).norm() >= o.alternative_separation_mm);
        if apart {
            picked.push(p);
        }
    }
    let chosen = picked.remove(0);
    Ok(Plan { chosen, alternatives: picked, candidates: directions.len(), reachable, passing: n_passing })
}

/// Exact clearance [mm] from every voxel to each non-empty layer (two layers at a time).
fn clearance_maps(anatomy: &CtAnatomy, dims: [usize; 3], spacing: [f64; 3]) -> Vec<(Layer, Option<Vec<f32>>)> {
    let one = |mask: &[bool]| -> Option<Vec<f32>> {
        mask.iter().any(|m| *m).then(|| squared_distance_mm2(mask, dims, spacing).into_iter().map(f32::sqrt).collect())
    };
    let mut out = Vec::with_capacity(anatomy.layers.len());
    for pair in anatomy.layers.chunks(2) {
        let maps: Vec<Option<Vec<f32>>> = std::thread::scope(|s| {
            let handles: Vec<_> = pair.iter().map(|l| s.spawn(|| one(&l.mask))).collect();
            // A failed transform must not read as an empty layer (infinite clearance): pass the panic on,
            // so the caller reports planning as failed instead of vouching for a path.
            handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        for (l, m) in pair.iter().zip(maps) {
            out.push((l.layer, m));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::Refusal;
    use needle_nav_core::volume::Geometry;

    /// A body cylinder (axis along z, radius 60 mm) at 40 HU, a target at the centre and a vessel
    /// tube (radius 4 mm, along z) 20 mm anterior (-y) of it, labelled by the "network".
    fn body_with_vessel() -> (Volume<f32>, Volume<u8>, Point3<f64>) {
        let g = Geometry::axial_centred([81, 81, 41], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
        let mut hu = Volume::filled(g.clone(), -1000.0f32);
        let mut lab = Volume::filled(g.clone(), 0u8);
        for k in 0..41 {
            for j in 0..81 {
                for i in 0..81 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let v = g.offset(i, j, k);
                    if (p.x * p.x + p.y * p.y).sqrt() <= 60.0 {
                        hu.data[v] = 40.0;
                    }
                    if (p.x * p.x + (p.y + 20.0).powi(2)).sqrt() <= 4.0 {
                        lab.data[v] = 2;
                        hu.data[v] = 40.0;
                    }
                }
            }
        }
        (hu, lab, Point3::new(0.0, 0.0, 0.0))
    }

    fn options() -> PlannerOptions {
        PlannerOptions {
            margins: LayerMargins { network_vessels_mm: 3.0, ..Default::default() },
            limits: HardLimits { instrument_length_mm: 80.0, rib_margin_mm: 0.0, ..Default::default() },
            ..Default::default()
        }
    }

    fn clearance(p: &PathTerms, layer: Layer) -> f64 {
        p.clearance_mm.iter().find(|(l, _)| *l == layer).map(|(_, c)| *c).unwrap()
    }

    #[test]
    fn the_path_goes_around_the_vessel_with_the_clearance_the_geometry_allows() {
        let (hu, lab, target) = body_with_vessel();
        let plan = plan_on_ct(&hu, &lab, target, &options()).result.unwrap();
        let c = &plan.chosen;
        // Straight anterior is blocked. A path at angle a from -y passes the vessel axis (20 mm
        // away) at 20 sin(a); minus the voxel centres' ~4 mm radius, and a <= 45°: at most ~10 mm.
        assert!(c.approach_angle_deg > 10.0, "{c:?}");
        let cv = clearance(c, Layer::NetworkVessels);
        assert!(cv >= 3.0 && cv <= 20.0 * 45f64.to_radians().sin(), "{c:?}");
        // The entry is on the skin (radius 60 mm), the length matches, nothing else is near.
        let e = Point3::from(c.entry_mm);
        assert!(((e.x * e.x + e.y * e.y).sqrt() - 60.0).abs() < 2.5, "{c:?}");
        assert!((c.length_mm - (e - target).norm()).abs() < 1e-9 && c.reaches_skin);
        assert_eq!(c.nearest_layer, Some(Layer::NetworkVessels));
        assert!(clearance(c, Layer::Mediastinum).is_infinite() && c.lung_length_mm == 0.0 && c.pleural_crossings == 0);
        // Alternatives pass too, cost no less, entries apart.
        assert!(!plan.alternatives.is_empty());
        for a in &plan.alternatives {
            assert!(a.passes() && a.cost >= c.cost);
            assert!((Point3::from(a.entry_mm) - e).norm() >= 10.0);
        }
        assert!(plan.passing <= plan.reachable && plan.reachable <= plan.candidates);
    }

    #[test]
    fn refusals_say_why_and_name_the_layer() {
        let (hu, lab, target) = body_with_vessel();
        let strict =
            PlannerOptions { margins: LayerMargins { network_vessels_mm: 30.0, ..Default::default() }, ..options() };
        match plan_on_ct(&hu, &lab, target, &strict).result {
            Err(e @ PlanError::NoSafePath { .. }) => {
                assert_eq!(e.refused_layer(), Some(Layer::NetworkVessels));
                assert!(e.to_string().contains("network_vessels"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // The proposed straight anterior path goes through the vessel.
        let through = PlannerOptions { proposed_entry_mm: Some([0.0, -60.0, 0.0]), ..options() };
        match plan_on_ct(&hu, &lab, target, &through).result {
            Err(PlanError::NoSafePath { best, .. }) => {
                assert!(
                    matches!(best.refusals[0], Refusal::TooClose { layer: Layer::NetworkVessels, clearance_mm, .. } if clearance_mm == 0.0)
                );
            }
            other => panic!("{other:?}"),
        }
        let short =
            PlannerOptions { limits: HardLimits { instrument_length_mm: 30.0, ..options().limits }, ..options() };
        match plan_on_ct(&hu, &lab, target, &short).result {
            Err(PlanError::NoSafePath { best, .. }) => {
                assert!(best.refusals.iter().any(|r| matches!(r, Refusal::TooLong { .. })), "{best:?}")
            }
            other => panic!("{other:?}"),
        }
        let o = options();
        assert_eq!(
            plan_on_ct(&hu, &lab, Point3::new(0.0, -20.0, 0.0), &o).result.unwrap_err(),
            PlanError::TargetInObstacle(Layer::NetworkVessels)
        );
        assert!(matches!(
            plan_on_ct(&hu, &lab, Point3::new(0.0, 0.0, 500.0), &o).result,
            Err(PlanError::TargetOutsideImage(_))
        ));
        assert!(matches!(
            plan_on_ct(&hu, &lab, Point3::new(70.0, 70.0, 0.0), &o).result,
            Err(PlanError::TargetOutsideBody(_))
        ));
    }

    #[test]
    fn network_labels_inside_the_lesion_are_not_obstacles_and_are_counted() {
        let (hu, mut lab, target) = body_with_vessel();
        let g = lab.geometry.clone();
        let mut blob = 0;
        for v in 0..lab.data.len() {
            let (i, j, k) = (v % 81, (v / 81) % 81, v / (81 * 81));
            if (g.index_to_patient([i as f64, j as f64, k as f64]) - target).norm() <= 6.0 {
                lab.data[v] = 1;
                blob += 1;
            }
        }
        assert_eq!(
            plan_on_ct(&hu, &lab, target, &options()).result.unwrap_err(),
            PlanError::TargetInObstacle(Layer::NetworkVessels)
        );
        let lesion = PlannerOptions { lesion_radius_mm: 8.0, ..options() };
        let planning = plan_on_ct(&hu, &lab, target, &lesion);
        let network = planning.layers.iter().find(|l| l.layer == Layer::NetworkVessels).unwrap();
        assert_eq!(network.lesion_voxels_ignored, blob);
        assert!(clearance(&planning.result.unwrap().chosen, Layer::NetworkVessels) >= 3.0);
    }

    /// A torso with one spherical lung (radius 40 mm) whose centre is 30 mm anterior of the
    /// target... placed so that closed-form lung lengths and pleural angles can be checked.
    #[test]
    fn lung_length_crossings_and_pleural_angle_follow_the_geometry() {
        // Body: cylinder radius 100 mm. Lung: sphere radius 40 mm centred at the origin (the
        // target), so a straight path out crosses exactly 40 mm of lung, enters the pleura once and
        // perpendicularly (the sphere's normal is radial).
        let g = Geometry::axial_centred([101, 101, 61], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
        let mut hu = Volume::filled(g.clone(), -1000.0f32);
        for k in 0..61 {
            for j in 0..101 {
                for i in 0..101 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let v = g.offset(i, j, k);
                    if (p.x * p.x + p.y * p.y).sqrt() <= 95.0 {
                        hu.data[v] = if p.coords.norm() <= 40.0 { -850.0 } else { 40.0 };
                        // A solid nodule, radius 6 mm, at (0, 0, 20): a lung lesion.
                        if (p - Point3::new(0.0, 0.0, 20.0)).norm() <= 6.0 {
                            hu.data[v] = 30.0;
                        }
                    }
                }
            }
        }
        let lab = Volume::filled(g.clone(), 0u8);
        let target = Point3::new(0.0, 0.0, 0.0);
        let o = PlannerOptions {
            obstacles: ObstacleOptions { min_lung_volume_ml: 10.0, ..Default::default() },
            limits: HardLimits { rib_margin_mm: 0.0, ..Default::default() },
            directions: 200,
            ..Default::default()
        };
        let planning = plan_on_ct(&hu, &lab, target, &o);
        let plan = planning.result.unwrap();
        let c = &plan.chosen;
        assert_eq!(c.pleural_crossings, 1, "{c:?}");
        // Samples every 0.5 mm from s = 0.5 to the pleura at 40 mm, give or take a voxel (2 mm).
        assert!((c.lung_length_mm - 40.0).abs() <= 2.5, "{c:?}");
        assert!(c.pleural_angle_deg.unwrap() < 20.0, "{c:?}");
        assert!((c.length_mm - 95.0).abs() < 3.0, "{c:?}");
        // The nodule as the target: leaving it into the lung is no pleural crossing.
        let nodule = PlannerOptions { lesion_radius_mm: 8.0, ..o.clone() };
        let c = plan_on_ct(&hu, &lab, Point3::new(0.0, 0.0, 20.0), &nodule).result.unwrap().chosen;
        assert_eq!(c.pleural_crossings, 1, "{c:?}");
        // A target beyond the lung, reached through it, crosses the pleura twice: refused.
        let beyond = PlannerOptions { proposed_entry_mm: Some([0.0, -95.0, 0.0]), ..o.clone() };
        let behind = Point3::new(0.0, 60.0, 0.0);
        match plan_on_ct(&hu, &lab, behind, &beyond).result {
            Err(PlanError::NoSafePath { best, .. }) => {
                assert_eq!(best.pleural_crossings, 2, "{best:?}");
                assert!(best.refusals.iter().any(|r| matches!(r, Refusal::PleuralCrossings { crossings: 2, .. })));
            }
            other => panic!("{other:?}"),
        }
        // Skimming the sphere: a path tangent-ish to the lung meets the pleura obliquely.
        let oblique = PlannerOptions { proposed_entry_mm: Some([35.0, -95.0, 0.0]), ..o };
        let off_axis = Point3::new(35.0, 0.0, 0.0);
        let planning = plan_on_ct(&hu, &lab, off_axis, &oblique);
        let p = match planning.result {
            Ok(plan) => plan.chosen,
            Err(PlanError::NoSafePath { best, .. }) => *best,
            other => panic!("{other:?}"),
        };
        // Leaving the sphere from (35, 0, 0) along -y: exits at y = -sqrt(40² - 35²) = -19.4 where
        // the normal makes acos(19.4 / 40) = 61° with -y.
        let a = p.pleural_angle_deg.unwrap();
        assert!((a - 61.0).abs() < 12.0, "{p:?}");
    }
}
