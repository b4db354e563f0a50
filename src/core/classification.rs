//! Displacement features of marker position histories and the threshold classifier.

use crate::config::{ClassificationMethod, CorrectionRegion, DisplacementFeature, MarkerClassifierConfig};
use nalgebra::{Matrix3, Point3, SymmetricEigen, Vector3};
use std::collections::{BTreeMap, VecDeque};

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
    use crate::config::RegionKind;
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

    pub fn config(&self) -> &MarkerClassifierConfig {
        &self.config
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

/// Labelled marker windows from digital patients: `cases` seeded patients with varied breathing,
/// `windows_per_case` windows of `window_s` each. Label: true for soft-tissue (correction) markers.
pub fn digital_patient_training_set(
    cases: u64,
    first_seed: u64,
    windows_per_case: usize,
    window_s: f64,
) -> (Vec<[f64; 5]>, Vec<bool>) {
    use crate::core::breathing::{BreathingConfig, BreathingSignal};
    use crate::core::phantom::{Phantom, PhantomConfig};
    use crate::core::tracker_sim::{SimulatedTracker, TrackerSimConfig};
    let rate_hz = 50.0;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for seed in first_seed..first_seed + cases {
        let Ok(phantom) = Phantom::new(PhantomConfig { seed, dims: [16, 16, 16], ..Default::default() }) else {
            continue;
        };
        // Vary breathing between patients: period 2.5-6 s, shallow to deep.
        let breathing = BreathingConfig {
            seed,
            mean_period_s: 2.5 + (seed % 8) as f64 * 0.5,
            amplitude_cv: 0.1 + (seed % 3) as f64 * 0.05,
            ..Default::default()
        };
        let duration = window_s * windows_per_case as f64 + 1.0;
        let Ok(signal) = BreathingSignal::synthetic(&breathing, duration + 10.0) else {
            continue;
        };
        let labels: BTreeMap<u32, bool> = phantom.markers.iter().map(|m| (m.id, !m.over_bone)).collect();
        let mut sim = SimulatedTracker::new(
            phantom,
            signal,
            TrackerSimConfig { seed, occlusion_rate_per_min: 0.0, id_swap_rate_per_min: 0.0, ..Default::default() },
        );
        let mut per_marker: BTreeMap<u32, (Vec<f64>, Vec<Point3<f64>>)> = BTreeMap::new();
        let samples = (duration * rate_hz) as usize;
        for i in 0..samples {
            let t = i as f64 / rate_hz;
            let (s, _) = sim.sample(t, 0);
            for m in s.usable() {
                let e = per_marker.entry(m.id).or_default();
                e.0.push(t);
                e.1.push(m.position);
            }
        }
        for (id, (times, positions)) in &per_marker {
            let per_window = (window_s * rate_hz) as usize;
            for w in 0..windows_per_case {
                let (a, b) = (w * per_window, ((w + 1) * per_window).min(times.len()));
                if b <= a + 3 {
                    continue;
                }
                if let Some(x) = learned_features(&positions[a..b], &times[a..b]) {
                    xs.push(x);
                    ys.push(labels.get(id).copied().unwrap_or(false));
                }
            }
        }
    }
    (xs, ys)
}

/// Trains the learned classifier on digital patients; the report holds held-out accuracy.
pub fn train_classifier(train_cases: u64, test_cases: u64, seed: u64, window_s: f64) -> LogisticModel {
    let (xs, ys) = digital_patient_training_set(train_cases, seed, 3, window_s);
    let mut model = LogisticModel::fit(&xs, &ys, 1e-3, 2000, 0.5);
    let (tx, ty) = digital_patient_training_set(test_cases, seed + 10_000, 3, window_s);
    let correct = tx.iter().zip(&ty).filter(|(x, y)| (model.probability(&x[..]) >= 0.5) == **y).count();
    let train_correct = xs.iter().zip(&ys).filter(|(x, y)| (model.probability(&x[..]) >= 0.5) == **y).count();
    model.report = serde_json::json!({
        "trained_on": format!("{train_cases} digital patients (seeds {seed}..), 3 windows of {window_s} s per marker, 12 markers each"),
        "held_out": format!("{test_cases} other digital patients (seeds {}..)", seed + 10_000),
        "train_windows": xs.len(),
        "train_accuracy": train_correct as f64 / xs.len().max(1) as f64,
        "held_out_windows": tx.len(),
        "held_out_accuracy": correct as f64 / tx.len().max(1) as f64,
        "label": "1 = correction (soft tissue), 0 = registration (over bone)",
    });
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn features_match_closed_form_on_a_known_signal() {
        let s = [0.0, 1.0, 5.0, 2.0, -3.0, 0.0];
        assert_relative_eq!(feature_value(&s, DisplacementFeature::PeakToPeak).unwrap(), 8.0);
        assert_relative_eq!(feature_value(&s, DisplacementFeature::MaxMinusMean).unwrap(), 5.0 - 5.0 / 6.0);
        // sorted: -3 0 0 1 2 5 -> 2 - 0
        assert_relative_eq!(feature_value(&s, DisplacementFeature::SecondRange).unwrap(), 2.0);
        assert_eq!(feature_value(&[1.0], DisplacementFeature::PeakToPeak), None);
    }

    #[test]
    fn principal_projection_recovers_an_oblique_sinusoid_amplitude() {
        let dir = Vector3::new(1.0, 2.0, 2.0) / 3.0;
        let pts: Vec<Point3<f64>> =
            (0..1000).map(|i| Point3::new(0.1, 0.2, 0.3) + dir * 0.004 * (i as f64 * 0.0314).sin()).collect();
        let signal = principal_displacement(&pts);
        assert_relative_eq!(feature_value(&signal, DisplacementFeature::PeakToPeak).unwrap(), 0.008, epsilon = 1e-5);
    }

    #[test]
    fn hysteresis_keeps_a_marker_near_the_threshold_in_its_class() {
        assert_eq!(threshold_class(3.2e-3, None, 3e-3, 0.5e-3), MarkerClass::Correction);
        assert_eq!(threshold_class(3.2e-3, Some(MarkerClass::Registration), 3e-3, 0.5e-3), MarkerClass::Registration);
        assert_eq!(threshold_class(2.8e-3, Some(MarkerClass::Correction), 3e-3, 0.5e-3), MarkerClass::Correction);
        assert_eq!(threshold_class(2.4e-3, Some(MarkerClass::Correction), 3e-3, 0.5e-3), MarkerClass::Registration);
    }

    #[test]
    fn simulated_bone_markers_are_registration_and_soft_tissue_markers_correction() {
        use crate::core::breathing::{BreathingConfig, BreathingSignal};
        use crate::core::phantom::{Phantom, PhantomConfig};
        use crate::core::tracker_sim::{SimulatedTracker, TrackerSimConfig};
        let phantom = Phantom::new(PhantomConfig::default()).unwrap();
        let signal = BreathingSignal::synthetic(&BreathingConfig::default(), 60.0).unwrap();
        let truth: std::collections::BTreeMap<u32, bool> =
            phantom.markers.iter().map(|m| (m.id, m.over_bone)).collect();
        let mut sim = SimulatedTracker::new(
            phantom,
            signal,
            TrackerSimConfig { occlusion_rate_per_min: 0.0, id_swap_rate_per_min: 0.0, ..Default::default() },
        );
        let mut c = WindowClassifier::new(MarkerClassifierConfig::default(), None);
        for i in 0..(13 * 100) {
            let t = i as f64 * 0.01;
            let (s, _) = sim.sample(t, (t * 1e9) as i64);
            for m in s.usable() {
                c.push(m.id, s.stamp_ns, m.position);
            }
        }
        let (results, changed) = c.classify(None);
        assert!(changed);
        for r in results {
            let expected = if truth[&r.id] { MarkerClass::Registration } else { MarkerClass::Correction };
            assert_eq!(r.class, Some(expected), "marker {} feature {}", r.id, r.feature);
        }
        // Classifying again without new data changes nothing.
        assert!(!c.classify(None).1);
    }

    fn sim_windows(seed: u64) -> (WindowClassifier, std::collections::BTreeMap<u32, bool>, Matrix3<f64>) {
        use crate::core::breathing::{BreathingConfig, BreathingSignal};
        use crate::core::phantom::{Phantom, PhantomConfig};
        use crate::core::tracker_sim::{SimulatedTracker, TrackerSimConfig};
        let phantom = Phantom::new(PhantomConfig { seed, dims: [16, 16, 16], ..Default::default() }).unwrap();
        let truth = phantom.markers.iter().map(|m| (m.id, m.over_bone)).collect();
        let signal = BreathingSignal::synthetic(&BreathingConfig { seed, ..Default::default() }, 60.0).unwrap();
        let mut sim = SimulatedTracker::new(
            phantom,
            signal,
            TrackerSimConfig { seed, occlusion_rate_per_min: 0.0, id_swap_rate_per_min: 0.0, ..Default::default() },
        );
        let to_patient = sim.ct_to_tracker.rotation.to_rotation_matrix().matrix().transpose();
        let mut samples = Vec::new();
        for i in 0..(13 * 50) {
            let t = i as f64 * 0.02;
            samples.push(sim.sample(t, (t * 1e9) as i64).0);
        }
        let mut c = WindowClassifier::new(MarkerClassifierConfig::default(), None);
        for s in &samples {
            for m in s.usable() {
                c.push(m.id, s.stamp_ns, m.position);
            }
        }
        (c, truth, to_patient)
    }

    fn with_config(
        c: &WindowClassifier,
        config: MarkerClassifierConfig,
        model: Option<LogisticModel>,
    ) -> WindowClassifier {
        let mut n = WindowClassifier::new(config, model);
        n.histories = c.histories.clone();
        n
    }

    fn check_against_truth(results: &[MarkerResult], truth: &std::collections::BTreeMap<u32, bool>) {
        for r in results {
            let expected = if truth[&r.id] { MarkerClass::Registration } else { MarkerClass::Correction };
            assert_eq!(r.class, Some(expected), "marker {} feature {:.2} mm", r.id, r.feature * 1e3);
        }
    }

    #[test]
    fn top_n_and_class_ranges_split_the_digital_patient_correctly() {
        let (c, truth, _) = sim_windows(11);
        let cfg = MarkerClassifierConfig { method: ClassificationMethod::TopN, top_n: 6, ..Default::default() };
        check_against_truth(&with_config(&c, cfg, None).classify(None).0, &truth);
        let cfg = MarkerClassifierConfig { method: ClassificationMethod::ClassRanges, ..Default::default() };
        check_against_truth(&with_config(&c, cfg, None).classify(None).0, &truth);
        // A range that covers nobody's feature leaves markers unassigned instead of guessing.
        let cfg = MarkerClassifierConfig {
            method: ClassificationMethod::ClassRanges,
            registration_range_m: vec![0.0, 0.0001],
            correction_range_m: vec![0.09, 0.1],
            ..Default::default()
        };
        assert!(with_config(&c, cfg, None).classify(None).0.iter().all(|r| r.class.is_none()));
    }

    #[test]
    fn motion_modes_recognise_expansion_in_patient_axes_and_zero_the_other_components() {
        let times: Vec<f64> = (0..500).map(|i| i as f64 * 0.02).collect();
        let ap: Vec<Vector3<f64>> = times.iter().map(|t| Vector3::new(0.0, 0.004 * (t * 1.5).sin(), 0.0)).collect();
        let sig = motion_signature(&ap, &times).unwrap();
        let (mode, sim) = recognise_mode(&sig, 0.9);
        assert_eq!(mode, MotionMode::Expansion);
        assert!((sim - 1.0).abs() < 1e-9);
        // Equal motion on all axes matches no single mode: cos = 1/sqrt(3).
        let diag: Vec<Vector3<f64>> = times.iter().map(|t| Vector3::repeat(0.004 * (t * 1.5).sin())).collect();
        let (mode, sim) = recognise_mode(&motion_signature(&diag, &times).unwrap(), 0.9);
        assert_eq!(mode, MotionMode::None);
        assert!((sim - 1.0 / 3f64.sqrt()).abs() < 1e-9);
        // In the digital patient, the abdominal markers move mostly along AP: expansion. With the mode
        // recognised, their feature is the AP range only, so it cannot exceed the 3-D feature.
        let (c, _, to_patient) = sim_windows(12);
        let plain = with_config(&c, MarkerClassifierConfig::default(), None).classify(None).0;
        let moded = with_config(&c, MarkerClassifierConfig::default(), None).classify(Some(&to_patient)).0;
        let abdomen: Vec<&MarkerResult> = moded.iter().filter(|r| r.id >= 10).collect();
        assert!(abdomen.iter().all(|r| r.mode == MotionMode::Expansion), "{abdomen:?}");
        for (a, b) in plain.iter().zip(&moded) {
            if b.mode != MotionMode::None {
                assert!(b.feature <= a.feature + 1e-12);
            }
        }
    }

    #[test]
    fn correction_region_box_and_polygon() {
        let bx = CorrectionRegion {
            kind: crate::config::RegionKind::Box,
            box_min_m: vec![0.0, 0.0, 0.0],
            box_max_m: vec![1.0, 1.0, 1.0],
            ..Default::default()
        };
        assert!(in_correction_region(&bx, &Point3::new(0.5, 0.5, 0.5)));
        assert!(!in_correction_region(&bx, &Point3::new(1.5, 0.5, 0.5)));
        // L-shaped polygon: the notch is outside.
        let poly = CorrectionRegion {
            kind: crate::config::RegionKind::Polygon,
            polygon_xy_m: vec![0.0, 0.0, 2.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 2.0],
            polygon_z_m: vec![-1.0, 1.0],
            ..Default::default()
        };
        assert!(in_correction_region(&poly, &Point3::new(0.5, 1.5, 0.0)));
        assert!(in_correction_region(&poly, &Point3::new(1.5, 0.5, 0.0)));
        assert!(!in_correction_region(&poly, &Point3::new(1.5, 1.5, 0.0)));
        assert!(!in_correction_region(&poly, &Point3::new(0.5, 0.5, 2.0)));
        // Markers outside the region are never correction markers.
        let (c, truth, _) = sim_windows(13);
        let cfg = MarkerClassifierConfig {
            correction_region: CorrectionRegion {
                kind: crate::config::RegionKind::Box,
                box_min_m: vec![9.0; 3],
                box_max_m: vec![10.0; 3],
                ..Default::default()
            },
            ..Default::default()
        };
        for r in with_config(&c, cfg, None).classify(None).0 {
            if truth[&r.id] {
                assert_eq!(r.class, Some(MarkerClass::Registration));
            } else {
                assert_eq!(r.class, None, "moving marker {} outside the region must stay unassigned", r.id);
            }
        }
    }

    #[test]
    fn logistic_regression_learns_a_separable_rule_and_classifies_held_out_patients() {
        // 1-D separable data mirrored around 0: the bias must be ~0 and the weight positive.
        let xs: Vec<[f64; 5]> = (0..200).map(|i| [(i as f64 - 99.5) / 10.0, 0.0, 0.0, 0.0, 0.0]).collect();
        let ys: Vec<bool> = (0..200).map(|i| i >= 100).collect();
        let m = LogisticModel::fit(&xs, &ys, 1e-3, 500, 0.5);
        assert!(m.bias.abs() < 1e-6 && m.weights[0] > 1.0, "{m:?}");
        let model = train_classifier(12, 6, 1, 12.0);
        let acc = model.report["held_out_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.97, "held-out accuracy {acc}");
        let (c, truth, _) = sim_windows(14);
        let cfg = MarkerClassifierConfig {
            method: ClassificationMethod::Learned,
            model_path: "x".into(),
            ..Default::default()
        };
        check_against_truth(&with_config(&c, cfg, Some(model)).classify(None).0, &truth);
    }

    #[test]
    fn the_shipped_model_loads_and_a_broken_one_is_refused() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/marker_classifier_logreg.json");
        let m = LogisticModel::load(&path).unwrap();
        assert!(m.report["held_out_accuracy"].as_f64().unwrap() >= 0.97);
        let bad = std::env::temp_dir().join(format!("nn_bad_model_{}.json", std::process::id()));
        std::fs::write(&bad, r#"{"feature_names": ["a"], "mean": [0], "scale": [1], "weights": [1], "bias": 0}"#)
            .unwrap();
        assert!(matches!(LogisticModel::load(&bad), Err(ModelError::Inconsistent { .. })));
        std::fs::write(&bad, "not json").unwrap();
        assert!(matches!(LogisticModel::load(&bad), Err(ModelError::Unreadable { .. })));
        std::fs::remove_file(bad).unwrap();
    }
}
