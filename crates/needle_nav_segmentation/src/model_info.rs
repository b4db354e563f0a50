//! What a vessel model says about itself: the JSON stored under the ONNX metadata key
//! `needle_nav` by `training/`. The runtime takes spacing, patch size, normalisation, classes
//! and HU windows from here, never from constants, so a retrained model cannot be run with the
//! wrong preprocessing.

use super::HuWindows;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The ONNX metadata key that holds the JSON.
pub const METADATA_KEY: &str = "needle_nav";
/// The class names the pipeline understands, in label order.
pub const CLASS_NAMES: [&str; 4] = ["background", "artery", "vein", "aorta"];
/// The input and output tensor names of the ONNX contract.
pub const INPUT_NAME: &str = "ct";
pub const OUTPUT_NAME: &str = "probabilities";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// HU are clipped to [lo, hi] before the z-score.
    pub clip_hu: [f32; 2],
    pub mean_hu: f32,
    pub std_hu: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format: u32,
    /// Voxel size the network was trained at, along x (i), y (j), z (k) [mm].
    pub spacing_mm_xyz: [f64; 3],
    /// Patch size in tensor order (slices, rows, columns).
    pub patch_size_zyx: [usize; 3],
    pub normalisation: Normalisation,
    pub class_names: Vec<String>,
    /// Per contrast phase ("contrast", "plain"), per vessel class name: [lo, hi] HU.
    pub hu_windows: BTreeMap<String, BTreeMap<String, [f32; 2]>>,
    /// Axis directions of the tensor's x, y, z: "LPS".
    pub orientation: String,
    /// Provenance (seed, versions, validation Dice): reported, not interpreted.
    #[serde(default)]
    pub training: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelInfoError {
    #[error("the model has no '{METADATA_KEY}' metadata: it was not exported by needle_nav's training")]
    Missing,
    #[error("the model's '{METADATA_KEY}' metadata is not valid: {0}")]
    Invalid(String),
}

impl ModelInfo {
    pub fn from_json(text: &str) -> Result<ModelInfo, ModelInfoError> {
        let info: ModelInfo = serde_json::from_str(text).map_err(|e| ModelInfoError::Invalid(e.to_string()))?;
        info.validate()?;
        Ok(info)
    }

    fn validate(&self) -> Result<(), ModelInfoError> {
        let bad = |m: String| Err(ModelInfoError::Invalid(m));
        if self.format != 1 {
            return bad(format!("format {} is not 1", self.format));
        }
        if self.spacing_mm_xyz.iter().any(|s| !s.is_finite() || *s <= 0.0 || *s > 10.0) {
            return bad(format!("spacing_mm_xyz {:?} is not in (0, 10] mm", self.spacing_mm_xyz));
        }
        if self.patch_size_zyx.iter().any(|p| *p < 8 || *p % 8 != 0 || *p > 512) {
            return bad(format!("patch_size_zyx {:?} must be multiples of 8 in 8..=512", self.patch_size_zyx));
        }
        let n = &self.normalisation;
        if !(n.clip_hu[0] < n.clip_hu[1]) || !n.mean_hu.is_finite() || !(n.std_hu > 0.0 && n.std_hu.is_finite()) {
            return bad(format!("normalisation {n:?} is unusable"));
        }
        if self.class_names.iter().map(String::as_str).ne(CLASS_NAMES) {
            return bad(format!("class_names {:?} are not {CLASS_NAMES:?}", self.class_names));
        }
        if self.orientation != "LPS" {
            return bad(format!("orientation '{}' is not LPS", self.orientation));
        }
        for phase in ["contrast", "plain"] {
            let Some(w) = self.hu_windows.get(phase) else {
                return bad(format!("hu_windows has no '{phase}' entry"));
            };
            for class in &CLASS_NAMES[1..] {
                match w.get(*class) {
                    Some([lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => {}
                    other => return bad(format!("hu_windows.{phase}.{class} is {other:?}")),
                }
            }
        }
        Ok(())
    }

    /// Patch size in grid order (i, j, k).
    pub fn patch_size_xyz(&self) -> [usize; 3] {
        let [z, y, x] = self.patch_size_zyx;
        [x, y, z]
    }

    /// The HU windows of one phase as labels 1..=3.
    pub fn windows(&self, contrast: bool) -> HuWindows {
        let phase = &self.hu_windows[if contrast { "contrast" } else { "plain" }];
        HuWindows {
            windows: CLASS_NAMES[1..]
                .iter()
                .enumerate()
                .map(|(n, c)| {
                    let [lo, hi] = phase[*c];
                    (n as u8 + 1, lo, hi)
                })
                .collect(),
        }
    }

    /// A version of this model for the records that carry one (DICOM SEG AlgorithmVersion, at
    /// most 64 characters): its training date and commit, when the export recorded them.
    pub fn version_label(&self) -> String {
        let field = |k: &str| self.training.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let commit = field("git_commit").map(|c| c.chars().take(12).collect::<String>());
        let label = match (field("date"), commit) {
            (Some(d), Some(c)) => format!("trained {d}, commit {c}"),
            (Some(d), None) => format!("trained {d}"),
            (None, Some(c)) => format!("commit {c}"),
            (None, None) => format!("format {}", self.format),
        };
        label.chars().take(64).collect()
    }

    /// Network input value of one HU value.
    #[inline]
    pub fn normalise(&self, hu: f32) -> f32 {
        let n = &self.normalisation;
        (hu.clamp(n.clip_hu[0], n.clip_hu[1]) - n.mean_hu) / n.std_hu
    }
}

#[cfg(test)]
pub(crate) fn example_json() -> String {
    r#"{"format": 1, "spacing_mm_xyz": [2.0, 2.0, 2.0], "patch_size_zyx": [32, 48, 64],
        "normalisation": {"clip_hu": [-1000.0, 800.0], "mean_hu": -300.0, "std_hu": 400.0},
        "class_names": ["background", "artery", "vein", "aorta"],
        "hu_windows": {"contrast": {"artery": [150, 700], "vein": [120, 600], "aorta": [150, 700]},
                       "plain": {"artery": [10, 80], "vein": [10, 80], "aorta": [10, 80]}},
        "orientation": "LPS", "training": {"seed": 7}}"#
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_description_and_applies_it() {
        let info = ModelInfo::from_json(&example_json()).unwrap();
        assert_eq!(info.patch_size_xyz(), [64, 48, 32]);
        assert_eq!(info.windows(true).window(2), Some((120.0, 600.0)));
        assert_eq!(info.windows(false).window(3), Some((10.0, 80.0)));
        // Clipped, then z-scored.
        assert_eq!(info.normalise(-2000.0), (-1000.0 + 300.0) / 400.0);
        assert_eq!(info.normalise(100.0), 1.0);
    }

    #[test]
    fn refuses_each_inconsistent_field_with_its_name() {
        let good = example_json();
        for (from, to, key) in [
            ("\"format\": 1", "\"format\": 2", "format"),
            ("[2.0, 2.0, 2.0]", "[2.0, 0.0, 2.0]", "spacing_mm_xyz"),
            ("[32, 48, 64]", "[30, 48, 64]", "patch_size_zyx"),
            ("\"std_hu\": 400.0", "\"std_hu\": 0.0", "normalisation"),
            ("\"vein\", \"aorta\"]", "\"aorta\", \"vein\"]", "class_names"),
            ("\"LPS\"", "\"RAS\"", "orientation"),
            ("\"vein\": [10, 80]", "\"vein\": [80, 10]", "hu_windows.plain.vein"),
        ] {
            let text = good.replacen(from, to, 1);
            assert_ne!(text, good, "{from}");
            let err = ModelInfo::from_json(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(ModelInfo::from_json("{").is_err());
    }

    #[test]
    fn the_version_label_names_the_training_run() {
        let mut info = ModelInfo::from_json(&example_json()).unwrap();
        assert_eq!(info.version_label(), "format 1");
        info.training = serde_json::json!({"date": "2026-11-30T17:30:37Z", "git_commit": "f4bb9358fcfc2f7daa0bdfb249baf0445829f791"});
        assert_eq!(info.version_label(), "trained 2026-11-30T17:30:37Z, commit f4bb9358fcfc");
    }
}
