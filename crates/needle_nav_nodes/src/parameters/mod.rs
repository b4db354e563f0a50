//! Declared parameters (what `ros2 param list/describe/get/set` show), without ROS types.
//!
//! Every node parameter has a [`ParameterSpec`]: its description, unit, allowed range and whether
//! it may change while the node runs. The ROS shell turns these into `rcl_interfaces`
//! `ParameterDescriptor`s and serves the standard parameter services from them.

mod diagnostics;
mod spec;

pub use spec::{Mutability, ParameterSpec, Range};

use needle_nav_core::interfaces::NodeKind;

/// Every parameter `kind` declares besides the standard ones the runtime owns (`use_sim_time`):
/// its configuration's keys and its diagnostics thresholds.
pub fn node_parameter_specs(kind: NodeKind) -> Vec<ParameterSpec> {
    let mut specs = diagnostics::parameter_specs(kind);
    specs.sort_by(|a, b| a.name.cmp(b.name));
    specs
}
