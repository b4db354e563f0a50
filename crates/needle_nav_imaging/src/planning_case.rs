//! Reading a planning case folder (as `needle_nav phantom` writes it, or a real case under
//! `cases/`): `case.json` for the plan ([`CaseFile`]), and the markers *detected* in the DICOM
//! series, which must contain the lesion and the markers ([`check_scan_contains`]). The rules
//! are the core's; this module only reads the files.

use crate::dicom_read;
use nalgebra::Point3;
use needle_nav_core::case_file::CaseFile;
use needle_nav_core::ct_markers::{
    detect_markers, track_across_frames, CombinationCriterion, DetectedMarker, MarkerDetectionConfig,
};
use needle_nav_core::guidance::{
    check_scan_contains, CtPhase, GuidanceError, LoadOptions, PlanningCase, SelectionConfig,
};
use std::path::Path;
use std::str::FromStr;

/// A DICOM error, as the guidance reports it (the core knows no DICOM).
fn ct_image_error(folder: &Path, e: dicom_read::DicomReadError) -> GuidanceError {
    GuidanceError::CtImage { path: folder.display().to_string(), reason: e.to_string() }
}

/// [`load_planning_case_with`] with the default combination criterion and scan check.
pub fn load_planning_case(
    dir: &Path,
    detection: &MarkerDetectionConfig,
    selection: &SelectionConfig,
) -> Result<PlanningCase, GuidanceError> {
    let options = LoadOptions { detection: detection.clone(), selection: selection.clone(), ..Default::default() };
    load_planning_case_with(dir, &options)
}

/// Reads a case folder as `needle_nav phantom` writes it: markers are *detected* in the planning CT
/// (`files.ct_dicom_dir`, default `ct/`) and in every 4-D phase; the plan (lesion centre per phase,
/// preset entry) comes from `case.json` ([`CaseFile`]). The planning CT must contain the lesion and
/// the markers ([`check_scan_contains`]); otherwise the user is told to re-place markers and rescan.
pub fn load_planning_case_with(dir: &Path, options: &LoadOptions) -> Result<PlanningCase, GuidanceError> {
    let (detection, selection) = (&options.detection, &options.selection);
    let case_err = |reason: String| GuidanceError::Case { path: dir.display().to_string(), reason };
    let text = std::fs::read_to_string(dir.join("case.json")).map_err(|e| case_err(format!("case.json: {e}")))?;
    // The whole of case.json is checked before any DICOM is read: a bad phase entry is named
    // at once instead of after seconds of marker detection.
    let case = CaseFile::from_str(&text)
        .map_err(|source| GuidanceError::CaseFile { path: dir.display().to_string(), source })?;
    let lesion_m = case.lesion_m();
    let entry_m =
        Point3::from(case.preset_entry_mm.ok_or_else(|| case_err("case.json has no preset_entry_mm".into()))?) * 1e-3;
    let phase_entries: Vec<(&str, f64, Point3<f64>)> = if case.phases().len() >= 2 {
        case.phases()
            .iter()
            .map(|p| (p.dicom_dir.as_str(), p.time_s, Point3::from(p.lesion_centre_mm) * 1e-3))
            .collect()
    } else {
        Vec::new()
    };
    let detect = |folder: &Path| -> Result<Vec<DetectedMarker>, GuidanceError> {
        let series = dicom_read::load_series(folder, None).map_err(|e| ct_image_error(folder, e))?;
        Ok(detect_markers(&series.volume, detection).0)
    };
    let ct_dir = dir.join(case.files.ct());
    let planning_ct = dicom_read::load_series(&ct_dir, None).map_err(|e| ct_image_error(&ct_dir, e))?;
    let (reference, rejected) = detect_markers(&planning_ct.volume, detection);
    let expected: Vec<(u32, [f64; 3], f64)> =
        case.reference.markers.iter().map(|m| (m.id, m.centre_mm, m.radius_mm)).collect();
    let scan = check_scan_contains(
        &planning_ct.volume,
        case.reference.lesion_centre_mm,
        case.reference.lesion_radius_mm.unwrap_or(0.0),
        &expected,
        &rejected,
        &options.scan,
    )?;
    tracing::debug!(
        "planning CT contains the lesion: {:.1} mm from the nearest edge, median {:.0} HU at the target",
        scan.edge_distance_mm,
        scan.median_hu
    );
    drop(planning_ct);
    if reference.len() < 3 {
        return Err(GuidanceError::TooFewCtMarkers { found: reference.len(), need: 3 });
    }
    let image_markers_m: Vec<Point3<f64>> = reference.iter().map(|m| Point3::from(m.centre_mm) * 1e-3).collect();
    let mut phases = Vec::new();
    let (mut selected_correction, mut selection_note) = (None, String::new());
    if !phase_entries.is_empty() {
        let mut frames = Vec::new();
        let mut lesions = Vec::new();
        for (rel, t, lesion) in phase_entries {
            lesions.push(lesion);
            frames.push((t, detect(&dir.join(rel))?));
        }
        let curves = track_across_frames(&frames, 30.0)?;
        // Curves follow the first phase's markers; map them onto the planning CT's by proximity.
        let order: Vec<usize> = image_markers_m
            .iter()
            .map(|p| {
                curves
                    .iter()
                    .enumerate()
                    .map(|(c, curve)| (c, (Point3::from(curve.positions_mm[0]) * 1e-3 - p).norm()))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(c, _)| c)
                    .unwrap_or(0)
            })
            .collect();
        if selection.search_radius_m > 0.0 {
            let entry_mm = [entry_m.x * 1e3, entry_m.y * 1e3, entry_m.z * 1e3];
            // Candidates are correction markers: inside the region and moving with breathing
            // (>= 3 mm across the phases); still markers would trivially agree with each other.
            let moving = |c: usize| {
                let p = &curves[c].positions_mm;
                p.iter().any(|a| {
                    p.iter()
                        .any(|b| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt() >= 3.0)
                })
            };
            let candidates: Vec<usize> =
                needle_nav_core::ct_markers::in_search_region(&curves, entry_mm, selection.search_radius_m * 1e3)
                    .into_iter()
                    .filter(|&c| moving(c))
                    .collect();
            let chosen = needle_nav_core::ct_markers::select_combination(
                &curves,
                &candidates,
                entry_mm,
                selection.min_markers,
                selection.max_markers,
                options.criterion,
            )?;
            selection_note = format!(
                "{} markers within {:.0} mm of the entry; chosen combination {} {:.2} mm",
                candidates.len(),
                selection.search_radius_m * 1e3,
                match chosen.criterion {
                    CombinationCriterion::Range => "range",
                    CombinationCriterion::StandardDeviation => "standard deviation",
                },
                chosen.spread_mm
            );
            // Curve indices -> planning-CT marker indices.
            selected_correction =
                Some(chosen.members.iter().filter_map(|c| order.iter().position(|o| o == c)).collect::<Vec<usize>>());
        }
        for (k, (t, _)) in frames.iter().enumerate() {
            phases.push(CtPhase {
                time_s: *t,
                markers_m: order.iter().map(|&c| Point3::from(curves[c].positions_mm[k]) * 1e-3).collect(),
                lesion_m: lesions[k],
            });
        }
    }
    Ok(PlanningCase { image_markers_m, lesion_m, entry_m, phases, selected_correction, selection_note })
}
