//! `case.json`, the one description of a planning case: written by `needle_nav phantom`
//! (digital patients, `needle_nav_sim::patient_case`) or by hand (real CT cases under `cases/`), read by
//! the guidance pipeline (`needle_nav_imaging::planning_case::load_planning_case`) and the trajectory
//! planner (`needle_nav_planning::plan_files::planning_input`).
//!
//! Types and the text conversions only; reading and writing the file is the caller's.
//!
//! Units: positions are millimetres in CT patient coordinates (DICOM LPS), times seconds,
//! angles degrees, unless a field's name says otherwise (`_m`: metres).
//!
//! Compatibility: every field a case written before this type existed carries is known here;
//! what only some cases have is optional. Unknown fields are **rejected** (`deny_unknown_fields`
//! at every level), with the field's path and the line in the message: a misspelt optional field
//! (`lesion_radius` for `lesion_radius_mm`) would otherwise be silently dropped and its default used.

use crate::volume::Geometry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `format` string of digital-patient cases (a case folder whose `format` starts with
/// "needle_nav digital patient case" may be replaced by `needle_nav phantom --overwrite`).
pub const DIGITAL_PATIENT_FORMAT: &str = "needle_nav digital patient case, version 1";

/// The whole of `case.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// [`DIGITAL_PATIENT_FORMAT`] for digital patients; absent in hand-written cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Free text on the units (digital patients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// The configuration a digital patient was made from (`needle_nav_sim::patient_case::CaseConfig`,
    /// kept as JSON here: the core reads no simulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Grid of the planning CT (digital patients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<Geometry>,
    #[serde(default)]
    pub files: CaseFiles,
    /// Names of the label values in `labels_nifti`, by value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// The planning CT: lesion and markers at its breathing phase.
    pub reference: Reference,
    /// Preset needle entry on the skin [mm, LPS]; needed by the guidance pipeline, not by the planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset_entry_mm: Option<[f64; 3]>,
    /// The simulated tracker's pose (digital patients): CT metres to tracker metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_to_tracker: Option<CtToTracker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breathing: Option<BreathingRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vessels: Option<VesselSummary>,
    /// 4-D CT phases; absent or fewer than two: no 4-D CT (digital patients always write the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<CasePhase>>,
    /// The case's own planning constraints (override the planner's parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning: Option<CasePlanning>,
    /// Documentation of hand-made (real CT) cases: how coordinates were read, how the lesion was found, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_of_view: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesion_extent: Option<String>,
    /// Picture file (relative to the case folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesion_picture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted_paths_picture: Option<String>,
    /// Paths known to be unsafe, for the planner's tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planted_unsafe_paths: Vec<PlantedPath>,
}

/// Files of the case, relative to the case folder.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFiles {
    /// The planning CT: a DICOM folder (or a NIfTI file, for the planner). Absent: `ct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_dicom_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_nifti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_nifti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesion_mask_nifti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker_mask_nifti: Option<String>,
}

impl CaseFiles {
    /// The planning CT's path relative to the case folder.
    pub fn ct(&self) -> &str {
        self.ct_dicom_dir.as_deref().unwrap_or("ct")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Time of the planning CT in the breathing signal [s] (digital patients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<serde_json::Value>,
    /// Lesion centre [mm, LPS]: the target.
    pub lesion_centre_mm: [f64; 3],
    /// Lesion radius [mm]; absent: the target is a point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesion_radius_mm: Option<f64>,
    /// The skin markers as placed (digital patients: the truth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<CaseMarker>,
    /// Voxels per vessel class in `labels_nifti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_counts: Option<BTreeMap<String, LabelCount>>,
}

/// What a marker is used for: registration (still, over bone) or breathing correction (moving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerRole {
    Registration,
    Correction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseMarker {
    pub id: u32,
    pub region: serde_json::Value,
    pub over_bone: bool,
    /// The class a classifier should find.
    pub class: MarkerRole,
    /// Sphere radius [mm].
    pub radius_mm: f64,
    /// Centre at the planning CT's phase [mm, LPS].
    pub centre_mm: [f64; 3],
    /// Displacement per unit of breathing signal (expansion, longitudinal, lateral) [mm].
    pub excursion_mm_per_unit_breathing: [f64; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCount {
    pub voxels: usize,
    /// [ml]
    pub volume_ml: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtToTracker {
    /// Unit quaternion (x, y, z, w).
    pub rotation_xyzw: [f64; 4],
    /// [m]
    pub translation_m: [f64; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreathingRecord {
    /// The breath the planning CT and the 4-D phases were taken in.
    pub cycle_used: serde_json::Value,
    /// The first breaths of the signal.
    pub cycles: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VesselSummary {
    pub segments: usize,
    /// Thinnest vessel radius [mm]; null when there are no vessels.
    pub min_radius_mm: Option<f64>,
}

/// One 4-D CT phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePhase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// DICOM folder relative to the case folder.
    pub dicom_dir: String,
    /// Time in the breathing signal [s].
    pub time_s: f64,
    /// DICOM TM (HHMMSS.FFFFFF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<serde_json::Value>,
    /// Lesion centre in this phase [mm, LPS].
    pub lesion_centre_mm: [f64; 3],
    /// True marker centres in this phase (digital patients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<PhaseMarker>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseMarker {
    pub id: u32,
    /// [mm, LPS]
    pub centre_mm: [f64; 3],
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePlanning {
    /// Preferred approach, from the target towards the skin (LPS; need not be unit length, not zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approach_direction: Option<[f64; 3]>,
    /// Largest angle of a path from the approach direction [deg], within [0, 90].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_angle_deg: Option<f64>,
    /// Why this approach (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantedPath {
    /// The structure the path crosses.
    pub through: String,
    /// [mm, LPS]
    pub entry_mm: [f64; 3],
    /// The obstacle layer the planner must name.
    pub expected_layer: String,
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaseFileError {
    /// Not JSON, a missing or unknown field, or a value of the wrong type; `path` is the field's.
    #[error("case.json: {path}: {reason}")]
    Parse { path: String, reason: String },
    /// Well-formed but not usable.
    #[error("case.json: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("case.json could not be written: {0}")]
    Write(String),
}

fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl std::str::FromStr for CaseFile {
    type Err = CaseFileError;

    /// Parses and checks `case.json`. Errors name the field (`reference.lesion_centre_mm`,
    /// `phases[1].time_s`, an unknown field's name under its parent) and serde's reason with line and column.
    fn from_str(text: &str) -> Result<CaseFile, CaseFileError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let case: CaseFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            CaseFileError::Parse {
                path: if path == "." { "(top level)".into() } else { path },
                reason: e.into_inner().to_string(),
            }
        })?;
        case.validate()?;
        Ok(case)
    }
}

impl CaseFile {
    /// Pretty-printed JSON, as `needle_nav phantom` writes it.
    pub fn to_string(&self) -> Result<String, CaseFileError> {
        serde_json::to_string_pretty(self).map_err(|e| CaseFileError::Write(e.to_string()))
    }

    /// Whether a digital patient's (replaceable by `needle_nav phantom --overwrite`).
    pub fn is_digital_patient(&self) -> bool {
        self.format.as_deref().is_some_and(|f| f.starts_with("needle_nav digital patient case"))
    }

    /// The 4-D CT phases (empty: none).
    pub fn phases(&self) -> &[CasePhase] {
        self.phases.as_deref().unwrap_or(&[])
    }

    /// Lesion centre [m, LPS].
    pub fn lesion_m(&self) -> nalgebra::Point3<f64> {
        nalgebra::Point3::from(self.reference.lesion_centre_mm) * 1e-3
    }

    /// Values the readers rely on: finite positions, a non-negative radius, a usable planning cone.
    pub fn validate(&self) -> Result<(), CaseFileError> {
        let bad = |field: &'static str, reason: String| Err(CaseFileError::Invalid { field, reason });
        if !finite(&self.reference.lesion_centre_mm) {
            return bad(
                "reference.lesion_centre_mm",
                format!("{:?} is not a position", self.reference.lesion_centre_mm),
            );
        }
        if let Some(r) = self.reference.lesion_radius_mm {
            if !(r.is_finite() && r >= 0.0) {
                return bad("reference.lesion_radius_mm", format!("{r} is not a radius"));
            }
        }
        if let Some(p) = self.preset_entry_mm {
            if !finite(&p) {
                return bad("preset_entry_mm", format!("{p:?} is not a position"));
            }
        }
        for ph in self.phases() {
            if !(ph.time_s.is_finite() && finite(&ph.lesion_centre_mm)) {
                return bad(
                    "phases",
                    format!("phase {:?} at {} s has no finite time and lesion centre", ph.dicom_dir, ph.time_s),
                );
            }
        }
        if let Some(p) = &self.planning {
            if let Some(d) = p.approach_direction {
                if !finite(&d) || d.iter().all(|x| *x == 0.0) {
                    return bad("planning.approach_direction", format!("{d:?} is not a direction"));
                }
            }
            if let Some(a) = p.max_angle_deg {
                if !(0.0..=90.0).contains(&a) {
                    return bad("planning.max_angle_deg", format!("{a} must be a number in [0, 90]"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn the_real_cases_read_and_round_trip() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("cases");
        let mut n = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path().join("case.json");
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let case = CaseFile::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!case.is_digital_patient());
            assert!(case.reference.lesion_radius_mm.is_some());
            // Nothing is lost: the typed file writes back the same JSON value.
            let back: serde_json::Value = serde_json::from_str(&case.to_string().unwrap()).unwrap();
            let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, orig, "{}", path.display());
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn minimal_cases_read_and_errors_name_the_field() {
        let c = CaseFile::from_str(r#"{"reference": {"lesion_centre_mm": [1, 2, 3]}}"#).unwrap();
        assert_eq!(c.reference.lesion_centre_mm, [1.0, 2.0, 3.0]);
        assert_eq!((c.files.ct(), c.preset_entry_mm, c.phases().len()), ("ct", None, 0));
        let e = CaseFile::from_str("{}").unwrap_err();
        assert!(e.to_string().contains("reference"), "{e}");
        let e =
            CaseFile::from_str(r#"{"reference": {"lesion_centre_mm": [1, 2, 3], "lesion_radius": 4}}"#).unwrap_err();
        assert!(
            matches!(&e, CaseFileError::Parse { path, reason } if path == "reference.lesion_radius" && reason.contains("unknown field")),
            "{e}"
        );
        let e = CaseFile::from_str(
            r#"{"reference": {"lesion_centre_mm": [1, 2, 3]}, "phases": [{"dicom_dir": "a", "time_s": 0, "lesion_centre_mm": [0, 0, 0]}, {"dicom_dir": "b", "time_s": null, "lesion_centre_mm": [0, 0, 0]}]}"#,
        )
        .unwrap_err();
        assert!(matches!(&e, CaseFileError::Parse { path, .. } if path == "phases[1].time_s"), "{e}");
        let e =
            CaseFile::from_str(r#"{"reference": {"lesion_centre_mm": [1, 2, 3]}, "planning": {"max_angle_deg": 95}}"#)
                .unwrap_err();
        assert!(matches!(e, CaseFileError::Invalid { field: "planning.max_angle_deg", .. }), "{e}");
        let e = CaseFile::from_str(r#"{"reference": {"lesion_centre_mm": [1, 2, 3], "lesion_radius_mm": -1}}"#)
            .unwrap_err();
        assert!(matches!(e, CaseFileError::Invalid { field: "reference.lesion_radius_mm", .. }), "{e}");
    }
}
