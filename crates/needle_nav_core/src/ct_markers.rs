//! Radiopaque skin markers in CT: detection with sub-voxel centres, tracking over 4-D CT phases
//! (or repeated scans), the markers near the planned needle entry, and the combination of
//! markers whose motion agrees best about how the entry point moves.
//!
//! Positions are patient LPS millimetres, as in the images.

use crate::volume::Volume;
use nalgebra::{Matrix3, SymmetricEigen, Vector3};
use serde::{Deserialize, Serialize};

/// Voxels at or below this HU carry no weight in the centroid: soft tissue (up to about 60 HU)
/// plus a margin for noise, so the tissue a marker rests on does not pull its centre inwards.
pub const WEIGHT_LEVEL_HU: f64 = 100.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarkerDetectionConfig {
    /// Voxels at or above this are marker (cortical bone reaches about 900..1200 HU).
    pub threshold_hu: f64,
    /// Equivalent radius of the thresholded blob: the radius of a sphere of the same volume [mm].
    pub min_radius_mm: f64,
    pub max_radius_mm: f64,
    /// Minimum isotropy: smallest over largest eigenvalue of the blob's intensity-weighted second
    /// moments, plus the variance of the coarsest voxel edge on every axis (see [`DetectedMarker::isotropy`]).
    /// Measured: phantom balls 0.50..0.95 (2 mm voxels down to 1.5 x 1.5 x 3 mm), real 2-3 mm skin BBs in
    /// 1 x 1 x 2 mm CT 0.57..0.63; rods and wires 0.00..0.03.
    pub min_sphericity: f64,
    /// Blobs are grown by this many voxels (26-neighbourhood) for the centroid, so that the
    /// partial-volume voxels below the threshold count on every side alike.
    pub rim_voxels: usize,
}

impl Default for MarkerDetectionConfig {
    fn default() -> Self {
        MarkerDetectionConfig {
            threshold_hu: 1500.0,
            min_radius_mm: 1.0,
            max_radius_mm: 6.0,
            min_sphericity: 0.35,
            rim_voxels: 1,
        }
    }
}

impl MarkerDetectionConfig {
    /// Checks the values (for configurations read from files).
    pub fn validate(&self) -> Result<(), CtMarkerError> {
        if !self.threshold_hu.is_finite() {
            return Err(invalid("threshold_hu", format!("{} is not a number of HU", self.threshold_hu)));
        }
        let radii_ok = self.min_radius_mm.is_finite() && self.max_radius_mm.is_finite() && self.min_radius_mm >= 0.0;
        if !radii_ok || self.min_radius_mm > self.max_radius_mm {
            return Err(invalid(
                "min_radius_mm/max_radius_mm",
                format!("{}..{} mm is not a range of radii", self.min_radius_mm, self.max_radius_mm),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_sphericity) {
            return Err(invalid("min_sphericity", format!("{} is outside 0..=1", self.min_sphericity)));
        }
        if self.rim_voxels > 5 {
            return Err(invalid("rim_voxels", format!("{} is above 5 voxels", self.rim_voxels)));
        }
        Ok(())
    }
}

/// One bright blob.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectedMarker {
    /// Intensity-weighted centroid [mm, LPS].
    pub centre_mm: [f64; 3],
    /// Voxels at or above the threshold.
    pub voxels: usize,
    /// Radius of a sphere with the volume of those voxels [mm] (partial volume makes it a little small).
    pub equivalent_radius_mm: f64,
    pub peak_hu: f64,
    /// Smallest over largest eigenvalue of the intensity-weighted second moments, with (coarsest voxel
    /// edge)²/12 added on every axis so that shape below the voxel size does not count: 1 sphere, ~0 rod.
    pub isotropy: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CtMarkerError {
    #[error(
        "only {found} markers usable around the entry point, at least {need} needed: \
         re-place markers around the planned entry point and scan again"
    )]
    TooFewMarkers { found: usize, need: usize },
    #[error(
        "marker {marker} is missing in frame {frame} (t = {time_s:.2} s): no detection within {max_step_mm:.1} mm \
         of its last position{}",
        .nearest_mm.map(|d| format!(" (nearest {d:.1} mm away)")).unwrap_or_default()
    )]
    MissingInFrame { marker: usize, frame: usize, time_s: f64, max_step_mm: f64, nearest_mm: Option<f64> },
    #[error(
        "marker {marker} in frame {frame} (t = {time_s:.2} s) is ambiguous: {} detections within reach, at {:?} mm",
        .distances_mm.len(), .distances_mm
    )]
    Ambiguous { marker: usize, frame: usize, time_s: f64, distances_mm: Vec<f64> },
    #[error("markers {} and {} claim the same detection in frame {frame} (t = {time_s:.2} s)", .markers.0, .markers.1)]
    SharedDetection { markers: (usize, usize), frame: usize, time_s: f64 },
    #[error(
        "frame {frame} (t = {time_s:.2} s) has a marker at {centre_mm:?} mm that is not in the first frame \
         (a marker missed there, or a false detection)"
    )]
    UnexpectedDetection { frame: usize, time_s: f64, centre_mm: [f64; 3] },
    #[error("frame times must increase: frame {frame} is at {time_s} s")]
    TimesNotIncreasing { frame: usize, time_s: f64 },
    #[error("marker {index} has no curve")]
    UnknownMarker { index: usize },
    #[error("the curves of markers {a} and {b} are not sampled at the same times")]
    UnequalSampling { a: usize, b: usize },
    #[error("{what}: {reason}")]
    InvalidRequest { what: &'static str, reason: String },
}

fn invalid(what: &'static str, reason: impl Into<String>) -> CtMarkerError {
    CtMarkerError::InvalidRequest { what, reason: reason.into() }
}

const NEIGHBOURS_26: usize = 26;

fn neighbour_offsets() -> [(i64, i64, i64); NEIGHBOURS_26] {
    let mut out = [(0, 0, 0); NEIGHBOURS_26];
    let mut n = 0;
    for dk in -1..=1 {
        for dj in -1..=1 {
            for di in -1..=1 {
                if (di, dj, dk) != (0, 0, 0) {
                    out[n] = (di, dj, dk);
                    n += 1;
                }
            }
        }
    }
    out
}

/// 26-connected components of the voxels at or above `threshold` (voxel offsets, per component).
fn components(volume: &Volume<f32>, threshold: f32) -> Vec<Vec<usize>> {
    let [nx, ny, nz] = volume.geometry.dims;
    let offsets = neighbour_offsets();
    let mut seen = vec![false; volume.data.len()];
    let mut out = Vec::new();
    for start in 0..volume.data.len() {
        let v = volume.data[start];
        if seen[start] || v.is_nan() || v < threshold {
            continue;
        }
        seen[start] = true;
        let mut blob = vec![start];
        let mut next = 0;
        while next < blob.len() {
            let o = blob[next];
            next += 1;
            let (i, j, k) = ((o % nx) as i64, (o / nx % ny) as i64, (o / (nx * ny)) as i64);
            for (di, dj, dk) in offsets {
                let (a, b, c) = (i + di, j + dj, k + dk);
                if a < 0 || b < 0 || c < 0 || a >= nx as i64 || b >= ny as i64 || c >= nz as i64 {
                    continue;
                }
                let n = volume.geometry.offset(a as usize, b as usize, c as usize);
                if !seen[n] && volume.data[n] >= threshold {
                    seen[n] = true;
                    blob.push(n);
                }
            }
        }
        out.push(blob);
    }
    out
}

/// Measures one blob: centroid over the blob grown by `rim` voxels, weights HU above [`WEIGHT_LEVEL_HU`].
fn measure(
    volume: &Volume<f32>,
    blob: &[usize],
    rim: usize,
    level: f64,
    in_other_blob: &dyn Fn(usize) -> bool,
) -> (DetectedMarker, Matrix3<f64>) {
    let g = &volume.geometry;
    let [nx, ny, _] = g.dims;
    let ijk = |o: usize| [o % nx, o / nx % ny, o / (nx * ny)];
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut peak = f64::NEG_INFINITY;
    for &o in blob {
        let v = ijk(o);
        for a in 0..3 {
            lo[a] = lo[a].min(v[a]);
            hi[a] = hi[a].max(v[a]);
        }
        peak = peak.max(volume.data[o] as f64);
    }
    // Local box around the blob, grown by the rim; dilate the blob mask inside it.
    let lo = [0, 1, 2].map(|a| lo[a].saturating_sub(rim));
    let hi = [0, 1, 2].map(|a| (hi[a] + rim).min(g.dims[a] - 1));
    let size = [0, 1, 2].map(|a| hi[a] - lo[a] + 1);
    let local = |v: [usize; 3]| ((v[2] - lo[2]) * size[1] + (v[1] - lo[1])) * size[0] + (v[0] - lo[0]);
    let mut mask = vec![false; size[0] * size[1] * size[2]];
    for &o in blob {
        mask[local(ijk(o))] = true;
    }
    for _ in 0..rim {
        let prev = mask.clone();
        for k in 0..size[2] {
            for j in 0..size[1] {
                for i in 0..size[0] {
                    let idx = (k * size[1] + j) * size[0] + i;
                    if prev[idx] {
                        continue;
                    }
                    let near = (k.saturating_sub(1)..=(k + 1).min(size[2] - 1)).any(|kk| {
                        (j.saturating_sub(1)..=(j + 1).min(size[1] - 1)).any(|jj| {
                            (i.saturating_sub(1)..=(i + 1).min(size[0] - 1))
                                .any(|ii| prev[(kk * size[1] + jj) * size[0] + ii])
                        })
                    });
                    mask[idx] = near;
                }
            }
        }
    }
    let s = g.spacing_mm;
    let (mut sw, mut m1, mut m2) = (0.0, Vector3::zeros(), Matrix3::zeros());
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                if !mask[(k * size[1] + j) * size[0] + i] {
                    continue;
                }
                let (gi, gj, gk) = (i + lo[0], j + lo[1], k + lo[2]);
                let o = g.offset(gi, gj, gk);
                if in_other_blob(o) {
                    continue;
                }
                let w = (volume.data[o] as f64 - level).max(0.0);
                // Scaled index coordinates: the direction matrix is a rotation, moments keep their eigenvalues.
                let x = Vector3::new(gi as f64 * s[0], gj as f64 * s[1], gk as f64 * s[2]);
                sw += w;
                m1 += x * w;
                m2 += x * x.transpose() * w;
            }
        }
    }
    let mean = m1 / sw;
    let cov = m2 / sw - mean * mean.transpose();
    let centre = g.index_to_patient([mean.x / s[0], mean.y / s[1], mean.z / s[2]]);
    let voxel_volume = s[0] * s[1] * s[2];
    let marker = DetectedMarker {
        centre_mm: centre.into(),
        voxels: blob.len(),
        equivalent_radius_mm: (3.0 * blob.len() as f64 * voxel_volume / (4.0 * std::f64::consts::PI)).cbrt(),
        peak_hu: peak,
        isotropy: isotropy(&cov, s),
    };
    (marker, cov)
}

/// Smallest over largest eigenvalue of the weighted second moments `cov` [mm²], with the variance of the
/// coarsest voxel edge (h²/12) added on every axis: shape differences below the voxel size are not measurable
/// (a 2 mm ball in 3 mm slices looks taller than wide) and must not count, while a rod or wire stays far below.
fn isotropy(cov: &Matrix3<f64>, spacing: [f64; 3]) -> f64 {
    let h = spacing[0].max(spacing[1]).max(spacing[2]);
    let eig = SymmetricEigen::new(cov + Matrix3::identity() * (h * h / 12.0)).eigenvalues;
    (eig.min() / eig.max()).clamp(0.0, 1.0)
}

/// Why a bright blob is not taken as a marker.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    #[error("touches the edge of the image: may be cut off, centre unreliable")]
    TouchesEdge,
    #[error("equivalent radius {radius_mm:.2} mm below the minimum {min_mm:.2} mm (noise or a fragment)")]
    TooSmall { radius_mm: f64, min_mm: f64 },
    #[error(
        "equivalent radius {radius_mm:.2} mm above the maximum {max_mm:.2} mm (too big for a marker: metal implant, \
         contrast or bone?)"
    )]
    TooBig { radius_mm: f64, max_mm: f64 },
    #[error("isotropy {isotropy:.2} below the minimum {min:.2}: elongated, not a sphere (wire, catheter, needle?)")]
    Elongated { isotropy: f64, min: f64 },
}

/// HU threshold, 26-connected components, size and shape filter, intensity-weighted sub-voxel centroid
/// (weights = HU above a soft-tissue level, over the blob grown by rim_voxels so partial-volume voxels count
/// symmetrically). Returns the accepted markers and the rejected candidates with their reason.
pub fn detect_markers(
    volume: &Volume<f32>,
    cfg: &MarkerDetectionConfig,
) -> (Vec<DetectedMarker>, Vec<(DetectedMarker, Rejection)>) {
    // A NaN threshold would let every voxel through (see MarkerDetectionConfig::validate).
    if cfg.threshold_hu.is_nan() {
        return (Vec::new(), Vec::new());
    }
    let blobs = components(volume, cfg.threshold_hu as f32);
    let mut owner = std::collections::HashMap::new();
    for (b, blob) in blobs.iter().enumerate() {
        for &o in blob {
            owner.insert(o, b);
        }
    }
    let [nx, ny, nz] = volume.geometry.dims;
    let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
    for (b, blob) in blobs.iter().enumerate() {
        let other = |o: usize| owner.get(&o).is_some_and(|&x| x != b);
        // Below the threshold, or every blob voxel would weigh nothing.
        let level = WEIGHT_LEVEL_HU.min(cfg.threshold_hu - 1.0);
        let (m, _) = measure(volume, blob, cfg.rim_voxels, level, &other);
        let on_edge = blob.iter().any(|&o| {
            let (i, j, k) = (o % nx, o / nx % ny, o / (nx * ny));
            i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1
        });
        let reason = if on_edge {
            Some(Rejection::TouchesEdge)
        } else if m.equivalent_radius_mm < cfg.min_radius_mm {
            Some(Rejection::TooSmall { radius_mm: m.equivalent_radius_mm, min_mm: cfg.min_radius_mm })
        } else if m.equivalent_radius_mm > cfg.max_radius_mm {
            Some(Rejection::TooBig { radius_mm: m.equivalent_radius_mm, max_mm: cfg.max_radius_mm })
        } else if m.isotropy < cfg.min_sphericity {
            Some(Rejection::Elongated { isotropy: m.isotropy, min: cfg.min_sphericity })
        } else {
            None
        };
        match reason {
            Some(r) => rejected.push((m, r)),
            None => accepted.push(m),
        }
    }
    (accepted, rejected)
}

/// The track of one marker over the frames.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarkerCurve {
    /// Index of the marker in the first frame's detections.
    pub index: usize,
    pub times_s: Vec<f64>,
    pub positions_mm: Vec<[f64; 3]>,
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    (Vector3::from(a) - Vector3::from(b)).norm()
}

/// Follows markers over several CT frames (4-D CT phases or repeated scans) by nearest-neighbour
/// assignment with a maximum step (mm); a marker missing in a frame or an ambiguous assignment is reported, not guessed.
///
/// The markers are those of the first frame (curve `index` = position in its list). In every later frame each
/// marker must have exactly one detection within `max_step_mm` of its previous position, no detection may be
/// claimed by two markers, and no detection may be left over. Choose `max_step_mm` above the largest motion
/// between consecutive frames and below half the smallest distance between markers.
pub fn track_across_frames(
    frames: &[(f64, Vec<DetectedMarker>)],
    max_step_mm: f64,
) -> Result<Vec<MarkerCurve>, CtMarkerError> {
    if !(max_step_mm.is_finite() && max_step_mm > 0.0) {
        return Err(invalid("max_step_mm", format!("{max_step_mm} must be a positive distance")));
    }
    let Some((t0, first)) = frames.first() else {
        return Err(invalid("frames", "no frames given"));
    };
    if !t0.is_finite() {
        return Err(CtMarkerError::TimesNotIncreasing { frame: 0, time_s: *t0 });
    }
    let mut curves: Vec<MarkerCurve> = first
        .iter()
        .enumerate()
        .map(|(index, m)| MarkerCurve { index, times_s: vec![*t0], positions_mm: vec![m.centre_mm] })
        .collect();
    for (f, (t, detections)) in frames.iter().enumerate().skip(1) {
        if !(t.is_finite() && *t > frames[f - 1].0) {
            return Err(CtMarkerError::TimesNotIncreasing { frame: f, time_s: *t });
        }
        let mut claimed: Vec<Option<usize>> = vec![None; detections.len()];
        for curve in &mut curves {
            let last = curve.positions_mm[curve.positions_mm.len() - 1];
            let distances: Vec<f64> = detections.iter().map(|d| dist(d.centre_mm, last)).collect();
            let within: Vec<usize> = (0..detections.len()).filter(|&d| distances[d] <= max_step_mm).collect();
            match within.as_slice() {
                [] => {
                    return Err(CtMarkerError::MissingInFrame {
                        marker: curve.index,
                        frame: f,
                        time_s: *t,
                        max_step_mm,
                        nearest_mm: distances.iter().copied().reduce(f64::min),
                    })
                }
                [d] => {
                    if let Some(other) = claimed[*d] {
                        return Err(CtMarkerError::SharedDetection {
                            markers: (other, curve.index),
                            frame: f,
                            time_s: *t,
                        });
                    }
                    claimed[*d] = Some(curve.index);
                    curve.times_s.push(*t);
                    curve.positions_mm.push(detections[*d].centre_mm);
                }
                several => {
                    return Err(CtMarkerError::Ambiguous {
                        marker: curve.index,
                        frame: f,
                        time_s: *t,
                        distances_mm: several.iter().map(|&d| distances[d]).collect(),
                    })
                }
            }
        }
        if let Some(d) = claimed.iter().position(|c| c.is_none()) {
            return Err(CtMarkerError::UnexpectedDetection {
                frame: f,
                time_s: *t,
                centre_mm: detections[d].centre_mm,
            });
        }
    }
    Ok(curves)
}

/// Markers within `radius_mm` of the preset entry point (the search region), judged by their position in the
/// first frame (the reference scan). Returns their `MarkerCurve::index`, nearest first.
pub fn in_search_region(curves: &[MarkerCurve], entry_mm: [f64; 3], radius_mm: f64) -> Vec<usize> {
    let mut inside: Vec<(f64, usize)> = curves
        .iter()
        .filter_map(|c| {
            let d = dist(*c.positions_mm.first()?, entry_mm);
            (d <= radius_mm).then_some((d, c.index))
        })
        .collect();
    inside.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    inside.into_iter().map(|(_, i)| i).collect()
}

/// How the agreement of a combination's entry displacement features is measured: the one with
/// the smallest value wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombinationCriterion {
    /// Largest minus smallest feature (the method's criterion).
    #[default]
    Range,
    /// Population standard deviation of the features.
    StandardDeviation,
}

impl CombinationCriterion {
    /// The spread of `features` under this criterion [same unit as the features]; 0 when empty.
    pub fn spread(self, features: &[f64]) -> f64 {
        if features.is_empty() {
            return 0.0;
        }
        match self {
            CombinationCriterion::Range => {
                features.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    - features.iter().copied().fold(f64::INFINITY, f64::min)
            }
            CombinationCriterion::StandardDeviation => {
                let n = features.len() as f64;
                let mean = features.iter().sum::<f64>() / n;
                (features.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n).sqrt()
            }
        }
    }
}

/// A chosen set of markers and what they say about the entry point's motion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Combination {
    /// `MarkerCurve::index` of the members, ascending.
    pub members: Vec<usize>,
    /// Entry displacement feature of each member [mm], in the order of `members`.
    pub features_mm: Vec<f64>,
    /// The criterion the combination was chosen by.
    pub criterion: CombinationCriterion,
    /// The features' spread under that criterion (range or standard deviation) [mm].
    pub spread_mm: f64,
    /// Entry displacement per time relative to the first frame, interpolated from the members [mm].
    pub entry_displacement_mm: Vec<[f64; 3]>,
}

/// Two spreads closer than this are a tie [mm].
const SPREAD_TIE_MM: f64 = 1e-9;
/// Beyond this many candidates the exhaustive search (2^n subsets) is refused.
const MAX_CANDIDATES: usize = 20;
/// Inverse-distance weights stop growing closer than this to the entry [mm].
const IDW_MIN_DISTANCE_MM: f64 = 1.0;

/// Displacement of a curve from its first position, per time.
fn displacement(c: &MarkerCurve) -> Vec<Vector3<f64>> {
    let p0 = Vector3::from(c.positions_mm[0]);
    c.positions_mm.iter().map(|p| Vector3::from(*p) - p0).collect()
}

/// Candidate combinations: for each candidate marker, the preset entry point's displacement over time is
/// estimated from that marker's motion by spatial interpolation; the entry displacement feature is computed per
/// candidate; among all combinations of size min_size..=max_size, the one whose candidates' features have the
/// smallest spread is chosen: by default the smallest range (max - min) of the features, as the method
/// states; `CombinationCriterion::StandardDeviation` is the earlier rule. Tie-break: closest to the entry.
///
/// Interpolation: from a single marker, the entry point is taken to move as that marker does (nearest-neighbour,
/// zero-order: skin within the search region moves together); the feature is the peak-to-peak range of the
/// magnitude of that displacement relative to the first frame. For the chosen combination the entry
/// displacement is the inverse-distance-squared weighted mean of the members' displacements (distances of
/// their first-frame positions to the entry, at least 1 mm). "Closest" in the tie-break is the members' mean
/// distance to the entry. `candidates` are `MarkerCurve::index` values; the curves must share their times.
pub fn select_combination(
    curves: &[MarkerCurve],
    candidates: &[usize],
    entry_mm: [f64; 3],
    min_size: usize,
    max_size: usize,
    criterion: CombinationCriterion,
) -> Result<Combination, CtMarkerError> {
    if min_size < 2 {
        return Err(invalid("min_size", format!("{min_size}: a spread needs at least 2 markers")));
    }
    if max_size < min_size {
        return Err(invalid("max_size", format!("{max_size} is below min_size {min_size}")));
    }
    let mut ids = candidates.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() < min_size {
        return Err(CtMarkerError::TooFewMarkers { found: ids.len(), need: min_size });
    }
    if ids.len() > MAX_CANDIDATES {
        return Err(invalid("candidates", format!("{} markers: at most {MAX_CANDIDATES} are searched", ids.len())));
    }
    let mut chosen: Vec<&MarkerCurve> = Vec::with_capacity(ids.len());
    for &i in &ids {
        let c = curves.iter().find(|c| c.index == i).ok_or(CtMarkerError::UnknownMarker { index: i })?;
        if c.positions_mm.is_empty() || c.positions_mm.len() != c.times_s.len() {
            return Err(CtMarkerError::UnknownMarker { index: i });
        }
        chosen.push(c);
    }
    let base = chosen[0];
    for c in &chosen[1..] {
        let same = c.times_s.len() == base.times_s.len()
            && c.times_s.iter().zip(&base.times_s).all(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(1.0));
        if !same {
            return Err(CtMarkerError::UnequalSampling { a: base.index, b: c.index });
        }
    }
    let displacements: Vec<Vec<Vector3<f64>>> = chosen.iter().map(|c| displacement(c)).collect();
    let features: Vec<f64> = displacements
        .iter()
        .map(|d| {
            let mags = d.iter().map(|v| v.norm());
            mags.clone().fold(f64::NEG_INFINITY, f64::max) - mags.fold(f64::INFINITY, f64::min)
        })
        .collect();
    let distance: Vec<f64> = chosen.iter().map(|c| dist(c.positions_mm[0], entry_mm)).collect();

    let n = ids.len();
    let max_size = max_size.min(n);
    let mut best: Option<(f64, f64, u32)> = None;
    for mask in 1u32..(1 << n) {
        let size = mask.count_ones() as usize;
        if size < min_size || size > max_size {
            continue;
        }
        let members: Vec<usize> = (0..n).filter(|&b| mask & (1 << b) != 0).collect();
        let spread = criterion.spread(&members.iter().map(|&m| features[m]).collect::<Vec<f64>>());
        let closeness = members.iter().map(|&m| distance[m]).sum::<f64>() / size as f64;
        let better = match best {
            None => true,
            Some((s, c, _)) => spread < s - SPREAD_TIE_MM || ((spread - s).abs() <= SPREAD_TIE_MM && closeness < c),
        };
        if better {
            best = Some((spread, closeness, mask));
        }
    }
    let (spread_mm, _, mask) = best.ok_or(CtMarkerError::TooFewMarkers { found: n, need: min_size })?;
    let members: Vec<usize> = (0..n).filter(|&b| mask & (1 << b) != 0).collect();
    let weights: Vec<f64> = members.iter().map(|&m| distance[m].max(IDW_MIN_DISTANCE_MM).powi(-2)).collect();
    let total: f64 = weights.iter().sum();
    let entry_displacement_mm = (0..base.times_s.len())
        .map(|t| {
            let v: Vector3<f64> = members.iter().zip(&weights).map(|(&m, w)| displacements[m][t] * *w).sum();
            (v / total).into()
        })
        .collect();
    Ok(Combination {
        members: members.iter().map(|&m| ids[m]).collect(),
        features_mm: members.iter().map(|&m| features[m]).collect(),
        criterion,
        spread_mm,
        entry_displacement_mm,
    })
}
