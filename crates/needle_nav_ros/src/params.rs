//! ROS parameters (from `--ros-args --params-file F -p k:=v`) as configuration overrides.

use needle_nav_nodes::config::{self, ConfigError, ConfigSource, Overrides, Validate};
use r2r::ParameterValue;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

fn to_yaml(v: &ParameterValue) -> Option<Value> {
    Some(match v {
        ParameterValue::NotSet => return None,
        ParameterValue::Bool(b) => Value::from(*b),
        ParameterValue::Integer(i) => Value::from(*i),
        ParameterValue::Double(d) => Value::from(*d),
        ParameterValue::String(s) => Value::from(s.clone()),
        ParameterValue::BoolArray(a) => Value::Sequence(a.iter().map(|b| Value::from(*b)).collect()),
        ParameterValue::ByteArray(a) => Value::Sequence(a.iter().map(|b| Value::from(*b)).collect()),
        ParameterValue::IntegerArray(a) => Value::Sequence(a.iter().map(|b| Value::from(*b)).collect()),
        ParameterValue::DoubleArray(a) => Value::Sequence(a.iter().map(|b| Value::from(*b)).collect()),
        ParameterValue::StringArray(a) => Value::Sequence(a.iter().map(|b| Value::from(b.clone())).collect()),
    })
}

/// Parameters every ROS node has; the runtime handles them, they are not node configuration.
// `autostart` (the lifecycle parameter, issue 15) is the runtime's: until the lifecycle services are merged
// it is accepted and ignored here, so launch files can pass it already.
const STANDARD_PARAMETERS: [&str; 2] = ["use_sim_time", "autostart"];

/// The parameters rcl parsed for this node.
pub fn overrides(node: &r2r::Node) -> Overrides {
    let params = node.params.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    params
        .iter()
        .filter(|(k, _)| !STANDARD_PARAMETERS.contains(&k.as_str()))
        .filter_map(|(k, p)| to_yaml(&p.value).map(|v| (k.clone(), v)))
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
