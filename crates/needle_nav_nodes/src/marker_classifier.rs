//! The rules of the marker_classifier node, without ROS: samples feed the sliding-window
//! classifier; the classes are re-evaluated once per period of tracker time on a fixed grid (the
//! same instants live and in a replay), with the patient axes configured or else taken from the
//! latest usable registration; a classification is published only when the split changed.

use crate::config::MarkerClassifierConfig;
use nalgebra::{Matrix3, UnitQuaternion};
use needle_nav_core::classification::{LogisticModel, MarkerResult, WindowClassifier};
use needle_nav_core::sample_validation::CheckedSample;

/// Re-evaluate the classes at most this often [ns].
pub const CLASSIFY_PERIOD_NS: i64 = 100_000_000;

/// One re-evaluation of the classes.
#[derive(Debug, Clone)]
pub struct Classified {
    pub results: Vec<MarkerResult>,
    /// The split into registration and correction markers changed: publish it.
    pub changed: bool,
}

/// The marker_classifier node's state and rules.
#[derive(Debug, Clone)]
pub struct MarkerClassifierMachine {
    classifier: WindowClassifier,
    configured_axes: Option<Matrix3<f64>>,
    registered_axes: Option<Matrix3<f64>>,
    last_slot: Option<i64>,
}

impl MarkerClassifierMachine {
    pub fn new(cfg: MarkerClassifierConfig, model: Option<LogisticModel>) -> MarkerClassifierMachine {
        // Patient axes for motion-mode recognition: configured, else from the latest registration.
        let configured_axes = (cfg.motion_modes.tracker_to_patient.len() == 9)
            .then(|| Matrix3::from_row_slice(&cfg.motion_modes.tracker_to_patient));
        MarkerClassifierMachine {
            classifier: WindowClassifier::new(cfg, model),
            configured_axes,
            registered_axes: None,
            last_slot: None,
        }
    }

    pub fn config(&self) -> &MarkerClassifierConfig {
        self.classifier.config()
    }

    /// Takes the run-time parameters of `new` (validated by the caller): the class thresholds,
    /// the window fill, the motion-mode similarity and the sample checks, from the next
    /// classification on; the marker histories are kept. The rest of `new` is ignored: those
    /// parameters are read-only while the node runs.
    pub fn apply_dynamic(&mut self, new: &MarkerClassifierConfig) {
        let mut cfg = self.classifier.config().clone();
        cfg.threshold_m = new.threshold_m;
        cfg.hysteresis_m = new.hysteresis_m;
        cfg.top_n = new.top_n;
        cfg.min_window_fill = new.min_window_fill;
        cfg.motion_modes.similarity_threshold = new.motion_modes.similarity_threshold;
        cfg.sample_checks = new.sample_checks.clone();
        self.classifier.set_config(cfg);
    }

    /// A registration: `Some(rotation of image_to_tracker)` when it is usable, else none.
    pub fn on_registration(&mut self, image_to_tracker: Option<UnitQuaternion<f64>>) {
        // image_to_tracker rotates CT (patient) axes into the tracker frame; its inverse maps back.
        self.registered_axes = image_to_tracker.map(|r| r.to_rotation_matrix().matrix().transpose());
    }

    /// A sample the validator accepted; the classes when this sample starts a new slot of the grid.
    pub fn on_sample(&mut self, checked: &CheckedSample) -> Option<Classified> {
        let sample = &checked.sample;
        for obs in sample.usable() {
            self.classifier.push(obs.id, sample.stamp_ns, obs.position);
        }
        let slot = sample.stamp_ns.div_euclid(CLASSIFY_PERIOD_NS);
        if self.last_slot == Some(slot) {
            return None;
        }
        self.last_slot = Some(slot);
        let axes = self.configured_axes.or(self.registered_axes);
        let (results, changed) = self.classifier.classify(axes.as_ref());
        Some(Classified { results, changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Point3;
    use needle_nav_core::tracking::{MarkerObservation, TrackerSample};

    /// The classes are re-evaluated at the first sample of each 100 ms slot of tracker time.
    #[test]
    fn classification_follows_a_fixed_grid_on_tracker_time() {
        let mut m = MarkerClassifierMachine::new(MarkerClassifierConfig::default(), None);
        let ms = 1_000_000;
        let classified: Vec<i64> = (0..50)
            .map(|k| 30 * ms + k * 8 * ms) // 125 Hz from 30 ms
            .filter(|&t| {
                let sample = TrackerSample {
                    sequence: 0,
                    stamp_ns: t,
                    markers: vec![MarkerObservation {
                        id: 1,
                        position: Point3::origin(),
                        visible: true,
                        quality: f64::NAN,
                    }],
                };
                let checked = CheckedSample { sample, dropped: Vec::new(), moved: Vec::new(), time_restarted: false };
                m.on_sample(&checked).is_some()
            })
            .collect();
        // 30 ms to 422 ms: slots 0 to 4, each first met at these stamps.
        assert_eq!(classified, vec![30 * ms, 102 * ms, 206 * ms, 302 * ms, 406 * ms]);
    }
}
