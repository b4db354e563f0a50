"""Lifecycle-managed nodes, checked with rclpy as the client, as `ros2 lifecycle get/set/list`
use it: the lifecycle_msgs services and transition_event of the ROS 2 managed-node design
(https://design.ros2.org/articles/node_lifecycle.html), and what the states mean for
needle_target (targets only while active, an invalid target at once on deactivation)."""
import subprocess

import pytest
from conftest import executable, wait_until
from lifecycle_msgs.msg import State, Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState
from needle_nav_msgs.msg import NeedleTarget
from rclpy.qos import QoSProfile, ReliabilityPolicy

UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = 1, 2, 3, 4


class Lifecycle:
    """The client side of one node's lifecycle interface."""

    def __init__(self, peer, node):
        self.peer, self.node = peer, node
        self.change = peer.create_client(ChangeState, f"/{node}/change_state")
        self.get = peer.create_client(GetState, f"/{node}/get_state")
        self.states = peer.create_client(GetAvailableStates, f"/{node}/get_available_states")
        self.transitions = peer.create_client(GetAvailableTransitions, f"/{node}/get_available_transitions")
        self.graph = peer.create_client(GetAvailableTransitions, f"/{node}/get_transition_graph")
        self.events = []
        peer.create_subscription(TransitionEvent, f"/{node}/transition_event", self.events.append, 10)
        for c in (self.change, self.get, self.states, self.transitions, self.graph):
            assert c.wait_for_service(timeout_sec=20), f"{c.srv_name} not served"
        # transition_event is volatile: events sent before the two ends matched are lost.
        wait_until(lambda: peer.count_publishers(f"/{node}/transition_event") > 0, 20, peer, "transition_event")
        deadline_spin(peer, 1.0)

    def call(self, client, request, timeout=30):
        future = client.call_async(request)
        wait_until(future.done, timeout, self.peer, f"answer from {client.srv_name}")
        return future.result()

    def state(self):
        s = self.call(self.get, GetState.Request()).current_state
        return s.id, s.label

    def available(self):
        return [(t.transition.id, t.transition.label, t.start_state.id, t.goal_state.id)
                for t in self.call(self.transitions, GetAvailableTransitions.Request()).available_transitions]

    def set(self, label="", id=0):
        return self.call(self.change, ChangeState.Request(transition=Transition(id=id, label=label))).success

    def set_like_ros2_lifecycle(self, label):
        """`ros2 lifecycle set NODE LABEL`: looks the label up among the available transitions and
        sends that transition (id and label)."""
        match = [t.transition for t in self.call(self.transitions, GetAvailableTransitions.Request()).available_transitions
                 if t.transition.label == label]
        assert match, f"{label} not available"
        return self.call(self.change, ChangeState.Request(transition=match[0])).success


def steps(events):
    return [(e.transition.id, e.start_state.id, e.goal_state.id) for e in events]


def test_the_state_machine_walks_and_refuses_invalid_transitions(processes, peer):
    processes.start("needle_target", "--ros-args", "-p", "autostart:=false")
    lc = Lifecycle(peer, "needle_target")
    assert lc.state() == (UNCONFIGURED, "unconfigured")
    states = lc.call(lc.states, GetAvailableStates.Request()).available_states
    assert {(s.id, s.label) for s in states} >= {
        (1, "unconfigured"), (2, "inactive"), (3, "active"), (4, "finalized"), (10, "configuring"),
        (11, "cleaningup"), (12, "shuttingdown"), (13, "activating"), (14, "deactivating"), (15, "errorprocessing")}
    graph = lc.call(lc.graph, GetAvailableTransitions.Request()).available_transitions
    assert len(graph) == 25 and (Transition.TRANSITION_ON_ERROR_SUCCESS, 15, 1) in [
        (t.transition.id, t.start_state.id, t.goal_state.id) for t in graph]

    expected_available = {
        UNCONFIGURED: [(1, "configure", 1, 10), (5, "shutdown", 1, 12)],
        INACTIVE: [(2, "cleanup", 2, 11), (3, "activate", 2, 13), (6, "shutdown", 2, 12)],
        ACTIVE: [(4, "deactivate", 3, 14), (7, "shutdown", 3, 12)],
        FINALIZED: [],
    }
    invalid = {UNCONFIGURED: ["activate", "deactivate", "cleanup"], INACTIVE: ["configure", "deactivate"],
               ACTIVE: ["configure", "activate", "cleanup"], FINALIZED: ["configure", "activate", "shutdown"]}

    def check_state(sid):
        assert lc.state()[0] == sid
        assert lc.available() == expected_available[sid]
        for label in invalid[sid]:
            assert lc.set(label) is False, f"{label} accepted in state {sid}"
            assert lc.state()[0] == sid, f"refused {label} changed the state"
        # By id, too: another state's shutdown, and an id that is no transition.
        for bad_id in {5, 6, 7, 99} - {t[0] for t in expected_available[sid]}:
            assert lc.set(id=bad_id) is False and lc.state()[0] == sid

    check_state(UNCONFIGURED)
    walk = [("configure", INACTIVE, [(1, 1, 10), (10, 10, 2)]),
            ("activate", ACTIVE, [(3, 2, 13), (30, 13, 3)]),
            ("deactivate", INACTIVE, [(4, 3, 14), (40, 14, 2)]),
            ("cleanup", UNCONFIGURED, [(2, 2, 11), (20, 11, 1)]),
            ("configure", INACTIVE, [(1, 1, 10), (10, 10, 2)]),
            ("activate", ACTIVE, [(3, 2, 13), (30, 13, 3)])]
    for label, goal, events in walk:
        before = len(lc.events)
        assert lc.set_like_ros2_lifecycle(label) is True, label
        check_state(goal)
        wait_until(lambda: len(lc.events) >= before + 2, 10, peer, f"transition events of {label}")
        assert steps(lc.events[before:]) == events, label
    # By id alone (a label-less request), then shutdown from active by its label.
    assert lc.set(id=Transition.TRANSITION_DEACTIVATE) is True and lc.state()[0] == INACTIVE
    assert lc.set(id=Transition.TRANSITION_ACTIVATE) is True and lc.state()[0] == ACTIVE
    before = len(lc.events)
    assert lc.set("shutdown") is True
    check_state(FINALIZED)
    wait_until(lambda: len(lc.events) >= before + 2, 10, peer, "shutdown events")
    assert steps(lc.events[before:]) == [(7, 3, 12), (50, 12, 4)]
    assert lc.state() == (FINALIZED, "finalized")


@pytest.mark.parametrize("start", ["unconfigured", "inactive"])
def test_shutdown_from_each_primary_state(processes, peer, start):
    processes.start("marker_classifier", "--ros-args", "-p", "autostart:=false")
    lc = Lifecycle(peer, "marker_classifier")
    if start == "inactive":
        assert lc.set("configure")
    shutdown_id = {"unconfigured": 5, "inactive": 6}[start]
    assert lc.set(id=shutdown_id) is True
    assert lc.state() == (FINALIZED, "finalized")


def test_a_bad_configuration_fails_configure_and_stays_unconfigured(processes, peer):
    processes.start("needle_target", "--ros-args", "-p", "autostart:=false", "-p", "tracker_rate_hz:=-5.0")
    lc = Lifecycle(peer, "needle_target")
    assert lc.set("configure") is False
    assert lc.state()[0] == UNCONFIGURED
    # on_configure_failure back to unconfigured, announced.
    wait_until(lambda: len(lc.events) >= 2, 10, peer, "events")
    assert steps(lc.events[-2:]) == [(1, 1, 10), (11, 10, 1)]


def test_autostart_keeps_todays_behaviour(processes, peer):
    processes.start("needle_target")
    lc = Lifecycle(peer, "needle_target")
    assert lc.state() == (ACTIVE, "active")


def test_targets_only_while_active(processes, peer, tmp_path):
    case = tmp_path / "case"
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(case), "--phases", "6",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True)
    targets = []
    peer.create_subscription(NeedleTarget, "/needle_nav/target", targets.append,
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    processes.start("needle_nav_stack", "--only", "marker_tracker,marker_classifier,lesion_registration,needle_target",
                    "--ros-args",
                    "-p", "needle_target:autostart:=false",
                    "-p", "marker_tracker:rate_hz:=100.0", "-p", "marker_tracker:latency_s:=0.0",
                    "-p", "marker_classifier:window_s:=8.0",
                    "-p", f"lesion_registration:ct_case_dir:={case}", "-p", f"needle_target:ct_case_dir:={case}",
                    "-p", "needle_target:baseline_s:=8.0", "-p", "needle_target:tracker_rate_hz:=100.0",
                    "-p", "needle_target:robot_latency_s:=0.0", "-p", "needle_target:prediction:=none")
    lc = Lifecycle(peer, "needle_target")
    assert lc.state()[0] == UNCONFIGURED
    deadline_spin(peer, 3.0)
    assert targets == [], "an unconfigured needle_target published"
    assert lc.set("configure")
    # Inactive: it takes its inputs (the baseline is recorded) but publishes nothing.
    deadline_spin(peer, 20.0)
    assert targets == [], "an inactive needle_target published"
    assert lc.set("activate")
    wait_until(lambda: sum(t.valid for t in targets) >= 100, 90, peer, "100 valid targets while active")
    n = len(targets)
    assert lc.set("deactivate")
    # Spin on: whatever else comes must come before the deactivation target, nothing after it.
    deadline_spin(peer, 3.0)
    said = [i for i, t in enumerate(targets) if i >= n and "deactivated" in t.reason]
    assert len(said) == 1, f"{len(said)} deactivation targets"
    last = targets[said[0]]
    assert not last.valid and last.reason_code == NeedleTarget.REASON_STARTING
    assert said[0] == len(targets) - 1, f"{len(targets) - 1 - said[0]} targets after the deactivation target"
    n = len(targets)
    # Active again: targets resume; then cleanup forgets the state.
    assert lc.set("activate")
    wait_until(lambda: len(targets) > n, 30, peer, "targets after re-activation")
    assert lc.set("deactivate") and lc.set("cleanup")
    assert lc.state()[0] == UNCONFIGURED


def deadline_spin(peer, seconds):
    import time

    import rclpy
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(peer, timeout_sec=0.05)


def test_vessel_segmentation_refuses_requests_until_active(processes, peer, tmp_path):
    from needle_nav_msgs.srv import SegmentVessels
    processes.start("vessel_segmentation", "--ros-args", "-p", "autostart:=false")
    lc = Lifecycle(peer, "vessel_segmentation")
    assert lc.set("configure")
    client = peer.create_client(SegmentVessels, "/needle_nav/segment_vessels")
    wait_until(client.service_is_ready, 30, peer, "the segment_vessels service")

    def call():
        return lc.call(client, SegmentVessels.Request(input_path="/nonexistent/ct", output_dir=str(tmp_path)), 120)

    r = call()
    assert r.success is False and "not active" in r.message
    assert lc.set("activate")
    r = call()
    assert r.success is False and "does not exist" in r.message, r.message
    assert lc.set("deactivate")
    assert "not active" in call().message


def test_a_client_that_goes_away_does_not_harm_the_node(processes, peer):
    import rclpy
    p = processes.start("needle_target", "--ros-args", "-p", "autostart:=false")
    lc = Lifecycle(peer, "needle_target")
    # Another client asks for configure and vanishes before the answer.
    gone = rclpy.create_node("lifecycle_client_that_leaves")
    client = gone.create_client(ChangeState, "/needle_target/change_state")
    assert client.wait_for_service(timeout_sec=20)
    client.call_async(ChangeState.Request(transition=Transition(label="configure")))
    rclpy.spin_once(gone, timeout_sec=0.01)
    gone.destroy_node()
    wait_until(lambda: lc.state()[0] == INACTIVE, 20, peer, "the configure of the vanished client")
    assert p.poll() is None, "the node died"
    assert lc.set("activate") and lc.state()[0] == ACTIVE
