"""rosbag2 bags written by needle_nav, read with the independent PyPI `rosbags` library, and the
regression replays of the committed bags in tests/bags/ (scripts/record-regression-bags.sh).

The replay runs the guidance nodes on simulated time from the bag (/clock) at 2x and 8x the
recorded speed, in lockstep with needle_target, and records what they publish; the targets must
match those recorded live, with the machine idle and with both cores busy, and their error against
the simulator truth in the bag must stay what it was.

metadata.yaml is checked against the MCAP file (the authority), whose contents rosbags' own MCAP
reader gives independently; a bag whose metadata disagrees is refused by bag-info and by --play.
"""
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from conftest import ROOT, executable

import rclpy  # noqa: E402  (after conftest set the domain)

BAGS = ROOT / "tests" / "bags"
SEPARATOR = "=" * 80 + "\n"
def current(type_name):
    """The committed bags predate the needle_nav_msgs package: their types are needle_nav/msg/*."""
    return type_name.replace("needle_nav/msg/", "needle_nav_msgs/msg/")


EXPECTED_TYPES = {
    "/needle_nav/markers": "needle_nav_msgs/msg/TrackedMarkerArray",
    "/needle_nav/debug/ground_truth": "needle_nav_msgs/msg/PhantomGroundTruth",
    "/needle_nav/marker_classification": "needle_nav_msgs/msg/MarkerClassification",
    "/needle_nav/registration": "needle_nav_msgs/msg/LesionRegistration",
    "/needle_nav/target": "needle_nav_msgs/msg/NeedleTarget",
    "/needle_nav/viz/markers": "visualization_msgs/msg/MarkerArray",
    "/needle_nav/viz/marker_classes": "visualization_msgs/msg/MarkerArray",
}


def ns(stamp):
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def read(bag, topics=None):
    """Connections and deserialised messages, with types registered from the bag's own schemas."""
    store = get_typestore(Stores.EMPTY)
    messages = []
    with Reader(bag) as reader:
        for c in reader.connections:
            # rosbag2's ros2msg schema: the type's .msg text, then "MSG: pkg/Type" sections.
            parts = c.msgdef.data.split(SEPARATOR)
            types = dict(get_types_from_msg(parts[0], c.msgtype))
            for part in parts[1:]:
                head, _, body = part.partition("\n")
                parts_of_name = head.removeprefix("MSG: ").strip().split("/")  # pkg/Type or pkg/msg/Type
                pkg, name = parts_of_name[0], parts_of_name[-1]
                types.update(get_types_from_msg(body, f"{pkg}/msg/{name}"))
            store.register(types)
        for c, t, raw in reader.messages():
            if topics is None or c.topic in topics:
                messages.append((c.topic, t, store.deserialize_cdr(raw, c.msgtype)))
        info = SimpleNamespace(message_count=reader.message_count, start_time=reader.start_time,
                               end_time=reader.end_time)
        return info, list(reader.connections), messages


@pytest.mark.parametrize("name", ["digital_patient", "extmarker_trace"])
def test_committed_bags_read_back_with_rosbags(name):
    bag = BAGS / name
    reader, connections, messages = read(bag)
    assert reader.message_count == len(messages) > 1000
    by_topic = {c.topic: c for c in connections}
    assert set(by_topic) == {
        "/needle_nav/markers", "/needle_nav/debug/ground_truth", "/needle_nav/marker_classification",
        "/needle_nav/registration", "/needle_nav/target"}
    for topic, c in by_topic.items():
        assert current(c.msgtype) == EXPECTED_TYPES[topic]
        assert c.msgcount == sum(1 for m in messages if m[0] == topic), topic
    # QoS as offered: the tracker stream is best effort, the registration latched.
    assert by_topic["/needle_nav/markers"].ext.offered_qos_profiles[0].reliability.name == "BEST_EFFORT"
    assert by_topic["/needle_nav/registration"].ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
    times = [t for _, t, _ in messages]
    assert times == sorted(times)
    assert reader.start_time == times[0] and reader.end_time == times[-1] + 1  # rosbags: end is exclusive
    markers = [m for topic, _, m in messages if topic == "/needle_nav/markers"]
    assert all(len(m.markers) == 12 and m.header.frame_id == "tracker" for m in markers)
    # 25 Hz for 36 s, stamped at acquisition; received (logged) within a few ms of the stamp.
    stamps = np.array([ns(m.header.stamp) for m in markers])
    assert 0.035 < np.median(np.diff(stamps)) * 1e-9 < 0.045
    logged = np.array([t for topic, t, _ in messages if topic == "/needle_nav/markers"])
    assert np.all(logged >= stamps) and np.median(logged - stamps) < 50e6


def test_a_live_recording_reads_back_with_rosbags():
    bag = Path(tempfile.mkdtemp(prefix="nn_live_bag_")) / "live"
    out = subprocess.run(
        [executable("needle_nav_stack"), "--only", "marker_tracker,marker_classifier", "--run-for", "6",
         "--record", str(bag)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    reader, connections, messages = read(bag)
    counts = {c.topic: c.msgcount for c in connections}
    # Every published topic is in the bag (with its type), even those that stayed silent.
    for topic, msgtype in EXPECTED_TYPES.items():
        assert any(c.topic == topic and c.msgtype == msgtype for c in connections), topic
    # 250 Hz tracker for ~6 s (minus start-up), latched classification after its 10 s window: none yet.
    assert 800 < counts["/needle_nav/markers"] <= 6 * 250 + 10
    # One truth per sample; both best effort, so allow a loss of a few under load.
    assert abs(counts["/needle_nav/debug/ground_truth"] - counts["/needle_nav/markers"]) <= 0.02 * counts["/needle_nav/markers"]
    first = next(m for topic, _, m in messages if topic == "/needle_nav/markers")
    assert len(first.markers) == 12
    assert reader.message_count == len(messages) == sum(counts.values())


@pytest.fixture(scope="module")
def planning_case():
    """The digital patient the bags were recorded with, regenerated from its seed."""
    case = Path(tempfile.mkdtemp(prefix="nn_bag_case_")) / "case"
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(case), "--phases", "6",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True, timeout=120)
    return case


def targets(messages):
    return {ns(m.source_stamp): np.array([m.target_point.x, m.target_point.y, m.target_point.z])
            for topic, _, m in messages if topic == "/needle_nav/target" and m.valid}


def due_times(messages):
    """When each valid target is for: its sample's stamp plus its prediction horizon [ns]."""
    return {ns(m.source_stamp): ns(m.source_stamp) + round(m.prediction_horizon * 1e9)
            for topic, _, m in messages if topic == "/needle_nav/target" and m.valid}


def truth_at(truth, times):
    """The true lesion at `times` [ns], linearly interpolated between the truth samples."""
    stamps = np.array(sorted(truth))
    values = np.array([truth[k] for k in stamps])
    times = np.asarray(times, dtype=np.int64)
    assert times.min() >= stamps[0] and times.max() <= stamps[-1]
    return np.stack([np.interp(times - stamps[0], stamps - stamps[0], values[:, a]) for a in range(3)], axis=1)


@contextmanager
def busy_loops(count):
    """`count` processes that each keep one core busy, for as long as the block runs."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for p in loops:
            p.kill()
            p.wait()


def replay(recorded, case, rate, lockstep=True):
    replayed = Path(tempfile.mkdtemp(prefix="nn_replay_")) / recorded.name
    out = subprocess.run(
        [executable("needle_nav_stack"), "--only", "marker_classifier,lesion_registration,needle_target",
         "--play", str(recorded), "--topics", "needle_nav/markers", "--clock", "--rate", str(rate),
         *(["--lockstep"] if lockstep else []),
         "--record", str(replayed), "--record-topics", "needle_nav/target,needle_nav/registration",
         "--ros-args", "-p", "use_sim_time:=true",
         "-p", f"lesion_registration:ct_case_dir:={case}", "-p", f"needle_target:ct_case_dir:={case}",
         "-p", "needle_target:baseline_s:=10.0", "-p", "needle_target:tracker_rate_hz:=25.0"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return read(replayed)[2]


def check_replay(live, again, rate, lockstep):
    """The replayed targets against the live ones and against the simulator's truth in the bag."""
    expected = targets(live)
    assert len(expected) > 300, "the recording has too few valid targets to compare"
    truth = {ns(m.header.stamp): np.array([m.lesion_position.x, m.lesion_position.y, m.lesion_position.z])
             for topic, _, m in live if topic == "/needle_nav/debug/ground_truth"}
    got = targets(again)
    common = sorted(set(expected) & set(got))
    if lockstep:
        # Lossless: needle_target answered every tracker sample of the bag, once each.
        samples = {ns(m.header.stamp) for topic, _, m in live if topic == "/needle_nav/markers"}
        answered = [ns(m.source_stamp) for topic, _, m in again if topic == "/needle_nav/target"]
        assert samples <= set(answered), (rate, len(samples - set(answered)), "samples without an answer")
        # Every live target comes again (the baseline's start may move by a sample, see docs/bags.md, "Deterministic replay").
        assert len(common) >= len(expected) - 3, (rate, len(common), len(expected), len(got))
    else:
        # The targets of the live run come again, for the same tracker samples ...
        assert len(common) >= 0.95 * len(expected), (rate, len(common), len(expected), len(got))
    assert len(got) <= len(expected) + 10
    # ... at the same place: classification, registration and baseline run on tracker time, so the
    # replay repeats the live run at any rate. Identical in 8 of 10 measured replays; in two, messages
    # between nodes crossed samples in another order and the baseline moved by a sample: 0.04 mm RMS,
    # 0.18 mm at most. (Before the prediction and rate were warmed up from the baseline, such a shift
    # gave 3.9 mm on the first targets; the bound on the largest difference catches that.)
    diff = np.array([np.linalg.norm(expected[k] - got[k]) for k in common])
    assert np.sqrt(np.mean(diff ** 2)) < 0.2e-3 and diff.max() < 1e-3, (rate, np.sqrt(np.mean(diff ** 2)), diff.max())
    # Against the simulator's truth in the bag, at the time each target is for (its sample plus the
    # 150 ms prediction horizon): the corrected target stays about 1 mm from the lesion while breathing
    # moves the lesion by several mm, and no valid target is far off (before the rate and prediction
    # were guarded, single targets after an occlusion were 20 mm off).
    due = due_times(again)
    keys = [k for k in sorted(got) if due[k] <= max(truth)]
    assert len(keys) >= 0.95 * len(got) and all(due[k] - k == 150_000_000 for k in keys)
    true_lesion = truth_at(truth, [due[k] for k in keys])
    errors = np.linalg.norm(np.array([got[k] for k in keys]) - true_lesion, axis=1)
    rms = np.sqrt(np.mean(errors ** 2))
    registration = next(m for topic, _, m in reversed(again) if topic == "/needle_nav/registration")
    lesion = np.array([registration.lesion_position.x, registration.lesion_position.y,
                       registration.lesion_position.z])
    uncorrected = np.sqrt(np.mean(np.linalg.norm(true_lesion - lesion, axis=1) ** 2))
    assert rms < 1.5e-3 and uncorrected > 3 * rms and errors.max() < 5e-3, (rate, rms, uncorrected, errors.max())


@pytest.mark.parametrize("busy", [0, 2], ids=["idle", "both_cores_busy"])
@pytest.mark.parametrize("name", ["digital_patient", "extmarker_trace"])
def test_replaying_a_bag_reproduces_its_targets(name, busy, planning_case):
    """Lockstep replay at 2x and 8x, on an idle machine and with two busy loops taking both cores
    (without lockstep the latter reproduced 226 of 393 live targets at 8x)."""
    recorded = BAGS / name
    _, _, live = read(recorded)
    with busy_loops(busy):
        for rate in (2, 8):
            check_replay(live, replay(recorded, planning_case, rate), rate, lockstep=True)


def test_replay_without_lockstep_still_follows_the_recorded_schedule(planning_case):
    """--play without --lockstep (launch files, other executables) keeps working on an idle machine."""
    recorded = BAGS / "digital_patient"
    _, _, live = read(recorded)
    started = time.monotonic()
    again = replay(recorded, planning_case, 4, lockstep=False)
    # 36 s of bag at 4x: the schedule, not the nodes, sets the pace.
    assert time.monotonic() - started > 36 / 4
    check_replay(live, again, 4, lockstep=False)


def test_lockstep_without_needle_target_stops_with_an_error():
    """A lockstep replay with nobody to answer reports it and exits 1 instead of hanging."""
    started = time.monotonic()
    out = subprocess.run([executable("needle_nav_stack"), "--only", "none", "--play", str(BAGS / "digital_patient"),
                          "--topics", "needle_nav/markers", "--lockstep", "--linger", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "nothing heard from needle_target on needle_nav/target within 30 s" in out.stderr, out.stderr[-2000:]
    assert time.monotonic() - started < 60


def mcap_view(bag):
    """The bag's MCAP file as rosbags' own MCAP reader sees it (channel, schema and statistics
    records), without metadata.yaml: topic -> (type, count, serialization format), and the times."""
    (path,) = Path(bag).glob("*.mcap")
    reader = McapReader(path)
    reader.open()
    try:
        topics = {c.topic: (c.msgtype, c.msgcount, c.ext.serialization_format) for c in reader.connections}
        return topics, reader.metadata
    finally:
        reader.close()


def bag_info(bag):
    out = subprocess.run([executable("needle_nav"), "bag-info", "--json", str(bag)],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout), out


def assert_bag_info_is_the_mcap(summary, bag):
    topics, meta = mcap_view(bag)
    assert {t["name"]: (t["type_name"], t["messages"], "cdr") for t in summary["topics"]} == topics
    assert summary["messages"] == meta.message_count
    # rosbags: end time exclusive.
    assert (summary["start_ns"], summary["end_ns"] + 1) == (meta.start_time, meta.end_time)


@pytest.mark.parametrize("name", ["digital_patient", "extmarker_trace"])
def test_bag_info_reports_what_rosbags_reads_in_the_mcap_file(name):
    code, summary, out = bag_info(BAGS / name)
    assert code == 0 and summary["problems"] == [], out.stdout
    assert_bag_info_is_the_mcap(summary, BAGS / name)
    for t in summary["topics"]:
        assert current(t["metadata_type_name"]) == current(t["type_name"]) == EXPECTED_TYPES[t["name"]], t
        assert t["metadata_messages"] == t["messages"], t


def markers_entry(info):
    return next(t for t in info["topics_with_message_count"] if t["topic_metadata"]["name"] == "/needle_nav/markers")


def remove_registration(info):
    info["topics_with_message_count"] = [t for t in info["topics_with_message_count"]
                                         if t["topic_metadata"]["name"] != "/needle_nav/registration"]


def add_pose_topic(info):
    entry = json.loads(json.dumps(markers_entry(info)))
    entry["topic_metadata"].update(name="/needle_nav/target_pose", type="geometry_msgs/msg/PoseStamped")
    entry["message_count"] = 0
    info["topics_with_message_count"].append(entry)


# Each edit of the committed digital_patient metadata.yaml, and the problem it must be named as.
# (The bag: 2718 messages from 1795267668025587764 ns over 35955921964 ns; 900 tracker samples.)
METADATA_EDITS = {
    "topic_count": (lambda i: markers_entry(i).update(message_count=901),
                    "/needle_nav/markers: metadata.yaml says 901 messages, the MCAP file has 900"),
    "total_count": (lambda i: i.update(message_count=2717),
                    "metadata.yaml says message_count 2717, the MCAP file has 2718 messages"),
    "start_time": (lambda i: i["starting_time"].update(nanoseconds_since_epoch=1795267668025587764 - 10**9),
                   "metadata.yaml says starting_time 1795267667025587764 ns, the first message in the MCAP file is "
                   "at 1795267668025587764 ns"),
    "duration": (lambda i: i["duration"].update(nanoseconds=35955921964 + 1),
                 "metadata.yaml says duration 35955921965 ns, the messages in the MCAP file span 35955921964 ns"),
    "topic_type": (lambda i: markers_entry(i)["topic_metadata"].update(type="needle_nav_msgs/msg/NeedleTarget"),
                   "/needle_nav/markers: metadata.yaml says type needle_nav_msgs/msg/NeedleTarget, the MCAP schema says "
                   "needle_nav/msg/TrackedMarkerArray"),
    "serialization_format": (lambda i: markers_entry(i)["topic_metadata"].update(serialization_format="cbor"),
                             "/needle_nav/markers: metadata.yaml says serialization_format cbor, the MCAP channel's "
                             "message encoding is cdr"),
    "topic_missing_in_metadata": (remove_registration,
                                  "/needle_nav/registration: the MCAP file has this topic (17 messages), "
                                  "metadata.yaml does not list it"),
    "topic_missing_in_mcap": (add_pose_topic,
                              "/needle_nav/target_pose: listed in metadata.yaml, but the MCAP file has no channel for it"),
}


@pytest.mark.parametrize("edit", list(METADATA_EDITS))
def test_a_metadata_yaml_that_disagrees_with_the_mcap_file_is_refused(edit, peer):
    change, problem = METADATA_EDITS[edit]
    bag = Path(tempfile.mkdtemp(prefix="nn_bad_meta_")) / "digital_patient"
    shutil.copytree(BAGS / "digital_patient", bag)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    change(meta["rosbag2_bagfile_information"])
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    # bag-info: exit 1, exactly this problem named, and what it reports is still the MCAP file's view.
    code, summary, out = bag_info(bag)
    assert code == 1 and summary["problems"] == [problem], out.stdout
    assert_bag_info_is_the_mcap(summary, bag)
    # --play refuses the bag, naming the problem, and publishes nothing; a subscriber of the type the
    # metadata names (the wrong one in `topic_type`) receives nothing (before the fix: 507 messages).
    from needle_nav_msgs.msg import NeedleTarget, TrackedMarkerArray
    received = []
    from rclpy.qos import qos_profile_sensor_data
    wrong_or_right = NeedleTarget if edit == "topic_type" else TrackedMarkerArray
    # raw: count what arrives without decoding it (wrong-type bytes may not decode at all).
    subs = [peer.create_subscription(wrong_or_right, "/needle_nav/markers", received.append, qos_profile_sensor_data,
                                     raw=True)]
    proc = subprocess.Popen([executable("needle_nav_stack"), "--only", "none", "--play", str(bag), "--rate", "20",
                             "--linger", "0.5", "--run-for", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        rclpy.spin_once(peer, timeout_sec=0.05)
    stderr = proc.stderr.read()
    for s in subs:
        peer.destroy_subscription(s)
    assert proc.returncode == 1, stderr[-2000:]
    assert "disagrees with the MCAP file" in stderr and problem in stderr, stderr[-2000:]
    assert received == []
