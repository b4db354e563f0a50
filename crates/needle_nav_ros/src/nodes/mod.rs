//! The nodes. Each `start` loads and validates its configuration, creates its
//! endpoints with the QoS from [`needle_nav_core::interfaces`], and spawns its tasks.

mod igtl_bridge;
mod lesion_registration;
mod marker_classifier;
mod marker_tracker;
mod needle_target;
mod trajectory_planner;
mod vessel_segmentation;

pub(crate) use crate::context::{lock, log_publish_error, publisher, subscription};
use crate::context::{NodeContext, NodeError};
pub(crate) use crate::parameter_server::config;
use needle_nav_core::interfaces::NodeKind;

pub fn start(kind: NodeKind, node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    match kind {
        NodeKind::MarkerTracker => marker_tracker::start(node, cx),
        NodeKind::MarkerClassifier => marker_classifier::start(node, cx),
        NodeKind::LesionRegistration => lesion_registration::start(node, cx),
        NodeKind::NeedleTarget => needle_target::start(node, cx),
        NodeKind::VesselSegmentation => vessel_segmentation::start(node, cx),
        NodeKind::TrajectoryPlanner => trajectory_planner::start(node, cx),
        NodeKind::IgtlBridge => igtl_bridge::start(node, cx),
    }
}

/// Runs each tracker sample through the node's [`SampleValidator`] and logs what it refused or
/// dropped, at most once a second per kind (a flood of bad messages must not flood the log).
pub(crate) struct SampleGate {
    node: &'static str,
    validator: needle_nav_core::sample_validation::SampleValidator,
    last_log: std::collections::HashMap<std::mem::Discriminant<SampleEvent>, std::time::Instant>,
    /// Samples refused since the last log line of that kind.
    refused_since_log: u64,
}

#[derive(Debug)]
enum SampleEvent {
    Refused,
    Dropped,
    Moved,
}

impl SampleGate {
    pub(crate) fn new(node: &'static str, checks: needle_nav_core::sample_validation::SampleChecks) -> SampleGate {
        SampleGate {
            node,
            validator: needle_nav_core::sample_validation::SampleValidator::new(checks),
            last_log: Default::default(),
            refused_since_log: 0,
        }
    }

    /// New limits from the next sample on (parameters set at run time).
    pub(crate) fn set_checks(&mut self, checks: needle_nav_core::sample_validation::SampleChecks) {
        self.validator.set_checks(checks);
    }

    fn due(&mut self, event: SampleEvent) -> bool {
        let now = std::time::Instant::now();
        let key = std::mem::discriminant(&event);
        match self.last_log.get(&key) {
            Some(t) if now.duration_since(*t) < std::time::Duration::from_secs(1) => false,
            _ => {
                self.last_log.insert(key, now);
                true
            }
        }
    }

    /// The checked sample, or why the whole sample is refused.
    pub(crate) fn check(
        &mut self,
        sample: &needle_nav_core::tracking::TrackerSample,
        now_ns: i64,
    ) -> Result<needle_nav_core::sample_validation::CheckedSample, needle_nav_core::sample_validation::SampleRejection>
    {
        match self.validator.check(sample, Some(now_ns)) {
            Ok(c) => {
                if !c.dropped.is_empty() && self.due(SampleEvent::Dropped) {
                    tracing::warn!(
                        node = self.node,
                        "markers dropped from a sample, they jumped (id, m): {:?}",
                        c.dropped
                    );
                }
                if !c.moved.is_empty() && self.due(SampleEvent::Moved) {
                    tracing::warn!(
                        node = self.node,
                        "markers {:?} stayed where they jumped to: taken as their new positions",
                        c.moved
                    );
                }
                if c.time_restarted {
                    tracing::info!(node = self.node, "tracker time went back with the clock: history restarted");
                }
                Ok(c)
            }
            Err(e) => {
                self.refused_since_log += 1;
                if self.due(SampleEvent::Refused) {
                    tracing::warn!(
                        node = self.node,
                        "tracker sample refused: {e} ({} refused since the last such message)",
                        self.refused_since_log
                    );
                    self.refused_since_log = 0;
                }
                Err(e)
            }
        }
    }
}
