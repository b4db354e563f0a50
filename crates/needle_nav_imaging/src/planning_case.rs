//! Reading a planning case folder (as `needle_nav phantom` writes it, or a real case under
//! `cases/`): `case.json` for the plan, and the markers *detected* in the DICOM series.

use crate::dicom_read;
use nalgebra::Point3;
use needle_nav_core::ct_markers::{detect_markers, track_across_frames, MarkerDetectionConfig};
use needle_nav_core::guidance::{CtPhase, GuidanceError, PlanningCase, SelectionConfig};
use std::path::Path;

fn mm(v: &serde_json::Value) -> Option<Point3<f64>> {
    let a = v.as_array()?;
    Some(Point3::new(a.first()?.as_f64()?, a.get(1)?.as_f64()?, a.get(2)?.as_f64()?) * 1e-3)
}

    /// Reads a case folder as `needle_nav phantom` writes it: markers are *detected* in the DICOM
    /// series `ct/` (and in every 4-D phase); the plan (lesion centre per phase, preset entry) comes from `case.json`.
pub fn load_planning_case(
    dir: &Path,
    detection: &MarkerDetectionConfig,
    selection: &SelectionConfig,
) -> Result<PlanningCase, GuidanceError> {
    let case_err = |reason: String| GuidanceError::Case { path: dir.display().to_string(), reason };
    let text = std::fs::read_to_string(dir.join("case.json")).map_err(|e| case_err(format!("case.json: {e}")))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| case_err(format!("case.json: {e}")))?;
    let lesion_m = mm(&doc["reference"]["lesion_centre_mm"])
        .ok_or_else(|| case_err("case.json has no reference.lesion_centre_mm".into()))?;
    let entry_m = mm(&doc["preset_entry_mm"]).ok_or_else(|| case_err("case.json has no preset_entry_mm".into()))?;
    // The whole of case.json is checked before any DICOM is read: a bad phase entry is named
    // at once instead of after seconds of marker detection.
    let mut phase_entries = Vec::new();
    if let Some(list) = doc["phases"].as_array().filter(|l| l.len() >= 2) {
        for ph in list {
            let rel = ph["dicom_dir"].as_str().ok_or_else(|| case_err("a phase has no dicom_dir".into()))?;
            let t = ph["time_s"].as_f64().ok_or_else(|| case_err("a phase has no time_s".into()))?;
            let lesion =
                mm(&ph["lesion_centre_mm"]).ok_or_else(|| case_err("a phase has no lesion_centre_mm".into()))?;
            phase_entries.push((rel, t, lesion));
        }
    }
    let detect = |folder: &Path| -> Result<Vec<needle_nav_core::ct_markers::DetectedMarker>, GuidanceError> {
        let series = dicom_read::load_series(folder, None)
            .map_err(|e| GuidanceError::CtImage { path: folder.display().to_string(), reason: e.to_string() })?;
        Ok(detect_markers(&series.volume, detection).0)
    };
    let reference = detect(&dir.join("ct"))?;
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
        let curves = track_across_frames(&frames, 30.0).map_err(|e| GuidanceError::CtMarkers(e.to_string()))?;
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
                    p.iter().any(|b| {
                        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt() >= 3.0
                    })
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
            )
            .map_err(|e| GuidanceError::CtMarkers(e.to_string()))?;
            selection_note = format!(
                "{} markers within {:.0} mm of the entry; chosen combination spread {:.2} mm",
                candidates.len(),
                selection.search_radius_m * 1e3,
                chosen.spread_mm
            );
            // Curve indices -> planning-CT marker indices.
            selected_correction = Some(
                chosen.members.iter().filter_map(|c| order.iter().position(|o| o == c)).collect::<Vec<usize>>(),
            );
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
