"""Training batches rendered on the fly from the anatomical digital patient (anatomy.py).

Batch k is a pure function of (seed, k): patient, phase, field of view, synthesis and patch draws all
come from numpy Generators seeded with [seed, k]. Workers of a torch DataLoader each take every W-th
batch and the loader hands them out round-robin, so the stream (and a resumed run) is the same for any
number of workers: 1 on a 2-core CPU, 15 on a GPU machine.

Mix per batch (documented in the report):
  * 10 % the real contrast abdomen series (JPEG 2000, TotalSegmentator labels), half of them as its
    synthesised non-contrast version;
  * else a new digital patient: 40 % synthesised non-contrast (rendered in a contrast phase, then every
    blood pool lowered by its enhancement as the method says), 20 % rendered non-contrast, 40 %
    contrast (pulmonary arterial, systemic arterial, portal venous): 60 % of all batches plain.
  * fields of view: chest 35 %, heart crop 20 %, abdomen 30 %, pelvis 15 %.
Patches: 5/8 of each batch centred on a vessel voxel of a class drawn uniformly among those present, 3 anywhere in
the body box; a global HU offset (+-10 HU) and scale (0.95-1.05).
"""
from __future__ import annotations

import numpy as np
import torch

from . import anatomy as A
from .export import normalise
from .synthesis import synthesise_plain

AIR_HU = -1024.0
CONTRAST_PHASES = ("pulmonary_arterial", "systemic_arterial", "portal_venous")
FOV_P = {"chest": 0.35, "heart": 0.20, "abdomen": 0.30, "pelvis": 0.15}


def blood_labels(r: A.Rendered) -> np.ndarray:
    """Labels for the synthesis step only: vessel classes plus the heart chambers, which are blood too
    (right heart with the pulmonary arteries, left heart with the aorta), so a synthesised plain scan
    has no bright chambers left."""
    lab = r.labels.copy()
    lab[r.tissue == A.T["heart_blood_right"]] = 1
    lab[r.tissue == A.T["heart_blood_left"]] = 3
    return lab


def draw_case(seed: int, k: int, windows: dict, real: dict | None, real_fraction: float = 0.1):
    """(hu, labels, description) of batch k."""
    rng = np.random.default_rng([seed, k, 1])
    if real is not None and rng.random() < real_fraction:
        if rng.random() < 0.5:
            return real["hu"], real["labels"], "real_contrast"
        plain, _ = synthesise_plain(real["hu"], real["labels"], windows, rng)
        return plain, real["labels"], "real_synth_plain"
    patient = int(10_000_000 + seed * 100_000 + k)
    fov = rng.choice(list(FOV_P), p=list(FOV_P.values()))
    u = rng.random()
    if u < 0.2:
        r = A.render(patient, "plain", fov)
        return r.hu, r.labels, f"plain/{fov}"
    phase = CONTRAST_PHASES[int(rng.integers(0, 3))]
    r = A.render(patient, phase, fov)
    if u < 0.6:
        plain, _ = synthesise_plain(r.hu, blood_labels(r), windows, rng)
        return plain, r.labels, f"synth_plain({phase})/{fov}"
    return r.hu, r.labels, f"{phase}/{fov}"


def sample_patches(hu, labels, n, n_vessel, patch, rng):
    shape = np.array(hu.shape)
    body = hu > -500
    zz, yy, xx = np.nonzero(body[::4, ::4, ::4])
    lo = np.array([zz.min(), yy.min(), xx.min()]) * 4 if len(zz) else np.zeros(3, int)
    hi = np.array([zz.max(), yy.max(), xx.max()]) * 4 + 1 if len(zz) else shape
    flat = labels.ravel()
    voxels = {c: idx for c in (1, 2, 3) if len(idx := np.flatnonzero(flat == c))}
    present = list(voxels)
    xs, ys = [], []
    for i in range(n):
        if i < n_vessel and present:
            c = present[int(rng.integers(0, len(present)))]
            idx = voxels[c]
            centre = np.array(np.unravel_index(idx[int(rng.integers(0, len(idx)))], hu.shape))
            centre = centre + rng.integers(-patch // 4, patch // 4 + 1, 3)
        else:
            centre = np.array([rng.integers(lo[a], max(hi[a], lo[a] + 1)) for a in range(3)])
        start = centre - patch // 2
        # keep the patch inside the volume where the volume is large enough (as the sliding window does)
        start = np.where(shape >= patch, np.clip(start, 0, shape - patch), (shape - patch) // 2)
        xs.append(_crop_pad(hu, start, patch, AIR_HU))
        ys.append(_crop_pad(labels, start, patch, 0))
    return np.stack(xs), np.stack(ys)


def _crop_pad(vol, start, p, fill):
    out = np.full((p, p, p), fill, dtype=vol.dtype)
    src = [slice(max(0, s), min(n, s + p)) for s, n in zip(start, vol.shape)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    if all(sl.stop > sl.start for sl in src):
        out[tuple(dst)] = vol[tuple(src)]
    return out


def make_batch(seed, k, windows, norm, real, batch=8, patch=64):
    hu, labels, desc = draw_case(seed, k, windows, real)
    rng = np.random.default_rng([seed, k, 2])
    xs, ys = sample_patches(hu, labels, batch, int(round(batch * 5 / 8)), patch, rng)
    xs = xs * np.float32(rng.uniform(0.95, 1.05)) + np.float32(rng.uniform(-10, 10))
    x = normalise(xs, norm)[:, None]
    return torch.from_numpy(x), torch.from_numpy(ys.astype(np.int64)), desc


class BatchStream(torch.utils.data.IterableDataset):
    """Batches start, start+1, ... (worker w of W makes those with k % W == w)."""

    def __init__(self, seed, start, stop, windows, norm, real, batch, patch):
        super().__init__()
        self.a = (seed, start, stop, windows, norm, real, batch, patch)

    def __iter__(self):
        seed, start, stop, windows, norm, real, batch, patch = self.a
        info = torch.utils.data.get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        for k in range(start + w, stop, nw):
            x, y, desc = make_batch(seed, k, windows, norm, real, batch, patch)
            yield k, x, y, desc
