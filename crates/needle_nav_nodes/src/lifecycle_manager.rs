//! The lifecycle manager's rules without ROS: which managed nodes to bring up, in which order,
//! through which transitions, and what to do when a call gets no answer or a transition fails.
//! Like nav2's lifecycle manager: bring-up configures then activates each node in the order of
//! `node_names` and stops at the first failure; shutdown deactivates and cleans up in reverse order,
//! best effort (a node that is gone or refuses is reported, the others are still taken down).
//!
//! The state and transition ids are those of the ROS 2 standard interface (lifecycle_msgs/msg/State
//! and lifecycle_msgs/msg/Transition); the ROS shell sends and receives them as they are.
//! The machine is sans-I/O: the shell performs each [`Command`] and reports back its outcome.

use crate::config::{InvalidValue, Validate};
use serde::Deserialize;
use std::time::Duration;

/// lifecycle_msgs/msg/State ids (primary states; transition states are 10..=15).
pub mod state {
    pub const UNKNOWN: u8 = 0;
    pub const UNCONFIGURED: u8 = 1;
    pub const INACTIVE: u8 = 2;
    pub const ACTIVE: u8 = 3;
    pub const FINALIZED: u8 = 4;
}

/// lifecycle_msgs/msg/Transition ids the manager uses.
pub mod transition {
    pub const CONFIGURE: u8 = 1;
    pub const CLEANUP: u8 = 2;
    pub const ACTIVATE: u8 = 3;
    pub const DEACTIVATE: u8 = 4;
}

/// A state id as a word, for logs and errors.
pub fn state_label(id: u8) -> String {
    match id {
        state::UNKNOWN => "unknown".into(),
        state::UNCONFIGURED => "unconfigured".into(),
        state::INACTIVE => "inactive".into(),
        state::ACTIVE => "active".into(),
        state::FINALIZED => "finalized".into(),
        10 => "configuring".into(),
        11 => "cleaningup".into(),
        12 => "shuttingdown".into(),
        13 => "activating".into(),
        14 => "deactivating".into(),
        15 => "errorprocessing".into(),
        other => format!("state {other}"),
    }
}

/// A transition id as a word.
pub fn transition_label(id: u8) -> &'static str {
    match id {
        transition::CONFIGURE => "configure",
        transition::CLEANUP => "cleanup",
        transition::ACTIVATE => "activate",
        transition::DEACTIVATE => "deactivate",
        _ => "transition",
    }
}

/// The state a transition leads to when it succeeds.
pub fn goal_of(transition_id: u8) -> u8 {
    match transition_id {
        transition::CONFIGURE => state::INACTIVE,
        transition::CLEANUP => state::UNCONFIGURED,
        transition::ACTIVATE => state::ACTIVE,
        transition::DEACTIVATE => state::INACTIVE,
        _ => state::UNKNOWN,
    }
}

/// The manager's parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// Managed nodes, in bring-up order (fully qualified or relative names).
    pub node_names: Vec<String>,
    /// Configure and activate the nodes at start; false: only wait for them (transitions by hand,
    /// e.g. `ros2 lifecycle set`), still taking them down at shutdown.
    pub autostart: bool,
    /// How long to wait for a node's change_state/get_state services at start [s]; 0: forever.
    pub service_timeout_s: f64,
    /// How long one service call may take before it counts as unanswered [s] (configure loads the
    /// planning case, so this is generous).
    pub call_timeout_s: f64,
    /// Unanswered calls are sent again this many times before the node counts as failed.
    pub call_retries: u32,
    /// At shutdown, how long one call may take [s]: launch sends SIGINT to every process at once,
    /// so a node may already be gone; launch escalates to SIGTERM after 5 s.
    pub shutdown_call_timeout_s: f64,
    /// The whole shutdown may take at most this long [s] (below launch's 5 s before SIGTERM).
    pub shutdown_timeout_s: f64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            node_names: Vec::new(),
            autostart: true,
            service_timeout_s: 60.0,
            call_timeout_s: 60.0,
            call_retries: 2,
            shutdown_call_timeout_s: 1.0,
            shutdown_timeout_s: 4.0,
        }
    }
}

/// A ROS name: letters, digits, `_` and `/` separators, not starting with a digit.
fn valid_node_name(name: &str) -> bool {
    let trimmed = name.strip_prefix('/').unwrap_or(name);
    !trimmed.is_empty()
        && trimmed.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        })
}

impl Validate for ManagerConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        if self.node_names.is_empty() {
            return Err(InvalidValue::new("node_names", "names no node to manage"));
        }
        for (i, name) in self.node_names.iter().enumerate() {
            if !valid_node_name(name) {
                return Err(InvalidValue::new("node_names", format!("`{name}` is not a valid ROS node name")));
            }
            if self.node_names[..i].contains(name) {
                return Err(InvalidValue::new("node_names", format!("`{name}` is listed twice")));
            }
        }
        let non_negative = |key: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(InvalidValue::new(key, format!("{v} must be a number >= 0")))
            }
        };
        let positive = |key: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(InvalidValue::new(key, format!("{v} must be a number > 0")))
            }
        };
        non_negative("service_timeout_s", self.service_timeout_s)?;
        positive("call_timeout_s", self.call_timeout_s)?;
        positive("shutdown_call_timeout_s", self.shutdown_call_timeout_s)?;
        positive("shutdown_timeout_s", self.shutdown_timeout_s)?;
        Ok(())
    }
}

impl ManagerConfig {
    /// None: wait for the services without a limit.
    pub fn service_timeout(&self) -> Option<Duration> {
        (self.service_timeout_s > 0.0).then(|| Duration::from_secs_f64(self.service_timeout_s))
    }
}

/// Why the bring-up stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManagerError {
    #[error("{node}: lifecycle services (change_state, get_state) not available within {waited_s:.0} s")]
    ServicesUnavailable { node: String, waited_s: f64 },
    #[error("{node}: no answer to {what} after {attempts} attempts")]
    NoAnswer { node: String, what: String, attempts: u32 },
    #[error("{node}: {transition} refused in state {state}")]
    TransitionFailed { node: String, transition: &'static str, state: String },
    #[error("{node}: after {transition} the node is {actual}, expected {expected}")]
    NotReached { node: String, transition: &'static str, actual: String, expected: String },
    #[error("{node}: cannot be brought up from state {state}")]
    CannotBringUp { node: String, state: String },
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Call `<node>/get_state`.
    GetState { node: String },
    /// Call `<node>/change_state` with this transition id.
    ChangeState { node: String, transition: u8 },
    /// Every node is where it should be.
    Done,
}

/// Transitions from `current` to active; None for states bring-up cannot start from.
pub fn path_to_active(current: u8) -> Option<Vec<u8>> {
    match current {
        state::UNCONFIGURED => Some(vec![transition::CONFIGURE, transition::ACTIVATE]),
        state::INACTIVE => Some(vec![transition::ACTIVATE]),
        state::ACTIVE => Some(Vec::new()),
        _ => None,
    }
}

/// Transitions from `current` back to unconfigured (nothing for states with no way back).
pub fn path_to_unconfigured(current: u8) -> Vec<u8> {
    match current {
        state::ACTIVE => vec![transition::DEACTIVATE, transition::CLEANUP],
        state::INACTIVE => vec![transition::CLEANUP],
        _ => Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Asked for the node's state to plan its transitions.
    Querying,
    /// Sent `plan[0]`.
    Transitioning,
    /// Asked for the state after the last transition, to confirm it.
    Verifying,
}

/// One pass over the managed nodes: bring-up (in order, stops at the first failure) or shutdown
/// (reverse order, best effort: failures are collected and the next node is taken down).
#[derive(Debug, Clone)]
pub struct Sequence {
    direction: Direction,
    nodes: Vec<String>,
    index: usize,
    phase: Phase,
    plan: Vec<u8>,
    /// Attempts of the current call left after this one.
    retries_left: u32,
    retries: u32,
    /// Shutdown problems (bring-up returns its first one as an error instead).
    pub problems: Vec<ManagerError>,
}

impl Sequence {
    /// Configure then activate each node, in the given order.
    pub fn bring_up(nodes: &[String], retries: u32) -> Sequence {
        Sequence::new(Direction::Up, nodes.to_vec(), retries)
    }

    /// Deactivate then clean up each node, in reverse order.
    pub fn shut_down(nodes: &[String], retries: u32) -> Sequence {
        Sequence::new(Direction::Down, nodes.iter().rev().cloned().collect(), retries)
    }

    fn new(direction: Direction, nodes: Vec<String>, retries: u32) -> Sequence {
        Sequence {
            direction,
            nodes,
            index: 0,
            phase: Phase::Querying,
            plan: Vec::new(),
            retries_left: retries,
            retries,
            problems: Vec::new(),
        }
    }

    /// The node the sequence is at (None when done).
    pub fn current_node(&self) -> Option<&str> {
        self.nodes.get(self.index).map(String::as_str)
    }

    /// The first command.
    pub fn start(&mut self) -> Command {
        self.query_current()
    }

    fn query_current(&mut self) -> Command {
        self.phase = Phase::Querying;
        self.retries_left = self.retries;
        match self.nodes.get(self.index) {
            Some(node) => Command::GetState { node: node.clone() },
            None => Command::Done,
        }
    }

    fn next_node(&mut self) -> Command {
        self.index += 1;
        self.query_current()
    }

    fn node(&self) -> String {
        self.nodes.get(self.index).cloned().unwrap_or_default()
    }

    /// A failure: bring-up stops with it; shutdown notes it and goes on with the next node.
    fn fail(&mut self, error: ManagerError) -> Result<Command, ManagerError> {
        match self.direction {
            Direction::Up => Err(error),
            Direction::Down => {
                self.problems.push(error);
                Ok(self.next_node())
            }
        }
    }

    fn send_first_of_plan(&mut self) -> Command {
        self.phase = Phase::Transitioning;
        self.retries_left = self.retries;
        Command::ChangeState { node: self.node(), transition: self.plan[0] }
    }

    /// The node's services could not be found (in time).
    pub fn on_unavailable(&mut self, waited: Duration) -> Result<Command, ManagerError> {
        let error = ManagerError::ServicesUnavailable { node: self.node(), waited_s: waited.as_secs_f64() };
        self.fail(error)
    }

    /// The answer to `GetState`.
    pub fn on_state(&mut self, current: u8) -> Result<Command, ManagerError> {
        let node = self.node();
        match self.phase {
            Phase::Querying => {
                let plan = match self.direction {
                    Direction::Up => match path_to_active(current) {
                        Some(plan) => plan,
                        None => return self.fail(ManagerError::CannotBringUp { node, state: state_label(current) }),
                    },
                    Direction::Down => path_to_unconfigured(current),
                };
                self.plan = plan;
                if self.plan.is_empty() {
                    Ok(self.next_node())
                } else {
                    Ok(self.send_first_of_plan())
                }
            }
            Phase::Verifying | Phase::Transitioning => {
                let last = self.plan.first().copied().unwrap_or(0);
                let expected = goal_of(last);
                if current != expected {
                    return self.fail(ManagerError::NotReached {
                        node,
                        transition: transition_label(last),
                        actual: state_label(current),
                        expected: state_label(expected),
                    });
                }
                self.plan.remove(0);
                if self.plan.is_empty() {
                    Ok(self.next_node())
                } else {
                    Ok(self.send_first_of_plan())
                }
            }
        }
    }

    /// The answer to `ChangeState`: `success` as the service said. A success is confirmed with a
    /// `GetState` (the standard interface only says the transition was accepted and completed; the
    /// node's own state is the independent check).
    pub fn on_transition(&mut self, success: bool, state_now: Option<u8>) -> Result<Command, ManagerError> {
        let node = self.node();
        let transition = self.plan.first().copied().unwrap_or(0);
        if !success {
            let state = state_now.map(state_label).unwrap_or_else(|| "unknown".into());
            return self.fail(ManagerError::TransitionFailed { node, transition: transition_label(transition), state });
        }
        self.phase = Phase::Verifying;
        self.retries_left = self.retries;
        Ok(Command::GetState { node })
    }

    /// The last command got no answer in time: send it again while retries are left.
    pub fn on_no_answer(&mut self, command: &Command) -> Result<Command, ManagerError> {
        if self.retries_left > 0 {
            self.retries_left -= 1;
            return Ok(command.clone());
        }
        let what = match command {
            Command::GetState { .. } => "get_state".to_string(),
            Command::ChangeState { transition, .. } => format!("change_state ({})", transition_label(*transition)),
            Command::Done => "nothing".to_string(),
        };
        let error = ManagerError::NoAnswer { node: self.node(), what, attempts: self.retries + 1 };
        self.fail(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::build_config;
    use std::collections::HashMap;

    /// A simulated lifecycle node per the ROS 2 state machine (design article "Managed nodes").
    struct FakeNode {
        state: u8,
        refuse: Option<u8>,
    }

    impl FakeNode {
        fn change(&mut self, transition: u8) -> bool {
            if Some(transition) == self.refuse {
                return false;
            }
            let next = match (self.state, transition) {
                (state::UNCONFIGURED, transition::CONFIGURE) => state::INACTIVE,
                (state::INACTIVE, transition::ACTIVATE) => state::ACTIVE,
                (state::ACTIVE, transition::DEACTIVATE) => state::INACTIVE,
                (state::INACTIVE, transition::CLEANUP) => state::UNCONFIGURED,
                _ => return false,
            };
            self.state = next;
            true
        }
    }

    /// Drives a sequence against fake nodes; returns the calls made, in order.
    fn drive(
        mut seq: Sequence,
        nodes: &mut HashMap<String, FakeNode>,
    ) -> (Vec<(String, String)>, Result<(), ManagerError>, Sequence) {
        let mut calls = Vec::new();
        let mut cmd = seq.start();
        loop {
            let next = match &cmd {
                Command::Done => return (calls, Ok(()), seq),
                Command::GetState { node } => {
                    calls.push((node.clone(), "get".to_string()));
                    let n = &nodes[node];
                    seq.on_state(n.state)
                }
                Command::ChangeState { node, transition } => {
                    calls.push((node.clone(), transition_label(*transition).to_string()));
                    let n = nodes.get_mut(node).unwrap();
                    let ok = n.change(*transition);
                    seq.on_transition(ok, Some(n.state))
                }
            };
            match next {
                Ok(c) => cmd = c,
                Err(e) => return (calls, Err(e), seq),
            }
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn fleet(list: &[(&str, u8)]) -> HashMap<String, FakeNode> {
        list.iter().map(|(n, s)| (n.to_string(), FakeNode { state: *s, refuse: None })).collect()
    }

    #[test]
    fn ids_are_those_of_lifecycle_msgs() {
        // lifecycle_msgs/msg/State.msg and Transition.msg (ROS 2 rcl_interfaces).
        assert_eq!(
            (state::UNKNOWN, state::UNCONFIGURED, state::INACTIVE, state::ACTIVE, state::FINALIZED),
            (0, 1, 2, 3, 4)
        );
        assert_eq!(
            (transition::CONFIGURE, transition::CLEANUP, transition::ACTIVATE, transition::DEACTIVATE),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn bring_up_configures_then_activates_each_node_in_order() {
        let order = names(&["a", "b"]);
        let mut nodes = fleet(&[("a", state::UNCONFIGURED), ("b", state::UNCONFIGURED)]);
        let (calls, result, _) = drive(Sequence::bring_up(&order, 0), &mut nodes);
        assert_eq!(result, Ok(()));
        let expected: Vec<(String, String)> = [
            ("a", "get"),
            ("a", "configure"),
            ("a", "get"),
            ("a", "activate"),
            ("a", "get"),
            ("b", "get"),
            ("b", "configure"),
            ("b", "get"),
            ("b", "activate"),
            ("b", "get"),
        ]
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
        assert_eq!(calls, expected);
        assert!(nodes.values().all(|n| n.state == state::ACTIVE));
    }

    #[test]
    fn bring_up_skips_what_is_already_done() {
        let order = names(&["a", "b"]);
        let mut nodes = fleet(&[("a", state::ACTIVE), ("b", state::INACTIVE)]);
        let (calls, result, _) = drive(Sequence::bring_up(&order, 0), &mut nodes);
        assert_eq!(result, Ok(()));
        assert_eq!(calls.iter().filter(|(_, c)| c != "get").count(), 1, "only b's activate: {calls:?}");
        assert_eq!(nodes["b"].state, state::ACTIVE);
    }

    #[test]
    fn bring_up_stops_at_the_first_refusal_and_leaves_later_nodes_alone() {
        let order = names(&["a", "b", "c"]);
        let mut nodes = fleet(&[("a", state::UNCONFIGURED), ("b", state::UNCONFIGURED), ("c", state::UNCONFIGURED)]);
        nodes.get_mut("b").unwrap().refuse = Some(transition::CONFIGURE);
        let (calls, result, _) = drive(Sequence::bring_up(&order, 0), &mut nodes);
        assert_eq!(
            result,
            Err(ManagerError::TransitionFailed {
                node: "b".into(),
                transition: "configure",
                state: "unconfigured".into()
            })
        );
        assert!(calls.iter().all(|(n, _)| n != "c"), "c must not be touched: {calls:?}");
        assert_eq!(nodes["a"].state, state::ACTIVE);
        assert_eq!(nodes["c"].state, state::UNCONFIGURED);
    }

    #[test]
    fn bring_up_refuses_a_finalized_node() {
        let order = names(&["a"]);
        let mut nodes = fleet(&[("a", state::FINALIZED)]);
        let (_, result, _) = drive(Sequence::bring_up(&order, 0), &mut nodes);
        assert_eq!(result, Err(ManagerError::CannotBringUp { node: "a".into(), state: "finalized".into() }));
    }

    #[test]
    fn a_success_that_did_not_reach_the_goal_is_an_error() {
        let mut seq = Sequence::bring_up(&names(&["a"]), 0);
        seq.start();
        assert_eq!(
            seq.on_state(state::UNCONFIGURED),
            Ok(Command::ChangeState { node: "a".into(), transition: transition::CONFIGURE })
        );
        assert_eq!(seq.on_transition(true, None), Ok(Command::GetState { node: "a".into() }));
        assert_eq!(
            seq.on_state(state::UNCONFIGURED),
            Err(ManagerError::NotReached {
                node: "a".into(),
                transition: "configure",
                actual: "unconfigured".into(),
                expected: "inactive".into()
            })
        );
    }

    #[test]
    fn shutdown_goes_in_reverse_order_and_past_failures() {
        let order = names(&["a", "b", "c"]);
        let mut nodes = fleet(&[("a", state::ACTIVE), ("b", state::ACTIVE), ("c", state::INACTIVE)]);
        nodes.get_mut("b").unwrap().refuse = Some(transition::DEACTIVATE);
        let (calls, result, seq) = drive(Sequence::shut_down(&order, 0), &mut nodes);
        assert_eq!(result, Ok(()));
        let touched: Vec<&str> = calls.iter().filter(|(_, c)| c != "get").map(|(n, _)| n.as_str()).collect();
        assert_eq!(touched, vec!["c", "b", "a", "a"], "{calls:?}");
        assert_eq!(nodes["a"].state, state::UNCONFIGURED);
        assert_eq!(nodes["c"].state, state::UNCONFIGURED);
        assert_eq!(nodes["b"].state, state::ACTIVE);
        assert_eq!(seq.problems.len(), 1);
    }

    #[test]
    fn unanswered_calls_are_retried_then_fail() {
        let mut seq = Sequence::bring_up(&names(&["a", "b"]), 2);
        let cmd = seq.start();
        assert_eq!(seq.on_no_answer(&cmd), Ok(cmd.clone()));
        assert_eq!(seq.on_no_answer(&cmd), Ok(cmd.clone()));
        assert_eq!(
            seq.on_no_answer(&cmd),
            Err(ManagerError::NoAnswer { node: "a".into(), what: "get_state".into(), attempts: 3 })
        );
        // A fresh call gets its retries back.
        let mut seq = Sequence::bring_up(&names(&["a"]), 1);
        let cmd = seq.start();
        assert!(seq.on_no_answer(&cmd).is_ok());
        let next = seq.on_state(state::UNCONFIGURED).unwrap();
        assert_eq!(seq.on_no_answer(&next), Ok(next.clone()));
    }

    #[test]
    fn shutdown_skips_a_node_that_is_gone() {
        let mut seq = Sequence::shut_down(&names(&["a", "b"]), 0);
        assert_eq!(seq.start(), Command::GetState { node: "b".into() });
        assert_eq!(seq.on_unavailable(Duration::from_secs(1)), Ok(Command::GetState { node: "a".into() }));
        assert_eq!(seq.on_state(state::UNCONFIGURED), Ok(Command::Done));
        assert_eq!(seq.problems.len(), 1);
    }

    #[test]
    fn config_from_parameters_is_validated() {
        let ok: ManagerConfig = build_config(
            "lifecycle_manager",
            serde_yaml::Mapping::new(),
            &vec![
                ("node_names".into(), serde_yaml::from_str("[needle_target, /ns/planner]").unwrap()),
                ("autostart".into(), serde_yaml::Value::Bool(false)),
            ],
        )
        .unwrap();
        assert_eq!(ok.node_names, names(&["needle_target", "/ns/planner"]));
        assert!(!ok.autostart);
        // Each with a valid node list, so that only the named key can be the problem.
        let bad = |key: &str, yaml: &str| {
            let mut overrides = vec![("node_names".to_string(), serde_yaml::from_str("[a]").unwrap())];
            overrides.push((key.into(), serde_yaml::from_str(yaml).unwrap()));
            build_config::<ManagerConfig>("lifecycle_manager", serde_yaml::Mapping::new(), &overrides)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("node_names", "[]").contains("node_names"));
        assert!(bad("node_names", "[a, a]").contains("twice"));
        assert!(bad("node_names", "[\"1abc\"]").contains("not a valid"));
        assert!(bad("call_timeout_s", "0.0").contains("call_timeout_s"));
        assert!(bad("autostrat", "true").contains("autostrat"));
    }
}
