//! Training the learned marker classifier on digital patients (`needle_nav train-classifier`):
//! labelled marker windows from simulated patients, and the fit.

use crate::breathing::{BreathingConfig, BreathingSignal};
use crate::phantom::{Phantom, PhantomConfig};
use crate::tracker_sim::{SimulatedTracker, TrackerSimConfig};
use nalgebra::Point3;
use needle_nav_core::classification::*;
use std::collections::BTreeMap;

/// Labelled marker windows from digital patients: `cases` seeded patients with varied breathing,
/// `windows_per_case` windows of `window_s` each. Label: true for soft-tissue (correction) markers.
pub fn digital_patient_training_set(
    cases: u64,
    first_seed: u64,
    windows_per_case: usize,
    window_s: f64,
) -> (Vec<[f64; 5]>, Vec<bool>) {
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
