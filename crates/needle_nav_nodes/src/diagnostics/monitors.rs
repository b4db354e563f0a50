//! The building blocks the node health trackers share: a stream's rate and age, a target
//! stream's validity, a registration's quality.

use super::{seconds, Level, Status};
use needle_nav_core::diagnostics_thresholds::{RateThresholds, RegistrationThresholds, TargetThresholds};
use std::collections::{BTreeMap, VecDeque};

/// A stream of messages (tracker samples): rate over a sliding window of arrival times, age of
/// the newest stamp, markers that stopped appearing.
#[derive(Debug, Clone)]
pub struct RateMonitor {
    thresholds: RateThresholds,
    expected_hz: f64,
    started_ns: i64,
    arrivals: VecDeque<i64>,
    newest_stamp_ns: Option<i64>,
    last_arrival_ns: Option<i64>,
    received: u64,
    refused: u64,
    /// Arrival time each marker id was last seen at.
    marker_last_seen: BTreeMap<u32, i64>,
    markers_in_newest: usize,
}

impl RateMonitor {
    /// `started_ns`: when the node started listening, on its clock (the rate is graded only once a
    /// whole window has passed since, and "nothing received" is measured from it).
    pub fn new(thresholds: RateThresholds, expected_hz: f64, started_ns: i64) -> RateMonitor {
        RateMonitor {
            thresholds,
            expected_hz,
            started_ns,
            arrivals: VecDeque::new(),
            newest_stamp_ns: None,
            last_arrival_ns: None,
            received: 0,
            refused: 0,
            marker_last_seen: BTreeMap::new(),
            markers_in_newest: 0,
        }
    }

    /// New thresholds and expected rate (a parameter set at run time); the history is kept.
    pub fn set_thresholds(&mut self, thresholds: RateThresholds, expected_hz: f64) {
        (self.thresholds, self.expected_hz) = (thresholds, expected_hz);
    }

    fn arrived(&mut self, received_ns: i64) {
        self.received += 1;
        self.last_arrival_ns = Some(received_ns);
        self.arrivals.push_back(received_ns);
        self.forget_before(received_ns);
    }

    fn forget_before(&mut self, now_ns: i64) {
        let window_ns = (self.thresholds.window_s * 1e9) as i64;
        while self.arrivals.front().is_some_and(|&t| t <= now_ns - window_ns) {
            self.arrivals.pop_front();
        }
    }

    /// A message accepted: received at `received_ns`, stamped `stamp_ns`, holding `marker_ids`.
    /// Takes the ids as they come (no list built per message at tracker rate).
    pub fn record<I>(&mut self, received_ns: i64, stamp_ns: i64, marker_ids: I)
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<u32>,
    {
        self.arrived(received_ns);
        self.newest_stamp_ns = Some(self.newest_stamp_ns.map_or(stamp_ns, |s| s.max(stamp_ns)));
        self.markers_in_newest = 0;
        for id in marker_ids {
            self.marker_last_seen.insert(*std::borrow::Borrow::<u32>::borrow(&id), received_ns);
            self.markers_in_newest += 1;
        }
    }

    /// A message that arrived but was refused as a whole (it counts towards the rate, not the age).
    pub fn refused(&mut self, received_ns: i64) {
        self.arrived(received_ns);
        self.refused += 1;
    }

    /// Messages per second over the window ending at `now_ns`.
    pub fn rate_hz(&mut self, now_ns: i64) -> f64 {
        self.forget_before(now_ns);
        self.arrivals.len() as f64 / self.thresholds.window_s
    }

    /// Markers seen before but not in the last `max_age_warn_s` of messages.
    pub fn missing_markers(&self) -> Vec<u32> {
        let Some(last) = self.last_arrival_ns else { return Vec::new() };
        let limit_ns = (self.thresholds.max_age_warn_s * 1e9) as i64;
        self.marker_last_seen.iter().filter(|(_, &seen)| last - seen > limit_ns).map(|(&id, _)| id).collect()
    }

    /// Grades the stream into `status`; `noun`: what the messages are (`tracker samples`).
    pub fn grade(&mut self, now_ns: i64, noun: &str, status: &mut Status) {
        let t = self.thresholds;
        let rate = self.rate_hz(now_ns);
        status.value("expected rate [Hz]", self.expected_hz);
        status.value("rate [Hz]", format!("{rate:.1}"));
        status.value("rate window [s]", t.window_s);
        status.value("received", self.received);
        status.value("refused", self.refused);
        let age_s = match self.newest_stamp_ns {
            Some(stamp) => {
                let age = seconds(now_ns - stamp);
                status.value("data age [s]", format!("{age:.3}"));
                age
            }
            None => {
                let waited = seconds(now_ns - self.started_ns);
                status.value("data age [s]", "none received");
                if waited > t.max_age_error_s {
                    status.raise(Level::Error, format!("no {noun} received for {waited:.1} s"));
                } else if waited > t.max_age_warn_s {
                    status.raise(Level::Warn, format!("no {noun} received yet"));
                }
                f64::NAN
            }
        };
        if let Some(last) = self.last_arrival_ns {
            status.value("time since last message [s]", format!("{:.3}", seconds(now_ns - last)));
        }
        if age_s > t.max_age_error_s {
            status.raise(
                Level::Error,
                format!("newest of the {noun} is {age_s:.2} s old (error above {} s)", t.max_age_error_s),
            );
        } else if age_s > t.max_age_warn_s {
            status.raise(
                Level::Warn,
                format!("newest of the {noun} is {age_s:.2} s old (warn above {} s)", t.max_age_warn_s),
            );
        }
        // The rate is judged only over a whole window.
        if seconds(now_ns - self.started_ns) >= t.window_s {
            let fraction = rate / self.expected_hz;
            if fraction < t.min_rate_fraction_error {
                status.raise(
                    Level::Error,
                    format!(
                        "{noun} at {rate:.1} Hz, below {:.0} % of {} Hz",
                        t.min_rate_fraction_error * 100.0,
                        self.expected_hz
                    ),
                );
            } else if fraction < t.min_rate_fraction_warn {
                status.raise(
                    Level::Warn,
                    format!(
                        "{noun} at {rate:.1} Hz, below {:.0} % of {} Hz",
                        t.min_rate_fraction_warn * 100.0,
                        self.expected_hz
                    ),
                );
            }
        }
        if self.newest_stamp_ns.is_some() {
            let missing = self.missing_markers();
            status.value("markers in newest sample", self.markers_in_newest);
            status.value("markers missing", format!("{missing:?}"));
            if !missing.is_empty() {
                status.raise(Level::Warn, format!("markers {missing:?} not seen for more than {} s", t.max_age_warn_s));
            }
        }
    }
}

/// Published targets over a sliding window: the share invalid, by reason. Reasons that mean
/// waiting (starting, no registration or baseline yet) and breathing gating (deviation, outside the
/// gate: the gate working as meant) are reported but not graded; the others are faults.
#[derive(Debug, Clone)]
pub struct ValidityMonitor {
    thresholds: TargetThresholds,
    /// (time, None when valid or the reason's label).
    window: VecDeque<(i64, Option<&'static str>)>,
}

/// Invalid-target reasons that say the node is still waiting for its inputs.
pub const WAITING_REASONS: [&str; 3] = ["starting", "no_registration", "no_baseline"];
/// Invalid-target reasons that are the breathing gate doing its job.
pub const GATING_REASONS: [&str; 2] = ["deviation_too_large", "outside_breathing_gate"];

impl ValidityMonitor {
    pub fn new(thresholds: TargetThresholds) -> ValidityMonitor {
        ValidityMonitor { thresholds, window: VecDeque::new() }
    }

    /// New thresholds (a parameter set at run time); the window's targets are kept.
    pub fn set_thresholds(&mut self, thresholds: TargetThresholds) {
        self.thresholds = thresholds;
    }

    /// A target published at `t_ns`: valid (`None`) or invalid for `reason` (a label).
    pub fn record(&mut self, t_ns: i64, reason: Option<&'static str>) {
        self.window.push_back((t_ns, reason));
        self.forget_before(t_ns);
    }

    fn forget_before(&mut self, now_ns: i64) {
        let window_ns = (self.thresholds.window_s * 1e9) as i64;
        while self.window.front().is_some_and(|&(t, _)| t <= now_ns - window_ns) {
            self.window.pop_front();
        }
    }

    pub fn grade(&mut self, now_ns: i64, status: &mut Status) {
        self.forget_before(now_ns);
        let t = self.thresholds;
        let n = self.window.len();
        status.value("targets in window", n);
        status.value("share window [s]", t.window_s);
        if n == 0 {
            status.raise(Level::Stale, format!("no target published in the last {} s", t.window_s));
            return;
        }
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, r) in &self.window {
            if let Some(r) = r {
                *by_reason.entry(r).or_default() += 1;
            }
        }
        let invalid: usize = by_reason.values().sum();
        let share = |k: usize| k as f64 / n as f64;
        status.value("invalid share", format!("{:.3}", share(invalid)));
        for (reason, k) in &by_reason {
            status.value(&format!("invalid share: {reason}"), format!("{:.3}", share(*k)));
        }
        let faults: Vec<(&str, usize)> = by_reason
            .iter()
            .filter(|(r, _)| !WAITING_REASONS.contains(r) && !GATING_REASONS.contains(r))
            .map(|(r, k)| (*r, *k))
            .collect();
        let fault_share = share(faults.iter().map(|(_, k)| k).sum());
        status.value("fault share", format!("{fault_share:.3}"));
        let worst = faults.iter().max_by_key(|(_, k)| *k).map(|(r, _)| *r).unwrap_or("");
        if fault_share > t.invalid_share_error {
            status.raise(Level::Error, format!("{:.0} % of targets invalid, mostly {worst}", fault_share * 100.0));
        } else if fault_share > t.invalid_share_warn {
            status.raise(Level::Warn, format!("{:.0} % of targets invalid, mostly {worst}", fault_share * 100.0));
        }
        let waiting: usize = by_reason.iter().filter(|(r, _)| WAITING_REASONS.contains(r)).map(|(_, k)| k).sum();
        if waiting == n {
            let most = by_reason.iter().max_by_key(|(_, k)| **k).map(|(r, _)| *r).unwrap_or("");
            status.raise(Level::Warn, format!("no valid target yet: {most}"));
        }
    }
}

/// The newest registration and how good it is.
#[derive(Debug, Clone)]
pub struct RegistrationMonitor {
    thresholds: RegistrationThresholds,
    last: Option<Result<Registered, String>>,
}

#[derive(Debug, Clone, Copy)]
struct Registered {
    fre_m: f64,
    predicted_tre_m: f64,
    markers: usize,
}

impl RegistrationMonitor {
    pub fn new(thresholds: RegistrationThresholds) -> RegistrationMonitor {
        RegistrationMonitor { thresholds, last: None }
    }

    /// New thresholds (a parameter set at run time).
    pub fn set_thresholds(&mut self, thresholds: RegistrationThresholds) {
        self.thresholds = thresholds;
    }

    /// A registration published: its FRE, the predicted TRE at the lesion [m], markers used.
    pub fn registered(&mut self, fre_m: f64, predicted_tre_m: f64, markers: usize) {
        self.last = Some(Ok(Registered { fre_m, predicted_tre_m, markers }));
    }

    /// No registration could be made, for `reason`.
    pub fn refused(&mut self, reason: String) {
        self.last = Some(Err(reason));
    }

    pub fn grade(&self, status: &mut Status) {
        let t = self.thresholds;
        match &self.last {
            None => status.raise(Level::Warn, "no registration yet".into()),
            Some(Err(reason)) => {
                status.value("state", "refused");
                status.raise(Level::Error, format!("no usable registration: {reason}"));
            }
            Some(Ok(r)) => {
                status.value("state", "registered");
                status.value("FRE [m]", format!("{:.6}", r.fre_m));
                status.value("predicted TRE [m]", format!("{:.6}", r.predicted_tre_m));
                status.value("markers used", r.markers);
                let grade = |status: &mut Status, what: &str, v: f64, warn: f64, error: f64| {
                    if !v.is_finite() || v > error {
                        status.raise(Level::Error, format!("{what} {:.2} mm above {:.2} mm", v * 1e3, error * 1e3));
                    } else if v > warn {
                        status.raise(Level::Warn, format!("{what} {:.2} mm above {:.2} mm", v * 1e3, warn * 1e3));
                    }
                };
                grade(status, "FRE", r.fre_m, t.fre_warn_m, t.fre_error_m);
                grade(status, "predicted TRE", r.predicted_tre_m, t.predicted_tre_warn_m, t.predicted_tre_error_m);
            }
        }
    }
}
