//! The six nodes. Each `start` loads and validates its configuration, creates its
//! endpoints with the QoS from [`crate::interfaces`], and spawns its tasks.

mod lesion_registration;
mod marker_classifier;
mod marker_tracker;
mod needle_target;
mod trajectory_planner;
mod vessel_segmentation;

use super::runtime::{NodeContext, NodeError};
use crate::interfaces::NodeKind;

pub fn start(kind: NodeKind, node: &mut r2r::Node, cx: &NodeContext) -> Result<(), NodeError> {
    match kind {
        NodeKind::MarkerTracker => marker_tracker::start(node, cx),
        NodeKind::MarkerClassifier => marker_classifier::start(node, cx),
        NodeKind::LesionRegistration => lesion_registration::start(node, cx),
        NodeKind::NeedleTarget => needle_target::start(node, cx),
        NodeKind::VesselSegmentation => vessel_segmentation::start(node, cx),
        NodeKind::TrajectoryPlanner => trajectory_planner::start(node, cx),
    }
}

/// Locks node state shared between tasks; a task that panicked while holding it must not take
/// the node down with it, so a poisoned lock is recovered.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates a publisher for an endpoint with its QoS.
pub(crate) fn publisher<T: r2r::WrappedTypesupport>(
    node: &mut r2r::Node,
    ep: crate::interfaces::Endpoint,
) -> Result<r2r::Publisher<T>, NodeError> {
    use super::runtime::RosContext;
    node.create_publisher::<T>(ep.name, super::qos::profile(ep.qos)).ros(format!("cannot advertise {}", ep.name))
}

/// Subscribes to an endpoint with its QoS.
pub(crate) fn subscription<T: r2r::WrappedTypesupport + 'static>(
    node: &mut r2r::Node,
    ep: crate::interfaces::Endpoint,
) -> Result<impl futures::Stream<Item = T> + Unpin, NodeError> {
    use super::runtime::RosContext;
    node.subscribe::<T>(ep.name, super::qos::profile(ep.qos)).ros(format!("cannot subscribe to {}", ep.name))
}

/// Loads the node's configuration and logs where it came from.
pub(crate) fn config<T>(node: &r2r::Node, name: &str) -> Result<T, NodeError>
where
    T: serde::de::DeserializeOwned + crate::config::Validate + std::fmt::Debug,
{
    let (cfg, source) = super::params::load_config::<T>(node, name)?;
    tracing::info!(node = name, "configuration from {source} and ROS parameters: {cfg:?}");
    Ok(cfg)
}

/// Logs a failed publish once per kind of failure instead of at tracker rate.
pub(crate) fn log_publish_error(node: &str, topic: &str, result: r2r::Result<()>, logged: &mut bool) {
    match result {
        Ok(()) => *logged = false,
        Err(e) if !*logged => {
            tracing::warn!(node, topic, "publish failed: {e}");
            *logged = true;
        }
        Err(_) => {}
    }
}
