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
}

impl NodeContext {
    pub(crate) fn new(
        name: &str,
        rt: tokio::runtime::Handle,
        shutdown: watch::Receiver<bool>,
        clock: Arc<Mutex<r2r::Clock>>,
        exit_waits: ExitWaits,
    ) -> NodeContext {
        NodeContext { name: name.to_string(), rt, shutdown, clock, exit_waits }
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

/// Creates a publisher for an endpoint with its QoS.
pub(crate) fn publisher<T: r2r::WrappedTypesupport>(
    node: &mut r2r::Node,
    ep: needle_nav_core::interfaces::Endpoint,
) -> Result<r2r::Publisher<T>, NodeError> {
    node.create_publisher::<T>(ep.name, crate::qos::profile(ep.qos)).ros(format!("cannot advertise {}", ep.name))
}

/// Subscribes to an endpoint with its QoS.
pub(crate) fn subscription<T: r2r::WrappedTypesupport + 'static>(
    node: &mut r2r::Node,
    ep: needle_nav_core::interfaces::Endpoint,
) -> Result<impl futures::Stream<Item = T> + Unpin, NodeError> {
    node.subscribe::<T>(ep.name, crate::qos::profile(ep.qos)).ros(format!("cannot subscribe to {}", ep.name))
}

/// Loads the node's configuration, logs where it came from, and declares it as the node's ROS
/// parameters (served until the process ends); returns it with the configurations that
/// parameter sets accept while the node runs.
pub(crate) fn config<T>(
    node: &mut r2r::Node,
    cx: &NodeContext,
    name: &str,
) -> Result<(T, crate::parameter_server::ConfigUpdates<T>), NodeError>
where
    T: serde::de::DeserializeOwned
        + serde::Serialize
        + needle_nav_nodes::config::Validate
        + std::fmt::Debug
        + Clone
        + Send
        + Sync
        + 'static,
{
    let (cfg, source) = crate::params::load_config::<T>(node, name)?;
    tracing::info!(node = name, "configuration from {source} and ROS parameters: {cfg:?}");
    let kind = needle_nav_core::interfaces::NodeKind::from_name(name)
        .ok_or_else(|| NodeError::Runtime(format!("{name} is not a needle_nav node")))?;
    let updates = crate::parameter_server::serve(node, cx, kind, cfg.clone())?;
    Ok((cfg, updates))
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
