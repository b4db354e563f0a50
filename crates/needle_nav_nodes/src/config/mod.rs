//! Node configuration: typed, validated, layered. No ROS types.
//!
//! Precedence, lowest first: the struct defaults, the node's section in
//! `config/<node>.yaml` (ROS 2 parameter-file format), then the ROS parameters given on
//! the command line (`--ros-args --params-file F -p key:=value`), which the ROS layer
//! hands over as [`Overrides`]. Unknown keys and bad values are errors naming the key.
//! Algorithm options live beside their algorithms; the node configurations here compose them.
//! Also: every node, topic, service, frame and QoS name ([`interfaces`]), and log set-up.

mod nodes;
pub mod ros_args;

pub use nodes::*;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// A configuration problem, always naming the node and, where there is one, the key.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{node}: cannot read parameter file {path}: {reason}")]
    Unreadable { node: String, path: String, reason: String },
    #[error("{node}: parameter file {path} is not a ROS 2 parameter file: {reason}")]
    BadFile { node: String, path: String, reason: ParamFileError },
    #[error("{node}: parameter `{key}`: {reason}")]
    BadKey { node: String, key: String, reason: String },
    #[error("ROS arguments: {0}")]
    BadRosArgs(String),
}

/// Why a text is not a ROS 2 parameter file (or not one for our nodes).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamFileError {
    /// Not YAML; serde_yaml's message with line and column.
    #[error("{0}")]
    Yaml(String),
    #[error("top level must be a mapping of node names")]
    TopLevelNotMapping,
    /// A key that is not a string (`prefix`: the namespace it is in, empty at the top).
    #[error("{prefix}: node and namespace names must be strings")]
    NameNotString { prefix: String },
    #[error("section `{0}` has no `ros__parameters`")]
    NoParameters(String),
    #[error("`{0}.ros__parameters` must be a mapping")]
    ParametersNotMapping(String),
    #[error("`{0}` is neither a node section (with `ros__parameters`) nor a namespace")]
    NeitherSectionNorNamespace(String),
    #[error("section `{0}`: everything belongs under `ros__parameters`")]
    OutsideParameters(String),
    #[error(
        "section `{section}` names no needle_nav node; did you mean `{suggestion}`? (its parameters would be ignored)"
    )]
    MisspeltNode { section: String, suggestion: String },
}

/// A key that failed validation, before the node name is attached.
#[derive(Debug, PartialEq)]
pub struct InvalidValue {
    pub key: &'static str,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        InvalidValue { key, reason: reason.into() }
    }
}

/// Checks the values serde cannot check (ranges, combinations).
pub trait Validate {
    fn validate(&self) -> Result<(), InvalidValue>;
}

/// Parameters from the ROS command line, flattened (`a.b` for nested keys).
pub type Overrides = Vec<(String, Value)>;

/// Where the default parameter file of a node comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    File(PathBuf),
    /// The copy of `config/<node>.yaml` compiled into the executable.
    Embedded,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => write!(f, "built-in defaults"),
        }
    }
}

/// The default parameter file for `node`: `$NEEDLE_NAV_CONFIG_DIR/<node>.yaml`, else the
/// installed `share/needle_nav/config/<node>.yaml` on `AMENT_PREFIX_PATH`, else the copy
/// compiled in.
pub fn locate_default_file(node: &str) -> ConfigSource {
    let file_name = format!("{node}.yaml");
    if let Some(dir) = std::env::var_os("NEEDLE_NAV_CONFIG_DIR") {
        let p = Path::new(&dir).join(&file_name);
        if p.is_file() {
            return ConfigSource::File(p);
        }
    }
    if let Some(prefixes) = std::env::var_os("AMENT_PREFIX_PATH") {
        for prefix in std::env::split_paths(&prefixes) {
            let p = prefix.join("share/needle_nav/config").join(&file_name);
            if p.is_file() {
                return ConfigSource::File(p);
            }
        }
    }
    ConfigSource::Embedded
}

/// Text of the parameter file that ships with the package for `node`.
pub fn embedded_default_file(node: &str) -> Option<&'static str> {
    Some(match node {
        "marker_tracker" => include_str!("../../../../config/marker_tracker.yaml"),
        "marker_classifier" => include_str!("../../../../config/marker_classifier.yaml"),
        "lesion_registration" => include_str!("../../../../config/lesion_registration.yaml"),
        "needle_target" => include_str!("../../../../config/needle_target.yaml"),
        "vessel_segmentation" => include_str!("../../../../config/vessel_segmentation.yaml"),
        "trajectory_planner" => include_str!("../../../../config/trajectory_planner.yaml"),
        "igtl_bridge" => include_str!("../../../../config/igtl_bridge.yaml"),
        _ => return None,
    })
}

/// Reads the node's section of its default parameter file.
pub fn read_default_section(node: &str, source: &ConfigSource) -> Result<Mapping, ConfigError> {
    let (text, path) = match source {
        ConfigSource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Unreadable {
                node: node.into(),
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            (text, p.display().to_string())
        }
        ConfigSource::Embedded => (embedded_default_file(node).unwrap_or("").to_string(), "built-in defaults".into()),
    };
    node_section(&text, node).map_err(|reason| ConfigError::BadFile { node: node.into(), path, reason })
}

/// The merged `ros__parameters` of every section of a ROS 2 parameter file that applies to
/// `node` (`/**`, `node`, `/node`, `/any/namespace/node`), in file order.
pub fn node_section(text: &str, node: &str) -> Result<Mapping, ParamFileError> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| ParamFileError::Yaml(e.to_string()))?;
    let mut merged = Mapping::new();
    let top = match doc {
        Value::Null => return Ok(merged),
        Value::Mapping(m) => m,
        _ => return Err(ParamFileError::TopLevelNotMapping),
    };
    for (key, section) in top {
        let name = key.as_str().ok_or(ParamFileError::NameNotString { prefix: String::new() })?;
        let applies = name == "/**" || name == "**" || name.rsplit('/').next() == Some(node);
        if !applies {
            continue;
        }
        let params = section.get("ros__parameters").ok_or_else(|| ParamFileError::NoParameters(name.to_string()))?;
        match params {
            Value::Mapping(m) => deep_merge(&mut merged, m.clone()),
            Value::Null => {}
            _ => return Err(ParamFileError::ParametersNotMapping(name.to_string())),
        }
    }
    Ok(merged)
}

fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn insert_dotted(base: &mut Mapping, dotted: &str, value: Value) {
    let mut parts = dotted.split('.').peekable();
    let mut cur = base;
    while let Some(part) = parts.next() {
        let key = Value::String(part.to_string());
        if parts.peek().is_none() {
            cur.insert(key, value);
            return;
        }
        let entry = cur.entry(key).or_insert_with(|| Value::Mapping(Mapping::new()));
        if !entry.is_mapping() {
            *entry = Value::Mapping(Mapping::new());
        }
        match entry {
            Value::Mapping(m) => cur = m,
            _ => return,
        }
    }
}

/// Builds the node's configuration from its file section and the command-line overrides.
pub fn build_config<T>(node: &str, file_section: Mapping, overrides: &Overrides) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let mut merged = file_section;
    for (key, value) in overrides {
        // ROS adds this one to every node; it is not ours to validate.
        if key == "use_sim_time" {
            continue;
        }
        insert_dotted(&mut merged, key, value.clone());
    }
    let de = Value::Mapping(merged);
    let config: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names unknown fields in its message; point at them, not at the root.
        let key = if key == "." { unknown_field_name(&inner).unwrap_or(key) } else { key };
        ConfigError::BadKey { node: node.into(), key, reason: inner }
    })?;
    config.validate().map_err(|bad| ConfigError::BadKey {
        node: node.into(),
        key: bad.key.into(),
        reason: bad.reason,
    })?;
    Ok(config)
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Loads `T` for `node` from the default file (located as [`locate_default_file`] says)
/// and the overrides.
pub fn load<T>(node: &str, overrides: &Overrides) -> Result<(T, ConfigSource), ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let source = locate_default_file(node);
    let section = read_default_section(node, &source)?;
    Ok((build_config(node, section, overrides)?, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_apply_by_node_name_and_wildcard_in_file_order() {
        let text = r#"
/**:
  ros__parameters:
    frame_id: world
    rate_hz: 10.0
/robot/marker_tracker:
  ros__parameters:
    rate_hz: 250.0
other_node:
  ros__parameters:
    rate_hz: 1.0
"#;
        let m = node_section(text, "marker_tracker").unwrap();
        assert_eq!(m.get("rate_hz").and_then(Value::as_f64), Some(250.0));
        assert_eq!(m.get("frame_id").and_then(Value::as_str), Some("world"));
    }

    #[test]
    fn a_section_without_ros_parameters_is_rejected() {
        let err = node_section("marker_tracker:\n  rate_hz: 3\n", "marker_tracker").unwrap_err();
        assert_eq!(err, ParamFileError::NoParameters("marker_tracker".into()));
        assert!(err.to_string().contains("ros__parameters"), "{err}");
    }

    #[test]
    fn every_shipped_file_loads_and_validates() {
        for kind in needle_nav_core::interfaces::NodeKind::ALL {
            let node = kind.name();
            let text = embedded_default_file(node).unwrap();
            let section = node_section(text, node).unwrap();
            assert!(!section.is_empty(), "{node}.yaml has no parameters for {node}");
            check_node_config(node, section, &Vec::new()).unwrap();
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let section =
            node_section("marker_tracker:\n  ros__parameters:\n    rate_hzz: 3.0\n", "marker_tracker").unwrap();
        let err = build_config::<MarkerTrackerConfig>("marker_tracker", section, &Vec::new()).unwrap_err();
        match err {
            ConfigError::BadKey { key, .. } => assert_eq!(key, "rate_hzz"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_type_and_out_of_range_values_are_named() {
        let overrides = vec![("rate_hz".to_string(), Value::String("fast".into()))];
        let err = build_config::<MarkerTrackerConfig>("marker_tracker", Mapping::new(), &overrides).unwrap_err();
        assert!(matches!(&err, ConfigError::BadKey { key, .. } if key == "rate_hz"), "{err}");

        let overrides = vec![("rate_hz".to_string(), Value::from(-5.0))];
        let err = build_config::<MarkerTrackerConfig>("marker_tracker", Mapping::new(), &overrides).unwrap_err();
        assert!(matches!(&err, ConfigError::BadKey { key, .. } if key == "rate_hz"), "{err}");
        assert!(err.to_string().contains("marker_tracker: parameter `rate_hz`"), "{err}");
    }

    #[test]
    fn command_line_overrides_beat_the_file_and_integers_read_as_floats() {
        let section =
            node_section("marker_tracker:\n  ros__parameters:\n    rate_hz: 100.0\n", "marker_tracker").unwrap();
        let overrides = vec![("rate_hz".to_string(), Value::from(60_i64))];
        let c: MarkerTrackerConfig = build_config("marker_tracker", section, &overrides).unwrap();
        assert_eq!(c.rate_hz, 60.0);
    }

    #[test]
    fn dotted_overrides_reach_nested_keys() {
        let mut m = Mapping::new();
        insert_dotted(&mut m, "region.min_x", Value::from(1.5));
        assert_eq!(m.get("region").and_then(|r| r.get("min_x")).and_then(Value::as_f64), Some(1.5));
    }
}
