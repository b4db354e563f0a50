"""rclpy (the reference Python client) exchanges needle_nav's custom messages and service
with the Rust nodes: it decodes what they publish, they decode what it publishes, and it
calls the segmentation service with our request type."""
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from conftest import wait_until
from needle_nav_msgs.msg import (LesionRegistration, MarkerClassification, NeedlePlan, NeedleTarget,
                            PhantomGroundTruth, TrackedMarker, TrackedMarkerArray)
from needle_nav_msgs.srv import SegmentVessels
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def collect(peer, msg_type, topic, qos):
    got = []
    peer.create_subscription(msg_type, topic, got.append, qos)
    return got


def test_rclpy_decodes_every_message_the_stack_publishes(processes, peer):
    markers = collect(peer, TrackedMarkerArray, "/needle_nav/markers", qos_profile_sensor_data)
    truth = collect(peer, PhantomGroundTruth, "/needle_nav/debug/ground_truth", qos_profile_sensor_data)
    targets = collect(peer, NeedleTarget, "/needle_nav/target", RELIABLE)
    for name in ["marker_tracker", "marker_classifier", "lesion_registration", "needle_target", "trajectory_planner"]:
        if name == "marker_tracker":
            processes.start(name, "--ros-args", "-p", "rate_hz:=200.0", "-p", "dropout_probability:=0.0",
                            "-p", "occlusion_rate_per_min:=0.0")
        else:
            processes.start(name)

    wait_until(lambda: len(markers) >= 50 and len(truth) >= 50 and len(targets) >= 50, 30, peer, "streams")
    m = markers[-1]
    assert m.header.frame_id == "tracker"
    assert [k.id for k in m.markers] == list(range(1, 13))
    assert all(k.visible and math.isfinite(k.position.z) and abs(k.position.z) < 5.0 for k in m.markers)
    assert all(abs(k.quality - 0.00025) < 1e-9 for k in m.markers)  # the configured noise RMS, in metres
    # Ground truth pairs with the samples by sequence number and stamp.
    by_seq = {t.sequence: t for t in truth}
    paired = [s for s in markers if s.sequence in by_seq]
    assert paired and all(by_seq[s.sequence].header.stamp == s.header.stamp for s in paired)
    q = truth[-1].image_to_tracker.rotation
    assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1.0) < 1e-9

    # Once the registration status has arrived, the target's reason carries its explanation.
    wait_until(lambda: "ct_case_dir" in targets[-1].reason, 30, peer, "a target explaining the registration")
    t = targets[-1]
    assert t.valid is False and all(not x.valid for x in targets)
    assert t.reason_code == NeedleTarget.REASON_NO_REGISTRATION
    assert math.isnan(t.predicted_error)

    # Latched state reaches a subscriber that joins after it was published.
    regs = collect(peer, LesionRegistration, "/needle_nav/registration", LATCHED)
    plans = collect(peer, NeedlePlan, "/needle_nav/plan", LATCHED)
    wait_until(lambda: regs and plans, 30, peer, "latched registration and plan")
    assert regs[-1].status == LesionRegistration.STATUS_NO_IMAGE_DATA
    assert plans[-1].status == NeedlePlan.STATUS_NO_CT and "ct_path" in plans[-1].status_message


def test_rust_nodes_decode_what_rclpy_publishes(processes, peer):
    """rclpy plays the tracker: the classifier splits its markers, the target node echoes its stamps."""
    pub = peer.create_publisher(TrackedMarkerArray, "/needle_nav/markers", qos_profile_sensor_data)
    classes = collect(peer, MarkerClassification, "/needle_nav/marker_classification", LATCHED)
    targets = collect(peer, NeedleTarget, "/needle_nav/target", RELIABLE)
    processes.start("marker_classifier", "--ros-args", "-p", "window_s:=2.0")
    processes.start("needle_target", "--ros-args", "-p", "tracker_rate_hz:=100.0")
    wait_until(lambda: pub.get_subscription_count() >= 2, 30, peer, "subscribers")

    start = time.time()
    sent_stamps = set()
    seq = 0
    def publish_one():
        nonlocal seq
        t = time.time()
        msg = TrackedMarkerArray()
        msg.header.frame_id = "tracker"
        msg.header.stamp = Time(sec=int(t), nanosec=int((t % 1) * 1e9))
        msg.sequence = seq
        seq += 1
        phase = 2 * math.pi * (t - start) / 1.0
        # marker 10 still, marker 20 moves 8 mm peak to peak along z
        for mid, amp in ((10, 0.0), (20, 0.004)):
            k = TrackedMarker(id=mid, visible=True, quality=float("nan"))
            k.position.x, k.position.y, k.position.z = 0.1 * mid, 0.0, amp * math.sin(phase)
            msg.markers.append(k)
        pub.publish(msg)
        sent_stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        return classes

    wait_until(publish_one, 30, peer, "a classification of rclpy's markers")
    c = classes[-1]
    assert list(c.registration_marker_ids) == [10] and list(c.correction_marker_ids) == [20]
    features = {m.id: m.displacement_feature for m in c.markers}
    assert features[10] < 0.001 and abs(features[20] - 0.008) < 0.0005
    assert c.feature == "peak_to_peak" and c.window_duration == 2.0
    echoed = [t for t in targets if (t.source_stamp.sec, t.source_stamp.nanosec) in sent_stamps]
    assert echoed, "needle_target never answered with the stamp of a sample rclpy sent"
    assert all(not t.valid for t in targets)


def segmentation_client(processes, peer, *args):
    processes.start("vessel_segmentation", *args)
    client = peer.create_client(SegmentVessels, "/needle_nav/segment_vessels")
    wait_until(lambda: client.service_is_ready(), 30, peer, "the segment_vessels service")

    def send(**fields):
        return client.call_async(SegmentVessels.Request(**fields))

    def call(**fields):
        future = send(**fields)
        wait_until(future.done, 120, peer, "a response")
        return future.result()
    return send, call


@pytest.fixture
def segmentation(processes, peer):
    return segmentation_client(processes, peer)[1]


def test_service_answers_bad_requests_with_clear_errors(segmentation, tmp_path):
    r = segmentation(input_path="", output_dir=str(tmp_path))
    assert r.success is False and "input_path is empty" in r.message
    r = segmentation(input_path="/nonexistent/ct", output_dir=str(tmp_path))
    assert r.success is False and "does not exist" in r.message
    (tmp_path / "image.png").write_bytes(b"x")
    r = segmentation(input_path=str(tmp_path / "image.png"), output_dir=str(tmp_path))
    assert r.success is False and "neither a DICOM directory nor" in r.message
    r = segmentation(input_path=str(tmp_path), output_dir=str(tmp_path / "o"), patch_overlap=2.0)
    assert r.success is False and "patch_overlap" in r.message
    # Unreadable content: an error response, and the node still serves the next request.
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    r = segmentation(input_path=str(tmp_path / "broken.nii.gz"), output_dir=str(tmp_path / "o"))
    assert r.success is False and "cannot read the input" in r.message
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "slice.dcm").write_bytes(b"DICM" * 10)
    r = segmentation(input_path=str(tmp_path / "dicom"), output_dir=str(tmp_path / "o"))
    assert r.success is False and "cannot read the input" in r.message
    r = segmentation(input_path="", output_dir=str(tmp_path))
    assert r.success is False and "input_path is empty" in r.message


def test_service_segments_a_real_ct_and_nibabel_reads_the_labels_on_the_input_grid(segmentation, tmp_path):
    nib = pytest.importorskip("nibabel")
    ct = SHARED / "chest_cta_pulmonary_artery" / "ct_cropped.nii.gz"
    if not ct.is_file():
        pytest.skip(f"shared data not found at {ct}")
    r = segmentation(input_path=str(ct), output_dir=str(tmp_path / "out"), hu_refinement=True, write_surface=True)
    assert r.success is True, r.message
    labels = nib.load(r.label_map_path)
    source = nib.load(str(ct))
    assert labels.shape == source.shape
    np.testing.assert_allclose(labels.affine, source.affine, atol=1e-4)
    data = np.asarray(labels.dataobj)
    assert set(np.unique(data)) <= {0, 1, 2, 3}
    assert list(r.class_names) == ["background", "artery", "vein", "aorta"]
    assert [int((data == c).sum()) for c in range(4)] == list(r.voxel_counts)
    voxel_ml = float(np.prod(source.header.get_zooms()[:3])) / 1000.0
    np.testing.assert_allclose(r.volumes_ml, np.array(r.voxel_counts) * voxel_ml, rtol=1e-6)
    summary = json.loads(Path(r.summary_json_path).read_text())
    assert summary["voxel_counts"] == list(r.voxel_counts)
    assert [s["stage"] for s in summary["stages"]] == list(r.stage_names)
    assert r.stage_names[0] == "load" and "inference" in r.stage_names
    assert r.total_seconds >= sum(r.stage_seconds) * 0.99
    ply = Path(r.surface_path).read_text().splitlines()
    assert ply[0] == "ply" and int(ply[3].split()[-1]) == len(ply) - ply.index("end_header") - 1


def test_second_request_while_busy_is_refused_when_queueing_is_off(processes, peer, tmp_path):
    ct = SHARED / "chest_cta_pulmonary_artery" / "ct_cropped.nii.gz"
    if not ct.is_file():
        pytest.skip(f"shared data not found at {ct}")
    send, _ = segmentation_client(processes, peer, "--ros-args", "-p", "queue_when_busy:=false")
    first = send(input_path=str(ct), output_dir=str(tmp_path / "a"), patch_overlap=0.5)
    second = send(input_path=str(ct), output_dir=str(tmp_path / "b"))
    wait_until(lambda: first.done() and second.done(), 120, peer, "both responses")
    assert first.result().success is True, first.result().message
    assert second.result().success is False and "busy" in second.result().message


def test_trace_source_drives_the_patient_with_real_breathing(processes, peer):
    """source=trace: a real ExtMarker recording drives the digital patient's markers."""
    truth = collect(peer, PhantomGroundTruth, "/needle_nav/debug/ground_truth", qos_profile_sensor_data)
    markers = collect(peer, TrackedMarkerArray, "/needle_nav/markers", qos_profile_sensor_data)
    p = processes.start("marker_tracker", "--ros-args", "-p", "source:=trace", "-p", "trace_session:=201205101522",
                        "-p", "trace_marker:=UAC", "-p", "rate_hz:=100.0")
    wait_until(lambda: len(truth) >= 400, 30, peer, "4 s of ground truth")
    inhale = np.array([t.breathing_amplitude for t in truth])
    # The recorded signal is normalised to end-exhale 0 and median breath depth 1.
    assert inhale.min() > -0.5 and inhale.max() < 3.0 and np.ptp(inhale) > 0.2
    assert len(markers) > 0 and len(markers[-1].markers) == 12
    log = Path(p.log_path).read_text()
    assert "breathing from ExtMarker session 201205101522, marker UAC" in log
