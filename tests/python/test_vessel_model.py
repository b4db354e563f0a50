"""The committed vessel segmentation model (models/vessel_unet.onnx): ONNX contract, metadata,
and parity with PyTorch on the committed fixture. Needs only numpy and onnxruntime (no torch):
the fixture holds PyTorch's output recorded at export (training/needle_nav_training/export.py).

Outside CI: .venv-training/bin/python -m pytest --noconftest tests/python/test_vessel_model.py
"""
import json
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "vessel_unet.onnx"
FIXTURE = ROOT / "tests" / "fixtures" / "vessel_unet_parity"
CLASS_NAMES = ["background", "artery", "vein", "aorta"]
TOL = 1e-4


def _varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def _fields(buf):
    """Top-level (field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unexpected wire type {wt}")
        yield num, wt, v


def opset_imports(path):
    """{domain: version} from ModelProto.opset_import (field 8), read without the onnx package."""
    out = {}
    for num, wt, v in _fields(path.read_bytes()):
        if num == 8 and wt == 2:
            dom, ver = "", None
            for n2, _, v2 in _fields(v):
                if n2 == 1:
                    dom = bytes(v2).decode()
                elif n2 == 2:
                    ver = v2
            out[dom] = ver
    return out


@pytest.fixture(scope="module")
def session():
    assert MODEL.is_file(), f"{MODEL} missing: run scripts/train-model.sh"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(MODEL), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def info(session):
    meta = session.get_modelmeta().custom_metadata_map
    assert "needle_nav" in meta, f"metadata keys {sorted(meta)}"
    return json.loads(meta["needle_nav"])


def normalise(hu, norm):
    lo, hi = norm["clip_hu"]
    x = np.clip(hu.astype(np.float32), np.float32(lo), np.float32(hi))
    return (x - np.float32(norm["mean_hu"])) / np.float32(norm["std_hu"])


def test_model_is_small_and_uses_opset_17_or_later():
    assert MODEL.stat().st_size < 10_000_000
    ops = opset_imports(MODEL)
    default = ops.get("", ops.get("ai.onnx"))
    assert default is not None and default >= 17, ops


def test_inputs_and_outputs_follow_the_contract(session):
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert inp.name == "ct" and inp.type == "tensor(float)" and len(inp.shape) == 5
    assert out.name == "probabilities" and out.type == "tensor(float)" and len(out.shape) == 5
    assert inp.shape[1] == 1 and out.shape[1] == 4
    for d in (0, 2, 3, 4):  # N, Z, Y, X dynamic
        assert not isinstance(inp.shape[d], int), inp.shape
        assert not isinstance(out.shape[d], int), out.shape


def test_metadata_is_complete_and_consistent(info):
    assert info["format"] == 1
    assert info["class_names"] == CLASS_NAMES
    assert info["orientation"] == "LPS"
    sp = info["spacing_mm_xyz"]
    assert len(sp) == 3 and all(0 < s <= 10 for s in sp)
    patch = info["patch_size_zyx"]
    assert len(patch) == 3 and all(isinstance(p, int) and p >= 8 and p % 8 == 0 for p in patch)
    n = info["normalisation"]
    lo, hi = n["clip_hu"]
    assert -1100 <= lo < hi <= 4000
    assert lo < n["mean_hu"] < hi and 0 < n["std_hu"] < hi - lo
    for phase in ("contrast", "plain"):
        w = info["hu_windows"][phase]
        assert set(w) == set(CLASS_NAMES[1:]), w
        for c, (a, b) in w.items():
            assert lo <= a < b <= hi, (phase, c, a, b)
    # Plain blood is far below contrast-enhanced blood.
    for c in CLASS_NAMES[1:]:
        assert info["hu_windows"]["plain"][c][1] < info["hu_windows"]["contrast"][c][1]
    t = info["training"]
    for key in ("seed", "torch", "git_commit", "validation_dice", "date"):
        assert key in t, key
    assert isinstance(t["seed"], int) and t["torch"] and t["git_commit"] and t["date"]
    for phase in ("contrast", "plain"):
        for c in CLASS_NAMES[1:]:
            d = t["validation_dice"][phase][c]
            assert d is None or 0.0 <= d <= 1.0


def test_fixture_is_small_and_described(info):
    meta = json.loads((FIXTURE / "meta.json").read_text())
    total = sum(f.stat().st_size for f in FIXTURE.iterdir())
    assert total < 1_000_000
    shape = meta["input_hu"]["shape_zyx"]
    assert meta["input_hu"]["dtype"] == "int16" and meta["torch_probabilities"]["dtype"] == "float32"
    assert meta["torch_probabilities"]["shape"] == [1, 4, *shape]
    assert (FIXTURE / "input_hu.i16").stat().st_size == 2 * int(np.prod(shape))
    assert (FIXTURE / "torch_probabilities.f32").stat().st_size == 4 * 4 * int(np.prod(shape))
    # The fixture was normalised with the model's own normalisation.
    for k in ("clip_hu", "mean_hu", "std_hu"):
        assert meta["normalisation"][k] == info["normalisation"][k], k


def test_onnxruntime_matches_pytorch_on_the_fixture(session, info):
    meta = json.loads((FIXTURE / "meta.json").read_text())
    shape = meta["input_hu"]["shape_zyx"]
    hu = np.fromfile(FIXTURE / "input_hu.i16", dtype="<i2").reshape(shape)
    expected = np.fromfile(FIXTURE / "torch_probabilities.f32", dtype="<f4").reshape(1, 4, *shape)
    # A real crop with vessels, not an empty patch.
    assert hu.min() < -500 and hu.max() > 100
    x = normalise(hu, info["normalisation"])[None, None].astype(np.float32)
    (p,) = session.run(["probabilities"], {"ct": x})
    assert p.shape == expected.shape and p.dtype == np.float32
    diff = float(np.abs(p - expected).max())
    assert diff <= TOL, f"max |onnxruntime - pytorch| = {diff}"
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    # The network finds vessels in it.
    assert (p[0].argmax(0) > 0).sum() > 0


def test_any_size_divisible_by_8_and_batches_work(session):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 1, 16, 24, 40)).astype(np.float32)
    (p,) = session.run(["probabilities"], {"ct": x})
    assert p.shape == (2, 4, 16, 24, 40)
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # Batch items are independent (eval mode: no batch statistics).
    (p0,) = session.run(["probabilities"], {"ct": x[:1]})
    assert np.abs(p0 - p[:1]).max() < 1e-5
