"""End to end through ROS: the stack on a digital-patient case (CT written as DICOM, markers
detected, registered, baseline recorded, 4-D CT correlation model) publishes valid targets,
and rclpy checks them against the simulator's ground truth, matched by the tracker stamp."""
import math
import subprocess

import numpy as np
import pytest
from conftest import executable, wait_until
from needle_nav_msgs.msg import LesionRegistration, NeedleTarget, PhantomGroundTruth
from tf2_msgs.msg import TFMessage
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data


def test_targets_are_valid_and_accurate_against_the_ground_truth(processes, peer, tmp_path):
    case = tmp_path / "case"
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(case), "--phases", "6",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True)
    targets, truth, regs, tf, live_tf = [], {}, [], [], []
    peer.create_subscription(NeedleTarget, "/needle_nav/target", targets.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    peer.create_subscription(PhantomGroundTruth, "/needle_nav/debug/ground_truth",
                             lambda m: truth.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), m),
                             qos_profile_sensor_data)
    peer.create_subscription(LesionRegistration, "/needle_nav/registration", regs.append,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    peer.create_subscription(TFMessage, "/tf_static", tf.append,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    peer.create_subscription(TFMessage, "/tf", live_tf.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    processes.start("needle_nav_stack", "--ros-args",
                    "-p", "marker_tracker:rate_hz:=100.0", "-p", "marker_tracker:latency_s:=0.0",
                    "-p", "marker_classifier:window_s:=8.0",
                    "-p", f"lesion_registration:ct_case_dir:={case}", "-p", f"needle_target:ct_case_dir:={case}",
                    "-p", "needle_target:baseline_s:=8.0", "-p", "needle_target:tracker_rate_hz:=100.0",
                    "-p", "needle_target:robot_latency_s:=0.0", "-p", "needle_target:prediction:=none")
    wait_until(lambda: sum(t.valid for t in targets) >= 300, 90, peer, "300 valid targets")
    r = regs[-1]
    assert r.status in (LesionRegistration.STATUS_OK, LesionRegistration.STATUS_OUTLIER_EXCLUDED)
    assert len(r.marker_ids_used) >= 5 and r.fre_rms < 1e-3 and 0 < r.predicted_tre_lesion < 2e-3
    # The same transform on /tf_static: tracker -> ct.
    wait_until(lambda: tf, 10, peer, "/tf_static")
    t = tf[-1].transforms[0]
    assert t.header.frame_id == "tracker" and t.child_frame_id == "ct"
    q1, q2 = t.transform.rotation, r.image_to_tracker.rotation
    assert abs(abs(q1.x * q2.x + q1.y * q2.y + q1.z * q2.z + q1.w * q2.w) - 1) < 1e-3
    errors = []
    for t in targets:
        key = (t.source_stamp.sec, t.source_stamp.nanosec)
        if t.valid and key in truth:
            g = truth[key].lesion_position
            errors.append(math.dist((t.target_point.x, t.target_point.y, t.target_point.z), (g.x, g.y, g.z)))
            d = (t.direction.x, t.direction.y, t.direction.z)
            assert abs(math.hypot(*d) - 1.0) < 1e-9
            assert t.prediction_horizon == 0.0  # prediction none: the target is for its sample's time
    assert len(errors) >= 100, f"only {len(errors)} valid targets matched to ground truth"
    rms = float(np.sqrt(np.mean(np.square(errors))))
    assert rms < 2.5e-3, f"target RMS error {rms * 1e3:.2f} mm against the ground truth"
    # The target frame on /tf: tracker -> needle_target at each valid target, z along the insertion direction.
    valid = {(t.source_stamp.sec, t.source_stamp.nanosec): t for t in targets if t.valid}
    frames = [f for m in live_tf for f in m.transforms if f.child_frame_id == "needle_target"]
    matched = [(f, valid[(f.header.stamp.sec, f.header.stamp.nanosec)]) for f in frames
               if (f.header.stamp.sec, f.header.stamp.nanosec) in valid]
    assert len(matched) >= 100 and all(f.header.frame_id == "tracker" for f, _ in matched)
    for f, t in matched:
        tr, q = f.transform.translation, f.transform.rotation
        assert math.dist((tr.x, tr.y, tr.z), (t.target_point.x, t.target_point.y, t.target_point.z)) < 1e-12
        # Third column of the rotation matrix = the frame's z axis.
        z = (2 * (q.x * q.z + q.w * q.y), 2 * (q.y * q.z - q.w * q.x), 1 - 2 * (q.x * q.x + q.y * q.y))
        assert math.dist(z, (t.direction.x, t.direction.y, t.direction.z)) < 1e-6
    # No target is ever valid with a reason, and invalid ones always carry one; an invalid target
    # is for no time.
    assert all((t.valid and t.reason == "") or (not t.valid and t.reason) for t in targets)
    assert all(math.isnan(t.prediction_horizon) for t in targets if not t.valid)
