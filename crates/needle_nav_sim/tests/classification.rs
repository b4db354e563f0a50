//! Tests of `needle_nav_core::classification` that need the digital patient (`needle_nav_sim`), which
//! depends on `needle_nav_core`: so they live here as an integration test.

use approx::assert_relative_eq;
use nalgebra::{Matrix3, Point3, Vector3};
use needle_nav_core::classification::*;
use needle_nav_sim::classifier_training::*;

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
    use needle_nav_sim::breathing::{BreathingConfig, BreathingSignal};
    use needle_nav_sim::phantom::{Phantom, PhantomConfig};
    use needle_nav_sim::tracker_sim::{SimulatedTracker, TrackerSimConfig};
    let phantom = Phantom::new(PhantomConfig::default()).unwrap();
    let signal = BreathingSignal::synthetic(&BreathingConfig::default(), 60.0).unwrap();
    let truth: std::collections::BTreeMap<u32, bool> = phantom.markers.iter().map(|m| (m.id, m.over_bone)).collect();
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
    use needle_nav_sim::breathing::{BreathingConfig, BreathingSignal};
    use needle_nav_sim::phantom::{Phantom, PhantomConfig};
    use needle_nav_sim::tracker_sim::{SimulatedTracker, TrackerSimConfig};
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

fn with_config(c: &WindowClassifier, config: MarkerClassifierConfig, model: Option<LogisticModel>) -> WindowClassifier {
    c.with_config(config, model)
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
        kind: RegionKind::Box,
        box_min_m: vec![0.0, 0.0, 0.0],
        box_max_m: vec![1.0, 1.0, 1.0],
        ..Default::default()
    };
    assert!(in_correction_region(&bx, &Point3::new(0.5, 0.5, 0.5)));
    assert!(!in_correction_region(&bx, &Point3::new(1.5, 0.5, 0.5)));
    // L-shaped polygon: the notch is outside.
    let poly = CorrectionRegion {
        kind: RegionKind::Polygon,
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
            kind: RegionKind::Box,
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
    let cfg =
        MarkerClassifierConfig { method: ClassificationMethod::Learned, model_path: "x".into(), ..Default::default() };
    check_against_truth(&with_config(&c, cfg, Some(model)).classify(None).0, &truth);
}

#[test]
fn the_shipped_model_loads_and_a_broken_one_is_refused() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("models/marker_classifier_logreg.json");
    let m = LogisticModel::load(&path).unwrap();
    assert!(m.report["held_out_accuracy"].as_f64().unwrap() >= 0.97);
    let bad = std::env::temp_dir().join(format!("nn_bad_model_{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"feature_names": ["a"], "mean": [0], "scale": [1], "weights": [1], "bias": 0}"#).unwrap();
    assert!(matches!(LogisticModel::load(&bad), Err(ModelError::Inconsistent { .. })));
    std::fs::write(&bad, "not json").unwrap();
    assert!(matches!(LogisticModel::load(&bad), Err(ModelError::Unreadable { .. })));
    std::fs::remove_file(bad).unwrap();
}
