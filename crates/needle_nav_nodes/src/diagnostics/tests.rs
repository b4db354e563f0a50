//! Each level boundary worked out by hand from the events and the default thresholds.

use super::*;
use needle_nav_core::diagnostics_thresholds::*;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn value<'a>(s: &'a Status, key: &str) -> &'a str {
    s.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {s:?}"))
}

/// A target health tracker (expected 100 Hz) fed samples at `hz` from t = 0 to `until_ns`, each
/// stamped `lag_ns` before it arrives, holding markers 1..=4.
fn target_fed(hz: f64, until_ns: i64, lag_ns: i64) -> TargetHealth {
    let mut h = TargetHealth::new(&TargetDiagnostics::default(), 100.0, "sim", 0);
    let step = (1e9 / hz) as i64;
    let mut t = step;
    while t <= until_ns {
        h.inputs.record(t, t - lag_ns, &[1, 2, 3, 4]);
        t += step;
    }
    h
}

fn inputs(h: &mut TargetHealth, now_ns: i64) -> Status {
    h.report(now_ns).remove(0)
}

#[test]
fn level_bytes_are_diagnostic_msgs_constants() {
    // diagnostic_msgs/DiagnosticStatus: OK=0 WARN=1 ERROR=2 STALE=3.
    assert_eq!([Level::Ok.byte(), Level::Warn.byte(), Level::Error.byte(), Level::Stale.byte()], [0, 1, 2, 3]);
}

#[test]
fn input_rate_boundaries() {
    // Window 2 s, expected 100 Hz: warn below 80 Hz, error below 50 Hz.
    // 100 Hz for 10 s: 200 samples in (8 s, 10 s] = 100 Hz, OK.
    let mut h = target_fed(100.0, 10 * S, 0);
    let s = inputs(&mut h, 10 * S);
    assert_eq!(s.level, Level::Ok, "{s:?}");
    assert_eq!(s.name, "needle_nav: needle_target inputs");
    assert_eq!(value(&s, "rate [Hz]"), "100.0");
    // 80 Hz is exactly the warn fraction: not below it, OK.
    let s = inputs(&mut target_fed(80.0, 10 * S, 0), 10 * S);
    assert_eq!((s.level, value(&s, "rate [Hz]")), (Level::Ok, "80.0"), "{s:?}");
    // 79.5 Hz (step 12.578 ms: 159 samples in 2 s): WARN.
    let s = inputs(&mut target_fed(79.5, 10 * S, 0), 10 * S);
    assert_eq!(s.level, Level::Warn, "{s:?}");
    assert!(s.message.contains("below 80 %"), "{}", s.message);
    // 50 Hz: at the error fraction, WARN only; 49 Hz: ERROR.
    assert_eq!(inputs(&mut target_fed(50.0, 10 * S, 0), 10 * S).level, Level::Warn);
    let s = inputs(&mut target_fed(49.0, 10 * S, 0), 10 * S);
    assert_eq!(s.level, Level::Error, "{s:?}");
    // Before a whole window has passed the rate is not judged: 1 s at 10 Hz is OK on rate.
    let s = inputs(&mut target_fed(10.0, S, 0), S);
    assert_eq!(s.level, Level::Ok, "{s:?}");
}

#[test]
fn data_age_boundaries() {
    // Samples stamped 100 ms before they arrive: the age at the newest is exactly the warn limit.
    let s = inputs(&mut target_fed(100.0, 10 * S, 100 * MS), 10 * S);
    assert_eq!(s.level, Level::Ok, "{s:?}");
    assert_eq!(value(&s, "data age [s]"), "0.100");
    let s = inputs(&mut target_fed(100.0, 10 * S, 101 * MS), 10 * S);
    assert_eq!(s.level, Level::Warn, "{s:?}");
    // The tracker stopped at 10 s: at 10.4 s the newest stamp is 0.4 s old (WARN, rate still 80 %
    // of 1.6 s... 160 samples in (8.4, 10.4] = 80 Hz, not below), at 10.6 s it is 0.6 s old: ERROR.
    let mut h = target_fed(100.0, 10 * S, 0);
    let s = inputs(&mut h, 10 * S + 400 * MS);
    assert_eq!(s.level, Level::Warn, "{s:?}");
    assert!(s.message.contains("0.40 s old"), "{}", s.message);
    let s = inputs(&mut h, 10 * S + 600 * MS);
    assert_eq!(s.level, Level::Error, "{s:?}");
    assert_eq!(value(&s, "time since last message [s]"), "0.600");
}

#[test]
fn nothing_received_warns_then_errors() {
    let mut h = TargetHealth::new(&TargetDiagnostics::default(), 100.0, "sim", 0);
    assert_eq!(inputs(&mut h, 50 * MS).level, Level::Ok);
    assert_eq!(inputs(&mut h, 200 * MS).level, Level::Warn);
    let s = inputs(&mut h, 3 * S);
    assert_eq!(s.level, Level::Error);
    assert!(s.message.contains("no tracker samples received for 3.0 s"), "{}", s.message);
}

#[test]
fn a_hidden_marker_is_named() {
    // Marker 3 disappears at 9 s; samples keep coming at 100 Hz until 10 s.
    let mut h = target_fed(100.0, 9 * S, 0);
    let mut t = 9 * S + 10 * MS;
    while t <= 10 * S {
        h.inputs.record(t, t, &[1, 2, 4]);
        t += 10 * MS;
    }
    let s = inputs(&mut h, 10 * S);
    assert_eq!(s.level, Level::Warn, "{s:?}");
    assert_eq!(value(&s, "markers missing"), "[3]");
    assert_eq!(value(&s, "markers in newest sample"), "3");
    // Unseen for exactly the warn age (0.1 s) is not yet missing.
    let mut h = target_fed(100.0, 9 * S, 0);
    h.inputs.record(9 * S + 100 * MS, 9 * S + 100 * MS, &[1, 2, 4]);
    assert_eq!(h.inputs.missing_markers(), Vec::<u32>::new());
    h.inputs.record(9 * S + 101 * MS, 9 * S + 101 * MS, &[1, 2, 4]);
    assert_eq!(h.inputs.missing_markers(), vec![3]);
}

#[test]
fn invalid_share_boundaries_count_faults_not_waiting_or_gating() {
    use needle_nav_core::target_gate::InvalidReason;
    // 10 targets in the 5 s window; warn above 20 %, error above 50 %.
    let feed = |faults: usize, gated: usize| {
        let mut h = TargetHealth::new(&TargetDiagnostics::default(), 100.0, "sim", 0);
        for i in 0..10 {
            let t = (i + 1) as i64 * 100 * MS;
            let r = if i < faults {
                Err(InvalidReason::MissingMarkers(vec![3]))
            } else if i < faults + gated {
                Err(InvalidReason::DeviationTooLarge { deviation_m: 0.01, tolerance_m: 0.005 })
            } else {
                Ok(())
            };
            h.target(t, r.as_ref().map(|_| ()));
        }
        h.report(S).remove(1)
    };
    let s = feed(2, 7);
    assert_eq!(s.level, Level::Ok, "20 % is not above 20 %: {s:?}");
    assert_eq!(value(&s, "invalid share"), "0.900");
    assert_eq!(value(&s, "invalid share: deviation_too_large"), "0.700");
    let s = feed(3, 0);
    assert_eq!(s.level, Level::Warn, "{s:?}");
    assert!(s.message.contains("30 % of targets invalid, mostly missing_markers"), "{}", s.message);
    assert_eq!(feed(5, 0).level, Level::Warn, "50 % is not above 50 %");
    assert_eq!(feed(6, 0).level, Level::Error);
    // Only waiting: WARN naming it; nothing in the window: STALE.
    let mut h = TargetHealth::new(&TargetDiagnostics::default(), 100.0, "sim", 0);
    h.target(100 * MS, Err(&InvalidReason::NoBaseline));
    let s = h.report(S).remove(1);
    assert_eq!((s.level, s.message.as_str()), (Level::Warn, "no valid target yet: no_baseline"));
    assert_eq!(h.report(6 * S).remove(1).level, Level::Stale);
}

#[test]
fn baseline_state_warns_until_recorded() {
    let mut h = TargetHealth::new(&TargetDiagnostics::default(), 100.0, "sim", 0);
    assert_eq!(h.report(0)[2].level, Level::Warn);
    h.baseline(BaselineState::Recording);
    assert_eq!(value(&h.report(0)[2], "state"), "recording");
    h.baseline(BaselineState::Recorded);
    assert_eq!(h.report(0)[2].level, Level::Ok);
}

#[test]
fn registration_fre_and_tre_boundaries() {
    // Defaults: FRE warn above 1.0 mm, error above 1.5 mm; TRE warn above 2 mm, error above 3 mm.
    let level = |fre: f64, tre: f64| {
        let mut h = RegistrationHealth::new(&RegistrationDiagnostics::default(), "sim", 0);
        h.registration.registered(fre, tre, 5);
        h.report(0).remove(1)
    };
    assert_eq!(level(1.0e-3, 2.0e-3).level, Level::Ok);
    assert_eq!(level(1.01e-3, 2.0e-3).level, Level::Warn);
    assert_eq!(level(1.5e-3, 2.0e-3).level, Level::Warn);
    assert_eq!(level(1.51e-3, 2.0e-3).level, Level::Error);
    assert_eq!(level(0.5e-3, 2.01e-3).level, Level::Warn);
    assert_eq!(level(0.5e-3, 3.01e-3).level, Level::Error);
    assert_eq!(level(0.5e-3, f64::NAN).level, Level::Error);
    let s = level(0.5e-3, 1.2e-3);
    assert_eq!((value(&s, "FRE [m]"), value(&s, "predicted TRE [m]")), ("0.000500", "0.001200"));
    let mut h = RegistrationHealth::new(&RegistrationDiagnostics::default(), "sim", 0);
    assert_eq!(h.report(0)[1].level, Level::Warn);
    h.registration.refused("3 markers, 5 needed".into());
    let s = h.report(0).remove(1);
    assert_eq!(s.level, Level::Error);
    assert!(s.message.contains("3 markers, 5 needed"));
}

#[test]
fn segmentation_model_and_queue() {
    let d = SegmentationDiagnostics { queue_depth_warn: 2 };
    let loaded = ModelState::Loaded { path: "m.onnx".into() };
    let mut h = SegmentationHealth::new(&d, ModelState::Loading { path: "m.onnx".into() }, "cpu");
    assert_eq!(h.report(0)[0].level, Level::Warn);
    h.model(loaded);
    // One running and one waiting: OK; one running and two waiting: WARN (at the threshold).
    h.accepted();
    h.accepted();
    assert_eq!(h.report(0)[0].level, Level::Ok);
    h.accepted();
    let s = h.report(0).remove(0);
    assert_eq!((s.level, value(&s, "queue depth")), (Level::Warn, "2"));
    h.answered(true);
    assert_eq!(h.report(0)[0].level, Level::Ok);
    let missing = ModelState::Unavailable { path: "/nope.onnx".into(), reason: "/nope.onnx: no such file".into() };
    let s = SegmentationHealth::new(&d, missing, "cpu").report(0).remove(0);
    assert_eq!(s.level, Level::Error);
    assert_eq!(s.name, "needle_nav: vessel_segmentation service");
    assert!(s.message.contains("model not loaded") && s.message.contains("no such file"), "{}", s.message);
    assert_eq!(value(&s, "model loaded"), "false");
}

#[test]
fn planner_warns_on_failure_and_slowness() {
    let mut h = PlannerHealth::new(&PlannerDiagnostics { planning_time_warn_s: 10.0 }, "cpu");
    assert_eq!(h.report(0)[0].level, Level::Ok);
    h.started(0);
    assert_eq!(h.report(10 * S)[0].level, Level::Ok);
    assert_eq!(h.report(11 * S)[0].level, Level::Warn);
    h.finished(5 * S, Ok(()));
    assert_eq!(h.report(20 * S)[0].level, Level::Ok);
    h.started(20 * S);
    h.finished(21 * S, Err("no safe path".into()));
    let s = h.report(22 * S).remove(0);
    assert_eq!((s.level, value(&s, "last planning time [s]")), (Level::Warn, "1.00"));
}

#[test]
fn tracker_and_classifier_report_their_streams() {
    let mut t = TrackerHealth::new(&TrackerDiagnostics::default(), 100.0, "sim", 0);
    assert_eq!(t.report(0)[0].name, "needle_nav: marker_tracker output");
    let mut c = ClassifierHealth::new(&ClassifierDiagnostics::default(), "sim", 0);
    let r = c.report(0);
    assert_eq!((r[0].level, r[1].level), (Level::Ok, Level::Warn));
    c.classified(5, 3);
    assert_eq!(c.report(0)[1].level, Level::Ok);
    c.classified(8, 0);
    assert_eq!(c.report(0)[1].level, Level::Warn);
}

#[test]
fn thresholds_set_at_run_time_apply_to_what_was_measured() {
    // Newest stamp 0.3 s old: WARN with the defaults (0.1 / 0.5 s), OK once the warn age is 0.5 s,
    // ERROR once the error age is 0.2 s; the samples already received still count.
    let mut h = target_fed(100.0, 10 * S, 0);
    assert_eq!(inputs(&mut h, 10 * S + 300 * MS).level, Level::Warn);
    let mut d = TargetDiagnostics::default();
    d.inputs.max_age_warn_s = 0.5;
    d.inputs.max_age_error_s = 1.0;
    h.set_thresholds(&d, 100.0);
    let s = inputs(&mut h, 10 * S + 300 * MS);
    assert_eq!(s.level, Level::Ok, "{s:?}");
    d.inputs.max_age_warn_s = 0.1;
    d.inputs.max_age_error_s = 0.2;
    h.set_thresholds(&d, 100.0);
    assert_eq!(inputs(&mut h, 10 * S + 300 * MS).level, Level::Error);
}

#[test]
fn lifecycle_status_warns_while_inactive() {
    let active = super::lifecycle_status("needle_target", true);
    assert_eq!((active.level, active.message.as_str()), (Level::Ok, "OK"));
    assert_eq!(active.name, "needle_nav: needle_target lifecycle");
    let inactive = super::lifecycle_status("needle_target", false);
    assert_eq!(inactive.level, Level::Warn);
    assert!(inactive.message.contains("inactive"), "{}", inactive.message);
    assert_eq!(inactive.values, vec![("active".to_string(), "false".to_string())]);
}
