//! Health of each node as `/diagnostics` reports it, without ROS types.

use crate::parameters::ParameterSpec;
use needle_nav_core::interfaces::NodeKind;

/// The diagnostics thresholds `kind` declares as parameters (`diagnostics.*`).
pub fn parameter_specs(_kind: NodeKind) -> Vec<ParameterSpec> {
    Vec::new()
}
