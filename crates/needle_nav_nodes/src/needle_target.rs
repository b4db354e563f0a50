//! The rules of the needle_target node, without ROS and without I/O: which target (or which
//! reason it is invalid) answers each tracker sample, when the target computer is rebuilt, how a
//! new computer catches up on the samples since its registration, what a restart resumes from,
//! and when the breathing state and the baseline are to be saved.
//!
//! The ROS node feeds it what arrives (samples already checked by the sample validator,
//! registrations, classifications, the planning case, watchdog ticks) and turns what it returns
//! into messages, log lines and file writes. `needle_nav evaluate` drives the same machine.

use crate::config::NeedleTargetConfig;
use needle_nav_core::correction::Baseline;
use needle_nav_core::guidance::{
    PlanningCase, RegisteredPlan, SavedBreathingState, Target, TargetComputer, TargetConfig, SAME_REGISTRATION_M,
};
use needle_nav_core::sample_validation::{CheckedSample, SampleRejection};
use needle_nav_core::target_gate::{self, GateInputs, InvalidReason};
use needle_nav_core::tracking::TrackerSample;
use std::collections::VecDeque;

/// How much sample history is kept to catch a new registration up [ns].
pub const CATCH_UP_NS: i64 = 1_000_000_000;
/// The breathing state is saved this often (tracker time) [ns].
pub const STATE_SAVE_PERIOD_NS: i64 = 1_000_000_000;

/// A registration as needle_target sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRegistration {
    /// The registration's instant (its header stamp) [ns]: a baseline starts after it.
    pub stamp_ns: i64,
    /// The plan in the tracker frame, or why the registration does not allow guidance
    /// (its status and message).
    pub plan: Result<RegisteredPlan, String>,
}

/// What the configured baseline file held when it was read (the shell reads it).
#[derive(Debug, Clone, PartialEq)]
pub enum BaselineFile {
    /// No baseline_file configured.
    Off,
    /// Configured, no file there yet: a recorded baseline is saved there.
    Absent,
    /// The file cannot be read (the error).
    Unreadable(String),
    /// The file is not a baseline (the parse error); it is kept as it is.
    NotABaseline(String),
    Found(Baseline),
}

/// What the configured state file held when the node started (the shell reads it).
#[derive(Debug, Clone, PartialEq)]
pub enum StateFile {
    /// No state_file configured: nothing saved, nothing resumed.
    Off,
    /// Configured, nothing there yet.
    Absent,
    /// A breathing state saved before a restart: tried once, on the first target computer.
    Saved(Box<SavedBreathingState>),
    /// Something that is not ours (unreadable, or not a saved state): never overwritten.
    NotOurs,
}

/// Something worth a log line; the shell chooses the level with [`NeedleTargetEvent::level`]
/// and writes the event's text.
#[derive(Debug, Clone, PartialEq)]
pub enum NeedleTargetEvent {
    /// A saved breathing state was resumed; its age at the first sample [s].
    Resumed {
        state_file: String,
        age_s: f64,
    },
    ResumeRefused {
        state_file: String,
        why: String,
    },
    RecordingBaseline {
        baseline_s: f64,
        correction_ids: Vec<u32>,
    },
    BaselineRecorded {
        depth_m: f64,
        model: Option<(f64, usize)>,
    },
    BaselineFileUnreadable {
        path: String,
        error: String,
    },
    BaselineFileNotABaseline {
        path: String,
        error: String,
    },
    BaselineFileOtherMarkers {
        path: String,
        file_ids: Vec<u32>,
        correction_ids: Vec<u32>,
    },
}

/// Log levels of [`NeedleTargetEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl NeedleTargetEvent {
    pub fn level(&self) -> Level {
        match self {
            NeedleTargetEvent::Resumed { .. }
            | NeedleTargetEvent::RecordingBaseline { .. }
            | NeedleTargetEvent::BaselineRecorded { .. } => Level::Info,
            NeedleTargetEvent::ResumeRefused { .. } | NeedleTargetEvent::BaselineFileOtherMarkers { .. } => Level::Warn,
            NeedleTargetEvent::BaselineFileUnreadable { .. } | NeedleTargetEvent::BaselineFileNotABaseline { .. } => {
                Level::Error
            }
        }
    }
}

impl std::fmt::Display for NeedleTargetEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeedleTargetEvent::Resumed { state_file, age_s } => write!(
                f,
                "resumed the breathing state saved in {state_file} ({age_s:.1} s before this sample): no new baseline"
            ),
            NeedleTargetEvent::ResumeRefused { state_file, why } => {
                write!(f, "saved breathing state in {state_file} not used: {why}")
            }
            NeedleTargetEvent::RecordingBaseline { baseline_s, correction_ids } => {
                write!(f, "recording the calm-breathing baseline for {baseline_s} s (markers {correction_ids:?})")
            }
            NeedleTargetEvent::BaselineRecorded { depth_m, model } => write!(
                f,
                "baseline recorded: breath depth {:.1} mm; correlation model from the 4-D CT: {}",
                depth_m * 1e3,
                model
                    .map(|(rms, frames)| format!("fit RMS {:.2} mm over {} frames", rms * 1e3, frames))
                    .unwrap_or_else(|| "none (gated to end-exhale)".into())
            ),
            NeedleTargetEvent::BaselineFileUnreadable { path, error } => {
                write!(f, "baseline_file {path} cannot be read ({error}): recording a new baseline")
            }
            NeedleTargetEvent::BaselineFileNotABaseline { path, error } => write!(
                f,
                "baseline_file {path} is not a baseline ({error}): recording a new one; the file is kept as it is"
            ),
            NeedleTargetEvent::BaselineFileOtherMarkers { path, file_ids, correction_ids } => write!(
                f,
                "baseline_file {path} is for correction markers {file_ids:?}, the classification has \
                 {correction_ids:?}: recording a new baseline; the file is kept"
            ),
        }
    }
}

/// The answer to one tracker sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutcome {
    /// Tracker stamp of the sample answered [ns].
    pub source_ns: i64,
    /// The target, or why there is none.
    pub target: Result<Target, InvalidReason>,
    /// Save this breathing state to the state file (off the sample path).
    pub save_state: Option<SavedBreathingState>,
    /// Save this newly recorded baseline to the baseline file, unless a file exists there.
    pub save_baseline: Option<Baseline>,
    pub events: Vec<NeedleTargetEvent>,
}

/// The needle_target node's state and rules.
#[derive(Debug, Clone)]
pub struct NeedleTargetMachine {
    cfg: NeedleTargetConfig,
    newest_sample_ns: Option<i64>,
    registration: Option<TargetRegistration>,
    correction_ids: Vec<u32>,
    case: Option<PlanningCase>,
    computer: Option<TargetComputer>,
    /// The last second of samples: a new computer starts from the first sample after its
    /// registration's stamp, however late the registration arrived (so a replay repeats the live run).
    recent: VecDeque<TrackerSample>,
    baseline_file: BaselineFile,
    baseline_saved: bool,
    /// A breathing state saved before a restart, tried once on the first target computer.
    resume: Option<SavedBreathingState>,
    /// Tracker time of the last state saved [ns].
    state_saved_ns: Option<i64>,
    /// Saving is off, or refused because the file there is not ours (never overwritten).
    state_saving: bool,
    /// The planning case arrived after the current computer was built.
    case_changed: bool,
}

impl NeedleTargetMachine {
    /// `baseline_file` and `state_file` are what the configured files held at start.
    pub fn new(cfg: NeedleTargetConfig, baseline_file: BaselineFile, state_file: StateFile) -> NeedleTargetMachine {
        let (resume, state_saving) = match state_file {
            StateFile::Off | StateFile::NotOurs => (None, false),
            StateFile::Absent => (None, true),
            StateFile::Saved(s) => (Some(*s), true),
        };
        NeedleTargetMachine {
            cfg,
            newest_sample_ns: None,
            registration: None,
            correction_ids: Vec::new(),
            case: None,
            computer: None,
            recent: VecDeque::new(),
            baseline_file,
            baseline_saved: false,
            resume,
            state_saved_ns: None,
            state_saving,
            case_changed: false,
        }
    }

    pub fn config(&self) -> &NeedleTargetConfig {
        &self.cfg
    }

    /// Takes the run-time parameters (`stale_after_periods`, `deviation_tolerance_m`,
    /// `gate_surrogate`, `sample_checks`) of `new`, validated by the caller, from the next sample
    /// or tick on; the running target computer keeps its baseline. The rest of `new` is ignored:
    /// those parameters are read-only while the node runs.
    pub fn apply_dynamic(&mut self, new: &NeedleTargetConfig) {
        self.cfg.stale_after_periods = new.stale_after_periods;
        self.cfg.deviation_tolerance_m = new.deviation_tolerance_m;
        self.cfg.gate_surrogate = new.gate_surrogate;
        self.cfg.sample_checks = new.sample_checks.clone();
        if let Some(computer) = &mut self.computer {
            computer.set_gates(new.deviation_tolerance_m, new.gate_surrogate);
        }
    }

    /// The planning case (with the 4-D CT's correlation model) arrived: the computer is rebuilt on
    /// the next sample; a baseline already recorded or resumed is kept.
    pub fn on_case(&mut self, case: PlanningCase) {
        self.case = Some(case);
        self.case_changed = true;
    }

    pub fn on_registration(&mut self, r: TargetRegistration) {
        self.registration = Some(r);
    }

    pub fn on_classification(&mut self, correction_ids: Vec<u32>) {
        self.correction_ids = correction_ids;
    }

    /// The shell saved the baseline that [`SampleOutcome::save_baseline`] asked for: the file now holds it.
    pub fn baseline_file_written(&mut self, b: Baseline) {
        self.baseline_file = BaselineFile::Found(b);
    }

    /// Stamp of the newest sample accepted [ns].
    pub fn newest_sample_ns(&self) -> Option<i64> {
        self.newest_sample_ns
    }

    pub fn computer(&self) -> Option<&TargetComputer> {
        self.computer.as_ref()
    }

    fn registration_usable(&self) -> Result<(), String> {
        match &self.registration {
            None => Err("no registration received".into()),
            Some(TargetRegistration { plan: Ok(_), .. }) => Ok(()),
            Some(TargetRegistration { plan: Err(why), .. }) => Err(why.clone()),
        }
    }

    /// The watchdog at `now_ns` (the node's clock): while samples keep coming, nothing; when none
    /// came or the newest is stale, why the target is invalid.
    pub fn on_tick(&self, now_ns: i64) -> Option<InvalidReason> {
        let stale_after_s = self.cfg.stale_after_s();
        match self.newest_sample_ns {
            Some(t) if (now_ns - t) as f64 * 1e-9 <= stale_after_s => None,
            newest => Some(
                target_gate::check(&GateInputs {
                    newest_sample_ns: newest,
                    now_ns,
                    malformed_marker_ids: Vec::new(),
                    registration: self.registration_usable(),
                    stale_after_s,
                })
                // Only reached when no sample came or the newest is stale: never Ok.
                .err()
                .unwrap_or(InvalidReason::Starting),
            ),
        }
    }

    /// Answers one tracker sample: `checked` is the sample validator's verdict on it, `raw_stamp_ns`
    /// the stamp of the sample as received, `now_ns` the node's clock.
    pub fn on_sample(
        &mut self,
        checked: Result<CheckedSample, SampleRejection>,
        raw_stamp_ns: i64,
        now_ns: i64,
    ) -> SampleOutcome {
        let mut out = SampleOutcome {
            source_ns: raw_stamp_ns,
            target: Err(InvalidReason::Starting),
            save_state: None,
            save_baseline: None,
            events: Vec::new(),
        };
        // A refused sample is answered as invalid input on its own; it leaves the breathing
        // history, the baseline and the staleness watchdog as they were.
        let sample = match checked {
            Ok(checked) => {
                if checked.time_restarted {
                    self.recent.clear();
                }
                checked.sample
            }
            Err(rejection) => {
                out.target = Err(InvalidReason::InvalidInput(format!("tracker sample refused: {rejection}")));
                return out;
            }
        };
        out.source_ns = sample.stamp_ns;
        self.newest_sample_ns = Some(sample.stamp_ns);
        let gate = target_gate::check(&GateInputs {
            newest_sample_ns: self.newest_sample_ns,
            now_ns,
            // Non-finite samples were refused by the sample checks.
            malformed_marker_ids: Vec::new(),
            registration: self.registration_usable(),
            stale_after_s: self.cfg.stale_after_s(),
        });
        out.target = match gate {
            Err(reason) => Err(reason),
            Ok(()) => {
                self.ensure_computer(sample.stamp_ns, &mut out.events);
                let recorded_before = self.computer.as_ref().is_some_and(|c| c.baseline().is_some());
                let r = match self.computer.as_mut() {
                    Some(c) => c.update(sample.stamp_ns as f64 * 1e-9, &sample),
                    None => Err(InvalidReason::NoRegistration("no correction markers classified yet".into())),
                };
                let baseline = self.computer.as_ref().and_then(|c| c.baseline().cloned());
                if let (false, Some(b)) = (recorded_before, baseline) {
                    out.events.push(NeedleTargetEvent::BaselineRecorded {
                        depth_m: b.depth_m,
                        model: self.computer.as_ref().and_then(|c| c.model()).map(|m| (m.fit_rms_m, m.frames)),
                    });
                    if !self.cfg.baseline_file.is_empty() && !self.baseline_saved {
                        out.save_baseline = Some(b);
                        self.baseline_saved = true;
                    }
                }
                if self.state_saving {
                    let due = self.state_saved_ns.map_or(true, |t| sample.stamp_ns - t >= STATE_SAVE_PERIOD_NS);
                    if let Some(state) =
                        self.computer.as_ref().filter(|_| due).and_then(|c| c.saved_state(sample.stamp_ns))
                    {
                        self.state_saved_ns = Some(sample.stamp_ns);
                        out.save_state = Some(state);
                    }
                }
                r
            }
        };
        if self.recent.back().is_some_and(|o| o.stamp_ns >= sample.stamp_ns) {
            self.recent.clear(); // time went back (a replay restarted): the history is void
        }
        let stamp = sample.stamp_ns;
        self.recent.push_back(sample);
        while self.recent.front().is_some_and(|o| stamp - o.stamp_ns > CATCH_UP_NS) {
            self.recent.pop_front();
        }
        out
    }

    /// The baseline in the baseline file when it holds one for the current correction markers.
    /// Anything else there is reported; the file is kept either way.
    fn baseline_from_file(&self, events: &mut Vec<NeedleTargetEvent>) -> Option<Baseline> {
        let path = self.cfg.baseline_file.clone();
        match &self.baseline_file {
            BaselineFile::Off | BaselineFile::Absent => None,
            BaselineFile::Unreadable(error) => {
                events.push(NeedleTargetEvent::BaselineFileUnreadable { path, error: error.clone() });
                None
            }
            BaselineFile::NotABaseline(error) => {
                events.push(NeedleTargetEvent::BaselineFileNotABaseline { path, error: error.clone() });
                None
            }
            BaselineFile::Found(b) if b.marker_ids != self.correction_ids => {
                events.push(NeedleTargetEvent::BaselineFileOtherMarkers {
                    path,
                    file_ids: b.marker_ids.clone(),
                    correction_ids: self.correction_ids.clone(),
                });
                None
            }
            BaselineFile::Found(b) => Some(b.clone()),
        }
    }

    /// (Re)builds the target computer when the registration or the correction markers change; a
    /// baseline of the same correction markers is kept (it lives in the tracker frame).
    fn ensure_computer(&mut self, sample_ns: i64, events: &mut Vec<NeedleTargetEvent>) {
        let Some(reg) = &self.registration else { return };
        let (plan, reg_stamp_ns) = match (&reg.plan, self.correction_ids.is_empty()) {
            (Ok(plan), false) => (plan.clone(), reg.stamp_ns),
            _ => {
                self.computer = None;
                return;
            }
        };
        // Runs for every tracker sample: rebuild only when the correction markers changed or the
        // registration moved the lesion or entry by more than 0.5 mm (a recomputed registration of
        // the same markers moves far less); the baseline, in the tracker frame, is kept either way.
        if let Some(c) = &self.computer {
            let moved = (c.plan().lesion_tracker - plan.lesion_tracker)
                .norm()
                .max((c.plan().entry_tracker - plan.entry_tracker).norm());
            if c.correction_ids_requested() == self.correction_ids.as_slice()
                && moved <= SAME_REGISTRATION_M
                && !self.case_changed
            {
                return;
            }
        }
        self.case_changed = false;
        let case = self.case.clone().unwrap_or_else(|| PlanningCase::without_images(&plan));
        let target_cfg = TargetConfig {
            baseline_s: self.cfg.baseline_s,
            deviation_tolerance_m: self.cfg.deviation_tolerance_m,
            latency_s: self.cfg.robot_latency_s,
            prediction: self.cfg.prediction,
            gate_surrogate: self.cfg.gate_surrogate,
        };
        let ids = self.correction_ids.clone();
        let previous =
            self.computer.take().filter(|c| c.correction_ids_requested() == ids.as_slice() && c.baseline().is_some());
        let mut computer = TargetComputer::new(case, plan, ids.clone(), target_cfg);
        let resumed = match (previous.is_none(), self.resume.take()) {
            (true, Some(saved)) => match computer.clone().resumed(&saved, sample_ns, self.cfg.state_max_age_s) {
                Ok(c) => {
                    events.push(NeedleTargetEvent::Resumed {
                        state_file: self.cfg.state_file.clone(),
                        age_s: (sample_ns - saved.saved_at_ns) as f64 * 1e-9,
                    });
                    Some(c)
                }
                Err(why) => {
                    events.push(NeedleTargetEvent::ResumeRefused {
                        state_file: self.cfg.state_file.clone(),
                        why: why.to_string(),
                    });
                    None
                }
            },
            _ => None,
        };
        if let Some(previous) = &previous {
            // Same correction markers: keep the baseline and the breathing history.
            computer = computer.continuing(previous);
            self.baseline_saved = true;
        } else if let Some(c) = resumed {
            computer = c;
            self.baseline_saved = true;
        } else if let Some(b) = self.baseline_from_file(events) {
            computer = computer.with_baseline(b);
            self.baseline_saved = true;
        } else {
            // The baseline starts right after the registration's instant, not when its message arrived.
            for old in self.recent.iter().filter(|o| o.stamp_ns > reg_stamp_ns) {
                let _ = computer.update(old.stamp_ns as f64 * 1e-9, old);
            }
            events.push(NeedleTargetEvent::RecordingBaseline { baseline_s: self.cfg.baseline_s, correction_ids: ids });
            self.baseline_saved = false;
        }
        self.computer = Some(computer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Isometry3, Point3};
    use needle_nav_core::tracking::MarkerObservation;

    /// Sample period of the hand-built tracker [ns] (32 Hz, so stamps are whole nanoseconds).
    const DT_NS: i64 = 31_250_000;
    const BASELINE_S: f64 = 4.0;

    fn cfg() -> NeedleTargetConfig {
        NeedleTargetConfig { baseline_s: BASELINE_S, tracker_rate_hz: 32.0, ..Default::default() }
    }

    /// Three correction markers (ids 1, 2, 3) breathing 10 mm along z with a 4 s period, and a
    /// still registration marker (id 7).
    fn sample(stamp_ns: i64) -> TrackerSample {
        let t = stamp_ns as f64 * 1e-9;
        let s = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * t / 4.0).cos();
        let marker = |id: u32, p: Point3<f64>| MarkerObservation { id, position: p, visible: true, quality: f64::NAN };
        TrackerSample {
            sequence: (stamp_ns / DT_NS) as u64,
            stamp_ns,
            markers: vec![
                marker(1, Point3::new(0.00, 0.0, 0.010 * s)),
                marker(2, Point3::new(0.05, 0.0, 0.008 * s)),
                marker(3, Point3::new(0.00, 0.05, 0.006 * s)),
                marker(7, Point3::new(0.10, 0.10, 0.0)),
            ],
        }
    }

    fn checked(stamp_ns: i64) -> Result<CheckedSample, SampleRejection> {
        Ok(CheckedSample { sample: sample(stamp_ns), dropped: Vec::new(), moved: Vec::new(), time_restarted: false })
    }

    fn plan(shift_m: f64) -> RegisteredPlan {
        RegisteredPlan {
            transform: Isometry3::translation(shift_m, 0.0, 0.0),
            lesion_tracker: Point3::new(0.02 + shift_m, 0.02, -0.08),
            entry_tracker: Point3::new(0.02 + shift_m, 0.02, 0.0),
            tre_lesion_m: 0.3e-3,
        }
    }

    fn registration(stamp_ns: i64, shift_m: f64) -> TargetRegistration {
        TargetRegistration { stamp_ns, plan: Ok(plan(shift_m)) }
    }

    /// Feeds the samples k in `range` (stamps k * DT_NS), at zero latency; returns each outcome with its stamp.
    fn feed(m: &mut NeedleTargetMachine, range: std::ops::Range<i64>) -> Vec<(i64, SampleOutcome)> {
        range
            .map(|k| {
                let t = k * DT_NS;
                (t, m.on_sample(checked(t), t, t))
            })
            .collect()
    }

    /// Tracker time of the sample at which the baseline was recorded [s].
    fn recorded_at(outcomes: &[(i64, SampleOutcome)]) -> Option<f64> {
        outcomes
            .iter()
            .find(|(_, o)| o.events.iter().any(|e| matches!(e, NeedleTargetEvent::BaselineRecorded { .. })))
            .map(|(t, _)| *t as f64 * 1e-9)
    }

    fn ready(state_file: StateFile) -> NeedleTargetMachine {
        let mut m = NeedleTargetMachine::new(cfg(), BaselineFile::Off, state_file);
        m.on_classification(vec![1, 2, 3]);
        m.on_registration(registration(0, 0.0));
        m
    }

    #[test]
    fn the_watchdog_says_starting_then_nothing_while_fresh_then_stale() {
        let mut m = ready(StateFile::Off);
        assert_eq!(m.on_tick(0), Some(InvalidReason::Starting));
        feed(&mut m, 0..3);
        let newest = 2 * DT_NS;
        // Stale after 5 periods of 1/32 s = 156.25 ms.
        assert_eq!(m.on_tick(newest + 156_000_000), None);
        assert!(matches!(m.on_tick(newest + 157_000_000), Some(InvalidReason::StaleData { .. })));
    }

    /// Parameters set at run time apply from the next tick and sample: 10 periods of 1/32 s
    /// = 312.5 ms instead of 156.25 ms, and the running computer's gates change with them.
    #[test]
    fn run_time_parameters_apply_to_the_next_tick_and_the_running_computer() {
        let mut m = ready(StateFile::Off);
        feed(&mut m, 0..3);
        let newest = 2 * DT_NS;
        assert!(matches!(m.on_tick(newest + 157_000_000), Some(InvalidReason::StaleData { .. })));
        let new = NeedleTargetConfig {
            stale_after_periods: 10.0,
            deviation_tolerance_m: 0.01,
            gate_surrogate: 0.3,
            frame_id: "ignored: read-only".into(),
            ..cfg()
        };
        m.apply_dynamic(&new);
        assert_eq!(m.on_tick(newest + 312_000_000), None);
        assert!(matches!(m.on_tick(newest + 313_000_000), Some(InvalidReason::StaleData { .. })));
        let computer = m.computer().expect("a computer after the first samples");
        assert_eq!((computer.config().deviation_tolerance_m, computer.config().gate_surrogate), (0.01, 0.3));
        assert_eq!(m.config().frame_id, cfg().frame_id);
    }

    #[test]
    fn a_refused_sample_is_invalid_input_and_changes_nothing() {
        let mut m = ready(StateFile::Off);
        feed(&mut m, 0..3);
        let out = m.on_sample(Err(SampleRejection::DuplicateIds(vec![1, 1])), 99 * DT_NS, 99 * DT_NS);
        assert!(matches!(out.target, Err(InvalidReason::InvalidInput(_))), "{:?}", out.target);
        assert_eq!(out.source_ns, 99 * DT_NS);
        assert_eq!(m.newest_sample_ns(), Some(2 * DT_NS));
    }

    #[test]
    fn without_a_usable_registration_or_correction_markers_there_is_no_computer() {
        let mut m = NeedleTargetMachine::new(cfg(), BaselineFile::Off, StateFile::Off);
        let out = feed(&mut m, 0..1).remove(0).1;
        assert_eq!(out.target, Err(InvalidReason::NoRegistration("no registration received".into())));
        m.on_registration(TargetRegistration { stamp_ns: 0, plan: Err("registration status 3: degenerate".into()) });
        let out = feed(&mut m, 1..2).remove(0).1;
        assert_eq!(out.target, Err(InvalidReason::NoRegistration("registration status 3: degenerate".into())));
        m.on_registration(registration(0, 0.0));
        let out = feed(&mut m, 2..3).remove(0).1;
        assert_eq!(out.target, Err(InvalidReason::NoRegistration("no correction markers classified yet".into())));
        assert!(m.computer().is_none());
        m.on_classification(vec![1, 2, 3]);
        let out = feed(&mut m, 3..4).remove(0).1;
        assert_eq!(out.target, Err(InvalidReason::NoBaseline));
        assert!(m.computer().is_some());
    }

    /// The computer is rebuilt only when the registration moves the lesion or entry by more than
    /// SAME_REGISTRATION_M (0.5 mm) or the correction markers change; a rebuild for the same
    /// markers keeps the baseline, one for other markers records a new one.
    #[test]
    fn rebuild_threshold_and_the_baseline_kept_across_a_new_registration() {
        let mut m = ready(StateFile::Off);
        let outcomes = feed(&mut m, 0..(6 * 32));
        assert!(recorded_at(&outcomes).is_some());
        let baseline = m.computer().and_then(|c| c.baseline()).cloned().expect("baseline");

        m.on_registration(registration(6_000_000_000, 0.4e-3));
        let outcomes = feed(&mut m, (6 * 32)..(6 * 32 + 2));
        assert_eq!(m.computer().map(|c| c.plan().clone()), Some(plan(0.0)), "0.4 mm is the same registration");
        assert!(outcomes.iter().all(|(_, o)| o.events.is_empty()));

        m.on_registration(registration(6_100_000_000, 0.6e-3));
        let outcomes = feed(&mut m, (6 * 32 + 2)..(6 * 32 + 4));
        assert_eq!(m.computer().map(|c| c.plan().clone()), Some(plan(0.6e-3)), "0.6 mm is a new registration");
        assert_eq!(m.computer().and_then(|c| c.baseline()), Some(&baseline), "same markers: baseline kept");
        assert!(outcomes.iter().all(|(_, o)| o.events.is_empty()), "no new baseline recorded");

        m.on_classification(vec![1, 2]);
        let outcomes = feed(&mut m, (6 * 32 + 4)..(6 * 32 + 5));
        assert!(m.computer().is_some_and(|c| c.baseline().is_none()), "other markers: a new baseline");
        assert!(matches!(
            &outcomes[0].1.events[..],
            [NeedleTargetEvent::RecordingBaseline { correction_ids, .. }] if correction_ids == &[1, 2]
        ));
    }

    /// A registration arriving late starts its baseline from the first sample after its own
    /// stamp (the recent samples are replayed into the new computer), so the baseline is complete
    /// BASELINE_S after that stamp whatever the delay, up to the catch-up history of 1 s.
    #[test]
    fn catch_up_after_a_late_registration() {
        let dt = DT_NS as f64 * 1e-9;
        // (delay [s], first sample of the baseline [s]): within the 1 s of history, the first
        // sample after the stamp (2.03125 s); later, the oldest sample still held, 1 s before the
        // newest one when the registration arrived (3.46875 s - 1 s). Delivered before the sample at
        // its own stamp (delay 0), that sample is the first.
        for (delay_s, first_sample) in [(0.0, 2.0), (0.5, 2.03125), (0.9, 2.03125), (1.5, 2.46875)] {
            let mut m = NeedleTargetMachine::new(cfg(), BaselineFile::Off, StateFile::Off);
            m.on_classification(vec![1, 2, 3]);
            let arrival = 64 + (delay_s * 32.0) as i64; // sample index
            let mut outcomes = feed(&mut m, 0..arrival);
            m.on_registration(registration(2_000_000_000, 0.0));
            outcomes.extend(feed(&mut m, arrival..(10 * 32)));
            let at = recorded_at(&outcomes).expect("a baseline");
            // Recorded at the first sample BASELINE_S after the first (rounding may take one more).
            let expected = first_sample + BASELINE_S;
            assert!(
                at >= expected - 1e-9 && at <= expected + dt + 1e-9,
                "delay {delay_s} s: recorded at {at} s, expected {expected} s"
            );
        }
    }

    /// Time going back (a replay restarted) voids the catch-up history: a registration in the
    /// new run catches up only on the new run's samples.
    #[test]
    fn time_going_back_resets_the_catch_up_history() {
        let dt = DT_NS as f64 * 1e-9;
        let mut m = NeedleTargetMachine::new(cfg(), BaselineFile::Off, StateFile::Off);
        m.on_classification(vec![1, 2, 3]);
        // First run: 3 s without a registration, so the history holds stamps 2..3 s.
        feed(&mut m, 0..96);
        // Second run from 0: the registration (stamp 0.5 s) arrives at 0.8 s.
        let mut outcomes = feed(&mut m, 0..26);
        m.on_registration(registration(500_000_000, 0.0));
        outcomes.extend(feed(&mut m, 26..(8 * 32)));
        let at = recorded_at(&outcomes).expect("a baseline");
        // The first sample after 0.5 s is 0.53125 s.
        let expected = 0.53125 + BASELINE_S;
        assert!(at >= expected - 1e-9 && at <= expected + dt + 1e-9, "recorded at {at} s, expected {expected} s");
        // The same with the sample validator's own restart flag.
        let mut m = NeedleTargetMachine::new(cfg(), BaselineFile::Off, StateFile::Off);
        m.on_classification(vec![1, 2, 3]);
        feed(&mut m, 0..96);
        let restarted = CheckedSample { time_restarted: true, ..checked(0).expect("ok") };
        let mut outcomes = vec![(0, m.on_sample(Ok(restarted), 0, 0))];
        outcomes.extend(feed(&mut m, 1..26));
        m.on_registration(registration(500_000_000, 0.0));
        outcomes.extend(feed(&mut m, 26..(8 * 32)));
        let at = recorded_at(&outcomes).expect("a baseline");
        assert!(at >= expected - 1e-9 && at <= expected + dt + 1e-9, "recorded at {at} s, expected {expected} s");
    }

    fn state_saves(outcomes: &[(i64, SampleOutcome)]) -> Vec<i64> {
        outcomes
            .iter()
            .filter_map(|(t, o)| o.save_state.as_ref().map(|s| (assert_eq!(s.saved_at_ns, *t), *t).1))
            .collect()
    }

    /// The state is saved from the first sample with a baseline, then at the first sample at least
    /// a second of tracker time after the last save; never when the file is not ours or saving is off.
    #[test]
    fn state_file_save_period_and_refusal() {
        let mut m = ready(StateFile::Absent);
        let outcomes = feed(&mut m, 0..(10 * 32));
        let first = recorded_at(&outcomes).expect("baseline");
        let saves = state_saves(&outcomes);
        assert_eq!(saves[0] as f64 * 1e-9, first);
        assert!(saves.windows(2).all(|w| w[1] - w[0] == STATE_SAVE_PERIOD_NS), "{saves:?}");
        // 32 samples a second: one save per 32 samples from the first.
        let expected = (10 * 32 - (first * 32.0).round() as i64 - 1) / 32 + 1;
        assert_eq!(saves.len() as i64, expected);
        for refused in [StateFile::Off, StateFile::NotOurs] {
            let mut m = ready(refused.clone());
            assert!(state_saves(&feed(&mut m, 0..(10 * 32))).is_empty(), "{refused:?}");
        }
    }

    /// A saved state resumes the baseline on the first computer (no new recording); one for
    /// another registration is refused and a new baseline recorded.
    #[test]
    fn a_saved_state_is_resumed_once_and_refused_for_another_registration() {
        let mut first = ready(StateFile::Absent);
        let outcomes = feed(&mut first, 0..(6 * 32));
        let saved = outcomes.iter().rev().find_map(|(_, o)| o.save_state.clone()).expect("saved");

        let mut m = ready(StateFile::Saved(Box::new(saved.clone())));
        let outcomes = feed(&mut m, (7 * 32)..(7 * 32 + 1));
        assert!(matches!(&outcomes[0].1.events[..], [NeedleTargetEvent::Resumed { .. }]), "{:?}", outcomes[0].1.events);
        assert!(m.computer().is_some_and(|c| c.baseline().is_some()));

        let mut m = NeedleTargetMachine::new(cfg(), BaselineFile::Off, StateFile::Saved(Box::new(saved)));
        m.on_classification(vec![1, 2, 3]);
        m.on_registration(registration(0, 2e-3));
        let outcomes = feed(&mut m, (7 * 32)..(7 * 32 + 1));
        assert!(matches!(
            &outcomes[0].1.events[..],
            [NeedleTargetEvent::ResumeRefused { .. }, NeedleTargetEvent::RecordingBaseline { .. }]
        ));
    }

    /// The baseline file: one for the classified markers is used at once; one for other markers
    /// or a file that is not a baseline is reported and a new baseline recorded; a recorded
    /// baseline is offered for saving once, where the file is configured.
    #[test]
    fn baseline_file_rules() {
        let mut recorder = ready(StateFile::Off);
        feed(&mut recorder, 0..(6 * 32));
        let b = recorder.computer().and_then(|c| c.baseline()).cloned().expect("baseline");
        let with_file = NeedleTargetConfig { baseline_file: "baseline.json".into(), ..cfg() };
        let machine = |file: BaselineFile| {
            let mut m = NeedleTargetMachine::new(with_file.clone(), file, StateFile::Off);
            m.on_classification(vec![1, 2, 3]);
            m.on_registration(registration(0, 0.0));
            m
        };

        let mut m = machine(BaselineFile::Found(b.clone()));
        let outcomes = feed(&mut m, 0..1);
        assert!(outcomes[0].1.events.is_empty());
        assert_eq!(m.computer().and_then(|c| c.baseline()), Some(&b));

        let mut other = b.clone();
        other.marker_ids = vec![4, 5, 6];
        let mut m = machine(BaselineFile::Found(other));
        let outcomes = feed(&mut m, 0..1);
        assert!(matches!(
            &outcomes[0].1.events[..],
            [NeedleTargetEvent::BaselineFileOtherMarkers { .. }, NeedleTargetEvent::RecordingBaseline { .. }]
        ));

        let mut m = machine(BaselineFile::NotABaseline("expected value".into()));
        let outcomes = feed(&mut m, 0..1);
        assert_eq!(outcomes[0].1.events[0].level(), Level::Error);

        let mut m = machine(BaselineFile::Absent);
        let outcomes = feed(&mut m, 0..(10 * 32));
        let offered: Vec<_> = outcomes.iter().filter_map(|(_, o)| o.save_baseline.clone()).collect();
        assert_eq!(offered.len(), 1);
        // Without a baseline_file configured nothing is offered.
        let mut m = ready(StateFile::Off);
        assert!(feed(&mut m, 0..(10 * 32)).iter().all(|(_, o)| o.save_baseline.is_none()));
    }
}
