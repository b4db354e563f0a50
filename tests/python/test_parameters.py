"""Declared parameters (issue 15): every node answers the standard parameter services as
`ros2 param list/describe/get/set` call them (rcl_interfaces services through an rclpy client),
with the installed parameter files' values, units and ranges; sets of run-time parameters are
validated as at start and applied, the others refused with the reason."""
import math
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from conftest import ROOT, Processes, wait_until
from needle_nav_msgs.msg import NeedleTarget
from rcl_interfaces.msg import Parameter, ParameterEvent, ParameterType, ParameterValue
from rcl_interfaces.srv import (DescribeParameters, GetParameters, GetParameterTypes, ListParameters,
                                SetParameters, SetParametersAtomically)
from rclpy.qos import QoSProfile, ReliabilityPolicy

NODES = ["marker_tracker", "marker_classifier", "lesion_registration", "needle_target", "vessel_segmentation",
         "trajectory_planner"]
# Far above the time a started node needs to answer; assertions are on the answers.
PATIENCE_S = 30.0


def yaml_parameters(node):
    """The node's keys in its shipped parameter file, dotted, with their values."""
    section = yaml.safe_load((ROOT / "config" / f"{node}.yaml").read_text())[node]["ros__parameters"]
    out = {}

    def walk(prefix, m):
        for k, v in m.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(name + ".", v)
            else:
                out[name] = v
    walk("", section)
    return out


def python_value(v):
    """An rcl_interfaces ParameterValue as a Python value (what `ros2 param get` prints)."""
    return {
        ParameterType.PARAMETER_NOT_SET: lambda: None,
        ParameterType.PARAMETER_BOOL: lambda: v.bool_value,
        ParameterType.PARAMETER_INTEGER: lambda: v.integer_value,
        ParameterType.PARAMETER_DOUBLE: lambda: v.double_value,
        ParameterType.PARAMETER_STRING: lambda: v.string_value,
        ParameterType.PARAMETER_BOOL_ARRAY: lambda: list(v.bool_array_value),
        ParameterType.PARAMETER_INTEGER_ARRAY: lambda: list(v.integer_array_value),
        ParameterType.PARAMETER_DOUBLE_ARRAY: lambda: list(v.double_array_value),
        ParameterType.PARAMETER_STRING_ARRAY: lambda: list(v.string_array_value),
    }[v.type]()


def value(x):
    """A Python value as the ParameterValue `ros2 param set` sends (its type from the literal)."""
    if isinstance(x, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=x)
    if isinstance(x, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=x)
    if isinstance(x, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=x)
    if isinstance(x, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=x)
    raise TypeError(x)


class Client:
    """The calls `ros2 param` makes, on one node's services."""

    def __init__(self, peer, node):
        self.peer, self.node = peer, node

    def call(self, srv, name, request):
        client = self.peer.create_client(srv, f"/{self.node}/{name}")
        try:
            wait_until(lambda: client.service_is_ready(), PATIENCE_S, self.peer, f"/{self.node}/{name}")
            future = client.call_async(request)
            wait_until(lambda: future.done(), PATIENCE_S, self.peer, f"answer of /{self.node}/{name}")
            return future.result()
        finally:
            self.peer.destroy_client(client)

    def list(self, prefixes=(), depth=ListParameters.Request.DEPTH_RECURSIVE):
        return self.call(ListParameters, "list_parameters",
                         ListParameters.Request(prefixes=list(prefixes), depth=depth)).result

    def describe(self, *names):
        return self.call(DescribeParameters, "describe_parameters",
                         DescribeParameters.Request(names=list(names))).descriptors

    def get(self, *names):
        values = self.call(GetParameters, "get_parameters", GetParameters.Request(names=list(names))).values
        return [python_value(v) for v in values]

    def types(self, *names):
        return list(self.call(GetParameterTypes, "get_parameter_types",
                              GetParameterTypes.Request(names=list(names))).types)

    def set(self, **values):
        params = [Parameter(name=k.replace("__", "."), value=value(v)) for k, v in values.items()]
        return self.call(SetParameters, "set_parameters", SetParameters.Request(parameters=params)).results

    def set_atomically(self, **values):
        params = [Parameter(name=k.replace("__", "."), value=value(v)) for k, v in values.items()]
        return self.call(SetParametersAtomically, "set_parameters_atomically",
                         SetParametersAtomically.Request(parameters=params)).result


@pytest.fixture(scope="module")
def stack(ros):
    """The whole stack in one process, as `needle_nav_stack` runs it (no planning case)."""
    procs = Processes()
    p = procs.start("needle_nav_stack")
    yield p
    procs.stop_all()


@pytest.fixture(scope="module")
def client_node(ros):
    node = rclpy.create_node("pytest_param_client")
    yield node
    node.destroy_node()


@pytest.mark.parametrize("node", NODES)
def test_every_node_declares_its_parameter_file_keys_with_their_values(stack, client_node, node):
    c = Client(client_node, node)
    listed = c.list()
    expected = yaml_parameters(node)
    # `ros2 param list` shows every key of the file and the runtime's use_sim_time; optional list
    # keys the file leaves out (marker_classifier's correction region) are declared too.
    assert set(expected) | {"use_sim_time"} <= set(listed.names), set(expected) - set(listed.names)
    assert len(listed.names) == len(set(listed.names))
    got = dict(zip(expected, c.get(*expected)))
    for key, want in expected.items():
        have = got[key]
        if isinstance(want, float) or (isinstance(want, int) and isinstance(have, float)):
            assert have == pytest.approx(want, rel=1e-12), f"{node}.{key}"
        elif isinstance(want, list):
            assert have == pytest.approx(want), f"{node}.{key}"
        elif key == "trace_session":
            assert have == str(want), f"{node}.{key}"
        else:
            assert have == want, f"{node}.{key}"
    assert c.get("use_sim_time") == [False]
    assert stack.poll() is None


def test_listing_by_prefix_and_depth_as_ros2_param_list(stack, client_node):
    c = Client(client_node, "needle_target")
    everything = c.list()
    assert "sample_checks" in everything.prefixes
    top = c.list(depth=1)
    assert "deviation_tolerance_m" in top.names and not any("." in n for n in top.names)
    checks = c.list(prefixes=["sample_checks"], depth=1)
    assert sorted(checks.names) == sorted(f"sample_checks.{k}" for k in (
        "max_markers", "max_coordinate_m", "max_clock_offset_s", "max_marker_speed_m_s", "jump_tolerance_m",
        "accept_move_after_s"))


def test_describe_gives_type_unit_range_and_read_only(stack, client_node):
    c = Client(client_node, "needle_target")
    tol, frame, markers, sim_time, unknown = c.describe(
        "deviation_tolerance_m", "frame_id", "sample_checks.max_markers", "use_sim_time", "no_such_parameter")
    assert tol.type == ParameterType.PARAMETER_DOUBLE and not tol.read_only
    assert "[m]" in tol.description
    assert [(r.from_value, r.to_value) for r in tol.floating_point_range] == [(0.0, 0.1)]
    assert "> 0" in tol.additional_constraints
    assert frame.type == ParameterType.PARAMETER_STRING and frame.read_only
    assert markers.type == ParameterType.PARAMETER_INTEGER and not markers.read_only
    assert [(r.from_value, r.to_value, r.step) for r in markers.integer_range] == [(1, 10000, 1)]
    assert sim_time.type == ParameterType.PARAMETER_BOOL and sim_time.read_only
    assert unknown.type == ParameterType.PARAMETER_NOT_SET
    assert c.types("deviation_tolerance_m", "prediction", "no_such_parameter") == [
        ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_NOT_SET]
    # The planner's nested keys, dotted.
    (bone,) = Client(client_node, "trajectory_planner").describe("margins.bone_m")
    assert bone.read_only and "[m]" in bone.description


def test_refused_sets_say_why_and_change_nothing(stack, client_node):
    c = Client(client_node, "needle_target")
    cases = {
        "gate_surrogate": (1.5, "outside [0, 1]"),
        "deviation_tolerance_m": ("wide", "is a double, not a string"),
        "frame_id": ("world", "read-only"),
        "use_sim_time": (True, "read-only"),
        "no_such_parameter": (1.0, "not declared"),
        # Inside the range, refused by the start-up check (> 0), in its words.
        "stale_after_periods": (0.5, "outside [1, 1000]"),
    }
    before = c.get(*cases)
    for name, (v, why) in cases.items():
        (r,) = c.set(**{name.replace(".", "__"): v})
        assert not r.successful and why in r.reason, (name, r.reason)
    (r,) = c.set(deviation_tolerance_m=0.0)
    assert not r.successful and "deviation_tolerance_m" in r.reason and "> 0" in r.reason, r.reason
    assert c.get(*cases) == before


def test_cross_field_rule_is_checked_and_an_atomic_set_can_satisfy_it(stack, client_node):
    c = Client(client_node, "marker_classifier")
    threshold, hysteresis = c.get("threshold_m", "hysteresis_m")
    (r,) = c.set(hysteresis_m=threshold + 0.001)
    assert not r.successful and "hysteresis_m" in r.reason and "threshold_m" in r.reason, r.reason
    assert c.get("hysteresis_m") == [hysteresis]
    r = c.set_atomically(threshold_m=threshold + 0.002, hysteresis_m=threshold + 0.001)
    assert r.successful, r.reason
    assert c.get("threshold_m", "hysteresis_m") == pytest.approx([threshold + 0.002, threshold + 0.001])
    r = c.set_atomically(threshold_m=threshold, hysteresis_m=hysteresis)
    assert r.successful, r.reason


def test_atomic_sets_are_all_or_nothing_and_plain_sets_one_by_one(stack, client_node):
    c = Client(client_node, "needle_target")
    (tol, gate) = c.get("deviation_tolerance_m", "gate_surrogate")
    r = c.set_atomically(deviation_tolerance_m=0.01, gate_surrogate=2.0)
    assert not r.successful and "gate_surrogate" in r.reason
    assert c.get("deviation_tolerance_m", "gate_surrogate") == [tol, gate]
    ok, refused = c.set(deviation_tolerance_m=0.01, gate_surrogate=2.0)
    assert ok.successful and not refused.successful
    assert c.get("deviation_tolerance_m", "gate_surrogate") == [0.01, gate]
    # An integer where a double is declared, as `ros2 param set ... 2` sends it, is read as 2.0
    # (the parameter file takes it so at start too).
    (r,) = c.set(stale_after_periods=7)
    assert r.successful, r.reason
    assert c.get("stale_after_periods") == [7.0]
    assert c.types("stale_after_periods") == [ParameterType.PARAMETER_DOUBLE]
    assert all(x.successful for x in c.set(deviation_tolerance_m=tol, stale_after_periods=5.0))


def test_accepted_sets_are_announced_on_parameter_events(stack, client_node):
    events = []
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    sub = client_node.create_subscription(ParameterEvent, "/parameter_events", events.append, qos)
    try:
        c = Client(client_node, "lesion_registration")
        (old,) = c.get("max_fre_m")
        (r,) = c.set(max_fre_m=0.003)
        assert r.successful, r.reason

        def announced():
            return [e for e in events if e.node == "/lesion_registration"
                    and any(p.name == "max_fre_m" and math.isclose(p.value.double_value, 0.003)
                            for p in e.changed_parameters)]
        wait_until(announced, PATIENCE_S, client_node, "the change on /parameter_events")
        # A refused set announces nothing.
        (r,) = c.set(max_fre_m=1.0)
        assert not r.successful
        time.sleep(1.0)
        for _ in range(20):
            rclpy.spin_once(client_node, timeout_sec=0.05)
        assert not [e for e in events if any(p.name == "max_fre_m" and p.value.double_value == 1.0
                                             for p in e.changed_parameters)]
        assert c.set(max_fre_m=old)[0].successful
    finally:
        client_node.destroy_subscription(sub)


def test_a_set_takes_effect_on_the_next_sample(stack, client_node):
    """needle_target with the simulated tracker's samples (several markers each): allowed at most
    2 markers per sample, it answers each sample as invalid input, naming the limit; back at 64,
    the samples are taken again (no registration here, so the reason is the registration's)."""
    targets = []
    sub = client_node.create_subscription(NeedleTarget, "needle_nav/target", targets.append, 10)
    c = Client(client_node, "needle_target")
    try:
        def latest_code():
            return targets[-1].reason_code if targets else None
        wait_until(lambda: latest_code() == NeedleTarget.REASON_NO_REGISTRATION, PATIENCE_S, client_node,
                   "targets refused for want of a registration")
        (r,) = c.set(sample_checks__max_markers=2)
        assert r.successful, r.reason
        targets.clear()
        wait_until(lambda: latest_code() == NeedleTarget.REASON_INVALID_INPUT, PATIENCE_S, client_node,
                   "samples refused under the new limit")
        assert "(limit 2)" in targets[-1].reason, targets[-1].reason
        (r,) = c.set(sample_checks__max_markers=64)
        assert r.successful, r.reason
        targets.clear()
        wait_until(lambda: latest_code() == NeedleTarget.REASON_NO_REGISTRATION, PATIENCE_S, client_node,
                   "samples taken again")
    finally:
        client_node.destroy_subscription(sub)


def test_a_single_node_executable_declares_its_command_line_values(ros, client_node):
    """`needle_target` on its own, in a namespace, with a value and use_sim_time from the command
    line: the services live under the node's namespaced name and show what it was started with."""
    procs = Processes()
    try:
        p = procs.start("needle_target", "--ros-args", "-r", "__ns:=/solo", "-p", "deviation_tolerance_m:=0.004",
                        "-p", "use_sim_time:=true")
        c = Client(client_node, "solo/needle_target")
        assert c.get("deviation_tolerance_m", "use_sim_time", "gate_surrogate") == [0.004, True, 0.15]
        (sim_time,) = c.describe("use_sim_time")
        assert sim_time.read_only
        (r,) = c.set(use_sim_time=False)
        assert not r.successful and "read-only" in r.reason
        assert p.poll() is None
    finally:
        procs.stop_all()


def test_clients_that_leave_before_their_answer_do_not_stop_the_node(stack, client_node):
    for _ in range(20):
        client = client_node.create_client(GetParameters, "/needle_target/get_parameters")
        wait_until(lambda: client.service_is_ready(), PATIENCE_S, client_node, "get_parameters")
        client.call_async(GetParameters.Request(names=["deviation_tolerance_m"]))
        client_node.destroy_client(client)
    time.sleep(0.5)
    assert stack.poll() is None
    assert Client(client_node, "needle_target").get("gate_surrogate") == [0.15]
