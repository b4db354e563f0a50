"""The planner end to end through ROS on a digital patient: it calls the segmentation service,
plans, and publishes the plan and its rviz markers (both latched). The plan is then checked with an
independent computation: nibabel reads the label map, the CT and the obstacle layers the planner
wrote, scipy's exact Euclidean distance transform gives the clearance to each layer along the
published path, numpy counts the lesion's labelled voxels and the vessel volumes."""
import json
import math
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import executable, wait_until
from needle_nav_msgs.msg import NeedlePlan
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy import ndimage
from visualization_msgs.msg import Marker, MarkerArray

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MARGIN_M, BONE_HU, STEP_MM = 0.005, 300.0, 0.5


def test_the_plan_keeps_the_clearance_it_reports(processes, peer, tmp_path):
    case = tmp_path / "case"
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(case), "--phases", "1",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True)
    plans, viz = [], []
    peer.create_subscription(NeedlePlan, "/needle_nav/plan", plans.append, LATCHED)
    peer.create_subscription(MarkerArray, "/needle_nav/viz/plan", viz.append, LATCHED)
    processes.start("needle_nav_stack", "--only", "vessel_segmentation,trajectory_planner", "--ros-args",
                    "-p", f"trajectory_planner:ct_case_dir:={case}",
                    "-p", f"trajectory_planner:output_dir:={tmp_path / 'plan'}")
    wait_until(lambda: plans and plans[-1].status != NeedlePlan.STATUS_PENDING and viz, 240, peer,
               "a finished plan and its markers")
    p = plans[-1]
    assert p.status == NeedlePlan.STATUS_OK, p.status_message
    assert p.header.frame_id == "ct" and p.safety_margin == MARGIN_M
    reference = json.loads((case / "case.json").read_text())["reference"]
    lesion_mm = np.array(reference["lesion_centre_mm"])
    radius_mm = reference["lesion_radius_mm"]
    entry = np.array([p.entry_point.x, p.entry_point.y, p.entry_point.z]) * 1e3
    target = np.array([p.target_point.x, p.target_point.y, p.target_point.z]) * 1e3
    assert np.allclose(target, lesion_mm, atol=1e-6) and math.isclose(p.lesion_radius * 1e3, radius_mm)
    assert math.isclose(np.linalg.norm(entry - target), p.path_length * 1e3, rel_tol=1e-9)
    assert p.path_length <= 0.15
    # Within 45 degrees of the anterior approach (LPS: -y).
    direction = (entry - target) / np.linalg.norm(entry - target)
    assert math.degrees(math.acos(-direction[1])) <= 45.0 + 1e-6

    # Independent clearance: label map and CT via nibabel (on the planning CT's grid).
    labels_img = nib.load(p.label_map_path)
    labels = np.asarray(labels_img.dataobj).astype(np.uint8)
    ct = np.asarray(nib.load(case / "ct.nii.gz").dataobj, dtype=np.float32)
    assert ct.shape == labels.shape
    affine = labels_img.affine
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    inverse = np.linalg.inv(affine)

    def voxel(p_lps_mm):
        return np.rint(inverse[:3, :3] @ (p_lps_mm * lps_to_ras) + inverse[:3, 3]).astype(int)

    # Voxel centres in LPS mm, to find the lesion's labelled voxels.
    ijk = np.indices(labels.shape).reshape(3, -1)
    centres = ((affine[:3, :3] @ ijk + affine[:3, 3:4]).T * lps_to_ras).reshape(*labels.shape, 3)
    in_lesion = np.linalg.norm(centres - lesion_mm, axis=-1) <= radius_mm
    assert p.lesion_voxels_ignored == int(np.count_nonzero((labels > 0) & in_lesion))
    # Every obstacle layer the plan names was written on the CT's grid; two are recomputed here
    # exactly (the network's labels minus the lesion, bone), and the clearance to each along the
    # published path is recomputed with scipy's exact distance transform.
    layers = dict(zip(p.obstacle_layers, p.obstacle_layer_paths))
    assert set(layers) == {"network_vessels", "bone", "mediastinum", "lung_vessels", "airways", "contrast_vessels"}
    masks = {name: np.asarray(nib.load(path).dataobj) > 0 for name, path in layers.items()}
    assert np.array_equal(masks["network_vessels"], (labels > 0) & ~in_lesion)
    assert np.array_equal(masks["bone"], ct >= BONE_HU)
    samples = np.arange(0.0, np.linalg.norm(entry - target) + 1e-9, STEP_MM)
    path_voxels = tuple(np.array([voxel(target + direction * s) for s in samples]).T)
    chosen = p.chosen
    assert chosen.passes and not chosen.refusals and math.isclose(chosen.path_length, p.path_length)
    for name, reported, margin in zip(p.obstacle_layers, chosen.layer_clearances, p.layer_margins):
        if not masks[name].any():
            assert math.isinf(reported), name
            continue
        distance = ndimage.distance_transform_edt(~masks[name], sampling=spacing)
        along = float(distance[path_voxels].min())
        assert abs(along - reported * 1e3) < 0.01, (name, along, reported * 1e3)
        assert along >= margin * 1e3 - 1e-6, (name, along, margin)
    assert math.isclose(p.minimum_clearance, min(chosen.layer_clearances))
    # The entry is on the skin: body just inside, air just outside.
    assert ct[tuple(voxel(entry - direction * 2.0))] > -400 and ct[tuple(voxel(entry + direction * 3.0))] < -400

    # Vessel volumes as published, against the label map.
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes = dict(zip(p.vessel_classes, p.vessel_volumes))
    for label, name in [(1, "artery"), (2, "vein"), (3, "aorta")]:
        assert math.isclose(volumes[name] * 1e6, np.count_nonzero(labels == label) * voxel_ml, rel_tol=1e-6, abs_tol=1e-9)

    # rviz: the markers replace earlier ones, show the vessels by class and the path from entry to target.
    markers = viz[-1].markers
    assert markers[0].action == Marker.DELETEALL
    path = [m for m in markers if m.ns == "needle_path"]
    assert len(path) == 1 and path[0].header.frame_id == "ct" and path[0].color.g > path[0].color.r
    ends = [np.array([q.x, q.y, q.z]) * 1e3 for q in path[0].points]
    assert np.allclose(ends[0], entry, atol=1e-6) and np.allclose(ends[1], target, atol=1e-6)
    vessel_ids = {m.id for m in markers if m.ns == "vessels"}
    assert vessel_ids == {label for label in (1, 2, 3) if np.any(labels == label)}


def test_the_stack_plans_the_real_thorax_case_as_the_command_line_does(processes, peer, tmp_path):
    """The real non-contrast thorax series (cases/thorax_ct_lung_lesion, its lesion posterior in the
    right lung, so the case asks for a posterior approach): segmentation service and planner through ROS give the same
    plan as `needle_nav plan` on the same labels and parameters, with every risk term filled and
    every layer written."""
    from conftest import ROOT
    case = ROOT / "cases" / "thorax_ct_lung_lesion"
    plans = []
    peer.create_subscription(NeedlePlan, "/needle_nav/plan", plans.append, LATCHED)
    processes.start("needle_nav_stack", "--only", "vessel_segmentation,trajectory_planner", "--ros-args",
                    "-p", f"trajectory_planner:ct_case_dir:={case}",
                    "-p", f"trajectory_planner:output_dir:={tmp_path / 'ros'}")
    wait_until(lambda: plans and plans[-1].status != NeedlePlan.STATUS_PENDING, 400, peer, "a finished plan")
    p = plans[-1]
    assert p.status == NeedlePlan.STATUS_OK, p.status_message
    # The command line on the same inputs (the service's label map): the same code must give the same plan.
    cli = subprocess.run([executable("needle_nav"), "plan", "--case", str(case), "--out", str(tmp_path / "cli"),
                          "--labels", p.label_map_path],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    doc = json.loads((tmp_path / "cli" / "plan.json").read_text())
    chosen = doc["chosen"]
    entry = np.array([p.entry_point.x, p.entry_point.y, p.entry_point.z]) * 1e3
    assert np.allclose(entry, chosen["entry_mm"], atol=1e-6)
    c = p.chosen
    assert math.isclose(c.lung_length * 1e3, chosen["lung_length_mm"], abs_tol=1e-9)
    assert c.pleural_crossings == chosen["pleural_crossings"] == 1  # a lung lesion entered once
    assert math.isclose(math.degrees(c.pleural_angle), chosen["pleural_angle_deg"], abs_tol=1e-6)
    assert c.pleural_angle <= math.radians(60.0) and c.rib_clearance * 1e3 >= 4.0 - 1e-9
    for name, reported, margin, path in zip(p.obstacle_layers, c.layer_clearances, p.layer_margins,
                                            p.obstacle_layer_paths):
        expected = chosen["clearance_mm"][name]
        assert (math.isinf(reported) and expected is None) or math.isclose(reported * 1e3, expected, abs_tol=1e-6)
        assert reported >= margin - 1e-9 and (tmp_path / "ros" / "layers" / f"{name}.nii.gz") == Path(path)
    assert len(p.alternatives) == len(doc["alternatives"]) and all(a.passes for a in p.alternatives)
    assert p.instrument_length == 0.15 and p.path_length <= p.instrument_length
