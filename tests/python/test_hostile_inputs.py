"""Hostile but fair inputs to the command line (issue 11, defects 3, 4, 5, 6 and 9). The bad files
are written by independent tools (nibabel writes the NIfTI headers, pydicom confirms a corrupt
slice is unreadable), and every refusal must name what is wrong, exit non-zero without a panic,
and lose nothing that was there before."""
import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import executable

SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
# Far above the normal run time of each command; the assertions are on the answer, not the time.
PATIENCE_S = 120


def needle_nav(*args, stdin=None, timeout=PATIENCE_S):
    try:
        return subprocess.run([executable("needle_nav"), *map(str, args)], input=stdin, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"needle_nav {' '.join(map(str, args))} gave no answer within {timeout} s")


def assert_refused(run, *expected):
    """Exit 1 or 2 (not 101: a panic), no backtrace, and every expected phrase in the message."""
    text = run.stdout + run.stderr
    assert run.returncode in (1, 2), f"exit {run.returncode}: {text}"
    assert "panicked" not in text and "RUST_BACKTRACE" not in text, text
    for phrase in expected:
        assert phrase in text, f"{phrase!r} not in: {text}"


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# --- defect 3: register with coordinates whose squares overflow -------------------------------

@pytest.mark.parametrize("value", [1e154, 1e155, 1e300])
def test_register_refuses_coordinates_beyond_any_patient_and_names_the_marker(value):
    square = [[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]]
    huge = [[value, 0, 0], [0, value, 0], [0, 0.1, 0], [0, 0, 0.1]]
    run = needle_nav("register", stdin=json.dumps({"moving": huge, "fixed": huge}))
    assert_refused(run, "moving marker 0", "max_abs_coordinate")
    run = needle_nav("register", stdin=json.dumps({"moving": square, "fixed": huge}))
    assert_refused(run, "fixed marker 0", "max_abs_coordinate")
    # A plain registration still works.
    ok = needle_nav("register", stdin=json.dumps({"moving": square, "fixed": square}))
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "Ok", ok.stdout


# --- defect 4: NIfTI geometry ------------------------------------------------------------------

def ct_like():
    """A 24^3 block of soft tissue in air, int16 HU."""
    data = np.full((24, 24, 24), -1000, dtype=np.int16)
    data[4:20, 4:20, 4:20] = 40
    return data


AFFINE = np.array([[-1.5, 0, 0, 90.0], [0, -1.5, 0, 120.0], [0, 0, 2.0, -300.0], [0, 0, 0, 1]])


def qform_only_with_pixdim(path, value):
    """nibabel's header with a qform only and the given voxel size, written by nibabel's header
    writer (its image writer would repair a zero or negative pixdim)."""
    data = ct_like()
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.int16)
    header.set_qform(AFFINE, code=1)
    header.set_sform(None, code=0)
    header["pixdim"][1:4] = value
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\0" * 4)
        f.write(data.tobytes(order="F"))
    with gzip.open(path, "rb") as f:  # unchecked: nibabel's own check would repair the header
        back = nib.Nifti1Header.from_fileobj(f, check=False)
    assert back["sform_code"] == 0 and back["qform_code"] == 1 and back["pixdim"][1] == np.float32(value)


def with_sform(path, sform, qform=None):
    img = nib.Nifti1Image(ct_like(), None)
    img.header.set_sform(sform, code=1)
    if qform is None:
        img.header.set_qform(None, code=0)
    else:
        img.header.set_qform(qform, code=1)
    nib.save(img, path)
    assert np.allclose(nib.load(path).header.get_sform(), sform, rtol=1e-6, equal_nan=True)


def scaled(a, factor):
    b = a.copy()
    b[:3, :3] *= factor
    return b


def shifted(a, mm):
    b = a.copy()
    b[0, 3] += mm
    return b


def sheared(a):
    b = a.copy()
    b[1, 2] = 1.0  # slices stacked at 27 degrees: gantry tilt
    return b


def singular(a):
    b = a.copy()
    b[:3, 1] = 0.0
    return b


def with_nan(a):
    b = a.copy()
    b[0, 0] = np.nan
    return b


BAD_GEOMETRY = {
    # Issue 11: exit 101 (a panic in volume.rs).
    "qform pixdim 1e30": (lambda p: qform_only_with_pixdim(p, 1e30), ["pixdim[1]", "1e30"]),
    "qform pixdim 0": (lambda p: qform_only_with_pixdim(p, 0.0), ["pixdim[1]"]),
    "qform pixdim negative": (lambda p: qform_only_with_pixdim(p, -2.0), ["pixdim[1]"]),
    # Issue 11: exit 0 with an all-background segmentation.
    "sform scaled 1e-30": (lambda p: with_sform(p, scaled(AFFINE, 1e-30)), ["sform", "voxel size along axis 0"]),
    "sform scaled 1e30": (lambda p: with_sform(p, scaled(AFFINE, 1e30)), ["sform", "voxel size along axis 0"]),
    "sform singular": (lambda p: with_sform(p, singular(AFFINE)), ["sform", "voxel axis 1 has zero length"]),
    "sform not finite": (lambda p: with_sform(p, with_nan(AFFINE)), ["sform", "non-finite"]),
    "sform sheared": (lambda p: with_sform(p, sheared(AFFINE)), ["sform", "not unit and perpendicular"]),
    "sform and qform disagree": (lambda p: with_sform(p, AFFINE, shifted(AFFINE, 50.0)),
                                 ["sform and qform disagree", "origins 50.00 mm apart"]),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOMETRY))
def test_nifti_geometry_outside_physical_sense_is_refused_naming_the_field(case, tmp_path):
    write, phrases = BAD_GEOMETRY[case]
    path = tmp_path / "ct.nii.gz"
    write(path)
    for mode in ([], ["--classic"]):
        run = needle_nav("segment", path, "--out", tmp_path / "out", *mode)
        assert_refused(run, *phrases)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_nifti_with_sane_geometry_still_segments(tmp_path):
    path = tmp_path / "ct.nii.gz"
    with_sform(path, AFFINE, AFFINE)
    run = needle_nav("segment", path, "--out", tmp_path / "out", "--classic")
    assert run.returncode == 0, run.stderr
    mask = nib.load(tmp_path / "out" / "vessel_mask_classic.nii.gz")
    assert mask.shape == (24, 24, 24) and np.allclose(mask.affine, AFFINE, atol=1e-4)


# --- defect 5: silent overwrites -----------------------------------------------------------------

def test_segment_keeps_an_earlier_result_unless_asked_and_overwrite_replaces_all_of_it(tmp_path):
    path = tmp_path / "ct.nii.gz"
    with_sform(path, AFFINE, AFFINE)
    out = tmp_path / "out"
    first = needle_nav("segment", path, "--out", out)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["vessel_labels.nii.gz", "vessel_summary.json",
                                                      "vessel_surface.ply"]
    before = digest(out)
    # Issue 11: the second run replaced the first without a word.
    again = needle_nav("segment", path, "--out", out, "--no-refinement")
    assert_refused(again, "already holds a result", "vessel_labels.nii.gz", "--overwrite")
    assert digest(out) == before
    replaced = needle_nav("segment", path, "--out", out, "--no-refinement", "--no-surface", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    # One run's files only: the earlier surface is gone, the summary is the new run's.
    assert sorted(p.name for p in out.iterdir()) == ["vessel_labels.nii.gz", "vessel_summary.json"]
    summary = json.loads((out / "vessel_summary.json").read_text())
    assert summary["hu_refinement"] is False and summary["surface_path"] is None
    assert nib.load(out / "vessel_labels.nii.gz").shape == (24, 24, 24)
    # The classic mask likewise.
    assert needle_nav("segment", path, "--out", out, "--classic").returncode == 0
    mask = digest(out)["vessel_mask_classic.nii.gz"]
    assert_refused(needle_nav("segment", path, "--out", out, "--classic"), "vessel_mask_classic.nii.gz")
    assert digest(out)["vessel_mask_classic.nii.gz"] == mask


SMALL_CASE = ["--dims", "96x80x40", "--spacing", "4x4x6"]


def test_phantom_keeps_a_case_replaces_it_only_when_asked_without_stale_slices(tmp_path):
    case = tmp_path / "case"
    run = needle_nav("phantom", "--out", case, "--phases", "2", "--dims", "96x80x48", "--spacing", "4x4x6")
    assert run.returncode == 0, run.stderr
    before = digest(case)
    # Issue 11: a second case into the folder left the first's extra slices in ct/.
    again = needle_nav("phantom", "--out", case, "--phases", "1", *SMALL_CASE)
    assert_refused(again, "already holds a needle_nav case", "--overwrite")
    assert digest(case) == before
    replaced = needle_nav("phantom", "--out", case, "--phases", "1", *SMALL_CASE, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    slices = [pydicom.dcmread(p) for p in sorted((case / "ct").iterdir())]
    assert len(slices) == 40 and len({s.SeriesInstanceUID for s in slices}) == 1
    z = sorted(float(s.ImagePositionPatient[2]) for s in slices)
    assert np.allclose(np.diff(z), 6.0)
    assert not (case / "phases").exists()
    assert sorted(p.name for p in case.iterdir()) == ["case.json", "ct", "ct.nii.gz", "labels.nii.gz",
                                                       "lesion_mask.nii.gz", "marker_mask.nii.gz"]
    assert json.loads((case / "case.json").read_text())["geometry"]["dims"] == [96, 80, 40]
    # The replaced case's series loads (it was refused with stale slices).
    assert needle_nav("segment", case / "ct", "--out", tmp_path / "seg", "--classic").returncode == 0
    # Anything that is not part of a case: refused, even with --overwrite, and nothing touched.
    (case / "my_notes.txt").write_text("keep me")
    before = digest(case)
    refused = needle_nav("phantom", "--out", case, *SMALL_CASE, "--overwrite")
    assert_refused(refused, "my_notes.txt", "not part of a needle_nav case")
    assert digest(case) == before


# --- defect 6: corrupt slices of a DICOM series -------------------------------------------------

@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory):
    case = tmp_path_factory.mktemp("series") / "case"
    run = needle_nav("phantom", "--out", case, *SMALL_CASE)
    assert run.returncode == 0, run.stderr
    return case / "ct"


def corrupt(path, how):
    size = path.stat().st_size
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(bytes([0xA5]) * size)
    with pytest.raises(Exception):  # the peer cannot read it either
        pydicom.dcmread(path).pixel_array


def sorted_slices(folder):
    return sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                       .ImagePositionPatient[2]))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_corrupt_slice_is_refused_by_name_and_skipped_only_on_request(phantom_series, tmp_path, where, how):
    series = tmp_path / "ct"
    shutil.copytree(phantom_series, series)
    files = sorted_slices(series)
    victim = files[{"first": 0, "middle": len(files) // 2, "last": -1}[where]]
    corrupt(victim, how)
    # Issue 11: first/last skipped with exit 0 (a shorter CT), middle refused without the name.
    run = needle_nav("segment", series, "--out", tmp_path / "out", "--classic")
    assert_refused(run, victim.name, "cannot be read", "--skip-unreadable-slices")
    skipped = needle_nav("segment", series, "--out", tmp_path / "out", "--classic", "--skip-unreadable-slices")
    if where == "middle":
        # The gap it leaves is refused, naming the file.
        assert_refused(skipped, "not uniform", victim.name)
    else:
        assert skipped.returncode == 0, skipped.stderr
        assert "warning: skipped unreadable slice" in skipped.stderr and victim.name in skipped.stderr
        mask = nib.load(tmp_path / "out" / "vessel_mask_classic.nii.gz")
        assert mask.shape[2] == len(files) - 1


def test_a_truncated_last_slice_of_the_real_thorax_series_is_refused(tmp_path):
    source = SHARED / "thorax_ct_dicom"
    if not source.is_dir():
        pytest.skip(f"shared data not found at {source}")
    series = tmp_path / "thorax"
    shutil.copytree(source, series)
    victim = sorted_slices(series)[-1]
    victim.write_bytes(victim.read_bytes()[:-20000])  # header intact, pixel data cut
    with pytest.raises(Exception):
        pydicom.dcmread(victim).pixel_array
    run = needle_nav("segment", series, "--out", tmp_path / "out", "--classic")
    assert_refused(run, victim.name)
    skipped = needle_nav("segment", series, "--out", tmp_path / "out", "--classic", "--skip-unreadable-slices")
    assert skipped.returncode == 0, skipped.stderr
    assert nib.load(tmp_path / "out" / "vessel_mask_classic.nii.gz").shape == (512, 512, 140)


# --- defect 9: phantom size ----------------------------------------------------------------------

def test_phantom_refuses_a_grid_beyond_its_voxel_limit_before_allocating(tmp_path):
    out = tmp_path / "big"
    run = needle_nav("phantom", "--out", out, "--dims", "2048x2048x2048", timeout=60)
    assert_refused(run, "2048x2048x2048 = 8589934592 voxels", "max_voxels 134217728", "--max-voxels")
    assert not out.exists()
    run = needle_nav("phantom", "--out", out, "--dims", "32x32x32", "--max-voxels", "1000")
    assert_refused(run, "32768 voxels", "max_voxels 1000")
