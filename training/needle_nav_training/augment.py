"""Patch sampling with class-balanced vessel oversampling, and augmentation: rotation 0-45 deg
(half of the draws about the Z axis, i.e. in-plane, half about a random axis), isotropic scaling
0.85-1.15, Gaussian noise, brightness and contrast changes. Geometry is applied by one
affine resampling per patch (trilinear for HU, nearest for labels); intensity changes are made
in HU, before the runtime's clip + z-score, so they act as scanner variation would."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .data import AIR_HU, Case
from .export import normalise


@dataclass
class AugmentConfig:
    p_rotate: float = 0.8
    max_angle_deg: float = 45.0
    p_inplane: float = 0.5
    p_scale: float = 0.7
    scale_range: tuple = (0.85, 1.15)
    p_noise: float = 0.5
    noise_sigma_hu: tuple = (0.0, 15.0)
    p_brightness: float = 0.5
    brightness_hu: tuple = (-20.0, 20.0)
    p_contrast: float = 0.5
    contrast_range: tuple = (0.9, 1.1)
    # Contrast changes pivot on soft tissue / plain blood, so a factor of 1.1 moves enhanced
    # blood (~300 HU) by ~30 HU instead of ~100 HU (the classes' HU differ by 50-120 HU).
    contrast_pivot_hu: float = 40.0
    # Contrast level: the vessels' enhancement scaled by k = k_dose * k_class, a common dose
    # factor and a small per-class jitter (real CTA arteries reach 500+ HU, portal-venous aortas
    # 150 HU; the jitter is small so the classes' HU order, a real cue in contrast CT, mostly stays).
    p_enhancement: float = 0.7
    enhancement_range: tuple = (0.5, 1.6)
    enhancement_class_jitter: tuple = (0.9, 1.1)


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues; axis in array order (z, y, x)."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


class PatchSampler:
    """Draws training patches from a list of cases (uniformly over cases). A patch is centred
    on a random voxel of a vessel class (chosen uniformly among the classes the case has) with
    probability p_vessel, else anywhere in the (body-cropped) volume."""

    def __init__(self, cases: list[Case], patch: int, norm: dict, rng: np.random.Generator,
                 p_vessel: float = 0.67, aug: AugmentConfig | None = None, max_coords: int = 50_000,
                 weights=None):
        self.cases, self.patch, self.norm, self.rng = cases, patch, norm, rng
        w = np.ones(len(cases)) if weights is None else np.asarray(weights, float)
        self.weights = w / w.sum()
        self.p_vessel, self.aug = p_vessel, aug
        self.coords = []
        for c in cases:
            per = {}
            for k in (1, 2, 3):
                idx = np.argwhere(c.labels == k)
                if len(idx) > max_coords:
                    idx = idx[rng.choice(len(idx), max_coords, replace=False)]
                if len(idx):
                    per[k] = idx
            self.coords.append(per)

    def centre(self, ci: int) -> np.ndarray:
        per = self.coords[ci]
        shape = np.array(self.cases[ci].hu.shape)
        if per and self.rng.random() < self.p_vessel:
            k = list(per)[self.rng.integers(len(per))]
            c = per[k][self.rng.integers(len(per[k]))].astype(float)
            return c + self.rng.uniform(-self.patch / 4, self.patch / 4, 3)
        return self.rng.uniform(0, 1, 3) * (shape - 1)

    def extract(self, case: Case, centre: np.ndarray, augment: bool):
        p = self.patch
        rng = self.rng
        m = np.eye(3)
        if augment and self.aug is not None:
            a = self.aug
            if rng.random() < a.p_rotate:
                axis = np.array([1.0, 0, 0]) if rng.random() < a.p_inplane else rng.normal(size=3)
                m = rotation_matrix(axis, np.deg2rad(rng.uniform(0, a.max_angle_deg)) * rng.choice([-1, 1]))
            if rng.random() < a.p_scale:
                m = m / rng.uniform(*a.scale_range)  # output voxel -> input voxel: zoom by 1/s
        c_out = (np.array([p, p, p]) - 1) / 2.0
        offset = centre - m @ c_out
        identity = np.allclose(m, np.eye(3))

        def take(vol, order, fill):
            if identity:
                return _crop_pad(vol, np.round(offset).astype(int), p, fill)
            return ndimage.affine_transform(vol, m, offset, output_shape=(p, p, p), order=order,
                                            mode="constant", cval=fill)

        lab = take(case.labels, 0, 0)
        if (augment and self.aug is not None and case.enhancement is not None
                and rng.random() < self.aug.p_enhancement):
            k = rng.uniform(*self.aug.enhancement_range) * rng.uniform(*self.aug.enhancement_class_jitter, 3)
            k = np.concatenate([[1.0], k]).astype(np.float32)
            hu = take(case.plain, 1, AIR_HU) + k[take(case.enhancement_class, 0, 0)] * take(case.enhancement, 1, 0.0)
        else:
            hu = take(case.hu, 1, AIR_HU)
        hu = hu.astype(np.float32)
        if augment and self.aug is not None:
            a = self.aug
            if rng.random() < a.p_noise:
                hu = hu + rng.normal(0, rng.uniform(*a.noise_sigma_hu), hu.shape).astype(np.float32)
            if rng.random() < a.p_contrast:
                hu = (hu - a.contrast_pivot_hu) * rng.uniform(*a.contrast_range) + a.contrast_pivot_hu
            if rng.random() < a.p_brightness:
                hu = hu + rng.uniform(*a.brightness_hu)
        return normalise(hu, self.norm), lab.astype(np.int64)

    def batch(self, n: int, augment: bool = True):
        xs, ys = [], []
        for _ in range(n):
            ci = int(self.rng.choice(len(self.cases), p=self.weights))
            x, y = self.extract(self.cases[ci], self.centre(ci), augment)
            xs.append(x)
            ys.append(y)
        return np.stack(xs)[:, None], np.stack(ys)


def _crop_pad(vol: np.ndarray, start: np.ndarray, p: int, fill) -> np.ndarray:
    out = np.full((p, p, p), fill, dtype=vol.dtype)
    src = [slice(max(0, s), min(n, s + p)) for s, n in zip(start, vol.shape)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    if all(sl.stop > sl.start for sl in src):
        out[tuple(dst)] = vol[tuple(src)]
    return out
