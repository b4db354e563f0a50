//! The thresholds each node's `/diagnostics` statuses are graded with (the `diagnostics` section
//! of its parameter file). They live here, beside the other algorithm options, because two node
//! configurations that compose them (the classifier's, the planner's) are defined below the node
//! crate; the health trackers that use them are `needle_nav_nodes::diagnostics`.

use serde::{Deserialize, Serialize};

type Invalid = (&'static str, String);

fn check(ok: bool, key: &'static str, reason: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err((key, reason()))
    }
}

fn in_range(key: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), Invalid> {
    check(v.is_finite() && v >= lo && v <= hi, key, || format!("{v} is outside [{lo}, {hi}]"))
}

/// A stream of messages (tracker samples in, or out): its rate over a sliding window against
/// the expected rate, and the age of its newest message.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateThresholds {
    /// Sliding window the rate is measured over [s].
    pub window_s: f64,
    /// WARN below this fraction of the expected rate.
    pub min_rate_fraction_warn: f64,
    /// ERROR below this fraction of the expected rate.
    pub min_rate_fraction_error: f64,
    /// WARN when the newest message is older than this [s]; a marker not seen for this long is
    /// reported missing (WARN).
    pub max_age_warn_s: f64,
    /// ERROR when the newest message is older than this [s].
    pub max_age_error_s: f64,
}

impl Default for RateThresholds {
    fn default() -> Self {
        RateThresholds {
            window_s: 2.0,
            min_rate_fraction_warn: 0.8,
            min_rate_fraction_error: 0.5,
            max_age_warn_s: 0.1,
            max_age_error_s: 0.5,
        }
    }
}

impl RateThresholds {
    /// `prefix`: the keys' path (`diagnostics.inputs`), named in the error.
    fn validate(&self, keys: [&'static str; 4]) -> Result<(), Invalid> {
        in_range(keys[0], self.window_s, 0.1, 60.0)?;
        in_range(keys[1], self.min_rate_fraction_warn, 0.0, 1.0)?;
        in_range(keys[2], self.min_rate_fraction_error, 0.0, self.min_rate_fraction_warn)?;
        in_range(keys[3], self.max_age_warn_s, 0.0, 60.0)?;
        in_range(
            // The error age is checked against the warn age under the same key family.
            keys[3],
            self.max_age_error_s,
            self.max_age_warn_s,
            3600.0,
        )
        .map_err(|(_, r)| (age_error_key(keys[3]), format!("{r} (at least max_age_warn_s)")))
    }
}

fn age_error_key(warn_key: &'static str) -> &'static str {
    match warn_key {
        "diagnostics.output.max_age_warn_s" => "diagnostics.output.max_age_error_s",
        _ => "diagnostics.inputs.max_age_error_s",
    }
}

const INPUT_KEYS: [&str; 4] = [
    "diagnostics.inputs.window_s",
    "diagnostics.inputs.min_rate_fraction_warn",
    "diagnostics.inputs.min_rate_fraction_error",
    "diagnostics.inputs.max_age_warn_s",
];

const OUTPUT_KEYS: [&str; 4] = [
    "diagnostics.output.window_s",
    "diagnostics.output.min_rate_fraction_warn",
    "diagnostics.output.min_rate_fraction_error",
    "diagnostics.output.max_age_warn_s",
];

fn expected_rate(v: f64) -> Result<(), Invalid> {
    check(v.is_finite() && v > 0.0 && v <= 10_000.0, "diagnostics.expected_input_rate_hz", || {
        format!("{v} must be > 0 and <= 10000 Hz")
    })
}

/// marker_tracker: the samples it publishes (expected rate: its `rate_hz`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerDiagnostics {
    pub output: RateThresholds,
}

impl TrackerDiagnostics {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.output.validate(OUTPUT_KEYS)
    }
}

/// marker_classifier: the tracker samples it receives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierDiagnostics {
    /// Tracker rate the input rate is compared with [Hz].
    pub expected_input_rate_hz: f64,
    pub inputs: RateThresholds,
}

impl Default for ClassifierDiagnostics {
    fn default() -> Self {
        ClassifierDiagnostics { expected_input_rate_hz: 250.0, inputs: Default::default() }
    }
}

impl ClassifierDiagnostics {
    pub fn validate(&self) -> Result<(), Invalid> {
        expected_rate(self.expected_input_rate_hz)?;
        self.inputs.validate(INPUT_KEYS)
    }
}

/// How good a registration must be to report OK.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationThresholds {
    /// WARN above this fiducial registration error [m].
    pub fre_warn_m: f64,
    /// ERROR above this fiducial registration error [m].
    pub fre_error_m: f64,
    /// WARN above this predicted target registration error at the lesion [m].
    pub predicted_tre_warn_m: f64,
    /// ERROR above this predicted target registration error at the lesion [m].
    pub predicted_tre_error_m: f64,
}

impl Default for RegistrationThresholds {
    fn default() -> Self {
        RegistrationThresholds {
            fre_warn_m: 1.0e-3,
            fre_error_m: 1.5e-3,
            predicted_tre_warn_m: 2.0e-3,
            predicted_tre_error_m: 3.0e-3,
        }
    }
}

/// lesion_registration: its tracker input and the registration it publishes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationDiagnostics {
    /// Tracker rate the input rate is compared with [Hz].
    pub expected_input_rate_hz: f64,
    pub inputs: RateThresholds,
    pub registration: RegistrationThresholds,
}

impl Default for RegistrationDiagnostics {
    fn default() -> Self {
        RegistrationDiagnostics {
            expected_input_rate_hz: 250.0,
            inputs: Default::default(),
            registration: Default::default(),
        }
    }
}

impl RegistrationDiagnostics {
    pub fn validate(&self) -> Result<(), Invalid> {
        expected_rate(self.expected_input_rate_hz)?;
        self.inputs.validate(INPUT_KEYS)?;
        let r = &self.registration;
        in_range("diagnostics.registration.fre_warn_m", r.fre_warn_m, 0.0, 0.05)?;
        in_range("diagnostics.registration.fre_error_m", r.fre_error_m, r.fre_warn_m, 0.05)?;
        in_range("diagnostics.registration.predicted_tre_warn_m", r.predicted_tre_warn_m, 0.0, 0.05)?;
        in_range(
            "diagnostics.registration.predicted_tre_error_m",
            r.predicted_tre_error_m,
            r.predicted_tre_warn_m,
            0.05,
        )
    }
}

/// What share of the published targets may be invalid, over a sliding window. Targets refused
/// while the node starts or records its baseline do not count: that is waiting, not a fault.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetThresholds {
    /// Sliding window the share is measured over [s].
    pub window_s: f64,
    /// WARN above this share of invalid targets.
    pub invalid_share_warn: f64,
    /// ERROR above this share of invalid targets.
    pub invalid_share_error: f64,
}

impl Default for TargetThresholds {
    fn default() -> Self {
        TargetThresholds { window_s: 5.0, invalid_share_warn: 0.2, invalid_share_error: 0.5 }
    }
}

/// needle_target: its tracker input (expected rate: its `tracker_rate_hz`) and its targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TargetDiagnostics {
    pub inputs: RateThresholds,
    pub targets: TargetThresholds,
}

impl TargetDiagnostics {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.inputs.validate(INPUT_KEYS)?;
        let t = &self.targets;
        in_range("diagnostics.targets.window_s", t.window_s, 0.1, 600.0)?;
        in_range("diagnostics.targets.invalid_share_warn", t.invalid_share_warn, 0.0, 1.0)?;
        in_range("diagnostics.targets.invalid_share_error", t.invalid_share_error, t.invalid_share_warn, 1.0)
    }
}

/// vessel_segmentation: the request queue (a missing model is always ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentationDiagnostics {
    /// WARN when this many requests or more wait behind the running one.
    pub queue_depth_warn: u32,
}

impl Default for SegmentationDiagnostics {
    fn default() -> Self {
        SegmentationDiagnostics { queue_depth_warn: 2 }
    }
}

impl SegmentationDiagnostics {
    pub fn validate(&self) -> Result<(), Invalid> {
        check((1..=64).contains(&self.queue_depth_warn), "diagnostics.queue_depth_warn", || {
            format!("{} is outside 1..=64", self.queue_depth_warn)
        })
    }
}

/// trajectory_planner: how long planning takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerDiagnostics {
    /// WARN when the last plan took longer than this [s].
    pub planning_time_warn_s: f64,
}

impl Default for PlannerDiagnostics {
    fn default() -> Self {
        PlannerDiagnostics { planning_time_warn_s: 120.0 }
    }
}

impl PlannerDiagnostics {
    pub fn validate(&self) -> Result<(), Invalid> {
        in_range("diagnostics.planning_time_warn_s", self.planning_time_warn_s, 0.0, 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_orders_name_the_key() {
        TrackerDiagnostics::default().validate().unwrap();
        ClassifierDiagnostics::default().validate().unwrap();
        RegistrationDiagnostics::default().validate().unwrap();
        TargetDiagnostics::default().validate().unwrap();
        SegmentationDiagnostics::default().validate().unwrap();
        PlannerDiagnostics::default().validate().unwrap();
        let mut t = TargetDiagnostics::default();
        t.inputs.max_age_error_s = 0.05;
        assert_eq!(t.validate().unwrap_err().0, "diagnostics.inputs.max_age_error_s");
        t = TargetDiagnostics::default();
        t.inputs.min_rate_fraction_error = 0.9;
        assert_eq!(t.validate().unwrap_err().0, "diagnostics.inputs.min_rate_fraction_error");
        let mut o = TrackerDiagnostics::default();
        o.output.max_age_error_s = 0.0;
        assert_eq!(o.validate().unwrap_err().0, "diagnostics.output.max_age_error_s");
        let mut r = RegistrationDiagnostics::default();
        r.registration.fre_error_m = 0.5e-3;
        assert_eq!(r.validate().unwrap_err().0, "diagnostics.registration.fre_error_m");
    }
}
