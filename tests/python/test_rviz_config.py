"""config/needle_nav.rviz must agree with the system's own interface table (crates/needle_nav_core/src/interfaces.rs,
printed as JSON by `needle_nav interfaces`): every topic display names a published topic of the
right type, with a QoS that can match the publisher, and every MarkerArray topic has a display.

rviz2 itself is not needed: the file is plain YAML. The interface table comes from the built
CLI (NEEDLE_NAV_BIN_DIR, else target/release, else target/debug); without it the tests that
need the table are skipped."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RVIZ = ROOT / "config" / "needle_nav.rviz"

# rviz2 display class -> the message type it subscribes to.
DISPLAY_TYPES = {
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Marker": "visualization_msgs/msg/Marker",
    "rviz_default_plugins/Pose": "geometry_msgs/msg/PoseStamped",
    "rviz_default_plugins/PoseArray": "geometry_msgs/msg/PoseArray",
    "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2",
    "rviz_default_plugins/Path": "nav_msgs/msg/Path",
}

# QoS kinds of crates/needle_nav_core/src/interfaces.rs -> (reliable, transient_local) offered by the publisher.
OFFERED = {
    "sensor_data": (False, False),
    "latched_state": (True, True),
    "reliable_stream": (True, False),
}


def find_cli():
    candidates = []
    if os.environ.get("NEEDLE_NAV_BIN_DIR"):
        candidates.append(Path(os.environ["NEEDLE_NAV_BIN_DIR"]) / "needle_nav")
    candidates += [ROOT / "target" / "release" / "needle_nav", ROOT / "target" / "debug" / "needle_nav"]
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="module")
def rviz():
    with open(RVIZ) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def published():
    """Topic (absolute name) -> {"type", "qos", "nodes"} for every topic some node publishes."""
    cli = find_cli()
    if cli is None:
        pytest.skip("needle_nav CLI not built (looked in $NEEDLE_NAV_BIN_DIR, target/release, target/debug): "
                    "build it to check the rviz config against the interface table")
    out = subprocess.run([str(cli), "interfaces"], check=True, capture_output=True, text=True, timeout=60)
    table = json.loads(out.stdout)
    topics = {}
    for node in table["nodes"]:
        for ep in node["endpoints"]:
            if ep["direction"] != "publishes":
                continue
            name = "/" + ep["name"].lstrip("/")
            entry = topics.setdefault(name, {"type": ep["type"], "qos": ep["qos"], "nodes": []})
            assert (entry["type"], entry["qos"]) == (ep["type"], ep["qos"]), f"{name} declared inconsistently"
            entry["nodes"].append(node["node"])
    assert topics, "the interface table lists no published topic"
    return topics


def displays(rviz):
    return rviz["Visualization Manager"]["Displays"]


def topic_displays(rviz):
    """(display, Topic block) for every display that subscribes to a topic."""
    return [(d, d["Topic"]) for d in displays(rviz) if isinstance(d.get("Topic"), dict) and "Value" in d["Topic"]]


def test_file_is_an_rviz2_config_with_the_tracker_fixed_frame(rviz):
    assert isinstance(rviz, dict)
    vm = rviz["Visualization Manager"]
    assert vm["Class"] == ""
    assert isinstance(vm["Displays"], list) and vm["Displays"]
    assert vm["Global Options"]["Fixed Frame"] == "tracker"
    assert vm["Views"]["Current"]["Class"] == "rviz_default_plugins/Orbit"
    for key in ("Panels", "Window Geometry"):
        assert key in rviz, key
    for d in vm["Displays"]:
        assert d["Class"].startswith("rviz_default_plugins/"), d["Class"]
        assert d.get("Name"), d
    names = [d["Name"] for d in vm["Displays"]]
    assert len(names) == len(set(names)), f"display names repeat: {names}"
    tf = [d for d in vm["Displays"] if d["Class"] == "rviz_default_plugins/TF"]
    assert tf and {"tracker", "ct", "needle_target"} <= set(tf[0]["Frames"]), "TF display must list the frames"
    assert topic_displays(rviz), "no topic display"


def test_every_topic_display_names_a_published_topic_of_its_type(rviz, published):
    for d, topic in topic_displays(rviz):
        name = topic["Value"]
        assert name in published, (f"display {d['Name']!r} subscribes to {name}, which no node publishes "
                                   f"(published: {sorted(published)})")
        assert d["Class"] in DISPLAY_TYPES, f"display {d['Name']!r}: unknown topic display class {d['Class']}"
        assert DISPLAY_TYPES[d["Class"]] == published[name]["type"], (
            f"display {d['Name']!r} ({d['Class']}) on {name}, which carries {published[name]['type']}")


def test_every_topic_display_qos_matches_its_publisher(rviz, published):
    for d, topic in topic_displays(rviz):
        name = topic["Value"]
        if name not in published:
            continue  # reported by the test above
        offered_reliable, offered_latched = OFFERED[published[name]["qos"]]
        reliability, durability = topic["Reliability Policy"], topic["Durability Policy"]
        assert reliability in ("Reliable", "Best Effort"), f"{d['Name']!r}: Reliability Policy {reliability!r}"
        assert durability in ("Volatile", "Transient Local"), f"{d['Name']!r}: Durability Policy {durability!r}"
        assert topic["History Policy"] == "Keep Last" and int(topic["Depth"]) >= 1, d["Name"]
        # Incompatible requests: rviz would silently receive nothing.
        if reliability == "Reliable":
            assert offered_reliable, (f"display {d['Name']!r} asks for Reliable on {name}, "
                                      f"but the publisher is {published[name]['qos']} (best effort)")
        if durability == "Transient Local":
            assert offered_latched, (f"display {d['Name']!r} asks for Transient Local on {name}, "
                                     f"but the publisher is {published[name]['qos']} (volatile)")
        # Compatible but useless: a volatile subscription to latched state misses what was
        # published before rviz started (the plan is published once).
        if offered_latched:
            assert durability == "Transient Local", (f"display {d['Name']!r}: {name} is latched; subscribe with "
                                                     f"Transient Local so a late rviz still gets it")


def test_every_marker_array_topic_has_a_display(rviz, published):
    shown = {topic["Value"] for d, topic in topic_displays(rviz) if d["Class"] == "rviz_default_plugins/MarkerArray"}
    marker_topics = {n for n, e in published.items() if e["type"] == "visualization_msgs/msg/MarkerArray"}
    assert marker_topics, "the interface table lists no MarkerArray topic"
    missing = sorted(marker_topics - shown)
    assert not missing, f"MarkerArray topics without an rviz display: {missing}"
