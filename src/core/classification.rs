//! Displacement features of marker position histories and the threshold classifier.

use crate::config::{DisplacementFeature, MarkerClassifierConfig};
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

/// Result for one marker.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerResult {
    pub id: u32,
    pub class: Option<MarkerClass>,
    pub feature: f64,
    pub samples: usize,
}

/// Sliding-window histories of every marker and the classes they were last given.
#[derive(Debug, Clone)]
pub struct WindowClassifier {
    config: MarkerClassifierConfig,
    histories: BTreeMap<u32, VecDeque<(i64, Point3<f64>)>>,
    classes: BTreeMap<u32, MarkerClass>,
}

impl WindowClassifier {
    pub fn new(config: MarkerClassifierConfig) -> Self {
        WindowClassifier { config, histories: BTreeMap::new(), classes: BTreeMap::new() }
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

    /// Classifies every marker whose window is filled enough; returns all markers and
    /// whether any class changed.
    pub fn classify(&mut self) -> (Vec<MarkerResult>, bool) {
        let mut changed = false;
        let mut out = Vec::new();
        for (&id, h) in &self.histories {
            let span_s = match (h.front(), h.back()) {
                (Some(a), Some(b)) => (b.0 - a.0) as f64 * 1e-9,
                _ => 0.0,
            };
            let positions: Vec<Point3<f64>> = h.iter().map(|(_, p)| *p).collect();
            let feature = feature_value(&principal_displacement(&positions), self.config.feature).unwrap_or(f64::NAN);
            let filled = span_s >= self.config.window_s * self.config.min_window_fill;
            let class = if filled && feature.is_finite() {
                let previous = self.classes.get(&id).copied();
                let c = threshold_class(feature, previous, self.config.threshold_m, self.config.hysteresis_m);
                if previous != Some(c) {
                    changed = true;
                    self.classes.insert(id, c);
                }
                Some(c)
            } else {
                self.classes.get(&id).copied()
            };
            out.push(MarkerResult { id, class, feature, samples: h.len() });
        }
        (out, changed)
    }
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
        let mut c = WindowClassifier::new(MarkerClassifierConfig::default());
        for i in 0..(13 * 100) {
            let t = i as f64 * 0.01;
            let (s, _) = sim.sample(t, (t * 1e9) as i64);
            for m in s.usable() {
                c.push(m.id, s.stamp_ns, m.position);
            }
        }
        let (results, changed) = c.classify();
        assert!(changed);
        for r in results {
            let expected = if truth[&r.id] { MarkerClass::Registration } else { MarkerClass::Correction };
            assert_eq!(r.class, Some(expected), "marker {} feature {}", r.id, r.feature);
        }
        // Classifying again without new data changes nothing.
        assert!(!c.classify().1);
    }
}
