//! The standard ROS 2 parameter services of a node (`<node>/list_parameters`,
//! `describe_parameters`, `get_parameters`, `get_parameter_types`, `set_parameters`,
//! `set_parameters_atomically`) and `/parameter_events`, served from the node's
//! [`ParameterStore`]; accepted sets reach the node as a new validated configuration.
//!
//! Why not r2r's `make_parameter_handler`: its `describe_parameters` leaves out ranges, read-only
//! and constraints, it has no notion of a set being refused with a reason (it validates nothing
//! beyond the type), and each handler `.expect()`s that the reply can be sent, so a client that
//! goes away before its answer (Ctrl-C on `ros2 param get`) would take the node down. The message
//! conversions r2r has are crate-private, so the few lines of them are here too.

use crate::context::{lock, NodeContext, NodeError, RosContext};
use futures::StreamExt;
use needle_nav_core::interfaces::NodeKind;
use needle_nav_nodes::config::Validate;
use needle_nav_nodes::parameters::{
    node_parameter_specs, Mutability, ParameterSpec, ParameterStore, ParameterType, ParameterValue, Range, SetRefused,
    StandardParameter, STANDARD_PARAMETERS,
};
use r2r::rcl_interfaces::msg as rcl;
use r2r::rcl_interfaces::srv;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// New configurations accepted by a parameter set, for the node to take on. A clone sees every
/// update on its own (the node's tasks and its diagnostics each take them).
#[derive(Clone)]
pub struct ConfigUpdates<T>(watch::Receiver<T>);

impl<T: Clone> ConfigUpdates<T> {
    /// The configuration set since the last call, if one was; nodes call this before each sample,
    /// so a change takes effect on the next one.
    pub fn take(&mut self) -> Option<T> {
        match self.0.has_changed() {
            Ok(true) => Some(self.0.borrow_and_update().clone()),
            _ => None,
        }
    }
}

// rcl_interfaces/msg/ParameterType (r2r generates them as untyped bindgen constants).
const PARAMETER_NOT_SET: u8 = 0;
const PARAMETER_BOOL: u8 = 1;
const PARAMETER_INTEGER: u8 = 2;
const PARAMETER_DOUBLE: u8 = 3;
const PARAMETER_STRING: u8 = 4;
const PARAMETER_BYTE_ARRAY: u8 = 5;
const PARAMETER_BOOL_ARRAY: u8 = 6;
const PARAMETER_INTEGER_ARRAY: u8 = 7;
const PARAMETER_DOUBLE_ARRAY: u8 = 8;
const PARAMETER_STRING_ARRAY: u8 = 9;

fn type_id(t: ParameterType) -> u8 {
    match t {
        ParameterType::Bool => PARAMETER_BOOL,
        ParameterType::Integer => PARAMETER_INTEGER,
        ParameterType::Double => PARAMETER_DOUBLE,
        ParameterType::String => PARAMETER_STRING,
        ParameterType::ByteArray => PARAMETER_BYTE_ARRAY,
        ParameterType::BoolArray => PARAMETER_BOOL_ARRAY,
        ParameterType::IntegerArray => PARAMETER_INTEGER_ARRAY,
        ParameterType::DoubleArray => PARAMETER_DOUBLE_ARRAY,
        ParameterType::StringArray => PARAMETER_STRING_ARRAY,
    }
}

fn to_msg(v: &ParameterValue) -> rcl::ParameterValue {
    let mut m = rcl::ParameterValue { type_: type_id(v.kind()), ..Default::default() };
    match v {
        ParameterValue::Bool(b) => m.bool_value = *b,
        ParameterValue::Integer(i) => m.integer_value = *i,
        ParameterValue::Double(d) => m.double_value = *d,
        ParameterValue::String(s) => m.string_value = s.clone(),
        ParameterValue::ByteArray(a) => m.byte_array_value = a.clone(),
        ParameterValue::BoolArray(a) => m.bool_array_value = a.clone(),
        ParameterValue::IntegerArray(a) => m.integer_array_value = a.clone(),
        ParameterValue::DoubleArray(a) => m.double_array_value = a.clone(),
        ParameterValue::StringArray(a) => m.string_array_value = a.clone(),
    }
    m
}

/// The value a client sent; `None` for NOT_SET (a request to undeclare, which declared
/// parameters refuse) or an unknown type code.
fn from_msg(m: rcl::ParameterValue) -> Option<ParameterValue> {
    Some(match m.type_ {
        PARAMETER_BOOL => ParameterValue::Bool(m.bool_value),
        PARAMETER_INTEGER => ParameterValue::Integer(m.integer_value),
        PARAMETER_DOUBLE => ParameterValue::Double(m.double_value),
        PARAMETER_STRING => ParameterValue::String(m.string_value),
        PARAMETER_BYTE_ARRAY => ParameterValue::ByteArray(m.byte_array_value),
        PARAMETER_BOOL_ARRAY => ParameterValue::BoolArray(m.bool_array_value),
        PARAMETER_INTEGER_ARRAY => ParameterValue::IntegerArray(m.integer_array_value),
        PARAMETER_DOUBLE_ARRAY => ParameterValue::DoubleArray(m.double_array_value),
        PARAMETER_STRING_ARRAY => ParameterValue::StringArray(m.string_array_value),
        _ => return None,
    })
}

/// A runtime-owned parameter's value as rcl parsed it from the command line, else its default
/// (also when the command line gave it another type: the runtime reads it as that default's type).
fn standard_value(node: &r2r::Node, standard: &StandardParameter) -> ParameterValue {
    let params = lock(&node.params);
    match params.get(standard.spec.name).and_then(|p| crate::params::from_rcl(&p.value)) {
        Some(given) if given.kind() == standard.default.kind() => given,
        _ => standard.default.clone(),
    }
}

fn descriptor(name: &str, described: Option<(&ParameterSpec, ParameterType)>) -> rcl::ParameterDescriptor {
    let Some((spec, kind)) = described else {
        // Not declared: a descriptor of type NOT_SET, as rclpy answers.
        return rcl::ParameterDescriptor { name: name.into(), ..Default::default() };
    };
    let mut d = rcl::ParameterDescriptor {
        name: name.into(),
        type_: type_id(kind),
        description: spec.full_description(),
        additional_constraints: spec.constraints.into(),
        read_only: spec.mutability == Mutability::ReadOnly,
        dynamic_typing: false,
        ..Default::default()
    };
    match spec.range {
        Range::None => {}
        Range::Float { min, max, step } => {
            d.floating_point_range = vec![rcl::FloatingPointRange { from_value: min, to_value: max, step }]
        }
        Range::Integer { min, max, step } => {
            d.integer_range = vec![rcl::IntegerRange { from_value: min, to_value: max, step }]
        }
    }
    d
}

fn result(r: Result<(), SetRefused>) -> rcl::SetParametersResult {
    match r {
        Ok(()) => rcl::SetParametersResult { successful: true, reason: String::new() },
        Err(e) => rcl::SetParametersResult { successful: false, reason: e.to_string() },
    }
}

/// The requested changes; a NOT_SET value is refused on its own (declared parameters cannot be
/// undeclared), as the first refusal of an atomic set.
fn changes(parameters: Vec<rcl::Parameter>) -> Result<Vec<(String, ParameterValue)>, SetRefused> {
    parameters
        .into_iter()
        .map(|p| match from_msg(p.value) {
            Some(v) => Ok((p.name, v)),
            None => Err(SetRefused::Invalid {
                key: p.name,
                reason: "a declared parameter cannot be unset (value type NOT_SET)".into(),
            }),
        })
        .collect()
}

/// Answers a request; a client that went away before its answer is only logged.
fn respond<S: r2r::WrappedServiceTypeSupport + 'static>(
    node: &str,
    what: &str,
    req: r2r::ServiceRequest<S>,
    resp: S::Response,
) {
    if let Err(e) = req.respond(resp) {
        tracing::debug!(node, "{what}: the client left before its answer ({e})");
    }
}

struct Shared<T> {
    node: String,
    fqn: String,
    store: Mutex<ParameterStore<T>>,
    updates: watch::Sender<T>,
    /// In a mutex: r2r's publisher may move between threads but not be shared by them.
    events: Mutex<r2r::Publisher<rcl::ParameterEvent>>,
    cx: NodeContext,
}

impl<T> Shared<T>
where
    T: Serialize + DeserializeOwned + Validate + Clone + Send + Sync + 'static,
{
    fn event(&self, new: Vec<rcl::Parameter>, changed: Vec<rcl::Parameter>) {
        let now = self.cx.now_ns();
        let msg = rcl::ParameterEvent {
            stamp: r2r::builtin_interfaces::msg::Time {
                sec: now.div_euclid(1_000_000_000) as i32,
                nanosec: now.rem_euclid(1_000_000_000) as u32,
            },
            node: self.fqn.clone(),
            new_parameters: new,
            changed_parameters: changed,
            deleted_parameters: Vec::new(),
        };
        if let Err(e) = lock(&self.events).publish(&msg) {
            tracing::warn!(node = %self.node, "cannot publish /parameter_events: {e}");
        }
    }

    /// Hands an accepted configuration to the node and tells `/parameter_events`.
    fn accepted(&self, applied: needle_nav_nodes::parameters::Applied<T>) {
        for (name, value) in &applied.changed {
            tracing::info!(node = %self.node, "parameter {name} set to {value}");
        }
        // No receiver: the node takes no run-time parameters (all of its parameters are read-only).
        let _ = self.updates.send(applied.config);
        let changed =
            applied.changed.iter().map(|(name, v)| rcl::Parameter { name: name.clone(), value: to_msg(v) }).collect();
        self.event(Vec::new(), changed);
    }
}

/// Declares the parameters of `kind` with the values of `config` (and the runtime-owned
/// ones), serves the parameter services on `node`, and returns the updates a set accepts.
pub fn serve<T>(
    node: &mut r2r::Node,
    cx: &NodeContext,
    kind: NodeKind,
    config: T,
) -> Result<ConfigUpdates<T>, NodeError>
where
    T: Serialize + DeserializeOwned + Validate + Clone + Send + Sync + 'static,
{
    let name = kind.name();
    let standard: Vec<(ParameterSpec, ParameterValue)> =
        STANDARD_PARAMETERS.iter().map(|s| (s.spec.clone(), standard_value(node, s))).collect();
    let store = ParameterStore::new(name, config.clone(), &node_parameter_specs(kind), &standard)
        .map_err(|e| NodeError::Runtime(e.to_string()))?;
    let (updates_tx, updates_rx) = watch::channel(config);
    let events = node
        .create_publisher::<rcl::ParameterEvent>("/parameter_events", r2r::QosProfile::parameter_events())
        .ros("cannot advertise /parameter_events")?;
    let fqn = node.fully_qualified_name().unwrap_or_else(|_| format!("/{name}"));
    let service = |what: &str| format!("{name}/{what}");
    let qos = r2r::QosProfile::parameters;

    let mut list = node
        .create_service::<srv::ListParameters::Service>(&service("list_parameters"), qos())
        .ros("cannot serve list_parameters")?;
    let mut describe = node
        .create_service::<srv::DescribeParameters::Service>(&service("describe_parameters"), qos())
        .ros("cannot serve describe_parameters")?;
    let mut get = node
        .create_service::<srv::GetParameters::Service>(&service("get_parameters"), qos())
        .ros("cannot serve get_parameters")?;
    let mut types = node
        .create_service::<srv::GetParameterTypes::Service>(&service("get_parameter_types"), qos())
        .ros("cannot serve get_parameter_types")?;
    let mut set = node
        .create_service::<srv::SetParameters::Service>(&service("set_parameters"), qos())
        .ros("cannot serve set_parameters")?;
    let mut set_atomically = node
        .create_service::<srv::SetParametersAtomically::Service>(&service("set_parameters_atomically"), qos())
        .ros("cannot serve set_parameters_atomically")?;

    let shared = Arc::new(Shared {
        node: name.to_string(),
        fqn,
        store: Mutex::new(store),
        updates: updates_tx,
        events: Mutex::new(events),
        cx: cx.clone(),
    });
    {
        // Declaration event, as rclcpp and rclpy send one for each parameter they declare.
        let store = lock(&shared.store);
        let declared = store
            .list(&[], 0)
            .names
            .into_iter()
            .filter_map(|n| store.get(&n).map(|v| rcl::Parameter { value: to_msg(v), name: n }))
            .collect();
        drop(store);
        shared.event(declared, Vec::new());
    }

    let s = shared.clone();
    cx.spawn(async move {
        while let Some(req) = list.next().await {
            let listing = lock(&s.store).list(&req.message.prefixes, req.message.depth);
            let result = rcl::ListParametersResult { names: listing.names, prefixes: listing.prefixes };
            respond(&s.node, "list_parameters", req, srv::ListParameters::Response { result });
        }
    });
    let s = shared.clone();
    cx.spawn(async move {
        while let Some(req) = describe.next().await {
            let descriptors = {
                let store = lock(&s.store);
                req.message.names.iter().map(|n| descriptor(n, store.describe(n))).collect()
            };
            respond(&s.node, "describe_parameters", req, srv::DescribeParameters::Response { descriptors });
        }
    });
    let s = shared.clone();
    cx.spawn(async move {
        while let Some(req) = get.next().await {
            let values = {
                let store = lock(&s.store);
                // Not declared: NOT_SET, as rclpy answers (`ros2 param get` prints "Parameter not set").
                req.message.names.iter().map(|n| store.get(n).map(to_msg).unwrap_or_default()).collect()
            };
            respond(&s.node, "get_parameters", req, srv::GetParameters::Response { values });
        }
    });
    let s = shared.clone();
    cx.spawn(async move {
        while let Some(req) = types.next().await {
            let types = {
                let store = lock(&s.store);
                req.message
                    .names
                    .iter()
                    .map(|n| store.describe(n).map(|(_, t)| type_id(t)).unwrap_or(PARAMETER_NOT_SET))
                    .collect()
            };
            respond(&s.node, "get_parameter_types", req, srv::GetParameterTypes::Response { types });
        }
    });
    let s = shared.clone();
    cx.spawn(async move {
        while let Some(req) = set.next().await {
            // Each parameter on its own, in order: one result per parameter.
            let mut results = Vec::with_capacity(req.message.parameters.len());
            for p in req.message.parameters.clone() {
                let outcome = changes(vec![p]).and_then(|c| lock(&s.store).set_atomically(c));
                match outcome {
                    Ok(applied) => {
                        s.accepted(applied);
                        results.push(result(Ok(())));
                    }
                    Err(e) => {
                        tracing::info!(node = %s.node, "parameter set refused: {e}");
                        results.push(result(Err(e)));
                    }
                }
            }
            respond(&s.node, "set_parameters", req, srv::SetParameters::Response { results });
        }
    });
    let s = shared;
    cx.spawn(async move {
        while let Some(req) = set_atomically.next().await {
            let outcome = changes(req.message.parameters.clone()).and_then(|c| lock(&s.store).set_atomically(c));
            let r = match outcome {
                Ok(applied) => {
                    s.accepted(applied);
                    Ok(())
                }
                Err(e) => {
                    tracing::info!(node = %s.node, "atomic parameter set refused: {e}");
                    Err(e)
                }
            };
            respond(
                &s.node,
                "set_parameters_atomically",
                req,
                srv::SetParametersAtomically::Response { result: result(r) },
            );
        }
    });
    Ok(ConfigUpdates(updates_rx))
}

/// Loads the node's configuration, logs where it came from, and declares it as the node's ROS
/// parameters (served while its lifecycle session lasts); returns it with the configurations that
/// parameter sets accept while the node runs.
pub(crate) fn config<T>(node: &mut r2r::Node, cx: &NodeContext, name: &str) -> Result<(T, ConfigUpdates<T>), NodeError>
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
    let updates = serve(node, cx, kind, cfg.clone())?;
    Ok((cfg, updates))
}
