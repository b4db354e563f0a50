//! A node's declared parameters and their values: list, describe, get, and set (one by one or
//! atomically), where an accepted set is validated exactly as the configuration is at start.

use super::spec::{Mutability, ParameterSpec, Range};
use super::value::{ParameterType, ParameterValue};
use crate::config::{build_config, ConfigError, Validate};
use serde::{de::DeserializeOwned, Serialize};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// Why the store cannot be built: the configuration and the spec table disagree (a bug, which
/// the spec table tests catch before a node ever starts).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("{node}: configuration key `{key}` has no declared parameter")]
    Undeclared { node: String, key: String },
    #[error("{node}: configuration key `{key}` holds a value no ROS parameter type can hold")]
    Untyped { node: String, key: String },
    #[error("{node}: the configuration cannot be written as parameters: {reason}")]
    NotSerialisable { node: String, reason: String },
}

/// Why a set was refused; the text is what the client sees as the result's `reason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetRefused {
    #[error("parameter `{0}` is not declared by this node")]
    Unknown(String),
    #[error("parameter `{0}` is read-only: it is set at start (parameter file or --ros-args); restart the node to change it")]
    ReadOnly(String),
    #[error("parameter `{name}` is a {expected}, not a {given}")]
    WrongType { name: String, expected: ParameterType, given: ParameterType },
    #[error("parameter `{name}`: {value} is outside [{min}, {max}]")]
    OutOfRange { name: String, value: String, min: String, max: String },
    /// The configuration's own checks refused the result (a combination of keys, or a bound the
    /// range cannot say): the same check, and the same words, as at start.
    #[error("parameter `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("not applied: another parameter of the same atomic set was refused")]
    OtherRefused,
}

#[derive(Debug, Clone)]
struct Entry {
    spec: ParameterSpec,
    value: ParameterValue,
}

/// What a set changed: the new values (as stored, e.g. an integer given for a double is a double)
/// and the new configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<T> {
    pub changed: Vec<(String, ParameterValue)>,
    pub config: T,
}

/// `ros2 param list`'s answer: names, and the prefixes (`sample_checks`) among them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Listing {
    pub names: Vec<String>,
    pub prefixes: Vec<String>,
}

/// The declared parameters of one node with its configuration `T`.
#[derive(Debug, Clone)]
pub struct ParameterStore<T> {
    node: String,
    entries: BTreeMap<String, Entry>,
    /// The configuration as its parameter file section: what a set edits and validation reads.
    tree: Mapping,
    config: T,
}

fn flatten(prefix: &str, m: &Mapping, out: &mut Vec<(String, Value)>) {
    for (k, v) in m {
        let Some(k) = k.as_str() else { continue };
        let name = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        match v {
            Value::Mapping(inner) => flatten(&name, inner, out),
            leaf => out.push((name, leaf.clone())),
        }
    }
}

fn insert_dotted(m: &mut Mapping, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            m.insert(Value::from(dotted), value);
        }
        Some((head, rest)) => {
            let entry = m.entry(Value::from(head)).or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(inner) = entry {
                insert_dotted(inner, rest, value);
            }
        }
    }
}

/// Every key of a configuration, dotted, with its value (what the node declares).
pub fn config_keys<T: Serialize>(config: &T) -> Result<Vec<(String, Value)>, String> {
    match serde_yaml::to_value(config).map_err(|e| e.to_string())? {
        Value::Mapping(m) => {
            let mut out = Vec::new();
            flatten("", &m, &mut out);
            Ok(out)
        }
        other => Err(format!("not a mapping: {other:?}")),
    }
}

fn check_range(name: &str, range: &Range, value: &ParameterValue) -> Result<(), SetRefused> {
    let out = |v: String, min: String, max: String| SetRefused::OutOfRange { name: name.into(), value: v, min, max };
    match (range, value) {
        (Range::Float { min, max, .. }, ParameterValue::Double(v)) if !(v >= min && v <= max) => {
            Err(out(v.to_string(), min.to_string(), max.to_string()))
        }
        (Range::Integer { min, max, .. }, ParameterValue::Integer(v)) if !(v >= min && v <= max) => {
            Err(out(v.to_string(), min.to_string(), max.to_string()))
        }
        _ => Ok(()),
    }
}

impl<T> ParameterStore<T>
where
    T: Serialize + DeserializeOwned + Validate + Clone,
{
    /// Declares `specs` with the values of `config`, and the runtime-owned `standard` ones with
    /// theirs. Every key of `config` must have a spec; a spec without a key is not declared.
    pub fn new(
        node: &str,
        config: T,
        specs: &[ParameterSpec],
        standard: &[(ParameterSpec, ParameterValue)],
    ) -> Result<ParameterStore<T>, StoreError> {
        let tree = match serde_yaml::to_value(&config) {
            Ok(Value::Mapping(m)) => m,
            Ok(_) => return Err(StoreError::NotSerialisable { node: node.into(), reason: "not a mapping".into() }),
            Err(e) => return Err(StoreError::NotSerialisable { node: node.into(), reason: e.to_string() }),
        };
        let mut leaves = Vec::new();
        flatten("", &tree, &mut leaves);
        let mut entries = BTreeMap::new();
        for (key, v) in leaves {
            let spec = specs
                .iter()
                .find(|s| s.name == key)
                .ok_or_else(|| StoreError::Undeclared { node: node.into(), key: key.clone() })?;
            let value = ParameterValue::from_yaml(&v)
                .ok_or_else(|| StoreError::Untyped { node: node.into(), key: key.clone() })?;
            entries.insert(key, Entry { spec: spec.clone(), value });
        }
        for (spec, value) in standard {
            entries.insert(spec.name.to_string(), Entry { spec: spec.clone(), value: value.clone() });
        }
        Ok(ParameterStore { node: node.into(), entries, tree, config })
    }

    pub fn config(&self) -> &T {
        &self.config
    }

    /// The names under `prefixes` (all when empty) at most `depth` levels below them (0: any),
    /// as rclcpp's `list_parameters` answers.
    pub fn list(&self, prefixes: &[String], depth: u64) -> Listing {
        let dots = |s: &str| s.matches('.').count() as u64;
        let mut listing = Listing::default();
        for name in self.entries.keys() {
            let all = prefixes.is_empty() && (depth == 0 || dots(name) < depth);
            let under = prefixes.iter().any(|p| {
                name == p
                    || name
                        .strip_prefix(p.as_str())
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|rest| depth == 0 || dots(rest) < depth)
            });
            if all || under {
                listing.names.push(name.clone());
                if let Some((prefix, _)) = name.rsplit_once('.') {
                    if !listing.prefixes.iter().any(|p| p == prefix) {
                        listing.prefixes.push(prefix.to_string());
                    }
                }
            }
        }
        listing
    }

    /// The spec and type of `name`; `None` when it is not declared.
    pub fn describe(&self, name: &str) -> Option<(&ParameterSpec, ParameterType)> {
        self.entries.get(name).map(|e| (&e.spec, e.value.kind()))
    }

    pub fn get(&self, name: &str) -> Option<&ParameterValue> {
        self.entries.get(name).map(|e| &e.value)
    }

    fn checked(&self, name: &str, value: ParameterValue) -> Result<ParameterValue, SetRefused> {
        let entry = self.entries.get(name).ok_or_else(|| SetRefused::Unknown(name.into()))?;
        if entry.spec.mutability == Mutability::ReadOnly {
            return Err(SetRefused::ReadOnly(name.into()));
        }
        let expected = entry.value.kind();
        let value = value.coerced(expected).map_err(|given| SetRefused::WrongType {
            name: name.into(),
            expected,
            given: given.kind(),
        })?;
        check_range(name, &entry.spec.range, &value)?;
        Ok(value)
    }

    /// Applies all `changes` or none: each is checked (declared, writable, type, range), then the
    /// resulting configuration is deserialised and validated as at start.
    pub fn set_atomically(&mut self, changes: Vec<(String, ParameterValue)>) -> Result<Applied<T>, SetRefused> {
        let mut tree = self.tree.clone();
        let mut accepted = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            let value = self.checked(&name, value)?;
            insert_dotted(&mut tree, &name, value.to_yaml());
            accepted.push((name, value));
        }
        let config: T = build_config(&self.node, tree.clone(), &Vec::new()).map_err(|e| match e {
            ConfigError::BadKey { key, reason, .. } => SetRefused::Invalid { key, reason },
            other => SetRefused::Invalid { key: String::new(), reason: other.to_string() },
        })?;
        for (name, value) in &accepted {
            if let Some(entry) = self.entries.get_mut(name) {
                entry.value = value.clone();
            }
        }
        self.tree = tree;
        self.config = config.clone();
        Ok(Applied { changed: accepted, config })
    }

    /// Applies each change on its own, in order, as `set_parameters` does: one result per change,
    /// and what the accepted ones changed (`None` when none was accepted).
    pub fn set_each(
        &mut self,
        changes: Vec<(String, ParameterValue)>,
    ) -> (Vec<Result<(), SetRefused>>, Option<Applied<T>>) {
        let mut results = Vec::with_capacity(changes.len());
        let mut applied: Option<Applied<T>> = None;
        for change in changes {
            match self.set_atomically(vec![change]) {
                Ok(a) => {
                    results.push(Ok(()));
                    applied = Some(match applied {
                        None => a,
                        Some(mut prev) => {
                            prev.changed.extend(a.changed);
                            prev.config = a.config;
                            prev
                        }
                    });
                }
                Err(e) => results.push(Err(e)),
            }
        }
        (results, applied)
    }
}
