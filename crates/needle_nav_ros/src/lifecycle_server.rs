//! The managed-node interface of every needle_nav node, as rcl_lifecycle serves it (r2r has no
//! lifecycle API): the services `<node>/change_state`, `get_state`, `get_available_states`,
//! `get_available_transitions`, `get_transition_graph` and the topic `<node>/transition_event`,
//! driven by [`needle_nav_nodes::lifecycle`]. What the states mean for the nodes:
//!
//! - configure: loads and validates the node's configuration and starts a session: creates its
//!   outputs (lifecycle publishers, closed), inputs and services, and spawns its tasks;
//! - activate / deactivate: opens / closes the outputs (needle_target publishes an invalid
//!   target on deactivation; vessel_segmentation refuses requests while not active);
//! - cleanup: ends the session: its tasks stop, its endpoints go, its state is forgotten;
//! - shutdown: the same, and the node is finalized (only these services remain).

use crate::context::{lock, Lifecycle, NodeContext, NodeError, RosContext};
use futures::StreamExt;
use needle_nav_core::interfaces::NodeKind;
use needle_nav_nodes::lifecycle::{
    run_transition, valid_transitions, CallbackResult, LifecycleCallbacks, LifecycleMachine, State, Step, Transition,
    TransitionRequest,
};
use r2r::lifecycle_msgs::{msg as lmsg, srv as lsrv};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// An r2r node shared between its spin thread and the lifecycle callbacks, which create and
/// destroy endpoints on it. The spin thread steps aside when a callback waits for the node.
#[derive(Clone)]
pub(crate) struct SharedNode {
    node: Arc<Mutex<r2r::Node>>,
    wanted: Arc<AtomicBool>,
}

impl SharedNode {
    pub(crate) fn new(node: r2r::Node) -> SharedNode {
        SharedNode { node: Arc::new(Mutex::new(node)), wanted: Arc::new(AtomicBool::new(false)) }
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut r2r::Node) -> R) -> R {
        self.wanted.store(true, Ordering::SeqCst);
        let mut node = lock(&self.node);
        self.wanted.store(false, Ordering::SeqCst);
        f(&mut node)
    }

    pub(crate) fn spin_once(&self, timeout: Duration) {
        lock(&self.node).spin_once(timeout);
        if self.wanted.load(Ordering::SeqCst) {
            // A std mutex is not fair: let the waiting callback in before locking again.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A node's running session (configure .. cleanup).
struct Session {
    stop: watch::Sender<bool>,
    lifecycle: Lifecycle,
}

/// A managed node: its lifecycle state and the callbacks that give the states their meaning.
struct Managed {
    kind: NodeKind,
    node: SharedNode,
    /// The process-level context; each session gets its own from it.
    base: NodeContext,
    session: Option<Session>,
    /// Why the last configure did not succeed (autostart reports it as the process's error).
    last_error: Option<NodeError>,
}

impl Managed {
    fn end_session(&mut self) {
        if let Some(session) = self.session.take() {
            session.lifecycle.deactivate();
            let _ = session.stop.send(true);
            let destroyers = session.lifecycle.take_destroyers();
            self.node.with(|node| destroyers.into_iter().for_each(|destroy| destroy(node)));
        }
    }
}

impl LifecycleCallbacks for Managed {
    fn on_configure(&mut self) -> CallbackResult {
        self.end_session();
        let (stop, stopped) = watch::channel(false);
        // The session's tasks end with the process, too.
        let mut process_stopping = self.base.process_stopping();
        let forward = stop.clone();
        self.base.runtime().spawn(async move {
            tokio::select! {
                _ = process_stopping.wait_for(|s| *s) => { let _ = forward.send(true); }
                _ = forward.closed() => {}
            }
        });
        let lifecycle = Lifecycle::inactive();
        let cx = self.base.for_session(stopped, lifecycle.clone());
        self.session = Some(Session { stop, lifecycle });
        let kind = self.kind;
        match self.node.with(|node| crate::nodes::start(kind, node, &cx)) {
            Ok(()) => {
                self.last_error = None;
                CallbackResult::Success
            }
            Err(e) => {
                tracing::error!(node = kind.name(), "configure failed: {e}");
                self.end_session();
                let result =
                    if matches!(e, NodeError::Config(_)) { CallbackResult::Failure } else { CallbackResult::Error };
                self.last_error = Some(e);
                result
            }
        }
    }

    fn on_cleanup(&mut self) -> CallbackResult {
        self.end_session();
        CallbackResult::Success
    }

    fn on_activate(&mut self) -> CallbackResult {
        match &self.session {
            Some(s) => {
                s.lifecycle.activate();
                CallbackResult::Success
            }
            None => CallbackResult::Error,
        }
    }

    fn on_deactivate(&mut self) -> CallbackResult {
        match &self.session {
            Some(s) => {
                s.lifecycle.deactivate();
                CallbackResult::Success
            }
            None => CallbackResult::Error,
        }
    }

    fn on_shutdown(&mut self, _from: State) -> CallbackResult {
        self.end_session();
        CallbackResult::Success
    }

    fn on_error(&mut self, _from: State) -> CallbackResult {
        self.end_session();
        CallbackResult::Success
    }
}

/// The lifecycle of one node, shared by its service handlers.
#[derive(Clone)]
pub(crate) struct LifecycleServer {
    inner: Arc<Mutex<(LifecycleMachine, Managed)>>,
    events: r2r::Publisher<lmsg::TransitionEvent>,
    name: &'static str,
}

/// The state once no transition runs, waited for off the async workers (a configure may take a
/// while, and the runtime has only two workers).
async fn state_when_free(inner: &Arc<Mutex<(LifecycleMachine, Managed)>>) -> State {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || lock(&inner).0.state()).await.unwrap_or(State::Unknown)
}

fn state_msg(s: State) -> lmsg::State {
    lmsg::State { id: s.id(), label: s.label().into() }
}

fn transition_msg(t: Transition) -> lmsg::Transition {
    lmsg::Transition { id: t.id(), label: t.label().into() }
}

fn description(t: Transition) -> lmsg::TransitionDescription {
    lmsg::TransitionDescription {
        transition: transition_msg(t),
        start_state: state_msg(t.start()),
        goal_state: state_msg(t.goal()),
    }
}

impl LifecycleServer {
    /// Serves the lifecycle interface of `kind` on `node` (now unconfigured).
    pub(crate) fn start(
        kind: NodeKind,
        node: r2r::Node,
        base: &NodeContext,
    ) -> Result<(LifecycleServer, SharedNode), NodeError> {
        let mut node = node;
        let name = kind.name();
        let services = r2r::QosProfile::services_default();
        let what = |s: &str| format!("{name}: cannot serve the lifecycle service {s}");
        let mut change = node
            .create_service::<lsrv::ChangeState::Service>("~/change_state", services.clone())
            .ros(what("change_state"))?;
        let mut get_state =
            node.create_service::<lsrv::GetState::Service>("~/get_state", services.clone()).ros(what("get_state"))?;
        let mut states = node
            .create_service::<lsrv::GetAvailableStates::Service>("~/get_available_states", services.clone())
            .ros(what("get_available_states"))?;
        let mut transitions = node
            .create_service::<lsrv::GetAvailableTransitions::Service>("~/get_available_transitions", services.clone())
            .ros(what("get_available_transitions"))?;
        let mut graph = node
            .create_service::<lsrv::GetAvailableTransitions::Service>("~/get_transition_graph", services)
            .ros(what("get_transition_graph"))?;
        // rcl_lifecycle publishes transition events with the default publisher options.
        let events = node
            .create_publisher::<lmsg::TransitionEvent>("~/transition_event", r2r::QosProfile::default())
            .ros(format!("{name}: cannot advertise transition_event"))?;
        let shared = SharedNode::new(node);
        let managed = Managed { kind, node: shared.clone(), base: base.clone(), session: None, last_error: None };
        let server = LifecycleServer { inner: Arc::new(Mutex::new((LifecycleMachine::new(), managed))), events, name };

        // Each handler answers and goes on: a client that went away only costs a log line.
        let respond_failed = move |service: &str, e: r2r::Error| {
            tracing::warn!(node = name, "could not answer {service}: {e}");
        };
        {
            let server = server.clone();
            base.spawn(async move {
                while let Some(req) = change.next().await {
                    let request = TransitionRequest {
                        id: req.message.transition.id,
                        label: req.message.transition.label.clone(),
                    };
                    let s = server.clone();
                    // The callbacks load files and create endpoints: off the async workers.
                    let success = tokio::task::spawn_blocking(move || s.change_state(&request)).await.unwrap_or(false);
                    if let Err(e) = req.respond(lsrv::ChangeState::Response { success }) {
                        respond_failed("change_state", e);
                    }
                }
            });
        }
        {
            let server = server.clone();
            base.spawn(async move {
                while let Some(req) = get_state.next().await {
                    let current_state = state_msg(state_when_free(&server.inner).await);
                    if let Err(e) = req.respond(lsrv::GetState::Response { current_state }) {
                        respond_failed("get_state", e);
                    }
                }
            });
        }
        base.spawn(async move {
            while let Some(req) = states.next().await {
                let available_states = State::ALL.iter().map(|s| state_msg(*s)).collect();
                if let Err(e) = req.respond(lsrv::GetAvailableStates::Response { available_states }) {
                    respond_failed("get_available_states", e);
                }
            }
        });
        {
            let server = server.clone();
            base.spawn(async move {
                while let Some(req) = transitions.next().await {
                    let available_transitions =
                        valid_transitions(state_when_free(&server.inner).await).into_iter().map(description).collect();
                    if let Err(e) = req.respond(lsrv::GetAvailableTransitions::Response { available_transitions }) {
                        respond_failed("get_available_transitions", e);
                    }
                }
            });
        }
        base.spawn(async move {
            while let Some(req) = graph.next().await {
                let available_transitions = Transition::ALL.iter().map(|t| description(*t)).collect();
                if let Err(e) = req.respond(lsrv::GetAvailableTransitions::Response { available_transitions }) {
                    respond_failed("get_transition_graph", e);
                }
            }
        });
        Ok((server, shared))
    }

    /// Runs a requested transition; true when it succeeded (ChangeState's `success`).
    pub(crate) fn change_state(&self, request: &TransitionRequest) -> bool {
        let mut guard = lock(&self.inner);
        let (machine, managed) = &mut *guard;
        let before = machine.state();
        match run_transition(machine, request, managed) {
            Err(refusal) => {
                tracing::warn!(node = self.name, "transition refused: {refusal}");
                false
            }
            Ok(outcome) => {
                outcome.steps.iter().for_each(|step| self.publish_event(step, &managed.base));
                tracing::info!(
                    node = self.name,
                    "lifecycle: {} -> {}{}",
                    before.label(),
                    machine.state().label(),
                    if outcome.success { "" } else { " (the transition did not succeed)" }
                );
                outcome.success
            }
        }
    }

    /// Configures and activates the node at start (`autostart:=true`). A configuration that is
    /// not valid ends the process, as it did before lifecycle management.
    pub(crate) fn autostart(&self) -> Result<(), NodeError> {
        for label in ["configure", "activate"] {
            if !self.change_state(&TransitionRequest { id: 0, label: label.into() }) {
                let error = lock(&self.inner).1.last_error.take();
                return Err(
                    error.unwrap_or_else(|| NodeError::Runtime(format!("{}: autostart: {label} failed", self.name)))
                );
            }
        }
        Ok(())
    }

    fn publish_event(&self, step: &Step, cx: &NodeContext) {
        let event = lmsg::TransitionEvent {
            timestamp: u64::try_from(cx.now_ns()).unwrap_or(0),
            transition: transition_msg(step.transition),
            start_state: state_msg(step.start),
            goal_state: state_msg(step.goal),
        };
        if let Err(e) = self.events.publish(&event) {
            tracing::warn!(node = self.name, "transition_event not published: {e}");
        }
    }
}
