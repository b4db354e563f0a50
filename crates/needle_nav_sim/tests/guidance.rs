//! Tests of `needle_nav_core::guidance` that need the digital patient (`needle_nav_sim`), which
//! depends on `needle_nav_core`: so they live here as an integration test.

use needle_nav_core::case_file::{CaseFile, CaseFileError};
use needle_nav_core::classification::{MarkerClass, WindowClassifier};
use needle_nav_core::correction::PredictionMethod;
use needle_nav_core::ct_markers::MarkerDetectionConfig;
use needle_nav_core::ct_markers::{detect_markers, Rejection};
use needle_nav_core::guidance::*;
use needle_nav_core::registration::RegistrationConfig;
use needle_nav_core::target_gate::InvalidReason;
use needle_nav_core::tracking::TrackerSample;
use needle_nav_core::volume::Volume;
use needle_nav_imaging::dicom_read;
use needle_nav_imaging::planning_case::load_planning_case;
use needle_nav_sim::breathing::{BreathingConfig, BreathingSignal};
use needle_nav_sim::patient_case::{write_case, CaseConfig};
use needle_nav_sim::phantom::{MotionState, Phantom, PhantomConfig};
use needle_nav_sim::tracker_sim::{SimulatedTracker, TrackerSimConfig};
use std::str::FromStr;

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
    let err = load_planning_case(&dir, &MarkerDetectionConfig::default(), &SelectionConfig::default()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(&err, GuidanceError::CaseFile { source: CaseFileError::Parse { path, .. }, .. } if path == "phases[1].time_s"),
        "{err}"
    );
}

fn small_phantom() -> (Phantom, Volume<f32>) {
    let ph = Phantom::new(PhantomConfig { dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() })
        .unwrap();
    let hu = ph.render(&MotionState::REST, 0).hu;
    let vol = Volume { geometry: hu.geometry.clone(), data: hu.data.iter().map(|&h| h as f32).collect() };
    (ph, vol)
}

fn truth_markers(ph: &Phantom) -> Vec<(u32, [f64; 3], f64)> {
    ph.markers.iter().map(|m| (m.id, ph.marker_centre(m, &MotionState::REST).into(), m.radius_mm)).collect()
}

#[test]
fn a_scan_without_the_lesion_or_a_marker_is_refused_with_a_rescan_reason() {
    let (ph, vol) = small_phantom();
    let cfg = ScanCheckConfig::default();
    let (_, rejected) = detect_markers(&vol, &MarkerDetectionConfig::default());
    let markers = truth_markers(&ph);
    let lesion: [f64; 3] = ph.lesion_centre(&MotionState::REST).into();
    let r = ph.config.lesion_radius_mm;
    let ok = check_scan_contains(&vol, lesion, r, &markers, &rejected, &cfg).unwrap();
    assert!((ok.median_hu - 30.0).abs() < 15.0, "{ok:?}");
    let says_rescan =
        |e: &GuidanceError| e.to_string().contains("re-place the markers") && e.to_string().contains("scan again");

    // Outside the volume (x extent -175..175 mm), and inside but within radius + margin of the edge.
    for x in [400.0, 175.0 - 15.0] {
        let e = check_scan_contains(&vol, [x, 0.0, -20.0], r, &markers, &rejected, &cfg).unwrap_err();
        assert!(matches!(e, GuidanceError::LesionOutsideScan { side: "last column", .. }), "{e}");
        assert!(says_rescan(&e), "{e}");
    }
    // Air beside the body (an ellipse of semi-axes 160 x 110 mm), 27 mm and more inside the volume.
    let g = &vol.geometry;
    let air_point = [140.0, -100.0, -20.0];
    let e = check_scan_contains(&vol, air_point, 0.0, &markers, &rejected, &cfg).unwrap_err();
    assert!(matches!(e, GuidanceError::LesionNotInTissue { tissue: TargetTissue::Air, .. }), "{e}");
    assert!(says_rescan(&e) && e.to_string().contains("air"), "{e}");
    // The vertebral body (cancellous bone, 300 HU in the phantom).
    let e = check_scan_contains(&vol, [0.0, 72.0, -20.0], 5.0, &markers, &rejected, &cfg).unwrap_err();
    assert!(
        matches!(e, GuidanceError::LesionNotInTissue { tissue: TargetTissue::Bone, median_hu, .. } if median_hu > 250.0),
        "{e}"
    );
    // Aerated lung next to the lesion is still a place for a lesion (-850 HU > -900).
    let lung = [lesion[0], lesion[1] - r - 8.0, lesion[2]];
    let in_lung = check_scan_contains(&vol, lung, 2.0, &markers, &rejected, &cfg).unwrap();
    assert!(in_lung.median_hu < -700.0, "{in_lung:?}");

    // A registration marker (as the case lists them) outside the field of view.
    let mut moved = markers.clone();
    moved[0].1[2] = 400.0;
    let e = check_scan_contains(&vol, lesion, r, &moved, &rejected, &cfg).unwrap_err();
    assert!(
        matches!(&e, GuidanceError::MarkerOutsideScan { detail } if detail.starts_with(&format!("marker {} ", moved[0].0))),
        "{e}"
    );
    assert!(says_rescan(&e), "{e}");
    // A scan whose edge cuts a marker (no list of markers: a real case): the cut blob is found.
    let m = &markers[0];
    let cut_k = ((m.1[2] - g.origin_mm[2]) / g.spacing_mm[2]).round() as usize;
    let dims = [g.dims[0], g.dims[1], cut_k + 1];
    let cropped = Volume {
        geometry: needle_nav_core::volume::Geometry { dims, ..g.clone() },
        data: vol.data[..dims[0] * dims[1] * dims[2]].to_vec(),
    };
    let (_, rejected) = detect_markers(&cropped, &MarkerDetectionConfig::default());
    assert!(rejected.iter().any(|(_, why)| *why == Rejection::TouchesEdge), "{rejected:?}");
    let e =
        check_scan_contains(&cropped, [lesion[0], lesion[1], lesion[2].min(m.1[2] - 40.0)], r, &[], &rejected, &cfg);
    let e = e.unwrap_err();
    assert!(matches!(&e, GuidanceError::MarkerOutsideScan { detail } if detail.contains("cut by the edge")), "{e}");
}

/// The real thorax CT holds its lesion (cases/thorax_ct_lung_lesion): the check passes.
#[test]
fn the_real_thorax_case_contains_its_lesion() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("cases/thorax_ct_lung_lesion");
    let case = CaseFile::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    assert_eq!(case.reference.lesion_centre_mm, [-85.9, 82.1, -9.1]);
    let ct_dir = dir.join(case.files.ct());
    assert!(ct_dir.is_dir(), "test data folder {} is missing (see ../shared/data/MANIFEST.md)", ct_dir.display());
    let ct = dicom_read::load_series(&ct_dir, None).unwrap();
    let (_, rejected) = detect_markers(&ct.volume, &MarkerDetectionConfig::default());
    let r = case.reference.lesion_radius_mm.unwrap();
    let check = check_scan_contains(
        &ct.volume,
        case.reference.lesion_centre_mm,
        r,
        &[],
        &rejected,
        &ScanCheckConfig::default(),
    )
    .unwrap();
    eprintln!("thorax lesion: {check:?}");
    assert!(check.median_hu > -300.0 && check.median_hu < 150.0, "{check:?}");
    // The same lesion 115 mm higher is 9.6 mm below the last slice (z = 115.5 mm): refused.
    let up = [-85.9, 82.1, -9.1 + 115.0];
    let e = check_scan_contains(&ct.volume, up, r, &[], &rejected, &ScanCheckConfig::default()).unwrap_err();
    assert!(matches!(e, GuidanceError::LesionOutsideScan { .. }), "{e}");
}

#[test]
fn from_written_dicom_to_corrected_targets_against_the_truth() {
    let dir = std::env::temp_dir().join(format!("nn_guidance_{}", std::process::id()));
    let phantom_cfg =
        PhantomConfig { seed: 5, dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() };
    let breathing = BreathingConfig { seed: 5, ..Default::default() };
    write_case(&dir, &CaseConfig { phantom: phantom_cfg.clone(), breathing: breathing.clone(), phases: 6 }).unwrap();
    let case = load_planning_case(&dir, &MarkerDetectionConfig::default(), &SelectionConfig::default()).unwrap();
    assert_eq!(case.image_markers_m.len(), 12);
    assert_eq!(case.phases.len(), 6);
    assert_eq!(case.selected_correction, None);
    // Search region and combinations: only moving markers near the entry, 2 to 3 of them.
    let selection = SelectionConfig { search_radius_m: 0.2, min_markers: 2, max_markers: 3 };
    let selected = load_planning_case(&dir, &MarkerDetectionConfig::default(), &selection).unwrap();
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
    let mut classifier =
        WindowClassifier::new(needle_nav_core::classification::MarkerClassifierConfig::default(), None);
    for (_, s) in samples.iter().take(15 * 50) {
        for m in s.usable() {
            classifier.push(m.id, s.stamp_ns, m.position);
        }
    }
    let results = classifier.classify(None).0;
    let ids = |c| results.iter().filter(|r| r.class == Some(c)).map(|r| r.id).collect::<Vec<u32>>();
    let (reg_ids, cor_ids) = (ids(MarkerClass::Registration), ids(MarkerClass::Correction));
    let window: Vec<TrackerSample> = samples[250..750].iter().map(|(_, s)| s.clone()).collect();
    let reg =
        register_case(&case, &positions_at_ct_phase(&window, &reg_ids, &cor_ids), &RegistrationConfig::default(), 3e-3)
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
