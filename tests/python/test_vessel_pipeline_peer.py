"""needle_nav segment (Rust, ort) against an independent Python implementation of the same
pipeline (numpy/scipy/onnxruntime, tests/python/vessel_peer.py) with the committed model, on a
real NIfTI (LAS orientation) and on a DICOM series that pydicom reads."""
import os
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
ort = pytest.importorskip("onnxruntime")

import vessel_peer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release")) / "needle_nav"
MODEL = ROOT / "models" / "vessel_unet.onnx"
SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", ROOT.parent / "shared" / "data"))


def session():
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])


def rust_segment(inp, out, *args):
    run = subprocess.run([str(EXE), "segment", str(inp), "--out", str(out), *args], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    return nib.load(str(out / "vessel_labels.nii.gz"))


def assert_agree(rust, peer):
    assert rust.shape == peer.shape
    same = float((rust == peer).mean())
    assert same > 0.9999, f"only {same:.5f} of voxels agree"
    for c in (1, 2, 3):
        a, b = rust == c, peer == c
        if a.sum() + b.sum() >= 200:
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            assert dice > 0.97, f"class {c}: Dice {dice:.4f} between Rust and the Python peer"


def test_rust_pipeline_matches_the_python_peer_on_a_real_nifti(tmp_path):
    ct = SHARED / "chest_cta_pulmonary_artery" / "ct_cropped.nii.gz"
    if not ct.is_file():
        pytest.skip(f"shared data not found at {ct}")
    img = rust_segment(ct, tmp_path)
    source = nib.load(str(ct))
    np.testing.assert_allclose(img.affine, source.affine, atol=1e-4)
    hu, affine = vessel_peer.load_nifti(ct)
    peer, _ = vessel_peer.segment(hu, affine, session())
    rust = np.asarray(img.dataobj)
    assert_agree(rust, peer)
    # The model must find a real structure here, not just agree on emptiness.
    assert (rust > 0).sum() > 1000
    # The refinement as the method states it (until nothing changes) agrees as well.
    unbounded = np.asarray(rust_segment(ct, tmp_path / "unbounded", "--refinement-passes", "0").dataobj)
    peer_unbounded, _ = vessel_peer.segment(hu, affine, session(), refinement_passes=10**9)
    assert_agree(unbounded, peer_unbounded)


def test_rust_pipeline_matches_the_python_peer_on_a_dicom_series(tmp_path):
    case = tmp_path / "case"
    subprocess.run([str(EXE), "phantom", "--out", str(case), "--seed", "9003", "--dims", "128x96x80",
                    "--spacing", "2.5x2.5x3"], check=True, capture_output=True, timeout=300)
    img = rust_segment(case / "ct", tmp_path / "out")
    hu, affine = vessel_peer.load_dicom_series(case / "ct")
    peer, contrast = vessel_peer.segment(hu, affine, session())
    # Both judge the phase the same way (from the network's vessel voxels). The old Rust digital patient
    # (uniform tissues) is not what the anatomical model learned from: on it the network labels soft
    # tissue and the phase comes out plain; the model's quality is checked on real scans
    # (test_vessel_real_gates.py) and on held-out anatomical patients (training report), not here.
    summary = json.loads((tmp_path / "out" / "vessel_summary.json").read_text())
    assert summary["contrast_enhanced"] == contrast
    rust = np.asarray(img.dataobj)
    assert_agree(rust, peer)
    assert (rust > 0).sum() > 1000  # agreement on a real label map, not on emptiness
