//! One health tracker per node: what it is fed, and the statuses it reports.

use super::monitors::{RateMonitor, RegistrationMonitor, ValidityMonitor};
use super::{seconds, HealthReport, Level, Status};
use needle_nav_core::diagnostics_thresholds::{
    ClassifierDiagnostics, PlannerDiagnostics, RegistrationDiagnostics, SegmentationDiagnostics, TargetDiagnostics,
    TrackerDiagnostics,
};
use needle_nav_core::target_gate::InvalidReason;

/// The label an invalid target's reason is counted under (`invalid share: <label>`).
pub fn reason_label(r: &InvalidReason) -> &'static str {
    match r {
        InvalidReason::Starting => "starting",
        InvalidReason::InvalidInput(_) => "invalid_input",
        InvalidReason::StaleData { .. } => "stale_data",
        InvalidReason::NoRegistration(_) => "no_registration",
        InvalidReason::NoBaseline => "no_baseline",
        InvalidReason::MissingMarkers(_) => "missing_markers",
        InvalidReason::DeviationTooLarge { .. } => "deviation_too_large",
        InvalidReason::PredictionUnreliable(_) => "prediction_unreliable",
        InvalidReason::OutsideBreathingGate { .. } => "outside_breathing_gate",
    }
}

/// marker_tracker: the samples it publishes.
#[derive(Debug, Clone)]
pub struct TrackerHealth {
    hardware_id: String,
    pub output: RateMonitor,
}

impl TrackerHealth {
    pub fn new(d: &TrackerDiagnostics, rate_hz: f64, hardware_id: &str, now_ns: i64) -> TrackerHealth {
        TrackerHealth { hardware_id: hardware_id.into(), output: RateMonitor::new(d.output, rate_hz, now_ns) }
    }

    /// Thresholds changed at run time (`diagnostics.*` set); what was measured is kept.
    pub fn set_thresholds(&mut self, d: &TrackerDiagnostics, rate_hz: f64) {
        self.output.set_thresholds(d.output, rate_hz);
    }
}

impl HealthReport for TrackerHealth {
    fn report(&mut self, now_ns: i64) -> Vec<Status> {
        let mut s = Status::new("marker_tracker", "output", &self.hardware_id);
        self.output.grade(now_ns, "published samples", &mut s);
        vec![s.finish()]
    }
}

/// marker_classifier: its tracker input and whether it has classified the markers.
#[derive(Debug, Clone)]
pub struct ClassifierHealth {
    hardware_id: String,
    pub inputs: RateMonitor,
    /// (registration markers, correction markers) of the newest classification.
    classified: Option<(usize, usize)>,
}

impl ClassifierHealth {
    pub fn new(d: &ClassifierDiagnostics, hardware_id: &str, now_ns: i64) -> ClassifierHealth {
        ClassifierHealth {
            hardware_id: hardware_id.into(),
            inputs: RateMonitor::new(d.inputs, d.expected_input_rate_hz, now_ns),
            classified: None,
        }
    }

    /// Thresholds changed at run time (`diagnostics.*` set); what was measured is kept.
    pub fn set_thresholds(&mut self, d: &ClassifierDiagnostics) {
        self.inputs.set_thresholds(d.inputs, d.expected_input_rate_hz);
    }

    pub fn classified(&mut self, registration_markers: usize, correction_markers: usize) {
        self.classified = Some((registration_markers, correction_markers));
    }
}

impl HealthReport for ClassifierHealth {
    fn report(&mut self, now_ns: i64) -> Vec<Status> {
        let mut inputs = Status::new("marker_classifier", "inputs", &self.hardware_id);
        self.inputs.grade(now_ns, "tracker samples", &mut inputs);
        let mut c = Status::new("marker_classifier", "classification", &self.hardware_id);
        match self.classified {
            None => c.raise(Level::Warn, "no classification yet (window filling)".into()),
            Some((reg, corr)) => {
                c.value("registration markers", reg);
                c.value("correction markers", corr);
                if corr == 0 {
                    c.raise(Level::Warn, "no correction marker".into());
                }
            }
        }
        vec![inputs.finish(), c.finish()]
    }
}

/// lesion_registration: its tracker input and the registration's quality.
#[derive(Debug, Clone)]
pub struct RegistrationHealth {
    hardware_id: String,
    pub inputs: RateMonitor,
    pub registration: RegistrationMonitor,
}

impl RegistrationHealth {
    pub fn new(d: &RegistrationDiagnostics, hardware_id: &str, now_ns: i64) -> RegistrationHealth {
        RegistrationHealth {
            hardware_id: hardware_id.into(),
            inputs: RateMonitor::new(d.inputs, d.expected_input_rate_hz, now_ns),
            registration: RegistrationMonitor::new(d.registration),
        }
    }

    /// Thresholds changed at run time (`diagnostics.*` set); what was measured is kept.
    pub fn set_thresholds(&mut self, d: &RegistrationDiagnostics) {
        self.inputs.set_thresholds(d.inputs, d.expected_input_rate_hz);
        self.registration.set_thresholds(d.registration);
    }
}

impl HealthReport for RegistrationHealth {
    fn report(&mut self, now_ns: i64) -> Vec<Status> {
        let mut inputs = Status::new("lesion_registration", "inputs", &self.hardware_id);
        self.inputs.grade(now_ns, "tracker samples", &mut inputs);
        let mut r = Status::new("lesion_registration", "registration", &self.hardware_id);
        self.registration.grade(&mut r);
        vec![inputs.finish(), r.finish()]
    }
}

/// Where needle_target's calm-breathing baseline stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineState {
    /// No registration or planning case yet: nothing to record a baseline for.
    NotStarted,
    Recording,
    Recorded,
}

/// needle_target: its tracker input, its targets' validity, its baseline.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    hardware_id: String,
    pub inputs: RateMonitor,
    pub targets: ValidityMonitor,
    baseline: BaselineState,
}

impl TargetHealth {
    pub fn new(d: &TargetDiagnostics, tracker_rate_hz: f64, hardware_id: &str, now_ns: i64) -> TargetHealth {
        TargetHealth {
            hardware_id: hardware_id.into(),
            inputs: RateMonitor::new(d.inputs, tracker_rate_hz, now_ns),
            targets: ValidityMonitor::new(d.targets),
            baseline: BaselineState::NotStarted,
        }
    }

    /// Thresholds changed at run time (`diagnostics.*` set); what was measured is kept.
    pub fn set_thresholds(&mut self, d: &TargetDiagnostics, tracker_rate_hz: f64) {
        self.inputs.set_thresholds(d.inputs, tracker_rate_hz);
        self.targets.set_thresholds(d.targets);
    }

    /// A target published at `now_ns`, valid or not.
    pub fn target(&mut self, now_ns: i64, result: Result<(), &InvalidReason>) {
        self.targets.record(now_ns, result.err().map(reason_label));
    }

    pub fn baseline(&mut self, state: BaselineState) {
        self.baseline = state;
    }
}

impl HealthReport for TargetHealth {
    fn report(&mut self, now_ns: i64) -> Vec<Status> {
        let mut inputs = Status::new("needle_target", "inputs", &self.hardware_id);
        self.inputs.grade(now_ns, "tracker samples", &mut inputs);
        let mut targets = Status::new("needle_target", "targets", &self.hardware_id);
        self.targets.grade(now_ns, &mut targets);
        let mut b = Status::new("needle_target", "baseline", &self.hardware_id);
        let state = match self.baseline {
            BaselineState::NotStarted => "not started",
            BaselineState::Recording => "recording",
            BaselineState::Recorded => "recorded",
        };
        b.value("state", state);
        if self.baseline != BaselineState::Recorded {
            b.raise(Level::Warn, format!("baseline {state}"));
        }
        vec![inputs.finish(), targets.finish(), b.finish()]
    }
}

/// Whether vessel_segmentation has its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Being loaded on the worker thread (a few seconds at start).
    Loading {
        path: String,
    },
    Loaded {
        path: String,
    },
    /// The model could not be loaded, and why (a missing file, a bad file, no ONNX Runtime).
    Unavailable {
        path: String,
        reason: String,
    },
}

/// vessel_segmentation: the model and the request queue.
#[derive(Debug, Clone)]
pub struct SegmentationHealth {
    hardware_id: String,
    queue_depth_warn: u32,
    model: ModelState,
    /// Requests accepted and not yet answered (the running one and those queued behind it).
    pending: u32,
    served: u64,
    failed: u64,
    refused: u64,
}

impl SegmentationHealth {
    pub fn new(d: &SegmentationDiagnostics, model: ModelState, hardware_id: &str) -> SegmentationHealth {
        SegmentationHealth {
            hardware_id: hardware_id.into(),
            queue_depth_warn: d.queue_depth_warn,
            model,
            pending: 0,
            served: 0,
            failed: 0,
            refused: 0,
        }
    }

    /// Thresholds changed at run time (`diagnostics.*` set).
    pub fn set_thresholds(&mut self, d: &SegmentationDiagnostics) {
        self.queue_depth_warn = d.queue_depth_warn;
    }

    /// The model finished loading, or failed to.
    pub fn model(&mut self, state: ModelState) {
        self.model = state;
    }

    /// A request admitted to the queue.
    pub fn accepted(&mut self) {
        self.pending += 1;
    }

    /// A request refused on arrival (bad request, queue full).
    pub fn refused(&mut self) {
        self.refused += 1;
    }

    /// An admitted request answered, successfully or not.
    pub fn answered(&mut self, ok: bool) {
        self.pending = self.pending.saturating_sub(1);
        if ok {
            self.served += 1;
        } else {
            self.failed += 1;
        }
    }
}

impl HealthReport for SegmentationHealth {
    fn report(&mut self, _now_ns: i64) -> Vec<Status> {
        let mut s = Status::new("vessel_segmentation", "service", &self.hardware_id);
        match &self.model {
            ModelState::Loading { path } => {
                s.value("model loaded", "false");
                s.value("model", path);
                s.raise(Level::Warn, "model loading".into());
            }
            ModelState::Loaded { path } => {
                s.value("model loaded", "true");
                s.value("model", path);
            }
            ModelState::Unavailable { path, reason } => {
                s.value("model loaded", "false");
                s.value("model", path);
                s.raise(Level::Error, format!("model not loaded: {reason}"));
            }
        }
        let queued = self.pending.saturating_sub(1);
        s.value("running", self.pending > 0);
        s.value("queue depth", queued);
        s.value("served", self.served);
        s.value("failed", self.failed);
        s.value("refused", self.refused);
        if queued >= self.queue_depth_warn {
            s.raise(Level::Warn, format!("{queued} requests waiting (warn at {})", self.queue_depth_warn));
        }
        vec![s.finish()]
    }
}

/// trajectory_planner: its last planning request.
#[derive(Debug, Clone)]
pub struct PlannerHealth {
    hardware_id: String,
    thresholds: PlannerDiagnostics,
    planning_since_ns: Option<i64>,
    last: Option<(Result<(), String>, f64)>,
}

impl PlannerHealth {
    pub fn new(d: &PlannerDiagnostics, hardware_id: &str) -> PlannerHealth {
        PlannerHealth { hardware_id: hardware_id.into(), thresholds: *d, planning_since_ns: None, last: None }
    }

    /// Thresholds changed at run time (`diagnostics.*` set).
    pub fn set_thresholds(&mut self, d: &PlannerDiagnostics) {
        self.thresholds = *d;
    }

    /// Planning started at `now_ns`.
    pub fn started(&mut self, now_ns: i64) {
        self.planning_since_ns = Some(now_ns);
    }

    /// Planning ended at `now_ns`: a plan, or why not.
    pub fn finished(&mut self, now_ns: i64, result: Result<(), String>) {
        let took = self.planning_since_ns.take().map_or(0.0, |t| seconds(now_ns - t));
        self.last = Some((result, took));
    }
}

impl HealthReport for PlannerHealth {
    fn report(&mut self, now_ns: i64) -> Vec<Status> {
        let mut s = Status::new("trajectory_planner", "planning", &self.hardware_id);
        let warn_s = self.thresholds.planning_time_warn_s;
        if let Some(t) = self.planning_since_ns {
            let running = seconds(now_ns - t);
            s.value("planning for [s]", format!("{running:.1}"));
            if running > warn_s {
                s.raise(Level::Warn, format!("planning for {running:.0} s (warn above {warn_s} s)"));
            }
        }
        match &self.last {
            None => s.value("last plan", "none yet"),
            Some((result, took)) => {
                s.value("last planning time [s]", format!("{took:.2}"));
                match result {
                    Ok(()) => s.value("last plan", "ok"),
                    Err(reason) => {
                        s.value("last plan", "failed");
                        s.raise(Level::Warn, format!("last plan failed: {reason}"));
                    }
                }
                if *took > warn_s {
                    s.raise(Level::Warn, format!("last plan took {took:.0} s (warn above {warn_s} s)"));
                }
            }
        }
        vec![s.finish()]
    }
}
