//! The managed-node (lifecycle) state machine, as the ROS 2 design
//! (<https://design.ros2.org/articles/node_lifecycle.html>) and rcl_lifecycle's default state
//! machine define it, without ROS: states and transitions carry lifecycle_msgs' ids and
//! rcl_lifecycle's labels, so that the shell can answer `ros2 lifecycle` with these values as they
//! are.
//!
//! A transition asked for from outside (configure, cleanup, activate, deactivate, shutdown) moves
//! the node into a transition state; the node's callback then reports SUCCESS, FAILURE or ERROR,
//! which moves it on along a callback-result transition (`on_configure_success` etc.). The
//! machine only says where to go; running the callbacks is the shell's business.

/// A lifecycle state: primary states (1-4) and transition states (10-15), ids of
/// `lifecycle_msgs/msg/State`. `Unknown` (0) exists in rcl's map but is never current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Unknown,
    Unconfigured,
    Inactive,
    Active,
    Finalized,
    Configuring,
    CleaningUp,
    ShuttingDown,
    Activating,
    Deactivating,
    ErrorProcessing,
}

impl State {
    /// Every state, in the order rcl_lifecycle registers them (what `get_available_states` lists).
    pub const ALL: [State; 11] = [
        State::Unknown,
        State::Unconfigured,
        State::Inactive,
        State::Active,
        State::Finalized,
        State::Configuring,
        State::CleaningUp,
        State::ShuttingDown,
        State::Activating,
        State::Deactivating,
        State::ErrorProcessing,
    ];

    /// The id in `lifecycle_msgs/msg/State` (PRIMARY_STATE_* / TRANSITION_STATE_*).
    pub fn id(self) -> u8 {
        match self {
            State::Unknown => 0,
            State::Unconfigured => 1,
            State::Inactive => 2,
            State::Active => 3,
            State::Finalized => 4,
            State::Configuring => 10,
            State::CleaningUp => 11,
            State::ShuttingDown => 12,
            State::Activating => 13,
            State::Deactivating => 14,
            State::ErrorProcessing => 15,
        }
    }

    /// rcl_lifecycle's label.
    pub fn label(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Unconfigured => "unconfigured",
            State::Inactive => "inactive",
            State::Active => "active",
            State::Finalized => "finalized",
            State::Configuring => "configuring",
            State::CleaningUp => "cleaningup",
            State::ShuttingDown => "shuttingdown",
            State::Activating => "activating",
            State::Deactivating => "deactivating",
            State::ErrorProcessing => "errorprocessing",
        }
    }

    pub fn is_primary(self) -> bool {
        self.id() < 10
    }
}

/// A transition of rcl_lifecycle's default state machine, ids of `lifecycle_msgs/msg/Transition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    Configure,
    OnConfigureSuccess,
    OnConfigureFailure,
    OnConfigureError,
    Cleanup,
    OnCleanupSuccess,
    OnCleanupFailure,
    OnCleanupError,
    Activate,
    OnActivateSuccess,
    OnActivateFailure,
    OnActivateError,
    Deactivate,
    OnDeactivateSuccess,
    OnDeactivateFailure,
    OnDeactivateError,
    UnconfiguredShutdown,
    InactiveShutdown,
    ActiveShutdown,
    OnShutdownSuccess,
    OnShutdownFailure,
    OnShutdownError,
    OnErrorSuccess,
    OnErrorFailure,
    OnErrorError,
}

/// What a transition's callback reports (`TRANSITION_CALLBACK_*` of lifecycle_msgs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackResult {
    Success,
    Failure,
    Error,
}

impl CallbackResult {
    pub fn id(self) -> u8 {
        match self {
            CallbackResult::Success => 97,
            CallbackResult::Failure => 98,
            CallbackResult::Error => 99,
        }
    }
}

impl Transition {
    /// Every transition, in the order rcl_lifecycle registers them (the transition graph).
    pub const ALL: [Transition; 25] = [
        Transition::Configure,
        Transition::OnConfigureSuccess,
        Transition::OnConfigureFailure,
        Transition::OnConfigureError,
        Transition::Cleanup,
        Transition::OnCleanupSuccess,
        Transition::OnCleanupFailure,
        Transition::OnCleanupError,
        Transition::Activate,
        Transition::OnActivateSuccess,
        Transition::OnActivateFailure,
        Transition::OnActivateError,
        Transition::Deactivate,
        Transition::OnDeactivateSuccess,
        Transition::OnDeactivateFailure,
        Transition::OnDeactivateError,
        Transition::UnconfiguredShutdown,
        Transition::InactiveShutdown,
        Transition::ActiveShutdown,
        Transition::OnShutdownSuccess,
        Transition::OnShutdownFailure,
        Transition::OnShutdownError,
        Transition::OnErrorSuccess,
        Transition::OnErrorFailure,
        Transition::OnErrorError,
    ];

    /// The id in `lifecycle_msgs/msg/Transition`.
    pub fn id(self) -> u8 {
        use Transition::*;
        match self {
            Configure => 1,
            Cleanup => 2,
            Activate => 3,
            Deactivate => 4,
            UnconfiguredShutdown => 5,
            InactiveShutdown => 6,
            ActiveShutdown => 7,
            OnConfigureSuccess => 10,
            OnConfigureFailure => 11,
            OnConfigureError => 12,
            OnCleanupSuccess => 20,
            OnCleanupFailure => 21,
            OnCleanupError => 22,
            OnActivateSuccess => 30,
            OnActivateFailure => 31,
            OnActivateError => 32,
            OnDeactivateSuccess => 40,
            OnDeactivateFailure => 41,
            OnDeactivateError => 42,
            OnShutdownSuccess => 50,
            OnShutdownFailure => 51,
            OnShutdownError => 52,
            OnErrorSuccess => 60,
            OnErrorFailure => 61,
            OnErrorError => 62,
        }
    }

    /// rcl_lifecycle's label: the three shutdowns share "shutdown", the callback results are
    /// "transition_success" / "transition_failure" / "transition_error".
    pub fn label(self) -> &'static str {
        use Transition::*;
        match self {
            Configure => "configure",
            Cleanup => "cleanup",
            Activate => "activate",
            Deactivate => "deactivate",
            UnconfiguredShutdown | InactiveShutdown | ActiveShutdown => "shutdown",
            OnConfigureSuccess | OnCleanupSuccess | OnActivateSuccess | OnDeactivateSuccess | OnShutdownSuccess
            | OnErrorSuccess => "transition_success",
            OnConfigureFailure | OnCleanupFailure | OnActivateFailure | OnDeactivateFailure | OnShutdownFailure
            | OnErrorFailure => "transition_failure",
            OnConfigureError | OnCleanupError | OnActivateError | OnDeactivateError | OnShutdownError
            | OnErrorError => "transition_error",
        }
    }

    /// Where the transition starts and where it leads.
    pub fn endpoints(self) -> (State, State) {
        use State as S;
        use Transition::*;
        match self {
            Configure => (S::Unconfigured, S::Configuring),
            OnConfigureSuccess => (S::Configuring, S::Inactive),
            OnConfigureFailure => (S::Configuring, S::Unconfigured),
            OnConfigureError => (S::Configuring, S::ErrorProcessing),
            Cleanup => (S::Inactive, S::CleaningUp),
            OnCleanupSuccess => (S::CleaningUp, S::Unconfigured),
            OnCleanupFailure => (S::CleaningUp, S::Inactive),
            OnCleanupError => (S::CleaningUp, S::ErrorProcessing),
            Activate => (S::Inactive, S::Activating),
            OnActivateSuccess => (S::Activating, S::Active),
            OnActivateFailure => (S::Activating, S::Inactive),
            OnActivateError => (S::Activating, S::ErrorProcessing),
            Deactivate => (S::Active, S::Deactivating),
            OnDeactivateSuccess => (S::Deactivating, S::Inactive),
            OnDeactivateFailure => (S::Deactivating, S::Active),
            OnDeactivateError => (S::Deactivating, S::ErrorProcessing),
            UnconfiguredShutdown => (S::Unconfigured, S::ShuttingDown),
            InactiveShutdown => (S::Inactive, S::ShuttingDown),
            ActiveShutdown => (S::Active, S::ShuttingDown),
            OnShutdownSuccess => (S::ShuttingDown, S::Finalized),
            OnShutdownFailure => (S::ShuttingDown, S::Finalized),
            OnShutdownError => (S::ShuttingDown, S::ErrorProcessing),
            OnErrorSuccess => (S::ErrorProcessing, S::Unconfigured),
            OnErrorFailure => (S::ErrorProcessing, S::Finalized),
            OnErrorError => (S::ErrorProcessing, S::Finalized),
        }
    }

    pub fn start(self) -> State {
        self.endpoints().0
    }

    pub fn goal(self) -> State {
        self.endpoints().1
    }

    /// Transitions a client may ask for (the others follow from callback results).
    pub fn is_requestable(self) -> bool {
        self.start().is_primary()
    }
}

/// The transitions valid from `state`, in rcl_lifecycle's order (what `get_available_transitions`
/// answers).
pub fn valid_transitions(state: State) -> Vec<Transition> {
    Transition::ALL.iter().copied().filter(|t| t.start() == state).collect()
}

/// A transition a client asked for, as `lifecycle_msgs/srv/ChangeState` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRequest {
    pub id: u8,
    pub label: String,
}

/// Why a requested transition was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no transition labelled `{label}` from state {from}")]
    NoSuchLabel { label: String, from: &'static str },
    #[error("transition id {id} is not valid from state {from}")]
    NoSuchId { id: u8, from: &'static str },
    #[error("a transition is already in progress (state {0})")]
    Busy(&'static str),
}

/// One step the machine took, for `transition_event`: the transition and the states it joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub transition: Transition,
    pub start: State,
    pub goal: State,
}

/// A managed node's state. Starts unconfigured.
#[derive(Debug, Clone)]
pub struct LifecycleMachine {
    state: State,
}

impl Default for LifecycleMachine {
    fn default() -> Self {
        LifecycleMachine { state: State::Unconfigured }
    }
}

impl LifecycleMachine {
    pub fn new() -> LifecycleMachine {
        LifecycleMachine::default()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The transition `request` names from the current state. As rclcpp does: a non-empty label
    /// takes precedence (a `ros2 service call` leaves the id 0), looked up among the current
    /// state's transitions ("shutdown" is the one leaving this state); otherwise the id.
    pub fn resolve(&self, request: &TransitionRequest) -> Result<Transition, Refusal> {
        if !self.state.is_primary() {
            return Err(Refusal::Busy(self.state.label()));
        }
        let valid = valid_transitions(self.state);
        if !request.label.is_empty() {
            return valid
                .into_iter()
                .find(|t| t.label() == request.label)
                .ok_or_else(|| Refusal::NoSuchLabel { label: request.label.clone(), from: self.state.label() });
        }
        valid
            .into_iter()
            .find(|t| t.id() == request.id)
            .ok_or(Refusal::NoSuchId { id: request.id, from: self.state.label() })
    }

    /// Starts `transition` (from [`Self::resolve`]): the node is now in the transition state and
    /// must run the callback of [`Step::goal`].
    pub fn begin(&mut self, transition: Transition) -> Result<Step, Refusal> {
        if transition.start() != self.state || !transition.is_requestable() {
            return Err(Refusal::NoSuchId { id: transition.id(), from: self.state.label() });
        }
        self.state = transition.goal();
        Ok(Step { transition, start: transition.start(), goal: transition.goal() })
    }

    /// The callback of the current transition state reported `result`: moves on along the
    /// callback-result transition. `None` when not in a transition state.
    pub fn finish(&mut self, result: CallbackResult) -> Option<Step> {
        use CallbackResult as R;
        use Transition::*;
        let transition = match (self.state, result) {
            (State::Configuring, R::Success) => OnConfigureSuccess,
            (State::Configuring, R::Failure) => OnConfigureFailure,
            (State::Configuring, R::Error) => OnConfigureError,
            (State::CleaningUp, R::Success) => OnCleanupSuccess,
            (State::CleaningUp, R::Failure) => OnCleanupFailure,
            (State::CleaningUp, R::Error) => OnCleanupError,
            (State::Activating, R::Success) => OnActivateSuccess,
            (State::Activating, R::Failure) => OnActivateFailure,
            (State::Activating, R::Error) => OnActivateError,
            (State::Deactivating, R::Success) => OnDeactivateSuccess,
            (State::Deactivating, R::Failure) => OnDeactivateFailure,
            (State::Deactivating, R::Error) => OnDeactivateError,
            (State::ShuttingDown, R::Success) => OnShutdownSuccess,
            (State::ShuttingDown, R::Failure) => OnShutdownFailure,
            (State::ShuttingDown, R::Error) => OnShutdownError,
            (State::ErrorProcessing, R::Success) => OnErrorSuccess,
            (State::ErrorProcessing, R::Failure) => OnErrorFailure,
            (State::ErrorProcessing, R::Error) => OnErrorError,
            _ => return None,
        };
        self.state = transition.goal();
        Some(Step { transition, start: transition.start(), goal: transition.goal() })
    }
}

/// What the callbacks of a managed node do, called by [`run_transition`] in the transition
/// states (`on_error` in errorprocessing).
pub trait LifecycleCallbacks {
    fn on_configure(&mut self) -> CallbackResult;
    fn on_cleanup(&mut self) -> CallbackResult;
    fn on_activate(&mut self) -> CallbackResult;
    fn on_deactivate(&mut self) -> CallbackResult;
    fn on_shutdown(&mut self, from: State) -> CallbackResult;
    fn on_error(&mut self, from: State) -> CallbackResult;
}

/// What a change of state did: every step in order, and whether it succeeded as
/// `ChangeState`'s `success` means it (the callback reported SUCCESS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub steps: Vec<Step>,
    pub success: bool,
}

/// Runs a requested transition to its end: resolve, enter the transition state, run the
/// callback, follow its result (through errorprocessing and `on_error` on ERROR). A refused
/// request leaves the state as it was and runs no callback.
pub fn run_transition(
    machine: &mut LifecycleMachine,
    request: &TransitionRequest,
    callbacks: &mut impl LifecycleCallbacks,
) -> Result<ChangeOutcome, Refusal> {
    let transition = machine.resolve(request)?;
    let from = machine.state();
    let first = machine.begin(transition)?;
    let mut steps = vec![first];
    let result = match first.goal {
        State::Configuring => callbacks.on_configure(),
        State::CleaningUp => callbacks.on_cleanup(),
        State::Activating => callbacks.on_activate(),
        State::Deactivating => callbacks.on_deactivate(),
        State::ShuttingDown => callbacks.on_shutdown(from),
        other => unreachable_state(other),
    };
    steps.extend(machine.finish(result));
    if machine.state() == State::ErrorProcessing {
        let recovered = callbacks.on_error(first.goal);
        steps.extend(machine.finish(recovered));
    }
    Ok(ChangeOutcome { steps, success: result == CallbackResult::Success })
}

/// A requestable transition always leads into one of the five transition states above; anything
/// else is treated as an error of the callback (never a panic).
fn unreachable_state(state: State) -> CallbackResult {
    tracing::error!("lifecycle: no callback for transition state {}", state.label());
    CallbackResult::Error
}

/// The reason text needle_target publishes with its invalid target when it is deactivated.
pub const DEACTIVATED_REASON: &str =
    "needle_target deactivated by its lifecycle manager: no targets until it is activated again";

#[cfg(test)]
mod tests {
    use super::*;
    use CallbackResult as R;
    use State as S;

    /// The design's table, written out independently of the code above: (state, requested label,
    /// callback result) -> (states visited after the start, final state).
    const TABLE: &[(S, &str, R, &[S])] = &[
        (S::Unconfigured, "configure", R::Success, &[S::Configuring, S::Inactive]),
        (S::Unconfigured, "configure", R::Failure, &[S::Configuring, S::Unconfigured]),
        (S::Unconfigured, "configure", R::Error, &[S::Configuring, S::ErrorProcessing, S::Unconfigured]),
        (S::Inactive, "cleanup", R::Success, &[S::CleaningUp, S::Unconfigured]),
        (S::Inactive, "cleanup", R::Failure, &[S::CleaningUp, S::Inactive]),
        (S::Inactive, "cleanup", R::Error, &[S::CleaningUp, S::ErrorProcessing, S::Unconfigured]),
        (S::Inactive, "activate", R::Success, &[S::Activating, S::Active]),
        (S::Inactive, "activate", R::Failure, &[S::Activating, S::Inactive]),
        (S::Inactive, "activate", R::Error, &[S::Activating, S::ErrorProcessing, S::Unconfigured]),
        (S::Active, "deactivate", R::Success, &[S::Deactivating, S::Inactive]),
        (S::Active, "deactivate", R::Failure, &[S::Deactivating, S::Active]),
        (S::Active, "deactivate", R::Error, &[S::Deactivating, S::ErrorProcessing, S::Unconfigured]),
        (S::Unconfigured, "shutdown", R::Success, &[S::ShuttingDown, S::Finalized]),
        (S::Inactive, "shutdown", R::Success, &[S::ShuttingDown, S::Finalized]),
        (S::Active, "shutdown", R::Success, &[S::ShuttingDown, S::Finalized]),
        (S::Active, "shutdown", R::Failure, &[S::ShuttingDown, S::Finalized]),
        (S::Inactive, "shutdown", R::Error, &[S::ShuttingDown, S::ErrorProcessing, S::Unconfigured]),
    ];

    /// Callbacks that answer with fixed results and record what ran.
    struct Scripted {
        result: R,
        on_error: R,
        ran: Vec<&'static str>,
    }

    impl LifecycleCallbacks for Scripted {
        fn on_configure(&mut self) -> R {
            self.ran.push("configure");
            self.result
        }
        fn on_cleanup(&mut self) -> R {
            self.ran.push("cleanup");
            self.result
        }
        fn on_activate(&mut self) -> R {
            self.ran.push("activate");
            self.result
        }
        fn on_deactivate(&mut self) -> R {
            self.ran.push("deactivate");
            self.result
        }
        fn on_shutdown(&mut self, _: State) -> R {
            self.ran.push("shutdown");
            self.result
        }
        fn on_error(&mut self, _: State) -> R {
            self.ran.push("error");
            self.on_error
        }
    }

    fn machine_in(state: S) -> LifecycleMachine {
        LifecycleMachine { state }
    }

    fn request(label: &str) -> TransitionRequest {
        TransitionRequest { id: 0, label: label.into() }
    }

    #[test]
    fn ids_and_labels_are_lifecycle_msgs() {
        let states: Vec<(u8, &str)> = State::ALL.iter().map(|s| (s.id(), s.label())).collect();
        assert_eq!(
            states,
            [
                (0, "unknown"),
                (1, "unconfigured"),
                (2, "inactive"),
                (3, "active"),
                (4, "finalized"),
                (10, "configuring"),
                (11, "cleaningup"),
                (12, "shuttingdown"),
                (13, "activating"),
                (14, "deactivating"),
                (15, "errorprocessing")
            ]
        );
        let requestable: Vec<(u8, &str)> =
            Transition::ALL.iter().filter(|t| t.is_requestable()).map(|t| (t.id(), t.label())).collect();
        assert_eq!(
            requestable,
            [
                (1, "configure"),
                (2, "cleanup"),
                (3, "activate"),
                (4, "deactivate"),
                (5, "shutdown"),
                (6, "shutdown"),
                (7, "shutdown")
            ]
        );
        let ids: Vec<u8> = Transition::ALL.iter().filter(|t| !t.is_requestable()).map(|t| t.id()).collect();
        assert_eq!(ids, [10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52, 60, 61, 62]);
        assert_eq!((R::Success.id(), R::Failure.id(), R::Error.id()), (97, 98, 99));
    }

    #[test]
    fn the_design_table_holds_for_every_row() {
        for &(start, label, result, visited) in TABLE {
            let mut m = machine_in(start);
            let mut cb = Scripted { result, on_error: R::Success, ran: vec![] };
            let out = run_transition(&mut m, &request(label), &mut cb).unwrap();
            let goals: Vec<S> = out.steps.iter().map(|s| s.goal).collect();
            assert_eq!(goals, visited, "{label} from {start:?} with {result:?}");
            assert_eq!(out.steps[0].start, start);
            // Each step starts where the previous one ended.
            for w in out.steps.windows(2) {
                assert_eq!(w[0].goal, w[1].start);
            }
            assert_eq!(m.state(), *visited.last().unwrap());
            assert_eq!(out.success, result == R::Success);
        }
    }

    #[test]
    fn an_error_that_cannot_be_handled_finalizes() {
        for on_error in [R::Failure, R::Error] {
            let mut m = machine_in(S::Active);
            let mut cb = Scripted { result: R::Error, on_error, ran: vec![] };
            let out = run_transition(&mut m, &request("deactivate"), &mut cb).unwrap();
            assert_eq!(m.state(), S::Finalized);
            assert_eq!(cb.ran, ["deactivate", "error"]);
            assert_eq!(out.steps.last().unwrap().transition.id(), if on_error == R::Failure { 61 } else { 62 });
        }
    }

    #[test]
    fn invalid_transitions_are_refused_and_change_nothing() {
        let valid: &[(S, &[&str])] = &[
            (S::Unconfigured, &["configure", "shutdown"]),
            (S::Inactive, &["cleanup", "activate", "shutdown"]),
            (S::Active, &["deactivate", "shutdown"]),
            (S::Finalized, &[]),
        ];
        for &(state, ok) in valid {
            for label in ["configure", "cleanup", "activate", "deactivate", "shutdown", "transition_success", "bogus"] {
                let mut m = machine_in(state);
                let mut cb = Scripted { result: R::Success, on_error: R::Success, ran: vec![] };
                let out = run_transition(&mut m, &request(label), &mut cb);
                if ok.contains(&label) {
                    assert!(out.is_ok(), "{label} from {state:?}");
                } else {
                    assert!(out.is_err(), "{label} from {state:?} must be refused");
                    assert_eq!(m.state(), state);
                    assert!(cb.ran.is_empty());
                }
            }
            // By id: every id 0..=255 that is not one of the state's transitions is refused.
            let ok_ids: Vec<u8> = valid_transitions(state).iter().map(|t| t.id()).collect();
            for id in 0..=255u8 {
                let m = machine_in(state);
                let resolved = m.resolve(&TransitionRequest { id, label: String::new() });
                assert_eq!(resolved.is_ok(), ok_ids.contains(&id), "id {id} from {state:?}");
            }
        }
    }

    #[test]
    fn requests_by_id_match_the_shutdown_of_each_state() {
        for (state, id) in [(S::Unconfigured, 5), (S::Inactive, 6), (S::Active, 7)] {
            let m = machine_in(state);
            assert_eq!(m.resolve(&TransitionRequest { id, label: String::new() }).unwrap().id(), id);
            // The label takes precedence over the id, as in rclcpp.
            assert_eq!(m.resolve(&TransitionRequest { id: 1, label: "shutdown".into() }).unwrap().id(), id);
        }
        // Another state's shutdown id is refused.
        let m = machine_in(S::Unconfigured);
        assert!(m.resolve(&TransitionRequest { id: 7, label: String::new() }).is_err());
    }

    #[test]
    fn transition_states_accept_no_request() {
        for state in
            [S::Configuring, S::CleaningUp, S::ShuttingDown, S::Activating, S::Deactivating, S::ErrorProcessing]
        {
            let m = machine_in(state);
            assert!(matches!(m.resolve(&request("shutdown")), Err(Refusal::Busy(_))));
            let mut m = machine_in(state);
            assert!(m.begin(Transition::Configure).is_err());
            assert_eq!(m.state(), state);
        }
        let mut m = machine_in(S::Inactive);
        assert!(m.begin(Transition::OnActivateSuccess).is_err(), "callback results are not requestable");
        assert_eq!(m.finish(R::Success), None, "no callback runs in a primary state");
    }

    #[test]
    fn available_transitions_per_state_as_rcl_lists_them() {
        let ids = |s| valid_transitions(s).iter().map(|t| t.id()).collect::<Vec<_>>();
        assert_eq!(ids(S::Unconfigured), [1, 5]);
        assert_eq!(ids(S::Inactive), [2, 3, 6]);
        assert_eq!(ids(S::Active), [4, 7]);
        assert_eq!(ids(S::Finalized), Vec::<u8>::new());
        assert_eq!(ids(S::Configuring), [10, 11, 12]);
        assert_eq!(ids(S::ErrorProcessing), [60, 61, 62]);
        // Every transition state has exactly its three callback results.
        for s in State::ALL.iter().filter(|s| !s.is_primary()) {
            assert_eq!(valid_transitions(*s).len(), 3);
        }
    }

    #[test]
    fn a_full_walk_visits_every_primary_state() {
        let mut m = LifecycleMachine::new();
        assert_eq!(m.state(), S::Unconfigured);
        let mut cb = Scripted { result: R::Success, on_error: R::Success, ran: vec![] };
        for (label, to) in [
            ("configure", S::Inactive),
            ("activate", S::Active),
            ("deactivate", S::Inactive),
            ("cleanup", S::Unconfigured),
            ("configure", S::Inactive),
            ("activate", S::Active),
            ("shutdown", S::Finalized),
        ] {
            run_transition(&mut m, &request(label), &mut cb).unwrap();
            assert_eq!(m.state(), to);
        }
        assert!(run_transition(&mut m, &request("configure"), &mut cb).is_err());
        assert_eq!(cb.ran, ["configure", "activate", "deactivate", "cleanup", "configure", "activate", "shutdown"]);
    }
}
