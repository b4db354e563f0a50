//! Parameter values and types as `rcl_interfaces` knows them, without ROS types.

use serde_yaml::Value;

/// The types of `rcl_interfaces/msg/ParameterType` a parameter can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterType {
    Bool,
    Integer,
    Double,
    String,
    ByteArray,
    BoolArray,
    IntegerArray,
    DoubleArray,
    StringArray,
}

impl ParameterType {
    pub fn name(self) -> &'static str {
        match self {
            ParameterType::Bool => "bool",
            ParameterType::Integer => "integer",
            ParameterType::Double => "double",
            ParameterType::String => "string",
            ParameterType::ByteArray => "byte array",
            ParameterType::BoolArray => "bool array",
            ParameterType::IntegerArray => "integer array",
            ParameterType::DoubleArray => "double array",
            ParameterType::StringArray => "string array",
        }
    }
}

impl std::fmt::Display for ParameterType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter's value (`rcl_interfaces/msg/ParameterValue` without NOT_SET).
#[derive(Debug, Clone, PartialEq)]
pub enum ParameterValue {
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
    ByteArray(Vec<u8>),
    BoolArray(Vec<bool>),
    IntegerArray(Vec<i64>),
    DoubleArray(Vec<f64>),
    StringArray(Vec<String>),
}

impl ParameterValue {
    pub fn kind(&self) -> ParameterType {
        match self {
            ParameterValue::Bool(_) => ParameterType::Bool,
            ParameterValue::Integer(_) => ParameterType::Integer,
            ParameterValue::Double(_) => ParameterType::Double,
            ParameterValue::String(_) => ParameterType::String,
            ParameterValue::ByteArray(_) => ParameterType::ByteArray,
            ParameterValue::BoolArray(_) => ParameterType::BoolArray,
            ParameterValue::IntegerArray(_) => ParameterType::IntegerArray,
            ParameterValue::DoubleArray(_) => ParameterType::DoubleArray,
            ParameterValue::StringArray(_) => ParameterType::StringArray,
        }
    }

    /// The value of a key of a serialised configuration; `None` for a mapping (not a leaf) or a
    /// value no parameter type holds. An empty list is a double array: every list key of the
    /// configurations holds numbers in metres or HU (the spec table test checks it).
    pub(crate) fn from_yaml(v: &Value) -> Option<ParameterValue> {
        Some(match v {
            Value::Bool(b) => ParameterValue::Bool(*b),
            Value::Number(n) if n.is_f64() => ParameterValue::Double(n.as_f64()?),
            Value::Number(n) => ParameterValue::Integer(n.as_i64()?),
            Value::String(s) => ParameterValue::String(s.clone()),
            Value::Sequence(items) => {
                if items.iter().all(|x| matches!(x, Value::Number(n) if n.is_f64())) {
                    ParameterValue::DoubleArray(items.iter().filter_map(Value::as_f64).collect())
                } else if items.iter().all(|x| x.as_i64().is_some()) {
                    ParameterValue::IntegerArray(items.iter().filter_map(Value::as_i64).collect())
                } else if items.iter().all(Value::is_bool) {
                    ParameterValue::BoolArray(items.iter().filter_map(Value::as_bool).collect())
                } else if items.iter().all(Value::is_string) {
                    ParameterValue::StringArray(items.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// The value as a parameter file holds it.
    pub fn to_yaml(&self) -> Value {
        match self {
            ParameterValue::Bool(b) => Value::from(*b),
            ParameterValue::Integer(i) => Value::from(*i),
            ParameterValue::Double(d) => Value::from(*d),
            ParameterValue::String(s) => Value::from(s.clone()),
            ParameterValue::ByteArray(a) => Value::Sequence(a.iter().map(|x| Value::from(*x)).collect()),
            ParameterValue::BoolArray(a) => Value::Sequence(a.iter().map(|x| Value::from(*x)).collect()),
            ParameterValue::IntegerArray(a) => Value::Sequence(a.iter().map(|x| Value::from(*x)).collect()),
            ParameterValue::DoubleArray(a) => Value::Sequence(a.iter().map(|x| Value::from(*x)).collect()),
            ParameterValue::StringArray(a) => Value::Sequence(a.iter().map(|x| Value::from(x.clone())).collect()),
        }
    }

    /// `self` as a value of type `want`, where the parameter file would read it as one: an
    /// integer where a double is declared (`-p tolerance:=1` reads as an integer, and the file
    /// loader accepts it at start, so a set at run time does too). Anything else must match.
    pub(crate) fn coerced(self, want: ParameterType) -> Result<ParameterValue, ParameterValue> {
        match (self, want) {
            (v, w) if v.kind() == w => Ok(v),
            (ParameterValue::Integer(i), ParameterType::Double) => Ok(ParameterValue::Double(i as f64)),
            (ParameterValue::IntegerArray(a), ParameterType::DoubleArray) => {
                Ok(ParameterValue::DoubleArray(a.into_iter().map(|i| i as f64).collect()))
            }
            (v, _) => Err(v),
        }
    }
}

impl std::fmt::Display for ParameterValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParameterValue::Bool(b) => write!(f, "{b}"),
            ParameterValue::Integer(i) => write!(f, "{i}"),
            ParameterValue::Double(d) => write!(f, "{d}"),
            ParameterValue::String(s) => write!(f, "'{s}'"),
            ParameterValue::ByteArray(a) => write!(f, "{a:?}"),
            ParameterValue::BoolArray(a) => write!(f, "{a:?}"),
            ParameterValue::IntegerArray(a) => write!(f, "{a:?}"),
            ParameterValue::DoubleArray(a) => write!(f, "{a:?}"),
            ParameterValue::StringArray(a) => write!(f, "{a:?}"),
        }
    }
}
