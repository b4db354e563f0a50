"""The installed launch files, run by ROS 2's own launch (launch, launch_xml, launch_ros).

Given a colcon install (NEEDLE_NAV_INSTALL=<workspace>/install, as scripts/check-colcon.sh sets
it), each launch file of share/needle_nav/launch runs with ../shared/tools/ros2_launch/ros2_launch.py
(what `ros2 launch` does, for a file path) on a private ROS domain, and an rclpy peer checks from
outside: every node appears in the ROS graph, each read its parameters from the installed files
(its log line "configuration from <prefix>/share/needle_nav/config/<node>.yaml"), the stack
publishes needle_nav/target (valid ones for the simulated stack on the shipped case), and Ctrl-C
(SIGINT to launch) ends every process cleanly. With lifecycle:=true the launch-started
lifecycle_manager brings needle_target to active (lifecycle_msgs get_state).

The environment (AMENT_PREFIX_PATH with the install prefixes, the underlay and the venv;
LD_LIBRARY_PATH; PYTHONPATH with needle_nav_msgs' Python package) is the caller's:
scripts/check-colcon.sh sets it.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = os.environ.get("NEEDLE_NAV_INSTALL")
if not INSTALL:
    pytest.skip("NEEDLE_NAV_INSTALL (a colcon install folder) not set: run scripts/check-colcon.sh", allow_module_level=True)
PREFIX = Path(INSTALL) / "needle_nav"
SHARE = PREFIX / "share" / "needle_nav"
RUNNER = Path(os.environ.get("NEEDLE_NAV_ROS2_LAUNCH", ROOT.parent / "shared" / "tools" / "ros2_launch" / "ros2_launch.py"))
os.environ["ROS_DOMAIN_ID"] = os.environ.get("NEEDLE_NAV_TEST_DOMAIN", os.environ.get("ROS_DOMAIN_ID", "42"))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402  (after the domain is set)
from lifecycle_msgs.msg import State  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from needle_nav_msgs.msg import NeedleTarget, TrackedMarker, TrackedMarkerArray  # noqa: E402

STACK = ["vessel_segmentation", "trajectory_planner", "marker_classifier", "lesion_registration", "needle_target"]
SIM = STACK + ["marker_tracker"]
IGTL = STACK + ["igtl_bridge"]
# The shipped case: registration after the 10 s window, then a 20 s calm-breathing baseline;
# measured about 31 s on an idle machine. Generous here: the test machine is shared.
FIRST_VALID_TARGET_S = float(os.environ.get("NEEDLE_NAV_LAUNCH_VALID_WAIT", "150"))


class Launch:
    """One ros2_launch.py run, its output in a file."""

    def __init__(self, file, *args):
        self.log = tempfile.NamedTemporaryFile(prefix="nn_launch_", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The nodes must find their parameter files and model in the install, not in a checkout.
        for var in ("NEEDLE_NAV_CONFIG_DIR", "NEEDLE_NAV_MODEL_DIR"):
            env.pop(var, None)
        cmd = [sys.executable, str(RUNNER), str(SHARE / "launch" / file), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def interrupt(self, timeout=40):
        """Ctrl-C: SIGINT to launch, which passes it on to every process it started."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.interrupt(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def peer():
    rclpy.init()
    node = rclpy.create_node(f"launch_test_peer_{os.getpid()}")
    yield node
    node.destroy_node()
    rclpy.shutdown()


@pytest.fixture
def launches():
    started = []

    def start(file, *args):
        launch = Launch(file, *args)
        started.append(launch)
        return launch

    yield start
    for launch in started:
        launch.close()


def spin_until(peer, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(peer, timeout_sec=0.1)
        if predicate():
            return True
    return predicate()


def wait_for_nodes(peer, launch, names, timeout=90):
    def present():
        graph = {n for n, _ns in peer.get_node_names_and_namespaces()}
        return all(n in graph for n in names)

    assert spin_until(peer, present, timeout), (
        f"nodes missing from the graph: {sorted(set(names) - {n for n, _ in peer.get_node_names_and_namespaces()})}\n"
        + launch.text()[-6000:]
    )


def assert_installed_configuration(launch, names):
    text = launch.text()
    for name in names:
        lines = {f"configuration from {share}/config/{name}.yaml" for share in (SHARE, SHARE.resolve())}
        assert any(line in text for line in lines), f"{name} did not read {SHARE}/config/{name}.yaml\n" + text[-6000:]


def assert_clean_exit(launch, processes):
    code = launch.interrupt()
    text = launch.text()
    died = re.findall(r"process has died.*", text)
    assert not died, "\n".join(died) + "\n" + text[-6000:]
    clean = len(re.findall(r"process has finished cleanly", text))
    assert clean == processes, f"{clean} of {processes} processes finished cleanly\n" + text[-6000:]
    assert code == 0, text[-6000:]


class Targets:
    def __init__(self, peer):
        self.all, self.valid = [], []
        self.sub = peer.create_subscription(NeedleTarget, "/needle_nav/target", self.on_target, 50)

    def on_target(self, msg):
        self.all.append(msg)
        if msg.valid:
            self.valid.append(msg)


def get_state(peer, node, timeout=5.0):
    client = peer.create_client(GetState, f"/{node}/get_state")
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(GetState.Request())
        spin_until(peer, future.done, timeout)
        return future.result().current_state.id if future.done() else None
    finally:
        peer.destroy_client(client)


def test_the_simulated_stack_gives_valid_targets_out_of_the_box(peer, launches):
    assert (SHARE / "cases" / "digital_patient" / "case.json").is_file(), "no shipped case"
    targets = Targets(peer)
    started = time.monotonic()
    launch = launches("needle_nav_sim.launch.xml")
    wait_for_nodes(peer, launch, SIM)
    assert_installed_configuration(launch, SIM)
    assert spin_until(peer, lambda: targets.valid, FIRST_VALID_TARGET_S), (
        f"no valid target within {FIRST_VALID_TARGET_S} s; {len(targets.all)} targets, last reasons: "
        f"{sorted({t.reason for t in targets.all[-200:]})}\n" + launch.text()[-6000:]
    )
    print(f"first valid target {time.monotonic() - started:.1f} s after the launch")
    peer.destroy_subscription(targets.sub)
    assert_clean_exit(launch, processes=len(SIM))


def test_the_stack_without_tracker_answers_markers_with_invalid_targets(peer, launches):
    targets = Targets(peer)
    launch = launches("needle_nav.launch.xml")
    wait_for_nodes(peer, launch, STACK)
    assert_installed_configuration(launch, STACK)
    # A tracker stand-in: three markers, no planning case, so every answer is invalid with a reason.
    pub = peer.create_publisher(TrackedMarkerArray, "/needle_nav/markers", 10)
    deadline = time.monotonic() + 20
    seq = 0
    while time.monotonic() < deadline and len(targets.all) < 20:
        msg = TrackedMarkerArray()
        msg.header.stamp = peer.get_clock().now().to_msg()
        msg.header.frame_id = "tracker"
        msg.sequence = seq
        for i in range(3):
            m = TrackedMarker()
            m.id, m.visible, m.quality = i + 1, True, 1.0
            m.position.x, m.position.y, m.position.z = 0.05 * i, 0.02 * i, 0.5
            msg.markers.append(m)
        pub.publish(msg)
        seq += 1
        rclpy.spin_once(peer, timeout_sec=0.02)
    assert targets.all, "no target answered the markers\n" + launch.text()[-6000:]
    assert not targets.valid, "a target without a planning case was valid"
    assert all(t.reason for t in targets.all), "an invalid target without a reason"
    peer.destroy_subscription(targets.sub)
    peer.destroy_publisher(pub)
    assert_clean_exit(launch, processes=len(STACK))


def test_the_all_in_one_hosts_six_nodes_on_the_installed_configuration(peer, launches):
    targets = Targets(peer)
    launch = launches("needle_nav_all_in_one.launch.xml")
    wait_for_nodes(peer, launch, SIM)
    assert_installed_configuration(launch, SIM)
    assert spin_until(peer, lambda: targets.all, 30), "the all-in-one published no target\n" + launch.text()[-6000:]
    peer.destroy_subscription(targets.sub)
    assert_clean_exit(launch, processes=1)


def test_with_lifecycle_the_manager_brings_needle_target_to_active(peer, launches):
    """Needs the lifecycle services in the nodes (issue 15, lifecycle part)."""
    targets = Targets(peer)
    launch = launches("needle_nav_sim.launch.xml", "lifecycle:=true")
    wait_for_nodes(peer, launch, SIM + ["lifecycle_manager"])
    assert spin_until(peer, lambda: get_state(peer, "needle_target", 2.0) == State.PRIMARY_STATE_ACTIVE, 120), (
        "needle_target is not active\n" + launch.text()[-6000:]
    )
    assert "managed nodes are active" in launch.text() or spin_until(
        peer, lambda: "managed nodes are active" in launch.text(), 30
    ), launch.text()[-6000:]
    assert spin_until(peer, lambda: targets.all, 30), "no target after the bring-up"
    peer.destroy_subscription(targets.sub)
    assert_clean_exit(launch, processes=len(SIM) + 1)


def test_the_igtl_launch_keeps_retrying_without_a_plus_server_and_exits_cleanly(peer, launches):
    """needle_nav_igtl.launch.xml with nobody on the tracker port: the bridge retries with back-off,
    every node runs on the installed configuration, and Ctrl-C ends them all cleanly."""
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        tracker_port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        slicer_port = s.getsockname()[1]
    launch = launches("needle_nav_igtl.launch.xml", f"tracker_port:={tracker_port}", f"slicer_port:={slicer_port}")
    wait_for_nodes(peer, launch, IGTL)
    assert_installed_configuration(launch, IGTL)
    assert spin_until(peer, lambda: "retrying with back-off" in launch.text(), 30), launch.text()[-6000:]
    spin_until(peer, lambda: False, 3)
    assert_clean_exit(launch, processes=len(IGTL))
