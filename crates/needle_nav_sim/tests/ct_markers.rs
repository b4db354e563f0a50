//! Tests of `needle_nav_core::ct_markers` that need the digital patient (`needle_nav_sim`), which
//! depends on `needle_nav_core`: so they live here as an integration test.

use nalgebra::Point3;
use needle_nav_core::ct_markers::*;
use needle_nav_core::volume::Volume;

use needle_nav_sim::phantom::{MotionState, Phantom, PhantomConfig};

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn small() -> PhantomConfig {
    PhantomConfig { dims: [176, 128, 160], spacing_mm: [2.0, 2.0, 2.0], ..Default::default() }
}

fn hu_f32(v: &Volume<i16>) -> Volume<f32> {
    Volume { geometry: v.geometry.clone(), data: v.data.iter().map(|&h| h as f32).collect() }
}

/// Nearest truth marker (id, distance) of a detection.
fn nearest_truth(ph: &Phantom, state: &MotionState, d: &DetectedMarker) -> (u32, f64) {
    ph.markers
        .iter()
        .map(|m| (m.id, (ph.marker_centre(m, state) - Point3::from(d.centre_mm)).norm()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::INFINITY))
}

/// Paints a bright object (partial volume by signed distance, as the phantom renders markers).
fn paint(v: &mut Volume<f32>, hu: f32, signed_distance: impl Fn(Point3<f64>) -> f64) {
    let g = v.geometry.clone();
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                let sd = signed_distance(g.index_to_patient([i as f64, j as f64, k as f64]));
                let f = (0.5 - sd / g.spacing_mm[0]).clamp(0.0, 1.0) as f32;
                if f > 0.0 {
                    let o = g.offset(i, j, k);
                    v.data[o] += (hu - v.data[o]) * f;
                }
            }
        }
    }
}

#[test]
fn all_phantom_markers_found_with_sub_voxel_centres_and_bone_rejected() {
    let ph = Phantom::new(small()).unwrap();
    let frame = ph.render(&MotionState::REST, 0);
    let vol = hu_f32(&frame.hu);
    let (found, rejected) = detect_markers(&vol, &MarkerDetectionConfig::default());
    assert!(rejected.is_empty(), "rejected: {rejected:?}");
    assert_eq!(found.len(), ph.markers.len(), "{found:?}");
    let mut ids: Vec<u32> = Vec::new();
    let mut worst: f64 = 0.0;
    for d in &found {
        let (id, err) = nearest_truth(&ph, &MotionState::REST, d);
        ids.push(id);
        worst = worst.max(err);
        assert!(err < 0.5, "marker {id}: centroid {:?} is {err:.3} mm from the truth", d.centre_mm);
        assert!(d.isotropy > 0.5 && d.peak_hu > 1500.0, "{d:?}");
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), ph.markers.len(), "each marker found once");
    eprintln!("phantom markers: worst centroid error {worst:.3} mm");
    // Away from the markers the brightest voxel is bone, well below the threshold.
    let g = &vol.geometry;
    let mut near_marker = vec![false; vol.data.len()];
    for m in &ph.markers {
        if let Some([(i0, i1), (j0, j1), (k0, k1)]) = g.index_box(&m.rest_mm, m.radius_mm + 4.0) {
            for k in k0..k1 {
                for j in j0..j1 {
                    for i in i0..i1 {
                        near_marker[g.offset(i, j, k)] = true;
                    }
                }
            }
        }
    }
    let brightest = vol.data.iter().zip(&near_marker).filter(|(_, &n)| !n).map(|(v, _)| *v).fold(f32::MIN, f32::max);
    assert!((800.0..1500.0).contains(&brightest), "brightest voxel away from markers: {brightest} HU");
    eprintln!("brightest voxel away from markers (bone): {brightest} HU");
}

#[test]
fn too_big_and_elongated_blobs_are_rejected_with_their_reason() {
    let ph = Phantom::new(small()).unwrap();
    let mut vol = hu_f32(&ph.render(&MotionState::REST, 0).hu);
    // In the air in front of the body, away from the markers.
    let ball = Point3::new(140.0, -110.0, 60.0);
    paint(&mut vol, 3000.0, |p| (p - ball).norm() - 7.5);
    // A rod 30 mm long, radius 3 mm: its volume is that of a 5.9 mm sphere, within the size limits.
    let (a, b) = (Point3::new(-140.0, -110.0, -60.0), Point3::new(-140.0, -110.0, -30.0));
    paint(&mut vol, 3000.0, |p| {
        let t = ((p - a).dot(&(b - a)) / (b - a).norm_squared()).clamp(0.0, 1.0);
        (p - (a + (b - a) * t)).norm() - 3.0
    });
    let (found, rejected) = detect_markers(&vol, &MarkerDetectionConfig::default());
    assert_eq!(found.len(), 12, "the markers are still found");
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let near = |c: [f64; 3], p: Point3<f64>| (Point3::from(c) - p).norm() < 20.0;
    let ball_r = rejected.iter().find(|(m, _)| near(m.centre_mm, ball)).expect("ball rejected");
    assert!(matches!(ball_r.1, Rejection::TooBig { .. }), "{}", ball_r.1);
    assert!(ball_r.0.equivalent_radius_mm > 6.5, "{:?}", ball_r.0);
    let rod = rejected.iter().find(|(m, _)| near(m.centre_mm, Point3::new(-140.0, -110.0, -45.0)));
    let rod = rod.expect("rod rejected");
    assert!(matches!(rod.1, Rejection::Elongated { .. }), "{}", rod.1);
    assert!(rod.0.equivalent_radius_mm < 6.0 && rod.0.isotropy < 0.2, "{:?}", rod.0);
}

/// The real thorax CT (1 x 1 x 2 mm voxels) carries two radiopaque skin BBs (anterior chest and left
/// lateral), 10-11 voxels each, saturated at 2976 HU; nothing else but one stray voxel reaches 1500 HU.
#[test]
fn the_skin_bbs_of_the_real_thorax_ct_are_found() {
    let dir = std::path::Path::new("/work/shared/data/thorax_ct_dicom");
    assert!(dir.is_dir(), "test data folder {} is missing (see ../shared/data/MANIFEST.md)", dir.display());
    let ct = needle_nav_imaging::dicom_read::load_series(dir, None).unwrap();
    let (found, rejected) = detect_markers(&ct.volume, &MarkerDetectionConfig::default());
    // Centres of the saturated (>= 2900 HU) voxels of each BB, from pydicom 3.0.1.
    let truth = [[238.932, 83.396, -1.5], [-77.881, -93.810, 0.0]];
    assert_eq!(found.len(), 2, "{found:?}");
    for t in truth {
        let d = found.iter().map(|m| dist(m.centre_mm, t)).fold(f64::INFINITY, f64::min);
        assert!(d < 0.5, "no marker within 0.5 mm of {t:?}: {found:?}");
    }
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].0.voxels == 1 && matches!(rejected[0].1, Rejection::TooSmall { .. }), "{rejected:?}");
}

#[test]
fn config_reads_with_defaults_and_refuses_unknown_keys() {
    let c: MarkerDetectionConfig = serde_json::from_str(r#"{"threshold_hu": 2000}"#).unwrap();
    assert_eq!(c, MarkerDetectionConfig { threshold_hu: 2000.0, ..Default::default() });
    assert!(serde_json::from_str::<MarkerDetectionConfig>(r#"{"treshold_hu": 2000}"#).is_err());
    assert_eq!(MarkerDetectionConfig::default().validate(), Ok(()));
    let bad = MarkerDetectionConfig { min_radius_mm: 7.0, ..Default::default() };
    assert!(matches!(bad.validate(), Err(CtMarkerError::InvalidRequest { what: "min_radius_mm/max_radius_mm", .. })));
    let bad = MarkerDetectionConfig { min_sphericity: 1.5, ..Default::default() };
    assert!(bad.validate().is_err());
}

fn states() -> Vec<(f64, MotionState)> {
    [0.0, 0.35, 0.7, 1.0]
        .iter()
        .enumerate()
        .map(|(n, &s)| (n as f64 * 0.5, MotionState { skin_inhale: s, organ_inhale: s, organ_velocity: 0.0 }))
        .collect()
}

#[test]
fn markers_are_tracked_over_4d_phases_as_the_truth_moves_and_a_lost_one_is_reported() {
    let ph = Phantom::new(small()).unwrap();
    let cfg = MarkerDetectionConfig::default();
    let states = states();
    let frames: Vec<(f64, Vec<DetectedMarker>)> = states
        .iter()
        .enumerate()
        .map(|(n, (t, s))| {
            let (found, rejected) = detect_markers(&hu_f32(&ph.render(s, n as u64 + 1).hu), &cfg);
            assert!(rejected.is_empty() && found.len() == 12, "phase {n}: {found:?} {rejected:?}");
            (*t, found)
        })
        .collect();
    let curves = track_across_frames(&frames, 6.0).unwrap();
    assert_eq!(curves.len(), 12);
    let mut worst: f64 = 0.0;
    for c in &curves {
        let (id, _) = nearest_truth(&ph, &states[0].1, &frames[0].1[c.index]);
        let truth = ph.markers.iter().find(|m| m.id == id).unwrap();
        assert_eq!(c.times_s, states.iter().map(|s| s.0).collect::<Vec<_>>());
        for (p, (_, s)) in c.positions_mm.iter().zip(&states) {
            let err = (ph.marker_centre(truth, s) - Point3::from(*p)).norm();
            worst = worst.max(err);
            assert!(err < 0.5, "marker {id} at {s:?}: {err:.3} mm off");
        }
    }
    eprintln!("4-D tracking: worst position error {worst:.3} mm over {} phases", states.len());

    // Marker 5 of the first frame vanishes in frame 2.
    let mut lost = frames.clone();
    let last = curves[5].positions_mm[1];
    lost[2].1.retain(|d| dist(d.centre_mm, last) > 6.0);
    assert_eq!(lost[2].1.len(), 11);
    match track_across_frames(&lost, 6.0) {
        Err(CtMarkerError::MissingInFrame { marker: 5, frame: 2, .. }) => {}
        other => panic!("expected marker 5 missing in frame 2, got {other:?}"),
    }
}

fn det(c: [f64; 3]) -> DetectedMarker {
    DetectedMarker { centre_mm: c, voxels: 7, equivalent_radius_mm: 2.5, peak_hu: 2800.0, isotropy: 0.9 }
}

#[test]
fn ambiguous_shared_extra_and_out_of_order_frames_are_reported() {
    let f0 = (0.0, vec![det([0.0, 0.0, 0.0]), det([50.0, 0.0, 0.0])]);
    let ok = track_across_frames(&[f0.clone(), (1.0, vec![det([52.0, 0.0, 0.0]), det([1.0, 0.0, 0.0])])], 5.0);
    let ok = ok.unwrap();
    assert_eq!(ok[1].positions_mm, vec![[50.0, 0.0, 0.0], [52.0, 0.0, 0.0]]);
    // Two detections within reach of marker 0.
    let two = (1.0, vec![det([1.0, 0.0, 0.0]), det([-1.0, 0.0, 0.0]), det([50.0, 0.0, 0.0])]);
    assert!(matches!(
        track_across_frames(&[f0.clone(), two], 5.0),
        Err(CtMarkerError::Ambiguous { marker: 0, frame: 1, .. })
    ));
    // Two markers 6 mm apart, both reaching the one detection between them.
    let close = (0.0, vec![det([0.0, 0.0, 0.0]), det([6.0, 0.0, 0.0])]);
    let shared = (1.0, vec![det([3.0, 0.0, 0.0]), det([30.0, 0.0, 0.0])]);
    assert!(matches!(
        track_across_frames(&[close, shared], 5.0),
        Err(CtMarkerError::SharedDetection { markers: (0, 1), frame: 1, .. })
    ));
    // A detection nobody claims.
    let extra = (1.0, vec![det([0.0, 0.0, 0.0]), det([50.0, 0.0, 0.0]), det([0.0, 90.0, 0.0])]);
    assert!(matches!(
        track_across_frames(&[f0.clone(), extra], 5.0),
        Err(CtMarkerError::UnexpectedDetection { frame: 1, .. })
    ));
    let back = (0.0, f0.1.clone());
    assert!(matches!(
        track_across_frames(&[f0.clone(), back], 5.0),
        Err(CtMarkerError::TimesNotIncreasing { frame: 1, .. })
    ));
    assert!(track_across_frames(&[], 5.0).is_err());
}

fn curve(index: usize, p0: [f64; 3], motion: impl Fn(f64) -> [f64; 3]) -> MarkerCurve {
    let times: Vec<f64> = (0..9).map(|k| k as f64 * 0.5).collect();
    let positions = times
        .iter()
        .map(|&t| {
            let d = motion(t);
            [p0[0] + d[0], p0[1] + d[1], p0[2] + d[2]]
        })
        .collect();
    MarkerCurve { index, times_s: times, positions_mm: positions }
}

#[test]
fn search_region_keeps_markers_by_their_first_position() {
    let still = |_| [0.0, 0.0, 0.0];
    let curves = vec![
        curve(0, [13.0, 4.0, 0.0], still),                     // 5 mm from the entry (10, 0, 0)
        curve(1, [10.0, 0.0, 10.0], still),                    // 10 mm: on the boundary, kept
        curve(2, [16.0, 8.0, 0.0], still),                     // 10 mm
        curve(3, [10.0, -10.0, 0.1], still),                   // 10.0005 mm: outside
        curve(4, [30.0, 0.0, 0.0], |t| [-20.0 * t, 0.0, 0.0]), // passes the entry later: outside
    ];
    assert_eq!(in_search_region(&curves, [10.0, 0.0, 0.0], 10.0), vec![0, 1, 2]);
    assert_eq!(in_search_region(&curves, [10.0, 0.0, 0.0], 4.9), Vec::<usize>::new());
    assert_eq!(in_search_region(&curves, [10.0, 0.0, 0.0], 25.0), vec![0, 1, 2, 3, 4]);
}

const SD: CombinationCriterion = CombinationCriterion::StandardDeviation;
const RANGE: CombinationCriterion = CombinationCriterion::Range;

fn breathing(amplitude: f64, dir: [f64; 3]) -> impl Fn(f64) -> [f64; 3] {
    move |t: f64| {
        let s = amplitude * (std::f64::consts::PI * t / 4.0).sin().powi(2);
        [dir[0] * s, dir[1] * s, dir[2] * s]
    }
}

#[test]
fn the_consistent_markers_are_chosen_and_the_outlier_left_out() {
    let entry = [0.0, -100.0, 0.0];
    let curves = vec![
        curve(0, [20.0, -100.0, 0.0], breathing(6.0, [0.0, -1.0, 0.0])),
        curve(1, [-25.0, -100.0, 10.0], breathing(6.3, [0.0, -0.96, 0.28])),
        curve(2, [0.0, -100.0, 30.0], breathing(5.8, [0.0, -1.0, 0.0])),
        // Over the sternum: barely moves.
        curve(3, [5.0, -100.0, -15.0], breathing(1.0, [0.0, -1.0, 0.0])),
    ];
    let c = select_combination(&curves, &[0, 1, 2, 3], entry, 3, 4, SD).unwrap();
    assert_eq!(c.members, vec![0, 1, 2]);
    assert_eq!(c.features_mm.len(), 3);
    for (f, want) in c.features_mm.iter().zip([6.0, 6.3, 5.8]) {
        assert!((f - want).abs() < 1e-9, "{:?}", c.features_mm);
    }
    let mean = (6.0 + 6.3 + 5.8) / 3.0;
    let sd = ([6.0, 6.3, 5.8].iter().map(|f: &f64| (f - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    assert!((c.spread_mm - sd).abs() < 1e-9);
    // Inverse-distance-squared weights 1/400, 1/725, 1/900 on the members' displacements (peak at t = 2 s).
    let w = [1.0 / 400.0, 1.0 / 725.0, 1.0 / 900.0];
    let y = -(6.0 * w[0] + 6.3 * 0.96 * w[1] + 5.8 * w[2]) / w.iter().sum::<f64>();
    let z = 6.3 * 0.28 * w[1] / w.iter().sum::<f64>();
    let peak = c.entry_displacement_mm[4];
    assert!((peak[1] - y).abs() < 1e-9 && (peak[2] - z).abs() < 1e-9 && peak[0].abs() < 1e-12, "{peak:?}");
    assert_eq!(c.entry_displacement_mm[0], [0.0, 0.0, 0.0]);

    // Pairs allowed: the two closest in feature (6.0 and 5.8 are 0.1 apart in sd; 6.0 and 6.3 0.15).
    let pair = select_combination(&curves, &[0, 1, 2, 3], entry, 2, 2, SD).unwrap();
    assert_eq!(pair.members, vec![0, 2]);
    // Equal spreads: the combination closer to the entry wins.
    let twins = vec![
        curve(0, [5.0, -100.0, 0.0], breathing(4.0, [0.0, -1.0, 0.0])),
        curve(1, [50.0, -100.0, 0.0], breathing(4.0, [0.0, -1.0, 0.0])),
        curve(2, [0.0, -100.0, 8.0], breathing(4.0, [0.0, 0.0, 1.0])),
    ];
    assert_eq!(select_combination(&twins, &[0, 1, 2], entry, 2, 2, SD).unwrap().members, vec![0, 2]);
}

#[test]
fn too_few_markers_asks_for_new_markers_and_bad_requests_are_refused() {
    let curves = vec![curve(0, [0.0; 3], breathing(3.0, [0.0, -1.0, 0.0])), curve(1, [9.0, 0.0, 0.0], |_| [0.0; 3])];
    let err = select_combination(&curves, &[0, 1], [0.0; 3], 3, 4, RANGE).unwrap_err();
    assert_eq!(err, CtMarkerError::TooFewMarkers { found: 2, need: 3 });
    assert!(err.to_string().contains("re-place markers"), "{err}");
    // Duplicates count once.
    assert!(matches!(
        select_combination(&curves, &[0, 0, 1], [0.0; 3], 3, 3, RANGE),
        Err(CtMarkerError::TooFewMarkers { found: 2, .. })
    ));
    assert!(matches!(
        select_combination(&curves, &[0, 1], [0.0; 3], 1, 2, RANGE),
        Err(CtMarkerError::InvalidRequest { .. })
    ));
    assert!(matches!(
        select_combination(&curves, &[0, 1], [0.0; 3], 2, 1, RANGE),
        Err(CtMarkerError::InvalidRequest { .. })
    ));
    assert_eq!(
        select_combination(&curves, &[0, 7], [0.0; 3], 2, 2, RANGE),
        Err(CtMarkerError::UnknownMarker { index: 7 })
    );
    let mut shifted = curves.clone();
    shifted[1].times_s[3] += 0.1;
    assert!(matches!(
        select_combination(&shifted, &[0, 1], [0.0; 3], 2, 2, RANGE),
        Err(CtMarkerError::UnequalSampling { .. })
    ));
}

#[test]
fn range_and_standard_deviation_pick_differently_as_computed_by_hand() {
    // Triples of features: B = {6.0, 6.0, 7.0}: range 1.0, sd = sqrt((1/9 + 1/9 + 4/9) / 3) = 0.4714;
    // A = {3.0, 3.55, 4.1}: range 1.1, sd = sqrt((0.3025 + 0 + 0.3025) / 3) = 0.4491. Every other triple
    // mixes the two groups (range >= 1.9). Range picks B, standard deviation A.
    let entry = [0.0, -100.0, 0.0];
    let amplitudes = [3.0, 3.55, 4.1, 6.0, 6.0, 7.0];
    let curves: Vec<MarkerCurve> = amplitudes
        .iter()
        .enumerate()
        .map(|(i, &a)| curve(i, [10.0 * i as f64, -100.0, 0.0], breathing(a, [0.0, -1.0, 0.0])))
        .collect();
    let ids = [0, 1, 2, 3, 4, 5];
    let by_range = select_combination(&curves, &ids, entry, 3, 3, RANGE).unwrap();
    assert_eq!(by_range.members, vec![3, 4, 5]);
    assert_eq!(by_range.criterion, RANGE);
    assert!((by_range.spread_mm - 1.0).abs() < 1e-9, "{by_range:?}");
    let by_sd = select_combination(&curves, &ids, entry, 3, 3, SD).unwrap();
    assert_eq!(by_sd.members, vec![0, 1, 2]);
    assert!((by_sd.spread_mm - (0.605f64 / 3.0).sqrt()).abs() < 1e-9, "{by_sd:?}");
    // The criteria themselves.
    assert!((RANGE.spread(&[6.0, 6.0, 7.0]) - 1.0).abs() < 1e-12);
    assert!((SD.spread(&[6.0, 6.0, 7.0]) - (6.0f64 / 27.0).sqrt()).abs() < 1e-12);
    assert_eq!(RANGE.spread(&[]), 0.0);
    // Pairs: range and sd are proportional (sd = range / 2), both pick {3, 4} (features 6.0, 6.0).
    let a = select_combination(&curves, &ids, entry, 2, 2, RANGE).unwrap();
    let b = select_combination(&curves, &ids, entry, 2, 2, SD).unwrap();
    assert_eq!((a.members.clone(), b.members.clone()), (vec![3, 4], vec![3, 4]));
    // Serde names as in the parameter files.
    assert_eq!(serde_json::to_string(&SD).unwrap(), "\"standard_deviation\"");
    assert_eq!(serde_json::from_str::<CombinationCriterion>("\"range\"").unwrap(), RANGE);
    assert_eq!(CombinationCriterion::default(), RANGE);
}
