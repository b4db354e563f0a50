//! A digital-patient case on disk: the planning CT as a DICOM series and NIfTI, the
//! vessel labels, lesion and marker masks, optional 4-D CT phases, and `case.json` with the
//! ground truth. Written by `needle_nav phantom`; read by tests, benchmarks and training.
//!
//! A case is written into a hidden staging folder inside the output folder and moved into place
//! once complete, `case.json` last. An existing case is replaced only when asked (`overwrite`):
//! then every file of the old case that the new one does not rewrite goes too (no stale slices
//! or phases), and a folder holding anything that is not part of a case is refused untouched.

use crate::breathing::BreathingSignal;
use crate::phantom::{labels, BodyRegion, MotionState, Phantom};
use crate::tracker_sim::ct_to_tracker_transform;
use needle_nav_core::case_file::{
    BreathingRecord, CaseFile, CaseFiles, CaseMarker, CasePhase, CtToTracker, LabelCount, MarkerRole, PhaseMarker,
    Reference, VesselSummary, DIGITAL_PATIENT_FORMAT,
};
use needle_nav_imaging::dicom_write::{self, SeriesInfo};
use needle_nav_imaging::nifti;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How a digital patient was made (`needle_nav phantom`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaseConfig {
    pub phantom: crate::phantom::PhantomConfig,
    pub breathing: crate::breathing::BreathingConfig,
    /// Number of 4-D CT phases over one breathing cycle (1: the planning CT only).
    pub phases: usize,
}

impl Default for CaseConfig {
    fn default() -> Self {
        CaseConfig {
            phantom: crate::phantom::PhantomConfig::default(),
            breathing: crate::breathing::BreathingConfig::default(),
            phases: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error(transparent)]
    Phantom(#[from] crate::phantom::PhantomError),
    #[error("breathing: {0}")]
    Breathing(String),
    #[error(transparent)]
    Dicom(#[from] dicom_write::DicomWriteError),
    #[error(transparent)]
    Nifti(#[from] nifti::NiftiError),
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    CaseFile(#[from] needle_nav_core::case_file::CaseFileError),
    #[error("phases must be within 1..=20, not {0}")]
    Phases(usize),
    #[error(
        "{dir} already holds a needle_nav case; it is kept: choose another folder, or replace it with --overwrite \
         (its case.json, ct/, NIfTI files and phases/ are replaced; files of the old case the new one does not \
         write, such as its 4-D phases, are removed)"
    )]
    Exists { dir: String },
    #[error(
        "{dir} holds {} that {} not part of a needle_nav case ({}); nothing in it is replaced or removed: \
         choose a new or empty folder",
        if .entries.len() == 1 { "an entry" } else { "entries" },
        if .entries.len() == 1 { "is" } else { "are" },
        .entries.join(", ")
    )]
    NotACase { dir: String, entries: Vec<String> },
}

/// Files and folders at the top of a case folder (case.json last: it marks a complete case).
const CASE_FILES: [&str; 5] = ["ct.nii.gz", "labels.nii.gz", "lesion_mask.nii.gz", "marker_mask.nii.gz", "case.json"];
const CASE_DIRS: [&str; 2] = ["ct", "phases"];

/// Whether a DICOM series folder of a case holds only our slices.
fn only_slices(dir: &Path) -> Result<bool, std::io::Error> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !(entry.file_type()?.is_file() && name.starts_with("IM_") && name.ends_with(".dcm")) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What is in `dir`: Ok(false) absent or empty (staging leftovers `.partial-*` aside), Ok(true)
/// a needle_nav case and nothing else, Err(NotACase) anything else.
fn holds_a_case(dir: &Path) -> Result<bool, CaseError> {
    let io = |source| CaseError::Io { path: dir.display().to_string(), source };
    if !dir.exists() {
        return Ok(false);
    }
    let mut foreign = Vec::new();
    let mut any = false;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(needle_nav_imaging::output_files::PARTIAL_PREFIX) {
            continue;
        }
        any = true;
        let kind = entry.file_type().map_err(io)?;
        let ours = if kind.is_file() {
            CASE_FILES.contains(&name.as_str())
        } else if kind.is_dir() && name == "ct" {
            only_slices(&entry.path()).map_err(io)?
        } else if kind.is_dir() && name == "phases" {
            let mut ok = true;
            for phase in std::fs::read_dir(entry.path()).map_err(io)? {
                let phase = phase.map_err(io)?;
                let phase_name = phase.file_name().to_string_lossy().to_string();
                ok &= phase.file_type().map_err(io)?.is_dir()
                    && phase_name.starts_with("phase_")
                    && only_slices(&phase.path()).map_err(io)?;
            }
            ok
        } else {
            false
        };
        if !ours {
            foreign.push(name);
        }
    }
    if !any {
        return Ok(false);
    }
    let ours = std::fs::read_to_string(dir.join("case.json"))
        .ok()
        .and_then(|t| t.parse::<CaseFile>().ok())
        .is_some_and(|c| c.is_digital_patient());
    if !ours {
        foreign.insert(0, "no needle_nav case.json".into());
    }
    if foreign.is_empty() {
        Ok(true)
    } else {
        foreign.sort();
        Err(CaseError::NotACase { dir: dir.display().to_string(), entries: foreign })
    }
}

/// Moves the complete case in `staging` into `dir`, replacing the case there: case.json goes
/// first and comes back last, so an interrupted replacement never looks like a complete case.
fn put_in_place(staging: &Path, dir: &Path) -> Result<(), CaseError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CaseError::Io { path, source }
    };
    let marker = dir.join("case.json");
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(io(&marker))?;
    }
    for name in CASE_DIRS {
        let old = dir.join(name);
        if old.is_dir() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
    }
    for name in CASE_FILES.iter().chain(CASE_DIRS.iter()).filter(|n| **n != "case.json") {
        let (new, old) = (staging.join(name), dir.join(name));
        if new.exists() {
            std::fs::rename(&new, &old).map_err(io(&old))?;
        } else if old.is_file() {
            std::fs::remove_file(&old).map_err(io(&old))?;
        }
    }
    std::fs::rename(staging.join("case.json"), &marker).map_err(io(&marker))?;
    std::fs::remove_dir_all(staging).map_err(io(staging))
}

/// What was written and how long each stage took.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSummary {
    pub dir: PathBuf,
    pub voxels: usize,
    pub seconds_render: f64,
    pub seconds_dicom: f64,
    pub seconds_nifti: f64,
    pub seconds_total: f64,
}

/// Whether a marker of this region is a registration (still) or correction (moving) marker.
pub fn expected_class(region: BodyRegion) -> MarkerRole {
    match region {
        BodyRegion::Sternum | BodyRegion::UpperChest => MarkerRole::Registration,
        BodyRegion::LowerChest | BodyRegion::Abdomen => MarkerRole::Correction,
    }
}

fn hhmmss(base_s: f64, offset_s: f64) -> String {
    let t = base_s + offset_s;
    let h = (t / 3600.0).floor();
    let m = ((t - h * 3600.0) / 60.0).floor();
    let s = t - h * 3600.0 - m * 60.0;
    format!("{:02}{:02}{:09.6}", h as u32, m as u32, s)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn pt(p: &nalgebra::Point3<f64>) -> [f64; 3] {
    [round3(p.x), round3(p.y), round3(p.z)]
}

/// Writes a case into `dir` (created); refuses a folder that already holds a case.
pub fn write_case(dir: &Path, config: &CaseConfig) -> Result<CaseSummary, CaseError> {
    write_case_with(dir, config, false)
}

/// Writes a case into `dir` (created). A folder holding a case is refused unless `overwrite`;
/// one holding anything else is always refused. The configuration, size included, is checked
/// before anything is allocated or written.
pub fn write_case_with(dir: &Path, config: &CaseConfig, overwrite: bool) -> Result<CaseSummary, CaseError> {
    let started = Instant::now();
    if !(1..=20).contains(&config.phases) {
        return Err(CaseError::Phases(config.phases));
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CaseError::Io { path, source }
    };
    let phantom = Phantom::new(config.phantom.clone())?;
    if holds_a_case(dir)? && !overwrite {
        return Err(CaseError::Exists { dir: dir.display().to_string() });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let staging = needle_nav_imaging::output_files::partial_path(dir, "case");
    let written = write_files(&staging, config, phantom, started);
    match written {
        Ok(mut summary) => {
            put_in_place(&staging, dir)?;
            summary.dir = dir.to_path_buf();
            summary.seconds_total = started.elapsed().as_secs_f64();
            Ok(summary)
        }
        Err(e) => {
            // Our own staging folder: nothing else is in it.
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The case's files into `dir` (the staging folder).
fn write_files(dir: &Path, config: &CaseConfig, phantom: Phantom, started: Instant) -> Result<CaseSummary, CaseError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CaseError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let signal =
        BreathingSignal::synthetic(&config.breathing, 120.0).map_err(|e| CaseError::Breathing(e.to_string()))?;
    let cycle = signal
        .cycles()
        .iter()
        .find(|c| c.start_s > 0.0)
        .copied()
        .ok_or_else(|| CaseError::Breathing("the breathing signal has no cycle".into()))?;
    let lag = phantom.config.lesion_lag_s;
    let state_at = |t: f64| MotionState::at(|x| signal.inhale(x), t, lag);
    let seed = phantom.config.seed;
    let study_uid = dicom_write::uid_from_seed(seed, "study");
    let frame_of_reference_uid = dicom_write::uid_from_seed(seed, "frame_of_reference");
    let contrast_agent = phantom.config.contrast.then(|| "Iohexol 350".to_string());
    let base_time_s = 10.0 * 3600.0;
    let series_info = |n: u32, description: String, t: f64| SeriesInfo {
        patient_name: format!("Digital^Patient{seed}"),
        patient_id: format!("NN-{seed:06}"),
        study_uid: study_uid.clone(),
        series_uid: dicom_write::uid_from_seed(seed, &format!("series-{n}")),
        frame_of_reference_uid: frame_of_reference_uid.clone(),
        series_number: n,
        series_description: description,
        date: "20260101".into(),
        acquisition_time: hhmmss(base_time_s, t),
        contrast_agent: contrast_agent.clone(),
    };
    let kind = if phantom.config.contrast { "contrast" } else { "plain" };
    let phase_markers = |state: &MotionState| -> Vec<PhaseMarker> {
        phantom
            .markers
            .iter()
            .map(|m| PhaseMarker { id: m.id, centre_mm: pt(&phantom.marker_centre(m, state)) })
            .collect()
    };

    // Planning CT: end-exhale at the start of a cycle.
    let (mut seconds_render, mut seconds_dicom, mut seconds_nifti) = (0.0, 0.0, 0.0);
    let t_ref = cycle.start_s;
    let reference = state_at(t_ref);
    let t = Instant::now();
    let frame = phantom.render(&reference, 0);
    seconds_render += t.elapsed().as_secs_f64();
    let t = Instant::now();
    dicom_write::write_ct_series(&dir.join("ct"), &frame.hu, &series_info(1, format!("{kind} CT, end-exhale"), t_ref))?;
    seconds_dicom += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let g = &frame.hu.geometry.clone();
    nifti::write(&dir.join("ct.nii.gz"), g, &frame.hu.data, &format!("needle_nav {kind} CT (HU)"))?;
    nifti::write(&dir.join("labels.nii.gz"), g, &frame.labels.data, "0 bg 1 artery 2 vein 3 aorta")?;
    nifti::write(&dir.join("lesion_mask.nii.gz"), g, &frame.lesion_mask.data, "lesion")?;
    nifti::write(&dir.join("marker_mask.nii.gz"), g, &frame.marker_mask.data, "marker id")?;
    seconds_nifti += t.elapsed().as_secs_f64();
    let mut label_counts = BTreeMap::new();
    let voxel_ml = g.spacing_mm.iter().product::<f64>() * 1e-3;
    for (value, name) in labels::CLASS_NAMES.iter().enumerate().skip(1) {
        let n = frame.labels.data.iter().filter(|&&l| l == value as u8).count();
        label_counts.insert(name.to_string(), LabelCount { voxels: n, volume_ml: round3(n as f64 * voxel_ml) });
    }
    let voxels = g.voxel_count();
    drop(frame);

    // 4-D CT: phases spread over the same cycle.
    let mut phases = Vec::new();
    if config.phases > 1 {
        for k in 0..config.phases {
            let t_k = cycle.start_s + cycle.period_s * k as f64 / config.phases as f64;
            let state = state_at(t_k);
            let t = Instant::now();
            let frame = phantom.render(&state, k as u64 + 1);
            seconds_render += t.elapsed().as_secs_f64();
            let rel = format!("phases/phase_{k:02}");
            let t = Instant::now();
            let info = series_info(
                100 + k as u32,
                format!("{kind} 4D CT phase {k}/{} ({:.0}% inhale)", config.phases, 100.0 * state.skin_inhale),
                t_k,
            );
            dicom_write::write_ct_series(&dir.join(&rel), &frame.hu, &info)?;
            seconds_dicom += t.elapsed().as_secs_f64();
            phases.push(CasePhase {
                index: Some(k),
                dicom_dir: rel,
                time_s: round3(t_k),
                acquisition_time: Some(info.acquisition_time),
                series_instance_uid: Some(info.series_uid),
                motion: serde_json::to_value(state).ok(),
                lesion_centre_mm: pt(&phantom.lesion_centre(&state)),
                markers: phase_markers(&state),
            });
        }
    }

    let tf = ct_to_tracker_transform(seed);
    let q = tf.rotation.quaternion();
    let min_vessel_radius = phantom.vessels.iter().map(|s| s.radius_b).fold(f64::INFINITY, f64::min);
    let truth = CaseFile {
        format: Some(DIGITAL_PATIENT_FORMAT.into()),
        units: Some(
            "positions in mm in CT patient coordinates (DICOM LPS); ct_to_tracker maps CT metres to tracker metres"
                .into(),
        ),
        config: serde_json::to_value(config).ok(),
        geometry: Some(g.clone()),
        files: CaseFiles {
            ct_dicom_dir: Some("ct".into()),
            ct_nifti: Some("ct.nii.gz".into()),
            labels_nifti: Some("labels.nii.gz".into()),
            lesion_mask_nifti: Some("lesion_mask.nii.gz".into()),
            marker_mask_nifti: Some("marker_mask.nii.gz".into()),
        },
        class_names: Some(labels::CLASS_NAMES.iter().map(|s| s.to_string()).collect()),
        reference: Reference {
            time_s: Some(round3(t_ref)),
            series_instance_uid: Some(dicom_write::uid_from_seed(seed, "series-1")),
            motion: serde_json::to_value(reference).ok(),
            lesion_centre_mm: pt(&phantom.lesion_centre(&reference)),
            lesion_radius_mm: Some(phantom.config.lesion_radius_mm),
            markers: phantom
                .markers
                .iter()
                .map(|m| CaseMarker {
                    id: m.id,
                    region: serde_json::to_value(m.region).unwrap_or_default(),
                    over_bone: m.over_bone,
                    class: expected_class(m.region),
                    radius_mm: m.radius_mm,
                    centre_mm: pt(&phantom.marker_centre(m, &reference)),
                    excursion_mm_per_unit_breathing: [
                        round3(m.excursion_mm.x),
                        round3(m.excursion_mm.y),
                        round3(m.excursion_mm.z),
                    ],
                })
                .collect(),
            label_counts: Some(label_counts),
        },
        preset_entry_mm: Some(pt(&phantom.preset_entry_mm())),
        ct_to_tracker: Some(CtToTracker {
            rotation_xyzw: [q.i, q.j, q.k, q.w],
            translation_m: [tf.translation.x, tf.translation.y, tf.translation.z],
        }),
        breathing: Some(BreathingRecord {
            cycle_used: serde_json::to_value(cycle).unwrap_or_default(),
            cycles: signal.cycles().iter().take(30).filter_map(|c| serde_json::to_value(c).ok()).collect(),
        }),
        vessels: Some(VesselSummary {
            segments: phantom.vessels.len(),
            min_radius_mm: min_vessel_radius.is_finite().then_some(min_vessel_radius),
        }),
        phases: Some(phases),
        planning: None,
        coordinates: None,
        found_by: None,
        field_of_view: None,
        lesion_extent: None,
        lesion_picture: None,
        planted_paths_picture: None,
        planted_unsafe_paths: Vec::new(),
    };
    let path = dir.join("case.json");
    let text = truth.to_string()?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(CaseSummary {
        dir: dir.to_path_buf(),
        voxels,
        seconds_render,
        seconds_dicom,
        seconds_nifti,
        seconds_total: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::PhantomConfig;

    #[test]
    fn an_existing_case_is_kept_unless_replaced_and_a_replacement_leaves_nothing_stale() {
        let dir = std::env::temp_dir().join(format!("nn_case_overwrite_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let small = |phases, slices| CaseConfig {
            phantom: PhantomConfig { dims: [48, 40, slices], spacing_mm: [8.0, 8.0, 8.0], ..Default::default() },
            phases,
            ..Default::default()
        };
        let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
        // Too big: refused before the folder is even created.
        let huge =
            CaseConfig { phantom: PhantomConfig { dims: [2048; 3], ..Default::default() }, ..Default::default() };
        let e = write_case(&dir, &huge).unwrap_err().to_string();
        assert!(e.contains("8589934592 voxels") && e.contains("max_voxels"), "{e}");
        assert!(!dir.exists());
        write_case(&dir, &small(3, 40)).unwrap();
        // What the writer writes, the typed reader reads.
        let case: CaseFile = std::fs::read_to_string(dir.join("case.json")).unwrap().parse().unwrap();
        assert!(case.is_digital_patient() && case.phases().len() == 3 && case.reference.markers.len() == 12);
        assert!(case.preset_entry_mm.is_some());
        let config: CaseConfig = serde_json::from_value(case.config.clone().unwrap()).unwrap();
        assert_eq!(config, small(3, 40));
        assert_eq!((count(&dir.join("ct")), count(&dir.join("phases"))), (40, 3));
        // Issue 11: a second case into the same folder was written over the first.
        let e = write_case(&dir, &small(1, 30)).unwrap_err();
        assert!(matches!(e, CaseError::Exists { .. }), "{e}");
        assert_eq!(count(&dir.join("ct")), 40);
        // Replaced: 30 slices, no stale slices 31..40, no phases of the old case.
        write_case_with(&dir, &small(1, 30), true).unwrap();
        assert_eq!(count(&dir.join("ct")), 30);
        assert!(!dir.join("phases").exists());
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        assert_eq!(names.len(), 6, "{names:?}");
        // Something that is not part of a case: refused, even with overwrite, and nothing removed.
        std::fs::write(dir.join("ct").join("notes.txt"), "mine").unwrap();
        std::fs::create_dir(dir.join("seg")).unwrap();
        let e = write_case_with(&dir, &small(1, 30), true).unwrap_err().to_string();
        assert!(e.contains("(ct, seg)") && e.contains("not part of a needle_nav case"), "{e}");
        assert_eq!(count(&dir.join("ct")), 31);
        let elsewhere = std::env::temp_dir().join(format!("nn_case_foreign_{}", std::process::id()));
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("thesis.tex"), "x").unwrap();
        let e = write_case_with(&elsewhere, &small(1, 30), true).unwrap_err().to_string();
        assert!(e.contains("no needle_nav case.json, thesis.tex"), "{e}");
        std::fs::remove_dir_all(&elsewhere).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acquisition_times_are_dicom_tm() {
        assert_eq!(hhmmss(36000.0, 0.0), "100000.000000");
        assert_eq!(hhmmss(36000.0, 61.25), "100101.250000");
    }
}
