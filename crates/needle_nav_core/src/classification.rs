//! Displacement features of marker position histories and the threshold classifier.

use nalgebra::{Matrix3, Point3, SymmetricEigen, Vector3};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

// ---- configuration (composed by the marker_classifier node configuration) ----

/// Displacement feature computed from a marker's position history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisplacementFeature {
    /// Largest minus smallest displacement over the window.
    PeakToPeak,
    /// Largest displacement minus the mean.
    MaxMinusMean,
    /// Second-largest minus second-smallest (robust to one outlier sample).
    SecondRange,
}

impl DisplacementFeature {
    pub fn as_str(self) -> &'static str {
        match self {
            DisplacementFeature::PeakToPeak => "peak_to_peak",
            DisplacementFeature::MaxMinusMean => "max_minus_mean",
            DisplacementFeature::SecondRange => "second_range",
        }
    }
}

/// How the feature becomes a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassificationMethod {
    /// feature >= threshold_m -> correction, else registration (with hysteresis).
    Threshold,
    /// The `top_n` markers with the largest feature are correction markers, the rest registration.
    TopN,
    /// Registration when the feature lies in `registration_range_m`, correction in `correction_range_m`,
    /// unassigned otherwise.
    ClassRanges,
    /// Logistic regression on the marker's motion features (`model_path`, see `needle_nav train-classifier`).
    Learned,
}

impl ClassificationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ClassificationMethod::Threshold => "threshold",
            ClassificationMethod::TopN => "top_n",
            ClassificationMethod::ClassRanges => "class_ranges",
            ClassificationMethod::Learned => "learned",
        }
    }
}

/// Where correction markers may lie (tracker frame, metres). Markers outside can still be
/// registration markers; a moving marker outside is left unassigned.
/// The shape of the correction region; the names are the parameter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionKind {
    /// No region: correction markers may lie anywhere.
    #[default]
    None,
    Box,
    Polygon,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrectionRegion {
    /// none | box | polygon
    pub kind: RegionKind,
    /// box: opposite corners [x, y, z].
    pub box_min_m: Vec<f64>,
    pub box_max_m: Vec<f64>,
    /// polygon: vertices [x0, y0, x1, y1, ...] in the tracker x-y plane, and a z range [z_min, z_max].
    pub polygon_xy_m: Vec<f64>,
    pub polygon_z_m: Vec<f64>,
}

impl Default for CorrectionRegion {
    fn default() -> Self {
        CorrectionRegion {
            kind: RegionKind::None,
            box_min_m: Vec::new(),
            box_max_m: Vec::new(),
            polygon_xy_m: Vec::new(),
            polygon_z_m: Vec::new(),
        }
    }
}

/// Skin-motion mode recognition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MotionModeConfig {
    pub enabled: bool,
    /// A mode is recognised when the cosine similarity of the marker's motion signature to the
    /// mode's template reaches this.
    pub similarity_threshold: f64,
    /// Rotation from the tracker frame to patient axes (row-major 3x3; rows: left, posterior,
    /// superior). Empty: use the latest registration's rotation, or skip recognition until there is one.
    pub tracker_to_patient: Vec<f64>,
}

impl Default for MotionModeConfig {
    fn default() -> Self {
        MotionModeConfig { enabled: true, similarity_threshold: 0.9, tracker_to_patient: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarkerClassifierConfig {
    pub feature: DisplacementFeature,
    pub method: ClassificationMethod,
    pub threshold_m: f64,
    pub hysteresis_m: f64,
    pub top_n: u32,
    pub registration_range_m: Vec<f64>,
    pub correction_range_m: Vec<f64>,
    /// Logistic-regression model (JSON) for method = learned.
    pub model_path: String,
    pub window_s: f64,
    pub min_window_fill: f64,
    pub motion_modes: MotionModeConfig,
    pub correction_region: CorrectionRegion,
    /// What a tracker sample may contain; a sample outside it is refused on its own.
    pub sample_checks: crate::sample_validation::SampleChecks,
    /// Thresholds of the node's `/diagnostics` statuses.
    pub diagnostics: crate::diagnostics_thresholds::ClassifierDiagnostics,
}

impl Default for MarkerClassifierConfig {
    fn default() -> Self {
        MarkerClassifierConfig {
            feature: DisplacementFeature::PeakToPeak,
            method: ClassificationMethod::Threshold,
            threshold_m: 3.0e-3,
            hysteresis_m: 0.5e-3,
            top_n: 6,
            registration_range_m: vec![0.0, 2.5e-3],
            correction_range_m: vec![3.5e-3, 0.08],
            model_path: String::new(),
            window_s: 12.0,
            min_window_fill: 0.8,
            motion_modes: MotionModeConfig::default(),
            correction_region: CorrectionRegion::default(),
            sample_checks: Default::default(),
            diagnostics: Default::default(),
        }
    }
}

/// Class of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerClass {
    Registration,
    Correction,
}

/// Scalar displacement signal of a position history: each position's offset from the
/// mean, projected on the principal direction of motion (largest covariance eigenvector).
/// Empty when there are fewer than two positions.
pub fn principal_displacement(positions: &[Point3<f64>]) -> Vec<f64> {
    if positions.len() < 2 {
        return Vec::new();
    }
    let n = positions.len() as f64;
    let mean = positions.iter().fold(Vector3::zeros(), |acc, p| acc + p.coords) / n;
    let mut cov = Matrix3::zeros();
    for p in positions {
        let d = p.coords - mean;
        cov += d * d.transpose();
    }
    let eig = SymmetricEigen::new(cov / n);
    let (imax, _) =
        eig.eigenvalues.iter().enumerate().fold((0, f64::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best });
    let axis = eig.eigenvectors.column(imax).into_owned();
    positions.iter().map(|p| (p.coords - mean).dot(&axis)).collect()
}

/// The feature of a scalar displacement signal; `None` when there are too few values.
pub fn feature_value(signal: &[f64], feature: DisplacementFeature) -> Option<f64> {
    match feature {
        DisplacementFeature::PeakToPeak => {
            let (lo, hi) = min_max(signal)?;
            Some(hi - lo)
        }
        DisplacementFeature::MaxMinusMean => {
            let (_, hi) = min_max(signal)?;
            let mean = signal.iter().sum::<f64>() / signal.len() as f64;
            Some(hi - mean)
        }
        DisplacementFeature::SecondRange => {
            if signal.len() < 4 {
                return None;
            }
            let mut sorted = signal.to_vec();
            sorted.sort_by(f64::total_cmp);
            Some(sorted[sorted.len() - 2] - sorted[1])
        }
    }
}

fn min_max(signal: &[f64]) -> Option<(f64, f64)> {
    if signal.len() < 2 {
        return None;
    }
    Some(signal.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v))))
}

/// Threshold rule with hysteresis: a marker already classified changes class only once
/// its feature crosses `threshold +- hysteresis`.
pub fn threshold_class(feature: f64, previous: Option<MarkerClass>, threshold: f64, hysteresis: f64) -> MarkerClass {
    let boundary = match previous {
        None => threshold,
        Some(MarkerClass::Correction) => threshold - hysteresis,
        Some(MarkerClass::Registration) => threshold + hysteresis,
    };
    if feature >= boundary {
        MarkerClass::Correction
    } else {
        MarkerClass::Registration
    }
}

/// Skin-motion modes, by the patient axis that carries the motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MotionMode {
    None,
    /// Left-right (patient x).
    Lateral,
    /// Anterior-posterior (patient y): chest and abdominal wall expansion.
    Expansion,
    /// Superior-inferior (patient z).
    Longitudinal,
}

impl MotionMode {
    /// Index of the patient axis the mode keeps; the other two components are treated as error.
    pub fn axis(self) -> Option<usize> {
        match self {
            MotionMode::None => None,
            MotionMode::Lateral => Some(0),
            MotionMode::Expansion => Some(1),
            MotionMode::Longitudinal => Some(2),
        }
    }
}

/// Motion signature of a displacement history in patient axes: per-axis range and per-axis mean
/// absolute gradient (velocity), each normalised, concatenated (unit 6-vector). The mean position
/// is removed first, so a static offset does not count as motion.
pub fn motion_signature(displacements: &[Vector3<f64>], times_s: &[f64]) -> Option<[f64; 6]> {
    if displacements.len() < 3 || displacements.len() != times_s.len() {
        return None;
    }
    let mut range = [0.0; 3];
    let mut gradient = [0.0; 3];
    for a in 0..3 {
        let (lo, hi) =
            displacements.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), d| (l.min(d[a]), h.max(d[a])));
        range[a] = hi - lo;
        // Mean absolute velocity of the 0.2 s-averaged signal: per-sample differences would
        // measure the tracker noise, not the motion.
        let binned = bin_means(displacements, times_s, 0.2, a);
        let total: f64 = binned.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
        let span = times_s[times_s.len() - 1] - times_s[0];
        gradient[a] = if span > 0.0 { total / span } else { 0.0 };
    }
    let unit = |v: [f64; 3]| {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if n > 0.0 {
            [v[0] / n, v[1] / n, v[2] / n]
        } else {
            [0.0; 3]
        }
    };
    let (r, g) = (unit(range), unit(gradient));
    let k = std::f64::consts::FRAC_1_SQRT_2;
    Some([r[0] * k, r[1] * k, r[2] * k, g[0] * k, g[1] * k, g[2] * k])
}

/// Means of component `axis` over consecutive bins of `bin_s` seconds.
fn bin_means(displacements: &[Vector3<f64>], times_s: &[f64], bin_s: f64, axis: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let (mut sum, mut n, mut bin_start) = (0.0, 0.0, times_s[0]);
    for (d, &t) in displacements.iter().zip(times_s) {
        if t - bin_start >= bin_s && n > 0.0 {
            out.push(sum / n);
            (sum, n, bin_start) = (0.0, 0.0, t);
        }
        sum += d[axis];
        n += 1.0;
    }
    if n > 0.0 {
        out.push(sum / n);
    }
    out
}

/// The best-matching mode and its cosine similarity to the mode's template (range and gradient
/// both along the mode's axis); `MotionMode::None` below `threshold`.
pub fn recognise_mode(signature: &[f64; 6], threshold: f64) -> (MotionMode, f64) {
    let k = std::f64::consts::FRAC_1_SQRT_2;
    let mut best = (MotionMode::None, 0.0);
    for mode in [MotionMode::Lateral, MotionMode::Expansion, MotionMode::Longitudinal] {
        let a = mode.axis().unwrap_or(0);
        let similarity = signature[a] * k + signature[3 + a] * k;
        if similarity > best.1 {
            best = (mode, similarity);
        }
    }
    if best.1 >= threshold {
        best
    } else {
        (MotionMode::None, best.1)
    }
}

/// Is `p` (tracker frame, m) inside the correction region?
pub fn in_correction_region(region: &CorrectionRegion, p: &Point3<f64>) -> bool {
    match region.kind {
        RegionKind::Box if region.box_min_m.len() == 3 && region.box_max_m.len() == 3 => {
            (0..3).all(|a| p[a] >= region.box_min_m[a] && p[a] <= region.box_max_m[a])
        }
        RegionKind::Polygon if region.polygon_z_m.len() == 2 => {
            if p.z < region.polygon_z_m[0] || p.z > region.polygon_z_m[1] {
                return false;
            }
            // Even-odd rule.
            let v: Vec<(f64, f64)> = region.polygon_xy_m.chunks_exact(2).map(|c| (c[0], c[1])).collect();
            let mut inside = false;
            for i in 0..v.len() {
                let (a, b) = (v[i], v[(i + 1) % v.len()]);
                if (a.1 > p.y) != (b.1 > p.y) && p.x < a.0 + (p.y - a.1) * (b.0 - a.0) / (b.1 - a.1) {
                    inside = !inside;
                }
            }
            inside
        }
        _ => true,
    }
}

/// Logistic regression on standardised motion features (the learned classifier).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogisticModel {
    pub feature_names: Vec<String>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// How the model was trained and how it scored on held-out data.
    #[serde(default)]
    pub report: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read the classifier model {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("classifier model {path} is inconsistent: {reason}")]
    Inconsistent { path: String, reason: String },
}

/// Names of [`learned_features`], in order.
pub const LEARNED_FEATURE_NAMES: [&str; 5] =
    ["peak_to_peak_m", "max_minus_mean_m", "second_range_m", "mean_speed_m_per_s", "principal_fraction"];

/// Features of a position history for the learned classifier.
pub fn learned_features(positions: &[Point3<f64>], times_s: &[f64]) -> Option<[f64; 5]> {
    let signal = principal_displacement(positions);
    let pp = feature_value(&signal, DisplacementFeature::PeakToPeak)?;
    let mm = feature_value(&signal, DisplacementFeature::MaxMinusMean)?;
    let sr = feature_value(&signal, DisplacementFeature::SecondRange)?;
    let span = times_s.last()? - times_s.first()?;
    let path: f64 = signal.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    let speed = if span > 0.0 { path / span } else { 0.0 };
    // How much of the motion lies along one axis (breathing is nearly one-dimensional, noise is not).
    let n = positions.len() as f64;
    let mean = positions.iter().fold(Vector3::zeros(), |a, p| a + p.coords) / n;
    let total: f64 = positions.iter().map(|p| (p.coords - mean).norm_squared()).sum::<f64>() / n;
    let along: f64 = signal.iter().map(|v| v * v).sum::<f64>() / n;
    let fraction = if total > 0.0 { along / total } else { 0.0 };
    Some([pp, mm, sr, speed, fraction])
}

impl LogisticModel {
    pub fn load(path: &std::path::Path) -> Result<LogisticModel, ModelError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Unreadable { path: p.clone(), reason: e.to_string() })?;
        let m: LogisticModel = serde_json::from_str(&text)
            .map_err(|e| ModelError::Unreadable { path: p.clone(), reason: e.to_string() })?;
        let n = LEARNED_FEATURE_NAMES.len();
        if m.feature_names != LEARNED_FEATURE_NAMES || m.mean.len() != n || m.scale.len() != n || m.weights.len() != n {
            return Err(ModelError::Inconsistent {
                path: p,
                reason: format!("expects features {LEARNED_FEATURE_NAMES:?}"),
            });
        }
        if m.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) || !m.bias.is_finite() {
            return Err(ModelError::Inconsistent { path: p, reason: "non-finite or non-positive scale".into() });
        }
        Ok(m)
    }

    /// Probability that the marker is a correction marker.
    pub fn probability(&self, x: &[f64]) -> f64 {
        let z: f64 = self.bias
            + x.iter().enumerate().map(|(i, v)| self.weights[i] * (v - self.mean[i]) / self.scale[i]).sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }

    /// Fits by full-batch gradient descent with L2 regularisation (deterministic).
    pub fn fit(xs: &[[f64; 5]], ys: &[bool], l2: f64, epochs: usize, learning_rate: f64) -> LogisticModel {
        let n = xs.len().max(1) as f64;
        let mut mean = [0.0; 5];
        let mut scale = [0.0; 5];
        for a in 0..5 {
            mean[a] = xs.iter().map(|x| x[a]).sum::<f64>() / n;
            let var = xs.iter().map(|x| (x[a] - mean[a]).powi(2)).sum::<f64>() / n;
            scale[a] = var.sqrt().max(1e-12);
        }
        let z: Vec<[f64; 5]> = xs.iter().map(|x| std::array::from_fn(|a| (x[a] - mean[a]) / scale[a])).collect();
        let mut w = [0.0; 5];
        let mut b = 0.0;
        for _ in 0..epochs {
            let mut gw = [0.0; 5];
            let mut gb = 0.0;
            for (x, &y) in z.iter().zip(ys) {
                let p = 1.0 / (1.0 + (-(b + (0..5).map(|a| w[a] * x[a]).sum::<f64>())).exp());
                let e = p - if y { 1.0 } else { 0.0 };
                for a in 0..5 {
                    gw[a] += e * x[a];
                }
                gb += e;
            }
            for a in 0..5 {
                w[a] -= learning_rate * (gw[a] / n + l2 * w[a]);
            }
            b -= learning_rate * gb / n;
        }
        LogisticModel {
            feature_names: LEARNED_FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean: mean.to_vec(),
            scale: scale.to_vec(),
            weights: w.to_vec(),
            bias: b,
            report: serde_json::Value::Null,
        }
    }
}

/// Result for one marker.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerResult {
    pub id: u32,
    pub class: Option<MarkerClass>,
    pub feature: f64,
    pub samples: usize,
    pub mode: MotionMode,
    pub mode_similarity: f64,
    /// Mean position over the window (tracker frame).
    pub mean_position: Point3<f64>,
    pub in_region: bool,
}

/// Sliding-window histories of every marker and the classes they were last given.
#[derive(Debug, Clone)]
pub struct WindowClassifier {
    config: MarkerClassifierConfig,
    model: Option<LogisticModel>,
    histories: BTreeMap<u32, VecDeque<(i64, Point3<f64>)>>,
    classes: BTreeMap<u32, MarkerClass>,
}

impl WindowClassifier {
    /// `model` is required (and only used) for `method = learned`.
    pub fn new(config: MarkerClassifierConfig, model: Option<LogisticModel>) -> Self {
        WindowClassifier { config, model, histories: BTreeMap::new(), classes: BTreeMap::new() }
    }

    /// The same marker histories under another configuration (no classes yet): compares methods
    /// on identical data.
    pub fn with_config(&self, config: MarkerClassifierConfig, model: Option<LogisticModel>) -> WindowClassifier {
        WindowClassifier { config, model, histories: self.histories.clone(), classes: BTreeMap::new() }
    }

    pub fn config(&self) -> &MarkerClassifierConfig {
        &self.config
    }

    /// Classifies under `config` from the next sample on, keeping the marker histories and their
    /// classes (thresholds changed at run time; the window length and method are the caller's to
    /// keep, as the histories were gathered for them).
    pub fn set_config(&mut self, config: MarkerClassifierConfig) {
        self.config = config;
    }

    /// Adds one observation of a marker (only usable positions should be given).
    pub fn push(&mut self, id: u32, stamp_ns: i64, position: Point3<f64>) {
        let window_ns = (self.config.window_s * 1e9) as i64;
        let h = self.histories.entry(id).or_default();
        h.push_back((stamp_ns, position));
        while h.front().is_some_and(|(t, _)| stamp_ns - *t > window_ns) {
            h.pop_front();
        }
    }

    /// Forgets markers not seen for a whole window (they left the tracker's view).
    fn expire(&mut self) {
        let newest = self.histories.values().filter_map(|h| h.back().map(|(t, _)| *t)).max().unwrap_or(0);
        let window_ns = (self.config.window_s * 1e9) as i64;
        self.histories.retain(|_, h| h.back().is_some_and(|(t, _)| newest - t <= window_ns));
        let alive: Vec<u32> = self.histories.keys().copied().collect();
        self.classes.retain(|id, _| alive.contains(id));
    }

    /// Classifies every marker whose window is filled enough; returns all markers and whether
    /// any class changed. `tracker_to_patient` (rotation) enables motion-mode recognition.
    pub fn classify(&mut self, tracker_to_patient: Option<&Matrix3<f64>>) -> (Vec<MarkerResult>, bool) {
        self.expire();
        let cfg = self.config.clone();
        let mut rows: Vec<(u32, bool, f64, MarkerResult, Option<[f64; 5]>)> = Vec::new();
        for (&id, h) in &self.histories {
            let times: Vec<f64> = h.iter().map(|(t, _)| *t as f64 * 1e-9).collect();
            let positions: Vec<Point3<f64>> = h.iter().map(|(_, p)| *p).collect();
            let span_s = times.last().zip(times.first()).map(|(b, a)| b - a).unwrap_or(0.0);
            let n = positions.len().max(1) as f64;
            let mean_position = Point3::from(positions.iter().fold(Vector3::zeros(), |a, p| a + p.coords) / n);
            let (mut mode, mut similarity) = (MotionMode::None, 0.0);
            let mut signal_positions = positions.clone();
            if let (true, Some(r)) = (cfg.motion_modes.enabled, tracker_to_patient) {
                let d: Vec<Vector3<f64>> = positions.iter().map(|p| r * (p - mean_position)).collect();
                if let Some(sig) = motion_signature(&d, &times) {
                    (mode, similarity) = recognise_mode(&sig, cfg.motion_modes.similarity_threshold);
                    if let Some(axis) = mode.axis() {
                        // Keep only the mode's own component: the other two are error for this mode.
                        signal_positions = d
                            .iter()
                            .map(|v| {
                                let mut kept = Vector3::zeros();
                                kept[axis] = v[axis];
                                Point3::from(kept)
                            })
                            .collect();
                    }
                }
            }
            let feature = feature_value(&principal_displacement(&signal_positions), cfg.feature).unwrap_or(f64::NAN);
            let filled = span_s >= cfg.window_s * cfg.min_window_fill && feature.is_finite();
            let learned = learned_features(&positions, &times);
            let in_region = in_correction_region(&cfg.correction_region, &mean_position);
            let result = MarkerResult {
                id,
                class: None,
                feature,
                samples: h.len(),
                mode,
                mode_similarity: similarity,
                mean_position,
                in_region,
            };
            rows.push((id, filled, feature, result, learned));
        }

        // Proposed class per marker from the method (None: not enough data or outside every range).
        let mut proposed: BTreeMap<u32, Option<MarkerClass>> = BTreeMap::new();
        match cfg.method {
            ClassificationMethod::Threshold => {
                for (id, filled, feature, _, _) in &rows {
                    let prev = self.classes.get(id).copied();
                    proposed.insert(
                        *id,
                        filled.then(|| threshold_class(*feature, prev, cfg.threshold_m, cfg.hysteresis_m)),
                    );
                }
            }
            ClassificationMethod::TopN => {
                // Current correction markers get a bonus of `hysteresis_m` so ranks do not flicker.
                let mut ranked: Vec<(u32, f64)> = rows
                    .iter()
                    .filter(|r| r.1)
                    .map(|r| {
                        let bonus = if self.classes.get(&r.0) == Some(&MarkerClass::Correction) {
                            cfg.hysteresis_m
                        } else {
                            0.0
                        };
                        (r.0, r.2 + bonus)
                    })
                    .collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                for (rank, (id, _)) in ranked.iter().enumerate() {
                    let c = if rank < cfg.top_n as usize { MarkerClass::Correction } else { MarkerClass::Registration };
                    proposed.insert(*id, Some(c));
                }
                for r in rows.iter().filter(|r| !r.1) {
                    proposed.insert(r.0, None);
                }
            }
            ClassificationMethod::ClassRanges => {
                for (id, filled, feature, _, _) in &rows {
                    let prev = self.classes.get(id).copied();
                    let widen = |c: MarkerClass| if prev == Some(c) { cfg.hysteresis_m } else { 0.0 };
                    let (r, c) = (&cfg.registration_range_m, &cfg.correction_range_m);
                    let class = if !filled {
                        None
                    } else if *feature >= r[0] && *feature <= r[1] + widen(MarkerClass::Registration) {
                        Some(MarkerClass::Registration)
                    } else if *feature >= c[0] - widen(MarkerClass::Correction) && *feature <= c[1] {
                        Some(MarkerClass::Correction)
                    } else {
                        None
                    };
                    proposed.insert(*id, class);
                }
            }
            ClassificationMethod::Learned => {
                for (id, filled, _, _, learned) in &rows {
                    let prev = self.classes.get(id).copied();
                    let class = match (&self.model, learned, filled) {
                        (Some(m), Some(x), true) => {
                            // Hysteresis in probability: 0.4 to leave correction, 0.6 to enter it.
                            let boundary = match prev {
                                Some(MarkerClass::Correction) => 0.4,
                                Some(MarkerClass::Registration) => 0.6,
                                None => 0.5,
                            };
                            Some(if m.probability(x) >= boundary {
                                MarkerClass::Correction
                            } else {
                                MarkerClass::Registration
                            })
                        }
                        _ => None,
                    };
                    proposed.insert(*id, class);
                }
            }
        }

        let mut changed = false;
        let mut out = Vec::new();
        for (id, _, _, mut result, _) in rows {
            let mut class = proposed.get(&id).copied().flatten();
            // Outside the region a moving marker is neither: not for correction, and unfit for registration.
            if class == Some(MarkerClass::Correction) && !result.in_region {
                class = None;
            }
            let previous = self.classes.get(&id).copied();
            if class != previous {
                changed = true;
                match class {
                    Some(c) => {
                        self.classes.insert(id, c);
                    }
                    None => {
                        self.classes.remove(&id);
                    }
                }
            }
            result.class = class;
            out.push(result);
        }
        (out, changed)
    }
}
