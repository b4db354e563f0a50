//! Checks every tracker sample before any node uses it. One malformed message (thousands of
//! markers, duplicate ids, a stamp in 2100, coordinates of 1e200, every marker shifted 2 cm for a
//! moment) used to enter the classification windows and the registration, reset the marker
//! classes and cost 10-24 s of guidance. A sample that fails a check is refused on its own: the
//! node answers it as invalid input and keeps its windows, registration and baseline.
//!
//! A single marker that jumps further than a skin marker can move (an id swap, a reflection) is
//! dropped from that sample as if occluded; when most markers jump at once the whole sample is
//! refused. A jump that persists (`accept_move_after_s`) is taken as the new position: the marker
//! or the patient really moved, and refusing for ever would be as wrong as accepting at once.

use super::tracking::TrackerSample;
use nalgebra::Point3;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Limits of what a tracker sample may contain. Part of each consuming node's configuration
/// (`sample_checks.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleChecks {
    /// More markers than this in one sample are refused.
    pub max_markers: u32,
    /// A coordinate beyond this distance from the tracker's origin is outside any tracker's
    /// working volume [m].
    pub max_coordinate_m: f64,
    /// A sample stamped further than this from the node's clock is refused [s]; 0 disables the check.
    pub max_clock_offset_s: f64,
    /// Fastest plausible motion of a skin marker between two samples [m/s] ...
    pub max_marker_speed_m_s: f64,
    /// ... plus this much for localisation noise [m].
    pub jump_tolerance_m: f64,
    /// A jump that persists this long (consistent positions) is accepted as the new position [s].
    pub accept_move_after_s: f64,
}

impl Default for SampleChecks {
    fn default() -> Self {
        SampleChecks {
            max_markers: 64,
            max_coordinate_m: 10.0,
            max_clock_offset_s: 2.0,
            // Breathing moves skin markers at up to a few cm/s, a cough at up to about 0.1 m/s.
            max_marker_speed_m_s: 0.25,
            jump_tolerance_m: 2.0e-3,
            accept_move_after_s: 2.0,
        }
    }
}

impl SampleChecks {
    /// The configuration rules, as (key, reason) for the node's configuration error.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let check = |ok: bool, key: &'static str, reason: String| if ok { Ok(()) } else { Err((key, reason)) };
        check(
            (1..=10_000).contains(&self.max_markers),
            "sample_checks.max_markers",
            format!("{} is outside 1..=10000", self.max_markers),
        )?;
        let range = |key: &'static str, v: f64, lo: f64, hi: f64| {
            check(v.is_finite() && v >= lo && v <= hi, key, format!("{v} is outside [{lo}, {hi}]"))
        };
        range("sample_checks.max_coordinate_m", self.max_coordinate_m, 0.01, 1000.0)?;
        range("sample_checks.max_clock_offset_s", self.max_clock_offset_s, 0.0, 3600.0)?;
        range("sample_checks.max_marker_speed_m_s", self.max_marker_speed_m_s, 0.001, 100.0)?;
        range("sample_checks.jump_tolerance_m", self.jump_tolerance_m, 0.0, 1.0)?;
        range("sample_checks.accept_move_after_s", self.accept_move_after_s, 0.0, 600.0)
    }
}

/// Why a whole sample was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleRejection {
    #[error("{count} markers in one sample (limit {limit})")]
    TooManyMarkers { count: usize, limit: u32 },
    #[error("duplicate marker ids {0:?}")]
    DuplicateIds(Vec<u32>),
    #[error("non-finite position for markers {0:?}")]
    NonFinite(Vec<u32>),
    #[error("marker {id} at {distance_m:.3e} m from the tracker origin (limit {limit_m} m)")]
    OutOfRange { id: u32, distance_m: f64, limit_m: f64 },
    #[error("sample stamped {offset_s:+.3} s from the node's clock (limit {limit_s} s)")]
    StampOffClock { offset_s: f64, limit_s: f64 },
    #[error("sample stamp is not after the previous sample's ({behind_s:.6} s behind)")]
    NotNewer { behind_s: f64 },
    #[error(
        "{moved} of {compared} markers jumped at once (largest {largest_m:.4} m, \
         a skin marker moves at most {allowed_m:.4} m in that time)"
    )]
    WholeSampleJump { moved: usize, compared: usize, largest_m: f64, allowed_m: f64 },
}

/// A sample that passed, possibly with markers dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSample {
    /// The sample; markers that jumped are marked not visible.
    pub sample: TrackerSample,
    /// Markers dropped from this sample because they jumped, with the jump [m].
    pub dropped: Vec<(u32, f64)>,
    /// Markers whose persisting jump was accepted as their new position in this sample.
    pub moved: Vec<u32>,
    /// Time went back with the clock (a replay restarted): the node's history is void.
    pub time_restarted: bool,
}

#[derive(Debug, Clone)]
struct Track {
    position: Point3<f64>,
    stamp_ns: i64,
    /// A jump not yet accepted: (first seen, latest position, latest stamp).
    pending: Option<(i64, Point3<f64>, i64)>,
}

/// Checks samples one after another; keeps each marker's last accepted position.
#[derive(Debug, Clone)]
pub struct SampleValidator {
    checks: SampleChecks,
    last_stamp_ns: Option<i64>,
    tracks: HashMap<u32, Track>,
}

impl SampleValidator {
    pub fn new(checks: SampleChecks) -> SampleValidator {
        SampleValidator { checks, last_stamp_ns: None, tracks: HashMap::new() }
    }

    pub fn checks(&self) -> &SampleChecks {
        &self.checks
    }

    /// New limits from the next sample on (a parameter set at run time); the markers' last
    /// accepted positions are kept, so a running node does not restart its jump checks.
    pub fn set_checks(&mut self, checks: SampleChecks) {
        self.checks = checks;
    }

    /// Checks `sample`; `now_ns` is the node's clock (`None` or <= 0: unknown, e.g. simulated
    /// time before the first /clock message, and the clock check is skipped).
    pub fn check(&mut self, sample: &TrackerSample, now_ns: Option<i64>) -> Result<CheckedSample, SampleRejection> {
        let c = &self.checks;
        if sample.markers.len() > c.max_markers as usize {
            return Err(SampleRejection::TooManyMarkers { count: sample.markers.len(), limit: c.max_markers });
        }
        let mut ids: Vec<u32> = sample.markers.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let mut duplicates: Vec<u32> = ids.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
        duplicates.dedup();
        if !duplicates.is_empty() {
            return Err(SampleRejection::DuplicateIds(duplicates));
        }
        let malformed = sample.malformed_ids();
        if !malformed.is_empty() {
            return Err(SampleRejection::NonFinite(malformed));
        }
        if let Some((id, distance_m)) =
            sample.usable().map(|m| (m.id, m.position.coords.norm())).find(|(_, d)| !(*d <= c.max_coordinate_m))
        {
            return Err(SampleRejection::OutOfRange { id, distance_m, limit_m: c.max_coordinate_m });
        }
        let clock = now_ns.filter(|n| *n > 0 && c.max_clock_offset_s > 0.0);
        if let Some(now) = clock {
            let offset_s = (sample.stamp_ns as f64 - now as f64) * 1e-9;
            if offset_s.abs() > c.max_clock_offset_s {
                return Err(SampleRejection::StampOffClock { offset_s, limit_s: c.max_clock_offset_s });
            }
        }
        let mut time_restarted = false;
        if let Some(last) = self.last_stamp_ns {
            if sample.stamp_ns <= last {
                // Behind the previous sample: a duplicate or reordered message, unless the clock went
                // back too (a replay restarted), which the clock check above has just vouched for.
                let clock_went_back = clock.is_some_and(|now| (last as f64 - now as f64) * 1e-9 > c.max_clock_offset_s);
                if !clock_went_back {
                    return Err(SampleRejection::NotNewer { behind_s: (last - sample.stamp_ns) as f64 * 1e-9 });
                }
                self.tracks.clear();
                time_restarted = true;
            }
        }

        // Jumps. A marker that keeps following the path of an earlier jump is still jumped (its
        // allowance against the old position must not grow while we keep seeing it elsewhere);
        // otherwise it is compared with its last accepted position, with an allowance that grows
        // with the time since (an occluded marker may come back where breathing took it).
        let (tolerance, speed) = (c.jump_tolerance_m, c.max_marker_speed_m_s);
        let allowed = move |dt_ns: i64| tolerance + speed * (dt_ns.max(0) as f64 * 1e-9);
        let accept_after_ns = (c.accept_move_after_s * 1e9) as i64;
        let stamp = sample.stamp_ns;
        let mut jumped: Vec<(u32, f64, f64)> = Vec::new(); // (id, jump, allowed)
        let mut moved = Vec::new();
        let mut compared = 0;
        for m in sample.usable() {
            let Some(t) = self.tracks.get_mut(&m.id) else { continue };
            compared += 1;
            let (d, a) = ((m.position - t.position).norm(), allowed(stamp - t.stamp_ns));
            let since = match t.pending {
                Some((since, p, at)) if (m.position - p).norm() <= allowed(stamp - at) => Some(since),
                _ if d > a => Some(stamp),
                _ => None,
            };
            if let Some(since) = since {
                t.pending = Some((since, m.position, stamp));
                if stamp - since >= accept_after_ns {
                    moved.push(m.id);
                } else {
                    jumped.push((m.id, d, a));
                }
            }
        }
        let unaccepted: Vec<&(u32, f64, f64)> = jumped.iter().collect();
        if unaccepted.len() >= 2 && 2 * unaccepted.len() > compared {
            let largest = unaccepted.iter().fold((0.0f64, 0.0f64), |a, j| if j.1 > a.0 { (j.1, j.2) } else { a });
            return Err(SampleRejection::WholeSampleJump {
                moved: unaccepted.len(),
                compared,
                largest_m: largest.0,
                allowed_m: largest.1,
            });
        }

        let mut out = sample.clone();
        let mut dropped = Vec::new();
        for m in out.markers.iter_mut().filter(|m| m.visible) {
            if let Some(j) = unaccepted.iter().find(|j| j.0 == m.id) {
                m.visible = false;
                dropped.push((m.id, j.1));
                continue;
            }
            self.tracks.insert(m.id, Track { position: m.position, stamp_ns: sample.stamp_ns, pending: None });
        }
        self.last_stamp_ns = Some(sample.stamp_ns);
        Ok(CheckedSample { sample: out, dropped, moved, time_restarted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::MarkerObservation;

    const PERIOD_NS: i64 = 4_000_000; // 250 Hz

    fn marker(id: u32, x: f64) -> MarkerObservation {
        MarkerObservation { id, position: Point3::new(x, 0.1 * id as f64, 0.5), visible: true, quality: 1e-4 }
    }

    /// Twelve markers 5 cm apart, breathing slowly along x (1 cm amplitude, 4 s period).
    fn sample(k: i64) -> TrackerSample {
        let t = k as f64 * PERIOD_NS as f64 * 1e-9;
        let breath = 0.01 * (std::f64::consts::TAU * t / 4.0).sin();
        TrackerSample {
            sequence: k as u64,
            stamp_ns: 1_000_000_000_000 + k * PERIOD_NS,
            markers: (1..=12).map(|id| marker(id, 0.05 * id as f64 + if id > 6 { breath } else { 0.0 })).collect(),
        }
    }

    fn now(k: i64) -> Option<i64> {
        Some(sample(k).stamp_ns + 8_000_000)
    }

    #[test]
    fn breathing_samples_pass_untouched() {
        let mut v = SampleValidator::new(SampleChecks::default());
        for k in 0..5000 {
            let c = v.check(&sample(k), now(k)).expect("a plausible sample");
            assert_eq!(c.sample, sample(k));
            assert!(c.dropped.is_empty() && c.moved.is_empty() && !c.time_restarted);
        }
    }

    #[test]
    fn each_kind_of_malformed_sample_is_refused_and_leaves_the_state() {
        let mut v = SampleValidator::new(SampleChecks::default());
        for k in 0..100 {
            v.check(&sample(k), now(k)).unwrap();
        }
        let mut huge = sample(100);
        huge.markers = (0..10_000).map(|id| marker(id, 0.0)).collect();
        assert!(matches!(v.check(&huge, now(100)), Err(SampleRejection::TooManyMarkers { count: 10_000, limit: 64 })));
        let mut dup = sample(100);
        dup.markers[3].id = 3;
        dup.markers[3].position.x += 0.05;
        assert_eq!(v.check(&dup, now(100)), Err(SampleRejection::DuplicateIds(vec![3])));
        let mut nan = sample(100);
        nan.markers[0].position.y = f64::NAN;
        assert_eq!(v.check(&nan, now(100)), Err(SampleRejection::NonFinite(vec![1])));
        let mut far = sample(100);
        far.markers[5].position.z = 1e200;
        assert!(matches!(v.check(&far, now(100)), Err(SampleRejection::OutOfRange { id: 6, .. })));
        let mut future = sample(100);
        future.stamp_ns = 4_102_444_800_000_000_000; // 2100-01-01
        assert!(matches!(v.check(&future, now(100)), Err(SampleRejection::StampOffClock { .. })));
        let mut past = sample(100);
        past.stamp_ns = 1_000; // 1970
        assert!(matches!(v.check(&past, now(100)), Err(SampleRejection::StampOffClock { .. })));
        assert!(matches!(v.check(&sample(99), now(100)), Err(SampleRejection::NotNewer { .. })));
        let mut shifted = sample(100);
        for m in &mut shifted.markers {
            m.position.x += 0.02;
        }
        assert!(matches!(
            v.check(&shifted, now(100)),
            Err(SampleRejection::WholeSampleJump { moved: 12, compared: 12, .. })
        ));
        // None of them changed what the next good sample is compared with.
        let c = v.check(&sample(100), now(100)).unwrap();
        assert_eq!(c.sample, sample(100));
        assert!(c.dropped.is_empty());
    }

    #[test]
    fn a_swapped_pair_is_dropped_from_the_sample_not_the_whole_sample() {
        let mut v = SampleValidator::new(SampleChecks::default());
        for k in 0..100 {
            v.check(&sample(k), now(k)).unwrap();
        }
        let mut swapped = sample(100);
        let (a, b) = (swapped.markers[1].position, swapped.markers[2].position);
        swapped.markers[1].position = b;
        swapped.markers[2].position = a;
        let c = v.check(&swapped, now(100)).unwrap();
        assert_eq!(c.dropped.iter().map(|d| d.0).collect::<Vec<_>>(), vec![2, 3]);
        assert!((c.dropped[0].1 - (a - b).norm()).abs() < 1e-12);
        assert_eq!(c.sample.usable().count(), 10);
        assert!(!c.sample.markers[1].visible && !c.sample.markers[2].visible);
        assert_eq!(v.check(&sample(101), now(101)).unwrap().sample, sample(101));
    }

    #[test]
    fn a_lasting_shift_is_refused_for_accept_move_after_s_then_accepted() {
        let checks = SampleChecks::default();
        let mut v = SampleValidator::new(checks.clone());
        for k in 0..100 {
            v.check(&sample(k), now(k)).unwrap();
        }
        let shifted = |k: i64| {
            let mut s = sample(k);
            for m in &mut s.markers {
                m.position.y += 0.02;
            }
            s
        };
        let periods = (checks.accept_move_after_s * 1e9) as i64 / PERIOD_NS;
        // A one-second shift (the hostile test's) is refused throughout and guidance resumes at once.
        for k in 100..100 + 250 {
            assert!(matches!(v.check(&shifted(k), now(k)), Err(SampleRejection::WholeSampleJump { .. })), "{k}");
        }
        assert_eq!(v.check(&sample(350), now(350)).unwrap().sample, sample(350));
        // A lasting one is accepted after accept_move_after_s, as each marker's new position.
        for k in 351..351 + periods {
            assert!(v.check(&shifted(k), now(k)).is_err(), "{k}");
        }
        let c = v.check(&shifted(351 + periods), now(351 + periods)).unwrap();
        assert_eq!(c.moved.len(), 12);
        assert_eq!(c.sample, shifted(351 + periods));
        assert!(v.check(&shifted(352 + periods), now(352 + periods)).unwrap().moved.is_empty());
    }

    #[test]
    fn an_occluded_marker_may_come_back_where_breathing_took_it() {
        let mut v = SampleValidator::new(SampleChecks::default());
        for k in 0..100 {
            v.check(&sample(k), now(k)).unwrap();
        }
        // Marker 9 hidden for a second (250 samples), while breathing moved it up to 2 cm.
        for k in 100..600 {
            let mut s = sample(k);
            if k < 350 {
                s.markers[8].visible = false;
            }
            let c = v.check(&s, now(k)).unwrap();
            assert!(c.dropped.is_empty(), "{k}: {:?}", c.dropped);
        }
    }

    #[test]
    fn time_going_back_with_the_clock_restarts_and_without_it_is_refused() {
        let mut v = SampleValidator::new(SampleChecks::default());
        for k in 1000..1100 {
            v.check(&sample(k), now(k)).unwrap();
        }
        // A replay restarted: the clock went back with the stamps.
        let c = v.check(&sample(0), now(0)).unwrap();
        assert!(c.time_restarted);
        // Without a clock, going back cannot be told from a reordered message.
        let mut v = SampleValidator::new(SampleChecks::default());
        for k in 1000..1100 {
            v.check(&sample(k), None).unwrap();
        }
        assert!(matches!(v.check(&sample(0), None), Err(SampleRejection::NotNewer { .. })));
        assert!(matches!(v.check(&sample(1099), None), Err(SampleRejection::NotNewer { behind_s }) if behind_s == 0.0));
    }

    #[test]
    fn configuration_limits_are_checked() {
        assert!(SampleChecks::default().validate().is_ok());
        let bad = SampleChecks { max_marker_speed_m_s: f64::NAN, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().0, "sample_checks.max_marker_speed_m_s");
        let bad = SampleChecks { max_markers: 0, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().0, "sample_checks.max_markers");
    }
}
