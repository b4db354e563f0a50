"""/diagnostics as ROS 2 tools read it (rclpy subscriber, diagnostic_msgs/DiagnosticArray): every
node reports at about 1 Hz, OK when healthy, and the status concerned turns WARN / ERROR, saying
why, under injected faults: the tracker stops, a marker is hidden, the segmentation model is
missing. Levels are diagnostic_msgs' constants, not needle_nav's."""
import subprocess
import threading
import time
from collections import defaultdict

from conftest import executable, wait_until
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from needle_nav_msgs.msg import LesionRegistration, TrackedMarker, TrackedMarkerArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

NODES = ["marker_tracker", "marker_classifier", "lesion_registration", "needle_target",
         "vessel_segmentation", "trajectory_planner"]
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Diagnostics:
    """Every status received, by name, with the peer's receive time."""

    def __init__(self, peer):
        self.by_name = defaultdict(list)
        peer.create_subscription(DiagnosticArray, "/diagnostics", self._take,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def _take(self, array):
        now = time.monotonic()
        for s in array.status:
            self.by_name[s.name].append((now, s))

    def latest(self, name):
        entries = self.by_name.get(name)
        return entries[-1][1] if entries else None

    def wait_level(self, peer, name, levels, timeout, what=""):
        """Waits until the newest status `name` has one of `levels`; returns it."""
        def reached():
            s = self.latest(name)
            return s if s is not None and s.level in levels else None
        return wait_until(reached, timeout, peer, f"{name} at level {levels} {what} (last: {self.latest(name)})")


def values(status):
    return {kv.key: kv.value for kv in status.values}


class MarkerPublisher:
    """A tracker of our own: four still markers at `hz`, stamped now; `hidden` markers are reported
    not visible (as a tracker reports an occluded marker); `stop()` ends the stream."""

    def __init__(self, ros_node, hz=100.0):
        self.pub = ros_node.create_publisher(TrackedMarkerArray, "/needle_nav/markers", qos_profile_sensor_data)
        self.clock = ros_node.get_clock()
        self.hidden = set()
        self.period = 1.0 / hz
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        seq = 0
        next_t = time.monotonic()
        while self.running:
            m = TrackedMarkerArray()
            m.header.stamp = self.clock.now().to_msg()
            m.header.frame_id = "tracker"
            m.sequence = seq
            for i in range(1, 5):
                m.markers.append(TrackedMarker(id=i, position=Point(x=0.05 * i, y=0.02 * i, z=0.3),
                                               visible=i not in self.hidden, quality=1.0))
            self.pub.publish(m)
            seq += 1
            next_t += self.period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stop(self):
        self.running = False
        self.thread.join(timeout=2)


def test_every_node_of_the_stack_reports_at_about_1_hz(processes, peer):
    diag = Diagnostics(peer)
    processes.start("needle_nav_stack")
    names = {node: f"needle_nav: {node}" for node in NODES}
    wait_until(lambda: all(any(n.startswith(prefix) for n in diag.by_name) for prefix in names.values()), 30, peer,
               "a status from every node")
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start > 6.0, 10, peer, "6 s of statuses")
    for node, prefix in names.items():
        for name, entries in diag.by_name.items():
            if not name.startswith(prefix):
                continue
            recent = [t for t, _ in entries if t >= start]
            # 1 Hz: 5 to 7 reports in 6 s (the first may fall either side).
            assert 5 <= len(recent) <= 8, f"{name}: {len(recent)} reports in 6 s"
            s = entries[-1][1]
            assert s.level in (OK, WARN, ERROR, DiagnosticStatus.STALE) and s.message and s.hardware_id
            for key in values(s):
                # SI units in the key names.
                assert "[mm]" not in key and "[ms]" not in key, key
    # Without a planning CT, the registration says so as an ERROR, and the planner warns.
    reg = diag.latest("needle_nav: lesion_registration registration")
    assert reg.level == ERROR and "no planning CT configured" in reg.message, reg
    plan = diag.latest("needle_nav: trajectory_planner planning")
    assert plan.level == WARN and "no planning CT" in plan.message, plan
    # The simulated tracker publishes its samples at its rate: the classifier sees them in time.
    tracker = diag.latest("needle_nav: marker_tracker output")
    assert float(values(tracker)["expected rate [Hz]"]) == 250.0
    assert float(values(tracker)["rate [Hz]"]) > 100.0, tracker
    inputs = diag.latest("needle_nav: marker_classifier inputs")
    assert float(values(inputs)["data age [s]"]) < 0.5, inputs


def test_healthy_inputs_are_ok_a_hidden_marker_warns_and_a_stopped_tracker_errors(processes, peer):
    diag = Diagnostics(peer)
    # Rate thresholds loose enough for a Python publisher on a busy machine; the boundaries
    # themselves are unit-tested in needle_nav_nodes::diagnostics.
    loose = ["-p", "diagnostics.inputs.min_rate_fraction_warn:=0.3", "-p",
             "diagnostics.inputs.min_rate_fraction_error:=0.1", "-p", "diagnostics.inputs.max_age_warn_s:=0.3",
             "-p", "diagnostics.inputs.max_age_error_s:=1.5"]
    processes.start("marker_classifier", "--ros-args", "-p", "diagnostics.expected_input_rate_hz:=100.0", *loose)
    processes.start("needle_target", "--ros-args", "-p", "tracker_rate_hz:=100.0", *loose)
    classifier, target = "needle_nav: marker_classifier inputs", "needle_nav: needle_target inputs"
    # Before any tracker: nothing received, ERROR once the error age has passed.
    s = diag.wait_level(peer, classifier, {ERROR}, 20, "before the tracker starts")
    assert "no tracker samples received" in s.message, s.message
    tracker = MarkerPublisher(peer, hz=100.0)
    try:
        for name in (classifier, target):
            s = diag.wait_level(peer, name, {OK}, 15, "with the tracker running")
            v = values(s)
            assert v["markers in newest sample"] == "4" and v["markers missing"] == "[]", v
            assert float(v["data age [s]"]) < 0.3
        # Marker 3 hidden: the inputs warn and name it.
        tracker.hidden = {3}
        for name in (classifier, target):
            s = diag.wait_level(peer, name, {WARN}, 10, "with marker 3 hidden")
            assert "markers [3] not seen" in s.message, s.message
            assert values(s)["markers missing"] == "[3]"
        # Back in view: OK again.
        tracker.hidden = set()
        diag.wait_level(peer, classifier, {OK}, 10, "with marker 3 back")
    finally:
        tracker.stop()
    # Tracker stopped: the newest sample ages past the error age (1.5 s).
    for name in (classifier, target):
        s = diag.wait_level(peer, name, {ERROR}, 10, "after the tracker stopped")
        assert "s old" in s.message or "Hz, below" in s.message, s.message
        assert float(values(s)["time since last message [s]"]) > 0.3
    # needle_target's own answer to the stop: STALE targets are invalid for a fault.
    t = diag.latest("needle_nav: needle_target targets")
    assert t is not None and "stale_data" in " ".join(values(t)), values(t)


def test_a_missing_segmentation_model_is_an_error_saying_so(processes, peer, tmp_path):
    diag = Diagnostics(peer)
    missing = tmp_path / "no_such_model.onnx"
    processes.start("vessel_segmentation", "--ros-args", "-p", f"model_path:={missing}")
    name = "needle_nav: vessel_segmentation service"
    s = diag.wait_level(peer, name, {ERROR}, 30, "with the model missing")
    assert "model not loaded" in s.message, s.message
    v = values(s)
    assert v["model loaded"] == "false" and v["model"] == str(missing), v
    assert v["queue depth"] == "0"


def test_the_shipped_segmentation_model_loads_ok(processes, peer):
    diag = Diagnostics(peer)
    processes.start("vessel_segmentation")
    s = diag.wait_level(peer, "needle_nav: vessel_segmentation service", {OK}, 60, "with the shipped model")
    assert values(s)["model loaded"] == "true" and s.message == "OK"


def test_a_healthy_guidance_stack_is_ok_and_reports_the_registrations_errors(processes, peer, tmp_path):
    case = tmp_path / "case"
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(case), "--phases", "6",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True)
    diag = Diagnostics(peer)
    regs = []
    peer.create_subscription(LesionRegistration, "/needle_nav/registration", regs.append,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    processes.start("needle_nav_stack", "--ros-args",
                    "-p", "marker_tracker:rate_hz:=100.0", "-p", "marker_tracker:latency_s:=0.0",
                    # No simulated occlusions: a marker hidden for longer than 0.1 s is (rightly) a WARN.
                    "-p", "marker_tracker:occlusion_rate_per_min:=0.0",
                    "-p", "marker_classifier:window_s:=8.0",
                    "-p", "marker_classifier:diagnostics.expected_input_rate_hz:=100.0",
                    "-p", "lesion_registration:diagnostics.expected_input_rate_hz:=100.0",
                    "-p", f"lesion_registration:ct_case_dir:={case}", "-p", f"needle_target:ct_case_dir:={case}",
                    "-p", "needle_target:baseline_s:=8.0", "-p", "needle_target:tracker_rate_hz:=100.0",
                    "-p", "needle_target:robot_latency_s:=0.0", "-p", "needle_target:prediction:=none")
    reg = diag.wait_level(peer, "needle_nav: lesion_registration registration", {OK}, 90, "once registered")
    # The status reports the FRE and predicted TRE the registration message carries.
    wait_until(lambda: regs, 10, peer, "a registration message")
    v = values(reg)
    assert abs(float(v["FRE [m]"]) - regs[-1].fre_rms) < 1e-6, (v, regs[-1].fre_rms)
    assert abs(float(v["predicted TRE [m]"]) - regs[-1].predicted_tre_lesion) < 1e-6
    assert int(v["markers used"]) == len(regs[-1].marker_ids_used)
    base = diag.wait_level(peer, "needle_nav: needle_target baseline", {OK}, 60, "once the baseline is recorded")
    assert values(base)["state"] == "recorded"
    targets = diag.wait_level(peer, "needle_nav: needle_target targets", {OK}, 30, "with valid targets")
    assert float(values(targets)["fault share"]) <= 0.2
    for name in ("marker_tracker output", "marker_classifier inputs", "lesion_registration inputs",
                 "needle_target inputs"):
        s = diag.latest(f"needle_nav: {name}")
        assert s.level == OK, s
    assert diag.latest("needle_nav: marker_classifier classification").level == OK


def test_thresholds_set_at_run_time_grade_the_next_report(processes, peer):
    """diagnostics.* are run-time parameters on every node, read-only ones included: a set through
    the parameter service (as `ros2 param set`) must change the level of the next report, here on
    marker_tracker, whose other parameters are all read-only."""
    from test_parameters import Client

    diag = Diagnostics(peer)
    processes.start("marker_tracker")
    name = "needle_nav: marker_tracker output"
    diag.wait_level(peer, name, {OK}, 30, "with the shipped thresholds")
    client = Client(peer, "marker_tracker")
    # No output is ever 0 s old when the report is made: a 0 s age limit must turn it WARN.
    [result] = client.set(diagnostics__output__max_age_warn_s=0.0)
    assert result.successful, result.reason
    status = diag.wait_level(peer, name, {WARN}, 5, "after max_age_warn_s := 0")
    assert "age" in status.message or "old" in status.message, status.message
    [result] = client.set(diagnostics__output__max_age_warn_s=0.1)
    assert result.successful, result.reason
    diag.wait_level(peer, name, {OK}, 5, "after max_age_warn_s := 0.1 again")
    # A read-only parameter of the same node is still refused.
    [refused] = client.set(rate_hz=100.0)
    assert not refused.successful and "read-only" in refused.reason, refused.reason
