//! A small simulated patient seen by a tracker: skin markers over bone (nearly still) and
//! over soft tissue (moving with breathing), a lesion moving superior-inferior with a lag,
//! an unknown rigid CT-to-tracker transform, localisation noise and dropouts. Seeded and
//! deterministic. (The full digital patient with CT builds on this.)

use super::breathing::LujanBreathing;
use super::tracking::{MarkerObservation, TrackerSample};
use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A skin marker: rest position in CT coordinates (LPS, m) and its breathing excursion.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMarker {
    pub id: u32,
    pub rest_ct: Point3<f64>,
    /// Displacement at full inhale [m, CT frame].
    pub excursion_ct: Vector3<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimTrackerParams {
    pub seed: u64,
    /// Localisation noise, RMS of the 3-D error vector [m].
    pub noise_rms_m: f64,
    pub dropout_probability: f64,
    pub breathing_period_s: f64,
}

/// Truth at one instant, for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub sequence: u64,
    pub stamp_ns: i64,
    pub lesion_tracker: Point3<f64>,
    pub ct_to_tracker: Isometry3<f64>,
    pub breathing_phase: f64,
    pub inhale_fraction: f64,
}

#[derive(Debug, Clone)]
pub struct SimulatedTracker {
    pub markers: Vec<SimMarker>,
    pub lesion_rest_ct: Point3<f64>,
    /// Lesion displacement at full inhale [m, CT frame] (superior-inferior).
    pub lesion_excursion_ct: Vector3<f64>,
    /// Lesion lags the skin by this much [s].
    pub lesion_lag_s: f64,
    pub ct_to_tracker: Isometry3<f64>,
    breathing: LujanBreathing,
    noise: Normal<f64>,
    dropout_probability: f64,
    rng: ChaCha8Rng,
    sequence: u64,
}

/// Default marker layout on the anterior chest and abdomen, CT frame (LPS, m): y < 0 is anterior.
pub fn default_markers() -> Vec<SimMarker> {
    let still = |id, x, z| SimMarker {
        id,
        rest_ct: Point3::new(x, -0.11, z),
        excursion_ct: Vector3::new(0.0, -0.0002, 0.0001),
    };
    let moving = |id, x, y, z, ap: f64, si: f64| SimMarker {
        id,
        rest_ct: Point3::new(x, y, z),
        excursion_ct: Vector3::new(0.0, -ap, -si),
    };
    vec![
        still(1, 0.0, 0.10),                          // manubrium
        still(2, -0.06, 0.12),                        // right clavicle
        still(3, 0.06, 0.12),                         // left clavicle
        still(4, 0.0, 0.02),                          // lower sternum
        moving(5, -0.08, -0.10, -0.04, 0.005, 0.002), // right lower chest
        moving(6, 0.08, -0.10, -0.04, 0.005, 0.002),  // left lower chest
        moving(7, -0.06, -0.09, -0.12, 0.011, 0.003), // right upper abdomen
        moving(8, 0.06, -0.09, -0.12, 0.010, 0.003),  // left upper abdomen
    ]
}

impl SimulatedTracker {
    pub fn new(params: &SimTrackerParams) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        // "Unknown" pose of the CT in the tracker frame: drawn from the seed.
        let axis = Vector3::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0), 1.0);
        let rotation =
            UnitQuaternion::from_axis_angle(&nalgebra::Unit::new_normalize(axis), rng.random_range(0.2..1.2));
        let translation =
            Translation3::new(rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5), rng.random_range(0.8..1.5));
        // Per-axis sigma so that the 3-D error vector has the requested RMS.
        let sigma = params.noise_rms_m / 3f64.sqrt();
        SimulatedTracker {
            markers: default_markers(),
            lesion_rest_ct: Point3::new(-0.07, 0.02, -0.06),
            lesion_excursion_ct: Vector3::new(0.0, 0.002, -0.012),
            lesion_lag_s: 0.2,
            ct_to_tracker: Isometry3::from_parts(translation, rotation),
            breathing: LujanBreathing { period_s: params.breathing_period_s, n: 2, phase_rad: 0.0 },
            noise: Normal::new(0.0, sigma).unwrap_or_else(|_| Normal::new(0.0, 0.0).expect("zero sigma is valid")),
            dropout_probability: params.dropout_probability,
            rng,
            sequence: 0,
        }
    }

    /// True marker position at time `t_s`, CT frame.
    pub fn marker_ct(&self, marker: &SimMarker, t_s: f64) -> Point3<f64> {
        marker.rest_ct + marker.excursion_ct * self.breathing.inhale_fraction(t_s)
    }

    /// True lesion position at time `t_s`, CT frame.
    pub fn lesion_ct(&self, t_s: f64) -> Point3<f64> {
        self.lesion_rest_ct + self.lesion_excursion_ct * self.breathing.inhale_fraction(t_s - self.lesion_lag_s)
    }

    /// The next sample, taken at time `t_s` and stamped `stamp_ns`, with its truth.
    pub fn sample(&mut self, t_s: f64, stamp_ns: i64) -> (TrackerSample, GroundTruth) {
        let sequence = self.sequence;
        self.sequence += 1;
        let mut observations = Vec::with_capacity(self.markers.len());
        for i in 0..self.markers.len() {
            let truth = self.ct_to_tracker * self.marker_ct(&self.markers[i], t_s);
            let noise = Vector3::new(
                self.noise.sample(&mut self.rng),
                self.noise.sample(&mut self.rng),
                self.noise.sample(&mut self.rng),
            );
            let visible = self.dropout_probability <= 0.0 || self.rng.random::<f64>() >= self.dropout_probability;
            observations.push(MarkerObservation {
                id: self.markers[i].id,
                position: truth + noise,
                visible,
                quality: self.noise.std_dev() * 3f64.sqrt(),
            });
        }
        let truth = GroundTruth {
            sequence,
            stamp_ns,
            lesion_tracker: self.ct_to_tracker * self.lesion_ct(t_s),
            ct_to_tracker: self.ct_to_tracker,
            breathing_phase: self.breathing.phase(t_s),
            inhale_fraction: self.breathing.inhale_fraction(t_s),
        };
        (TrackerSample { sequence, stamp_ns, markers: observations }, truth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    fn params(noise: f64) -> SimTrackerParams {
        SimTrackerParams { seed: 7, noise_rms_m: noise, dropout_probability: 0.0, breathing_period_s: 4.0 }
    }

    #[test]
    fn noiseless_positions_are_the_rigid_image_of_the_ct_positions() {
        let mut sim = SimulatedTracker::new(&params(0.0));
        let (s, truth) = sim.sample(1.3, 0);
        for (obs, m) in s.markers.iter().zip(sim.markers.clone()) {
            let expected = truth.ct_to_tracker * sim.marker_ct(&m, 1.3);
            assert_relative_eq!(obs.position, expected, epsilon = 1e-12);
        }
        // Rigid: pairwise distances equal in both frames.
        let d_ct = (sim.marker_ct(&sim.markers[0], 1.3) - sim.marker_ct(&sim.markers[5], 1.3)).norm();
        let d_tr = (s.markers[0].position - s.markers[5].position).norm();
        assert_relative_eq!(d_ct, d_tr, epsilon = 1e-12);
    }

    #[test]
    fn noise_has_the_configured_rms() {
        let mut noisy = SimulatedTracker::new(&params(0.25e-3));
        let clean = SimulatedTracker::new(&params(0.0));
        let mut sum_sq = 0.0;
        let mut n = 0.0;
        for i in 0..2000 {
            let t = i as f64 * 0.004;
            let (s, _) = noisy.sample(t, 0);
            for (obs, m) in s.markers.iter().zip(&clean.markers) {
                sum_sq += (obs.position - clean.ct_to_tracker * clean.marker_ct(m, t)).norm_squared();
                n += 1.0;
            }
        }
        let rms = (sum_sq / n).sqrt();
        assert!((rms - 0.25e-3).abs() < 0.01e-3, "rms {rms}");
    }

    #[test]
    fn same_seed_same_samples_and_other_seed_other_pose() {
        let mut a = SimulatedTracker::new(&params(0.25e-3));
        let mut b = SimulatedTracker::new(&params(0.25e-3));
        for i in 0..50 {
            assert_eq!(a.sample(i as f64 * 0.01, i).0, b.sample(i as f64 * 0.01, i).0);
        }
        let c = SimulatedTracker::new(&SimTrackerParams { seed: 8, ..params(0.0) });
        assert_ne!(a.ct_to_tracker, c.ct_to_tracker);
    }

    #[test]
    fn dropouts_happen_at_the_configured_rate() {
        let mut sim = SimulatedTracker::new(&SimTrackerParams { dropout_probability: 0.2, ..params(0.0) });
        let mut hidden = 0;
        let mut total = 0;
        for i in 0..2000 {
            let (s, _) = sim.sample(i as f64 * 0.004, 0);
            hidden += s.markers.iter().filter(|m| !m.visible).count();
            total += s.markers.len();
        }
        let rate = hidden as f64 / total as f64;
        assert!((rate - 0.2).abs() < 0.015, "rate {rate}");
    }
}
