//! Every node name, topic, service, type and QoS of the system, in one place.
//!
//! Names are relative (no leading `/`) so that a launch file can push the whole stack
//! into a namespace. Plain data, no ROS types: the ROS layer turns [`QosKind`] into a
//! QoS profile, the CLI prints this table (`needle_nav interfaces`), and the graph test
//! checks the running system against it.

use serde::Serialize;

/// How a topic's messages must be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QosKind {
    /// High-rate measurements: best effort, keep last 5, volatile. A late sample is worthless.
    SensorData,
    /// State that changes rarely and that a late joiner needs: reliable, keep last 1,
    /// transient local ("latched").
    LatchedState,
    /// Commands and results every consumer must see: reliable, keep last 10, volatile.
    ReliableStream,
    /// Services: the ROS default service QoS.
    Service,
}

/// Direction of an endpoint as seen from the node that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Publishes,
    Subscribes,
    Serves,
    Calls,
}

/// One topic or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub name: &'static str,
    /// ROS type in `pkg/msg/Type` or `pkg/srv/Type` form.
    pub type_name: &'static str,
    pub qos: QosKind,
}

pub const MARKERS: Endpoint = Endpoint {
    name: "needle_nav/markers",
    type_name: "needle_nav_msgs/msg/TrackedMarkerArray",
    qos: QosKind::SensorData,
};
/// Debug/evaluation only: truth of the simulated patient. Never present on a real patient.
pub const GROUND_TRUTH: Endpoint = Endpoint {
    name: "needle_nav/debug/ground_truth",
    type_name: "needle_nav_msgs/msg/PhantomGroundTruth",
    qos: QosKind::SensorData,
};
pub const CLASSIFICATION: Endpoint = Endpoint {
    name: "needle_nav/marker_classification",
    type_name: "needle_nav_msgs/msg/MarkerClassification",
    qos: QosKind::LatchedState,
};
pub const REGISTRATION: Endpoint = Endpoint {
    name: "needle_nav/registration",
    type_name: "needle_nav_msgs/msg/LesionRegistration",
    qos: QosKind::LatchedState,
};
pub const TARGET: Endpoint =
    Endpoint { name: "needle_nav/target", type_name: "needle_nav_msgs/msg/NeedleTarget", qos: QosKind::ReliableStream };
/// Generic arm controllers take a pose; published only while the target is valid.
pub const TARGET_POSE: Endpoint = Endpoint {
    name: "needle_nav/target_pose",
    type_name: "geometry_msgs/msg/PoseStamped",
    qos: QosKind::ReliableStream,
};
pub const PLAN: Endpoint =
    Endpoint { name: "needle_nav/plan", type_name: "needle_nav_msgs/msg/NeedlePlan", qos: QosKind::LatchedState };
pub const VIZ_MARKERS: Endpoint = Endpoint {
    name: "needle_nav/viz/markers",
    type_name: "visualization_msgs/msg/MarkerArray",
    qos: QosKind::ReliableStream,
};
pub const VIZ_TARGET: Endpoint = Endpoint {
    name: "needle_nav/viz/target",
    type_name: "visualization_msgs/msg/MarkerArray",
    qos: QosKind::ReliableStream,
};
/// Markers coloured by class (registration / correction / unclassified) with their ids, for rviz.
pub const VIZ_MARKER_CLASSES: Endpoint = Endpoint {
    name: "needle_nav/viz/marker_classes",
    type_name: "visualization_msgs/msg/MarkerArray",
    qos: QosKind::ReliableStream,
};
/// The plan in the CT frame: vessel surface coloured by class, lesion, entry, target, needle path.
/// Latched, so rviz started later still shows it.
pub const VIZ_PLAN: Endpoint = Endpoint {
    name: "needle_nav/viz/plan",
    type_name: "visualization_msgs/msg/MarkerArray",
    qos: QosKind::LatchedState,
};
/// The registration as a static transform (tracker -> ct). A global name: tf is shared by the whole system.
pub const TF_STATIC: Endpoint =
    Endpoint { name: "/tf_static", type_name: "tf2_msgs/msg/TFMessage", qos: QosKind::LatchedState };
/// The live needle target frame (tracker -> needle_target), only while the target is valid.
pub const TF: Endpoint = Endpoint { name: "/tf", type_name: "tf2_msgs/msg/TFMessage", qos: QosKind::ReliableStream };
/// Each node's health statuses, once a second. A global name, as diagnostic_updater uses: aggregators
/// and rqt_robot_monitor read every node's statuses there.
pub const DIAGNOSTICS: Endpoint =
    Endpoint { name: "/diagnostics", type_name: "diagnostic_msgs/msg/DiagnosticArray", qos: QosKind::ReliableStream };
/// Simulated time, published by the bag player (`--play BAG --clock`); nodes follow it with use_sim_time:=true.
pub const CLOCK: Endpoint = Endpoint { name: "/clock", type_name: "rosgraph_msgs/msg/Clock", qos: QosKind::SensorData };
pub const SEGMENT_VESSELS: Endpoint = Endpoint {
    name: "needle_nav/segment_vessels",
    type_name: "needle_nav_msgs/srv/SegmentVessels",
    qos: QosKind::Service,
};

/// The nodes. The executable and the default node name are the same string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    MarkerTracker,
    MarkerClassifier,
    LesionRegistration,
    NeedleTarget,
    VesselSegmentation,
    TrajectoryPlanner,
    /// OpenIGTLink bridge: a real tracker (PLUS) in instead of marker_tracker, 3D Slicer out.
    IgtlBridge,
}

impl NodeKind {
    /// Every node, the bridge included.
    pub const ALL: [NodeKind; 7] = [
        NodeKind::MarkerTracker,
        NodeKind::MarkerClassifier,
        NodeKind::LesionRegistration,
        NodeKind::NeedleTarget,
        NodeKind::VesselSegmentation,
        NodeKind::TrajectoryPlanner,
        NodeKind::IgtlBridge,
    ];

    /// The six nodes of the simulated stack, which the all-in-one executable hosts. The bridge is
    /// not among them: it replaces marker_tracker when a real tracker is used.
    pub const STACK: [NodeKind; 6] = [
        NodeKind::MarkerTracker,
        NodeKind::MarkerClassifier,
        NodeKind::LesionRegistration,
        NodeKind::NeedleTarget,
        NodeKind::VesselSegmentation,
        NodeKind::TrajectoryPlanner,
    ];

    /// Node name, executable name and `config/<name>.yaml` stem.
    pub const fn name(self) -> &'static str {
        match self {
            NodeKind::MarkerTracker => "marker_tracker",
            NodeKind::MarkerClassifier => "marker_classifier",
            NodeKind::LesionRegistration => "lesion_registration",
            NodeKind::NeedleTarget => "needle_target",
            NodeKind::VesselSegmentation => "vessel_segmentation",
            NodeKind::TrajectoryPlanner => "trajectory_planner",
            NodeKind::IgtlBridge => "igtl_bridge",
        }
    }

    pub fn from_name(name: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every endpoint the node owns, with its direction. `GROUND_TRUTH` is listed for the
    /// tracker although it exists only with a simulated source.
    pub fn endpoints(self) -> &'static [(Direction, Endpoint)] {
        use Direction::*;
        match self {
            NodeKind::MarkerTracker => {
                &[(Publishes, MARKERS), (Publishes, GROUND_TRUTH), (Publishes, VIZ_MARKERS), (Publishes, DIAGNOSTICS)]
            }
            NodeKind::MarkerClassifier => &[
                (Subscribes, MARKERS),
                (Publishes, CLASSIFICATION),
                (Publishes, VIZ_MARKER_CLASSES),
                (Publishes, DIAGNOSTICS),
            ],
            NodeKind::LesionRegistration => &[
                (Subscribes, MARKERS),
                (Subscribes, CLASSIFICATION),
                (Subscribes, PLAN),
                (Publishes, REGISTRATION),
                (Publishes, TF_STATIC),
                (Publishes, DIAGNOSTICS),
            ],
            NodeKind::NeedleTarget => &[
                (Subscribes, MARKERS),
                (Subscribes, CLASSIFICATION),
                (Subscribes, REGISTRATION),
                (Publishes, TARGET),
                (Publishes, TARGET_POSE),
                (Publishes, VIZ_TARGET),
                (Publishes, TF),
                (Publishes, DIAGNOSTICS),
            ],
            NodeKind::VesselSegmentation => &[(Serves, SEGMENT_VESSELS), (Publishes, DIAGNOSTICS)],
            NodeKind::TrajectoryPlanner => {
                &[(Calls, SEGMENT_VESSELS), (Publishes, PLAN), (Publishes, VIZ_PLAN), (Publishes, DIAGNOSTICS)]
            }
            NodeKind::IgtlBridge => &[
                (Publishes, MARKERS),
                (Subscribes, TARGET),
                (Subscribes, REGISTRATION),
                (Subscribes, PLAN),
                (Publishes, DIAGNOSTICS),
            ],
        }
    }
}

/// Every topic some node publishes, once each, in node order: what a session bag records by default.
pub fn published_topics() -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for kind in NodeKind::ALL {
        for (dir, ep) in kind.endpoints() {
            if *dir == Direction::Publishes && !out.iter().any(|e| e.name == ep.name) {
                out.push(*ep);
            }
        }
    }
    out
}

impl QosKind {
    /// The publisher QoS as rosbag2 stores it in `offered_qos_profiles` (metadata.yaml and MCAP
    /// channel metadata), so that `ros2 bag play` offers the same QoS again.
    pub fn rosbag2_offered_qos(self) -> String {
        let (reliability, durability, depth) = match self {
            QosKind::SensorData => ("best_effort", "volatile", 5),
            QosKind::LatchedState => ("reliable", "transient_local", 1),
            QosKind::ReliableStream | QosKind::Service => ("reliable", "volatile", 10),
        };
        // rosbag2 writes "infinite" durations as the largest rmw time.
        let infinite = "{sec: 9223372036, nsec: 854775807}";
        format!(
            "- history: keep_last\n  depth: {depth}\n  reliability: {reliability}\n  durability: {durability}\n  \
             deadline: {infinite}\n  lifespan: {infinite}\n  liveliness: automatic\n  \
             liveliness_lease_duration: {infinite}\n  avoid_ros_namespace_conventions: false\n"
        )
    }

    /// Reads back (reliability, durability, depth) from rosbag2's `offered_qos_profiles` text; the
    /// first profile counts. Unknown or absent values: reliable, volatile, 10.
    pub fn parse_rosbag2_qos(yaml: &str) -> (bool, bool, usize) {
        let first = serde_yaml::from_str::<serde_yaml::Value>(yaml)
            .ok()
            .and_then(|v| v.as_sequence().and_then(|s| s.first().cloned()));
        let text = |key: &str| {
            first.as_ref().and_then(|p| match &p[key] {
                serde_yaml::Value::String(s) => Some(s.to_lowercase()),
                serde_yaml::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        // rmw enums as integers: reliability 1 reliable, 2 best effort; durability 1 transient local.
        let reliable = !matches!(text("reliability").as_deref(), Some("best_effort") | Some("2"));
        let latched = matches!(text("durability").as_deref(), Some("transient_local") | Some("1"));
        let depth = first.as_ref().and_then(|p| p["depth"].as_u64()).filter(|d| *d > 0).unwrap_or(10) as usize;
        (reliable, latched, depth)
    }
}

/// Name of the executable that hosts the six nodes of [`NodeKind::STACK`] in one process.
pub const ALL_IN_ONE_EXECUTABLE: &str = "needle_nav_stack";

/// Coordinate frames (REP-103/105 style names).
pub mod frames {
    /// The tracker's base frame: every tracked position and every target is expressed in it.
    pub const TRACKER: &str = "tracker";
    /// CT patient coordinates (DICOM LPS axes), in metres.
    pub const CT: &str = "ct";
    /// Needle target frame: origin at the target, z along the insertion direction.
    pub const NEEDLE_TARGET: &str = "needle_target";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_topic_name_has_one_type_and_one_qos() {
        let mut seen: HashMap<&str, Endpoint> = HashMap::new();
        for kind in NodeKind::ALL {
            for (_, ep) in kind.endpoints() {
                if let Some(prev) = seen.insert(ep.name, *ep) {
                    assert_eq!(prev, *ep, "{} declared twice with different type or QoS", ep.name);
                }
            }
        }
    }

    #[test]
    fn every_subscription_has_a_publisher_and_every_call_a_server() {
        let all: Vec<(Direction, Endpoint)> =
            NodeKind::ALL.iter().flat_map(|k| k.endpoints().iter().copied()).collect();
        for (dir, ep) in &all {
            let needed = match dir {
                Direction::Subscribes => Direction::Publishes,
                Direction::Calls => Direction::Serves,
                _ => continue,
            };
            assert!(all.iter().any(|(d, e)| *d == needed && e.name == ep.name), "nobody provides {}", ep.name);
        }
    }

    #[test]
    fn offered_qos_round_trips_through_the_rosbag2_text() {
        for (kind, expected) in [
            (QosKind::SensorData, (false, false, 5)),
            (QosKind::LatchedState, (true, true, 1)),
            (QosKind::ReliableStream, (true, false, 10)),
        ] {
            assert_eq!(QosKind::parse_rosbag2_qos(&kind.rosbag2_offered_qos()), expected, "{kind:?}");
        }
        // Older rosbag2 writes the rmw enums as integers.
        assert_eq!(
            QosKind::parse_rosbag2_qos("- history: 3\n  depth: 0\n  reliability: 2\n  durability: 1\n"),
            (false, true, 10)
        );
        assert_eq!(QosKind::parse_rosbag2_qos("not yaml: ["), (true, false, 10));
    }

    #[test]
    fn a_session_bag_records_every_published_topic_once() {
        let topics = published_topics();
        assert!(topics.iter().any(|e| e.name == TARGET.name) && topics.iter().any(|e| e.name == TF_STATIC.name));
        assert!(!topics.iter().any(|e| e.qos == QosKind::Service));
        let mut names: Vec<_> = topics.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), topics.len());
    }

    #[test]
    fn names_are_relative_and_valid_ros_names() {
        for kind in NodeKind::ALL {
            assert_eq!(NodeKind::from_name(kind.name()), Some(kind));
            for (_, ep) in kind.endpoints() {
                // Relative, except the system-wide tf and diagnostics topics.
                assert!(
                    !ep.name.starts_with('/') || ep.name.starts_with("/tf") || ep.name == "/diagnostics",
                    "{} must be relative",
                    ep.name
                );
                assert!(
                    ep.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/'),
                    "{} has characters ROS rejects",
                    ep.name
                );
            }
        }
    }
}
