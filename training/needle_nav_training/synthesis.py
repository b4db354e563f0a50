"""Non-contrast (plain) CT synthesised from contrast CT, as the method describes, with the same
formula as the runtime's src/core/segmentation/synthesis.rs:

For vessel class c with mean HU m_c (over the class's voxels inside its contrast HU window, so
partial-volume rims do not bias it) and window width w_c = hi_c - lo_c:
    enhancement factor  e_c = m_c - PLAIN_BLOOD_HU          (PLAIN_BLOOD_HU = 40)
    spread scale        s_c = min(1, PLAIN_WINDOW_WIDTH / w_c)   (PLAIN_WINDOW_WIDTH = 70)
    hu' = hu - e_c - (1 - s_c)(hu - m_c) = PLAIN_BLOOD_HU + s_c (hu - m_c)
on every voxel labelled c: the class is lowered by its enhancement, and its contrast spread is
compressed to plain blood's.

Two additions for training (documented in the report):
  * the compression also shrinks the scanner noise inside the vessels by s_c, which would make
    synthesised vessels unnaturally smooth (a shortcut the network could learn); Gaussian noise of
    sigma_n * sqrt(1 - s_c^2) is added back, sigma_n being the image's own noise estimated from
    neighbouring-voxel differences in soft tissue;
  * partial-volume voxels (the one-voxel shell just outside the label, and labelled voxels below
    the window, e.g. thin vessels in lung) hold only a fraction of contrast blood; they are
    lowered by f * e_c instead, with f = clip((hu - b) / (m_c - b), 0, 1) the blood fraction
    against the local background b (median HU of non-vessel voxels in the 7x7x7 box outside
    the dilated vessel), so synthesised vessels neither keep a bright halo nor a too-bright rim.
Classes whose enhancement is below MIN_ENHANCEMENT_HU (not enhanced) are left unchanged.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import CLASS_NAMES

PLAIN_BLOOD_HU = 40.0
PLAIN_WINDOW_WIDTH = 70.0
MIN_ENHANCEMENT_HU = 30.0


def noise_sigma(hu: np.ndarray) -> float:
    """Robust noise estimate: MAD of differences of neighbouring voxels along X in soft tissue."""
    a, b = hu[..., :-1], hu[..., 1:]
    m = (a > -150) & (a < 150) & (b > -150) & (b < 150)
    d = (a - b)[m]
    if d.size < 100:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def synthesise_plain(hu: np.ndarray, labels: np.ndarray, windows: dict, rng: np.random.Generator,
                     restore_noise: bool = True, shell: bool = True):
    """Returns (plain HU float32, factors per class). `windows` maps class name -> [lo, hi]
    (the contrast windows)."""
    out = hu.astype(np.float32).copy()
    sigma = noise_sigma(hu) if restore_noise else 0.0
    factors = {"noise_sigma_hu": round(sigma, 2)}
    st = np.ones((3, 3, 3), bool)
    for c in range(1, 4):
        name = CLASS_NAMES[c]
        lo, hi = windows[name]
        m = labels == c
        if not m.any():
            continue
        inwin = m & (hu >= lo) & (hu <= hi)
        n = int(inwin.sum())
        if n == 0:
            factors[name] = {"voxels_in_window": 0, "skipped": "no voxel in the contrast window"}
            continue
        mean = float(hu[inwin].mean())
        e = mean - PLAIN_BLOOD_HU
        if e < MIN_ENHANCEMENT_HU:
            factors[name] = {"mean_hu": round(mean, 1), "enhancement_hu": round(e, 1), "skipped": "not enhanced"}
            continue
        s = min(1.0, PLAIN_WINDOW_WIDTH / max(hi - lo, 1.0))
        out[m] = PLAIN_BLOOD_HU + s * (hu[m] - mean)
        if sigma > 0 and s < 1:
            out[m] += rng.normal(0.0, sigma * np.sqrt(1 - s * s), int(m.sum())).astype(np.float32)
        pv_voxels = 0
        if shell:
            # Partial-volume voxels: the one-voxel shell outside the label and the label's own
            # voxels below the window; lowered by f * e against the local background.
            dil = ndimage.binary_dilation(m, st)
            pv = (dil & ~m & (labels == 0)) | (m & (hu < lo))
            bg_src = np.where(dil | (labels > 0), np.nan, hu).astype(np.float32)
            bg = _nan_median_filter(bg_src, pv, 7)
            ok = pv & np.isfinite(bg)
            f = np.clip((hu[ok] - bg[ok]) / np.maximum(mean - bg[ok], 1.0), 0.0, 1.0)
            out[ok] = hu[ok] - f * e
            pv_voxels = int(ok.sum())
        factors[name] = {"mean_hu": round(mean, 1), "window": [lo, hi], "enhancement_hu": round(e, 1),
                         "spread_scale": round(s, 4), "voxels": int(m.sum()), "partial_volume_voxels": pv_voxels}
    return out, factors


def _nan_median_filter(src: np.ndarray, where: np.ndarray, size: int) -> np.ndarray:
    """Median of the finite values of src in a size^3 box around each voxel of `where` (NaN
    elsewhere or where the box has no finite value). Only evaluated at `where`."""
    out = np.full(src.shape, np.nan, np.float32)
    idx = np.argwhere(where)
    if len(idx) == 0:
        return out
    r = size // 2
    pad = np.pad(src, r, mode="constant", constant_values=np.nan)
    # Gather the size^3 neighbourhoods in chunks to bound memory.
    offs = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for start in range(0, len(idx), 20000):
        chunk = idx[start:start + 20000]
        nb = pad[chunk[:, None, 0] + offs[None, :, 0], chunk[:, None, 1] + offs[None, :, 1],
                 chunk[:, None, 2] + offs[None, :, 2]]
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[chunk[:, 0], chunk[:, 1], chunk[:, 2]] = np.nanmedian(nb, axis=1)
    return out
