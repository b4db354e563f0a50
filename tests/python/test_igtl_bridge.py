"""igtl_bridge against independent OpenIGTLink peers: pyigtl (the SlicerIGT team's Python
implementation) plays the PLUS Server that sends tracker data and the 3D Slicer that receives
the target, the registration, the plan and the label map; the OpenIGTLink reference C++ library
(tests/peers/igtl_peer.cpp, compiled here with g++) sends TDATA and receives STATUS, which pyigtl
has not. Raw sockets send what no peer would: garbage, an oversized size, a bad CRC, an unknown type.
Every port is picked free at run time."""
import json
import math
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, wait_until

pyigtl = pytest.importorskip("pyigtl")
from pyigtl.messages import CRC64  # noqa: E402  (pyigtl's own CRC-64, the one Slicer checks)
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from needle_nav_msgs.msg import LesionRegistration, NeedlePathCandidate, NeedlePlan, NeedleTarget, TrackedMarkerArray  # noqa: E402

SENSOR = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.BEST_EFFORT, durability=QoSDurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE)

DEVICES = ["Marker1ToTracker", "Marker2ToTracker", "Marker3ToTracker", "Marker4ToTracker", "Marker5ToTracker"]
IDS = [11, 12, 13, 14, 15]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_bridge(processes, tmp_path, tracker_port, slicer_port, tracker_mode="client", slicer_mode="client",
                 slicer_enabled=True, extra=""):
    params = tmp_path / "igtl_bridge.yaml"
    params.write_text(f"""igtl_bridge:
  ros__parameters:
    tracker: {{mode: {tracker_mode}, host: 127.0.0.1, port: {tracker_port}}}
    slicer_enabled: {str(slicer_enabled).lower()}
    slicer: {{mode: {slicer_mode}, host: 127.0.0.1, port: {slicer_port}}}
    device_names: [{", ".join(DEVICES)}]
    marker_ids: [{", ".join(map(str, IDS))}]
    backoff_initial_s: 0.1
    backoff_max_s: 0.4
    device_timeout_s: 0.15
    max_message_bytes: 65536
    frame_window_s: 0.1
{extra}""")
    return processes.start("igtl_bridge", "--ros-args", "--params-file", str(params))


class Collector:
    def __init__(self, peer, msg_type, topic, qos):
        self.items = []
        self.sub = peer.create_subscription(msg_type, topic, self.items.append, qos)


def stamp_ns(t):
    return t.sec * 1_000_000_000 + t.nanosec


def to_time(ns):
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def igtl_ns(seconds_float):
    """A float timestamp in nanoseconds (the wire's 2^-32 s fraction and the float differ by < 1 us)."""
    return int(round(seconds_float * 1e9))


def sent_frame(stamp, sent, tol_ns=1000):
    """The frame sent with this stamp (sent: {ns: frame}), or None. Frames are >= 10 ms apart."""
    best = min(sent, key=lambda s: abs(s - stamp), default=None)
    return sent[best] if best is not None and abs(best - stamp) <= tol_ns else None


def diagnostics_values(peer, status_suffix, timeout=10):
    got = Collector(peer, DiagnosticArray, "/diagnostics", RELIABLE)

    def find():
        for arr in reversed(got.items):
            for s in arr.status:
                if s.name.endswith(status_suffix):
                    return {kv.key: kv.value for kv in s.values}
        return None
    values = wait_until(find, timeout, peer, f"/diagnostics status {status_suffix}")
    peer.destroy_subscription(got.sub)
    return values


def spin_for(peer, seconds):
    import rclpy
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(peer, timeout_sec=0.02)


def transform(x, y, z):
    m = np.eye(4, dtype=np.float32)
    m[:3, 3] = [x, y, z]
    return m


@pytest.fixture
def plus(request):
    """A pyigtl server playing a PLUS Server on a free port."""
    servers = []

    def start(port):
        s = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
        servers.append(s)
        return s
    yield start
    for s in servers:
        try:
            s.stop()
        except Exception:  # already stopped
            pass


def test_plus_transform_position_and_point_become_markers_with_the_trackers_stamps(processes, peer, tmp_path, plus):
    port = free_port()
    server = plus(port)
    bridge = start_bridge(processes, tmp_path, port, free_port(), slicer_enabled=False)
    markers = Collector(peer, TrackedMarkerArray, "needle_nav/markers", SENSOR)
    wait_until(lambda: server.is_connected(), 15, peer, "the bridge to connect to the PLUS server")

    # The tracker's clock runs 0.3 s behind ours: its stamps, not arrival times, must come out.
    sent = {}
    for k in range(40):
        t = time.time() - 0.3
        sent[igtl_ns(t)] = k
        # Two tools as TRANSFORMs, one as a POSITION in the specification's layout (built here by hand:
        # pyigtl writes its own, wider layout, sent below), all with the frame's timestamp.
        server.send_message(pyigtl.TransformMessage(transform(10.0 + k, -20.5, 30.25), timestamp=t, device_name=DEVICES[0]), wait=False)
        server.send_message(pyigtl.TransformMessage(transform(-40.0, 50.0 + k, 60.0), timestamp=t, device_name=DEVICES[1]), wait=False)
        server.send_message(pyigtl.TransformMessage(transform(1.0, 2.0, 3.0), timestamp=t, device_name="StylusToTracker"), wait=False)
        server.send_message(RawPosition(DEVICES[2], t, (7.5, -8.25, 9.0)), wait=True)
        spin_for(peer, 0.02)
    wait_until(lambda: len(markers.items) >= 30, 10, peer, "marker samples")
    good = [m for m in markers.items if len(m.markers) == 3]
    assert len(good) >= 30, [len(m.markers) for m in markers.items]
    for m in good:
        assert m.header.frame_id == "tracker"
        k = sent_frame(stamp_ns(m.header.stamp), sent)
        assert k is not None, f"stamp {stamp_ns(m.header.stamp)} is not one the tracker sent"
        by_id = {x.id: x for x in m.markers}
        assert sorted(by_id) == [11, 12, 13], "ids from the device map; the unmapped stylus is left out"
        assert all(x.visible for x in m.markers)
        # Millimetres in, metres out.
        assert by_id[11].position.x == pytest.approx((10.0 + k) / 1000, abs=1e-7)
        assert by_id[11].position.y == pytest.approx(-0.0205, abs=1e-7)
        assert by_id[12].position.y == pytest.approx((50.0 + k) / 1000, abs=1e-7)
        assert (by_id[13].position.x, by_id[13].position.y, by_id[13].position.z) == pytest.approx((0.0075, -0.00825, 0.009), abs=1e-7)

    # A POINT list (PLUS's fiducials, or a tracker that sends a frame in one message) and pyigtl's own
    # POSITION layout: whole frames.
    n = len(markers.items)
    t = time.time() - 0.3
    server.send_message(pyigtl.PointMessage(positions=[[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]], names=[DEVICES[3], DEVICES[4]],
                                            timestamp=t, device_name="Fiducials"), wait=True)
    point_sample = wait_until(lambda: next((m for m in markers.items[n:] if sent_frame(stamp_ns(m.header.stamp), {igtl_ns(t): 1})), None),
                              5, peer, "the POINT sample")
    by_id = {x.id: x for x in point_sample.markers}
    assert (by_id[14].position.x, by_id[14].position.y, by_id[14].position.z) == pytest.approx((0.001, 0.002, 0.003), abs=1e-7)
    assert (by_id[15].position.x, by_id[15].position.z) == pytest.approx((-0.004, -0.006), abs=1e-7)
    assert by_id[14].visible and by_id[15].visible
    n = len(markers.items)
    t2 = t + 0.01
    server.send_message(pyigtl.PositionMessage(positions=[[3.0, 2.0, 1.0]], quaternions=[[0, 0, 0, 1]], names=[DEVICES[4]],
                                               timestamp=t2, device_name="Positions"), wait=True)
    s = wait_until(lambda: next((m for m in markers.items[n:] if sent_frame(stamp_ns(m.header.stamp), {igtl_ns(t2): 1})), None),
                   5, peer, "the pyigtl POSITION sample")
    assert {x.id: x for x in s.markers}[15].position.x == pytest.approx(0.003, abs=1e-7)

    # The bridge's own graph: markers with the tracker's QoS.
    infos = [i for i in peer.get_publishers_info_by_topic("/needle_nav/markers") if i.node_name == "igtl_bridge"]
    assert infos and infos[0].qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT
    values = diagnostics_values(peer, "igtl_bridge tracker link")
    assert values["connected"] == "true"
    assert "StylusToTracker" in values["unmapped devices"]
    assert bridge.poll() is None


class RawPosition(pyigtl.MessageBase):
    """POSITION in the OpenIGTLink specification's layout (x, y, z, quaternion: 28 bytes)."""

    def __init__(self, device_name, timestamp, xyz):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "POSITION"
        self.xyz = xyz
        self._valid_message = True

    def _pack_content(self):
        return struct.pack("> 7f", *self.xyz, 0.0, 0.0, 0.0, 1.0)


class GetImage(pyigtl.MessageBase):
    """GET_IMAGE, the query Slicer sends for an image (an empty body)."""

    def __init__(self, device_name):
        super().__init__(device_name=device_name)
        self._message_type = "GET_IMAGE"
        self._valid_message = True

    def _pack_content(self):
        return b""


def test_a_device_that_stops_becomes_invisible_and_the_bridge_reconnects_to_a_restarted_server(processes, peer, tmp_path, plus):
    port = free_port()
    server = plus(port)
    bridge = start_bridge(processes, tmp_path, port, free_port(), slicer_enabled=False)
    markers = Collector(peer, TrackedMarkerArray, "needle_nav/markers", SENSOR)
    wait_until(lambda: server.is_connected(), 15, peer, "the bridge to connect")

    def send_frames(server, count, with_second):
        for _ in range(count):
            t = time.time()
            server.send_message(pyigtl.TransformMessage(transform(1, 2, 3), timestamp=t, device_name=DEVICES[0]), wait=False)
            if with_second:
                server.send_message(pyigtl.TransformMessage(transform(4, 5, 6), timestamp=t, device_name=DEVICES[1]), wait=False)
            spin_for(peer, 0.02)

    send_frames(server, 20, True)
    stop_at = len(markers.items)
    send_frames(server, 40, False)  # 0.8 s without the second tool; device_timeout_s is 0.15
    spin_for(peer, 0.2)
    after = markers.items[stop_at:]
    last = {x.id: x for x in after[-1].markers}
    assert last[11].visible
    assert not last[12].visible, "a device that stopped must not stay visible at its last pose"
    # It stayed visible only within the timeout of its last report.
    visible_after_stop = [m for m in after if {x.id: x for x in m.markers}[12].visible]
    assert len(visible_after_stop) <= 12

    # Reconnect: the tracker's server goes away and comes back on the same port.
    server.stop()
    spin_for(peer, 1.0)
    server2 = plus(port)
    wait_until(lambda: server2.is_connected(), 15, peer, "the bridge to reconnect")
    n = len(markers.items)
    send_frames(server2, 20, True)
    wait_until(lambda: len(markers.items) >= n + 10, 5, peer, "samples after reconnecting")
    values = diagnostics_values(peer, "igtl_bridge tracker link")
    assert int(values["connections"]) >= 2
    assert bridge.poll() is None


def packed(msg):
    return msg.pack()


def test_hostile_bytes_are_counted_and_good_messages_still_arrive(processes, peer, tmp_path):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    bridge = start_bridge(processes, tmp_path, port, free_port(), slicer_enabled=False)
    markers = Collector(peer, TrackedMarkerArray, "needle_nav/markers", SENSOR)
    listener.settimeout(15)
    conn, _ = listener.accept()

    def good(k):
        t = time.time()
        return t, packed(pyigtl.TransformMessage(transform(k, 0, 0), timestamp=t, device_name=DEVICES[0]))

    rng = np.random.default_rng(16)
    garbage = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    oversized = bytearray(good(0)[1])
    oversized[42:50] = struct.pack("> Q", 2**63)  # a body "of 8 EiB": must be neither read nor allocated
    bad_crc = bytearray(good(0)[1])
    bad_crc[-1] ^= 0xFF
    body = b"\x00" * 16
    unknown = struct.pack("> H 12s 20s II Q Q", 1, b"NOT_A_TYPE", b"Dev", 0, 0, len(body), CRC64(body)) + body
    wrong_content = struct.pack("> H 12s 20s II Q Q", 1, b"TRANSFORM", DEVICES[0].encode(), 0, 0, 5, CRC64(b"12345")) + b"12345"
    for chunk in [garbage, bytes(oversized[:58]), bytes(bad_crc), unknown, wrong_content]:
        conn.sendall(chunk)
        time.sleep(0.05)
    sent = {}
    for k in range(1, 11):
        t, wire = good(k)
        sent[igtl_ns(t)] = k
        conn.sendall(wire)
        spin_for(peer, 0.03)
    wait_until(lambda: any(sent_frame(stamp_ns(m.header.stamp), sent) == 10 for m in markers.items), 5, peer, "the good messages")
    got = {sent_frame(stamp_ns(m.header.stamp), sent): m for m in markers.items}
    assert set(range(1, 11)) <= set(got), "every good message after the bad ones arrives"
    assert got[10].markers[0].position.x == pytest.approx(0.010, abs=1e-7)
    values = diagnostics_values(peer, "igtl_bridge tracker link")
    assert int(values["oversized"]) == 1
    assert int(values["crc failed"]) == 1
    assert int(values["unknown type"]) == 1
    assert int(values["malformed"]) == 1
    assert int(values["garbage runs"]) >= 1 and int(values["garbage bytes"]) >= 3000
    assert values["connected"] == "true", "bad packets are counted, the link stays up"
    assert bridge.poll() is None
    conn.close()
    listener.close()


def publish_inputs(peer, target, registration, plan):
    pubs = [peer.create_publisher(NeedleTarget, "needle_nav/target", RELIABLE),
            peer.create_publisher(LesionRegistration, "needle_nav/registration", LATCHED),
            peer.create_publisher(NeedlePlan, "needle_nav/plan", LATCHED)]
    pubs[1].publish(registration)
    pubs[2].publish(plan)
    pubs[0].publish(target)
    return pubs


def quaternion_matrix(x, y, z, w):
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def known_inputs(label_map_path=""):
    target = NeedleTarget()
    target.header.stamp = to_time(1_700_000_000_500_000_000)
    target.source_stamp = to_time(1_700_000_000_123_000_000)  # the tracker frame it answers: the OpenIGTLink stamp
    target.header.frame_id = "tracker"
    target.entry_point.x, target.entry_point.y, target.entry_point.z = 0.10, 0.02, 0.30
    target.target_point.x, target.target_point.y, target.target_point.z = 0.12, 0.05, 0.22
    target.valid = False
    target.reason_code = NeedleTarget.REASON_STALE_DATA
    target.reason = "newest tracker sample is 0.31 s old"
    reg = LesionRegistration()
    reg.header.stamp = to_time(1_700_000_000_000_000_000)
    reg.status = LesionRegistration.STATUS_OK
    q = np.array([0.1, -0.2, 0.3, 0.9])
    q /= np.linalg.norm(q)
    reg.image_to_tracker.rotation.x, reg.image_to_tracker.rotation.y, reg.image_to_tracker.rotation.z, reg.image_to_tracker.rotation.w = q
    reg.image_to_tracker.translation.x, reg.image_to_tracker.translation.y, reg.image_to_tracker.translation.z = 0.05, -0.1, 0.4
    plan = NeedlePlan()
    plan.status = NeedlePlan.STATUS_OK
    plan.entry_point.x, plan.entry_point.y, plan.entry_point.z = 0.03, -0.11, 0.05
    plan.target_point.x, plan.target_point.y, plan.target_point.z = -0.02, 0.04, -0.07
    alt = NeedlePathCandidate()
    alt.entry_point.x, alt.entry_point.y, alt.entry_point.z = 0.031, -0.09, 0.06
    plan.alternatives = [alt]
    plan.label_map_path = label_map_path
    return target, reg, plan, q


def test_slicer_receives_target_registration_plan_and_the_label_map(processes, peer, tmp_path):
    nib = pytest.importorskip("nibabel")
    # A small label map with a non-trivial geometry: spacing, origin and an axis flip.
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 2, 1] = 1
    labels[4, 0:3, 2] = 2
    labels[5, 4, 3] = 3
    affine = np.array([[-0.8, 0, 0, 12.5], [0, 0.7, 0, -30.0], [0, 0, 2.5, 41.0], [0, 0, 0, 1]])
    path = tmp_path / "vessels.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), str(path))

    port = free_port()
    slicer = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    try:
        bridge = start_bridge(processes, tmp_path, free_port(), port, slicer_mode="client")
        wait_until(lambda: slicer.is_connected(), 15, peer, "the bridge to connect to Slicer")
        target, reg, plan, q = known_inputs(str(path))
        pubs = publish_inputs(peer, target, reg, plan)

        def got(device):
            return wait_until(lambda: slicer.wait_for_message(device, timeout=0), 10, peer, f"{device} at Slicer")
        # The target: the needle pose in the tracker frame, mm; z from entry to target, origin at the target.
        # The target topic is not latched: publish until the bridge (just started) has it.
        needle = None
        end = time.monotonic() + 15
        while needle is None and time.monotonic() < end:
            pubs[0].publish(target)
            spin_for(peer, 0.2)
            needle = slicer.wait_for_message("NeedleToTracker", timeout=0)
        assert needle is not None, "no NeedleToTracker at Slicer"
        entry = np.array([100.0, 20.0, 300.0])
        tip = np.array([120.0, 50.0, 220.0])
        z = (tip - entry) / np.linalg.norm(tip - entry)
        assert needle.matrix[:3, 3] == pytest.approx(tip, abs=1e-3)
        assert needle.matrix[:3, 2] == pytest.approx(z, abs=1e-6)
        assert np.linalg.det(needle.matrix[:3, :3]) == pytest.approx(1.0, abs=1e-5)
        assert abs(needle.timestamp - 1_700_000_000.123) < 1e-6
        text = got("NeedleTarget")
        assert text.string == "invalid: newest tracker sample is 0.31 s old"
        # The registration: tracker mm -> CT RAS mm, against the closed form.
        tracker_to_ct = got("TrackerToCT").matrix
        r = quaternion_matrix(*q)
        t = np.array([0.05, -0.1, 0.4])
        ct_lps_m = np.array([0.02, -0.03, 0.11])
        tracker_mm = (r @ ct_lps_m + t) * 1000
        ras = tracker_to_ct[:3, :3] @ tracker_mm + tracker_to_ct[:3, 3]
        assert ras == pytest.approx(ct_lps_m * 1000 * np.array([-1, -1, 1]), abs=1e-2)
        # The plan: entry, target, alternatives, CT RAS mm.
        points = got("NeedlePlan")
        assert list(points.names) == ["entry", "target", "alt1_entry"]
        assert np.asarray(points.positions) == pytest.approx(np.array([[-30.0, 110.0, 50.0], [20.0, -40.0, -70.0], [-31.0, 90.0, 60.0]]), abs=1e-3)
        # On request, the label map: voxels and geometry equal to the NIfTI (nibabel reads it independently).
        slicer.send_message(GetImage("VesselLabels"), wait=True)
        image = got("VesselLabels")
        assert image.image.shape == (4, 5, 6)  # pyigtl: (k, j, i)
        assert np.array_equal(np.transpose(image.image, (2, 1, 0)), labels)
        assert image.world_coordinate_system == "ras"
        assert image.ijk_to_world_matrix == pytest.approx(affine, abs=1e-4)
        # An image that does not exist is answered (with a STATUS), not ignored, and the link stays.
        slicer.send_message(GetImage("NoSuchImage"), wait=True)
        spin_for(peer, 0.3)
        assert slicer.is_connected()
        assert bridge.poll() is None
        for p in pubs:
            peer.destroy_publisher(p)
    finally:
        slicer.stop()


@pytest.fixture(scope="module")
def cpp_peer(tmp_path_factory):
    """tests/peers/igtl_peer.cpp built against the OpenIGTLink reference library."""
    include = Path("/usr/include/openigtlink")
    if shutil.which("g++") is None or not include.is_dir():
        pytest.skip("the OpenIGTLink C++ library (Debian libopenigtlink-dev) or g++ is missing: "
                    "TDATA and STATUS cannot be checked against the reference implementation")
    out = tmp_path_factory.mktemp("peer") / "igtl_peer"
    subprocess.run(["g++", "-O1", f"-I{include}", "-o", str(out), str(ROOT / "tests/peers/igtl_peer.cpp"), "-lOpenIGTLink"],
                   check=True, capture_output=True, text=True)
    return str(out)


def read_lines(proc, into):
    for line in proc.stdout:
        try:
            into.append(json.loads(line))
        except json.JSONDecodeError:
            pass


def test_tdata_from_the_reference_library_becomes_one_sample_per_frame(processes, peer, tmp_path, cpp_peer):
    port = free_port()
    peer_proc = subprocess.Popen([cpp_peer, "tdata-server", str(port), "3"], stdout=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=read_lines, args=(peer_proc, lines), daemon=True).start()
    try:
        wait_until(lambda: lines, 10, None, "the C++ peer to listen")
        start_bridge(processes, tmp_path, port, free_port(), slicer_enabled=False)
        markers = Collector(peer, TrackedMarkerArray, "needle_nav/markers", SENSOR)
        wait_until(lambda: len(markers.items) >= 30, 10, peer, "TDATA samples")
        time.sleep(0.3)  # the peer prints a frame after sending it: let the newest lines arrive
        sent = {s["sec"] * 1_000_000_000 + s["nsec"]: s["z1"] for s in lines if s.get("sent") == "TDATA"}
        for m in markers.items:
            # Within 1 us: the C++ library rounds nanoseconds to the wire fraction its own way.
            z1 = sent_frame(stamp_ns(m.header.stamp), sent)
            assert z1 is not None, f"one sample per TDATA frame, with the frame's timestamp: {stamp_ns(m.header.stamp)} not in {sorted(sent)[:3]}..{sorted(sent)[-3:]}"
            by_id = {x.id: x for x in m.markers}
            # The translation (not a rotation entry) of each element, in metres.
            assert (by_id[11].position.x, by_id[11].position.y, by_id[11].position.z) == pytest.approx((0.0105, -0.02025, z1 / 1000), abs=1e-7)
            assert (by_id[12].position.x, by_id[12].position.y, by_id[12].position.z) == pytest.approx((-0.0405, 0.05025, 0.060), abs=1e-7)
    finally:
        peer_proc.kill()
        peer_proc.wait()


def test_status_reaches_the_reference_library_with_code_reason_and_a_valid_crc(processes, peer, tmp_path, cpp_peer):
    port = free_port()
    peer_proc = subprocess.Popen([cpp_peer, "receive-server", str(port), "8"], stdout=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=read_lines, args=(peer_proc, lines), daemon=True).start()
    try:
        wait_until(lambda: lines, 10, None, "the C++ peer to listen")
        start_bridge(processes, tmp_path, free_port(), port, slicer_mode="client")
        target, reg, plan, _ = known_inputs()
        pubs = publish_inputs(peer, target, reg, plan)

        def status(code):
            return next((x for x in lines if x.get("type") == "STATUS" and x["code"] == code), None)

        def publish_until(msg, code):
            # The target topic is not latched: publish until the bridge (just started) has it.
            end = time.monotonic() + 15
            while time.monotonic() < end and not status(code):
                pubs[0].publish(msg)
                spin_for(peer, 0.2)
            return status(code)
        s = publish_until(target, 13)
        assert s, "no STATUS at the C++ peer"
        assert s["device"] == "NeedleTarget" and s["crc_ok"]
        assert (s["code"], s["subcode"], s["error_name"]) == (13, NeedleTarget.REASON_STALE_DATA, "stale_data")
        assert s["status_string"] == "newest tracker sample is 0.31 s old"
        valid = NeedleTarget()
        valid.header.stamp = to_time(1_700_000_001_000_000_000)
        valid.entry_point.z = 0.1
        valid.valid = True
        ok = publish_until(valid, 1)
        assert ok and ok["crc_ok"] and ok["status_string"] == "valid"
        # The C++ library reads our TRANSFORMs (its CRC check included) as pyigtl does.
        tr = wait_until(lambda: next((x for x in lines if x.get("type") == "TRANSFORM" and x["device"] == "TrackerToCT"), None),
                        10, peer, "the registration TRANSFORM at the C++ peer")
        assert tr["crc_ok"]
        for p in pubs:
            peer.destroy_publisher(p)
    finally:
        peer_proc.kill()
        peer_proc.wait()


def test_the_bridge_in_server_mode_serves_a_tracker_that_connects(processes, peer, tmp_path):
    port = free_port()
    start_bridge(processes, tmp_path, port, free_port(), tracker_mode="server", slicer_enabled=False)
    markers = Collector(peer, TrackedMarkerArray, "needle_nav/markers", SENSOR)
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port)
    try:
        wait_until(lambda: client.is_connected(), 15, peer, "the tracker to connect to the bridge")
        for k in range(10):
            client.send_message(pyigtl.TransformMessage(transform(k, 0, 0), device_name=DEVICES[0]), wait=True)
            spin_for(peer, 0.03)
        # The last frame is published when frame_window_s has passed after it.
        wait_until(lambda: any(math.isclose(m.markers[0].position.x, 0.009, abs_tol=1e-7) for m in markers.items), 5, peer,
                   "the last frame from a connecting tracker")
        assert len(markers.items) >= 5
    finally:
        client.stop()


def test_the_device_map_is_declared_as_ros_parameters(processes, peer, tmp_path):
    """`ros2 param get` on the bridge: the map's two lists with their types, the links' ports."""
    from rcl_interfaces.srv import GetParameters
    tracker_port = free_port()
    start_bridge(processes, tmp_path, tracker_port, free_port(), slicer_enabled=False)
    client = peer.create_client(GetParameters, "/igtl_bridge/get_parameters")
    assert client.wait_for_service(timeout_sec=15)
    future = client.call_async(GetParameters.Request(names=["device_names", "marker_ids", "tracker.port", "tracker.mode"]))
    wait_until(future.done, 10, peer, "get_parameters")
    values = future.result().values
    assert list(values[0].string_array_value) == DEVICES
    assert list(values[1].integer_array_value) == IDS
    assert values[2].integer_value == tracker_port
    assert values[3].string_value == "client"
    peer.destroy_client(client)
