"""Sliding-window inference (as the runtime does it: patches of the model's patch size with
overlap, Gaussian blending, argmax) and Dice."""
from __future__ import annotations

import numpy as np
import torch

from . import CLASS_NAMES
from .data import AIR_HU
from .export import normalise


def axis_origins(n: int, p: int, overlap: float) -> list[int]:
    if n <= p:
        return [0]
    step = max(1, int(round(p * (1 - overlap))))
    o = list(range(0, n - p, step))
    o.append(n - p)
    return sorted(set(o))


def gaussian(p: int) -> np.ndarray:
    c, s = (p - 1) / 2, p / 8
    g = np.exp(-((np.arange(p) - c) ** 2) / (2 * s * s))
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def torch_infer(net):
    """Batch [B, 1, p, p, p] float32 -> probabilities [B, 4, p, p, p] with the PyTorch model."""
    net.eval()

    def run(xb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(xb)), dim=1).numpy()

    return run


def ort_infer(onnx_path, threads: int = 2):
    """The same with the exported ONNX model in onnxruntime (what ships)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return lambda xb: sess.run(["probabilities"], {"ct": xb})[0]


def predict_volume(infer, hu: np.ndarray, norm: dict, patch: int, overlap: float = 0.5, batch: int = 1):
    """Class probabilities [4, Z, Y, X] of a [Z, Y, X] HU volume (padded with air to >= patch).
    `infer` maps a normalised batch [B, 1, p, p, p] to probabilities."""
    shape = hu.shape
    pad = [(0, max(0, patch - n)) for n in shape]
    x = normalise(np.pad(hu, pad, constant_values=AIR_HU), norm)
    dims = x.shape
    acc = np.zeros((4, *dims), np.float32)
    wsum = np.zeros(dims, np.float32)
    w = gaussian(patch)
    origins = [(z, y, xx) for z in axis_origins(dims[0], patch, overlap)
               for y in axis_origins(dims[1], patch, overlap) for xx in axis_origins(dims[2], patch, overlap)]
    for i in range(0, len(origins), batch):
        chunk = origins[i:i + batch]
        xb = np.ascontiguousarray(np.stack([x[z:z + patch, y:y + patch, xx:xx + patch] for z, y, xx in chunk])[:, None])
        pb = infer(xb)
        for (z, y, xx), pr in zip(chunk, pb):
            acc[:, z:z + patch, y:y + patch, xx:xx + patch] += pr * w
            wsum[z:z + patch, y:y + patch, xx:xx + patch] += w
    prob = acc / wsum
    return prob[:, :shape[0], :shape[1], :shape[2]]


def dice_counts(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Per vessel class: intersection, predicted voxels, true voxels."""
    out = {}
    for c in range(1, 4):
        p, t = pred == c, truth == c
        out[CLASS_NAMES[c]] = [int((p & t).sum()), int(p.sum()), int(t.sum())]
    return out


def dice_from_counts(counts: dict) -> dict:
    out = {}
    for name, (i, p, t) in counts.items():
        out[name] = None if p + t == 0 else round(2.0 * i / (p + t), 4)
    return out


def pooled(counts_list: list[dict]) -> dict:
    tot = {}
    for counts in counts_list:
        for k, v in counts.items():
            tot[k] = [a + b for a, b in zip(tot.get(k, [0, 0, 0]), v)]
    return tot


def batch_counts(logits: torch.Tensor, target: torch.Tensor) -> dict:
    """Dice counts per vessel class over a batch of patches (for the training curve)."""
    pred = logits.argmax(1)
    out = {}
    for c in range(1, 4):
        p, t = pred == c, target == c
        out[CLASS_NAMES[c]] = [int((p & t).sum()), int(p.sum()), int(t.sum())]
    return out
