"""The running system's ROS graph, seen by rclpy (an independent ROS 2 client library),
must match what needle_nav declares: every node, topic and service with its type and QoS."""
import pytest
from conftest import wait_until
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

NODES = ["marker_tracker", "marker_classifier", "lesion_registration", "needle_target",
         "vessel_segmentation", "trajectory_planner"]
# Declared too, but not part of the simulated stack (it replaces marker_tracker with a real tracker):
# tests/python/test_igtl_bridge.py checks its endpoints.
BRIDGE = "igtl_bridge"

# Written out by hand as well, so that a wrong declaration cannot pass by agreeing with itself.
EXPECTED = {
    "/needle_nav/markers": "needle_nav_msgs/msg/TrackedMarkerArray",
    "/needle_nav/debug/ground_truth": "needle_nav_msgs/msg/PhantomGroundTruth",
    "/needle_nav/marker_classification": "needle_nav_msgs/msg/MarkerClassification",
    "/needle_nav/registration": "needle_nav_msgs/msg/LesionRegistration",
    "/needle_nav/target": "needle_nav_msgs/msg/NeedleTarget",
    "/needle_nav/target_pose": "geometry_msgs/msg/PoseStamped",
    "/needle_nav/plan": "needle_nav_msgs/msg/NeedlePlan",
    "/needle_nav/viz/markers": "visualization_msgs/msg/MarkerArray",
    "/needle_nav/viz/target": "visualization_msgs/msg/MarkerArray",
    "/needle_nav/viz/marker_classes": "visualization_msgs/msg/MarkerArray",
    "/needle_nav/viz/plan": "visualization_msgs/msg/MarkerArray",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
EXPECTED_SERVICES = {"/needle_nav/segment_vessels": "needle_nav_msgs/srv/SegmentVessels"}

QOS = {
    "sensor_data": (ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE),
    "latched_state": (ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL),
    "reliable_stream": (ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE),
}


def declared_topics(declared, nodes=tuple(NODES)):
    topics = {}
    for node in declared["nodes"]:
        if node["node"] not in nodes:
            continue
        for ep in node["endpoints"]:
            topics[(node["node"], ep["direction"], "/" + ep["name"].lstrip("/"))] = ep
    return topics


def check_graph(peer, declared, nodes=tuple(NODES), expected=None):
    expected = EXPECTED if expected is None else expected
    names = lambda: {n for n, ns in peer.get_node_names_and_namespaces()}  # noqa: E731
    wait_until(lambda: set(nodes) <= names(), 30, peer, f"nodes {nodes}")

    def topics_ready():
        t = dict(peer.get_topic_names_and_types())
        return all(name in t for name in expected) and t
    topics = wait_until(topics_ready, 30, peer, "all topics")
    for name, type_name in expected.items():
        assert topics[name] == [type_name], f"{name}: {topics[name]}"

    expected_services = EXPECTED_SERVICES if nodes == tuple(NODES) else {}
    services = wait_until(lambda: (s := dict(peer.get_service_names_and_types()))
                          and all(n in s for n in expected_services) and s, 30, peer, "services")
    for name, type_name in expected_services.items():
        assert services[name] == [type_name]

    # Every declared endpoint is really there, with the declared type and QoS, on the declared node.
    for (node, direction, name), ep in declared_topics(declared, nodes).items():
        if direction == "serves":
            assert services.get(name) == [ep["type"]], name
            continue
        if direction == "calls":
            clients = wait_until(lambda: dict(peer.get_client_names_and_types_by_node(node, "/")).get(name), 30,
                                 peer, f"{node} client of {name}")
            assert clients == [ep["type"]]
            continue
        assert topics.get(name) == [ep["type"]], name
        get = peer.get_publishers_info_by_topic if direction == "publishes" else peer.get_subscriptions_info_by_topic
        infos = wait_until(lambda: [i for i in get(name) if i.node_name == node], 30, peer, f"{node} {direction} {name}")
        reliability, durability = QOS[ep["qos"]]
        for info in infos:
            assert info.topic_type == ep["type"]
            assert info.qos_profile.reliability == reliability, f"{node} {name}: {info.qos_profile.reliability}"
            assert info.qos_profile.durability == durability, f"{node} {name}: {info.qos_profile.durability}"


def test_declared_interfaces_match_the_hand_written_expectation(declared_interfaces):
    names = {"/" + ep["name"].lstrip("/"): ep["type"] for n in declared_interfaces["nodes"] for ep in n["endpoints"]}
    assert names == {**EXPECTED, **EXPECTED_SERVICES}
    assert [n["node"] for n in declared_interfaces["nodes"]] == NODES + [BRIDGE]


def test_six_separate_processes_form_the_declared_graph(processes, peer, declared_interfaces):
    for name in NODES:
        processes.start(name)
    check_graph(peer, declared_interfaces)


def test_the_all_in_one_process_forms_the_same_graph(processes, peer, declared_interfaces):
    p = processes.start("needle_nav_stack")
    check_graph(peer, declared_interfaces)
    assert p.poll() is None
