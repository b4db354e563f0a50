"""Reliability of the running stack against a hostile but fair user (issue 11): a closed or full
log pipe, malformed tracker messages injected next to a live tracker, and a needle_target killed
with SIGKILL and restarted. rclpy is the independent observer and the source of the bad messages."""
import fcntl
import json
import math
import os
import signal
import subprocess
import time

import pytest
from conftest import executable, wait_until
from needle_nav_msgs.msg import LesionRegistration, MarkerClassification, NeedleTarget, TrackedMarker, TrackedMarkerArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_ns(t):
    return t.sec * 1_000_000_000 + t.nanosec


def spin_for(peer, seconds):
    import rclpy
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(peer, timeout_sec=0.01)


@pytest.fixture
def case(tmp_path):
    out = tmp_path / "case"
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(out), "--phases", "6",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True)
    return out


def guidance_args(case, rate=100.0):
    return ["-p", f"marker_tracker:rate_hz:={rate}", "-p", "marker_classifier:window_s:=8.0",
            "-p", f"lesion_registration:ct_case_dir:={case}", "-p", f"needle_target:ct_case_dir:={case}",
            "-p", "needle_target:baseline_s:=8.0", "-p", f"needle_target:tracker_rate_hz:={rate}",
            "-p", "marker_tracker:occlusion_rate_per_min:=0.0", "-p", "marker_tracker:dropout_probability:=0.0"]


def test_a_closed_log_pipe_neither_stops_guidance_nor_the_process(peer):
    """Regression: `needle_nav_stack 2>&1 | head -n 5` ended with exit 101 ("failed printing to
    stderr: Broken pipe"), or targets stopped and the process ignored --run-for and SIGTERM."""
    targets = []
    peer.create_subscription(NeedleTarget, "/needle_nav/target", targets.append, RELIABLE)
    p = subprocess.Popen([executable("needle_nav_stack"), "--run-for", "12", "--only", "marker_tracker,needle_target",
                          "--ros-args", "-p", "marker_tracker:rate_hz:=100.0", "-p", "needle_target:tracker_rate_hz:=100.0"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="debug"))
    try:
        for _ in range(5):  # what `head -n 5` reads, then it exits
            p.stdout.readline()
        p.stdout.close()
        wait_until(lambda: len(targets) > 0, 30, peer, "targets")
        # Targets keep coming (before: none 1.7 s after the pipe closed). The bound leaves room for a
        # busy machine; the count stopping is what fails it.
        for second in range(4):
            before = len(targets)
            spin_for(peer, 1.0)
            assert p.poll() is None, f"the stack died when its log pipe closed: exit {p.returncode}"
            assert len(targets) - before >= 30, f"{len(targets) - before} targets in second {second} at 100 Hz"
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_full_log_pipe_neither_blocks_guidance_nor_the_stop(peer):
    """A log pipe nobody reads (4 KiB, the smallest Linux allows: the start-up configuration lines
    alone fill it): targets keep coming and SIGTERM still stops the process."""
    targets = []
    peer.create_subscription(NeedleTarget, "/needle_nav/target", targets.append, RELIABLE)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    p = subprocess.Popen([executable("needle_nav_stack"), "--only", "marker_tracker,marker_classifier,needle_target",
                          "--ros-args", "-p", "marker_tracker:rate_hz:=100.0", "-p", "needle_target:tracker_rate_hz:=100.0"],
                         stdout=write_end, stderr=write_end, env=dict(os.environ, RUST_LOG="debug"))
    os.close(write_end)
    try:
        wait_until(lambda: len(targets) >= 300, 30, peer, "300 targets with the log pipe full")
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=20)
        assert code in (0, 1), f"exit {code}"  # 1 only if the orderly shutdown had to be cut short
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(read_end)


def test_malformed_tracker_samples_are_refused_one_by_one(processes, peer, case):
    """Regression: one malformed message (10 000 markers, duplicate ids, a stamp in 2100 or 1970,
    a coordinate of 1e200, every marker shifted 2 cm) reset the classification and cost 10-24 s of
    guidance. Each is now answered as invalid input naming the problem, the classification and
    registration stay as they were, and the next good sample gives a valid target again."""
    targets, classes, regs, live = [], [], [], []
    peer.create_subscription(NeedleTarget, "/needle_nav/target", targets.append, RELIABLE)
    peer.create_subscription(MarkerClassification, "/needle_nav/marker_classification", classes.append, LATCHED)
    peer.create_subscription(LesionRegistration, "/needle_nav/registration", regs.append, LATCHED)
    peer.create_subscription(TrackedMarkerArray, "/needle_nav/markers", live.append, qos_profile_sensor_data)
    inject = peer.create_publisher(TrackedMarkerArray, "/needle_nav/markers", qos_profile_sensor_data)
    processes.start("needle_nav_stack", "--only", "marker_tracker,marker_classifier,lesion_registration,needle_target",
                    "--ros-args", *guidance_args(case), "-p", "needle_target:prediction:=none")
    wait_until(lambda: sum(t.valid for t in targets[-50:]) >= 45, 90, peer, "steady valid targets")
    n_classes, n_regs = len(classes), len(regs)

    def now_ns():
        return peer.get_clock().now().nanoseconds

    def copy(m, stamp=None, shift=0.0):
        out = TrackedMarkerArray()
        out.header.frame_id = m.header.frame_id
        s = now_ns() if stamp is None else stamp
        out.header.stamp.sec, out.header.stamp.nanosec = s // 1_000_000_000, s % 1_000_000_000
        out.sequence = m.sequence
        for k in m.markers:
            c = TrackedMarker(id=k.id, visible=k.visible, quality=k.quality)
            c.position.x, c.position.y, c.position.z = k.position.x + shift, k.position.y, k.position.z
            out.markers.append(c)
        return out

    def many(m):
        out = copy(m)
        out.markers = [TrackedMarker(id=i, visible=True) for i in range(10_000)]
        return out

    def duplicate(m):
        out = copy(m)
        d = TrackedMarker(id=out.markers[0].id, visible=True)
        d.position.x, d.position.y, d.position.z = (out.markers[0].position.x + 0.05, out.markers[0].position.y,
                                                    out.markers[0].position.z)
        out.markers.append(d)
        return out

    def far(m):
        out = copy(m)
        out.markers[3].position.z = 1e200
        return out

    attacks = [
        ("10 000 markers", many, "markers in one sample"),
        ("duplicate ids 5 cm apart", duplicate, "duplicate marker ids"),
        # builtin_interfaces/Time holds seconds as int32: 2036 is as far ahead as a stamp can say.
        ("stamp in 2036", lambda m: copy(m, stamp=2_100_000_000 * 1_000_000_000), "from the node's clock"),
        ("stamp in 1970", lambda m: copy(m, stamp=1_000_000_000), "from the node's clock"),
        ("a coordinate of 1e200", far, "from the tracker origin"),
        ("all markers shifted 2 cm", lambda m: copy(m, shift=0.02), "jumped at once"),
    ]
    for name, make, says in attacks:
        for _ in range(2):  # the hostile test sent each twice
            bad = make(live[-1])
            inject.publish(bad)
            key = stamp_ns(bad.header.stamp)
            wait_until(lambda: any(stamp_ns(t.source_stamp) == key for t in targets), 10, peer, f"answer to {name}")
            answer = next(t for t in targets if stamp_ns(t.source_stamp) == key)
            assert not answer.valid and answer.reason_code == NeedleTarget.REASON_INVALID_INPUT, (name, answer.reason)
            assert says in answer.reason, (name, answer.reason)
            spin_for(peer, 0.05)
        # Guidance goes on: the tracker's own samples after the attack give valid targets at once.
        seen = len(targets)
        spin_for(peer, 0.5)
        after = [t for t in targets[seen:] if t.reason_code != NeedleTarget.REASON_INVALID_INPUT]
        assert len(after) >= 30 and all(t.valid for t in after[2:]), \
            (name, [(t.valid, t.reason) for t in after[:10]])

    # A second of every marker shifted 2 cm, interleaved with the live tracker: each refused.
    shifted_keys = set()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        bad = copy(live[-1], shift=0.02)
        shifted_keys.add(stamp_ns(bad.header.stamp))
        inject.publish(bad)
        spin_for(peer, 0.01)
    spin_for(peer, 0.5)
    answered = [t for t in targets if stamp_ns(t.source_stamp) in shifted_keys]
    assert len(answered) >= 0.9 * len(shifted_keys) and not any(t.valid for t in answered)
    assert len(classes) == n_classes, "the marker classification changed under malformed samples"
    assert all(r.status in (LesionRegistration.STATUS_OK, LesionRegistration.STATUS_OUTLIER_EXCLUDED)
               for r in regs[n_regs:]), [r.status_message for r in regs[n_regs:]]
    recent = [t for t in targets[-50:] if stamp_ns(t.source_stamp) not in shifted_keys]
    assert sum(t.valid for t in recent) >= len(recent) - 2


def test_a_killed_needle_target_resumes_its_breathing_state_within_a_second(processes, peer, case, tmp_path):
    """Regression: after `kill -9` of needle_target the first valid target came 13.5 s later (the
    baseline was recorded again). With `state_file` it resumes; a state file that is not one is
    reported, not used and not overwritten."""
    targets = []
    peer.create_subscription(NeedleTarget, "/needle_nav/target", targets.append, RELIABLE)
    state = tmp_path / "needle_target_state.json"
    processes.start("needle_nav_stack", "--only", "marker_tracker,marker_classifier,lesion_registration",
                    "--ros-args", *guidance_args(case))
    target_args = ["--ros-args", "-p", f"ct_case_dir:={case}", "-p", "baseline_s:=8.0", "-p", "tracker_rate_hz:=100.0",
                   "-p", f"state_file:={state}"]
    first = processes.start("needle_target", *target_args)
    wait_until(lambda: sum(t.valid for t in targets[-50:]) >= 45, 90, peer, "steady valid targets")
    spin_for(peer, 1.5)  # at least one save after the baseline
    saved = json.loads(state.read_text())
    assert saved["format"] == 1 and saved["baseline"]["marker_ids"] == saved["correction_ids"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    spin_for(peer, 1.0)
    seen = len(targets)
    second = processes.start("needle_target", *target_args)
    wait_until(lambda: any(t.valid for t in targets[seen:]), 30, peer, "a valid target after the restart")
    after = targets[seen:]
    # From the first live sample the restarted node judged with the (latched, unchanged) registration
    # (samples queued while it loaded the planning case are answered as stale first).
    waiting = (NeedleTarget.REASON_STARTING, NeedleTarget.REASON_NO_REGISTRATION, NeedleTarget.REASON_STALE_DATA)
    t_first = stamp_ns(next(t for t in after if t.reason_code not in waiting).source_stamp)
    t_valid = stamp_ns(next(t for t in after if t.valid).source_stamp)
    assert (t_valid - t_first) * 1e-9 <= 1.0, \
        f"first valid target {(t_valid - t_first) * 1e-9:.2f} s after restart:\n{open(second.log_path).read()[-4000:]}"

    # A file that is not a saved state: reported, not used, left as it was.
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is the user's file\n")
    p = processes.start("needle_target", "--ros-args", "-p", f"ct_case_dir:={case}", "-p", "tracker_rate_hz:=100.0",
                        "-p", f"state_file:={garbage}", "-r", "__node:=needle_target_garbage")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "not a saved breathing state" not in open(p.log_path).read():
        spin_for(peer, 0.2)
    assert "not a saved breathing state" in open(p.log_path).read()
    assert garbage.read_text() == "this is the user's file\n"
