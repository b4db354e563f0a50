//! The risk terms of one straight needle path, judged against the obstacle layers and the lungs:
//! clearance per layer, aerated lung crossed, pleural and fissure crossings, the needle's angle to
//! the pleura where it enters the lung, the chest-wall (intercostal) clearance from bone, and the
//! length against the instrument. Hard limits refuse a path (each refusal says which limit, and
//! which layer); the paths that pass are ranked by a weighted cost.

use super::nearest_voxel;
use super::obstacles::{CtAnatomy, Layer};
use nalgebra::{Point3, Vector3};
use needle_nav_core::volume::Geometry;

/// The clearance a path must keep from each layer [mm].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerMargins {
    pub network_vessels_mm: f64,
    pub bone_mm: f64,
    pub mediastinum_mm: f64,
    pub lung_vessels_mm: f64,
    pub airways_mm: f64,
    pub contrast_vessels_mm: f64,
}

impl Default for LayerMargins {
    fn default() -> Self {
        LayerMargins {
            network_vessels_mm: 5.0,
            bone_mm: 3.0,
            mediastinum_mm: 5.0,
            lung_vessels_mm: 2.0,
            airways_mm: 3.0,
            contrast_vessels_mm: 5.0,
        }
    }
}

impl LayerMargins {
    pub fn get(&self, layer: Layer) -> f64 {
        match layer {
            Layer::NetworkVessels => self.network_vessels_mm,
            Layer::Bone => self.bone_mm,
            Layer::Mediastinum => self.mediastinum_mm,
            Layer::LungVessels => self.lung_vessels_mm,
            Layer::Airways => self.airways_mm,
            Layer::ContrastVessels => self.contrast_vessels_mm,
        }
    }
}

/// Limits that refuse a path outright.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HardLimits {
    /// Usable needle length [mm]: a longer skin-to-target path is refused.
    pub instrument_length_mm: f64,
    /// Most pleural crossings (entering or leaving a lung). 1: a lung target entered once; a path
    /// that leaves and re-enters a lung, or crosses a lung to reach something beyond, is refused.
    pub max_pleural_crossings: u32,
    /// Refuse a path that crosses a detected fissure.
    pub refuse_fissure_crossings: bool,
    /// Largest angle between the needle and the pleura's normal where it enters the lung [deg].
    pub max_pleural_angle_deg: f64,
    /// Smallest distance from bone along the chest-wall part of the path [mm]: entry between ribs.
    pub rib_margin_mm: f64,
    /// Chest-wall part when the path enters no lung: this far in from the skin [mm].
    pub chest_wall_depth_mm: f64,
}

impl Default for HardLimits {
    fn default() -> Self {
        HardLimits {
            instrument_length_mm: 150.0,
            max_pleural_crossings: 1,
            refuse_fissure_crossings: true,
            max_pleural_angle_deg: 60.0,
            rib_margin_mm: 4.0,
            chest_wall_depth_mm: 40.0,
        }
    }
}

/// Weights of the cost among paths that pass every hard limit (lower cost is better). Each term
/// is scaled to about 1 for a clearly undesirable value, so the weights compare like with like.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CostWeights {
    /// Per layer, 1 - clearance / comfortable_clearance_mm (0 once the path keeps that far).
    pub clearance: f64,
    pub comfortable_clearance_mm: f64,
    /// Per 10 mm of aerated lung crossed (the main pneumothorax risk factor).
    pub lung_length_per_10mm: f64,
    /// Per 90° between the needle and the pleural normal.
    pub pleural_angle_per_90deg: f64,
    /// Per 100 mm of path.
    pub length_per_100mm: f64,
    /// Per 90° from the preferred approach direction.
    pub approach_angle_per_90deg: f64,
}

impl Default for CostWeights {
    fn default() -> Self {
        CostWeights {
            clearance: 1.0,
            comfortable_clearance_mm: 15.0,
            lung_length_per_10mm: 1.0,
            pleural_angle_per_90deg: 0.5,
            length_per_100mm: 0.5,
            approach_angle_per_90deg: 0.2,
        }
    }
}

/// A hard limit a path fails.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "limit", rename_all = "snake_case")]
pub enum Refusal {
    TooClose { layer: Layer, clearance_mm: f64, margin_mm: f64 },
    PleuralCrossings { crossings: u32, max: u32 },
    FissureCrossing { crossings: u32 },
    TooLong { length_mm: f64, instrument_length_mm: f64 },
    RibMargin { clearance_mm: f64, margin_mm: f64 },
    PleuralAngle { angle_deg: f64, max_deg: f64 },
    OutsideEntryRegion,
    LeavesFieldOfView,
}

impl Refusal {
    /// Short name of the limit, for counts over many paths.
    pub fn kind(&self) -> String {
        match self {
            Refusal::TooClose { layer, .. } => format!("too close to {}", layer.name()),
            Refusal::PleuralCrossings { .. } => "too many pleural crossings".into(),
            Refusal::FissureCrossing { .. } => "crosses a fissure".into(),
            Refusal::TooLong { .. } => "longer than the instrument".into(),
            Refusal::RibMargin { .. } => "too close to a rib at the chest wall".into(),
            Refusal::PleuralAngle { .. } => "too oblique to the pleura".into(),
            Refusal::OutsideEntryRegion => "entry outside the entry region".into(),
            Refusal::LeavesFieldOfView => "leaves the CT before the skin".into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooClose { layer, clearance_mm, margin_mm } if *clearance_mm <= 0.0 => {
                write!(f, "passes through {} (margin {margin_mm:.1} mm)", layer.name())
            }
            Refusal::TooClose { layer, clearance_mm, margin_mm } => {
                write!(f, "{clearance_mm:.1} mm from {}, less than its {margin_mm:.1} mm margin", layer.name())
            }
            Refusal::PleuralCrossings { crossings, max } => {
                write!(f, "crosses the pleura {crossings} times (at most {max})")
            }
            Refusal::FissureCrossing { crossings } => write!(f, "crosses a lung fissure ({crossings}x)"),
            Refusal::TooLong { length_mm, instrument_length_mm } => {
                write!(
                    f,
                    "{length_mm:.0} mm from skin to target, longer than the {instrument_length_mm:.0} mm instrument"
                )
            }
            Refusal::RibMargin { clearance_mm, margin_mm } => {
                write!(
                    f,
                    "passes the chest wall {clearance_mm:.1} mm from bone, less than the {margin_mm:.1} mm rib margin"
                )
            }
            Refusal::PleuralAngle { angle_deg, max_deg } => {
                write!(f, "meets the pleura at {angle_deg:.0}° from its normal (at most {max_deg:.0}°)")
            }
            Refusal::OutsideEntryRegion => write!(f, "the skin entry lies outside the entry region"),
            Refusal::LeavesFieldOfView => {
                write!(f, "leaves the CT's field of view before reaching the skin: the part outside is unknown")
            }
        }
    }
}

/// Every term of one path. Clearances are in `CtAnatomy::layers` order; +inf where a layer is empty.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathTerms {
    /// Skin entry (last sample inside the body, or the last inside the image) and target, LPS [mm].
    pub entry_mm: [f64; 3],
    pub target_mm: [f64; 3],
    /// Unit vector from the target towards the entry.
    pub direction: [f64; 3],
    pub length_mm: f64,
    pub approach_angle_deg: f64,
    pub clearance_mm: Vec<(Layer, f64)>,
    pub min_clearance_mm: f64,
    pub nearest_layer: Option<Layer>,
    pub lung_length_mm: f64,
    pub pleural_crossings: u32,
    pub fissure_crossings: u32,
    /// None: the path enters no lung (or the pleura's normal is undefined there).
    pub pleural_angle_deg: Option<f64>,
    pub rib_clearance_mm: f64,
    pub reaches_skin: bool,
    /// Weighted cost; computed for every path, reported only for those that pass.
    pub cost: f64,
    /// Worst first; empty: the path passes.
    pub refusals: Vec<Refusal>,
}

impl PathTerms {
    pub fn passes(&self) -> bool {
        self.refusals.is_empty()
    }

    /// The obstacle layer that blocked the path, if any.
    pub fn refused_layer(&self) -> Option<Layer> {
        self.refusals.iter().find_map(|r| match r {
            Refusal::TooClose { layer, .. } => Some(*layer),
            _ => None,
        })
    }
}

/// What every path is judged against: the anatomy and one clearance map [mm] per layer (None:
/// the layer is empty), on the CT's grid.
pub struct Field<'a> {
    pub geometry: &'a Geometry,
    pub anatomy: &'a CtAnatomy,
    pub clearance: Vec<(Layer, Option<Vec<f32>>)>,
}

/// How paths are judged.
pub struct Judging<'a> {
    pub margins: &'a LayerMargins,
    pub limits: &'a HardLimits,
    pub weights: &'a CostWeights,
    pub approach_direction: Vector3<f64>,
    pub step_mm: f64,
    /// Farthest the march goes looking for the skin [mm] (beyond the instrument, so that a too-long
    /// path is reported as such rather than silently missing).
    pub max_march_mm: f64,
    pub entry_region_mm: Option<[f64; 6]>,
    /// Samples this close to the target are the lesion: they do not count for pleural crossings [mm].
    pub lesion_radius_mm: f64,
}

/// Severity order of the layers when several are too close: the worst to hit first.
pub(crate) const SEVERITY: [Layer; 6] = [
    Layer::Mediastinum,
    Layer::NetworkVessels,
    Layer::ContrastVessels,
    Layer::LungVessels,
    Layer::Airways,
    Layer::Bone,
];

/// Judges the straight path from `target` along `direction` (unit, towards the skin). None: the
/// march found not a single sample inside the body and image beyond the target.
pub fn judge_path(field: &Field, target: &Point3<f64>, direction: &Vector3<f64>, j: &Judging) -> Option<PathTerms> {
    let g = field.geometry;
    let a = field.anatomy;
    // Samples from the target outwards, each the nearest voxel; stop at the first outside the body
    // (the skin) or outside the image (field of view).
    let mut voxels = Vec::new();
    let mut reaches_skin = false;
    let mut s = 0.0;
    while s <= j.max_march_mm + j.step_mm {
        let p = target + direction * s;
        let Some(v) = nearest_voxel(g, &p) else { break };
        if a.outside[v] {
            reaches_skin = true;
            break;
        }
        voxels.push(v);
        s += j.step_mm;
    }
    if voxels.len() < 2 {
        return None;
    }
    let last = voxels.len() - 1;
    let entry = target + direction * (last as f64 * j.step_mm);
    let length_mm = (entry - target).norm();

    let mut clearance_mm = Vec::with_capacity(field.clearance.len());
    for (layer, map) in &field.clearance {
        let c = match map {
            None => f64::INFINITY,
            Some(m) => voxels.iter().map(|v| m[*v] as f64).fold(f64::INFINITY, f64::min),
        };
        clearance_mm.push((*layer, c));
    }
    let (nearest_layer, min_clearance_mm) =
        clearance_mm
            .iter()
            .fold((None, f64::INFINITY), |(nl, mc), (l, c)| if *c < mc { (Some(*l), *c) } else { (nl, mc) });

    let lung_length_mm = voxels[1..].iter().filter(|v| a.aerated_lung[**v]).count() as f64 * j.step_mm;
    // Walking in from the skin: every change between outside and inside the pleura is a crossing.
    // The lesion's own samples do not count: a solid lesion is not aerated lung, but entering it from
    // the lung is no pleural crossing.
    let first_kept = if j.lesion_radius_mm > 0.0 { (j.lesion_radius_mm / j.step_mm).floor() as usize + 1 } else { 0 };
    let inside: Vec<bool> = voxels[first_kept.min(last)..].iter().rev().map(|v| a.lung_region[*v]).collect();
    let pleural_crossings = inside.windows(2).filter(|w| w[0] != w[1]).count() as u32;
    let first_lung = inside.iter().position(|x| *x);
    let fissure_crossings = if a.fissures_detected {
        let f: Vec<bool> = voxels.iter().map(|v| a.fissures[*v]).collect();
        f.windows(2).filter(|w| !w[0] && w[1]).count() as u32 + u32::from(f[0])
    } else {
        0
    };
    // The pleural normal where the needle first enters the lung: from the centre of the lung
    // voxels around the crossing to the crossing (pointing out of the lung).
    let pleural_angle_deg = first_lung.and_then(|k| {
        let p = target + direction * ((last - k) as f64 * j.step_mm);
        let outward = local_outward_normal(g, &a.lung_region, &p, 5.0)?;
        Some(direction.dot(&outward).clamp(-1.0, 1.0).acos().to_degrees())
    });
    // The chest wall: from the skin in to the pleura, or the first chest_wall_depth_mm.
    let wall_samples = first_lung.unwrap_or(((j.limits.chest_wall_depth_mm / j.step_mm).ceil() as usize).max(1));
    let rib_clearance_mm = match field.clearance.iter().find(|(l, _)| *l == Layer::Bone) {
        Some((_, Some(m))) => {
            voxels.iter().rev().take(wall_samples.max(1)).map(|v| m[*v] as f64).fold(f64::INFINITY, f64::min)
        }
        _ => f64::INFINITY,
    };
    let approach_angle_deg = direction.dot(&j.approach_direction.normalize()).clamp(-1.0, 1.0).acos().to_degrees();

    let mut refusals = Vec::new();
    for layer in SEVERITY {
        if let Some((_, c)) = clearance_mm.iter().find(|(l, _)| *l == layer) {
            let margin = j.margins.get(layer);
            if *c < margin {
                refusals.push(Refusal::TooClose { layer, clearance_mm: *c, margin_mm: margin });
            }
        }
    }
    if pleural_crossings > j.limits.max_pleural_crossings {
        refusals.push(Refusal::PleuralCrossings { crossings: pleural_crossings, max: j.limits.max_pleural_crossings });
    }
    if j.limits.refuse_fissure_crossings && fissure_crossings > 0 {
        refusals.push(Refusal::FissureCrossing { crossings: fissure_crossings });
    }
    if length_mm > j.limits.instrument_length_mm {
        refusals.push(Refusal::TooLong { length_mm, instrument_length_mm: j.limits.instrument_length_mm });
    }
    if rib_clearance_mm < j.limits.rib_margin_mm {
        refusals.push(Refusal::RibMargin { clearance_mm: rib_clearance_mm, margin_mm: j.limits.rib_margin_mm });
    }
    if let Some(angle) = pleural_angle_deg.filter(|a| *a > j.limits.max_pleural_angle_deg) {
        refusals.push(Refusal::PleuralAngle { angle_deg: angle, max_deg: j.limits.max_pleural_angle_deg });
    }
    let in_region = j.entry_region_mm.map_or(true, |r| {
        entry.x >= r[0] && entry.x <= r[1] && entry.y >= r[2] && entry.y <= r[3] && entry.z >= r[4] && entry.z <= r[5]
    });
    if !in_region {
        refusals.push(Refusal::OutsideEntryRegion);
    }
    if !reaches_skin {
        refusals.push(Refusal::LeavesFieldOfView);
    }

    let w = j.weights;
    let clearance_term: f64 =
        clearance_mm.iter().map(|(_, c)| (1.0 - c / w.comfortable_clearance_mm).clamp(0.0, 1.0)).sum();
    let cost = w.clearance * clearance_term
        + w.lung_length_per_10mm * lung_length_mm / 10.0
        + w.pleural_angle_per_90deg * pleural_angle_deg.unwrap_or(0.0) / 90.0
        + w.length_per_100mm * length_mm / 100.0
        + w.approach_angle_per_90deg * approach_angle_deg / 90.0;

    Some(PathTerms {
        entry_mm: [entry.x, entry.y, entry.z],
        target_mm: [target.x, target.y, target.z],
        direction: [direction.x, direction.y, direction.z],
        length_mm,
        approach_angle_deg,
        clearance_mm,
        min_clearance_mm,
        nearest_layer,
        lung_length_mm,
        pleural_crossings,
        fissure_crossings,
        pleural_angle_deg,
        rib_clearance_mm,
        reaches_skin,
        cost,
        refusals,
    })
}

/// Unit normal of `region`'s surface near `p`, pointing out of it: from the centroid of the region's
/// voxels within `radius_mm` towards `p`. None when the neighbourhood is all or nothing.
fn local_outward_normal(g: &Geometry, region: &[bool], p: &Point3<f64>, radius_mm: f64) -> Option<Vector3<f64>> {
    let c = g.patient_to_index(p);
    let r = [0, 1, 2].map(|a| (radius_mm / g.spacing_mm[a]).ceil() as i64);
    let mut sum = Vector3::zeros();
    let (mut inside, mut total) = (0usize, 0usize);
    for dk in -r[2]..=r[2] {
        for dj in -r[1]..=r[1] {
            for di in -r[0]..=r[0] {
                let idx = [c[0].round() as i64 + di, c[1].round() as i64 + dj, c[2].round() as i64 + dk];
                if (0..3).any(|a| idx[a] < 0 || idx[a] >= g.dims[a] as i64) {
                    continue;
                }
                let q = g.index_to_patient([idx[0] as f64, idx[1] as f64, idx[2] as f64]);
                if (q - p).norm() > radius_mm {
                    continue;
                }
                total += 1;
                if region[g.offset(idx[0] as usize, idx[1] as usize, idx[2] as usize)] {
                    inside += 1;
                    sum += q.coords;
                }
            }
        }
    }
    if inside == 0 || inside == total {
        return None;
    }
    let centroid = sum / inside as f64;
    let n = p.coords - centroid;
    (n.norm() > 1e-9).then(|| n.normalize())
}
