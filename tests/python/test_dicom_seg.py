"""DICOM Segmentation out and in, against independent peers (issue 16 §2).

- `needle_nav segment` on the real thorax series (../shared/data/thorax_ct_dicom, 141 slices, full
  UIDs) writes vessel_seg.dcm; highdicom (hd.seg.segread) reads it: three segments with the standard
  anatomy codes, the source's series, instances, study and frame of reference (read with pydicom),
  each frame at its source slice's position, the source's orientation and spacing, and the pixels of
  every segment equal to the NIfTI labels (nibabel) of the same run, class by class.
- dciodvfy (Debian dicom3tools) finds no error in it.
- The 20-slice JPEG 2000 series has empty Study/Series UIDs: it is segmented, but no SEG is written
  and the summary says why; NIfTI input likewise.
- Our reader against an independent writer: highdicom writes the run's labels as a SEG (segments in
  another order than ours), `needle_nav seg-to-nifti --ct` gives back the same labels.
- The planner: a plan with the SEG as labels equals the plan with the NIfTI labels; a SEG in another
  frame of reference is refused.
- The SegmentVessels service names the SEG and its SOPInstanceUID in its response (empty for NIfTI).
"""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from conftest import ROOT, executable

DATA = ROOT.parent / "shared" / "data"
THORAX = DATA / "thorax_ct_dicom"
J2K = DATA / "abdomen_ct_vessels" / "example_ct_dicom_j2k"
NIFTI_CT = DATA / "abdomen_ct_vessels" / "example_ct_sm.nii.gz"
THORAX_CASE = ROOT / "cases" / "thorax_ct_lung_lesion"
CLASSES = {1: ("artery", codes.SCT.Artery), 2: ("vein", codes.SCT.Vein), 3: ("aorta", codes.SCT.Aorta)}


def needle_nav(*args, timeout=900):
    return subprocess.run([executable("needle_nav"), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def source_slices(folder):
    """The source slices (pydicom, headers) sorted along the slice normal, as the volume's k runs."""
    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    normal = np.cross(*np.array(slices[0].ImageOrientationPatient, float).reshape(2, 3))
    return sorted(slices, key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))


@pytest.fixture(scope="module")
def thorax_run(tmp_path_factory):
    if not THORAX.is_dir():
        pytest.skip(f"shared data not found at {THORAX}")
    out = tmp_path_factory.mktemp("seg_thorax")
    r = needle_nav("segment", THORAX, "--out", out, "--no-surface", "--scheduling", "normal")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "vessel_summary.json").read_text())
    return out, summary, source_slices(THORAX)


def test_the_seg_of_the_thorax_series_has_the_vessel_segments_with_their_codes(thorax_run):
    out, summary, _ = thorax_run
    path = out / "vessel_seg.dcm"
    assert summary["dicom_seg_path"] == str(path) and summary["dicom_seg_note"] is None
    seg = hd.seg.segread(path)
    assert seg.SOPInstanceUID == summary["dicom_seg_sop_instance_uid"]
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.number_of_segments == 3
    for number, (name, code) in CLASSES.items():
        d = seg.get_segment_description(number)
        assert d.segment_label == name
        assert d.segmented_property_category == codes.SCT.AnatomicalStructure
        assert d.segmented_property_type == code
        assert d.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        (algorithm,) = d.algorithm_identification
        assert algorithm.AlgorithmName == "vessel_unet" and algorithm.AlgorithmVersion.startswith("trained ")


def test_the_seg_references_the_source_series_and_lies_on_its_slices(thorax_run):
    out, _, slices = thorax_run
    seg = hd.seg.segread(out / "vessel_seg.dcm")
    first = slices[0]
    for attr in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "StudyDate", "StudyTime"):
        assert seg.get(attr) == first.get(attr), attr
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [s.SOPInstanceUID for s in slices]
    assert {i.ReferencedSOPClassUID for i in series.ReferencedInstanceSequence} == {pydicom.uid.CTImageStorage}
    by_uid = {s.SOPInstanceUID: s for s in slices}
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, first.ImageOrientationPatient)
    assert np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, first.PixelSpacing)
    step = np.diff([float(s.ImagePositionPatient[2]) for s in slices])
    assert np.allclose(shared.PixelMeasuresSequence[0].SpacingBetweenSlices, step.mean())
    assert (seg.Rows, seg.Columns) == (first.Rows, first.Columns)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (source,) = frame.DerivationImageSequence[0].SourceImageSequence
        ct = by_uid[source.ReferencedSOPInstanceUID]
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, ct.ImagePositionPatient, atol=1e-4)


def test_each_segment_holds_exactly_the_voxels_of_its_class_in_the_nifti_labels(thorax_run):
    out, summary, slices = thorax_run
    seg = hd.seg.segread(out / "vessel_seg.dcm")
    # (slices, rows, columns, segments), one row per source instance; slices without a frame are empty.
    pixels = seg.get_pixels_by_source_instance(
        [s.SOPInstanceUID for s in slices], segment_numbers=[1, 2, 3], assert_missing_frames_are_empty=True
    )
    labels = np.asarray(nib.load(out / "vessel_labels.nii.gz").dataobj)  # (columns, rows, slices)
    assert labels.shape == (512, 512, 141)
    expected = np.transpose(labels, (2, 1, 0))  # (slices, rows, columns)
    for number in CLASSES:
        got = pixels[..., number - 1].astype(bool)
        want = expected == number
        assert want.sum() == summary["voxel_counts"][number] > 0
        assert np.array_equal(got, want), f"segment {number}: {np.sum(got != want)} voxels differ"


def test_dciodvfy_finds_no_error_in_the_seg(thorax_run):
    out, _, _ = thorax_run
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (Debian dicom3tools) is not installed: scripts/setup.sh installs it")
    r = subprocess.run(["dciodvfy", str(out / "vessel_seg.dcm")], capture_output=True, text=True, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    errors = [line for line in lines if "Error" in line]
    assert not errors, "\n".join(lines)
    print("dciodvfy warnings:\n" + "\n".join(line for line in lines if "Warning" in line))


def test_a_series_without_study_and_series_uids_is_segmented_without_a_seg_and_says_why(thorax_run, tmp_path):
    if not J2K.is_dir():
        pytest.skip(f"shared data not found at {J2K}")
    # Over the thorax run's result: --overwrite must not leave the earlier run's SEG beside the new labels.
    shutil.copytree(thorax_run[0], tmp_path, dirs_exist_ok=True)
    assert (tmp_path / "vessel_seg.dcm").is_file()
    r = needle_nav("segment", J2K, "--out", tmp_path, "--no-surface", "--scheduling", "normal", "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "vessel_summary.json").read_text())
    assert summary["dicom_seg_path"] is None and not (tmp_path / "vessel_seg.dcm").exists()
    assert "StudyInstanceUID" in summary["dicom_seg_note"]
    assert any(w.startswith("no DICOM SEG") for w in summary["warnings"])
    assert "no DICOM SEG" in r.stdout
    assert (tmp_path / "vessel_labels.nii.gz").is_file()


def test_nifti_input_gets_no_seg_and_the_summary_says_why(tmp_path):
    if not NIFTI_CT.is_file():
        pytest.skip(f"shared data not found at {NIFTI_CT}")
    r = needle_nav("segment", NIFTI_CT, "--out", tmp_path, "--no-surface", "--scheduling", "normal")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "vessel_summary.json").read_text())
    assert summary["dicom_seg_path"] is None and "NIfTI" in summary["dicom_seg_note"]
    assert not any("DICOM SEG" in w for w in summary["warnings"])


def highdicom_seg(labels, slices_with_pixels, order):
    """A SEG written by highdicom from a label map (slices, rows, columns), segments in `order` (labels)."""
    descriptions = []
    remapped = np.zeros(labels.shape, np.uint8)
    for number, label in enumerate(order, start=1):
        name, code = CLASSES[label]
        remapped[labels == label] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{name} (highdicom)",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        ))
    return hd.seg.Segmentation(
        source_images=slices_with_pixels,
        pixel_array=remapped,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="highdicom test",
        manufacturer_model_name="test",
        software_versions=hd.__version__,
        device_serial_number="1",
    )


def test_our_reader_gives_back_the_labels_highdicom_wrote(thorax_run, tmp_path):
    out, _, slices = thorax_run
    labels = np.asarray(nib.load(out / "vessel_labels.nii.gz").dataobj).astype(np.uint8)
    by_uid = {s.SOPInstanceUID: p for p in THORAX.iterdir() for s in [pydicom.dcmread(p, stop_before_pixels=True)]}
    datasets = [pydicom.dcmread(by_uid[s.SOPInstanceUID]) for s in slices]
    # Segments numbered aorta, artery, vein: our reader must go by the codes, not by the numbers.
    seg = highdicom_seg(np.transpose(labels, (2, 1, 0)), datasets, order=[3, 1, 2])
    seg.save_as(tmp_path / "hd_seg.dcm")
    r = needle_nav("seg-to-nifti", tmp_path / "hd_seg.dcm", "--out", tmp_path / "back.nii.gz", "--ct", THORAX)
    assert r.returncode == 0, r.stderr
    back = nib.load(tmp_path / "back.nii.gz")
    assert np.array_equal(np.asarray(back.dataobj), labels)
    assert np.allclose(back.affine, nib.load(out / "vessel_labels.nii.gz").affine)
    # Without --ct: the grid the frames span (highdicom leaves out the empty slices at the ends).
    r = needle_nav("seg-to-nifti", tmp_path / "hd_seg.dcm", "--out", tmp_path / "own.nii.gz")
    assert r.returncode == 0, r.stderr
    own = np.asarray(nib.load(tmp_path / "own.nii.gz").dataobj)
    filled = np.flatnonzero(labels.any(axis=(0, 1)))
    assert np.array_equal(own, labels[:, :, filled[0]:filled[-1] + 1])


def plan_json(out):
    p = json.loads((out / "plan.json").read_text())
    for key in ("timing_s", "label_map_path"):
        p.pop(key)
    for layer in p["layers"]:
        layer.pop("path")
    return p


def test_a_plan_on_seg_labels_equals_the_plan_on_the_same_nifti_labels(thorax_run, tmp_path):
    out, _, _ = thorax_run
    plans = {}
    for kind, labels in (("seg", out / "vessel_seg.dcm"), ("nifti", out / "vessel_labels.nii.gz")):
        r = needle_nav("plan", "--case", THORAX_CASE, "--labels", labels, "--out", tmp_path / kind)
        assert r.returncode in (0, 3), r.stderr[-3000:]
        plans[kind] = plan_json(tmp_path / kind)
    assert plans["seg"]["layers"][0]["voxels"] > 0, "the network's vessels are a layer"
    assert plans["seg"] == plans["nifti"]


def test_a_seg_in_another_frame_of_reference_is_refused_by_the_planner(thorax_run, tmp_path):
    out, _, _ = thorax_run
    ds = pydicom.dcmread(out / "vessel_seg.dcm")
    ds.FrameOfReferenceUID = hd.UID()
    ds.save_as(tmp_path / "other_for.dcm")
    r = needle_nav("plan", "--case", THORAX_CASE, "--labels", tmp_path / "other_for.dcm", "--out", tmp_path / "plan")
    assert r.returncode == 2
    assert re.search(r"frame of reference .* the CT in", r.stderr), r.stderr


def test_the_segment_vessels_service_answers_with_the_seg_and_its_uid(processes, peer, tmp_path):
    """The ROS service (vessel_segmentation) writes the SEG for a DICOM series and names it in the
    response, which is what a PACS client stores; for NIfTI input both fields are empty."""
    import rclpy
    from needle_nav_msgs.srv import SegmentVessels

    if not THORAX.is_dir():
        pytest.skip(f"shared data not found at {THORAX}")
    processes.start("vessel_segmentation", "--ros-args", "-p", "worker_scheduling:=normal")
    client = peer.create_client(SegmentVessels, "/needle_nav/segment_vessels")

    def call(deadline_s, **fields):
        end = time.monotonic() + 30
        while not client.service_is_ready():
            assert time.monotonic() < end, "no segment_vessels service"
            rclpy.spin_once(peer, timeout_sec=0.2)
        future = client.call_async(SegmentVessels.Request(**fields))
        end = time.monotonic() + deadline_s
        while not future.done():
            assert time.monotonic() < end, "no response"
            rclpy.spin_once(peer, timeout_sec=0.2)
        return future.result()

    r = call(600, input_path=str(THORAX), output_dir=str(tmp_path / "dicom"), hu_refinement=True)
    assert r.success is True, r.message
    assert r.dicom_seg_path == str(tmp_path / "dicom" / "vessel_seg.dcm")
    ds = pydicom.dcmread(r.dicom_seg_path, stop_before_pixels=True)
    assert ds.SOPInstanceUID == r.dicom_seg_sop_instance_uid and ds.Modality == "SEG"
    if NIFTI_CT.is_file():
        r = call(600, input_path=str(NIFTI_CT), output_dir=str(tmp_path / "nifti"), hu_refinement=True)
        assert r.success is True, r.message
        assert (r.dicom_seg_path, r.dicom_seg_sop_instance_uid) == ("", "")
