//! Radiopaque skin markers in CT: detection with sub-voxel centres, tracking over 4-D CT phases
//! (or repeated scans), the markers near the planned needle entry, and the combination of
//! markers whose motion agrees best about how the entry point moves.
//!
//! Positions are patient LPS millimetres, as in the images.

use crate::imaging::volume::Volume;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::phantom::{MotionState, Phantom, PhantomConfig};
    use nalgebra::Point3;

    fn small() -> PhantomConfig {
        PhantomConfig { dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() }
    }

    fn hu_f32(v: &Volume<i16>) -> Volume<f32> {
        Volume { geometry: v.geometry.clone(), data: v.data.iter().map(|&h| h as f32).collect() }
    }

    /// Nearest truth marker (id, distance) of a detection.
    fn nearest_truth(ph: &Phantom, state: &MotionState, d: &DetectedMarker) -> (u32, f64) {
        ph.markers
            .iter()
            .map(|m| (m.id, (ph.marker_centre(m, state) - Point3::from(d.centre_mm)).norm()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::INFINITY))
    }

    /// Paints a bright object (partial volume by signed distance, as the phantom renders markers).
    fn paint(v: &mut Volume<f32>, hu: f32, signed_distance: impl Fn(Point3<f64>) -> f64) {
        let g = v.geometry.clone();
        for k in 0..g.dims[2] {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    let sd = signed_distance(g.index_to_patient([i as f64, j as f64, k as f64]));
                    let f = (0.5 - sd / g.spacing_mm[0]).clamp(0.0, 1.0) as f32;
                    if f > 0.0 {
                        let o = g.offset(i, j, k);
                        v.data[o] += (hu - v.data[o]) * f;
                    }
                }
            }
        }
    }

    #[test]
    fn all_phantom_markers_found_with_sub_voxel_centres_and_bone_rejected() {
        let ph = Phantom::new(small()).unwrap();
        let frame = ph.render(&MotionState::REST, 0);
        let vol = hu_f32(&frame.hu);
        let (found, rejected) = detect_markers(&vol, &MarkerDetectionConfig::default());
        assert!(rejected.is_empty(), "rejected: {rejected:?}");
        assert_eq!(found.len(), ph.markers.len(), "{found:?}");
        let mut ids: Vec<u32> = Vec::new();
        let mut worst: f64 = 0.0;
        for d in &found {
            let (id, err) = nearest_truth(&ph, &MotionState::REST, d);
            ids.push(id);
            worst = worst.max(err);
            assert!(err < 0.5, "marker {id}: centroid {:?} is {err:.3} mm from the truth", d.centre_mm);
            assert!(d.isotropy > 0.5 && d.peak_hu > 1500.0, "{d:?}");
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ph.markers.len(), "each marker found once");
        eprintln!("phantom markers: worst centroid error {worst:.3} mm");
        // Away from the markers the brightest voxel is bone, well below the threshold.
        let g = &vol.geometry;
        let mut near_marker = vec![false; vol.data.len()];
        for m in &ph.markers {
            if let Some([(i0, i1), (j0, j1), (k0, k1)]) = g.index_box(&m.rest_mm, m.radius_mm + 4.0) {
                for k in k0..k1 {
                    for j in j0..j1 {
                        for i in i0..i1 {
                            near_marker[g.offset(i, j, k)] = true;
                        }
                    }
                }
            }
        }
        let brightest =
            vol.data.iter().zip(&near_marker).filter(|(_, &n)| !n).map(|(v, _)| *v).fold(f32::MIN, f32::max);
        assert!((800.0..1500.0).contains(&brightest), "brightest voxel away from markers: {brightest} HU");
        eprintln!("brightest voxel away from markers (bone): {brightest} HU");
    }

    #[test]
    fn too_big_and_elongated_blobs_are_rejected_with_their_reason() {
        let ph = Phantom::new(small()).unwrap();
        let mut vol = hu_f32(&ph.render(&MotionState::REST, 0).hu);
        // In the air in front of the body, away from the markers.
        let ball = Point3::new(140.0, -110.0, 60.0);
        paint(&mut vol, 3000.0, |p| (p - ball).norm() - 7.5);
        // A rod 30 mm long, radius 3 mm: its volume is that of a 5.9 mm sphere, within the size limits.
        let (a, b) = (Point3::new(-140.0, -110.0, -60.0), Point3::new(-140.0, -110.0, -30.0));
        paint(&mut vol, 3000.0, |p| {
            let t = ((p - a).dot(&(b - a)) / (b - a).norm_squared()).clamp(0.0, 1.0);
            (p - (a + (b - a) * t)).norm() - 3.0
        });
        let (found, rejected) = detect_markers(&vol, &MarkerDetectionConfig::default());
        assert_eq!(found.len(), 12, "the markers are still found");
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        let near = |c: [f64; 3], p: Point3<f64>| (Point3::from(c) - p).norm() < 20.0;
        let ball_r = rejected.iter().find(|(m, _)| near(m.centre_mm, ball)).expect("ball rejected");
        assert!(matches!(ball_r.1, Rejection::TooBig { .. }), "{}", ball_r.1);
        assert!(ball_r.0.equivalent_radius_mm > 6.5, "{:?}", ball_r.0);
        let rod = rejected.iter().find(|(m, _)| near(m.centre_mm, Point3::new(-140.0, -110.0, -45.0)));
        let rod = rod.expect("rod rejected");
        assert!(matches!(rod.1, Rejection::Elongated { .. }), "{}", rod.1);
        assert!(rod.0.equivalent_radius_mm < 6.0 && rod.0.isotropy < 0.2, "{:?}", rod.0);
    }

    /// The real thorax CT (1 x 1 x 2 mm voxels) carries two radiopaque skin BBs (anterior chest and left
    /// lateral), 10-11 voxels each, saturated at 2976 HU; nothing else but one stray voxel reaches 1500 HU.
    #[test]
    fn the_skin_bbs_of_the_real_thorax_ct_are_found() {
        let dir = std::path::Path::new("/work/shared/data/thorax_ct_dicom");
        assert!(dir.is_dir(), "test data folder {} is missing (see ../shared/data/MANIFEST.md)", dir.display());
        let ct = crate::imaging::dicom_read::load_series(dir, None).unwrap();
        let (found, rejected) = detect_markers(&ct.volume, &MarkerDetectionConfig::default());
        // Centres of the saturated (>= 2900 HU) voxels of each BB, from pydicom 3.0.1.
        let truth = [[238.932, 83.396, -1.5], [-77.881, -93.810, 0.0]];
        assert_eq!(found.len(), 2, "{found:?}");
        for t in truth {
            let d = found.iter().map(|m| dist(m.centre_mm, t)).fold(f64::INFINITY, f64::min);
            assert!(d < 0.5, "no marker within 0.5 mm of {t:?}: {found:?}");
        }
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert!(rejected[0].0.voxels == 1 && matches!(rejected[0].1, Rejection::TooSmall { .. }), "{rejected:?}");
    }

    #[test]
    fn config_reads_with_defaults_and_refuses_unknown_keys() {
        let c: MarkerDetectionConfig = serde_json::from_str(r#"{"threshold_hu": 2000}"#).unwrap();
        assert_eq!(c, MarkerDetectionConfig { threshold_hu: 2000.0, ..Default::default() });
        assert!(serde_json::from_str::<MarkerDetectionConfig>(r#"{"treshold_hu": 2000}"#).is_err());
        assert_eq!(MarkerDetectionConfig::default().validate(), Ok(()));
        let bad = MarkerDetectionConfig { min_radius_mm: 7.0, ..Default::default() };
        assert!(matches!(
            bad.validate(),
            Err(CtMarkerError::InvalidRequest { what: "min_radius_mm/max_radius_mm", .. })
        ));
        let bad = MarkerDetectionConfig { min_sphericity: 1.5, ..Default::default() };
        assert!(bad.validate().is_err());
    }

    fn states() -> Vec<(f64, MotionState)> {
        [0.0, 0.35, 0.7, 1.0]
            .iter()
            .enumerate()
            .map(|(n, &s)| (n as f64 * 0.5, MotionState { skin_inhale: s, organ_inhale: s, organ_velocity: 0.0 }))
            .collect()
    }

    #[test]
    fn markers_are_tracked_over_4d_phases_as_the_truth_moves_and_a_lost_one_is_reported() {
        let ph = Phantom::new(small()).unwrap();
        let cfg = MarkerDetectionConfig::default();
        let states = states();
        let frames: Vec<(f64, Vec<DetectedMarker>)> = states
            .iter()
            .enumerate()
            .map(|(n, (t, s))| {
                let (found, rejected) = detect_markers(&hu_f32(&ph.render(s, n as u64 + 1).hu), &cfg);
                assert!(rejected.is_empty() && found.len() == 12, "phase {n}: {found:?} {rejected:?}");
                (*t, found)
            })
            .collect();
        let curves = track_across_frames(&frames, 6.0).unwrap();
        assert_eq!(curves.len(), 12);
        let mut worst: f64 = 0.0;
        for c in &curves {
            let (id, _) = nearest_truth(&ph, &states[0].1, &frames[0].1[c.index]);
            let truth = ph.markers.iter().find(|m| m.id == id).unwrap();
            assert_eq!(c.times_s, states.iter().map(|s| s.0).collect::<Vec<_>>());
            for (p, (_, s)) in c.positions_mm.iter().zip(&states) {
                let err = (ph.marker_centre(truth, s) - Point3::from(*p)).norm();
                worst = worst.max(err);
                assert!(err < 0.5, "marker {id} at {s:?}: {err:.3} mm off");
            }
        }
        eprintln!("4-D tracking: worst position error {worst:.3} mm over {} phases", states.len());

        // Marker 5 of the first frame vanishes in frame 2.
        let mut lost = frames.clone();
        let last = curves[5].positions_mm[1];
        lost[2].1.retain(|d| dist(d.centre_mm, last) > 6.0);
        assert_eq!(lost[2].1.len(), 11);
        match track_across_frames(&lost, 6.0) {
            Err(CtMarkerError::MissingInFrame { marker: 5, frame: 2, .. }) => {}
            other => panic!("expected marker 5 missing in frame 2, got {other:?}"),
        }
    }

    fn det(c: [f64; 3]) -> DetectedMarker {
        DetectedMarker { centre_mm: c, voxels: 7, equivalent_radius_mm: 2.5, peak_hu: 2800.0, isotropy: 0.9 }
    }

    #[test]
    fn ambiguous_shared_extra_and_out_of_order_frames_are_reported() {
        let f0 = (0.0, vec![det([0.0, 0.0, 0.0]), det([50.0, 0.0, 0.0])]);
        let ok = track_across_frames(&[f0.clone(), (1.0, vec![det([52.0, 0.0, 0.0]), det([1.0, 0.0, 0.0])])], 5.0);
        let ok = ok.unwrap();
        assert_eq!(ok[1].positions_mm, vec![[50.0, 0.0, 0.0], [52.0, 0.0, 0.0]]);
        // Two detections within reach of marker 0.
        let two = (1.0, vec![det([1.0, 0.0, 0.0]), det([-1.0, 0.0, 0.0]), det([50.0, 0.0, 0.0])]);
        assert!(matches!(
            track_across_frames(&[f0.clone(), two], 5.0),
            Err(CtMarkerError::Ambiguous { marker: 0, frame: 1, .. })
        ));
        // Two markers 6 mm apart, both reaching the one detection between them.
        let close = (0.0, vec![det([0.0, 0.0, 0.0]), det([6.0, 0.0, 0.0])]);
        let shared = (1.0, vec![det([3.0, 0.0, 0.0]), det([30.0, 0.0, 0.0])]);
        assert!(matches!(
            track_across_frames(&[close, shared], 5.0),
            Err(CtMarkerError::SharedDetection { markers: (0, 1), frame: 1, .. })
        ));
        // A detection nobody claims.
        let extra = (1.0, vec![det([0.0, 0.0, 0.0]), det([50.0, 0.0, 0.0]), det([0.0, 90.0, 0.0])]);
        assert!(matches!(
            track_across_frames(&[f0.clone(), extra], 5.0),
            Err(CtMarkerError::UnexpectedDetection { frame: 1, .. })
        ));
        let back = (0.0, f0.1.clone());
        assert!(matches!(
            track_across_frames(&[f0.clone(), back], 5.0),
            Err(CtMarkerError::TimesNotIncreasing { frame: 1, .. })
        ));
        assert!(track_across_frames(&[], 5.0).is_err());
    }

    fn curve(index: usize, p0: [f64; 3], motion: impl Fn(f64) -> [f64; 3]) -> MarkerCurve {
        let times: Vec<f64> = (0..9).map(|k| k as f64 * 0.5).collect();
        let positions = times
            .iter()
            .map(|&t| {
                let d = motion(t);
                [p0[0] + d[0], p0[1] + d[1], p0[2] + d[2]]
            })
            .collect();
        MarkerCurve { index, times_s: times, positions_mm: positions }
    }

    #[test]
    fn search_region_keeps_markers_by_their_first_position() {
        let still = |_| [0.0, 0.0, 0.0];
        let curves = vec![
            curve(0, [13.0, 4.0, 0.0], still),                     // 5 mm from the entry (10, 0, 0)
            curve(1, [10.0, 0.0, 10.0], still),                    // 10 mm: on the boundary, kept
            curve(2, [16.0, 8.0, 0.0], still),                     // 10 mm
            curve(3, [10.0, -10.0, 0.1], still),                   // 10.0005 mm: outside
            curve(4, [30.0, 0.0, 0.0], |t| [-20.0 * t, 0.0, 0.0]), // passes the entry later: outside
        ];
        assert_eq!(in_search_region(&curves, [10.0, 0.0, 0.0], 10.0), vec![0, 1, 2]);
        assert_eq!(in_search_region(&curves, [10.0, 0.0, 0.0], 4.9), Vec::<usize>::new());
        assert_eq!(in_search_region(&curves, [10.0, 0.0, 0.0], 25.0), vec![0, 1, 2, 3, 4]);
    }

    const SD: CombinationCriterion = CombinationCriterion::StandardDeviation;
    const RANGE: CombinationCriterion = CombinationCriterion::Range;

    fn breathing(amplitude: f64, dir: [f64; 3]) -> impl Fn(f64) -> [f64; 3] {
        move |t: f64| {
            let s = amplitude * (std::f64::consts::PI * t / 4.0).sin().powi(2);
            [dir[0] * s, dir[1] * s, dir[2] * s]
        }
    }

    #[test]
    fn the_consistent_markers_are_chosen_and_the_outlier_left_out() {
        let entry = [0.0, -100.0, 0.0];
        let curves = vec![
            curve(0, [20.0, -100.0, 0.0], breathing(6.0, [0.0, -1.0, 0.0])),
            curve(1, [-25.0, -100.0, 10.0], breathing(6.3, [0.0, -0.96, 0.28])),
            curve(2, [0.0, -100.0, 30.0], breathing(5.8, [0.0, -1.0, 0.0])),
            // Over the sternum: barely moves.
            curve(3, [5.0, -100.0, -15.0], breathing(1.0, [0.0, -1.0, 0.0])),
        ];
        let c = select_combination(&curves, &[0, 1, 2, 3], entry, 3, 4, SD).unwrap();
        assert_eq!(c.members, vec![0, 1, 2]);
        assert_eq!(c.features_mm.len(), 3);
        for (f, want) in c.features_mm.iter().zip([6.0, 6.3, 5.8]) {
            assert!((f - want).abs() < 1e-9, "{:?}", c.features_mm);
        }
        let mean = (6.0 + 6.3 + 5.8) / 3.0;
        let sd = ([6.0, 6.3, 5.8].iter().map(|f: &f64| (f - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((c.spread_mm - sd).abs() < 1e-9);
        // Inverse-distance-squared weights 1/400, 1/725, 1/900 on the members' displacements (peak at t = 2 s).
        let w = [1.0 / 400.0, 1.0 / 725.0, 1.0 / 900.0];
        let y = -(6.0 * w[0] + 6.3 * 0.96 * w[1] + 5.8 * w[2]) / w.iter().sum::<f64>();
        let z = 6.3 * 0.28 * w[1] / w.iter().sum::<f64>();
        let peak = c.entry_displacement_mm[4];
        assert!((peak[1] - y).abs() < 1e-9 && (peak[2] - z).abs() < 1e-9 && peak[0].abs() < 1e-12, "{peak:?}");
        assert_eq!(c.entry_displacement_mm[0], [0.0, 0.0, 0.0]);

        // Pairs allowed: the two closest in feature (6.0 and 5.8 are 0.1 apart in sd; 6.0 and 6.3 0.15).
        let pair = select_combination(&curves, &[0, 1, 2, 3], entry, 2, 2, SD).unwrap();
        assert_eq!(pair.members, vec![0, 2]);
        // Equal spreads: the combination closer to the entry wins.
        let twins = vec![
            curve(0, [5.0, -100.0, 0.0], breathing(4.0, [0.0, -1.0, 0.0])),
            curve(1, [50.0, -100.0, 0.0], breathing(4.0, [0.0, -1.0, 0.0])),
            curve(2, [0.0, -100.0, 8.0], breathing(4.0, [0.0, 0.0, 1.0])),
        ];
        assert_eq!(select_combination(&twins, &[0, 1, 2], entry, 2, 2, SD).unwrap().members, vec![0, 2]);
    }

    #[test]
    fn too_few_markers_asks_for_new_markers_and_bad_requests_are_refused() {
        let curves =
            vec![curve(0, [0.0; 3], breathing(3.0, [0.0, -1.0, 0.0])), curve(1, [9.0, 0.0, 0.0], |_| [0.0; 3])];
        let err = select_combination(&curves, &[0, 1], [0.0; 3], 3, 4, RANGE).unwrap_err();
        assert_eq!(err, CtMarkerError::TooFewMarkers { found: 2, need: 3 });
        assert!(err.to_string().contains("re-place markers"), "{err}");
        // Duplicates count once.
        assert!(matches!(
            select_combination(&curves, &[0, 0, 1], [0.0; 3], 3, 3, RANGE),
            Err(CtMarkerError::TooFewMarkers { found: 2, .. })
        ));
        assert!(matches!(
            select_combination(&curves, &[0, 1], [0.0; 3], 1, 2, RANGE),
            Err(CtMarkerError::InvalidRequest { .. })
        ));
        assert!(matches!(
            select_combination(&curves, &[0, 1], [0.0; 3], 2, 1, RANGE),
            Err(CtMarkerError::InvalidRequest { .. })
        ));
        assert_eq!(
            select_combination(&curves, &[0, 7], [0.0; 3], 2, 2, RANGE),
            Err(CtMarkerError::UnknownMarker { index: 7 })
        );
        let mut shifted = curves.clone();
        shifted[1].times_s[3] += 0.1;
        assert!(matches!(
            select_combination(&shifted, &[0, 1], [0.0; 3], 2, 2, RANGE),
            Err(CtMarkerError::UnequalSampling { .. })
        ));
    }

    #[test]
    fn range_and_standard_deviation_pick_differently_as_computed_by_hand() {
        // Triples of features: B = {6.0, 6.0, 7.0}: range 1.0, sd = sqrt((1/9 + 1/9 + 4/9) / 3) = 0.4714;
        // A = {3.0, 3.55, 4.1}: range 1.1, sd = sqrt((0.3025 + 0 + 0.3025) / 3) = 0.4491. Every other triple
        // mixes the two groups (range >= 1.9). Range picks B, standard deviation A.
        let entry = [0.0, -100.0, 0.0];
        let amplitudes = [3.0, 3.55, 4.1, 6.0, 6.0, 7.0];
        let curves: Vec<MarkerCurve> = amplitudes
            .iter()
            .enumerate()
            .map(|(i, &a)| curve(i, [10.0 * i as f64, -100.0, 0.0], breathing(a, [0.0, -1.0, 0.0])))
            .collect();
        let ids = [0, 1, 2, 3, 4, 5];
        let by_range = select_combination(&curves, &ids, entry, 3, 3, RANGE).unwrap();
        assert_eq!(by_range.members, vec![3, 4, 5]);
        assert_eq!(by_range.criterion, RANGE);
        assert!((by_range.spread_mm - 1.0).abs() < 1e-9, "{by_range:?}");
        let by_sd = select_combination(&curves, &ids, entry, 3, 3, SD).unwrap();
        assert_eq!(by_sd.members, vec![0, 1, 2]);
        assert!((by_sd.spread_mm - (0.605f64 / 3.0).sqrt()).abs() < 1e-9, "{by_sd:?}");
        // The criteria themselves.
        assert!((RANGE.spread(&[6.0, 6.0, 7.0]) - 1.0).abs() < 1e-12);
        assert!((SD.spread(&[6.0, 6.0, 7.0]) - (6.0f64 / 27.0).sqrt()).abs() < 1e-12);
        assert_eq!(RANGE.spread(&[]), 0.0);
        // Pairs: range and sd are proportional (sd = range / 2), both pick {3, 4} (features 6.0, 6.0).
        let a = select_combination(&curves, &ids, entry, 2, 2, RANGE).unwrap();
        let b = select_combination(&curves, &ids, entry, 2, 2, SD).unwrap();
        assert_eq!((a.members.clone(), b.members.clone()), (vec![3, 4], vec![3, 4]));
        // Serde names as in the parameter files.
        assert_eq!(serde_json::to_string(&SD).unwrap(), "\"standard_deviation\"");
        assert_eq!(serde_json::from_str::<CombinationCriterion>("\"range\"").unwrap(), RANGE);
        assert_eq!(CombinationCriterion::default(), RANGE);
    }
}
