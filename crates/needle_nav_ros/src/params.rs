//! ROS parameters (from `--ros-args --params-file F -p k:=v`) as configuration overrides.

use needle_nav_nodes::config::{self, ConfigError, ConfigSource, Overrides, Validate};
use needle_nav_nodes::parameters::{ParameterValue as Declared, STANDARD_PARAMETERS};
use r2r::ParameterValue;
use serde::de::DeserializeOwned;

/// A value rcl parsed (`-p k:=v`, a parameter file), as the parameter store types it; `None` when not set.
pub(crate) fn from_rcl(v: &ParameterValue) -> Option<Declared> {
    Some(match v {
        ParameterValue::NotSet => return None,
        ParameterValue::Bool(b) => Declared::Bool(*b),
        ParameterValue::Integer(i) => Declared::Integer(*i),
        ParameterValue::Double(d) => Declared::Double(*d),
        ParameterValue::String(s) => Declared::String(s.clone()),
        ParameterValue::BoolArray(a) => Declared::BoolArray(a.clone()),
        ParameterValue::ByteArray(a) => Declared::ByteArray(a.clone()),
        ParameterValue::IntegerArray(a) => Declared::IntegerArray(a.clone()),
        ParameterValue::DoubleArray(a) => Declared::DoubleArray(a.clone()),
        ParameterValue::StringArray(a) => Declared::StringArray(a.clone()),
    })
}

/// The parameters rcl parsed for this node, less the runtime-owned ones every node has
/// ([`STANDARD_PARAMETERS`]: `use_sim_time`...), which are not node configuration.
pub fn overrides(node: &r2r::Node) -> Overrides {
    let params = node.params.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    params
        .iter()
        .filter(|(k, _)| !STANDARD_PARAMETERS.iter().any(|s| s.spec.name == k.as_str()))
        .filter_map(|(k, p)| from_rcl(&p.value).map(|v| (k.clone(), v.to_yaml())))
        .collect()
}

/// `use_sim_time:=true`: the node's ROS clock follows `/clock` (bag replay).
pub fn use_sim_time(node: &r2r::Node) -> bool {
    let params = node.params.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    matches!(params.get("use_sim_time").map(|p| &p.value), Some(ParameterValue::Bool(true)))
}

/// Loads the node's configuration: its default file, then the ROS parameters.
pub fn load_config<T>(node: &r2r::Node, node_name: &str) -> Result<(T, ConfigSource), ConfigError>
where
    T: DeserializeOwned + Validate,
{
    config::load::<T>(node_name, &overrides(node))
}

// ---- Lifecycle: the `autostart` parameter ----

/// The parameter that chooses how a managed node starts.
pub const AUTOSTART: &str = "autostart";

/// `autostart:=true` (the default): the node configures and activates itself at start, as
/// before lifecycle management; `false`: it starts unconfigured and waits for a lifecycle manager.
pub fn autostart(node: &r2r::Node) -> bool {
    let params = node.params.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    !matches!(params.get(AUTOSTART).map(|p| &p.value), Some(ParameterValue::Bool(false)))
}
