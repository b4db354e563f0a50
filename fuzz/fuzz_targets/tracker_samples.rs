//! Tracker message handling: a sequence of `TrackerSample`s built from the fuzz bytes goes
//! through the core the nodes use, as the nodes call it: each node's `SampleValidator` (the
//! checks every sample passes first), the classifier's window (`WindowClassifier::push`/`classify`
//! on the 100 ms grid of tracker time), the target gate and `TargetComputer::update` (baseline
//! recording, correlation model from a 4-D CT, prediction).
//!
//! Input: byte 0 options (bits 0-1 prediction method, bit 2 motion modes, bit 3 4-D CT phases,
//! bit 4 patient axes), then records `[dt_ms u16][repeat u8][n u8]` + n markers
//! `[id u8][flags u8][dx dy dz i16]`: the record's markers are observed `repeat + 1` times, `dt_ms`
//! apart (signed: time may go back), breathing with a 4 s cycle plus the record's offsets
//! (10 µm steps). Flags: bit 0 invisible, bit 1 a NaN coordinate, bit 2 an infinite one, bit 3
//! a far-off position (1 km).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nalgebra::{Isometry3, Matrix3, Point3, Vector3};
use needle_nav_nodes::config::MarkerClassifierConfig;
use needle_nav_core::classification::WindowClassifier;
use needle_nav_core::correction::PredictionMethod;
use needle_nav_core::guidance::{CtPhase, PlanningCase, RegisteredPlan, TargetComputer, TargetConfig};
use needle_nav_core::sample_validation::{SampleChecks, SampleValidator};
use needle_nav_core::target_gate::{self, GateInputs};
use needle_nav_core::tracking::{MarkerObservation, TrackerSample};
use needle_nav_fuzz::Bytes;

/// Ids 1-3 are still (registration) markers, 4-6 breathe (correction); others are strays.
const CORRECTION_IDS: [u32; 3] = [4, 5, 6];
const MAX_SAMPLES: usize = 4000;
/// The classifier node classifies once per this much tracker time.
const CLASSIFY_PERIOD_NS: i64 = 100_000_000;

fn base_m(id: u32) -> Point3<f64> {
    let a = id as f64;
    Point3::new(0.05 * (a % 4.0) - 0.08, 0.04 * (a / 4.0).floor() - 0.04, 0.1 + 0.002 * a)
}

/// Breathing displacement of a marker at depth `s` (0 end-exhale, 1 a normal breath).
fn breathing_m(id: u32, s: f64) -> Vector3<f64> {
    if CORRECTION_IDS.contains(&id) {
        Vector3::new(0.001, 0.002, 0.008) * s
    } else {
        Vector3::zeros()
    }
}

fn surrogate(t_s: f64) -> f64 {
    0.5 - 0.5 * (2.0 * std::f64::consts::PI * t_s / 4.0).cos()
}

fn planning_case(with_phases: bool) -> PlanningCase {
    let ids = 1..=6u32;
    let lesion = Point3::new(0.0, 0.0, 0.18);
    let phases = if with_phases {
        (0..4)
            .map(|k| {
                let s = surrogate(k as f64);
                CtPhase {
                    time_s: k as f64,
                    markers_m: ids.clone().map(|id| base_m(id) + breathing_m(id, s)).collect(),
                    lesion_m: lesion + Vector3::new(0.0, 0.003, 0.012) * s,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    PlanningCase {
        image_markers_m: ids.map(base_m).collect(),
        lesion_m: lesion,
        entry_m: Point3::new(0.0, 0.0, 0.1),
        phases,
        selected_correction: None,
        selection_note: String::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes::new(data);
    let options = bytes.u8();
    let prediction = match options & 3 {
        0 => PredictionMethod::None,
        1 => PredictionMethod::Linear,
        _ => PredictionMethod::Autoregressive,
    };
    let mut classifier_config = MarkerClassifierConfig { window_s: 3.0, ..Default::default() };
    classifier_config.motion_modes.enabled = options & 4 != 0;
    let mut classifier = WindowClassifier::new(classifier_config, None);
    let axes = (options & 16 != 0).then(Matrix3::<f64>::identity);
    let case = planning_case(options & 8 != 0);
    let plan = RegisteredPlan {
        transform: Isometry3::identity(),
        lesion_tracker: case.lesion_m,
        entry_tracker: case.entry_m,
        tre_lesion_m: 1e-3,
    };
    let config = TargetConfig { baseline_s: 2.0, prediction, ..Default::default() };
    let mut computer = TargetComputer::new(case, plan, CORRECTION_IDS.to_vec(), config);
    // One validator per node, as in the nodes.
    let mut classifier_checks = SampleValidator::new(SampleChecks::default());
    let mut target_checks = SampleValidator::new(SampleChecks::default());

    // Tracker time as the message carries it: seconds (i32) and nanoseconds (u32).
    let (mut sec, mut nanosec): (i64, i64) = (1_000, 0);
    let mut sequence = 0u64;
    let mut last_slot = None;
    while !bytes.is_empty() && (sequence as usize) < MAX_SAMPLES {
        let dt_ms = bytes.i16() as i64;
        let repeat = bytes.u8();
        let n = bytes.u8() % 10;
        let markers: Vec<(u32, u8, Vector3<f64>)> = (0..n)
            .map(|_| {
                let id = (bytes.u8() % 10) as u32;
                let flags = bytes.u8();
                let d = Vector3::new(bytes.i16() as f64, bytes.i16() as f64, bytes.i16() as f64) * 1e-5;
                (id, flags, d)
            })
            .collect();
        for _ in 0..=repeat {
            let total = (sec * 1_000_000_000 + nanosec + dt_ms * 1_000_000).clamp(0, i32::MAX as i64 * 1_000_000_000);
            (sec, nanosec) = (total / 1_000_000_000, total % 1_000_000_000);
            let stamp_ns = sec * 1_000_000_000 + nanosec;
            let t_s = stamp_ns as f64 * 1e-9;
            let s = surrogate(t_s);
            let raw = TrackerSample {
                sequence,
                stamp_ns,
                markers: markers
                    .iter()
                    .map(|(id, flags, d)| {
                        let mut position = base_m(*id) + breathing_m(*id, s) + d;
                        if flags & 2 != 0 {
                            position.x = f64::NAN;
                        }
                        if flags & 4 != 0 {
                            position.y = f64::INFINITY;
                        }
                        if flags & 8 != 0 {
                            position.z = 1000.0;
                        }
                        MarkerObservation { id: *id, position, visible: flags & 1 == 0, quality: 1e-4 }
                    })
                    .collect(),
            };
            sequence += 1;
            // The nodes' clock: a little after the sample's stamp.
            let now_ns = stamp_ns + 2_000_000;

            // marker_classifier
            if let Ok(checked) = classifier_checks.check(&raw, Some(now_ns)) {
                let sample = checked.sample;
                for obs in sample.usable() {
                    classifier.push(obs.id, sample.stamp_ns, obs.position);
                }
                let slot = sample.stamp_ns.div_euclid(CLASSIFY_PERIOD_NS);
                if last_slot != Some(slot) {
                    last_slot = Some(slot);
                    let (results, _) = classifier.classify(axes.as_ref());
                    for r in &results {
                        assert!(r.samples > 0, "a marker result without samples: {r:?}");
                    }
                }
            }

            // needle_target
            let Ok(checked) = target_checks.check(&raw, Some(now_ns)) else { continue };
            let sample = checked.sample;
            let gate = target_gate::check(&GateInputs {
                newest_sample_ns: Some(sample.stamp_ns),
                now_ns,
                malformed_marker_ids: sample.malformed_ids(),
                registration: Ok(()),
                stale_after_s: 0.5,
            });
            if gate.is_ok() {
                if let Ok(target) = computer.update(t_s, &sample) {
                    let finite = target.target.coords.iter().chain(target.entry.coords.iter()).all(|c| c.is_finite());
                    assert!(finite, "a valid target with non-finite coordinates: {target:?}");
                }
            }
        }
    }
});
