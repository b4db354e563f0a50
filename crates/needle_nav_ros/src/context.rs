//! What every node of the shell shares, below the runtime that starts them: the node's context
//! (where its tasks run, when to stop, its ROS clock, what the process waits for before it exits),
//! typed errors, and small helpers for endpoints and configuration. Nothing here knows the nodes.

use needle_nav_nodes::config::ConfigError;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what}: {source}")]
    Ros { what: String, source: r2r::Error },
    #[error("{0}")]
    Runtime(String),
}

/// Attaches a description to an r2r error.
pub trait RosContext<T> {
    fn ros(self, what: impl Into<String>) -> Result<T, NodeError>;
}

impl<T> RosContext<T> for r2r::Result<T> {
    fn ros(self, what: impl Into<String>) -> Result<T, NodeError> {
        self.map_err(|source| NodeError::Ros { what: what.into(), source })
    }
}

/// Work a node leaves running in the background that the process must let finish before it exits
/// (each entry: what it is, and a wait with a deadline that says whether it finished).
type ExitWait = (String, Box<dyn Fn(Duration) -> bool + Send>);

/// The waits nodes registered, shared by every node of a process.
#[derive(Clone, Default)]
pub(crate) struct ExitWaits(Arc<Mutex<Vec<ExitWait>>>);

impl ExitWaits {
    /// Waits for each registered piece of work, all within `timeout`; returns what did not finish.
    pub(crate) fn wait_all(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let waits = lock(&self.0);
        waits
            .iter()
            .filter(|(_, wait)| !wait(deadline.saturating_duration_since(Instant::now())))
            .map(|(what, _)| what.clone())
            .collect()
    }
}

/// What a node's tasks get: where to run, when to stop, the ROS clock, and where to register work
/// the process must wait for before it exits.
#[derive(Clone)]
pub struct NodeContext {
    pub name: String,
    rt: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    clock: Arc<Mutex<r2r::Clock>>,
    exit_waits: ExitWaits,
    /// The node's lifecycle session: whether its outputs may publish (see [`Lifecycle`]).
    lifecycle: Lifecycle,
}

impl NodeContext {
    pub(crate) fn new(
        name: &str,
        rt: tokio::runtime::Handle,
        shutdown: watch::Receiver<bool>,
        clock: Arc<Mutex<r2r::Clock>>,
        exit_waits: ExitWaits,
    ) -> NodeContext {
        NodeContext { name: name.to_string(), rt, shutdown, clock, exit_waits, lifecycle: Lifecycle::always_active() }
    }

    /// The context of one lifecycle session (configure .. cleanup) of this node: its tasks stop
    /// when `shutdown` says so, its outputs publish while `lifecycle` is active.
    pub(crate) fn for_session(&self, shutdown: watch::Receiver<bool>, lifecycle: Lifecycle) -> NodeContext {
        NodeContext { shutdown, lifecycle, ..self.clone() }
    }

    /// The process is stopping.
    pub(crate) fn process_stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Whether the node is active (lifecycle): outputs publish, services serve.
    pub fn is_active(&self) -> bool {
        self.lifecycle.is_active()
    }

    /// Waits until the node is active (at once when it is).
    pub async fn wait_active(&self) {
        let mut rx = self.lifecycle.0.changed.subscribe();
        let _ = rx.wait_for(|active| *active).await;
    }

    /// Runs `f` when the node is deactivated (or shut down from active), after its outputs are
    /// closed: what it publishes must go through [`LifecyclePublisher::publish_regardless`].
    pub fn on_deactivate(&self, f: impl Fn() + Send + 'static) {
        lock(&self.lifecycle.0.hooks).on_deactivate.push(Box::new(f));
    }

    /// Asks the process to wait (up to its shutdown deadline) for background work before it
    /// exits: `wait(timeout)` returns whether the work finished in time.
    pub fn wait_before_exit(&self, what: &str, wait: impl Fn(Duration) -> bool + Send + 'static) {
        lock(&self.exit_waits.0).push((what.to_string(), Box::new(wait)));
    }

    /// Runs `task` until it ends or the process shuts down.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.clone();
        self.rt.spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }

    /// Now on the node's ROS clock [ns].
    pub fn now_ns(&self) -> i64 {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        match clock.get_now() {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => {
                tracing::warn!(node = %self.name, "ROS clock unavailable ({e}); using system time");
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0)
            }
        }
    }
}

/// Locks node state shared between tasks; a task that panicked while holding it must not take
/// the node down with it, so a poisoned lock is recovered.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates a lifecycle publisher for an endpoint with its QoS: it publishes only while the node
/// is active, and is destroyed when the node is cleaned up.
pub(crate) fn publisher<T: r2r::WrappedTypesupport + Clone + Send + 'static>(
    node: &mut r2r::Node,
    cx: &NodeContext,
    ep: needle_nav_core::interfaces::Endpoint,
) -> Result<LifecyclePublisher<T>, NodeError> {
    let inner = node
        .create_publisher::<T>(ep.name, crate::qos::profile(ep.qos))
        .ros(format!("cannot advertise {}", ep.name))?;
    let latched = matches!(ep.qos, needle_nav_core::interfaces::QosKind::LatchedState);
    let p = LifecyclePublisher {
        inner,
        lifecycle: cx.lifecycle.clone(),
        held: latched.then(|| Arc::new(Mutex::new(None))),
    };
    let mut hooks = lock(&cx.lifecycle.0.hooks);
    let destroyed = p.inner.clone();
    hooks.destroy.push(Box::new(move |node: &mut r2r::Node| node.destroy_publisher(destroyed)));
    if p.held.is_some() {
        let flushed = p.clone();
        hooks.on_activate.push(Box::new(move || flushed.publish_held()));
    }
    drop(hooks);
    Ok(p)
}

// ---- Lifecycle: what the managed-node states mean for the node's outputs ----

type Hook = Box<dyn Fn() + Send>;
type Destroy = Box<dyn FnOnce(&mut r2r::Node) + Send>;

#[derive(Default)]
pub(crate) struct LifecycleHooks {
    pub(crate) on_activate: Vec<Hook>,
    pub(crate) on_deactivate: Vec<Hook>,
    pub(crate) destroy: Vec<Destroy>,
}

pub(crate) struct LifecycleInner {
    /// Active: held for reading while a message is published, for writing while the state
    /// changes, so that nothing is published after a deactivation has begun.
    gate: std::sync::RwLock<bool>,
    changed: watch::Sender<bool>,
    pub(crate) hooks: Mutex<LifecycleHooks>,
}

/// One lifecycle session of a node (from configure to cleanup): whether it is active, and what
/// its endpoints need on activation, deactivation and cleanup.
#[derive(Clone)]
pub struct Lifecycle(pub(crate) Arc<LifecycleInner>);

impl Lifecycle {
    fn with_state(active: bool) -> Lifecycle {
        Lifecycle(Arc::new(LifecycleInner {
            gate: std::sync::RwLock::new(active),
            changed: watch::channel(active).0,
            hooks: Mutex::new(LifecycleHooks::default()),
        }))
    }

    /// For nodes that are not managed (the bag player, the monitor).
    pub(crate) fn always_active() -> Lifecycle {
        Lifecycle::with_state(true)
    }

    /// A new session, configured and inactive.
    pub(crate) fn inactive() -> Lifecycle {
        Lifecycle::with_state(false)
    }

    pub fn is_active(&self) -> bool {
        *self.0.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the outputs, then publishes what latched outputs held back while inactive.
    pub(crate) fn activate(&self) {
        *self.0.gate.write().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.changed.send_replace(true);
        lock(&self.0.hooks).on_activate.iter().for_each(|h| h());
    }

    /// Closes the outputs, then runs the node's deactivation hooks (needle_target says its
    /// target is no longer valid). No-op when not active.
    pub(crate) fn deactivate(&self) {
        {
            let mut gate = self.0.gate.write().unwrap_or_else(|p| p.into_inner());
            if !*gate {
                return;
            }
            *gate = false;
        }
        self.0.changed.send_replace(false);
        lock(&self.0.hooks).on_deactivate.iter().for_each(|h| h());
    }

    /// Takes what destroys the session's endpoints, and forgets its hooks.
    pub(crate) fn take_destroyers(&self) -> Vec<Destroy> {
        let mut hooks = lock(&self.0.hooks);
        hooks.on_activate.clear();
        hooks.on_deactivate.clear();
        std::mem::take(&mut hooks.destroy)
    }
}

/// A publisher that publishes only while its node is active, as rclcpp_lifecycle's
/// LifecyclePublisher: while inactive a message is dropped, except that a latched output keeps
/// its newest message and publishes it on activation (late joiners expect the current value).
pub struct LifecyclePublisher<T: r2r::WrappedTypesupport> {
    inner: r2r::Publisher<T>,
    lifecycle: Lifecycle,
    held: Option<Arc<Mutex<Option<T>>>>,
}

impl<T: r2r::WrappedTypesupport + Clone> Clone for LifecyclePublisher<T> {
    fn clone(&self) -> Self {
        LifecyclePublisher { inner: self.inner.clone(), lifecycle: self.lifecycle.clone(), held: self.held.clone() }
    }
}

impl<T: r2r::WrappedTypesupport + Clone + 'static> LifecyclePublisher<T> {
    pub fn publish(&self, msg: &T) -> r2r::Result<()> {
        let gate = self.lifecycle.0.gate.read().unwrap_or_else(|p| p.into_inner());
        if *gate {
            return self.inner.publish(msg);
        }
        if let Some(held) = &self.held {
            *lock(held) = Some(msg.clone());
        }
        Ok(())
    }

    /// Publishes even while inactive: only for what a node must say about its own deactivation.
    pub fn publish_regardless(&self, msg: &T) -> r2r::Result<()> {
        self.inner.publish(msg)
    }

    fn publish_held(&self) {
        let held = self.held.as_ref().and_then(|h| lock(h).take());
        if let Some(msg) = held {
            if let Err(e) = self.publish(&msg) {
                tracing::warn!("a latched message held while inactive could not be published: {e}");
            }
        }
    }
}

/// Subscribes to an endpoint with its QoS.
pub(crate) fn subscription<T: r2r::WrappedTypesupport + 'static>(
    node: &mut r2r::Node,
    ep: needle_nav_core::interfaces::Endpoint,
) -> Result<impl futures::Stream<Item = T> + Unpin, NodeError> {
    node.subscribe::<T>(ep.name, crate::qos::profile(ep.qos)).ros(format!("cannot subscribe to {}", ep.name))
}

/// Logs a failed publish once per kind of failure instead of at tracker rate.
pub(crate) fn log_publish_error(node: &str, topic: &str, result: r2r::Result<()>, logged: &mut bool) {
    match result {
        Ok(()) => *logged = false,
        Err(e) if !*logged => {
            tracing::warn!(node, topic, "publish failed: {e}");
            *logged = true;
        }
        Err(_) => {}
    }
}
