//! Obstacle layers computed from the CT itself, on its own grid, independent of the vessel
//! network's recall. The planner takes their union with the network's labels: the network can
//! add obstacles, never remove them. Each layer is kept apart so a refusal names the layer.
//! Slices are assumed axial (k along the patient's z); superior and patient-right are read from
//! the geometry, not assumed from the index order.
//!
//! How each part is found:
//! - **Outside**: [`outside_body`] (per-slice air connected to the border), except that a
//!   border-connected region of lung density (median above -950 HU) stays inside: on a CT
//!   cropped through the chest the lungs touch the image edge ([`outside_air`]).
//! - **Airways**: the trachea is a dark, round, 50-800 mm² region within 30 mm of the body's
//!   midline in the top third of the slices holding lung-sized air. From it the lumen is grown
//!   (6-connected) on the CT smoothed by 0.6 mm, through voxels below a threshold that starts
//!   60 HU below the parenchyma's median and steps down by 15 HU while the tree exceeds
//!   `max_airway_volume_ml` (leakage into the lung), to 50 HU below `airway_lumen_hu`. The layer
//!   keeps the lumen where a ball of `airway_min_diameter_mm` fits (opening by two distance
//!   transforms, to within half a voxel).
//! - **Aerated lung**: body voxels below `lung_hu`, minus the airway lumen and a 2 mm rim of its
//!   wall (else the rim joins the lungs along the trachea), in 6-connected components of at least
//!   `min_lung_volume_ml` whose mean is above -960 HU (pure gas is stomach or bowel).
//! - **Lung region**: per lung, holes filled per axial slice, a 3 mm closing, holes again; voxels
//!   one lung's filling adds that touch another lung are dropped, so the lungs stay separate.
//! - **Mediastinum**: per axial slice, the convex hull of the lung regions minus the lungs,
//!   inside the body. Below the right lung's largest cross-section, hull voxels on the patient's
//!   right (in the right lung's own hull or right of the midline between the lungs) with right
//!   lung above them in their column within 50 mm are left out: the liver dome under the lung's
//!   crescent. Known limits: the same is not done on the left (it would cut the heart under the
//!   lingula and in the cardiac notch), so the stomach fundus and spleen under the left dome
//!   become mediastinum (no-go, conservative), as does the liver under the heart between the
//!   lung bases (heart, not lung, above it); the rule stops at the right lung's largest
//!   cross-section so the right hilum and atrium, under the upper lobe, stay in; the spine and paravertebral tissue between the
//!   lungs' posterior edges are inside the hull; a slice with one lung only gets that lung's
//!   concavities; the anterior chord between the lungs' front tips cuts the heart where it
//!   touches the chest wall in front of the chord.
//! - **Lung vessels**: Frangi vesselness for bright tubes ([`super::vesselness`]) at four
//!   scales (sigma = d / (2 sqrt 2) for d from the smallest to the largest diameter), with an
//!   along-axis gradient penalty that rejects the shells of blobs, and a probe scale below the
//!   smallest: where the tube answers most strongly at the probe, it is thinner than the
//!   minimum and not counted. Voxels above `lung_vessel_min_hu`, within 5 mm of the lung region,
//!   at or above `lung_vessel_vesselness`; kept as 6-connected components with at least 30 % of
//!   their voxels in the lung region (ribs along the pleura do not reach in).
//! - **Fissures**: the sheet measure (one large negative eigenvalue) at the smallest scale, in
//!   partial-volume voxels (-800..-300 HU) at least 4 mm inside the lung region and 2 mm from lung
//!   vessels, kept as connected sheets of at least `min_fissure_volume_ml`. On the real plain
//!   thorax (2 mm slices) none is found: the fissures there are too faint at this resolution.
//! - **Contrast vessels**: voxels in the HU window 6-connected, through the window, to the
//!   network's vessel voxels.
//!
//! Everything expensive (distance transforms, smoothing, Hessians) runs in the box of the
//! structure it concerns; smoothing and Hessians use two threads.

use super::morphology::{
    bounding_box, close_mm, convex_hull_slice, crop, dilate_mm, erode_mm, face_neighbours, fill_holes_per_slice,
    flood_slice, label_components, uncrop,
};
use super::outside_body;
use super::vesselness::{gaussian_blur, multiscale_shape, sigma_for_diameter};
use needle_nav_core::volume::{Geometry, Volume};
use std::time::Instant;

/// One obstacle layer: what blocked a path is reported by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The segmentation network's artery / vein / aorta labels.
    NetworkVessels,
    /// HU at or above the bone threshold.
    Bone,
    /// Soft tissue between the lungs (heart, great vessels, oesophagus, trachea): no-go.
    Mediastinum,
    /// Tubular structures brighter than the aerated lung around them (Hessian vesselness).
    LungVessels,
    /// Air tubes from the trachea down to a configured diameter.
    Airways,
    /// Contrast-enhanced blood: HU window voxels connected to the network's vessels.
    ContrastVessels,
}

impl Layer {
    pub const ALL: [Layer; 6] = [
        Layer::NetworkVessels,
        Layer::Bone,
        Layer::Mediastinum,
        Layer::LungVessels,
        Layer::Airways,
        Layer::ContrastVessels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layer::NetworkVessels => "network_vessels",
            Layer::Bone => "bone",
            Layer::Mediastinum => "mediastinum",
            Layer::LungVessels => "lung_vessels",
            Layer::Airways => "airways",
            Layer::ContrastVessels => "contrast_vessels",
        }
    }

    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObstacleOptions {
    /// Voxels above this HU are body (air connected to the slice border is outside).
    pub body_hu: f32,
    /// Aerated lung: body voxels below this HU, in components of at least `min_lung_volume_ml`.
    pub lung_hu: f32,
    pub min_lung_volume_ml: f64,
    /// Bone: HU at or above this.
    pub bone_hu: f32,
    /// Lung vessels: tubular bright structures in the lung of at least this diameter [mm] ...
    pub lung_vessel_min_diameter_mm: f64,
    /// ... scales searched up to this diameter [mm] ...
    pub lung_vessel_max_diameter_mm: f64,
    /// ... with a vesselness (0..1) of at least this.
    pub lung_vessel_vesselness: f64,
    /// Airways of at least this lumen diameter [mm] are obstacles.
    pub airway_min_diameter_mm: f64,
    /// Contrast vessels: HU window [low, high] grown from the network's vessel voxels.
    pub contrast_vessel_hu: [f32; 2],
    /// ... at most this far from the network's voxels [mm].
    pub contrast_vessel_max_growth_mm: f64,
    /// Look for lung fissures (plate-like sheets inside the lung); a path crossing one is refused.
    pub detect_fissures: bool,
    /// Lung vessels are denser than aerated lung: HU above this.
    pub lung_vessel_min_hu: f32,
    /// Airway lumen [HU], typical: the lumen is grown from the trachea through voxels darker than
    /// a threshold that starts 60 HU below the parenchyma's median and is tightened, while the
    /// tree leaks, down to 50 HU below this.
    pub airway_lumen_hu: f32,
    /// A grown airway tree larger than this [ml] has leaked into the lung.
    pub max_airway_volume_ml: f64,
    /// Fissures: sheet measure (0..1) at least this ...
    pub fissure_sheetness: f64,
    /// ... in connected sheets of at least this volume [ml].
    pub min_fissure_volume_ml: f64,
}

impl Default for ObstacleOptions {
    fn default() -> Self {
        ObstacleOptions {
            body_hu: -400.0,
            lung_hu: -400.0,
            min_lung_volume_ml: 100.0,
            bone_hu: 300.0,
            lung_vessel_min_diameter_mm: 3.0,
            lung_vessel_max_diameter_mm: 12.0,
            lung_vessel_vesselness: 0.1,
            airway_min_diameter_mm: 4.0,
            contrast_vessel_hu: [150.0, 700.0],
            contrast_vessel_max_growth_mm: 10.0,
            detect_fissures: true,
            lung_vessel_min_hu: -600.0,
            airway_lumen_hu: -950.0,
            max_airway_volume_ml: 300.0,
            fissure_sheetness: 0.5,
            min_fissure_volume_ml: 2.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObstacleLayer {
    pub layer: Layer,
    /// One flag per CT voxel (x fastest).
    pub mask: Vec<bool>,
}

/// What the planner knows about the patient from the CT: body, lungs and obstacle layers, all on
/// the CT's grid (one flag per voxel, x fastest).
#[derive(Debug, Clone)]
pub struct CtAnatomy {
    /// Outside the body (air connected to the slice border).
    pub outside: Vec<bool>,
    /// Aerated lung parenchyma (what "lung length crossed" counts).
    pub aerated_lung: Vec<bool>,
    /// The lungs inside their pleura: aerated lung with the vessels and nodules it encloses filled
    /// in. Entering it is a pleural crossing.
    pub lung_region: Vec<bool>,
    /// Fissures found inside the lungs (empty flags when detection is off or found none).
    pub fissures: Vec<bool>,
    pub fissures_detected: bool,
    pub layers: Vec<ObstacleLayer>,
}

impl CtAnatomy {
    pub fn layer(&self, layer: Layer) -> Option<&ObstacleLayer> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}

/// Derives the body, lungs and every obstacle layer from the CT (`hu`) and the network's labels
/// (same grid, vessels > 0).
pub fn ct_anatomy(hu: &Volume<f32>, network_labels: &Volume<u8>, o: &ObstacleOptions) -> CtAnatomy {
    ct_anatomy_timed(hu, network_labels, o).0
}

/// [`ct_anatomy`] with the seconds each step took, in order (for benchmarks and logs).
pub fn ct_anatomy_timed(
    hu: &Volume<f32>,
    network_labels: &Volume<u8>,
    o: &ObstacleOptions,
) -> (CtAnatomy, Vec<(&'static str, f64)>) {
    let g = &hu.geometry;
    let dims = g.dims;
    let n = hu.data.len();
    let mut timings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &'static str, timings: &mut Vec<(&'static str, f64)>| {
        timings.push((name, clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    let outside = outside_air(hu, o.body_hu);
    let low: Vec<bool> = hu.data.iter().zip(&outside).map(|(h, out)| !out && *h < o.lung_hu).collect();
    lap("body", &mut timings);

    let lumen = airway_lumen(hu, &outside, &low, o).unwrap_or_else(|| vec![false; n]);
    let airways = airway_layer(&lumen, g, o.airway_min_diameter_mm);
    lap("airways", &mut timings);

    let airway_and_wall = airway_wall(&lumen, g);
    let lungs = find_lungs(hu, &low, &airway_and_wall, o);
    let aerated_lung: Vec<bool> = lungs.labels.iter().map(|l| *l > 0).collect();
    let (lung_region, region_labels) = lung_region(&lungs, g);
    lap("lungs", &mut timings);

    let mediastinum = mediastinum(&lungs, &region_labels, &outside, g);
    lap("mediastinum", &mut timings);

    let shapes = lung_shapes(hu, &lung_region, &outside, o);
    let lung_vessels = shapes.as_ref().map_or_else(|| vec![false; n], |s| s.vessels.clone());
    lap("lung_vessels", &mut timings);

    let fissures = match (&shapes, o.detect_fissures) {
        (Some(s), true) => fissures(s, hu, &lung_region, &lung_vessels, g, o),
        _ => vec![false; n],
    };
    let fissures_detected = fissures.iter().any(|f| *f);
    lap("fissures", &mut timings);

    let network: Vec<bool> = network_labels.data.iter().map(|l| *l > 0).collect();
    let contrast = contrast_vessels(hu, &network, dims, o.contrast_vessel_hu, o.contrast_vessel_max_growth_mm);
    let bone: Vec<bool> = hu.data.iter().map(|h| *h >= o.bone_hu).collect();
    lap("contrast_vessels_and_bone", &mut timings);

    let layers = vec![
        ObstacleLayer { layer: Layer::NetworkVessels, mask: network },
        ObstacleLayer { layer: Layer::Bone, mask: bone },
        ObstacleLayer { layer: Layer::Mediastinum, mask: mediastinum },
        ObstacleLayer { layer: Layer::LungVessels, mask: lung_vessels },
        ObstacleLayer { layer: Layer::Airways, mask: airways },
        ObstacleLayer { layer: Layer::ContrastVessels, mask: contrast },
    ];
    let anatomy = CtAnatomy { outside, aerated_lung, lung_region, fissures, fissures_detected, layers };
    (anatomy, timings)
}

/// Median parenchyma-like air is near -850 HU; air outside the patient is near -1000 HU. A
/// region connected to the slice border whose median is above this is lung cut by the field
/// of view (a CT cropped around the heart), not outside air.
const OUTSIDE_AIR_MEDIAN_HU: f32 = -950.0;
/// Components of air with a mean below this are gas (stomach, bowel), not aerated lung.
const GAS_MEAN_HU: f64 = -960.0;

/// [`outside_body`], except that per slice a border-connected region of lung density (median
/// above [`OUTSIDE_AIR_MEDIAN_HU`]) stays inside: on a CT cropped through the lungs, they touch
/// the edge of the image.
pub fn outside_air(hu: &Volume<f32>, body_hu: f32) -> Vec<bool> {
    let [nx, ny, _] = hu.geometry.dims;
    let mut outside = outside_body(hu, body_hu);
    for (slice_hu, slice_out) in hu.data.chunks_exact(nx * ny).zip(outside.chunks_exact_mut(nx * ny)) {
        let mut seen = vec![false; nx * ny];
        for start in 0..nx * ny {
            if !slice_out[start] || seen[start] {
                continue;
            }
            let region = flood_slice(slice_out, nx, ny, [start]);
            let mut values: Vec<f32> = region.iter().zip(slice_hu).filter(|(r, _)| **r).map(|(_, h)| *h).collect();
            for (s, r) in seen.iter_mut().zip(&region) {
                *s |= *r;
            }
            let mid = values.len() / 2;
            let median = *values.select_nth_unstable_by(mid, f32::total_cmp).1;
            if median > OUTSIDE_AIR_MEDIAN_HU {
                for (out, r) in slice_out.iter_mut().zip(&region) {
                    if *r {
                        *out = false;
                    }
                }
            }
        }
    }
    outside
}

fn voxel_volume_ml(g: &Geometry) -> f64 {
    g.spacing_mm.iter().product::<f64>() / 1000.0
}

/// Rank of slice k from inferior (0) to superior.
fn superior_rank(g: &Geometry, k: usize) -> usize {
    let nz = g.dims[2];
    let up = g.index_to_patient([0.0, 0.0, 1.0]).z > g.index_to_patient([0.0, 0.0, 0.0]).z;
    if up {
        k
    } else {
        nz - 1 - k
    }
}

/// Smoothing before the airway search [mm]: lumen noise on a low-dose scan is ~50 HU per voxel
/// (halved by this), while a 3 mm lumen keeps its centre near -1000 HU.
const AIRWAY_SMOOTHING_MM: f64 = 0.6;
/// The airway wall's partial-volume rim [mm] around the grown lumen: removed from the lungs
/// with the lumen, else it joins the two lungs along the trachea and main bronchi.
const AIRWAY_WALL_MM: f64 = 2.0;
/// Threshold ladder step [HU] when the grown tree leaks.
const AIRWAY_THRESHOLD_STEP_HU: f32 = 15.0;

/// The airway lumen grown from the trachea, or None when no trachea is found or every
/// threshold leaks. Works on the box of the body's air, smoothed by [`AIRWAY_SMOOTHING_MM`].
/// The lumen threshold starts 60 HU below the parenchyma's median (darker than parenchyma) and
/// steps down to 50 HU below `airway_lumen_hu` while the tree grows past
/// `max_airway_volume_ml` (leakage into the lung).
fn airway_lumen(hu: &Volume<f32>, outside: &[bool], low: &[bool], o: &ObstacleOptions) -> Option<Vec<bool>> {
    let g = &hu.geometry;
    let b = bounding_box(low, g.dims)?.grown([3, 3, 3], g.dims);
    let origin = g.index_to_patient(b.lo.map(|x| x as f64));
    let cg = Geometry { dims: b.dims(), origin_mm: [origin.x, origin.y, origin.z], ..g.clone() };
    let smoothed = gaussian_blur(&crop(&hu.data, g.dims, &b), cg.dims, cg.spacing_mm, AIRWAY_SMOOTHING_MM);
    let ct = Volume { geometry: cg, data: smoothed };
    let out_c = crop(outside, g.dims, &b);
    let low_c = crop(low, g.dims, &b);
    let lumen = airway_lumen_in_box(&ct, &out_c, &low_c, o)?;
    Some(uncrop(&lumen, g.dims, &b, false))
}

fn airway_lumen_in_box(hu: &Volume<f32>, outside: &[bool], low: &[bool], o: &ObstacleOptions) -> Option<Vec<bool>> {
    let g = &hu.geometry;
    let [nx, ny, nz] = g.dims;
    let plane = nx * ny;
    let pixel_mm2 = g.spacing_mm[0] * g.spacing_mm[1];
    let median_low = median_hu(hu.data.iter().zip(low).filter(|(_, l)| **l).map(|(h, _)| *h))?;
    let start_hu = median_low - 60.0;
    let floor_hu = o.airway_lumen_hu - 50.0;
    // Slices holding lung-sized air, most superior first; the trachea is searched in the top third.
    let mut lung_slices: Vec<usize> = (0..nz)
        .filter(|&k| low[k * plane..(k + 1) * plane].iter().filter(|l| **l).count() as f64 * pixel_mm2 >= 500.0)
        .collect();
    lung_slices.sort_by_key(|&k| std::cmp::Reverse(superior_rank(g, k)));
    let search = lung_slices.len().div_ceil(3).max(1);
    let max_voxels = (o.max_airway_volume_ml / voxel_volume_ml(g)) as usize;
    let mut threshold = start_hu;
    while threshold >= floor_hu {
        let mut leaked = false;
        for &k in lung_slices.iter().take(search) {
            let Some(seed) = trachea_in_slice(hu, outside, k, threshold) else { continue };
            match grow(&hu.data, outside, g.dims, &seed, threshold, max_voxels) {
                // A tree of at least 1 ml (a few cm of trachea); smaller: try a lower slice.
                Some(lumen) if lumen.iter().filter(|l| **l).count() as f64 * voxel_volume_ml(g) >= 1.0 => {
                    return Some(lumen)
                }
                Some(_) => continue,
                None => {
                    leaked = true;
                    break;
                }
            }
        }
        if !leaked {
            // No trachea at this threshold; a darker one will not find one either.
            return None;
        }
        threshold -= AIRWAY_THRESHOLD_STEP_HU;
    }
    None
}

fn median_hu(values: impl Iterator<Item = f32>) -> Option<f32> {
    // Histogram in 1 HU bins over the air range: exact enough, no sort of millions.
    let mut hist = vec![0usize; 1200];
    let mut count = 0;
    for v in values {
        hist[((v + 1100.0).clamp(0.0, 1199.0)) as usize] += 1;
        count += 1;
    }
    let mut seen = 0;
    for (bin, c) in hist.iter().enumerate() {
        seen += c;
        if seen * 2 >= count && count > 0 {
            return Some(bin as f32 - 1100.0);
        }
    }
    None
}

/// Trachea candidate in slice k: a dark, roundish, trachea-sized region near the body's
/// midline, not touching the slice edge. Returns its voxels.
fn trachea_in_slice(hu: &Volume<f32>, outside: &[bool], k: usize, lumen_hu: f32) -> Option<Vec<usize>> {
    let g = &hu.geometry;
    let [nx, ny, _] = g.dims;
    let plane = nx * ny;
    let base = k * plane;
    let [sx, sy, _] = g.spacing_mm;
    let body: Vec<usize> = (0..plane).filter(|p| !outside[base + p]).collect();
    if body.is_empty() {
        return None;
    }
    let body_cx = body.iter().map(|p| (p % nx) as f64).sum::<f64>() / body.len() as f64;
    let dark: Vec<bool> = (0..plane).map(|p| !outside[base + p] && hu.data[base + p] < lumen_hu).collect();
    let mut seen = vec![false; plane];
    let mut best: Option<(f64, Vec<usize>)> = None;
    for start in 0..plane {
        if !dark[start] || seen[start] {
            continue;
        }
        let region = flood_slice(&dark, nx, ny, [start]);
        let pixels: Vec<usize> = region.iter().enumerate().filter(|(_, r)| **r).map(|(p, _)| p).collect();
        for &p in &pixels {
            seen[p] = true;
        }
        let area = pixels.len() as f64 * sx * sy;
        let (mut i0, mut i1, mut j0, mut j1) = (nx, 0, ny, 0);
        for &p in &pixels {
            i0 = i0.min(p % nx);
            i1 = i1.max(p % nx);
            j0 = j0.min(p / nx);
            j1 = j1.max(p / nx);
        }
        let box_area = ((i1 - i0 + 1) as f64 * sx) * ((j1 - j0 + 1) as f64 * sy);
        let touches_edge = i0 == 0 || j0 == 0 || i1 + 1 == nx || j1 + 1 == ny;
        let cx = pixels.iter().map(|p| (p % nx) as f64).sum::<f64>() / pixels.len() as f64;
        let off_midline_mm = (cx - body_cx).abs() * sx;
        // Trachea: 10-30 mm across (80-700 mm²), round (fills most of its box), on the midline.
        let trachea_like =
            (50.0..=800.0).contains(&area) && area >= 0.45 * box_area && !touches_edge && off_midline_mm <= 30.0;
        if trachea_like && best.as_ref().map_or(true, |(d, _)| off_midline_mm < *d) {
            best = Some((off_midline_mm, pixels.iter().map(|p| base + p).collect()));
        }
    }
    best.map(|(_, v)| v)
}

/// 6-connected region growing from `seed` through body voxels darker than `threshold`; None
/// when it passes `max_voxels` (leakage).
fn grow(
    hu: &[f32],
    outside: &[bool],
    dims: [usize; 3],
    seed: &[usize],
    threshold: f32,
    max_voxels: usize,
) -> Option<Vec<bool>> {
    let passable = |v: usize| !outside[v] && hu[v] < threshold;
    let mut inside = vec![false; hu.len()];
    let mut stack: Vec<usize> = seed.iter().copied().filter(|&v| passable(v)).collect();
    for &v in &stack {
        inside[v] = true;
    }
    let mut count = stack.len();
    while let Some(v) = stack.pop() {
        let neighbours = face_neighbours(v, dims);
        for w in neighbours.into_iter().flatten() {
            if !inside[w] && passable(w) {
                inside[w] = true;
                count += 1;
                if count > max_voxels {
                    return None;
                }
                stack.push(w);
            }
        }
    }
    Some(inside)
}

/// The lumen and its wall's partial-volume rim ([`AIRWAY_WALL_MM`]), in the lumen's box.
fn airway_wall(lumen: &[bool], g: &Geometry) -> Vec<bool> {
    let dims = g.dims;
    let Some(b) = bounding_box(lumen, dims) else { return vec![false; lumen.len()] };
    let b = b.grown([0, 1, 2].map(|a| (AIRWAY_WALL_MM / g.spacing_mm[a]).ceil() as usize + 1), dims);
    let grown = dilate_mm(&crop(lumen, dims, &b), b.dims(), g.spacing_mm, AIRWAY_WALL_MM);
    uncrop(&grown, dims, &b, false)
}

/// The lumen where a ball of `min_diameter_mm` fits (opening), computed in the lumen's box.
fn airway_layer(lumen: &[bool], g: &Geometry, min_diameter_mm: f64) -> Vec<bool> {
    let dims = g.dims;
    let Some(b) = bounding_box(lumen, dims) else { return vec![false; lumen.len()] };
    let b = b.grown([2, 2, 2], dims);
    let cropped = crop(lumen, dims, &b);
    // Ball centres at least the radius less half a voxel from the nearest non-lumen voxel centre:
    // the lumen's surface lies about half a voxel beyond its outermost voxel centres, and the
    // smoothed threshold already runs inside the wall's partial volume.
    let half_voxel = 0.5 * g.spacing_mm.iter().copied().fold(f64::INFINITY, f64::min);
    let radius = min_diameter_mm / 2.0;
    let centres = erode_mm(&cropped, b.dims(), g.spacing_mm, (radius - half_voxel).max(0.0));
    let balls = dilate_mm(&centres, b.dims(), g.spacing_mm, radius);
    let opened: Vec<bool> = balls.iter().zip(&cropped).map(|(ball, lumen)| *ball && *lumen).collect();
    uncrop(&opened, dims, &b, false)
}

/// Aerated lungs: one label per lung (1..), and which side each is on.
struct Lungs {
    labels: Vec<u8>,
    /// Per label (index label - 1): true for the patient's right lung (smaller LPS x).
    right: Vec<bool>,
    /// LPS x [mm] between the lungs (the volume-weighted mean of their centroids).
    midline_x: f64,
}

fn find_lungs(hu: &Volume<f32>, low: &[bool], lumen: &[bool], o: &ObstacleOptions) -> Lungs {
    let g = &hu.geometry;
    let [nx, ny, _] = g.dims;
    let air: Vec<bool> = low.iter().zip(lumen).map(|(l, a)| *l && !*a).collect();
    let (labels, sizes) = label_components(&air, g.dims);
    let min_voxels = (o.min_lung_volume_ml / voxel_volume_ml(g)).ceil() as usize;
    let mut hu_sum = vec![0.0f64; sizes.len()];
    let mut x_sum = vec![0.0f64; sizes.len()];
    for (v, l) in labels.iter().enumerate().filter(|(_, l)| **l > 0) {
        let l = *l as usize;
        if sizes[l] >= min_voxels {
            hu_sum[l] += hu.data[v] as f64;
            x_sum[l] += g.index_to_patient([(v % nx) as f64, ((v / nx) % ny) as f64, 0.0]).x;
        }
    }
    let mut kept: Vec<(usize, f64)> = (1..sizes.len())
        .filter(|&l| sizes[l] >= min_voxels && hu_sum[l] / sizes[l] as f64 > GAS_MEAN_HU)
        .map(|l| (l, x_sum[l] / sizes[l] as f64))
        .collect();
    // At most 254 lungs in a u8 (255 marks contested voxels): the largest.
    kept.sort_by_key(|(l, _)| std::cmp::Reverse(sizes[*l]));
    kept.truncate(254);
    let total: f64 = kept.iter().map(|(l, _)| sizes[*l] as f64).sum();
    let midline = kept.iter().map(|(l, x)| x * sizes[*l] as f64).sum::<f64>() / total.max(1.0);
    let mut new_label = vec![0u8; sizes.len()];
    for (n, (l, _)) in kept.iter().enumerate() {
        new_label[*l] = (n + 1) as u8;
    }
    // One lung only: its side from where it lies in the image (LPS x < image centre: right).
    let centre_x = g.index_to_patient([(nx as f64 - 1.0) / 2.0, 0.0, 0.0]).x;
    let right = kept.iter().map(|(_, x)| if kept.len() > 1 { *x < midline } else { *x < centre_x }).collect();
    let midline_x = if kept.len() > 1 { midline } else { centre_x };
    Lungs { labels: labels.iter().map(|l| new_label[*l as usize]).collect(), right, midline_x }
}

/// Closing radius that seals vessel indentations at the lung surface [mm].
const LUNG_CLOSING_MM: f64 = 3.0;

/// Each lung with its enclosed vessels and nodules filled in (per-slice holes, a small closing,
/// holes again), in its own box; then voxels added to one lung that touch another lung are
/// dropped, so the lungs stay separate. Returns the union and the per-voxel lung label.
fn lung_region(lungs: &Lungs, g: &Geometry) -> (Vec<bool>, Vec<u8>) {
    let dims = g.dims;
    let n = lungs.labels.len();
    let mut owner = lungs.labels.clone();
    // 255: claimed by more than one lung's filling.
    const CONTESTED: u8 = 255;
    let mut added = vec![false; n];
    let margin = [0, 1, 2].map(|a| (LUNG_CLOSING_MM / g.spacing_mm[a]).ceil() as usize + 1);
    for label in 1..=lungs.right.len() as u8 {
        let mask: Vec<bool> = lungs.labels.iter().map(|l| *l == label).collect();
        let Some(b) = bounding_box(&mask, dims) else { continue };
        let b = b.grown(margin, dims);
        let cropped = crop(&mask, dims, &b);
        let filled = fill_holes_per_slice(&cropped, b.dims());
        let closed = close_mm(&filled, b.dims(), g.spacing_mm, LUNG_CLOSING_MM);
        let region = fill_holes_per_slice(&closed, b.dims());
        let full = uncrop(&region, dims, &b, false);
        for v in 0..n {
            if full[v] && lungs.labels[v] == 0 {
                if added[v] && owner[v] != label {
                    owner[v] = CONTESTED;
                } else {
                    owner[v] = label;
                    added[v] = true;
                }
            }
        }
    }
    let mut labels = owner.clone();
    for v in 0..n {
        if !added[v] {
            continue;
        }
        let neighbours = face_neighbours(v, dims);
        let touches_other = neighbours.into_iter().flatten().any(|w| owner[w] != 0 && owner[w] != owner[v]);
        if owner[v] == CONTESTED || touches_other {
            labels[v] = 0;
        }
    }
    (labels.iter().map(|l| *l > 0).collect(), labels)
}

/// How far above a voxel [mm] the right lung may lie for the voxel to count as the liver dome
/// under it.
const DOME_REACH_MM: f64 = 50.0;

/// The mediastinum per axial slice: the convex hull of the lungs' regions, minus the lungs,
/// inside the body. Below the right lung's largest cross-section, the part on the patient's
/// right (in the right lung's own hull, or right of the midline between the lungs) with right
/// lung above it in its column within [`DOME_REACH_MM`] is left out: the liver dome under the
/// lung's crescent.
fn mediastinum(lungs: &Lungs, region_labels: &[u8], outside: &[bool], g: &Geometry) -> Vec<bool> {
    let [nx, ny, nz] = g.dims;
    let plane = nx * ny;
    let is_right = |l: u8| l > 0 && lungs.right.get(l as usize - 1).copied().unwrap_or(false);
    let mut right_area = vec![0usize; nz];
    for (v, l) in lungs.labels.iter().enumerate() {
        if is_right(*l) {
            right_area[v / plane] += 1;
        }
    }
    let widest_right_rank =
        (0..nz).max_by_key(|&k| right_area[k]).filter(|&k| right_area[k] > 0).map(|k| superior_rank(g, k));
    // Slice index of the slice `steps` above k, if inside the volume.
    let up = g.index_to_patient([0.0, 0.0, 1.0]).z > g.index_to_patient([0.0, 0.0, 0.0]).z;
    let above = |k: usize, steps: usize| if up { (k + steps < nz).then(|| k + steps) } else { k.checked_sub(steps) };
    let reach = (DOME_REACH_MM / g.spacing_mm[2]).round() as usize;
    let right_lung_above =
        |p: usize, k: usize| (1..=reach).filter_map(|s| above(k, s)).any(|kk| is_right(lungs.labels[kk * plane + p]));
    let mut out = vec![false; region_labels.len()];
    for k in 0..nz {
        let labels = &region_labels[k * plane..(k + 1) * plane];
        let any: Vec<bool> = labels.iter().map(|l| *l > 0).collect();
        if !any.iter().any(|a| *a) {
            continue;
        }
        let hull = convex_hull_slice(&any, nx, ny);
        let rank = superior_rank(g, k);
        let dome_rule = widest_right_rank.is_some_and(|w| rank < w);
        let right_hull = if dome_rule {
            let right: Vec<bool> = labels.iter().map(|l| is_right(*l)).collect();
            convex_hull_slice(&right, nx, ny)
        } else {
            Vec::new()
        };
        for p in 0..plane {
            let v = k * plane + p;
            if !hull[p] || any[p] || outside[v] {
                continue;
            }
            let under_right_lung = dome_rule && {
                let x = g.index_to_patient([(p % nx) as f64, (p / nx) as f64, k as f64]).x;
                (right_hull[p] || x < lungs.midline_x) && right_lung_above(p, k)
            };
            out[v] = !under_right_lung;
        }
    }
    out
}

/// Hessian shape measures in the lungs' box.
struct LungShapes {
    /// Lung vessel flags on the full grid.
    vessels: Vec<bool>,
    /// Sheet measure on the full grid (0 where not computed).
    sheet: Vec<f32>,
}

/// Where lung vessels may lie: lung region grown by this [mm] (hilar vessels at its edge).
const VESSEL_SEARCH_MARGIN_MM: f64 = 5.0;
/// A tubular component counts as lung vessels when at least this fraction of it lies in the lung
/// region (hilar trunks reach out of it; ribs along the pleura do not reach in).
const VESSEL_INSIDE_FRACTION: f64 = 0.3;
/// Scales searched between the smallest and largest vessel diameter.
const VESSEL_SCALES: usize = 4;
/// Fissures are fainter than vessels (a sub-millimetre sheet in 2 mm voxels): sheet candidates
/// from this HU up.
const FISSURE_MIN_HU: f32 = -800.0;
/// ... and below this: a fissure is never solid tissue in such voxels, while the bright side of
/// an edge (the diaphragm under a lung filled around it) is sheet-like too.
const FISSURE_MAX_HU: f32 = -300.0;

fn lung_shapes(hu: &Volume<f32>, lung_region: &[bool], outside: &[bool], o: &ObstacleOptions) -> Option<LungShapes> {
    let g = &hu.geometry;
    let dims = g.dims;
    let d_min = o.lung_vessel_min_diameter_mm.max(0.1);
    let d_max = o.lung_vessel_max_diameter_mm.max(d_min);
    let sigmas: Vec<f64> = (0..VESSEL_SCALES)
        .map(|s| sigma_for_diameter(d_min * (d_max / d_min).powf(s as f64 / (VESSEL_SCALES - 1) as f64)))
        .collect();
    let sigma_max = sigmas.iter().copied().fold(0.0, f64::max);
    let margin_mm = VESSEL_SEARCH_MARGIN_MM + 3.0 * sigma_max;
    let b =
        bounding_box(lung_region, dims)?.grown([0, 1, 2].map(|a| (margin_mm / g.spacing_mm[a]).ceil() as usize), dims);
    let cd = b.dims();
    let region = crop(lung_region, dims, &b);
    let search = dilate_mm(&region, cd, g.spacing_mm, VESSEL_SEARCH_MARGIN_MM);
    let values = crop(&hu.data, dims, &b);
    let out_crop = crop(outside, dims, &b);
    let floor = if o.detect_fissures { o.lung_vessel_min_hu.min(FISSURE_MIN_HU) } else { o.lung_vessel_min_hu };
    let candidates: Vec<usize> =
        (0..values.len()).filter(|&v| search[v] && !out_crop[v] && values[v] > floor).collect();
    // The probe scale catches tubes thinner than the smallest diameter asked for.
    let probe = sigma_for_diameter(d_min) / std::f64::consts::SQRT_2;
    let shapes = multiscale_shape(&values, cd, g.spacing_mm, &sigmas, Some(probe), &candidates);
    let mut tubular = vec![false; values.len()];
    let mut sheet = vec![0.0f32; values.len()];
    for (c, &v) in candidates.iter().enumerate() {
        tubular[v] = values[v] > o.lung_vessel_min_hu && f64::from(shapes.tube[c]) >= o.lung_vessel_vesselness;
        sheet[v] = shapes.sheet[c];
    }
    // Lung vessels branch inside the lung: a tubular structure outside it (a rib along the
    // pleura, a mediastinal edge) is kept only as part of a tree that reaches well into it.
    let (labels, sizes) = label_components(&tubular, cd);
    let mut inside = vec![0usize; sizes.len()];
    for (l, r) in labels.iter().zip(&region) {
        if *l > 0 && *r {
            inside[*l as usize] += 1;
        }
    }
    let vessels: Vec<bool> = labels
        .iter()
        .map(|l| *l > 0 && inside[*l as usize] as f64 >= VESSEL_INSIDE_FRACTION * sizes[*l as usize] as f64)
        .collect();
    Some(LungShapes { vessels: uncrop(&vessels, dims, &b, false), sheet: uncrop(&sheet, dims, &b, 0.0) })
}

/// Fissures stay this far [mm] inside the lung region (the pleura is a sheet-like edge too) and
/// this far from lung vessels (a wide vessel's wall is sheet-like at the smallest scale).
const FISSURE_PLEURA_MARGIN_MM: f64 = 4.0;
const FISSURE_VESSEL_MARGIN_MM: f64 = 2.0;

fn fissures(
    shapes: &LungShapes,
    hu: &Volume<f32>,
    lung_region: &[bool],
    lung_vessels: &[bool],
    g: &Geometry,
    o: &ObstacleOptions,
) -> Vec<bool> {
    let dims = g.dims;
    let n = lung_region.len();
    let Some(b) = bounding_box(lung_region, dims) else { return vec![false; n] };
    let b = b.grown([1, 1, 1], dims);
    let cd = b.dims();
    let inner = erode_mm(&crop(lung_region, dims, &b), cd, g.spacing_mm, FISSURE_PLEURA_MARGIN_MM);
    let near_vessel = dilate_mm(&crop(lung_vessels, dims, &b), cd, g.spacing_mm, FISSURE_VESSEL_MARGIN_MM);
    let sheet = crop(&shapes.sheet, dims, &b);
    let values = crop(&hu.data, dims, &b);
    let candidate: Vec<bool> = (0..sheet.len())
        .map(|v| {
            let partial_volume = values[v] > FISSURE_MIN_HU && values[v] < FISSURE_MAX_HU;
            inner[v] && !near_vessel[v] && partial_volume && f64::from(sheet[v]) >= o.fissure_sheetness
        })
        .collect();
    // A fissure is a large connected sheet; scattered plate-like voxels are not.
    // Oblique sheets on thick slices touch only at edges and corners: components are found on
    // the candidates grown by one voxel diagonal, sized by the candidates they hold.
    let bridge_mm = g.spacing_mm.iter().map(|s| s * s).sum::<f64>().sqrt() * 0.5 + 1e-6;
    let bridged = dilate_mm(&candidate, cd, g.spacing_mm, bridge_mm);
    let (labels, _) = label_components(&bridged, cd);
    let mut sizes = vec![0usize; labels.iter().copied().max().unwrap_or(0) as usize + 1];
    for (l, c) in labels.iter().zip(&candidate) {
        if *c {
            sizes[*l as usize] += 1;
        }
    }
    let min_voxels = (o.min_fissure_volume_ml / voxel_volume_ml(g)).ceil() as usize;
    let kept: Vec<bool> = labels.iter().zip(&candidate).map(|(l, c)| *c && sizes[*l as usize] >= min_voxels).collect();
    uncrop(&kept, dims, &b, false)
}

/// Voxels in the HU window 6-connected, through the window, to the network's vessel voxels, at most
/// `max_growth_mm` from where they start (a bound, so that the growth cannot follow trabecular bone,
/// which shares the window, along the spine or the ribs). Empty when the network's vessels are not
/// enhanced (median HU below the window): on plain CT there is no contrast blood to find.
fn contrast_vessels(
    hu: &Volume<f32>,
    network: &[bool],
    dims: [usize; 3],
    window: [f32; 2],
    max_growth_mm: f64,
) -> Vec<bool> {
    let in_window = |v: usize| hu.data[v] >= window[0] && hu.data[v] <= window[1];
    let mut reached = vec![false; network.len()];
    let mut vessel_hu: Vec<f32> = (0..network.len()).filter(|&v| network[v]).map(|v| hu.data[v]).collect();
    if vessel_hu.is_empty() {
        return reached;
    }
    let mid = vessel_hu.len() / 2;
    let (_, median, _) = vessel_hu.select_nth_unstable_by(mid, f32::total_cmp);
    if *median < window[0] {
        return reached;
    }
    let neighbours = |v: usize| face_neighbours(v, dims);
    let min_spacing = hu.geometry.spacing_mm.iter().copied().fold(f64::INFINITY, f64::min).max(1e-6);
    let max_steps = (max_growth_mm / min_spacing).floor() as usize;
    // Seeds: window voxels that are, or touch, a network vessel voxel; then breadth first, step by step.
    let mut front: Vec<usize> = (0..network.len())
        .filter(|&v| in_window(v) && (network[v] || neighbours(v).into_iter().flatten().any(|w| network[w])))
        .collect();
    for &v in &front {
        reached[v] = true;
    }
    for _ in 0..max_steps {
        let mut next = Vec::new();
        for &v in &front {
            for w in neighbours(v).into_iter().flatten() {
                if !reached[w] && in_window(w) {
                    reached[w] = true;
                    next.push(w);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        front = next;
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Point3, Vector3};
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    const TISSUE_HU: f32 = 40.0;
    const LUNG_HU: f32 = -850.0;

    /// Fraction of a voxel (supersampled 3x3x3) for which `inside` holds.
    fn coverage(g: &Geometry, i: usize, j: usize, k: usize, inside: &dyn Fn(Point3<f64>) -> bool) -> f32 {
        let mut hits = 0;
        for a in [-1.0, 0.0, 1.0] {
            for b in [-1.0, 0.0, 1.0] {
                for c in [-1.0, 0.0, 1.0] {
                    let p = g.index_to_patient([i as f64 + a / 3.0, j as f64 + b / 3.0, k as f64 + c / 3.0]);
                    hits += inside(p) as usize;
                }
            }
        }
        hits as f32 / 27.0
    }

    fn in_right_lung(p: Point3<f64>) -> bool {
        ((p.x + 45.0) / 33.0).powi(2) + (p.y / 42.0).powi(2) <= 1.0
    }
    fn in_left_lung(p: Point3<f64>) -> bool {
        ((p.x - 45.0) / 33.0).powi(2) + (p.y / 42.0).powi(2) <= 1.0
    }

    /// Distance from p to the line through `a` along unit `d`.
    fn line_distance(p: Point3<f64>, a: Point3<f64>, d: Vector3<f64>) -> f64 {
        let v = p - a;
        (v - d * v.dot(&d)).norm()
    }

    /// A region of the patient: does it hold this point [mm]?
    type Region<'a> = &'a dyn Fn(Point3<f64>) -> bool;

    /// A torso (elliptic body, 40 HU) with two lungs (-850 HU) either side of a soft-tissue
    /// mediastinum, seeded noise of 15 HU, and extra structures painted with partial volume:
    /// each (inside test, HU) replaces the voxel value by its covered fraction.
    fn torso(structures: &[(Region, f32)]) -> Volume<f32> {
        let g = Geometry::axial_centred([180, 120, 40], [1.0, 1.0, 1.5], [0.0, 0.0, 0.0]);
        let mut hu = Volume::filled(g.clone(), -1000.0f32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let noise = Normal::new(0.0f32, 15.0).unwrap();
        for k in 0..40 {
            for j in 0..120 {
                for i in 0..180 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let v = g.offset(i, j, k);
                    if (p.x / 85.0).powi(2) + (p.y / 55.0).powi(2) > 1.0 {
                        continue;
                    }
                    let mut value = if in_right_lung(p) || in_left_lung(p) { LUNG_HU } else { TISSUE_HU };
                    for (inside, target) in structures {
                        let f = coverage(&g, i, j, k, *inside);
                        if f > 0.0 {
                            value = value * (1.0 - f) + target * f;
                        }
                    }
                    hu.data[v] = value + noise.sample(&mut rng);
                }
            }
        }
        hu
    }

    fn no_labels(hu: &Volume<f32>) -> Volume<u8> {
        Volume::filled(hu.geometry.clone(), 0u8)
    }

    fn mask_of(a: &CtAnatomy, layer: Layer) -> &[bool] {
        &a.layer(layer).expect("every layer is present").mask
    }

    /// Fraction of the voxels where `region` holds that are flagged in `mask`.
    fn fraction_flagged(g: &Geometry, mask: &[bool], region: &dyn Fn(Point3<f64>) -> bool) -> (f64, usize) {
        let [nx, ny, nz] = g.dims;
        let (mut total, mut hit) = (0usize, 0usize);
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    if region(g.index_to_patient([i as f64, j as f64, k as f64])) {
                        total += 1;
                        hit += mask[g.offset(i, j, k)] as usize;
                    }
                }
            }
        }
        (hit as f64 / total.max(1) as f64, total)
    }

    #[test]
    fn tubes_above_the_minimum_diameter_are_lung_vessels_thin_tubes_blobs_and_sheets_are_not() {
        let dir = Vector3::new(0.25, 0.15, 1.0).normalize();
        let wide_axis = Point3::new(-40.0, 15.0, 0.0);
        let thin_axis = Point3::new(-50.0, -20.0, 0.0);
        let wide = move |p: Point3<f64>| in_right_lung(p) && line_distance(p, wide_axis, dir) <= 3.0;
        let thin = move |p: Point3<f64>| in_right_lung(p) && line_distance(p, thin_axis, dir) <= 0.75;
        let nodule_centre = Point3::new(45.0, -15.0, 0.0);
        let nodule = move |p: Point3<f64>| (p - nodule_centre).norm() <= 6.0;
        let normal = Vector3::new(0.2, 1.0, 0.3).normalize();
        let sheet_point = Point3::new(45.0, 20.0, 0.0);
        let sheet = move |p: Point3<f64>| in_left_lung(p) && (p - sheet_point).dot(&normal).abs() <= 0.75;
        let hu = torso(&[(&wide, TISSUE_HU), (&thin, TISSUE_HU), (&nodule, TISSUE_HU), (&sheet, -500.0)]);
        let g = hu.geometry.clone();
        let o = ObstacleOptions::default();
        let a = ct_anatomy(&hu, &no_labels(&hu), &o);
        let vessels = mask_of(&a, Layer::LungVessels);
        // Along the wide tube's axis (6 mm > 3 mm minimum), away from the volume's ends.
        let axis_core = move |p: Point3<f64>| p.z.abs() < 20.0 && line_distance(p, wide_axis, dir) <= 1.0;
        let (wide_found, n_wide) = fraction_flagged(&g, vessels, &axis_core);
        let thin_core = move |p: Point3<f64>| p.z.abs() < 20.0 && line_distance(p, thin_axis, dir) <= 0.5;
        let (thin_found, n_thin) = fraction_flagged(&g, vessels, &thin_core);
        let (nodule_found, n_nodule) = fraction_flagged(&g, vessels, &nodule);
        // The sheet away from the pleura (where it meets the chest wall it forms a crease).
        let sheet_inner = move |p: Point3<f64>| {
            sheet(p) && ((p.x - 45.0) / 25.0).powi(2) + (p.y / 34.0).powi(2) <= 1.0 && p.z.abs() < 20.0
        };
        let (sheet_found, n_sheet) = fraction_flagged(&g, vessels, &sheet_inner);
        eprintln!(
            "wide {wide_found:.3} of {n_wide}, thin {thin_found:.3} of {n_thin}, nodule {nodule_found:.3} of \
             {n_nodule}, sheet {sheet_found:.3} of {n_sheet}"
        );
        assert!(n_wide > 50 && wide_found >= 0.9, "wide tube found on {wide_found}");
        assert!(n_thin > 10 && thin_found <= 0.2, "thin tube flagged on {thin_found}");
        assert!(n_nodule > 300 && nodule_found <= 0.1, "nodule flagged on {nodule_found}");
        assert!(n_sheet > 300 && sheet_found <= 0.1, "sheet flagged on {sheet_found}");
        // The tube and the nodule are inside the lung's pleura: no hole in the lung region.
        let (tube_in_region, _) = fraction_flagged(&g, &a.lung_region, &wide);
        let (nodule_in_region, _) = fraction_flagged(&g, &a.lung_region, &nodule);
        assert!(tube_in_region > 0.99 && nodule_in_region > 0.99, "{tube_in_region} {nodule_in_region}");
        let (tube_aerated, _) = fraction_flagged(&g, &a.aerated_lung, &axis_core);
        assert!(tube_aerated < 0.01, "the vessel is not aerated lung: {tube_aerated}");
        // The sheet is a fissure; the tube's surroundings are not.
        let (fissure_on_sheet, _) = fraction_flagged(&g, &a.fissures, &sheet_inner);
        eprintln!("fissure on sheet {fissure_on_sheet:.3}, detected {}", a.fissures_detected);
        assert!(a.fissures_detected && fissure_on_sheet > 0.5, "fissure found on {fissure_on_sheet}");
        let (fissure_on_tube, _) = fraction_flagged(&g, &a.fissures, &wide);
        assert!(fissure_on_tube < 0.05);
    }

    #[test]
    fn the_mediastinum_fills_the_space_between_the_lungs_and_the_lungs_stay_two() {
        let hu = torso(&[]);
        let g = hu.geometry.clone();
        let a = ct_anatomy(&hu, &no_labels(&hu), &ObstacleOptions::default());
        let med = mask_of(&a, Layer::Mediastinum);
        let (block, n_block) = fraction_flagged(&g, med, &|p| p.x.abs() < 8.0 && p.y.abs() < 30.0);
        assert!(n_block > 1000 && block >= 0.95, "block covered {block}");
        assert!(med.iter().zip(&a.lung_region).all(|(m, l)| !(*m && *l)), "mediastinum overlaps the lung");
        // Chest wall lateral to the right lung, and the air outside, are not mediastinum.
        let (wall, _) = fraction_flagged(&g, med, &|p| p.x < -80.0 && p.y.abs() < 10.0);
        assert_eq!(wall, 0.0);
        assert!(med.iter().zip(&a.outside).all(|(m, o)| !(*m && *o)));
        // Two separate lungs of the modelled volume: 2 ellipses 33 x 42 mm over 60 mm each.
        let (_, sizes) = label_components(&a.lung_region, g.dims);
        assert_eq!(sizes.len() - 1, 2, "{sizes:?}");
        let ml = a.aerated_lung.iter().filter(|l| **l).count() as f64 * voxel_volume_ml(&g);
        let expected = 2.0 * std::f64::consts::PI * 33.0 * 42.0 * 60.0 / 1000.0;
        assert!((ml - expected).abs() < 0.05 * expected, "{ml} ml vs {expected}");
        // The pleura is sheet-like at its edge, but no fissure is found in fissure-free lungs.
        assert!(!a.fissures_detected && !a.fissures.iter().any(|f| *f));
        // Bone is a bare threshold; no bone here.
        assert!(!mask_of(&a, Layer::Bone).iter().any(|b| *b));
    }

    #[test]
    fn the_liver_dome_under_the_right_lung_is_not_mediastinum_the_heart_between_the_lungs_is() {
        // Lower half: a dome (sphere) rising into the right lung from below, so the right lung's
        // lowest slices are a crescent around it.
        // Its centre lies medial to the lung's, so the crescent opens medially as in a patient.
        let dome_centre = Point3::new(-35.0, 0.0, -40.0);
        let dome = move |p: Point3<f64>| in_right_lung(p) && (p - dome_centre).norm() <= 28.0;
        let hu = torso(&[(&dome, TISSUE_HU)]);
        let g = hu.geometry.clone();
        let a = ct_anatomy(&hu, &no_labels(&hu), &ObstacleOptions::default());
        let med = mask_of(&a, Layer::Mediastinum);
        // The dome's core, inside the crescent, in slices where the right lung is a crescent.
        let core = move |p: Point3<f64>| p.z < -15.0 && (p - dome_centre).norm() <= 24.0 && in_right_lung(p);
        let (dome_med, n_dome) = fraction_flagged(&g, med, &core);
        let (block, _) = fraction_flagged(&g, med, &|p| p.x.abs() < 8.0 && p.y.abs() < 30.0);
        eprintln!("dome as mediastinum {dome_med:.3} of {n_dome}, block {block:.3}");
        assert!(n_dome > 500 && dome_med < 0.05, "dome {dome_med}");
        assert!(block >= 0.95, "block {block}");
        // The dome's surface is an edge, not a fissure.
        assert!(!a.fissures_detected);
    }

    /// The torso with a vertical air tube on the midline (the trachea), diameter `d` mm, and an
    /// anterior side branch 6 mm across.
    fn torso_with_trachea(d: f64) -> Volume<f32> {
        let trachea = move |p: Point3<f64>| (p.x * p.x + (p.y + 10.0).powi(2)).sqrt() <= d / 2.0;
        // Anterior (-y) through the mediastinum, 25 mm long, centred on a slice (z = 0.75 mm).
        let branch =
            move |p: Point3<f64>| p.y <= -10.0 && p.y >= -35.0 && (p.x * p.x + (p.z - 0.75).powi(2)).sqrt() <= 3.0;
        torso(&[(&trachea, -1000.0), (&branch, -1000.0)])
    }

    #[test]
    fn air_tubes_in_the_mediastinum_are_airways_when_a_ball_of_the_minimum_diameter_fits() {
        let hu = torso_with_trachea(14.0);
        let g = hu.geometry.clone();
        let trachea_core = |p: Point3<f64>| (p.x * p.x + (p.y + 10.0).powi(2)).sqrt() <= 5.0;
        // The branch's core beyond 4 mm from the trachea's wall (radius 7 mm at y = -10).
        let branch_core =
            |p: Point3<f64>| p.y <= -21.0 && p.y >= -33.0 && (p.x * p.x + (p.z - 0.75).powi(2)).sqrt() <= 1.0;
        let with_min = |d: f64| {
            let o = ObstacleOptions { airway_min_diameter_mm: d, ..ObstacleOptions::default() };
            let a = ct_anatomy(&hu, &no_labels(&hu), &o);
            let (trachea, n_trachea) = fraction_flagged(&g, mask_of(&a, Layer::Airways), &trachea_core);
            let (branch, n_branch) = fraction_flagged(&g, mask_of(&a, Layer::Airways), &branch_core);
            assert!(n_trachea > 1000 && n_branch > 10);
            assert!(mask_of(&a, Layer::Airways).iter().zip(&a.aerated_lung).all(|(w, l)| !(*w && *l)));
            (trachea, branch)
        };
        // 4 mm minimum: both the 14 mm trachea and the 6 mm branch are airways.
        let (trachea, branch) = with_min(4.0);
        assert!(trachea > 0.99 && branch > 0.9, "trachea {trachea}, branch {branch}");
        // 8 mm minimum: the trachea still is, the 6 mm branch is not.
        let (trachea, branch) = with_min(8.0);
        assert!(trachea > 0.99 && branch == 0.0, "trachea {trachea}, branch {branch}");
        // A 3 mm "trachea" alone is below the minimum: no airway at all.
        let narrow = torso_with_trachea(3.0);
        let b = ct_anatomy(&narrow, &no_labels(&narrow), &ObstacleOptions::default());
        let (narrow_core, _) =
            fraction_flagged(&g, mask_of(&b, Layer::Airways), &|p| (p.x * p.x + (p.y + 10.0).powi(2)).sqrt() <= 1.0);
        assert_eq!(narrow_core, 0.0);
    }

    #[test]
    fn contrast_vessels_grow_from_network_voxels_within_the_window_only() {
        let g = Geometry::axial([20, 5, 5], [1.0; 3], [0.0; 3]);
        let mut hu = Volume::filled(g.clone(), 40.0f32);
        let mut labels = Volume::filled(g.clone(), 0u8);
        // A bright rod along x at (j, k) = (2, 2): enhancing from i = 0 to 12, then a gap, then 14..20.
        for i in 0..20 {
            if i != 13 {
                hu.data[g.offset(i, 2, 2)] = 300.0;
            }
        }
        labels.data[g.offset(0, 2, 2)] = 1;
        let network: Vec<bool> = labels.data.iter().map(|l| *l > 0).collect();
        let grown = contrast_vessels(&hu, &network, g.dims, [150.0, 700.0], 20.0);
        assert_eq!(grown.iter().filter(|x| **x).count(), 13);
        assert!(grown[g.offset(12, 2, 2)] && !grown[g.offset(14, 2, 2)]);
        // The growth is bounded: seeds i = 0 (labelled) and i = 1 (touching it), then 5 steps of 1 mm.
        let bounded = contrast_vessels(&hu, &network, g.dims, [150.0, 700.0], 5.0);
        assert_eq!(bounded.iter().filter(|x| **x).count(), 7);
        // Plain CT: the network's vessel voxel is not enhanced, so nothing is contrast blood.
        hu.data[g.offset(0, 2, 2)] = 40.0;
        hu.data[g.offset(1, 2, 2)] = 40.0;
        let plain = contrast_vessels(&hu, &network, g.dims, [150.0, 700.0], 20.0);
        assert!(!plain.iter().any(|x| *x));
    }

    #[test]
    fn layer_order_and_outside_air_on_a_crop_through_the_lungs() {
        let hu = torso(&[]);
        let a = ct_anatomy(&hu, &no_labels(&hu), &ObstacleOptions::default());
        let order: Vec<Layer> = a.layers.iter().map(|l| l.layer).collect();
        assert_eq!(order, Layer::ALL.to_vec());
        // Crop through both lungs (x from -70 to 70 mm): the lungs reach the image edge, yet stay
        // inside the body and are still found.
        let g = &hu.geometry;
        let b = VoxelBoxFor::x_range(g, -70.0, 70.0);
        let cropped = Volume { geometry: b.0, data: crop(&hu.data, g.dims, &b.1) };
        let c = ct_anatomy(&cropped, &no_labels(&cropped), &ObstacleOptions::default());
        let (_, sizes) = label_components(&c.lung_region, cropped.geometry.dims);
        assert_eq!(sizes.len() - 1, 2);
        let lung_outside = c.outside.iter().zip(&cropped.data).filter(|(o, h)| **o && **h > -900.0).count();
        assert_eq!(lung_outside, 0);
    }

    struct VoxelBoxFor;
    impl VoxelBoxFor {
        /// Geometry and box of the columns with x in [x0, x1] mm.
        fn x_range(g: &Geometry, x0: f64, x1: f64) -> (Geometry, crate::morphology::VoxelBox) {
            let i0 = g.patient_to_index(&Point3::new(x0, 0.0, 0.0))[0].ceil() as usize;
            let i1 = g.patient_to_index(&Point3::new(x1, 0.0, 0.0))[0].floor() as usize + 1;
            let b = crate::morphology::VoxelBox { lo: [i0, 0, 0], hi: [i1, g.dims[1], g.dims[2]] };
            let origin = g.index_to_patient([i0 as f64, 0.0, 0.0]);
            (Geometry::axial(b.dims(), g.spacing_mm, [origin.x, origin.y, origin.z]), b)
        }
    }
}
