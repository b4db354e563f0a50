//! Tests of `needle_nav_core::guidance` that need the digital patient (`needle_nav_sim`), which
//! depends on `needle_nav_core`: so they live here as an integration test.

#[allow(unused_imports)]
use nalgebra::{Isometry3, Matrix3, Point3, Rotation3, Translation3, UnitQuaternion, Vector3};
#[allow(unused_imports)]
use std::collections::{BTreeMap, HashMap};
use needle_nav_core::correction::PredictionMethod;
use needle_nav_core::ct_markers::MarkerDetectionConfig;
use needle_nav_core::guidance::*;
use needle_nav_core::registration::RegistrationConfig;
use needle_nav_core::target_gate::InvalidReason;
use needle_nav_core::tracking::TrackerSample;
use needle_nav_sim::breathing::{BreathingConfig, BreathingSignal};
use needle_nav_core::classification::{MarkerClass, WindowClassifier};
use needle_nav_sim::phantom::{MotionState, Phantom, PhantomConfig};
use needle_nav_sim::tracker_sim::{SimulatedTracker, TrackerSimConfig};
use needle_nav_sim::patient_case::{write_case, CaseConfig};

#[test]
fn a_bad_phase_in_case_json_is_named_before_any_dicom_is_read() {
    // The folder has no CT at all: the error must be the case file's, not the missing series.
    let dir = std::env::temp_dir().join(format!("nn_guidance_bad_phase_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let phase = |t: Option<f64>| serde_json::json!({"dicom_dir": "ct", "time_s": t, "lesion_centre_mm": [0, 0, 0]});
    let doc = serde_json::json!({
        "reference": {"lesion_centre_mm": [1.0, 2.0, 3.0]},
        "preset_entry_mm": [0.0, 0.0, 0.0],
        "phases": [phase(Some(0.0)), phase(None)],
    });
    std::fs::write(dir.join("case.json"), doc.to_string()).unwrap();
    let err = needle_nav_imaging::planning_case::load_planning_case(&dir, &MarkerDetectionConfig::default(), &SelectionConfig::default()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(&err, GuidanceError::Case { reason, .. } if reason == "a phase has no time_s"), "{err}");
}

#[test]
fn from_written_dicom_to_corrected_targets_against_the_truth() {
    let dir = std::env::temp_dir().join(format!("nn_guidance_{}", std::process::id()));
    let phantom_cfg =
        PhantomConfig { seed: 5, dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() };
    let breathing = BreathingConfig { seed: 5, ..Default::default() };
    write_case(&dir, &CaseConfig { phantom: phantom_cfg.clone(), breathing: breathing.clone(), phases: 6 })
        .unwrap();
    let case = needle_nav_imaging::planning_case::load_planning_case(&dir, &MarkerDetectionConfig::default(), &SelectionConfig::default()).unwrap();
    assert_eq!(case.image_markers_m.len(), 12);
    assert_eq!(case.phases.len(), 6);
    assert_eq!(case.selected_correction, None);
    // Search region and combinations: only moving markers near the entry, 2 to 3 of them.
    let selection = SelectionConfig { search_radius_m: 0.2, min_markers: 2, max_markers: 3 };
    let selected = needle_nav_imaging::planning_case::load_planning_case(&dir, &MarkerDetectionConfig::default(), &selection).unwrap();
    let chosen = selected.selected_correction.clone().unwrap();
    assert!((2..=3).contains(&chosen.len()), "{chosen:?}");
    for &i in &chosen {
        assert!((selected.image_markers_m[i] - selected.entry_m).norm() <= 0.2);
        let range = selected
            .phases
            .iter()
            .map(|p| (p.markers_m[i] - selected.phases[0].markers_m[i]).norm())
            .fold(0.0, f64::max);
        assert!(range >= 3e-3, "marker {i} moves only {range} m");
    }
    let phantom = Phantom::new(phantom_cfg).unwrap();
    // Every detected CT marker lies within 0.5 mm of a true marker centre (at the CT's phase).
    let signal = BreathingSignal::synthetic(&breathing, 120.0).unwrap();
    let t_ref = signal.cycles().iter().find(|c| c.start_s > 0.0).unwrap().start_s;
    let state = MotionState::at(|t| signal.inhale(t), t_ref, phantom.config.lesion_lag_s);
    for p in &case.image_markers_m {
        let nearest = phantom
            .markers
            .iter()
            .map(|m| (phantom.marker_centre(m, &state) * 1e-3 - p).norm())
            .fold(f64::INFINITY, f64::min);
        assert!(nearest < 0.5e-3, "CT marker {p:?} is {nearest} m from the truth");
    }

    let mut sim = SimulatedTracker::new(
        phantom,
        signal,
        TrackerSimConfig { seed: 5, occlusion_rate_per_min: 0.0, ..Default::default() },
    );
    let samples: Vec<(f64, TrackerSample)> = (0..(90 * 50))
        .map(|i| {
            let t = i as f64 / 50.0;
            (t, sim.sample(t, (t * 1e9) as i64).0)
        })
        .collect();
    let mut classifier = WindowClassifier::new(needle_nav_core::classification::MarkerClassifierConfig::default(), None);
    for (_, s) in samples.iter().take(15 * 50) {
        for m in s.usable() {
            classifier.push(m.id, s.stamp_ns, m.position);
        }
    }
    let results = classifier.classify(None).0;
    let ids = |c| results.iter().filter(|r| r.class == Some(c)).map(|r| r.id).collect::<Vec<u32>>();
    let (reg_ids, cor_ids) = (ids(MarkerClass::Registration), ids(MarkerClass::Correction));
    let window: Vec<TrackerSample> = samples[250..750].iter().map(|(_, s)| s.clone()).collect();
    let reg = register_case(
        &case,
        &positions_at_ct_phase(&window, &reg_ids, &cor_ids),
        &RegistrationConfig::default(),
        3e-3,
    )
    .unwrap();
    let lesion_truth = sim.ct_to_tracker * case.lesion_m;
    assert!(
        (reg.lesion_tracker - lesion_truth).norm() < 1e-3,
        "registered lesion {} m off",
        (reg.lesion_tracker - lesion_truth).norm()
    );
    assert_eq!(reg.used.len(), 6);

    let mut computer = TargetComputer::new(
        case,
        RegisteredPlan::from(&reg),
        cor_ids,
        TargetConfig { latency_s: 0.0, prediction: PredictionMethod::None, ..Default::default() },
    );
    let lag = sim.phantom().config.lesion_lag_s;
    let mut errors = Vec::new();
    for (t, s) in samples.iter().skip(15 * 50) {
        match computer.update(*t, s) {
            Ok(target) if *t > 40.0 => {
                let truth = sim.ct_to_tracker
                    * (sim.phantom().lesion_centre(&MotionState::at(|x| sim.signal().inhale(x), *t, lag)) * 1e-3);
                errors.push((target.target - truth).norm());
            }
            Err(InvalidReason::NoBaseline) => assert!(*t < 40.0, "baseline not recorded by {t} s"),
            _ => {}
        }
    }
    assert!(computer.model().is_some(), "no correlation model from the 4-D CT");
    let rms = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
    assert!(errors.len() > 1000 && rms < 1.5e-3, "{} targets, RMS error {rms} m", errors.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
