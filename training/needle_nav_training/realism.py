"""Does the digital patient look like CT? (issue 12)

Puts rendered slices of the digital patient (anatomy.render) beside real slices at the same
anatomical level, and compares HU statistics per structure between the real scans, under their
TotalSegmentator labels, and the digital patient rendered in the matching contrast phase.

    python -m needle_nav_training.realism --out DIR [--seed N]

writes into DIR: realism_*.png (side-by-side figures), realism_hu.json (every statistic, the level
and mask definitions) and realism.md (the figures and the HU table).

Real scans (../shared/data, see its MANIFEST.md; labels are TotalSegmentator output, not manual):
  * thorax_ct_dicom: plain thorax 0.98 x 0.98 x 2 mm, no labels -> phantom fov 'chest', plain;
  * chest_cta_pulmonary_artery: contrast chest CT crop around the heart, 1.5 mm, labels
    pulmonary_artery and heart (resampled nearest-neighbour from its own grid onto the CT grid),
    landmark blobs pul_annulus / pul_bifurcation -> phantom fov 'heart', pulmonary_arterial;
  * abdomen_ct_vessels/example_ct.nii.gz: plain abdomen + pelvis 3 mm with
    example_seg_fast_force_split.nii.gz (TotalSegmentator v2 classes on the same grid) -> phantom
    fov 'abdomen', plain. (phase_prediction.json, "native", is TotalSegmentator's phase estimate of
    this plain scan's crop example_ct_sm, not of the series below);
  * abdomen_ct_vessels/example_ct_dicom_j2k: 20-slice contrast upper abdomen 0.98 x 0.98 x 2 mm
    with example_seg_dicom.nii.gz. Its phase is portal venous from its own numbers (aorta median
    ~150 HU, portal vein ~135, IVC ~95, liver ~95: the liver and the veins are enhanced, the aorta is
    not at arterial levels) -> phantom fov 'abdomen', portal_venous.

Statistics per structure: n, mean, std, p5, median, p95 of the HU of the structure's voxels after a
one-voxel erosion (3x3x3; an in-plane 3x3 erosion where the 3-D one leaves fewer than
MIN_VOXELS, e.g. the iliac arteries at 3 mm) so that partial volume with the neighbours does not
dominate. The same erosion is applied to the digital patient's tissue masks. Where no label exists
(thorax series), tissues are threshold-defined inside the body, identically on the real scan and on
the phantom (and the phantom is also reported under its own tissue label):
  * lung parenchyma: HU < -500 inside the body (body = HU > -500, largest component, holes filled
    per slice; in a crop that lies inside the chest, the whole crop), eroded; airways are included
    (a few % of the volume);
  * subcutaneous fat: HU in [-190, -30] (the Alberta protocol's adipose band) 3-30 mm below the skin
    (in-plane distance to the body contour), eroded in-plane;
  * muscle: HU in [-29, 150] (the Alberta protocol's skeletal-muscle band) 5-60 mm below the skin,
    eroded in-plane.
Levels: labelled scans from their labels (kidney centroids, the aortic bifurcation = the lowest
aorta slice / top of the iliac arteries, the pulmonary trunk midway between the pul_annulus and
pul_bifurcation blobs, the portal/splenic vein centroid); the unlabelled thorax series: carina =
the lowest slice on which the airway tracked down from the trachea is still one lumen (found
automatically, k = 82 of 141, checked by eye), heart level hand-picked (k = 45: mid-ventricular,
largest cardiac cross-section, below the left atrium and above the diaphragm).
The phantom's levels come from its landmarks (carina, heart_centre, pulmonary_trunk,
renal_arteries, aortic_bifurcation) or its tissue map (portal_vein centroid).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from . import data as D

THORAX_DIR = D.SHARED / "thorax_ct_dicom"
CTA_DIR = D.SHARED / "chest_cta_pulmonary_artery"
ABD_DIR = D.SHARED / "abdomen_ct_vessels"
MIN_VOXELS = 30
THORAX_HEART_K = 45  # hand-picked, see the module docstring
ILIAC_BELOW_BIFURCATION_MM = 36.0  # iliac level: this far below the aortic bifurcation (both sides)

SOFT = (40.0, 400.0)  # (level, width)
LUNG = (-600.0, 1500.0)
ANGIO = (200.0, 800.0)

FAT_BAND = (-190.0, -30.0)
MUSCLE_BAND = (-29.0, 150.0)
FAT_DEPTH_MM = (3.0, 30.0)
MUSCLE_DEPTH_MM = (5.0, 60.0)
LUNG_BELOW = -500.0


# ------------------------------------------------------------------------------ volumes


@dataclass
class Volume:
    """An axis-aligned LPS volume [Z, Y, X]; origin_lps = (x, y, z) mm of voxel [0, 0, 0]."""
    name: str
    hu: np.ndarray
    spacing_zyx: tuple
    origin_lps: tuple
    seg: np.ndarray | None = None  # TotalSegmentator ids (int16), or None
    tissue: np.ndarray | None = None  # phantom tissue ids
    tissue_names: tuple = ()
    levels: dict = field(default_factory=dict)  # name -> (x, y, z) mm LPS
    info: dict = field(default_factory=dict)

    def index(self, axis: str, mm: float) -> int:
        """Nearest voxel index along 'z', 'y' or 'x' of a world coordinate, clipped to the grid."""
        a = {"x": (2, 0), "y": (1, 1), "z": (0, 2)}[axis]
        i = int(round((mm - self.origin_lps[a[1]]) / self.spacing_zyx[a[0]]))
        return int(np.clip(i, 0, self.hu.shape[a[0]] - 1))

    def world(self, axis: str, idx: float) -> float:
        a = {"x": (2, 0), "y": (1, 1), "z": (0, 2)}[axis]
        return float(self.origin_lps[a[1]] + idx * self.spacing_zyx[a[0]])

    def centroid(self, mask: np.ndarray) -> tuple:
        c = ndimage.center_of_mass(mask)
        return (self.world("x", c[2]), self.world("y", c[1]), self.world("z", c[0]))

    def tissue_mask(self, names) -> np.ndarray:
        ids = [i for i, n in enumerate(self.tissue_names) if n in names]
        return np.isin(self.tissue, ids)


def _lps_volume(name, arr_ijk, affine_ras, zooms, **kw) -> Volume:
    """From data.reorient_lps output (i->L, j->P, k->S, RAS affine) to a Volume."""
    rot = affine_ras[:3, :3] / np.asarray(zooms)
    if np.abs(rot - np.diag(np.diag(rot))).max() > 1e-3:
        raise ValueError(f"{name}: oblique grid, not supported")
    origin = (-float(affine_ras[0, 3]), -float(affine_ras[1, 3]), float(affine_ras[2, 3]))
    return Volume(name, D.to_tensor_order(arr_ijk), (zooms[2], zooms[1], zooms[0]), origin, **kw)


def _load_nifti(path: Path, dtype):
    img = nib.load(str(path))
    return D.reorient_lps(img, np.asanyarray(img.dataobj).astype(dtype))


def _on_grid(src: Volume, seg: np.ndarray, dst: Volume) -> np.ndarray:
    """Nearest-neighbour resampling of a [Z, Y, X] array on src's grid onto dst's grid."""
    coords = []
    for axis, n in zip("zyx", dst.hu.shape):
        w = np.array([dst.world(axis, i) for i in range(n)])
        a = {"x": (2, 0), "y": (1, 1), "z": (0, 2)}[axis]
        coords.append((w - src.origin_lps[a[1]]) / src.spacing_zyx[a[0]])
    grid = np.meshgrid(*coords, indexing="ij")
    return ndimage.map_coordinates(seg, grid, order=0, mode="constant", cval=0)


# ------------------------------------------------------------------------------ real scans


def thorax_carina_k(hu: np.ndarray) -> int:
    """Lowest slice on which the trachea is still one lumen. Air is HU < -950 in the central 40 %
    of the slice. Seed: going down from 85 % of the height, the first air component of at least
    80 voxels whose centre lies within 10 % of the slice width from the midline (the trachea).
    Tracking: on each next slice down, the air components that overlap the previous section
    (dilated by 2 voxels) and hold at least max(30, 15 % of the previous section) voxels (smaller
    ones are noise at the wall); the carina is the slice above the first one where two of them
    overlap (the main bronchi)."""
    nz, ny, nx = hu.shape
    y0, y1, x0, x1 = int(ny * 0.3), int(ny * 0.7), int(nx * 0.3), int(nx * 0.7)
    prev = None
    for k in range(int(nz * 0.85), 0, -1):
        air = hu[k, y0:y1, x0:x1] < -950
        lab, n = ndimage.label(air)
        if n == 0:
            if prev is not None:
                break
            continue
        sizes = ndimage.sum(air, lab, range(1, n + 1))
        if prev is None:
            for i in np.argsort(sizes)[::-1]:
                cx = ndimage.center_of_mass(air, lab, i + 1)[1] + x0
                if sizes[i] >= 80 and abs(cx - nx / 2) < 0.1 * nx:
                    prev = lab == i + 1
                    break
            continue
        grown = ndimage.binary_dilation(prev, iterations=2)
        big = max(30.0, 0.15 * prev.sum())
        hits = [i + 1 for i in np.unique(lab[grown & air]) - 1 if i >= 0 and sizes[i] >= big]
        if len(hits) >= 2:
            return k + 1
        if not hits:
            break
        prev = lab == hits[0]
    raise ValueError("carina not found")


def load_thorax() -> Volume:
    hu_ijk, ras, first = D.load_dicom_series(THORAX_DIR)
    arr, aff, zooms = D.reorient_lps(nib.Nifti1Image(hu_ijk, ras), hu_ijk)
    v = _lps_volume("thorax plain (thorax_ct_dicom)", arr.astype(np.float32), aff, zooms,
                    info={"scanner": f"{first.get('Manufacturer', '')} {first.get('ManufacturerModelName', '')}",
                          "kernel": str(first.get("ConvolutionKernel", "")), "kvp": str(first.get("KVP", ""))})
    kc = thorax_carina_k(v.hu)
    cx, cy = v.world("x", v.hu.shape[2] / 2), v.world("y", v.hu.shape[1] / 2)
    v.levels = {"carina": (cx, cy, v.world("z", kc)), "heart": (cx, cy, v.world("z", THORAX_HEART_K))}
    v.info["level_rule"] = {
        "carina": f"k={kc}: lowest slice with one airway lumen (automatic airway tracking, checked by eye)",
        "heart": f"k={THORAX_HEART_K}: hand-picked mid-ventricular level (largest cardiac cross-section, "
                 "below the left atrium, above the diaphragm)"}
    return v


def load_cta() -> Volume:
    arr, aff, zooms = _load_nifti(CTA_DIR / "ct_cropped.nii.gz", np.float32)
    v = _lps_volume("chest CTA (chest_cta_pulmonary_artery)", arr, aff, zooms)
    seg = np.zeros(v.hu.shape, np.int16)
    pa, aff_pa, _ = _load_nifti(CTA_DIR / "pulmonary_artery.nii.gz", np.uint8)
    if not np.allclose(aff_pa, aff, atol=1e-2):
        raise ValueError("pulmonary_artery.nii.gz is not on the CT grid")
    ha, aff_h, zh = _load_nifti(CTA_DIR / "heart.nii.gz", np.uint8)
    heart = _on_grid(_lps_volume("heart", ha, aff_h, zh), D.to_tensor_order(ha), v)
    seg[heart > 0] = 51  # TotalSegmentator v2: 51 heart, 1 pulmonary artery -> kept as its own id
    seg[D.to_tensor_order(pa) > 0] = 1000
    v.seg = seg
    blobs = {}
    for b in ("pul_annulus", "pul_bifurcation"):
        m, aff_b, _ = _load_nifti(CTA_DIR / f"{b}.nii.gz", np.uint8)
        blobs[b] = np.array(v.centroid(D.to_tensor_order(m) > 0))
    mid = (blobs["pul_annulus"] + blobs["pul_bifurcation"]) / 2
    v.levels = {"pulmonary_trunk": tuple(float(t) for t in mid),
                "pul_bifurcation": tuple(float(t) for t in blobs["pul_bifurcation"])}
    v.info["level_rule"] = {"pulmonary_trunk": "midpoint of the pul_annulus and pul_bifurcation blob centroids"}
    return v


def load_abdomen_plain() -> Volume:
    arr, aff, zooms = _load_nifti(ABD_DIR / "example_ct.nii.gz", np.float32)
    v = _lps_volume("abdomen plain (example_ct)", arr, aff, zooms)
    s, aff_s, _ = _load_nifti(ABD_DIR / "example_seg_fast_force_split.nii.gz", np.int16)
    if not np.allclose(aff_s, aff, atol=1e-2):
        raise ValueError("example_seg_fast_force_split.nii.gz is not on the CT grid")
    v.seg = D.to_tensor_order(s)
    kid = v.centroid(np.isin(v.seg, (2, 3)))
    aorta_k = int(np.nonzero((v.seg == 52).any(axis=(1, 2)))[0].min())
    sl = np.zeros(v.seg.shape, bool)
    sl[aorta_k] = v.seg[aorta_k] == 52
    bif = v.centroid(sl)
    v.levels = {"renal": kid, "aortic_bifurcation": bif,
                "iliac": (bif[0], bif[1], bif[2] - ILIAC_BELOW_BIFURCATION_MM)}
    v.info["level_rule"] = {
        "renal": "mean centroid of the kidneys (TotalSegmentator 2, 3): renal hilum",
        "aortic_bifurcation": f"lowest slice of the aorta label (52), k={aorta_k}; the iliac arteries start below",
        "iliac": f"{ILIAC_BELOW_BIFURCATION_MM:g} mm below the aortic bifurcation"}
    return v


def load_abdomen_contrast() -> Volume:
    hu_ijk, ras, first = D.load_dicom_series(D.J2K_DIR)
    arr, aff, zooms = D.reorient_lps(nib.Nifti1Image(hu_ijk, ras), hu_ijk)
    v = _lps_volume("abdomen contrast (example_ct_dicom_j2k)", arr.astype(np.float32), aff, zooms)
    s, aff_s, _ = _load_nifti(D.J2K_SEG, np.int16)
    if s.shape != arr.shape or not np.allclose(aff_s, aff, atol=1e-2):
        raise ValueError("example_seg_dicom.nii.gz is not on the series grid")
    v.seg = D.to_tensor_order(s)
    v.levels = {"portal_vein": v.centroid(v.seg == 64)}
    v.info["level_rule"] = {"portal_vein": "centroid of the portal/splenic vein label (64)"}
    med = {n: float(np.median(v.hu[v.seg == i])) for n, i in (("aorta", 52), ("portal", 64), ("ivc", 63),
                                                               ("liver", 5))}
    v.info["phase_evidence_median_hu"] = med
    return v


# ------------------------------------------------------------------------------ phantom


def phantom_volume(render, seed: int, phase: str, fov: str) -> Volume:
    r = render(seed, phase, fov)
    v = Volume(f"digital patient seed {seed}, fov {fov}, {phase}", np.asarray(r.hu, np.float32),
               tuple(float(s) for s in r.spacing_zyx), tuple(float(o) for o in r.origin_lps),
               tissue=r.tissue, tissue_names=tuple(r.tissue_names), levels=dict(r.landmarks),
               info={"acquisition": getattr(r, "acquisition", {})})
    if "portal_vein" in v.tissue_names and v.tissue_mask(("portal_vein",)).any():
        v.levels["portal_vein"] = v.centroid(v.tissue_mask(("portal_vein",)))
    if "aortic_bifurcation" in v.levels:
        x, y, z = v.levels["aortic_bifurcation"]
        v.levels["iliac"] = (x, y, z - ILIAC_BELOW_BIFURCATION_MM)
    return v


# ------------------------------------------------------------------------------ masks, statistics


def erode(mask: np.ndarray) -> tuple[np.ndarray, str]:
    m = ndimage.binary_erosion(mask, structure=np.ones((3, 3, 3), bool))
    if m.sum() >= MIN_VOXELS:
        return m, "eroded 1 voxel (3x3x3)"
    m = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))
    if m.sum() >= MIN_VOXELS:
        return m, "eroded 1 voxel in-plane (3-D erosion left too few)"
    return mask, "not eroded (too small)"


def hu_stats(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return {"n": int(v.size), "mean": round(float(v.mean()), 1), "std": round(float(v.std()), 1),
            "p5": round(float(p5), 1), "median": round(float(p50), 1), "p95": round(float(p95), 1)}


def is_crop_inside_body(hu: np.ndarray) -> bool:
    """True when the field of view lies inside the body (no air around it): more than 20 % of the
    in-plane border voxels are tissue."""
    border = np.concatenate([hu[:, 0, :].ravel(), hu[:, -1, :].ravel(), hu[:, :, 0].ravel(), hu[:, :, -1].ravel()])
    return float((border > D.BODY_HU).mean()) > 0.2


def body_and_depth(v: Volume):
    """Filled body mask and the in-plane depth below the skin (mm) of every body voxel."""
    if "_body" not in v.info:
        body = D.body_mask(v.hu)
        depth = np.zeros(v.hu.shape, np.float32)
        for k in range(v.hu.shape[0]):
            if body[k].any():
                depth[k] = ndimage.distance_transform_edt(body[k], sampling=v.spacing_zyx[1:])
        v.info["_body"] = (body, depth)
    return v.info["_body"]


def rule_mask(v: Volume, rule: str) -> np.ndarray:
    hu = v.hu
    if rule == "lung":
        inside = np.ones(hu.shape, bool) if is_crop_inside_body(hu) else body_and_depth(v)[0]
        return erode(inside & (hu < LUNG_BELOW))[0]
    body, depth = body_and_depth(v)
    band, (d0, d1) = (FAT_BAND, FAT_DEPTH_MM) if rule == "fat" else (MUSCLE_BAND, MUSCLE_DEPTH_MM)
    m = body & (hu >= band[0]) & (hu <= band[1]) & (depth >= d0) & (depth <= d1)
    return ndimage.binary_erosion(m, structure=np.ones((1, 3, 3), bool))


RULE_TEXT = {
    "lung": f"HU < {LUNG_BELOW:g} inside the body (whole crop where the crop lies inside the chest), eroded 3x3x3",
    "fat": f"HU {FAT_BAND[0]:g}..{FAT_BAND[1]:g} at {FAT_DEPTH_MM[0]:g}-{FAT_DEPTH_MM[1]:g} mm below the skin, "
           "eroded in-plane",
    "muscle": f"HU {MUSCLE_BAND[0]:g}..{MUSCLE_BAND[1]:g} at {MUSCLE_DEPTH_MM[0]:g}-{MUSCLE_DEPTH_MM[1]:g} mm "
              "below the skin, eroded in-plane",
}


@dataclass
class Structure:
    scan: str  # key of the real scan
    name: str
    real_ids: tuple = ()  # TotalSegmentator ids (CTA: 1000 = pulmonary_artery.nii.gz); empty -> rule
    rule: str = ""  # "lung" / "fat" / "muscle" when threshold-defined
    tissues: tuple = ()  # phantom tissue names
    phantom_region: str = ""  # "below:<landmark>": phantom voxels below that landmark's z only
    phantom_fov: str = ""  # another field of view of the phantom than the scan's (same phase)


STRUCTURES = [
    Structure("thorax", "lung parenchyma", rule="lung", tissues=("lung",)),
    Structure("thorax", "subcutaneous fat", rule="fat", tissues=("fat",)),
    Structure("thorax", "chest-wall muscle", rule="muscle", tissues=("muscle",)),
    Structure("cta", "pulmonary artery", (1000,), tissues=("pulmonary_artery",)),
    Structure("cta", "heart (chambers + myocardium)", (51,),
              tissues=("heart_blood_left", "heart_blood_right", "myocardium")),
    Structure("cta", "lung parenchyma", rule="lung", tissues=("lung",)),
    Structure("abdomen_plain", "aorta", (52,), tissues=("aorta",)),
    Structure("abdomen_plain", "inferior vena cava", (63,), tissues=("ivc",)),
    Structure("abdomen_plain", "portal + splenic vein", (64,), tissues=("portal_vein",)),
    Structure("abdomen_plain", "iliac arteries", (65, 66), tissues=("artery",), phantom_region="below:aortic_bifurcation"),
    Structure("abdomen_plain", "iliac veins", (67, 68), tissues=("vein",), phantom_region="below:aortic_bifurcation"),
    Structure("abdomen_plain", "liver", (5,), tissues=("liver",)),
    Structure("abdomen_plain", "spleen", (1,), tissues=("spleen",)),
    Structure("abdomen_plain", "kidneys", (2, 3), tissues=("kidney_cortex", "kidney_medulla")),
    Structure("abdomen_plain", "pancreas", (7,), tissues=("pancreas",)),
    Structure("abdomen_plain", "gallbladder", (4,), tissues=("gallbladder",)),
    Structure("abdomen_plain", "urinary bladder", (21,), tissues=("bladder",), phantom_fov="pelvis"),
    Structure("abdomen_plain", "small bowel", (18,), tissues=("bowel_wall", "bowel_content")),
    Structure("abdomen_plain", "spinal canal / cord", (79,), tissues=("spinal_canal",)),
    Structure("abdomen_plain", "paraspinal + psoas muscle", (86, 87, 88, 89), tissues=("muscle",)),
    Structure("abdomen_plain", "subcutaneous fat", rule="fat", tissues=("fat",)),
    Structure("abdomen_contrast", "aorta", (52,), tissues=("aorta",)),
    Structure("abdomen_contrast", "inferior vena cava", (63,), tissues=("ivc",)),
    Structure("abdomen_contrast", "portal + splenic vein", (64,), tissues=("portal_vein",)),
    Structure("abdomen_contrast", "liver", (5,), tissues=("liver",)),
    Structure("abdomen_contrast", "spleen", (1,), tissues=("spleen",)),
    Structure("abdomen_contrast", "pancreas", (7,), tissues=("pancreas",)),
    Structure("abdomen_contrast", "paraspinal + psoas muscle", (86, 87, 88, 89), tissues=("muscle",)),
    Structure("abdomen_contrast", "subcutaneous fat", rule="fat", tissues=("fat",)),
]

# real scan key -> (loader, phantom phase, phantom fov)
SCANS = {
    "thorax": (load_thorax, "plain", "chest"),
    "cta": (load_cta, "pulmonary_arterial", "heart"),
    "abdomen_plain": (load_abdomen_plain, "plain", "abdomen"),
    "abdomen_contrast": (load_abdomen_contrast, "portal_venous", "abdomen"),
}


def real_mask(v: Volume, s: Structure) -> tuple[np.ndarray, str]:
    if s.rule:
        return rule_mask(v, s.rule), RULE_TEXT[s.rule]
    m, how = erode(np.isin(v.seg, s.real_ids))
    return m, f"TotalSegmentator {list(s.real_ids)}, {how}"


def phantom_mask(v: Volume, s: Structure) -> tuple[np.ndarray, str]:
    m = v.tissue_mask(s.tissues)
    how = f"tissue {list(s.tissues)}"
    if s.phantom_region.startswith("below:"):
        lm = s.phantom_region.split(":", 1)[1]
        if lm in v.levels:
            m[v.index("z", v.levels[lm][2]):] = False
            how += f" below {lm}"
    m, e = erode(m)
    return m, f"{how}, {e}"


def compare(scans: dict, phantoms: dict) -> list[dict]:
    rows = []
    for s in STRUCTURES:
        if s.scan not in scans:
            continue
        rv = scans[s.scan]
        pv = phantoms.get(f"{s.scan}@{s.phantom_fov}") if s.phantom_fov else phantoms[s.scan]
        if pv is None:
            continue
        m, how = real_mask(rv, s)
        row = {"scan": s.scan, "structure": s.name, "real_volume": rv.name, "phantom_volume": pv.name,
               "real": dict(hu_stats(rv.hu[m]), mask=how)}
        pm, phow = phantom_mask(pv, s)
        row["phantom"] = dict(hu_stats(pv.hu[pm]), mask=phow)
        if s.rule and not (s.rule != "lung" and is_crop_inside_body(pv.hu)):
            row["phantom_rule"] = dict(hu_stats(pv.hu[rule_mask(pv, s.rule)]), mask=RULE_TEXT[s.rule])
        p = row["phantom"]
        if row["real"]["n"] and p["n"]:
            row["delta_median"] = round(p["median"] - row["real"]["median"], 1)
            row["delta_std"] = round(p["std"] - row["real"]["std"], 1)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ figures


def _window(img, lw):
    level, width = lw
    return np.clip((img - (level - width / 2)) / width, 0, 1)


def _plane(v: Volume, view: str, point) -> tuple[np.ndarray, tuple, str]:
    """2-D image, extent (mm, centred on the point) and a position text for imshow(origin='upper')."""
    sz, sy, sx = v.spacing_zyx
    if view == "axial":
        k = v.index("z", point[2])
        img = v.hu[k]
        x0, y0 = v.world("x", -0.5) - point[0], v.world("y", -0.5) - point[1]
        extent = (x0, x0 + img.shape[1] * sx, y0 + img.shape[0] * sy, y0)  # anterior up, patient right left
        return img, extent, f"axial k={k}, z={v.world('z', k):.0f} mm"
    j = v.index("y", point[1])
    img = v.hu[::-1, j, :]  # superior up
    x0, z0 = v.world("x", -0.5) - point[0], v.world("z", -0.5) - point[2]
    extent = (x0, x0 + img.shape[1] * sx, z0, z0 + img.shape[0] * sz)
    return img, extent, f"coronal j={j}, y={v.world('y', j):.0f} mm"


def side_by_side(path: Path, real: Volume, real_level: str, phantom: Volume, phantom_level: str,
                 title: str, rows=(("axial", SOFT),), half_mm: float | None = None) -> dict:
    """One PNG: real (left) and phantom (right) at their levels, one row per (view, window), both
    on the same mm scale (axes in mm from the level point). Returns what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rp, pp = real.levels[real_level], phantom.levels[phantom_level]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 5.2 * len(rows)), squeeze=False)
    drawn = []
    for r, (view, win) in enumerate(rows):
        panels = [_plane(real, view, rp), _plane(phantom, view, pp)]
        if half_mm is None:
            h = max(max(abs(e) for e in ext) for _, ext, _ in panels)
        else:
            h = half_mm
        for c, ((img, ext, pos), vol, lvl) in enumerate(zip(panels, (real, phantom), (real_level, phantom_level))):
            ax = axes[r, c]
            ax.imshow(_window(img, win), cmap="gray", vmin=0, vmax=1, extent=ext, interpolation="nearest")
            ax.set_xlim(-h, h)
            if view == "axial":
                ax.set_ylim(h, -h)
            else:
                ax.set_ylim(-h, h)
            ax.set_facecolor("black")
            ax.set_title(f"{vol.name}\n{lvl} level: {pos}\nW{win[1]:g}/L{win[0]:g}", fontsize=8)
            ax.set_xlabel("mm (patient right on the left)", fontsize=7)
            ax.set_ylabel("mm (anterior up)" if view == "axial" else "mm (superior up)", fontsize=7)
            ax.tick_params(labelsize=7)
            drawn.append({"volume": vol.name, "level": lvl, "view": view, "position": pos, "window": list(win),
                          "mm_limits": [round(float(t), 1) for t in (*ax.get_xlim(), *ax.get_ylim())]})
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"file": path.name, "title": title, "panels": drawn}


FIGURES = [
    # (file stem, scan key, real level, phantom level, title, rows)
    ("thorax_carina", "thorax", "carina", "carina", "Plain thorax vs digital patient (chest, plain): carina",
     (("axial", SOFT), ("axial", LUNG))),
    ("thorax_heart", "thorax", "heart", "heart_centre", "Plain thorax vs digital patient (chest, plain): heart",
     (("axial", SOFT), ("axial", LUNG))),
    ("cta_pulmonary_trunk", "cta", "pulmonary_trunk", "pulmonary_trunk",
     "Chest CTA vs digital patient (heart crop, pulmonary arterial): pulmonary trunk",
     (("axial", SOFT), ("axial", ANGIO), ("coronal", ANGIO))),
    ("abdomen_renal", "abdomen_plain", "renal", "renal_arteries",
     "Plain abdomen vs digital patient (abdomen, plain): renal level", (("axial", SOFT),)),
    ("abdomen_iliac", "abdomen_plain", "iliac", "iliac",
     f"Plain abdomen vs digital patient (abdomen, plain): {ILIAC_BELOW_BIFURCATION_MM:g} mm below the aortic "
     "bifurcation", (("axial", SOFT),)),
    ("abdomen_contrast_portal", "abdomen_contrast", "portal_vein", "portal_vein",
     "Contrast abdomen (portal venous) vs digital patient (abdomen, portal venous): portal vein",
     (("axial", SOFT),)),
]


# ------------------------------------------------------------------------------ report


def _fmt(s: dict) -> str:
    if not s or not s.get("n"):
        return "–"
    return f"{s['median']:.0f} ({s['p5']:.0f}..{s['p95']:.0f}); {s['mean']:.0f} ± {s['std']:.0f}; n={s['n']}"


def markdown(result: dict) -> str:
    lines = [
        "# Digital patient vs real CT (issue 12)", "",
        f"Digital patient seed {result['seed']}; generated by `python -m needle_nav_training.realism` "
        f"in {result['seconds']:.0f} s. Real scans from `../shared/data` (labels: TotalSegmentator output, "
        "not manual annotation).", "",
        "## Slices at the same level", "",
    ]
    for f in result["figures"]:
        lines += [f"**{f['title']}**", ""]
        for p in f["panels"][:2]:
            lines.append(f"- {p['volume']}: {p['level']} level, {p['position']}")
        lines += ["", f"![{f['title']}]({f['file']})", ""]
    lines += ["Levels:", ""]
    for key, rule in result["level_rules"].items():
        for name, text in rule.items():
            lines.append(f"- {key} {name}: {text}")
    lines += ["", "## HU per structure", "",
              "median (p5..p95); mean ± std; n voxels. Real structures under their TotalSegmentator labels "
              "eroded by one voxel (partial volume), or threshold-defined where there is no label; the digital "
              "patient under its own tissue map (same erosion) and, for threshold tissues, under the same "
              "threshold rule. Δ = phantom (tissue map) − real.", "",
              "| real scan → phantom | structure | real | phantom (tissue map) | phantom (same rule) | Δ median | Δ std |",
              "|---|---|---|---|---|---|---|"]
    for r in result["hu"]:
        ph = r["phantom_volume"].split(", ", 1)[1]
        lines.append(f"| {r['scan']} → {ph} | {r['structure']} | {_fmt(r['real'])} | {_fmt(r['phantom'])} | "
                     f"{_fmt(r.get('phantom_rule', {}))} | {r.get('delta_median', '–')} | {r.get('delta_std', '–')} |")
    lines += ["", "Masks:", ""]
    for r in result["hu"]:
        lines.append(f"- {r['scan']} / {r['structure']}: real {r['real']['mask']}; phantom {r['phantom']['mask']}")
    lines += ["", "Threshold bands: fat −190..−30 HU and muscle −29..150 HU are the Alberta-protocol bands used in "
              "CT body-composition analysis; their statistics are bounded by the band, so compare medians and "
              "spreads, not the band edges.", ""]
    return "\n".join(lines)


def run(out: Path, seed: int = 1, render=None, scans=None) -> dict:
    """Loads the real scans, renders the phantom in the matching phases and field of view, writes
    the figures, realism_hu.json and realism.md into out. render defaults to anatomy.render."""
    t0 = time.time()
    if render is None:
        from .anatomy import render
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(SCANS) if scans is None else list(scans)
    real, ph, cache = {}, {}, {}
    for k in keys:
        loader, phase, fov = SCANS[k]
        real[k] = loader()
        if (phase, fov) not in cache:
            cache[(phase, fov)] = phantom_volume(render, seed, phase, fov)
        ph[k] = cache[(phase, fov)]
        for s in STRUCTURES:
            if s.scan == k and s.phantom_fov:
                if (phase, s.phantom_fov) not in cache:
                    cache[(phase, s.phantom_fov)] = phantom_volume(render, seed, phase, s.phantom_fov)
                ph[f"{k}@{s.phantom_fov}"] = cache[(phase, s.phantom_fov)]
    figures = []
    for stem, k, rl, pl, title, rows in FIGURES:
        if k in real and rl in real[k].levels and pl in ph[k].levels:
            figures.append(side_by_side(out / f"realism_{stem}.png", real[k], rl, ph[k], pl, title, rows))
    hu = compare(real, ph)
    result = {
        "seed": seed, "figures": figures, "hu": hu,
        "phantoms": {k: f"{SCANS[k][2]} {SCANS[k][1]}" for k in keys},
        "real_volumes": {k: {"name": v.name, "spacing_zyx_mm": list(v.spacing_zyx), "shape": list(v.hu.shape),
                             "levels_lps_mm": {n: [round(c, 1) for c in p] for n, p in v.levels.items()},
                             **{i: j for i, j in v.info.items() if not i.startswith("_") and i != "level_rule"}}
                         for k, v in real.items()},
        "phantom_volumes": {k: {"name": v.name, "spacing_zyx_mm": list(v.spacing_zyx), "shape": list(v.hu.shape),
                                "levels_lps_mm": {n: [round(c, 1) for c in p] for n, p in v.levels.items()},
                                "acquisition": v.info.get("acquisition", {})} for k, v in ph.items()},
        "phantom_tissue_names": list(next(iter(ph.values())).tissue_names) if ph else [],
        "level_rules": {k: v.info.get("level_rule", {}) for k, v in real.items()},
        "definitions": {"erosion": "3x3x3 binary erosion (in-plane 3x3 where the 3-D one leaves < "
                                   f"{MIN_VOXELS} voxels)", "rules": RULE_TEXT},
    }
    result["seconds"] = round(time.time() - t0, 1)
    (out / "realism_hu.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "realism.md").write_text(markdown(result))
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    res = run(a.out, a.seed)
    print(f"realism: {len(res['figures'])} figures, {len(res['hu'])} structures, {res['seconds']:.0f} s -> {a.out}")


if __name__ == "__main__":
    main()
