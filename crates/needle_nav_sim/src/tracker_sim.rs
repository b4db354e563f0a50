//! The tracker's view of the digital patient: the skin markers in the tracker frame through
//! an unknown rigid transform, with localisation noise, latency, dropouts, occlusions and
//! occasional id swaps. Seeded and deterministic for a given sequence of sample times.

use super::breathing::BreathingSignal;
use super::phantom::{MotionState, Phantom};
use nalgebra::{Isometry3, Point3, Translation3, Unit, UnitQuaternion, Vector3};
use needle_nav_core::tracking::{MarkerObservation, TrackerSample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerSimConfig {
    pub seed: u64,
    /// Localisation noise, RMS of the 3-D error vector [m].
    pub noise_rms_m: f64,
    /// Time from acquisition to delivery [s]; samples are stamped with their acquisition time.
    pub latency_s: f64,
    /// Chance that a marker is missing from one sample.
    pub dropout_probability: f64,
    /// Occlusions (a marker hidden for a while, e.g. by the robot arm), per marker per minute.
    pub occlusion_rate_per_min: f64,
    pub occlusion_duration_s: f64,
    /// Id swaps (two markers' ids exchanged for a while), per minute.
    pub id_swap_rate_per_min: f64,
    pub id_swap_duration_s: f64,
}

impl Default for TrackerSimConfig {
    fn default() -> Self {
        TrackerSimConfig {
            seed: 1,
            noise_rms_m: 0.25e-3,
            latency_s: 0.008,
            dropout_probability: 0.002,
            occlusion_rate_per_min: 0.5,
            occlusion_duration_s: 1.0,
            id_swap_rate_per_min: 0.2,
            id_swap_duration_s: 0.5,
        }
    }
}

/// The "unknown" pose of the CT in the tracker frame (metres), drawn from the seed: a
/// tracker camera some 1-1.5 m from the patient, looking at it obliquely.
pub fn ct_to_tracker_transform(seed: u64) -> Isometry3<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7472_6163_6b65_72);
    let axis = Unit::new_normalize(Vector3::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0), 1.0));
    let rotation = UnitQuaternion::from_axis_angle(&axis, rng.random_range(0.2..1.2));
    let translation =
        Translation3::new(rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5), rng.random_range(1.0..1.5));
    Isometry3::from_parts(translation, rotation)
}

/// Truth at one instant, for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub sequence: u64,
    pub stamp_ns: i64,
    pub lesion_tracker: Point3<f64>,
    /// True centre of every marker in the tracker frame, by marker id.
    pub markers_tracker: Vec<(u32, Point3<f64>)>,
    pub ct_to_tracker: Isometry3<f64>,
    pub breathing_phase: f64,
    pub inhale_fraction: f64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_s: f64,
    end_s: f64,
    a: usize,
    b: usize,
}

#[derive(Debug, Clone)]
pub struct SimulatedTracker {
    phantom: Phantom,
    signal: BreathingSignal,
    config: TrackerSimConfig,
    pub ct_to_tracker: Isometry3<f64>,
    noise: Normal<f64>,
    rng: ChaCha8Rng,
    sequence: u64,
    occlusions: Vec<Window>,
    swaps: Vec<Window>,
    next_occlusion_s: f64,
    next_swap_s: f64,
}

fn mm_to_m(p: &Point3<f64>) -> Point3<f64> {
    Point3::from(p.coords * 1e-3)
}

impl SimulatedTracker {
    pub fn new(phantom: Phantom, signal: BreathingSignal, config: TrackerSimConfig) -> SimulatedTracker {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x6e6f_6973_65);
        let sigma = config.noise_rms_m / 3f64.sqrt();
        let noise = Normal::new(0.0, sigma).unwrap_or_else(|_| Normal::new(0.0, 0.0).expect("zero sigma"));
        let n_markers = phantom.markers.len().max(1) as f64;
        let next_occlusion_s = next_event(&mut rng, config.occlusion_rate_per_min * n_markers, 0.0);
        let next_swap_s = next_event(&mut rng, config.id_swap_rate_per_min, 0.0);
        SimulatedTracker {
            ct_to_tracker: ct_to_tracker_transform(config.seed),
            phantom,
            signal,
            config,
            noise,
            rng,
            sequence: 0,
            occlusions: Vec::new(),
            swaps: Vec::new(),
            next_occlusion_s,
            next_swap_s,
        }
    }

    pub fn phantom(&self) -> &Phantom {
        &self.phantom
    }

    pub fn signal(&self) -> &BreathingSignal {
        &self.signal
    }

    pub fn config(&self) -> &TrackerSimConfig {
        &self.config
    }

    /// Breathing state at acquisition time `t_s`.
    pub fn motion_state(&self, t_s: f64) -> MotionState {
        MotionState::at(|t| self.signal.inhale(t), t_s, self.phantom.config.lesion_lag_s)
    }

    fn schedule_events(&mut self, t_s: f64) {
        let n = self.phantom.markers.len();
        if n == 0 {
            return;
        }
        while self.next_occlusion_s <= t_s {
            let a = self.rng.random_range(0..n);
            let start = self.next_occlusion_s;
            self.occlusions.push(Window { start_s: start, end_s: start + self.config.occlusion_duration_s, a, b: a });
            self.next_occlusion_s = next_event(&mut self.rng, self.config.occlusion_rate_per_min * n as f64, start);
        }
        while self.next_swap_s <= t_s && n >= 2 {
            let a = self.rng.random_range(0..n);
            let b = (a + self.rng.random_range(1..n)) % n;
            let start = self.next_swap_s;
            self.swaps.push(Window { start_s: start, end_s: start + self.config.id_swap_duration_s, a, b });
            self.next_swap_s = next_event(&mut self.rng, self.config.id_swap_rate_per_min, start);
        }
        self.occlusions.retain(|w| w.end_s >= t_s);
        self.swaps.retain(|w| w.end_s >= t_s);
    }

    /// The sample acquired at `t_s` (seconds since the start), stamped `stamp_ns`, with its truth.
    /// Times must not decrease between calls.
    pub fn sample(&mut self, t_s: f64, stamp_ns: i64) -> (TrackerSample, GroundTruth) {
        self.schedule_events(t_s);
        let state = self.motion_state(t_s);
        let sequence = self.sequence;
        self.sequence += 1;
        let truths: Vec<(u32, Point3<f64>)> = self
            .phantom
            .markers
            .iter()
            .map(|m| (m.id, self.ct_to_tracker * mm_to_m(&self.phantom.marker_centre(m, &state))))
            .collect();
        let mut ids: Vec<u32> = truths.iter().map(|(id, _)| *id).collect();
        for w in self.swaps.iter().filter(|w| w.start_s <= t_s) {
            ids.swap(w.a, w.b);
        }
        let mut observations = Vec::with_capacity(truths.len());
        for (index, (_, truth)) in truths.iter().enumerate() {
            let noise = Vector3::new(
                self.noise.sample(&mut self.rng),
                self.noise.sample(&mut self.rng),
                self.noise.sample(&mut self.rng),
            );
            let occluded = self.occlusions.iter().any(|w| w.a == index && w.start_s <= t_s);
            let dropped = self.rng.random::<f64>() < self.config.dropout_probability;
            observations.push(MarkerObservation {
                id: ids[index],
                position: truth + noise,
                visible: !(occluded || dropped),
                quality: self.config.noise_rms_m,
            });
        }
        let lesion = self.ct_to_tracker * mm_to_m(&self.phantom.lesion_centre(&state));
        let truth = GroundTruth {
            sequence,
            stamp_ns,
            lesion_tracker: lesion,
            markers_tracker: truths,
            ct_to_tracker: self.ct_to_tracker,
            breathing_phase: self.signal.phase(t_s),
            inhale_fraction: state.skin_inhale,
        };
        (TrackerSample { sequence, stamp_ns, markers: observations }, truth)
    }
}

/// Time of the next event of a Poisson process with `rate_per_min` after `after_s` (infinity when the rate is 0).
fn next_event(rng: &mut ChaCha8Rng, rate_per_min: f64, after_s: f64) -> f64 {
    if rate_per_min <= 0.0 {
        return f64::INFINITY;
    }
    match Exp::new(rate_per_min / 60.0) {
        Ok(exp) => after_s + exp.sample(rng),
        Err(_) => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breathing::{BreathingConfig, BreathingSignal};
    use crate::phantom::PhantomConfig;
    use approx::assert_relative_eq;

    fn tracker(config: TrackerSimConfig) -> SimulatedTracker {
        let phantom = Phantom::new(PhantomConfig::default()).unwrap();
        let signal = BreathingSignal::synthetic(&BreathingConfig::default(), 600.0).unwrap();
        SimulatedTracker::new(phantom, signal, config)
    }

    fn quiet() -> TrackerSimConfig {
        TrackerSimConfig {
            noise_rms_m: 0.0,
            dropout_probability: 0.0,
            occlusion_rate_per_min: 0.0,
            id_swap_rate_per_min: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn noiseless_positions_are_the_rigid_image_of_the_ct_positions() {
        let mut sim = tracker(quiet());
        let (s, truth) = sim.sample(1.3, 0);
        let state = sim.motion_state(1.3);
        for (obs, m) in s.markers.iter().zip(sim.phantom().markers.clone()) {
            let expected = truth.ct_to_tracker * mm_to_m(&sim.phantom().marker_centre(&m, &state));
            assert_relative_eq!(obs.position, expected, epsilon = 1e-12);
            assert_eq!(obs.id, m.id);
        }
        // Rigid: distances between markers are the same in both frames.
        let d_ct = (sim.phantom().marker_centre(&sim.phantom().markers[0], &state)
            - sim.phantom().marker_centre(&sim.phantom().markers[5], &state))
        .norm()
            * 1e-3;
        assert_relative_eq!(d_ct, (s.markers[0].position - s.markers[5].position).norm(), epsilon = 1e-12);
    }

    #[test]
    fn noise_has_the_configured_rms() {
        let mut noisy = tracker(TrackerSimConfig { noise_rms_m: 0.25e-3, ..quiet() });
        let mut sum_sq = 0.0;
        let mut n = 0.0;
        for i in 0..2000 {
            let (s, truth) = noisy.sample(i as f64 * 0.004, 0);
            for (obs, (_, p)) in s.markers.iter().zip(&truth.markers_tracker) {
                sum_sq += (obs.position - p).norm_squared();
                n += 1.0;
            }
        }
        let rms = (sum_sq / n).sqrt();
        assert!((rms - 0.25e-3).abs() < 0.01e-3, "rms {rms}");
    }

    #[test]
    fn same_seed_same_samples_and_other_seed_other_pose() {
        let mut a = tracker(TrackerSimConfig::default());
        let mut b = tracker(TrackerSimConfig::default());
        for i in 0..500 {
            assert_eq!(a.sample(i as f64 * 0.01, i).0, b.sample(i as f64 * 0.01, i).0);
        }
        assert_ne!(ct_to_tracker_transform(1), ct_to_tracker_transform(2));
    }

    #[test]
    fn dropouts_occlusions_and_swaps_happen_at_their_rates() {
        let mut sim = tracker(TrackerSimConfig {
            dropout_probability: 0.05,
            occlusion_rate_per_min: 2.0,
            occlusion_duration_s: 1.0,
            id_swap_rate_per_min: 6.0,
            id_swap_duration_s: 0.5,
            ..quiet()
        });
        let (rate_hz, minutes) = (100.0, 10.0);
        let n = (rate_hz * 60.0 * minutes) as usize;
        let (mut hidden, mut total, mut swapped_samples) = (0, 0, 0);
        for i in 0..n {
            let (s, _) = sim.sample(i as f64 / rate_hz, 0);
            hidden += s.markers.iter().filter(|m| !m.visible).count();
            total += s.markers.len();
            if s.markers.iter().enumerate().any(|(k, m)| m.id != k as u32 + 1) {
                swapped_samples += 1;
            }
        }
        // Expected hidden fraction: dropouts plus occlusion time (2/min x 1 s = 3.3 % of the time).
        let hidden_rate = hidden as f64 / total as f64;
        let expected = 0.05 + (1.0 - 0.05) * (2.0 / 60.0);
        assert!((hidden_rate - expected).abs() < 0.015, "hidden {hidden_rate} expected {expected}");
        // Swaps: 6/min x 0.5 s = 5 % of the time.
        let swap_rate = swapped_samples as f64 / n as f64;
        assert!((swap_rate - 0.05).abs() < 0.025, "swapped {swap_rate}");
    }

    #[test]
    fn the_lesion_moves_with_breathing_along_the_ct_superior_axis() {
        let mut sim = tracker(quiet());
        let mut lesion = (f64::INFINITY, f64::NEG_INFINITY);
        let axis = sim.ct_to_tracker.rotation * Vector3::z();
        for i in 0..3000 {
            let (_, truth) = sim.sample(i as f64 * 0.02, 0);
            let z = truth.lesion_tracker.coords.dot(&axis);
            lesion = (lesion.0.min(z), lesion.1.max(z));
        }
        let si_range_mm = (lesion.1 - lesion.0) * 1e3;
        assert!((8.0..30.0).contains(&si_range_mm), "lesion SI range {si_range_mm} mm");
    }
}
