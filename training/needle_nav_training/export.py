"""ONNX export with the `needle_nav` metadata, and the PyTorch/onnxruntime parity fixture.

Contract (read by src/core/segmentation/model_info.rs):
  input  `ct`            float32 [N, 1, Z, Y, X], already normalised, Z, Y, X multiples of 8
  output `probabilities` float32 [N, 4, Z, Y, X], softmax over axis 1
  opset 17; metadata_props key `needle_nav` = JSON (see `metadata`).
"""
from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from . import CLASS_NAMES
from .model import VesselUNet, VesselUNetExport

OPSET = 17
METADATA_KEY = "needle_nav"
PARITY_TOL = 1e-4


def git_commit(repo: Path) -> str:
    """HEAD of the checkout (read only), with '-dirty' when tracked files differ."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def metadata(spacing_xyz, patch_zyx, norm: dict, hu_windows: dict, training: dict) -> dict:
    """The JSON the runtime takes spacing, patch, normalisation, classes and windows from."""
    for phase in ("contrast", "plain"):
        for c in CLASS_NAMES[1:]:
            lo, hi = hu_windows[phase][c]
            assert lo < hi, (phase, c, lo, hi)
    assert all(p % 8 == 0 for p in patch_zyx)
    return {
        "format": 1,
        "spacing_mm_xyz": [float(s) for s in spacing_xyz],
        "patch_size_zyx": [int(p) for p in patch_zyx],
        "normalisation": {"clip_hu": [float(norm["clip_hu"][0]), float(norm["clip_hu"][1])],
                          "mean_hu": float(norm["mean_hu"]), "std_hu": float(norm["std_hu"])},
        "class_names": list(CLASS_NAMES),
        "hu_windows": {phase: {c: [float(v) for v in hu_windows[phase][c]] for c in CLASS_NAMES[1:]}
                       for phase in ("contrast", "plain")},
        "orientation": "LPS",
        "training": training,
    }


def normalise(hu: np.ndarray, norm: dict) -> np.ndarray:
    """hu -> clip(hu, lo, hi) -> (hu - mean) / std, in float32 as the runtime does it."""
    lo, hi = norm["clip_hu"]
    x = np.clip(hu.astype(np.float32), np.float32(lo), np.float32(hi))
    return ((x - np.float32(norm["mean_hu"])) / np.float32(norm["std_hu"])).astype(np.float32)


def export_onnx(net: VesselUNet, path: Path, meta: dict, example_zyx=(32, 32, 32)) -> None:
    import onnx

    net = net.eval()
    wrapper = VesselUNetExport(net).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 1, *example_zyx)
    with warnings.catch_warnings():
        # The legacy (TorchScript) exporter is used on purpose: opset 17, dynamic axes.
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(wrapper, example, path)
    model = onnx.load(str(path))
    model.producer_name = "needle_nav training"
    onnx.save(model, str(path))
    set_metadata(path, meta)
    check_shapes(path)


def _export(wrapper, example, path: Path) -> None:
    torch.onnx.export(
        wrapper, (example,), str(path), dynamo=False, opset_version=OPSET,
        input_names=["ct"], output_names=["probabilities"],
        dynamic_axes={"ct": {0: "N", 2: "Z", 3: "Y", 4: "X"},
                      "probabilities": {0: "N", 2: "Z", 3: "Y", 4: "X"}},
        do_constant_folding=True,
    )


def set_metadata(path: Path, meta: dict) -> None:
    """Replaces the `needle_nav` metadata of an exported model (the graph is unchanged)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def check_shapes(path: Path) -> None:
    """The graph runs at several sizes and batch sizes, and its output sums to 1."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 16, 24, 32), (2, 1, 8, 8, 16)]:
        x = rng.standard_normal(shape).astype(np.float32)
        (p,) = sess.run(["probabilities"], {"ct": x})
        assert p.shape == (shape[0], 4, *shape[2:]), p.shape
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)


def torch_probabilities(net: VesselUNet, x: np.ndarray) -> np.ndarray:
    net = net.eval()
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy().astype(np.float32)


def write_parity_fixture(net: VesselUNet, onnx_path: Path, hu_crop: np.ndarray, norm: dict,
                         out_dir: Path, source: str) -> float:
    """Writes input_hu.i16, torch_probabilities.f32 and meta.json; asserts onnxruntime matches
    PyTorch within PARITY_TOL on the probabilities. Returns the max abs difference."""
    import onnxruntime as ort

    assert hu_crop.ndim == 3 and all(s % 8 == 0 for s in hu_crop.shape)
    hu16 = np.clip(np.round(hu_crop), -32768, 32767).astype("<i2")
    x = normalise(hu16, norm)[None, None]
    p_torch = torch_probabilities(net, x)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (p_ort,) = sess.run(["probabilities"], {"ct": x})
    diff = float(np.abs(p_ort - p_torch).max())
    if not diff <= PARITY_TOL:
        raise AssertionError(f"onnxruntime differs from PyTorch by {diff} > {PARITY_TOL}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "input_hu.i16").write_bytes(hu16.tobytes(order="C"))
    (out_dir / "torch_probabilities.f32").write_bytes(p_torch.astype("<f4").tobytes(order="C"))
    z, y, xx = hu16.shape
    meta = {
        "input_hu": {"file": "input_hu.i16", "dtype": "int16", "byte_order": "little",
                     "shape_zyx": [z, y, xx], "layout": "C order [Z, Y, X], X fastest; LPS axes"},
        "torch_probabilities": {"file": "torch_probabilities.f32", "dtype": "float32",
                                "byte_order": "little", "shape": [1, 4, z, y, xx],
                                "layout": "C order [N, class, Z, Y, X]"},
        "normalisation": {"clip_hu": list(norm["clip_hu"]), "mean_hu": norm["mean_hu"], "std_hu": norm["std_hu"],
                          "applied": "x = (clip(float32(hu), lo, hi) - mean_hu) / std_hu in float32, "
                                     "then the model in eval mode, softmax over the class axis"},
        "tolerance_max_abs": PARITY_TOL,
        "max_abs_diff_at_export": diff,
        "source": source,
        "class_voxels_torch_argmax": [int(v) for v in np.bincount(p_torch[0].argmax(0).ravel(), minlength=4)],
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return diff
