"""The digital patient on disk, read back by independent readers: pydicom (DICOM), nibabel
(NIfTI) and scipy.ndimage (marker detection). Geometry, HU values, markers, lesion, 4-D
phases and determinism must agree with case.json."""
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import executable
from scipy import ndimage

ARGS = ["--dims", "176x128x160", "--spacing", "2x2x2"]


def make_case(out, *extra):
    subprocess.run([executable("needle_nav"), "phantom", "--out", str(out), *ARGS, *extra],
                   check=True, capture_output=True, text=True)
    return json.loads((out / "case.json").read_text())


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("case")
    return out, make_case(out, "--seed", "3", "--phases", "3")


def read_series(folder):
    """HU volume indexed [i, j, k] (column, row, slice), slices sorted along the normal."""
    slices = [pydicom.dcmread(p) for p in Path(folder).glob("*.dcm")]
    normal = np.cross(*np.array(slices[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, dtype=float))))
    hu = np.stack([s.pixel_array.astype(np.float64) * float(s.RescaleSlope) + float(s.RescaleIntercept)
                   for s in slices], axis=-1)  # (rows, cols, slices)
    return np.transpose(hu, (1, 0, 2)), slices


def detect_markers(hu, slices):
    """Marker centres (mm, LPS): blobs above 1500 HU, grown by one voxel to take in the
    partial-volume rim, centroid weighted by HU above the soft-tissue level."""
    blobs, n = ndimage.label(hu > 1500)
    centres = []
    for index in range(1, n + 1):
        region = ndimage.binary_dilation(blobs == index, iterations=1)
        weights = np.where(region, np.clip(hu - 100.0, 0.0, None), 0.0)
        centres.append(index_to_lps(slices, np.array(ndimage.center_of_mass(weights))))
    return centres


def index_to_lps(slices, ijk):
    """Patient position (mm, LPS) of voxel indices, from the DICOM attributes alone."""
    s0 = slices[0]
    row_dir, col_dir = np.array(s0.ImageOrientationPatient, dtype=float).reshape(2, 3)
    dy, dx = (float(v) for v in s0.PixelSpacing)
    p0 = np.array(s0.ImagePositionPatient, dtype=float)
    step = np.array(slices[1].ImagePositionPatient, dtype=float) - p0
    ijk = np.asarray(ijk, dtype=float)
    return p0 + ijk[..., 0:1] * dx * row_dir + ijk[..., 1:2] * dy * col_dir + ijk[..., 2:3] * step


def test_dicom_and_nifti_geometry_and_hu_agree(case):
    out, truth = case
    hu, slices = read_series(out / "ct")
    g = truth["geometry"]
    assert hu.shape == tuple(g["dims"])
    s0 = slices[0]
    assert s0.Modality == "CT" and s0.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert [float(v) for v in s0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in s0.PixelSpacing] == [g["spacing_mm"][1], g["spacing_mm"][0]]
    np.testing.assert_allclose([float(v) for v in s0.ImagePositionPatient], g["origin_mm"], atol=1e-3)
    positions = np.array([[float(v) for v in s.ImagePositionPatient] for s in slices])
    np.testing.assert_allclose(np.diff(positions[:, 2]), g["spacing_mm"][2], atol=1e-4)
    assert float(s0.SliceThickness) == g["spacing_mm"][2]
    assert len({s.SOPInstanceUID for s in slices}) == len(slices)
    assert len({s.SeriesInstanceUID for s in slices}) == 1

    img = nib.load(out / "ct.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), hu)
    # nibabel's affine maps voxels to RAS: it must equal the DICOM geometry with x and y flipped.
    ijk = np.array([[0, 0, 0], [10, 20, 30], [175, 127, 159]])
    lps = index_to_lps(slices, ijk)
    ras = nib.affines.apply_affine(img.affine, ijk)
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-3)
    assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 1
    np.testing.assert_allclose(img.header.get_qform(), img.affine, atol=1e-4)

    labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    for name, value in (("artery", 1), ("vein", 2), ("aorta", 3)):
        assert truth["reference"]["label_counts"][name]["voxels"] == int((labels == value).sum())
        # contrast-enhanced vessels are in the hundreds of HU
        assert np.median(hu[labels == value]) > 150


def test_markers_and_lesion_found_in_the_ct_are_where_case_json_says(case):
    out, truth = case
    hu, slices = read_series(out / "ct")
    found = detect_markers(hu, slices)
    markers = truth["reference"]["markers"]
    assert len(found) == len(markers) == 12
    for m in markers:
        distances = [np.linalg.norm(f - m["centre_mm"]) for f in found]
        assert min(distances) < 0.5, f"marker {m['id']}: nearest detection {min(distances):.2f} mm away"
    regions = {m["region"] for m in markers}
    assert regions == {"sternum", "upper_chest", "lower_chest", "abdomen"}

    lesion = np.asarray(nib.load(out / "lesion_mask.nii.gz").dataobj)
    centre = index_to_lps(slices, np.array(ndimage.center_of_mass(lesion)))
    np.testing.assert_allclose(centre, truth["reference"]["lesion_centre_mm"], atol=0.5)
    r = truth["reference"]["lesion_radius_mm"]
    volume = lesion.sum() * 8.0
    assert abs(volume - 4 / 3 * np.pi * r ** 3) / volume < 0.1
    assert abs(np.median(hu[lesion == 1]) - 30) < 60  # soft-tissue nodule in lung


def test_4d_phases_are_series_of_the_same_frame_with_moving_markers_and_lesion(case):
    out, truth = case
    phases = truth["phases"]
    assert len(phases) == 3
    uids, for_uids, lesion_z = set(), set(), []
    for ph in phases:
        hu, slices = read_series(out / ph["dicom_dir"])
        s0 = slices[0]
        uids.add(s0.SeriesInstanceUID)
        for_uids.add(s0.FrameOfReferenceUID)
        assert s0.AcquisitionTime == ph["acquisition_time"]
        found = detect_markers(hu, slices)
        assert len(found) == 12
        for m in ph["markers"]:
            assert min(np.linalg.norm(f - m["centre_mm"]) for f in found) < 0.5
        lesion_z.append(ph["lesion_centre_mm"][2])
    assert len(uids) == 3 and len(for_uids) == 1
    assert max(lesion_z) - min(lesion_z) > 3.0, f"lesion barely moves across phases: {lesion_z}"
    times = [ph["time_s"] for ph in phases]
    assert times == sorted(times)


def test_same_seed_same_case_and_plain_ct_has_plain_vessels(tmp_path, case):
    out, truth = case
    again = make_case(tmp_path / "again", "--seed", "3")
    a = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "again" / "ct.nii.gz").dataobj)
    np.testing.assert_array_equal(a, b)
    assert again["reference"]["markers"] == truth["reference"]["markers"]
    other = make_case(tmp_path / "other", "--seed", "4", "--plain")
    c = np.asarray(nib.load(tmp_path / "other" / "ct.nii.gz").dataobj)
    assert not np.array_equal(a, c)
    labels = np.asarray(nib.load(tmp_path / "other" / "labels.nii.gz").dataobj)
    for value in (1, 2, 3):
        assert abs(np.median(c[labels == value]) - 40) < 30  # plain blood
    assert other["config"]["phantom"]["contrast"] is False
