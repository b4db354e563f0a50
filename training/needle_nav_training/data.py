"""Data: digital patients from the project's CLI, the real labelled series, canonical LPS
orientation, body crop, resampling to the training spacing, normalisation statistics and
per-class HU windows.

Array convention everywhere: a volume is a numpy array [Z, Y, X] (X fastest) on an axis-
aligned LPS grid: X towards patient Left, Y Posterior, Z Superior. With nibabel the image is
reoriented to axcodes ('L', 'P', 'S'), giving data[i, j, k]; the tensor is data.transpose(2, 1, 0).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", "/work/shared/data"))
J2K_DIR = SHARED / "abdomen_ct_vessels" / "example_ct_dicom_j2k"
J2K_SEG = SHARED / "abdomen_ct_vessels" / "example_seg_dicom.nii.gz"
# TotalSegmentator v2 ids -> needle_nav labels (everything else background).
TOTALSEG_TO_LABEL = {52: 3, 63: 2, 64: 2}
BODY_HU = -500.0  # same body threshold as the runtime (src/core/segmentation/preprocess.rs)
AIR_HU = -1024.0


@dataclass
class Case:
    name: str
    hu: np.ndarray  # float32 [Z, Y, X]
    labels: np.ndarray  # uint8 [Z, Y, X]
    spacing_xyz: tuple  # mm
    kind: str  # "contrast", "synth_plain" (synthesised from contrast) or "plain" (rendered plain)
    source: str
    info: dict = field(default_factory=dict)
    # Contrast training entries only: synthesised plain HU and the enhancement (hu - plain) with
    # the class it belongs to (labels, and for the partial-volume shell the adjacent class), so
    # augmentation can rescale each class's enhancement: hu' = plain + k[class] * enhancement.
    plain: np.ndarray | None = None
    enhancement: np.ndarray | None = None
    enhancement_class: np.ndarray | None = None


# ---------------------------------------------------------------- orientation and I/O


def reorient_lps(img: nib.spatialimages.SpatialImage, data: np.ndarray | None = None):
    """Returns (data [i, j, k] with i->L, j->P, k->S, affine (RAS, nibabel convention), zooms)."""
    if data is None:
        data = np.asanyarray(img.dataobj)
    ornt = nio.io_orientation(img.affine)
    target = nio.axcodes2ornt(("L", "P", "S"))
    transform = nio.ornt_transform(ornt, target)
    out = nio.apply_orientation(data, transform)
    affine = img.affine @ nio.inv_ornt_aff(transform, data.shape)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return np.ascontiguousarray(out), affine, tuple(float(z) for z in zooms)


def to_tensor_order(ijk: np.ndarray) -> np.ndarray:
    """[i, j, k] -> [Z, Y, X] = [k, j, i]."""
    return np.ascontiguousarray(ijk.transpose(2, 1, 0))


def load_nifti_lps(path: Path, dtype=np.float32):
    """(array [Z, Y, X], spacing_xyz, affine_ras of the reoriented [i, j, k] grid)."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(dtype)
    arr, affine, zooms = reorient_lps(img, data)
    return to_tensor_order(arr), zooms, affine


def load_dicom_series(folder: Path):
    """A single-series CT folder -> (HU [i, j, k] float32, RAS affine). Slices are sorted along
    the slice normal; uneven spacing or tilt is refused (this loader is for the one training
    series, whose geometry is regular)."""
    import pydicom

    slices = [pydicom.dcmread(str(f)) for f in sorted(folder.iterdir()) if f.is_file()]
    if not slices:
        raise ValueError(f"{folder}: no DICOM files")
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, dtype=float))))
    pos = np.array([s.ImagePositionPatient for s in slices], dtype=float)
    steps = np.diff(pos @ normal)
    if len(steps) and (np.ptp(steps) > 1e-3 * max(1.0, abs(steps.mean())) or steps.min() <= 0):
        raise ValueError(f"{folder}: uneven slice spacing {sorted(set(np.round(steps, 3)))}")
    offsets = pos - pos[0] - np.outer(pos @ normal - pos[0] @ normal, normal)
    if np.abs(offsets).max() > 1e-3:
        raise ValueError(f"{folder}: slices are not stacked along the normal (gantry tilt?)")
    dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
    dz = float(steps.mean()) if len(steps) else float(slices[0].SliceThickness)
    vols = []
    for s in slices:
        a = s.pixel_array.astype(np.float32)
        a = a * float(getattr(s, "RescaleSlope", 1.0)) + float(getattr(s, "RescaleIntercept", 0.0))
        vols.append(a.T)  # pixel_array is [row, column]; i = column, j = row
    hu = np.stack(vols, axis=2)
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = normal * dz
    lps[:3, 3] = pos[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return hu, ras, slices[0]


# ---------------------------------------------------------------- geometry helpers


def resample(vol: np.ndarray, spacing_xyz, target_xyz, order: int) -> np.ndarray:
    """Resample [Z, Y, X] from spacing to target spacing on a grid with the same first voxel
    centre (dims = floor(extent / target) + 1). order 1 for HU, 0 for labels."""
    sz, sy, sx = spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]
    tz, ty, tx = target_xyz[2], target_xyz[1], target_xyz[0]
    if np.allclose([sz, sy, sx], [tz, ty, tx], rtol=1e-4):
        return vol
    dims = [int(np.floor((n - 1) * s / t + 1e-6)) + 1 for n, s, t in zip(vol.shape, (sz, sy, sx), (tz, ty, tx))]
    grids = np.meshgrid(*[np.arange(d) * t / s for d, s, t in zip(dims, (sz, sy, sx), (tz, ty, tx))],
                        indexing="ij", sparse=True)
    coords = [np.broadcast_to(g, dims) for g in grids]
    out = ndimage.map_coordinates(vol, coords, order=order, mode="nearest")
    return out.astype(vol.dtype)


def body_bbox(hu: np.ndarray, margin: int = 4):
    """[Z, Y, X] slices of the voxels above BODY_HU, grown by margin."""
    idx = np.nonzero(hu > BODY_HU)
    if len(idx[0]) == 0:
        return tuple(slice(0, n) for n in hu.shape)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + 1 + margin))
                 for i, n in zip(idx, hu.shape))


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Body (with the lungs filled in, slice by slice) of a [Z, Y, X] volume."""
    m = hu > BODY_HU
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, index=range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return np.stack([ndimage.binary_fill_holes(s) for s in m])


def prepare(case: Case, target_xyz) -> Case:
    """Resample to the training spacing and crop to the body bounding box."""
    hu = resample(case.hu, case.spacing_xyz, target_xyz, order=1)
    lab = resample(case.labels, case.spacing_xyz, target_xyz, order=0)
    box = body_bbox(hu)
    return Case(case.name, np.ascontiguousarray(hu[box]), np.ascontiguousarray(lab[box]), tuple(target_xyz),
                case.kind, case.source, dict(case.info, crop_zyx=[[s.start, s.stop] for s in box]))


# ---------------------------------------------------------------- digital patients


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def phantom_dir(root: Path, seed: int, contrast: bool) -> Path:
    return root / f"phantom_s{seed}_{'contrast' if contrast else 'plain'}"


def generate_phantom(binary: Path, root: Path, seed: int, contrast: bool, dims: str, spacing: str,
                     env_script: Path | None) -> Path:
    """Runs `needle_nav phantom` once per (seed, phase); reuses a complete earlier output."""
    out = phantom_dir(root, seed, contrast)
    if (out / "labels.nii.gz").is_file() and (out / "ct.nii.gz").is_file() and (out / "case.json").is_file():
        return out
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = f"{binary} phantom --out {out} --seed {seed} {'--contrast' if contrast else '--plain'} " \
          f"--phases 1 --dims {dims} --spacing {spacing}"
    if env_script is not None and env_script.is_file():
        cmd = f"source {env_script} && {cmd}"
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return out


def load_phantom(folder: Path, seed: int, contrast: bool) -> Case:
    hu, spacing, _ = load_nifti_lps(folder / "ct.nii.gz", np.float32)
    lab, spacing_l, _ = load_nifti_lps(folder / "labels.nii.gz", np.uint8)
    assert hu.shape == lab.shape and np.allclose(spacing, spacing_l)
    kind = "contrast" if contrast else "plain"
    return Case(f"phantom_s{seed}_{kind}", hu, lab, spacing, kind, f"digital patient seed {seed} ({kind})")


# ---------------------------------------------------------------- real labelled series


def load_j2k_training_case() -> Case:
    """The 20-slice JPEG 2000 contrast abdomen series with its TotalSegmentator labels, both
    reoriented to LPS; the segmentation must lie on the series' grid (checked)."""
    hu_ijk, ras, first = load_dicom_series(J2K_DIR)
    img = nib.Nifti1Image(hu_ijk, ras)
    hu_lps, aff_hu, zooms = reorient_lps(img, hu_ijk)
    seg_img = nib.load(str(J2K_SEG))
    seg = np.asanyarray(seg_img.dataobj).astype(np.int32)
    seg_lps, aff_seg, _ = reorient_lps(seg_img, seg)
    if seg_lps.shape != hu_lps.shape or not np.allclose(aff_hu, aff_seg, atol=1e-2):
        raise ValueError(f"segmentation grid {seg_lps.shape} {aff_seg.tolist()} differs from the series "
                         f"{hu_lps.shape} {aff_hu.tolist()}")
    present = sorted(int(v) for v in np.unique(seg_lps))
    lab = np.zeros(seg_lps.shape, np.uint8)
    for tid, label in TOTALSEG_TO_LABEL.items():
        lab[seg_lps == tid] = label
    return Case("real_abdomen_j2k", to_tensor_order(hu_lps).astype(np.float32), to_tensor_order(lab), zooms,
                "contrast", "shared/data abdomen_ct_vessels/example_ct_dicom_j2k + example_seg_dicom.nii.gz",
                {"totalseg_ids_present": present, "transfer_syntax": str(first.file_meta.TransferSyntaxUID),
                 "mapped": {str(k): v for k, v in TOTALSEG_TO_LABEL.items()}})


# ---------------------------------------------------------------- statistics


def deep_mask(labels: np.ndarray, c: int) -> np.ndarray:
    """Voxels of class c whose whole 3x3x3 neighbourhood is class c (no partial-volume rim)."""
    return ndimage.binary_erosion(labels == c, structure=np.ones((3, 3, 3), bool))


def intensity_stats(cases, rng: np.random.Generator, per_case: int = 200_000) -> dict:
    """nnU-Net-style CT normalisation from the training cases: 0.5 / 99.5 percentiles and
    mean / std of the clipped HU of body voxels (lungs included), sampled equally per case."""
    samples = []
    for c in cases:
        v = c.hu[body_mask(c.hu)]
        if v.size > per_case:
            v = rng.choice(v, per_case, replace=False)
        samples.append(v)
    v = np.concatenate(samples).astype(np.float64)
    lo, hi = np.percentile(v, [0.5, 99.5])
    vc = np.clip(v, lo, hi)
    return {"clip_hu": [round(float(lo), 1), round(float(hi), 1)], "mean_hu": round(float(vc.mean()), 2),
            "std_hu": round(float(vc.std()), 2), "voxels_sampled": int(v.size),
            "definition": "body voxels (HU > -500, largest component, holes filled per slice: lungs "
                          "included) of every training case, equal samples per case; clip = 0.5/99.5 "
                          "percentiles; mean/std of the clipped HU"}


def class_windows(cases, pct=(1.0, 99.0)) -> dict:
    """Per class: [p1, p99] HU of the class's deep voxels (eroded by one voxel, so partial-
    volume rims do not widen the window) over the given cases."""
    from . import CLASS_NAMES

    out, counts = {}, {}
    for c in range(1, 4):
        vals = [case.hu[deep_mask(case.labels, c)] for case in cases]
        vals = np.concatenate(vals) if vals else np.zeros(0)
        counts[CLASS_NAMES[c]] = int(vals.size)
        if vals.size < 50:
            raise ValueError(f"class {CLASS_NAMES[c]}: only {vals.size} deep voxels for its HU window")
        lo, hi = np.percentile(vals, pct)
        out[CLASS_NAMES[c]] = [round(float(lo), 1), round(float(hi), 1)]
    return {"windows": out, "deep_voxels": counts}


def save_case_npz(case: Case, path: Path):
    np.savez_compressed(path, hu=case.hu.astype(np.float32), labels=case.labels,
                        spacing=np.array(case.spacing_xyz), meta=json.dumps(
                            {"name": case.name, "kind": case.kind, "source": case.source, "info": case.info}))
