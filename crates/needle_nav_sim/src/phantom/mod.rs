//! The digital patient: analytic anatomy with vessel trees, a lesion and radiopaque skin
//! markers, rendered as a CT volume (contrast or plain) with ground-truth labels at any
//! breathing state. Seeded and deterministic. Units: mm and LPS, as in DICOM.

pub mod anatomy;
pub mod vessels;

use anatomy::{hu, Anatomy};
use nalgebra::{Point3, Vector3};
use needle_nav_core::volume::{Geometry, Volume};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use vessels::{VesselClass, VesselSegment};

/// Label values written to the label maps.
pub mod labels {
    pub const BACKGROUND: u8 = 0;
    pub const ARTERY: u8 = 1;
    pub const VEIN: u8 = 2;
    pub const AORTA: u8 = 3;
    pub const CLASS_NAMES: [&str; 4] = ["background", "artery", "vein", "aorta"];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhantomConfig {
    pub seed: u64,
    /// Columns, rows, slices.
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// Contrast-enhanced (vessels in the hundreds of HU) or plain CT.
    pub contrast: bool,
    /// Standard deviation of the CT noise [HU].
    pub noise_hu: f64,
    pub lesion_centre_mm: [f64; 3],
    pub lesion_radius_mm: f64,
    /// Lesion excursion at a normal full inhale: inferior and anterior [mm].
    pub lesion_si_amplitude_mm: f64,
    pub lesion_ap_amplitude_mm: f64,
    /// Lesion (and organ) motion lags the skin by this much [s].
    pub lesion_lag_s: f64,
    /// Anterior offset on inhale versus exhale at equal depth (hysteresis loop) [mm].
    pub lesion_hysteresis_mm: f64,
    pub min_vessel_radius_mm: f64,
    /// Refuse grids with more voxels than this (checked before anything is allocated): rendering
    /// takes about 6 bytes a voxel and writing the case as much again, so the default 512^3
    /// (134 million voxels) needs about 1.6 GB. Raise it for bigger grids if the memory is there.
    pub max_voxels: u64,
}

/// Default [`PhantomConfig::max_voxels`]: 512 x 512 x 512.
pub const DEFAULT_MAX_VOXELS: u64 = 512 * 512 * 512;
/// Bytes a voxel costs while a frame is rendered (HU i16, labels, vessel fraction, lesion and
/// marker masks: u8 each), for the size in the refusal.
const RENDER_BYTES_PER_VOXEL: u64 = 6;

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            seed: 1,
            dims: [256, 256, 160],
            spacing_mm: [1.5, 1.5, 2.0],
            contrast: true,
            noise_hu: 12.0,
            lesion_centre_mm: [-78.0, 30.0, -20.0],
            lesion_radius_mm: 10.0,
            lesion_si_amplitude_mm: 12.0,
            lesion_ap_amplitude_mm: 2.0,
            lesion_lag_s: 0.25,
            lesion_hysteresis_mm: 1.5,
            min_vessel_radius_mm: 1.0,
            max_voxels: DEFAULT_MAX_VOXELS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PhantomError {
    #[error("phantom parameter `{key}`: {reason}")]
    BadParameter { key: &'static str, reason: String },
}

fn bad(key: &'static str, reason: impl Into<String>) -> PhantomError {
    PhantomError::BadParameter { key, reason: reason.into() }
}

impl PhantomConfig {
    pub fn validate(&self, anatomy: &Anatomy) -> Result<(), PhantomError> {
        if self.dims.iter().any(|&d| !(16..=2048).contains(&d)) {
            return Err(bad("dims", format!("{:?}: each must be within 16..=2048", self.dims)));
        }
        let voxels = self.dims.iter().map(|&d| d as u64).product::<u64>();
        if voxels > self.max_voxels {
            let [x, y, z] = self.dims;
            return Err(bad(
                "dims",
                format!(
                    "{x}x{y}x{z} = {voxels} voxels (about {:.1} GB to render) is more than max_voxels {}; \
                     raise max_voxels (needle_nav phantom --max-voxels) if the machine has the memory",
                    (voxels * RENDER_BYTES_PER_VOXEL) as f64 / 1e9,
                    self.max_voxels
                ),
            ));
        }
        if self.spacing_mm.iter().any(|&s| !(s.is_finite() && (0.2..=10.0).contains(&s))) {
            return Err(bad("spacing_mm", format!("{:?}: each must be within 0.2..=10 mm", self.spacing_mm)));
        }
        if !(0.0..=200.0).contains(&self.noise_hu) {
            return Err(bad("noise_hu", format!("{} is outside 0..=200 HU", self.noise_hu)));
        }
        if !(2.0..=30.0).contains(&self.lesion_radius_mm) {
            return Err(bad("lesion_radius_mm", format!("{} is outside 2..=30 mm", self.lesion_radius_mm)));
        }
        let c = Point3::from(self.lesion_centre_mm);
        if !anatomy.in_lung(&c, self.lesion_radius_mm) {
            return Err(bad(
                "lesion_centre_mm",
                format!("{c:?} with radius {} is not inside a lung", self.lesion_radius_mm),
            ));
        }
        for (key, v) in [
            ("lesion_si_amplitude_mm", self.lesion_si_amplitude_mm),
            ("lesion_ap_amplitude_mm", self.lesion_ap_amplitude_mm),
            ("lesion_hysteresis_mm", self.lesion_hysteresis_mm),
        ] {
            if !(0.0..=40.0).contains(&v) {
                return Err(bad(key, format!("{v} is outside 0..=40 mm")));
            }
        }
        if !(0.0..=2.0).contains(&self.lesion_lag_s) {
            return Err(bad("lesion_lag_s", format!("{} is outside 0..=2 s", self.lesion_lag_s)));
        }
        if !(0.5..=5.0).contains(&self.min_vessel_radius_mm) {
            return Err(bad("min_vessel_radius_mm", format!("{} is outside 0.5..=5 mm", self.min_vessel_radius_mm)));
        }
        Ok(())
    }
}

/// Body regions, ordered by how much the skin moves with breathing (least first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyRegion {
    Sternum,
    UpperChest,
    LowerChest,
    Abdomen,
}

/// A radiopaque sphere on the skin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkinMarker {
    pub id: u32,
    pub region: BodyRegion,
    /// Lies over bone (sternum, clavicle, ribs): barely moves; a registration marker.
    pub over_bone: bool,
    pub radius_mm: f64,
    /// Centre at end-exhale [mm, LPS].
    pub rest_mm: Point3<f64>,
    /// Displacement per unit of the breathing signal [mm]: expansion (outward), longitudinal and lateral.
    pub excursion_mm: Vector3<f64>,
}

/// Anterior skin expansion per unit of breathing at height z [mm]: the abdomen moves most,
/// then the lower chest, the upper chest least.
pub fn skin_expansion_profile(z_mm: f64) -> f64 {
    const KNOTS: [(f64, f64); 5] = [(-90.0, 9.0), (-40.0, 3.5), (0.0, 0.8), (40.0, 0.4), (200.0, 0.4)];
    if z_mm <= KNOTS[0].0 {
        return KNOTS[0].1;
    }
    for w in KNOTS.windows(2) {
        let ((z0, v0), (z1, v1)) = (w[0], w[1]);
        if z_mm <= z1 {
            return v0 + (v1 - v0) * (z_mm - z0) / (z1 - z0);
        }
    }
    KNOTS[KNOTS.len() - 1].1
}

/// The default layout: 12 markers, 6 over bone (sternum, clavicles, upper ribs) and 6 on soft
/// tissue (lower chest, abdomen), as a marker plate would place them.
pub fn default_markers(anatomy: &Anatomy, rng: &mut ChaCha8Rng) -> Vec<SkinMarker> {
    use std::f64::consts::FRAC_PI_2;
    let layout: [(f64, f64, BodyRegion, bool, f64); 12] = [
        (0.0, 95.0, BodyRegion::Sternum, true, 3.0),
        (0.0, 5.0, BodyRegion::Sternum, true, 3.0),
        (-0.42, 122.0, BodyRegion::UpperChest, true, 2.5),
        (0.42, 122.0, BodyRegion::UpperChest, true, 2.5),
        (-0.95, 65.0, BodyRegion::UpperChest, true, 3.0),
        (0.95, 65.0, BodyRegion::UpperChest, true, 3.0),
        (-0.6, -45.0, BodyRegion::LowerChest, false, 3.0),
        (0.6, -45.0, BodyRegion::LowerChest, false, 3.0),
        (-1.2, -35.0, BodyRegion::LowerChest, false, 2.0),
        (-0.45, -120.0, BodyRegion::Abdomen, false, 4.0),
        (0.45, -120.0, BodyRegion::Abdomen, false, 4.0),
        (0.0, -85.0, BodyRegion::Abdomen, false, 4.0),
    ];
    layout
        .iter()
        .enumerate()
        .map(|(i, &(dtheta, z, region, over_bone, radius))| {
            let (skin, normal) = anatomy.skin_point(-FRAC_PI_2 + dtheta, z);
            // Skin over bone is held by it and moves a fraction of the soft tissue's motion;
            // the sternum, a rigid plate, least of all.
            let bone_factor = match (region, over_bone) {
                (BodyRegion::Sternum, _) => 0.25,
                (_, true) => 0.6,
                (_, false) => 1.0,
            };
            let ap = skin_expansion_profile(z) * bone_factor * rng.random_range(0.85..1.15);
            // The chest wall rises (superior) on inhale; the abdominal wall drops a little.
            let si = if z > -60.0 { 0.3 * ap } else { -0.15 * ap };
            SkinMarker {
                id: i as u32 + 1,
                region,
                over_bone,
                radius_mm: radius,
                rest_mm: skin + normal * radius,
                excursion_mm: normal * ap + Vector3::new(0.0, 0.0, si),
            }
        })
        .collect()
}

/// The breathing state one CT frame or tracker sample is taken at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MotionState {
    /// Breathing signal at the skin (0 end-exhale, about 1 normal full inhale).
    pub skin_inhale: f64,
    /// Breathing signal of the internal organs and lesion (lagging the skin).
    pub organ_inhale: f64,
    /// Its rate of change [1/s] (sign tells inhale from exhale: hysteresis).
    pub organ_velocity: f64,
}

impl MotionState {
    pub const REST: MotionState = MotionState { skin_inhale: 0.0, organ_inhale: 0.0, organ_velocity: 0.0 };

    /// The state at time `t_s` of a breathing signal given as a function of time.
    pub fn at(inhale: impl Fn(f64) -> f64, t_s: f64, lag_s: f64) -> MotionState {
        let h = 0.01;
        let tl = t_s - lag_s;
        MotionState {
            skin_inhale: inhale(t_s),
            organ_inhale: inhale(tl),
            organ_velocity: (inhale(tl + h) - inhale(tl - h)) / (2.0 * h),
        }
    }
}

/// One rendered CT volume with its ground truth.
#[derive(Debug, Clone)]
pub struct CtFrame {
    pub hu: Volume<i16>,
    /// 0 background, 1 artery, 2 vein, 3 aorta.
    pub labels: Volume<u8>,
    pub lesion_mask: Volume<u8>,
    /// Marker id at every voxel of a marker, else 0.
    pub marker_mask: Volume<u8>,
}

#[derive(Debug, Clone)]
pub struct Phantom {
    pub config: PhantomConfig,
    pub anatomy: Anatomy,
    pub vessels: Vec<VesselSegment>,
    pub markers: Vec<SkinMarker>,
}

/// Typical peak |d inhale/dt| of normal breathing [1/s], for scaling the hysteresis.
const TYPICAL_PEAK_VELOCITY: f64 = 1.2;
/// Organs above this height do not move with the diaphragm [mm].
const APEX_Z_MM: f64 = 130.0;

impl Phantom {
    pub fn new(config: PhantomConfig) -> Result<Phantom, PhantomError> {
        let anatomy = Anatomy::default();
        config.validate(&anatomy)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let params = vessels::TreeParams { min_radius_mm: config.min_vessel_radius_mm, ..Default::default() };
        let mut all = vessels::aorta();
        all.extend(vessels::pulmonary_arteries(&anatomy, &params, &mut rng));
        all.extend(vessels::pulmonary_veins(&anatomy, &params, &mut rng));
        let markers = default_markers(&anatomy, &mut rng);
        Ok(Phantom { config, anatomy, vessels: all, markers })
    }

    /// Axial grid centred on the chest and upper abdomen.
    pub fn geometry(&self) -> Geometry {
        let c = &self.config;
        let z_centre = -25.0;
        Geometry::axial_centred(c.dims, c.spacing_mm, [0.0, 0.0, z_centre])
    }

    fn diaphragm_weight(&self, z: f64) -> f64 {
        let lesion_z = self.config.lesion_centre_mm[2];
        ((APEX_Z_MM - z) / (APEX_Z_MM - lesion_z)).clamp(0.0, 1.6)
    }

    /// Displacement of internal organs at `p` [mm]: inferior and slightly anterior on inhale,
    /// growing from the apex towards the diaphragm; equal to the lesion's at the lesion.
    pub fn organ_displacement(&self, p: &Point3<f64>, state: &MotionState) -> Vector3<f64> {
        let w = self.diaphragm_weight(p.z) * state.organ_inhale;
        Vector3::new(0.0, -self.config.lesion_ap_amplitude_mm * w, -self.config.lesion_si_amplitude_mm * w)
    }

    /// Lesion centre [mm, LPS] in this state: organ motion plus a velocity-dependent
    /// anterior offset, so inhale and exhale paths differ (hysteresis).
    pub fn lesion_centre(&self, state: &MotionState) -> Point3<f64> {
        let c = Point3::from(self.config.lesion_centre_mm);
        let hysteresis = self.config.lesion_hysteresis_mm * (state.organ_velocity / TYPICAL_PEAK_VELOCITY).tanh();
        c + self.organ_displacement(&c, state) + Vector3::new(0.0, -hysteresis, 0.0)
    }

    pub fn marker_centre(&self, marker: &SkinMarker, state: &MotionState) -> Point3<f64> {
        marker.rest_mm + marker.excursion_mm * state.skin_inhale
    }

    /// Preset needle entry point on the skin [mm, LPS]: right anterolateral, at the lesion's height.
    pub fn preset_entry_mm(&self) -> Point3<f64> {
        let (p, _) = self.anatomy.skin_point(-0.75 * std::f64::consts::PI, self.config.lesion_centre_mm[2]);
        p
    }

    fn vessel_hu(&self, class: VesselClass) -> f32 {
        match (self.config.contrast, class) {
            (true, VesselClass::Artery) => 380.0,
            (true, VesselClass::Vein) => 260.0,
            (true, VesselClass::Aorta) => 330.0,
            (false, VesselClass::Artery) => hu::BLOOD_PLAIN + 2.0,
            (false, VesselClass::Vein) => hu::BLOOD_PLAIN,
            (false, VesselClass::Aorta) => hu::BLOOD_PLAIN + 4.0,
        }
    }

    /// Renders the CT at `state`; `noise_stream` separates the noise of different frames.
    pub fn render(&self, state: &MotionState, noise_stream: u64) -> CtFrame {
        let geometry = self.geometry();
        let [nx, ny, nz] = geometry.dims;
        let slab = nx * ny;
        let mut hu_data = vec![0i16; geometry.voxel_count()];
        let mut label_data = vec![0u8; geometry.voxel_count()];
        let mut vessel_fraction = vec![0u8; geometry.voxel_count()];
        let mut lesion_data = vec![0u8; geometry.voxel_count()];
        let mut marker_data = vec![0u8; geometry.voxel_count()];

        // Vessels move with the organs, except the aorta (mediastinum).
        let segments: Vec<VesselSegment> = self
            .vessels
            .iter()
            .map(|s| {
                if s.class == VesselClass::Aorta {
                    *s
                } else {
                    VesselSegment {
                        a: s.a + self.organ_displacement(&s.a, state),
                        b: s.b + self.organ_displacement(&s.b, state),
                        ..*s
                    }
                }
            })
            .collect();
        let lesion = self.lesion_centre(state);
        let markers: Vec<(u8, Point3<f64>, f64)> =
            self.markers.iter().map(|m| (m.id as u8, self.marker_centre(m, state), m.radius_mm)).collect();

        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(nz);
        let slices_per_thread = nz.div_ceil(threads);
        std::thread::scope(|scope| {
            let chunks = hu_data
                .chunks_mut(slab * slices_per_thread)
                .zip(label_data.chunks_mut(slab * slices_per_thread))
                .zip(vessel_fraction.chunks_mut(slab * slices_per_thread))
                .zip(lesion_data.chunks_mut(slab * slices_per_thread))
                .zip(marker_data.chunks_mut(slab * slices_per_thread))
                .enumerate();
            for (t, ((((hu_c, lab_c), frac_c), les_c), mark_c)) in chunks {
                let k0 = t * slices_per_thread;
                let (geometry, segments, markers) = (&geometry, &segments, &markers);
                scope.spawn(move || {
                    let k1 = k0 + hu_c.len() / slab;
                    let slab_ctx = Slab { phantom: self, geometry, k0, k1 };
                    slab_ctx.rasterize_vessels(segments, lab_c, frac_c);
                    slab_ctx.compose(state, &lesion, markers, noise_stream, hu_c, lab_c, frac_c, les_c, mark_c);
                });
            }
        });
        CtFrame {
            hu: Volume { geometry: geometry.clone(), data: hu_data },
            labels: Volume { geometry: geometry.clone(), data: label_data },
            lesion_mask: Volume { geometry: geometry.clone(), data: lesion_data },
            marker_mask: Volume { geometry, data: marker_data },
        }
    }
}

/// The slices k0..k1 one thread renders.
struct Slab<'a> {
    phantom: &'a Phantom,
    geometry: &'a Geometry,
    k0: usize,
    k1: usize,
}

/// Partial-volume fraction of a voxel whose centre is `signed_distance` from a surface.
#[inline]
fn coverage(signed_distance: f64, voxel_mm: f64) -> f64 {
    (0.5 - signed_distance / voxel_mm).clamp(0.0, 1.0)
}

impl Slab<'_> {
    fn local(&self, i: usize, j: usize, k: usize) -> usize {
        ((k - self.k0) * self.geometry.dims[1] + j) * self.geometry.dims[0] + i
    }

    fn voxel_mm(&self) -> f64 {
        self.geometry.spacing_mm[0].min(self.geometry.spacing_mm[1])
    }

    fn rasterize_vessels(&self, segments: &[VesselSegment], labels: &mut [u8], fraction: &mut [u8]) {
        let vox = self.voxel_mm();
        for s in segments {
            let r = s.radius_a.max(s.radius_b) + vox;
            let mid = Point3::from((s.a.coords + s.b.coords) * 0.5);
            let half = (s.b - s.a).norm() * 0.5;
            let Some([(i0, i1), (j0, j1), (k0, k1)]) = self.geometry.index_box(&mid, half + r) else {
                continue;
            };
            for k in k0.max(self.k0)..k1.min(self.k1) {
                for j in j0..j1 {
                    for i in i0..i1 {
                        let p = self.geometry.index_to_patient([i as f64, j as f64, k as f64]);
                        let (sd, _) = s.signed_distance(&p);
                        let f = coverage(sd, vox);
                        if f <= 0.0 {
                            continue;
                        }
                        let idx = self.local(i, j, k);
                        fraction[idx] = fraction[idx].max((f * 255.0).round() as u8);
                        if sd <= 0.0 {
                            let current = labels[idx];
                            let keep = match current {
                                labels::ARTERY => VesselClass::Artery.priority(),
                                labels::VEIN => VesselClass::Vein.priority(),
                                labels::AORTA => VesselClass::Aorta.priority(),
                                _ => 0,
                            };
                            if s.class.priority() > keep {
                                labels[idx] = s.class as u8;
                            }
                        }
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compose(
        &self,
        state: &MotionState,
        lesion: &Point3<f64>,
        markers: &[(u8, Point3<f64>, f64)],
        noise_stream: u64,
        hu_out: &mut [i16],
        labels: &mut [u8],
        fraction: &[u8],
        lesion_mask: &mut [u8],
        marker_mask: &mut [u8],
    ) {
        let ph = self.phantom;
        let vox = self.voxel_mm();
        let lesion_r = ph.config.lesion_radius_mm;
        let noise = Normal::new(0.0, ph.config.noise_hu).unwrap_or_else(|_| Normal::new(0.0, 0.0).expect("zero"));
        let [nx, ny, _] = self.geometry.dims;
        for k in self.k0..self.k1 {
            // Noise per slice: identical whatever the number of threads.
            let mut rng =
                ChaCha8Rng::seed_from_u64(ph.config.seed ^ (noise_stream << 32) ^ (k as u64).wrapping_mul(0x9E37_79B9));
            let z = self.geometry.index_to_patient([0.0, 0.0, k as f64]).z;
            let ap_expansion = skin_expansion_profile(z) * state.skin_inhale;
            let organ_shift = ph.organ_displacement(&Point3::new(0.0, 0.0, z), state);
            let near_lesion = (z - lesion.z).abs() <= lesion_r + vox;
            let slice_markers: Vec<&(u8, Point3<f64>, f64)> =
                markers.iter().filter(|(_, c, r)| (z - c.z).abs() <= r + vox).collect();
            for j in 0..ny {
                for i in 0..nx {
                    let p = self.geometry.index_to_patient([i as f64, j as f64, k as f64]);
                    let organ_p = p - organ_shift;
                    let (mut value, _) = ph.anatomy.sample_deformed(&p, &organ_p, ap_expansion);
                    let idx = self.local(i, j, k);
                    let f = fraction[idx] as f32 / 255.0;
                    if f > 0.0 {
                        // Blend towards the vessel class's HU (the label decides the class; at the rim, the nearest class).
                        let class = match labels[idx] {
                            labels::ARTERY => VesselClass::Artery,
                            labels::VEIN => VesselClass::Vein,
                            labels::AORTA => VesselClass::Aorta,
                            _ => VesselClass::Artery,
                        };
                        value += (ph.vessel_hu(class) - value) * f;
                    }
                    if near_lesion {
                        let sd = (p - lesion).norm() - lesion_r;
                        let f = coverage(sd, vox) as f32;
                        if f > 0.0 {
                            value += (hu::LESION - value) * f;
                            if sd <= 0.0 {
                                lesion_mask[idx] = 1;
                            }
                        }
                    }
                    for (id, c, r) in &slice_markers {
                        let sd = (p - c).norm() - r;
                        let f = coverage(sd, vox) as f32;
                        if f > 0.0 {
                            value += (hu::MARKER - value) * f;
                            if sd <= 0.0 {
                                marker_mask[idx] = *id;
                            }
                        }
                    }
                    let noisy = value as f64 + noise.sample(&mut rng);
                    hu_out[idx] = noisy.round().clamp(-1024.0, 3071.0) as i16;
                }
            }
        }
        let _ = (nx, ny);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> PhantomConfig {
        // 2 mm voxels: every marker (radius >= 2 mm) contains at least one voxel centre.
        PhantomConfig { dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() }
    }

    #[test]
    fn rendered_ct_has_the_labels_and_hu_where_the_truth_says() {
        let ph = Phantom::new(small()).unwrap();
        let frame = ph.render(&MotionState::REST, 0);
        let g = &frame.hu.geometry;
        // Lesion: voxels well inside it (no partial volume) have the lesion's HU (noise 12 HU).
        let centre = ph.lesion_centre(&MotionState::REST);
        let inner = ph.config.lesion_radius_mm - 3.0;
        let mut lesion_hu = Vec::new();
        for k in 0..g.dims[2] {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let d = (p - centre).norm();
                    if d < inner {
                        lesion_hu.push(frame.hu.get(i, j, k));
                    }
                    // The mask is exactly the voxels whose centres lie inside the lesion.
                    assert_eq!(frame.lesion_mask.get(i, j, k) == 1, d <= ph.config.lesion_radius_mm, "{p:?}");
                }
            }
        }
        assert!(lesion_hu.len() >= 4, "{} inner lesion voxels", lesion_hu.len());
        lesion_hu.sort_unstable();
        let median = lesion_hu[lesion_hu.len() / 2] as f32;
        assert!((median - hu::LESION).abs() < 40.0, "lesion median {median}");
        // Each marker is present and its mask centroid is its centre.
        for m in &ph.markers {
            let mut sum = Vector3::zeros();
            let mut n = 0.0;
            for k in 0..g.dims[2] {
                for j in 0..g.dims[1] {
                    for i in 0..g.dims[0] {
                        if frame.marker_mask.get(i, j, k) == m.id as u8 {
                            sum += g.index_to_patient([i as f64, j as f64, k as f64]).coords;
                            n += 1.0;
                        }
                    }
                }
            }
            assert!(n >= 1.0, "marker {} not rendered", m.id);
            let centroid = Point3::from(sum / n);
            assert!((centroid - m.rest_mm).norm() < 1.0, "marker {} centroid {centroid:?} vs {:?}", m.id, m.rest_mm);
            // and it is far brighter than bone
            let (i, j, k) = {
                let ijk = g.patient_to_index(&m.rest_mm).map(|v| v.round() as usize);
                (ijk[0], ijk[1], ijk[2])
            };
            assert!(frame.hu.get(i, j, k) > 1500, "marker {} centre HU {}", m.id, frame.hu.get(i, j, k));
        }
        // All three vessel classes appear; contrast vessels are bright.
        for class in [labels::ARTERY, labels::VEIN, labels::AORTA] {
            let values: Vec<i16> =
                frame.labels.data.iter().zip(&frame.hu.data).filter(|(l, _)| **l == class).map(|(_, h)| *h).collect();
            assert!(values.len() > 20, "class {class}: {} voxels", values.len());
            let mut sorted = values.clone();
            sorted.sort_unstable();
            assert!(sorted[sorted.len() / 2] > 150, "class {class} median {}", sorted[sorted.len() / 2]);
        }
    }

    #[test]
    fn plain_ct_vessels_are_near_blood_hu_and_labels_do_not_change() {
        let contrast = Phantom::new(small()).unwrap().render(&MotionState::REST, 0);
        let plain = Phantom::new(PhantomConfig { contrast: false, ..small() }).unwrap().render(&MotionState::REST, 0);
        assert_eq!(contrast.labels.data, plain.labels.data);
        let aorta: Vec<f64> = plain
            .labels
            .data
            .iter()
            .zip(&plain.hu.data)
            .filter(|(l, _)| **l == labels::AORTA)
            .map(|(_, h)| *h as f64)
            .collect();
        let mean = aorta.iter().sum::<f64>() / aorta.len() as f64;
        assert!((mean - 44.0).abs() < 40.0, "plain aorta mean {mean}");
    }

    #[test]
    fn same_seed_same_volume_other_seed_other_volume() {
        let a = Phantom::new(small()).unwrap().render(&MotionState::REST, 0);
        let b = Phantom::new(small()).unwrap().render(&MotionState::REST, 0);
        let c = Phantom::new(PhantomConfig { seed: 2, ..small() }).unwrap().render(&MotionState::REST, 0);
        assert_eq!(a.hu.data, b.hu.data);
        assert_ne!(a.hu.data, c.hu.data);
    }

    #[test]
    fn breathing_moves_lesion_and_soft_tissue_markers_but_not_bone_markers() {
        let ph = Phantom::new(small()).unwrap();
        let inhale = MotionState { skin_inhale: 1.0, organ_inhale: 1.0, organ_velocity: 0.0 };
        let d = ph.lesion_centre(&inhale) - ph.lesion_centre(&MotionState::REST);
        assert!((d.z + 12.0).abs() < 1e-9 && (d.y + 2.0).abs() < 1e-9, "{d:?}");
        for m in &ph.markers {
            let moved = (ph.marker_centre(m, &inhale) - m.rest_mm).norm();
            if m.over_bone {
                assert!(moved < 1.0, "bone marker {} moves {moved} mm", m.id);
            } else {
                assert!(moved > 2.5, "soft-tissue marker {} moves only {moved} mm", m.id);
            }
        }
        // Region order: abdomen > lower chest > upper chest > sternum (mean motion).
        let mean = |r: BodyRegion| {
            let v: Vec<f64> = ph.markers.iter().filter(|m| m.region == r).map(|m| m.excursion_mm.norm()).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(BodyRegion::Abdomen) > mean(BodyRegion::LowerChest));
        assert!(mean(BodyRegion::LowerChest) > mean(BodyRegion::UpperChest));
        assert!(mean(BodyRegion::UpperChest) > mean(BodyRegion::Sternum));
        // Hysteresis: same depth, opposite velocity, different AP position.
        let up = MotionState { organ_velocity: 1.0, organ_inhale: 0.5, skin_inhale: 0.5 };
        let down = MotionState { organ_velocity: -1.0, ..up };
        assert!((ph.lesion_centre(&up).y - ph.lesion_centre(&down).y).abs() > 1.0);
    }

    #[test]
    fn a_lesion_outside_the_lungs_is_refused() {
        let err = Phantom::new(PhantomConfig { lesion_centre_mm: [0.0, 72.0, 0.0], ..small() }).unwrap_err();
        assert!(matches!(err, PhantomError::BadParameter { key: "lesion_centre_mm", .. }));
        // Issue 11: 2048^3 was accepted and grew past 1.9 GB; the size is refused before allocation.
        let huge = PhantomConfig { dims: [2048, 2048, 2048], ..small() };
        let err = Phantom::new(huge).unwrap_err().to_string();
        assert!(err.contains("2048x2048x2048 = 8589934592 voxels") && err.contains("max_voxels 134217728"), "{err}");
        let just_over = PhantomConfig { max_voxels: 32 * 32 * 32 - 1, dims: [32, 32, 32], ..small() };
        assert!(Phantom::new(just_over).is_err());
        let at_limit = PhantomConfig { max_voxels: 32 * 32 * 32, dims: [32, 32, 32], ..small() };
        assert!(at_limit.validate(&Anatomy::default()).is_ok());
    }
}
