//! Declared parameters (what `ros2 param list/describe/get/set` show), without ROS types.
//!
//! Every node parameter has a [`ParameterSpec`]: its description, unit, allowed range and whether
//! it may change while the node runs. A [`ParameterStore`] holds a node's parameters with their
//! values and applies sets to its configuration, validated exactly as at start. The ROS shell
//! turns these into `rcl_interfaces` messages and serves the standard parameter services.

mod diagnostics;
mod spec;
mod store;
mod tables;
mod value;

pub use spec::{Mutability, ParameterSpec, Range};
pub use store::{config_keys, Applied, Listing, ParameterStore, SetRefused, StoreError};
pub use tables::{config_specs, StandardParameter, STANDARD_PARAMETERS};
pub use value::{ParameterType, ParameterValue};

use needle_nav_core::interfaces::NodeKind;

/// Every parameter `kind` declares besides the standard ones the runtime owns
/// ([`STANDARD_PARAMETERS`]): its configuration's keys and its diagnostics thresholds.
pub fn node_parameter_specs(kind: NodeKind) -> Vec<ParameterSpec> {
    let mut specs = config_specs(kind);
    specs.extend(diagnostics::parameter_specs(kind));
    specs.sort_by(|a, b| a.name.cmp(b.name));
    specs
}

#[cfg(test)]
mod tests;
