//! The rules of the lesion_registration node, without ROS and without I/O: the window of tracker
//! samples the registration averages, the fixed update grid on tracker time (a bag replayed at any
//! rate registers at the same instants as the live run), and what one update publishes: the
//! registration with the entry from the configured source, or why there is none.
//!
//! The ROS node feeds it samples (already checked by the sample validator), classifications and
//! plans; an update it asks for ([`UpdateInputs`]) is run with [`run_update`] once the planning
//! case is loaded. `needle_nav evaluate` drives the same machine.

use crate::config::{EntrySource, LesionRegistrationConfig};
use nalgebra::Point3;
use needle_nav_core::guidance::{positions_at_ct_phase, register_case, CaseRegistration, GuidanceError, PlanningCase};
use needle_nav_core::sample_validation::CheckedSample;
use needle_nav_core::tracking::TrackerSample;
use std::collections::VecDeque;

/// What one registration update works on, taken when its sample arrived (or from the timer).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateInputs {
    /// Now, the stamp of the sample that started the update (or the clock's, from the timer) [ns].
    pub now_ns: i64,
    pub window: Vec<TrackerSample>,
    pub registration_ids: Vec<u32>,
    pub correction_ids: Vec<u32>,
    pub frame_id: String,
    pub plan_entry_ct: Option<Point3<f64>>,
}

/// A registration ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub registration: CaseRegistration,
    /// The entry from the configured source, in the tracker frame.
    pub entry_tracker: Point3<f64>,
    pub tre_entry_m: f64,
}

/// Why an update gives no registration.
#[derive(Debug, thiserror::Error)]
pub enum NoRegistration {
    /// The planning case did not load.
    #[error("planning case: {0}")]
    NoCase(String),
    #[error("waiting for tracked markers and their classification")]
    WaitingForMarkers,
    #[error("entry_source is plan but no valid plan has arrived")]
    NoPlanEntry,
    #[error(transparent)]
    Failed(#[from] GuidanceError),
}

/// The result of one update, with the stamp and frame to publish it under.
#[derive(Debug)]
pub struct RegistrationUpdate {
    pub stamp_ns: i64,
    pub frame_id: String,
    pub result: Result<Registered, NoRegistration>,
}

/// The lesion_registration node's state and rules.
#[derive(Debug, Clone)]
pub struct LesionRegistrationMachine {
    cfg: LesionRegistrationConfig,
    registration_ids: Vec<u32>,
    correction_ids: Vec<u32>,
    window: VecDeque<TrackerSample>,
    frame_id: String,
    plan_entry_ct: Option<Point3<f64>>,
    /// Update slot (tracker time / update period) of the last registration update. Updates follow
    /// the samples' own clock on a fixed grid, so that a bag replayed at any rate registers at the
    /// same instants as the live run, whenever either started.
    last_update_slot: Option<i64>,
}

impl LesionRegistrationMachine {
    /// `frame_id`: the tracker frame until samples name theirs.
    pub fn new(cfg: LesionRegistrationConfig, frame_id: &str) -> LesionRegistrationMachine {
        LesionRegistrationMachine {
            cfg,
            registration_ids: Vec::new(),
            correction_ids: Vec::new(),
            window: VecDeque::new(),
            frame_id: frame_id.into(),
            plan_entry_ct: None,
            last_update_slot: None,
        }
    }

    pub fn config(&self) -> &LesionRegistrationConfig {
        &self.cfg
    }

    /// Takes the run-time parameters of `new` (validated by the caller): the registration's
    /// acceptance limits and the sample checks, used from the next update on. The rest of `new`
    /// is ignored: those parameters are read-only while the node runs.
    pub fn apply_dynamic(&mut self, new: &LesionRegistrationConfig) {
        self.cfg.min_markers = new.min_markers;
        self.cfg.max_outliers = new.max_outliers;
        self.cfg.max_fre_m = new.max_fre_m;
        self.cfg.fle_rms_m = new.fle_rms_m;
        self.cfg.min_spread_ratio = new.min_spread_ratio;
        self.cfg.correspondence_tolerance_m = new.correspondence_tolerance_m;
        self.cfg.sample_checks = new.sample_checks.clone();
    }

    /// Updates run only where a planning case is configured.
    pub fn updates_run(&self) -> bool {
        !self.cfg.ct_case_dir.trim().is_empty()
    }

    pub fn on_classification(&mut self, registration_ids: Vec<u32>, correction_ids: Vec<u32>) {
        self.registration_ids = registration_ids;
        self.correction_ids = correction_ids;
    }

    /// A plan from the trajectory planner: its entry is used when it is valid (`ok`) and the entry
    /// source is the plan.
    pub fn on_plan(&mut self, ok: bool, entry_ct: Point3<f64>) {
        if ok && self.cfg.entry_source == EntrySource::Plan {
            self.plan_entry_ct = Some(entry_ct);
        }
    }

    /// A sample the validator accepted, with the frame named in its header (empty: unnamed).
    /// Returns the update to run when the sample starts a new slot of the update grid.
    pub fn on_sample(&mut self, checked: CheckedSample, frame_id: &str) -> Option<UpdateInputs> {
        let window_ns = (self.cfg.window_s * 1e9) as i64;
        let period_ns = (self.cfg.update_period_s * 1e9) as i64;
        let sample = checked.sample;
        let stamp = sample.stamp_ns;
        if checked.time_restarted {
            self.window.clear();
        }
        if !frame_id.is_empty() {
            self.frame_id = frame_id.into();
        }
        self.window.push_back(sample);
        while self.window.front().zip(self.window.back()).is_some_and(|(a, b)| b.stamp_ns - a.stamp_ns > window_ns) {
            self.window.pop_front();
        }
        let slot = stamp.div_euclid(period_ns.max(1));
        let new_slot = self.last_update_slot != Some(slot);
        self.last_update_slot = Some(slot);
        (new_slot && self.updates_run()).then(|| self.inputs(stamp))
    }

    /// What an update at `now_ns` works on (the timer's, while no samples arrive).
    pub fn inputs(&self, now_ns: i64) -> UpdateInputs {
        UpdateInputs {
            now_ns,
            window: self.window.iter().cloned().collect(),
            registration_ids: self.registration_ids.clone(),
            correction_ids: self.correction_ids.clone(),
            frame_id: self.frame_id.clone(),
            plan_entry_ct: self.plan_entry_ct,
        }
    }
}

/// The entry point in CT coordinates from the configured source; none while the source is the
/// plan and no valid plan has arrived.
pub fn entry_ct(
    cfg: &LesionRegistrationConfig,
    case: &PlanningCase,
    plan_entry: Option<Point3<f64>>,
) -> Option<Point3<f64>> {
    match cfg.entry_source {
        EntrySource::Preset => Some(case.entry_m),
        EntrySource::Plan => plan_entry,
        EntrySource::Manual => {
            let m = &cfg.manual_entry_ct_m;
            // Validated to three values; anything else is no entry rather than a panic.
            (m.len() == 3).then(|| Point3::new(m[0], m[1], m[2]))
        }
    }
}

/// Runs one registration update on the loaded planning case (or its loading error).
pub fn run_update(
    cfg: &LesionRegistrationConfig,
    case: &Result<PlanningCase, String>,
    inputs: UpdateInputs,
) -> RegistrationUpdate {
    let UpdateInputs { now_ns, window, registration_ids, correction_ids, frame_id, plan_entry_ct } = inputs;
    let update = |stamp_ns: i64, result| RegistrationUpdate { stamp_ns, frame_id: frame_id.clone(), result };
    let case = match case {
        Err(e) => return update(now_ns, Err(NoRegistration::NoCase(e.clone()))),
        Ok(c) => c,
    };
    if registration_ids.is_empty() || window.is_empty() {
        return update(now_ns, Err(NoRegistration::WaitingForMarkers));
    }
    let tracked = positions_at_ct_phase(&window, &registration_ids, &correction_ids);
    let stamp = window.last().map(|s| s.stamp_ns).unwrap_or(now_ns);
    let registration = match register_case(case, &tracked, &cfg.registration(), cfg.correspondence_tolerance_m) {
        Ok(r) => r,
        Err(e) => return update(stamp, Err(e.into())),
    };
    let Some(entry) = entry_ct(cfg, case, plan_entry_ct) else {
        return update(stamp, Err(NoRegistration::NoPlanEntry));
    };
    let (entry_tracker, tre_entry_m) = registration.entry_in_tracker(case, &entry, cfg.fle_rms_m);
    update(stamp, Ok(Registered { registration, entry_tracker, tre_entry_m }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Isometry3, Vector3};
    use needle_nav_core::guidance::RegisteredPlan;
    use needle_nav_core::tracking::MarkerObservation;

    /// Four registration markers (ids 1-4) at the CT positions moved by `OFFSET`, still.
    const OFFSET: [f64; 3] = [0.1, -0.05, 0.02];

    fn ct_markers() -> Vec<Point3<f64>> {
        vec![
            Point3::new(0.0, 0.0, 0.0),
            Point3::new(0.12, 0.0, 0.0),
            Point3::new(0.0, 0.09, 0.0),
            Point3::new(0.05, 0.04, 0.07),
        ]
    }

    fn case() -> PlanningCase {
        let plan = RegisteredPlan {
            transform: Isometry3::identity(),
            lesion_tracker: Point3::new(0.04, 0.03, -0.06),
            entry_tracker: Point3::new(0.04, 0.03, 0.01),
            tre_lesion_m: 0.0,
        };
        PlanningCase { image_markers_m: ct_markers(), ..PlanningCase::without_images(&plan) }
    }

    fn sample(stamp_ns: i64) -> CheckedSample {
        let offset = Vector3::from(OFFSET);
        let markers = ct_markers()
            .iter()
            .enumerate()
            .map(|(i, p)| MarkerObservation {
                id: i as u32 + 1,
                position: p + offset,
                visible: true,
                quality: f64::NAN,
            })
            .collect();
        CheckedSample {
            sample: TrackerSample { sequence: 0, stamp_ns, markers },
            dropped: Vec::new(),
            moved: Vec::new(),
            time_restarted: false,
        }
    }

    fn cfg() -> LesionRegistrationConfig {
        LesionRegistrationConfig {
            ct_case_dir: "case".into(),
            update_period_s: 2.0,
            window_s: 1.0,
            ..Default::default()
        }
    }

    /// Stamps [ns] of the samples that started an update.
    fn updates(m: &mut LesionRegistrationMachine, stamps: impl IntoIterator<Item = i64>) -> Vec<i64> {
        stamps.into_iter().filter_map(|t| m.on_sample(sample(t), "").map(|u| u.now_ns)).collect()
    }

    /// Updates happen at the first sample of each 2 s slot of tracker time, whatever the sample
    /// rate and wherever the samples start: a replay at another rate updates at the same slots.
    #[test]
    fn updates_follow_a_fixed_grid_on_tracker_time() {
        let ms = 1_000_000;
        let mut m = LesionRegistrationMachine::new(cfg(), "tracker");
        let got = updates(&mut m, (0..400).map(|k| 700 * ms + k * 20 * ms)); // 0.7 s to 8.68 s at 50 Hz
        assert_eq!(got, vec![700 * ms, 2000 * ms, 4000 * ms, 6000 * ms, 8000 * ms]);
        let mut slow = LesionRegistrationMachine::new(cfg(), "tracker");
        let got = updates(&mut slow, (0..100).map(|k| 700 * ms + k * 90 * ms)); // 0.7 s to 9.61 s at 11 Hz
        assert_eq!(got, vec![700 * ms, 2050 * ms, 4030 * ms, 6010 * ms, 8080 * ms]);
        // Time going back (a replay restarted) starts the slots again.
        let got = updates(&mut m, [100 * ms, 200 * ms, 2100 * ms]);
        assert_eq!(got, vec![100 * ms, 2100 * ms]);
        // Negative stamps fall in their own slots (floor division), not in slot 0.
        let mut m = LesionRegistrationMachine::new(cfg(), "tracker");
        assert_eq!(updates(&mut m, [-100 * ms, 100 * ms]), vec![-100 * ms, 100 * ms]);
        // Without a planning case configured no update runs.
        let mut off = LesionRegistrationMachine::new(LesionRegistrationConfig::default(), "tracker");
        assert!(updates(&mut off, (0..400).map(|k| k * 20 * ms)).is_empty());
    }

    /// The window holds the last `window_s` of samples; a restart of time empties it; the frame
    /// is the samples' own once they name one.
    #[test]
    fn window_and_frame() {
        let ms = 1_000_000;
        let mut m = LesionRegistrationMachine::new(cfg(), "tracker");
        for k in 0..100 {
            m.on_sample(sample(k * 20 * ms), if k < 50 { "" } else { "ndi" });
        }
        let inputs = m.inputs(0);
        // Samples within 1 s of the newest (1.98 s): 0.98 s to 1.98 s, 51 of them.
        assert_eq!(inputs.window.len(), 51);
        assert_eq!(inputs.window[0].stamp_ns, 980 * ms);
        assert_eq!(inputs.frame_id, "ndi");
        let mut restart = sample(0);
        restart.time_restarted = true;
        m.on_sample(restart, "");
        assert_eq!(m.inputs(0).window.len(), 1);
    }

    /// The entry comes from the configured source: the case's preset, the planner's plan (only a
    /// valid one, and only while the source is the plan), or the manual point.
    #[test]
    fn entry_source_choice() {
        let c = case();
        let preset = LesionRegistrationConfig { entry_source: EntrySource::Preset, ..cfg() };
        let mut m = LesionRegistrationMachine::new(preset.clone(), "tracker");
        m.on_plan(true, Point3::new(1.0, 2.0, 3.0));
        assert_eq!(m.inputs(0).plan_entry_ct, None, "a plan is ignored unless the source is the plan");
        assert_eq!(entry_ct(&preset, &c, m.inputs(0).plan_entry_ct), Some(c.entry_m));

        let from_plan = LesionRegistrationConfig { entry_source: EntrySource::Plan, ..cfg() };
        let mut m = LesionRegistrationMachine::new(from_plan.clone(), "tracker");
        assert_eq!(entry_ct(&from_plan, &c, m.inputs(0).plan_entry_ct), None);
        m.on_plan(false, Point3::new(1.0, 2.0, 3.0));
        assert_eq!(entry_ct(&from_plan, &c, m.inputs(0).plan_entry_ct), None, "a failed plan is not used");
        m.on_plan(true, Point3::new(0.01, 0.02, 0.03));
        assert_eq!(entry_ct(&from_plan, &c, m.inputs(0).plan_entry_ct), Some(Point3::new(0.01, 0.02, 0.03)));

        let manual = LesionRegistrationConfig {
            entry_source: EntrySource::Manual,
            manual_entry_ct_m: vec![0.03, 0.02, 0.01],
            ..cfg()
        };
        assert_eq!(entry_ct(&manual, &c, None), Some(Point3::new(0.03, 0.02, 0.01)));
    }

    /// One update: the registration of markers moved by a pure translation maps the entry by
    /// that translation; without a plan (source plan), without markers or without a case, the
    /// reason, stamped with the window's newest sample or the update's own time.
    #[test]
    fn an_update_registers_or_says_why_not() {
        let ms = 1_000_000;
        let (c, offset) = (Ok(case()), Vector3::from(OFFSET));
        let mut m = LesionRegistrationMachine::new(cfg(), "tracker");
        let waiting = run_update(&cfg(), &c, m.on_sample(sample(0), "").expect("first slot"));
        assert!(matches!(waiting.result, Err(NoRegistration::WaitingForMarkers)));
        assert_eq!(waiting.stamp_ns, 0);

        m.on_classification(vec![1, 2, 3, 4], Vec::new());
        for k in 1..50 {
            m.on_sample(sample(k * 20 * ms), "");
        }
        let update = run_update(&cfg(), &c, m.inputs(5000 * ms));
        assert_eq!(update.stamp_ns, 980 * ms, "stamped with the newest sample");
        let r = update.result.expect("registered");
        assert!((r.entry_tracker - (case().entry_m + offset)).norm() < 1e-9, "{:?}", r.entry_tracker);
        assert!((r.registration.lesion_tracker - (case().lesion_m + offset)).norm() < 1e-9);

        let from_plan = LesionRegistrationConfig { entry_source: EntrySource::Plan, ..cfg() };
        let update = run_update(&from_plan, &c, m.inputs(5000 * ms));
        assert!(matches!(update.result, Err(NoRegistration::NoPlanEntry)));
        assert_eq!(
            update.result.err().map(|e| e.to_string()).as_deref(),
            Some("entry_source is plan but no valid plan has arrived")
        );

        let update = run_update(&cfg(), &Err("no such folder".into()), m.inputs(5000 * ms));
        assert_eq!(update.stamp_ns, 5000 * ms);
        assert_eq!(update.result.err().map(|e| e.to_string()).as_deref(), Some("planning case: no such folder"));

        m.on_classification(vec![1, 2], Vec::new());
        let update = run_update(&cfg(), &c, m.inputs(5000 * ms));
        assert!(matches!(
            update.result,
            Err(NoRegistration::Failed(GuidanceError::NotEnoughTracked { have: 2, need: 3 }))
        ));
    }
}
