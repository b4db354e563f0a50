//! What a declared parameter says about itself.

/// Whether a parameter may change while the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set at start (parameter file, `--ros-args`); a set at run time is refused, saying so.
    ReadOnly,
    /// Validated exactly as at start and applied while the node runs (thresholds, gates, tolerances).
    Dynamic,
}

/// The values a numeric parameter may take (inclusive), as `rcl_interfaces` ranges: `step` 0
/// means any value in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    None,
    Float { min: f64, max: f64, step: f64 },
    Integer { min: i64, max: i64, step: u64 },
}

/// One declared parameter. `name` is the dotted path of the key in the node's parameter file
/// section (`sample_checks.max_markers`); its type is that of its default value.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// SI unit of the value (`m`, `s`, `Hz`, `HU`...); empty when it has none.
    pub unit: &'static str,
    pub range: Range,
    pub mutability: Mutability,
    /// Constraints a range cannot say (`one of: none, linear, autoregressive`); empty when none.
    pub constraints: &'static str,
}

impl ParameterSpec {
    /// The description as `ros2 param describe` shows it: the text, then the unit.
    pub fn full_description(&self) -> String {
        if self.unit.is_empty() {
            self.description.to_string()
        } else {
            format!("{} [{}]", self.description, self.unit)
        }
    }
}
