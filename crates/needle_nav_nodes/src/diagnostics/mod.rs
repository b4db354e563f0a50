//! Health of each node as `/diagnostics` reports it, without ROS types.
//!
//! Each node feeds a tracker of its own ([`TrackerHealth`], [`ClassifierHealth`],
//! [`RegistrationHealth`], [`TargetHealth`], [`SegmentationHealth`], [`PlannerHealth`]) with what
//! happens (samples with their stamps, outputs, registrations, requests) and the times on its own
//! clock; the ROS shell asks it for a [`Status`] list once a second and publishes it as a
//! `diagnostic_msgs/DiagnosticArray`. No wall clock is read here, so every level can be worked out
//! by hand from the events and the thresholds (`needle_nav_core::diagnostics_thresholds`).

mod bridge;
mod monitors;
mod nodes;

pub use bridge::BridgeHealth;

pub use monitors::{RateMonitor, RegistrationMonitor, ValidityMonitor};
pub use nodes::{
    reason_label, BaselineState, ClassifierHealth, ModelState, PlannerHealth, RegistrationHealth, SegmentationHealth,
    TargetHealth, TrackerHealth,
};

/// Prefix of every status name, so that aggregators can group needle_nav's statuses.
pub const NAME_PREFIX: &str = "needle_nav";

/// A status level, with the byte values `diagnostic_msgs/DiagnosticStatus` defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warn = 1,
    Error = 2,
    /// No data to judge by (nothing received yet, or the data stopped).
    Stale = 3,
}

impl Level {
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// One `DiagnosticStatus`: values are SI with the unit in the key (`data age [s]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub level: Level,
    /// `needle_nav: <node> <what>`
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<(String, String)>,
}

impl Status {
    fn new(node: &str, what: &str, hardware_id: &str) -> Status {
        Status {
            level: Level::Ok,
            name: format!("{NAME_PREFIX}: {node} {what}"),
            message: String::new(),
            hardware_id: hardware_id.to_string(),
            values: Vec::new(),
        }
    }

    fn value(&mut self, key: &str, value: impl std::fmt::Display) {
        self.values.push((key.to_string(), value.to_string()));
    }

    /// Raises the level to `level` (never lowers it) and adds `why` to the message.
    fn raise(&mut self, level: Level, why: String) {
        self.level = self.level.max(level);
        if !why.is_empty() {
            if !self.message.is_empty() {
                self.message.push_str("; ");
            }
            self.message.push_str(&why);
        }
    }

    /// The message, "OK" when nothing was said.
    fn finish(mut self) -> Status {
        if self.message.is_empty() {
            self.message = "OK".into();
        }
        self
    }
}

/// What every node's health tracker answers once a second.
pub trait HealthReport {
    /// The node's statuses at `now_ns` on its clock.
    fn report(&mut self, now_ns: i64) -> Vec<Status>;
}

/// The node's lifecycle state as a status: a configured node that is not active publishes nothing
/// (its outputs are held), which a supervisor should see beside its health.
pub fn lifecycle_status(node: &str, active: bool) -> Status {
    let mut s = Status::new(node, "lifecycle", node);
    s.value("active", active);
    if !active {
        s.raise(Level::Warn, "inactive: outputs are held until the node is activated".into());
    }
    s.finish()
}

fn seconds(ns: i64) -> f64 {
    ns as f64 * 1e-9
}

#[cfg(test)]
mod tests;
