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

pub const MARKERS: Endpoint =
    Endpoint { name: "needle_nav/markers", type_name: "needle_nav/msg/TrackedMarkerArray", qos: QosKind::SensorData };
/// Debug/evaluation only: truth of the simulated patient. Never present on a real patient.
pub const GROUND_TRUTH: Endpoint = Endpoint {
    name: "needle_nav/debug/ground_truth",
    type_name: "needle_nav/msg/PhantomGroundTruth",
    qos: QosKind::SensorData,
};
pub const CLASSIFICATION: Endpoint = Endpoint {
    name: "needle_nav/marker_classification",
    type_name: "needle_nav/msg/MarkerClassification",
    qos: QosKind::LatchedState,
};
pub const REGISTRATION: Endpoint = Endpoint {
    name: "needle_nav/registration",
    type_name: "needle_nav/msg/LesionRegistration",
    qos: QosKind::LatchedState,
};
pub const TARGET: Endpoint =
    Endpoint { name: "needle_nav/target", type_name: "needle_nav/msg/NeedleTarget", qos: QosKind::ReliableStream };
/// Generic arm controllers take a pose; published only while the target is valid.
pub const TARGET_POSE: Endpoint = Endpoint {
    name: "needle_nav/target_pose",
    type_name: "geometry_msgs/msg/PoseStamped",
    qos: QosKind::ReliableStream,
};
pub const PLAN: Endpoint =
    Endpoint { name: "needle_nav/plan", type_name: "needle_nav/msg/NeedlePlan", qos: QosKind::LatchedState };
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
/// The registration as a static transform (tracker -> ct). A global name: tf is shared by the whole system.
pub const TF_STATIC: Endpoint =
    Endpoint { name: "/tf_static", type_name: "tf2_msgs/msg/TFMessage", qos: QosKind::LatchedState };
pub const SEGMENT_VESSELS: Endpoint =
    Endpoint { name: "needle_nav/segment_vessels", type_name: "needle_nav/srv/SegmentVessels", qos: QosKind::Service };

/// The six nodes. The executable and the default node name are the same string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    MarkerTracker,
    MarkerClassifier,
    LesionRegistration,
    NeedleTarget,
    VesselSegmentation,
    TrajectoryPlanner,
}

impl NodeKind {
    pub const ALL: [NodeKind; 6] = [
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
            NodeKind::MarkerTracker => &[(Publishes, MARKERS), (Publishes, GROUND_TRUTH), (Publishes, VIZ_MARKERS)],
            NodeKind::MarkerClassifier => &[(Subscribes, MARKERS), (Publishes, CLASSIFICATION)],
            NodeKind::LesionRegistration => &[
                (Subscribes, MARKERS),
                (Subscribes, CLASSIFICATION),
                (Subscribes, PLAN),
                (Publishes, REGISTRATION),
                (Publishes, TF_STATIC),
            ],
            NodeKind::NeedleTarget => &[
                (Subscribes, MARKERS),
                (Subscribes, CLASSIFICATION),
                (Subscribes, REGISTRATION),
                (Publishes, TARGET),
                (Publishes, TARGET_POSE),
                (Publishes, VIZ_TARGET),
            ],
            NodeKind::VesselSegmentation => &[(Serves, SEGMENT_VESSELS)],
            NodeKind::TrajectoryPlanner => &[(Calls, SEGMENT_VESSELS), (Publishes, PLAN)],
        }
    }
}

/// Name of the executable that hosts all six nodes in one process.
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
    fn names_are_relative_and_valid_ros_names() {
        for kind in NodeKind::ALL {
            assert_eq!(NodeKind::from_name(kind.name()), Some(kind));
            for (_, ep) in kind.endpoints() {
                // Relative, except the system-wide tf topics.
                assert!(!ep.name.starts_with('/') || ep.name == "/tf_static", "{} must be relative", ep.name);
                assert!(
                    ep.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/'),
                    "{} has characters ROS rejects",
                    ep.name
                );
            }
        }
    }
}
