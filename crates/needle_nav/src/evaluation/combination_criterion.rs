//! Which combination criterion is better: the correction markers chosen from the 4-D CT by the
//! smallest range of their entry-displacement features (the method's) or by the smallest standard
//! deviation (the earlier rule), judged by the target and entry errors against the truth of digital
//! patients. Part of `needle_nav evaluate`.
//!
//! Per patient: a planning case with 8 phases over one breath (true marker centres plus the CT
//! localisation error, as in the tracking study), candidates = markers within the search radius of
//! the preset entry that move at least 3 mm over the phases (as `load_planning_case`), combinations
//! of the sizes of [`SETTINGS`]; then 150 s of simulated tracking at 50 Hz (registration markers and correction
//! markers known, so that only the choice differs), targets without prediction from 60 s on.
//! The true entry moves as a soft-tissue skin point at the entry's height (the phantom's skin model).

use super::{digital_patient, p95, planning_case, rms, EvaluationOptions};
use nalgebra::{Point3, Vector3};
use needle_nav_core::correction::PredictionMethod;
use needle_nav_core::ct_markers::{in_search_region, select_combination, CombinationCriterion, MarkerCurve};
use needle_nav_core::guidance::{
    positions_at_ct_phase, register_case, PlanningCase, RegisteredPlan, TargetComputer, TargetConfig,
};
use needle_nav_core::registration::RegistrationConfig;
use needle_nav_core::tracking::TrackerSample;
use needle_nav_sim::phantom::{skin_expansion_profile, MotionState};
use needle_nav_sim::tracker_sim::{SimulatedTracker, TrackerSimConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The settings compared: (search radius [mm], smallest, largest combination). 150 mm reaches the
/// lower-chest markers and the abdominal ones on the entry's side; 2..=4 are needle_target's default
/// sizes; 3..=4 leaves out pairs (a pair's range is twice its standard deviation: the criteria agree
/// on pairs, and a range never grows when a marker is left out, so with pairs allowed range picks pairs);
/// 250 mm makes all six soft-tissue markers candidates (more combinations for the criteria to disagree on).
pub const SETTINGS: [(f64, usize, usize); 4] = [(150.0, 2, 4), (150.0, 3, 4), (250.0, 2, 4), (250.0, 3, 4)];
const RATE_HZ: f64 = 50.0;

/// Errors of the targets computed with one way of choosing the correction markers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionErrors {
    /// None: every correction marker, no selection (for reference).
    pub criterion: Option<CombinationCriterion>,
    /// Patients whose selection or registration failed (left out of the errors).
    pub failed_patients: usize,
    /// Mean number of markers chosen.
    pub mean_markers: f64,
    /// Valid targets compared.
    pub samples: usize,
    pub target_rms_mm: f64,
    pub target_p95_mm: f64,
    pub entry_rms_mm: f64,
    pub entry_p95_mm: f64,
}

/// What each criterion chose for one patient (tracker marker ids).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientChoice {
    pub seed: u64,
    pub candidates: Vec<u32>,
    pub by_range: Vec<u32>,
    pub by_standard_deviation: Vec<u32>,
    /// Entry RMS error with each [mm] (NaN: failed).
    pub entry_rms_range_mm: f64,
    pub entry_rms_standard_deviation_mm: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CombinationCriterionStudy {
    pub patients: usize,
    pub settings: Vec<SettingResult>,
    /// Why the ExtMarker recordings are not used here.
    pub extmarker: String,
}

/// The comparison for one search radius and range of combination sizes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingResult {
    pub search_radius_mm: f64,
    pub min_markers: usize,
    pub max_markers: usize,
    /// Patients for which the two criteria chose different markers.
    pub patients_with_different_choice: usize,
    /// Range, standard deviation, then all correction markers.
    pub results: Vec<CriterionErrors>,
    pub choices: Vec<PatientChoice>,
}

/// Per-patient errors [m] of one choice: (target errors, entry errors).
fn run_patient(seed: u64, case: &PlanningCase, selected: Option<Vec<usize>>) -> Option<(Vec<f64>, Vec<f64>)> {
    let (phantom, signal) = digital_patient(seed, 200.0)?;
    let bone: Vec<u32> = phantom.markers.iter().filter(|m| m.over_bone).map(|m| m.id).collect();
    let soft: Vec<u32> = phantom.markers.iter().filter(|m| !m.over_bone).map(|m| m.id).collect();
    // The true entry: a soft-tissue skin point at the entry's height (phantom::default_markers' model).
    let z = phantom.config.lesion_centre_mm[2];
    let (entry_rest, normal) = phantom.anatomy.skin_point(-0.75 * std::f64::consts::PI, z);
    let ap = skin_expansion_profile(z);
    let excursion = normal * ap + Vector3::new(0.0, 0.0, if z > -60.0 { 0.3 * ap } else { -0.15 * ap });
    let mut sim = SimulatedTracker::new(
        phantom,
        signal,
        TrackerSimConfig { seed, occlusion_rate_per_min: 0.0, ..Default::default() },
    );
    let samples: Vec<(f64, TrackerSample)> = (0..(150.0 * RATE_HZ) as usize)
        .map(|i| {
            let t = i as f64 / RATE_HZ;
            (t, sim.sample(t, (t * 1e9) as i64).0)
        })
        .collect();
    let window: Vec<TrackerSample> =
        samples[(5.0 * RATE_HZ) as usize..(15.0 * RATE_HZ) as usize].iter().map(|(_, s)| s.clone()).collect();
    let reg = register_case(case, &positions_at_ct_phase(&window, &bone, &soft), &RegistrationConfig::default(), 3e-3)
        .ok()?;
    let case = PlanningCase { selected_correction: selected, ..case.clone() };
    let config = TargetConfig { latency_s: 0.0, prediction: PredictionMethod::None, ..Default::default() };
    let mut computer = TargetComputer::new(case, RegisteredPlan::from(&reg), soft, config);
    let lag = sim.phantom().config.lesion_lag_s;
    let (mut target_err, mut entry_err) = (Vec::new(), Vec::new());
    for (t, s) in samples.iter().skip((15.0 * RATE_HZ) as usize) {
        let r = computer.update(*t, s);
        if *t < 60.0 {
            continue;
        }
        let Ok(target) = r else { continue };
        let state = MotionState::at(|x| sim.signal().inhale(x), *t, lag);
        let lesion = sim.ct_to_tracker * (sim.phantom().lesion_centre(&state) * 1e-3);
        let entry = sim.ct_to_tracker * ((entry_rest + excursion * state.skin_inhale) * 1e-3);
        target_err.push((target.target - lesion).norm());
        entry_err.push((target.entry - entry).norm());
    }
    Some((target_err, entry_err))
}

/// Range versus standard deviation (and no selection) on `o.tracking_trials` digital patients, for each of
/// [`SETTINGS`].
pub fn combination_criterion_study(o: &EvaluationOptions) -> CombinationCriterionStudy {
    CombinationCriterionStudy {
        patients: o.tracking_trials,
        settings: SETTINGS.iter().map(|&(radius, min, max)| setting_study(o, radius, min, max)).collect(),
        extmarker: "not used: each ExtMarker session holds 3 markers, so holding one out as the entry leaves one \
                    pair, whose range is twice its standard deviation: both criteria choose the same"
            .into(),
    }
}

fn setting_study(
    o: &EvaluationOptions,
    search_radius_mm: f64,
    min_markers: usize,
    max_markers: usize,
) -> SettingResult {
    let criteria = [Some(CombinationCriterion::Range), Some(CombinationCriterion::StandardDeviation), None];
    // Per criterion: target errors, entry errors [m], failed patients, markers chosen per patient.
    type Tally = (Vec<f64>, Vec<f64>, usize, Vec<usize>);
    let mut errors: Vec<Tally> = criteria.iter().map(|_| (Vec::new(), Vec::new(), 0, Vec::new())).collect();
    let mut choices = Vec::new();
    let mut different = 0;
    for trial in 0..o.tracking_trials {
        let seed = o.seed + 3000 + trial as u64;
        let Some((phantom, signal)) = digital_patient(seed, 200.0) else {
            continue;
        };
        // The planning case: true centres plus the CT localisation error, 8 phases over one breath.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0b1);
        let case = planning_case(&phantom, &signal, 8, o.ct_fle_mm * 1e-3 / 3f64.sqrt(), &mut rng);
        // Curves (index = marker index) and candidates as `needle_nav_imaging::planning_case::load_planning_case` makes them.
        let curves: Vec<MarkerCurve> = (0..case.image_markers_m.len())
            .map(|i| MarkerCurve {
                index: i,
                times_s: case.phases.iter().map(|p| p.time_s).collect(),
                positions_mm: case.phases.iter().map(|p| (p.markers_m[i] * 1e3).into()).collect(),
            })
            .collect();
        let entry_mm: [f64; 3] = (case.entry_m * 1e3).into();
        let moving = |c: &MarkerCurve| {
            let p = &c.positions_mm;
            p.iter().any(|a| p.iter().any(|b| (Point3::from(*a) - Point3::from(*b)).norm() >= 3.0))
        };
        let candidates: Vec<usize> =
            in_search_region(&curves, entry_mm, search_radius_mm).into_iter().filter(|&c| moving(&curves[c])).collect();
        let id = |i: &usize| phantom.markers[*i].id;
        let mut choice = PatientChoice {
            seed,
            candidates: candidates.iter().map(id).collect(),
            by_range: Vec::new(),
            by_standard_deviation: Vec::new(),
            entry_rms_range_mm: f64::NAN,
            entry_rms_standard_deviation_mm: f64::NAN,
        };
        let mut chosen = Vec::new();
        for (c, criterion) in criteria.iter().enumerate() {
            let selected = match criterion {
                Some(cr) => match select_combination(&curves, &candidates, entry_mm, min_markers, max_markers, *cr) {
                    Ok(comb) => Some(comb.members),
                    Err(_) => {
                        errors[c].2 += 1;
                        chosen.push(None);
                        continue;
                    }
                },
                None => None,
            };
            chosen.push(selected.clone());
            let n = selected.as_ref().map(Vec::len).unwrap_or(phantom.markers.iter().filter(|m| !m.over_bone).count());
            match run_patient(seed, &case, selected) {
                Some((t, e)) if !t.is_empty() => {
                    match criterion {
                        Some(CombinationCriterion::Range) => choice.entry_rms_range_mm = rms(&e) * 1e3,
                        Some(CombinationCriterion::StandardDeviation) => {
                            choice.entry_rms_standard_deviation_mm = rms(&e) * 1e3
                        }
                        None => {}
                    }
                    errors[c].0.extend(t);
                    errors[c].1.extend(e);
                    errors[c].3.push(n);
                }
                _ => errors[c].2 += 1,
            }
        }
        choice.by_range = chosen[0].iter().flatten().map(id).collect();
        choice.by_standard_deviation = chosen[1].iter().flatten().map(id).collect();
        if choice.by_range != choice.by_standard_deviation {
            different += 1;
        }
        choices.push(choice);
    }
    let results = criteria
        .iter()
        .zip(&errors)
        .map(|(criterion, (t, e, failed, sizes))| CriterionErrors {
            criterion: *criterion,
            failed_patients: *failed,
            mean_markers: sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
            samples: t.len(),
            target_rms_mm: rms(t) * 1e3,
            target_p95_mm: p95(t) * 1e3,
            entry_rms_mm: rms(e) * 1e3,
            entry_p95_mm: p95(e) * 1e3,
        })
        .collect();
    SettingResult {
        search_radius_mm,
        min_markers,
        max_markers,
        patients_with_different_choice: different,
        results,
        choices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_criteria_run_on_the_same_patients_and_are_reported() {
        let o = EvaluationOptions { trials: 0, tracking_trials: 3, seed: 1, ct_fle_mm: 0.2, latency_s: 0.15 };
        let s = combination_criterion_study(&o);
        eprintln!("{}", serde_json::to_string_pretty(&s).unwrap());
        assert_eq!(s.settings.len(), SETTINGS.len());
        for set in &s.settings {
            assert_eq!(set.results.len(), 3);
            assert_eq!(set.choices.len(), 3);
            for r in &set.results {
                assert!(r.samples > 1000 && r.target_rms_mm < 3.0 && r.entry_rms_mm < 10.0, "{r:?}");
            }
            for c in set.choices.iter().filter(|c| !c.by_range.is_empty()) {
                assert!((set.min_markers..=set.max_markers).contains(&c.by_range.len()), "{c:?}");
                assert!(c.by_range.iter().all(|m| c.candidates.contains(m)), "{c:?}");
            }
        }
    }
}
