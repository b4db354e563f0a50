//! The `lifecycle_manager` executable's ROS shell (like nav2_lifecycle_manager): it brings the
//! managed nodes up through the standard lifecycle services (`<node>/get_state`,
//! `<node>/change_state`, lifecycle_msgs) in the order of `node_names`, and on SIGINT/SIGTERM takes
//! them down in reverse order before it exits. The rules (order, retries, what a failure means)
//! are `needle_nav_nodes::lifecycle_manager`; this file only performs its commands.

use needle_nav_nodes::config::build_config;
use needle_nav_nodes::lifecycle_manager::{
    state_label, transition_label, Command, ManagerConfig, ManagerError, Sequence,
};
use r2r::lifecycle_msgs::msg::Transition;
use r2r::lifecycle_msgs::srv::{ChangeState, GetState};
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node's own name (launch files may rename it with `name=`; rcl applies that).
pub const NODE_NAME: &str = "lifecycle_manager";

/// How often the manager says which node it is still waiting for.
const WAIT_REPORT_PERIOD: Duration = Duration::from_secs(5);

struct Clients {
    get: r2r::Client<GetState::Service>,
    change: r2r::Client<ChangeState::Service>,
}

/// The answer to one command.
enum Answer {
    State(u8),
    Transition(bool),
    None,
}

/// Why the process ends unsuccessfully.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Config(#[from] needle_nav_nodes::config::ConfigError),
    #[error("{0}")]
    Ros(String),
    #[error("bring-up failed: {0}")]
    BringUp(ManagerError),
}

/// Entry point of the `lifecycle_manager` executable. Exit 0 after an orderly shutdown, 1 when
/// the bring-up failed (after taking down what it had brought up), 2 for bad parameters.
pub fn main() -> ExitCode {
    let _log = needle_nav_nodes::logging::init_tracing();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Failure::Config(_)) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn service_name(node: &str, service: &str) -> String {
    format!("{}/{service}", node.trim_end_matches('/'))
}

fn run() -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Ros(format!("cannot start the tokio runtime: {e}")))?;
    // The runtime's context creation: arguments rcl refuses are a bad-argument error, not a panic.
    let ctx = crate::runtime::create_context().map_err(|e| match e {
        crate::context::NodeError::Config(c) => Failure::Config(c),
        other => Failure::Ros(other.to_string()),
    })?;
    let mut node =
        r2r::Node::create(ctx, NODE_NAME, "").map_err(|e| Failure::Ros(format!("cannot create the node: {e}")))?;
    let cfg: ManagerConfig = build_config(NODE_NAME, serde_yaml::Mapping::new(), &manager_overrides(&node))?;
    tracing::info!(node = NODE_NAME, "configuration from ROS parameters: {cfg:?}");

    let mut clients = HashMap::new();
    for name in &cfg.node_names {
        let qos = r2r::QosProfile::services_default();
        let get = node
            .create_client::<GetState::Service>(&service_name(name, "get_state"), qos.clone())
            .map_err(|e| Failure::Ros(format!("{name}: cannot create the get_state client: {e}")))?;
        let change = node
            .create_client::<ChangeState::Service>(&service_name(name, "change_state"), qos)
            .map_err(|e| Failure::Ros(format!("{name}: cannot create the change_state client: {e}")))?;
        clients.insert(name.clone(), Clients { get, change });
    }

    // The node spins on a thread of its own; answers and availability arrive through it.
    let spinning = Arc::new(AtomicBool::new(true));
    let spin_flag = spinning.clone();
    let spinner = std::thread::Builder::new()
        .name("spin_lifecycle_manager".into())
        .spawn(move || {
            while spin_flag.load(Ordering::Relaxed) {
                node.spin_once(Duration::from_millis(20));
            }
        })
        .map_err(|e| Failure::Ros(format!("cannot start the spin thread: {e}")))?;

    let result = rt.block_on(manage(&cfg, &clients));
    spinning.store(false, Ordering::Relaxed);
    let _ = spinner.join();
    result
}

/// The node's parameters. `autostart` is left out of [`crate::params::overrides`] (for the guidance
/// nodes it is the runtime's lifecycle parameter), but here it is the manager's own.
fn manager_overrides(node: &r2r::Node) -> needle_nav_nodes::config::Overrides {
    let mut overrides = crate::params::overrides(node);
    let params = node.params.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(p) = params.get("autostart") {
        let value = match &p.value {
            r2r::ParameterValue::Bool(b) => serde_yaml::Value::Bool(*b),
            // Anything else is refused by the typed configuration, naming the key.
            other => serde_yaml::Value::String(format!("{other:?}")),
        };
        overrides.retain(|(key, _)| key != "autostart");
        overrides.push(("autostart".to_string(), value));
    }
    overrides
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn stop_signal() -> Result<&'static str, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::Ros(format!("cannot watch SIGINT: {e}")))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::Ros(format!("cannot watch SIGTERM: {e}")))?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

async fn manage(cfg: &ManagerConfig, clients: &HashMap<String, Clients>) -> Result<(), Failure> {
    let stop = stop_signal();
    tokio::pin!(stop);
    let call_timeout = Duration::from_secs_f64(cfg.call_timeout_s);
    let bring_up = async {
        if cfg.autostart {
            let seq = Sequence::bring_up(&cfg.node_names, cfg.call_retries);
            drive(seq, clients, cfg.service_timeout(), call_timeout).await.map(|_| ())
        } else {
            // Only wait for the services, so the log says when the nodes can be driven by hand.
            for name in &cfg.node_names {
                if let Err(waited) = wait_for_services(name, &clients[name], cfg.service_timeout()).await {
                    let waited_s = waited.as_secs_f64();
                    return Err(ManagerError::ServicesUnavailable { node: name.clone(), waited_s });
                }
            }
            Ok(())
        }
    };
    let outcome = tokio::select! {
        signal = &mut stop => {
            tracing::info!("{}: stopping the bring-up, taking the nodes down", signal?);
            None
        }
        result = bring_up => Some(result),
    };
    let failure = match outcome {
        Some(Ok(())) => {
            if cfg.autostart {
                tracing::info!("all {} managed nodes are active: {}", cfg.node_names.len(), cfg.node_names.join(", "));
            } else {
                tracing::info!("autostart is false: the nodes wait unconfigured for transitions by hand");
            }
            let signal = stop.await?;
            tracing::info!("{signal}: taking the managed nodes down in reverse order");
            None
        }
        Some(Err(e)) => {
            tracing::error!("bring-up stopped: {e}; taking down the nodes already brought up");
            Some(e)
        }
        None => None,
    };
    let shutdown_timeout = Duration::from_secs_f64(cfg.shutdown_call_timeout_s);
    let seq = Sequence::shut_down(&cfg.node_names, 0);
    // Nodes that got SIGINT from launch at the same time may be gone: no long waits here.
    // Bounded as a whole, and a second signal ends it at once.
    let budget = Duration::from_secs_f64(cfg.shutdown_timeout_s);
    let taking_down = tokio::time::timeout(budget, drive(seq, clients, Some(shutdown_timeout), shutdown_timeout));
    tokio::select! {
        done = taking_down => match done {
            Ok(result) => {
                for p in result.unwrap_or_else(|e| vec![e]) {
                    tracing::warn!("shutdown: {p}");
                }
                tracing::info!("managed nodes taken down; exiting");
            }
            Err(_) => tracing::warn!("shutdown: not finished within {:.1} s; exiting", budget.as_secs_f64()),
        },
        signal = stop_signal() => tracing::warn!("{}: exiting without finishing the shutdown", signal?),
    }
    match failure {
        Some(e) => Err(Failure::BringUp(e)),
        None => Ok(()),
    }
}

/// Waits until both lifecycle services of `name` are available; Err(time waited) on timeout.
async fn wait_for_services(name: &str, clients: &Clients, timeout: Option<Duration>) -> Result<(), Duration> {
    let started = Instant::now();
    for available in [r2r::Node::is_available(&clients.get), r2r::Node::is_available(&clients.change)] {
        let Ok(mut available) = available else {
            return Err(started.elapsed());
        };
        loop {
            let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
            let slice = left.map_or(WAIT_REPORT_PERIOD, |l| l.min(WAIT_REPORT_PERIOD));
            match tokio::time::timeout(slice, &mut available).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return Err(started.elapsed()),
                Err(_) if left.is_some_and(|l| l <= slice) => return Err(started.elapsed()),
                Err(_) => tracing::info!("waiting for the lifecycle services of {name}"),
            }
        }
    }
    Ok(())
}

async fn execute(command: &Command, clients: &Clients, timeout: Duration) -> Answer {
    match command {
        Command::GetState { .. } => {
            let Ok(answer) = clients.get.request(&GetState::Request {}) else {
                return Answer::None;
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(response)) => Answer::State(response.current_state.id),
                _ => Answer::None,
            }
        }
        Command::ChangeState { transition, .. } => {
            let request = ChangeState::Request { transition: Transition { id: *transition, label: String::new() } };
            let Ok(answer) = clients.change.request(&request) else {
                return Answer::None;
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(response)) => Answer::Transition(response.success),
                _ => Answer::None,
            }
        }
        Command::Done => Answer::None,
    }
}

/// Runs a sequence to its end; bring-up returns its first error, shutdown its collected problems.
async fn drive(
    mut seq: Sequence,
    clients: &HashMap<String, Clients>,
    service_timeout: Option<Duration>,
    call_timeout: Duration,
) -> Result<Vec<ManagerError>, ManagerError> {
    let mut ready: HashSet<String> = HashSet::new();
    let mut command = seq.start();
    loop {
        let node = match &command {
            Command::Done => return Ok(std::mem::take(&mut seq.problems)),
            Command::GetState { node } | Command::ChangeState { node, .. } => node.clone(),
        };
        let Some(node_clients) = clients.get(&node) else {
            // Cannot happen: the sequence only names configured nodes; treat as unavailable.
            command = seq.on_unavailable(Duration::ZERO)?;
            continue;
        };
        if !ready.contains(&node) {
            if let Err(waited) = wait_for_services(&node, node_clients, service_timeout).await {
                command = seq.on_unavailable(waited)?;
                continue;
            }
            ready.insert(node.clone());
        }
        command = match execute(&command, node_clients, call_timeout).await {
            Answer::State(id) => seq.on_state(id)?,
            Answer::Transition(success) => {
                if let Command::ChangeState { transition, .. } = &command {
                    let outcome = if success { "done" } else { "refused" };
                    tracing::info!("{node}: {} {outcome}", transition_label(*transition));
                }
                let state_now = if success { None } else { current_state(node_clients, call_timeout).await };
                seq.on_transition(success, state_now)?
            }
            Answer::None => {
                tracing::warn!("{node}: no answer within {:.1} s", call_timeout.as_secs_f64());
                seq.on_no_answer(&command)?
            }
        };
        if let Command::GetState { node: next } = &command {
            if next != &node {
                tracing::debug!("{node}: done, next {next}");
            }
        }
    }
}

/// The node's state, for the error message of a refused transition.
async fn current_state(clients: &Clients, timeout: Duration) -> Option<u8> {
    match execute(&Command::GetState { node: String::new() }, clients, timeout).await {
        Answer::State(id) => {
            tracing::debug!("state after the refusal: {}", state_label(id));
            Some(id)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use needle_nav_nodes::lifecycle_manager::{state, transition};
    use r2r::lifecycle_msgs::msg::{State, Transition};

    #[test]
    fn the_core_ids_are_the_generated_lifecycle_msgs_constants() {
        assert_eq!(State::PRIMARY_STATE_UNKNOWN as u8, state::UNKNOWN);
        assert_eq!(State::PRIMARY_STATE_UNCONFIGURED as u8, state::UNCONFIGURED);
        assert_eq!(State::PRIMARY_STATE_INACTIVE as u8, state::INACTIVE);
        assert_eq!(State::PRIMARY_STATE_ACTIVE as u8, state::ACTIVE);
        assert_eq!(State::PRIMARY_STATE_FINALIZED as u8, state::FINALIZED);
        assert_eq!(Transition::TRANSITION_CONFIGURE as u8, transition::CONFIGURE);
        assert_eq!(Transition::TRANSITION_CLEANUP as u8, transition::CLEANUP);
        assert_eq!(Transition::TRANSITION_ACTIVATE as u8, transition::ACTIVATE);
        assert_eq!(Transition::TRANSITION_DEACTIVATE as u8, transition::DEACTIVATE);
    }
}
