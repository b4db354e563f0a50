"""An independent Python implementation of needle_nav's vessel pipeline (numpy, scipy,
onnxruntime, nibabel, pydicom) with the same model and the same documented steps:
canonical LPS grid at the model spacing (trilinear), crop to the body (> -500 HU, 4 voxel
margin), z-score from the model metadata, sliding window (Gaussian blend, sigma = patch/8,
floor 1e-3), argmax, HU-window majority refinement until stable, nearest labels back.

Used by tests (Rust output vs this) and by bench/bench_segmentation.py (speed ratio)."""
import json
import time
from pathlib import Path

import numpy as np

BODY_HU = -500.0
REFINEMENT_PASSES = 3  # the Rust default (DEFAULT_REFINEMENT_PASSES)
DEFAULT_OVERLAP = 0.25
CONTRAST_MEDIAN_HU = 100.0
CLASSES = ["background", "artery", "vein", "aorta"]


def load_nifti(path):
    """HU array [i, j, k] and its 4x4 LPS affine (index -> patient mm)."""
    import nibabel as nib
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    return data, lps


def load_dicom_series(folder):
    """One axial series: HU array [i, j, k] (columns, rows, slices sorted along the normal)."""
    import pydicom
    slices = []
    for f in sorted(Path(folder).iterdir()):
        try:
            ds = pydicom.dcmread(str(f))
        except Exception:
            continue
        if "ImagePositionPatient" in ds and "PixelData" in ds:
            slices.append(ds)
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    vol = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                    for d in slices], axis=-1)  # [rows, cols, slices]
    vol = np.transpose(vol, (1, 0, 2))  # [cols(i), rows(j), slices(k)]
    positions = [np.dot(normal, np.array(d.ImagePositionPatient, dtype=float)) for d in slices]
    dz = float(np.median(np.diff(positions)))
    dy, dx = (float(v) for v in slices[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * dx, col * dy, normal * dz
    affine[:3, 3] = np.array(slices[0].ImagePositionPatient, dtype=float)
    return vol, affine


def model_info(session):
    return json.loads(session.get_modelmeta().custom_metadata_map["needle_nav"])


def _to_lps_order(affine):
    """For an axis-aligned affine: per LPS axis, (input axis, sign, spacing)."""
    m = affine[:3, :3]
    out = []
    for a in range(3):
        b = int(np.argmax(np.abs(m[a, :])))
        if not np.isclose(np.abs(m[:, b]).max(), np.abs(m[a, b])) or np.count_nonzero(np.abs(m[:, b]) > 1e-6) != 1:
            raise ValueError("the peer handles axis-aligned images only")
        out.append((b, np.sign(m[a, b]), abs(m[a, b])))
    return out


def _resample_axis(arr, axis, src_sp, dst_sp, fill):
    n_src = arr.shape[axis]
    n_dst = int(np.floor((n_src - 1) * src_sp / dst_sp + 1e-6)) + 1
    pos = np.arange(n_dst) * dst_sp / src_sp
    i0 = np.clip(np.floor(pos).astype(int), 0, n_src - 1)
    i1 = np.clip(i0 + 1, 0, n_src - 1)
    w = (pos - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = n_dst
    w = w.reshape(shape)
    out = np.take(arr, i0, axis=axis) * (1 - w) + np.take(arr, i1, axis=axis) * w
    outside = (pos > n_src - 1 + 1e-9).reshape(shape)
    return np.where(outside, np.float32(fill), out).astype(np.float32)


def gaussian_weights(patch_xyz):
    axes = []
    for n in patch_xyz:
        c, s = (n - 1) / 2.0, n / 8.0
        axes.append(np.exp(-((np.arange(n) - c) ** 2) / (2 * s * s)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = (w / w.max()).astype(np.float32)
    return np.maximum(w, 1e-3)


def axis_origins(length, patch, overlap):
    if length <= patch:
        return [0]
    step = max(1, int(round(patch * (1.0 - min(max(overlap, 0.0), 0.9)))))
    origins = []
    o = 0
    while o + patch < length:
        origins.append(o)
        o += step
    origins.append(length - patch)
    return sorted(set(origins))


def refine(labels, hu, windows, max_passes=REFINEMENT_PASSES):
    """Unlabelled voxels in a vessel window take their 3x3x3 majority label if their HU is in
    that class's window; all decided from the previous pass, until nothing changes or
    max_passes passes."""
    from scipy.ndimage import uniform_filter
    any_window = np.zeros(hu.shape, bool)
    for lo, hi in windows.values():
        any_window |= (hu >= lo) & (hu <= hi)
    changed, passes = 0, 0
    while passes < max_passes:
        passes += 1
        cand = (labels == 0) & any_window
        if not cand.any():
            break
        counts = np.stack([np.rint(uniform_filter((labels == c).astype(np.float32), 3, mode="constant") * 27)
                           for c in (1, 2, 3)])
        labelled = counts.sum(0)
        best = counts.argmax(0)  # ties: the smallest label, as the Rust code
        n = np.take_along_axis(counts, best[None], 0)[0]
        best_label = best + 1
        ok = cand & (n > 0) & (2 * n > labelled)
        inwin = np.zeros(hu.shape, bool)
        for c, (lo, hi) in zip((1, 2, 3), [windows[k] for k in ("artery", "vein", "aorta")]):
            inwin |= (best_label == c) & (hu >= lo) & (hu <= hi)
        decide = ok & inwin
        k = int(decide.sum())
        if k == 0:
            break
        labels[decide] = best_label[decide]
        changed += k
    return changed, passes


def segment(hu, affine, session, overlap=0.0, hu_refinement=True, times=None, refinement_passes=REFINEMENT_PASSES):
    """Labels [i, j, k] on the input grid."""
    times = {} if times is None else times
    info = model_info(session)
    t = time.perf_counter()
    order = _to_lps_order(affine)
    arr = np.transpose(hu, [b for b, _, _ in order])
    for a, (_, sign, _) in enumerate(order):
        if sign < 0:
            arr = np.flip(arr, axis=a)
    src_sp = [sp for _, _, sp in order]
    sp = info["spacing_mm_xyz"]
    for a in range(3):
        arr = _resample_axis(arr, a, src_sp[a], sp[a], -1024.0)
    grid_shape = arr.shape
    body = arr > BODY_HU
    box = []
    for a in range(3):
        proj = body.any(axis=tuple(x for x in range(3) if x != a))
        idx = np.nonzero(proj)[0]
        lo, hi = (idx[0], idx[-1] + 1) if len(idx) else (0, arr.shape[a])
        box.append((max(lo - 4, 0), min(hi + 4, arr.shape[a])))
    crop = np.ascontiguousarray(arr[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]])
    times["resample"] = time.perf_counter() - t

    t = time.perf_counter()
    norm = info["normalisation"]
    lo, hi = norm["clip_hu"]
    x = (np.clip(crop, lo, hi) - norm["mean_hu"]) / norm["std_hu"]
    pad = (np.clip(-1024.0, lo, hi) - norm["mean_hu"]) / norm["std_hu"]
    pz, py, px = info["patch_size_zyx"]
    patch = (px, py, pz)
    ov = overlap if overlap > 0 else DEFAULT_OVERLAP
    weights = gaussian_weights(patch)
    scores = np.zeros((4,) + crop.shape, np.float32)
    wsum = np.zeros(crop.shape, np.float32)
    origins = [(i, j, k) for k in axis_origins(crop.shape[2], pz, ov) for j in axis_origins(crop.shape[1], py, ov)
               for i in axis_origins(crop.shape[0], px, ov)]
    for (i, j, k) in origins:
        block = np.full(patch, pad, np.float32)
        part = x[i:i + px, j:j + py, k:k + pz]
        block[:part.shape[0], :part.shape[1], :part.shape[2]] = part
        tensor = np.ascontiguousarray(block.transpose(2, 1, 0))[None, None]
        prob = session.run(["probabilities"], {"ct": tensor})[0][0].transpose(0, 3, 2, 1)  # [c, x, y, z]
        sx, sy, sz = part.shape
        w = weights[:sx, :sy, :sz]
        scores[:, i:i + sx, j:j + sy, k:k + sz] += prob[:, :sx, :sy, :sz] * w
        wsum[i:i + sx, j:j + sy, k:k + sz] += w
    labels = scores.argmax(0).astype(np.uint8)
    labels[wsum <= 0] = 0
    times["inference"] = time.perf_counter() - t
    times["patches"] = len(origins)

    t = time.perf_counter()
    vessels = crop[labels > 0]
    contrast = bool(len(vessels) and np.median(vessels) >= CONTRAST_MEDIAN_HU)
    if hu_refinement:
        windows = info["hu_windows"]["contrast" if contrast else "plain"]
        refine(labels, crop, windows, refinement_passes)
    times["refinement"] = time.perf_counter() - t

    t = time.perf_counter()
    full = np.zeros(grid_shape, np.uint8)
    full[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]] = labels
    # Nearest back: input voxel n along LPS axis a sits at n * src_sp from the grid start.
    idx = []
    for a in range(3):
        n_src = hu.shape[order[a][0]]
        # Half-way cases round up, as the Rust code (f64::round on non-negative indices).
        c = np.floor(np.arange(n_src) * src_sp[a] / sp[a] + 0.5).astype(int)
        idx.append(c)
    valid = [c <= grid_shape[a] - 1 for a, c in enumerate(idx)]
    back = full[np.ix_(*[np.minimum(c, grid_shape[a] - 1) for a, c in enumerate(idx)])]
    back = back * (valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :])
    for a, (_, sign, _) in enumerate(order):
        if sign < 0:
            back = np.flip(back, axis=a)
    inverse = np.argsort([b for b, _, _ in order])
    back = np.transpose(back, inverse)
    times["resample back"] = time.perf_counter() - t
    return np.ascontiguousarray(back.astype(np.uint8)), contrast
