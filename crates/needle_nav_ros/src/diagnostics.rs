//! `/diagnostics` for every node: once a second, the node's health tracker
//! (`needle_nav_nodes::diagnostics`) is asked for its statuses on the node's clock, and they are
//! published as one `diagnostic_msgs/DiagnosticArray`, as `diagnostic_updater` does.

use crate::context::{lock, publisher, NodeContext, NodeError};
use crate::parameter_server::ConfigUpdates;
use needle_nav_nodes::diagnostics::{HealthReport, Status};
use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the statuses are published (diagnostic_updater's default period).
const PERIOD: Duration = Duration::from_secs(1);

fn status_msg(s: Status) -> DiagnosticStatus {
    DiagnosticStatus {
        level: s.level.byte(),
        name: s.name,
        message: s.message,
        hardware_id: s.hardware_id,
        values: s.values.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
    }
}

/// Publishes `health`'s statuses on `/diagnostics` every second until the node stops. Thresholds
/// set at run time (`diagnostics.*`) reach `health` through `set_thresholds` before the next report.
pub(crate) fn start<H, T>(
    node: &mut r2r::Node,
    cx: &NodeContext,
    health: Arc<Mutex<H>>,
    mut parameters: ConfigUpdates<T>,
    set_thresholds: impl Fn(&mut H, &T) + Send + 'static,
) -> Result<(), NodeError>
where
    H: HealthReport + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    // Health is reported in every lifecycle state of the session: a supervisor needs to see an
    // inactive node too, so this output is not held back while inactive.
    let publisher = publisher::<DiagnosticArray>(node, cx, needle_nav_core::interfaces::DIAGNOSTICS)?;
    let task_cx = cx.clone();
    cx.spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut publish_failed = false;
        loop {
            tick.tick().await;
            let now = task_cx.now_ns();
            if let Some(new) = parameters.take() {
                set_thresholds(&mut lock(&health), &new);
            }
            let mut statuses = lock(&health).report(now);
            statuses.push(needle_nav_nodes::diagnostics::lifecycle_status(&task_cx.name, task_cx.is_active()));
            let array = DiagnosticArray {
                header: crate::convert::header(now, ""),
                status: statuses.into_iter().map(status_msg).collect(),
            };
            let result = publisher.publish_regardless(&array);
            crate::context::log_publish_error(&task_cx.name, "/diagnostics", result, &mut publish_failed);
        }
    });
    Ok(())
}
