"""`needle_nav plan` on the real cases in cases/ (scans in ../shared/data), checked independently.

- Planted unsafe paths (case.json "planted_unsafe_paths": through the aorta, the heart, a lung vessel,
  the pulmonary trunk; chosen by HU analysis and pictures, scripts/cases/planted_paths.py) judged
  with --entry-mm must be refused by the layer they cross.
- The free plan on the thorax lesion reports every term, and the terms are recomputed here from the
  written layers and the CT (nibabel, pydicom, scipy's exact Euclidean distance transform) following
  the sampling rule of the plan command: clearance per layer, lung length, pleural crossings (every
  change into or out of the lung region, the lesion's own samples left out), the entry on the skin.
  The bone layer must be CT >= 300 HU exactly (the series read with pydicom), the aerated lung must
  agree with a lung mask made here. Both without and with the network (about a minute more).
- The chest CTA is cropped around the heart (no skin in the field of view): the plan says so.
Skipped only when the shared data folder is missing."""
import json
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, executable
from scipy import ndimage

sys.path.insert(0, str(ROOT / "scripts" / "cases"))
from ct_io import RAS_TO_LPS, load_ct  # noqa: E402  (pydicom / nibabel readers, not the planner's)

THORAX = ROOT / "cases" / "thorax_ct_lung_lesion"
CTA = ROOT / "cases" / "chest_cta_lung_point"
LAYERS = ["network_vessels", "bone", "mediastinum", "lung_vessels", "airways", "contrast_vessels"]
TERMS = ["entry_mm", "target_mm", "direction", "length_mm", "approach_angle_deg", "clearance_mm", "min_clearance_mm",
         "nearest_layer", "lung_length_mm", "pleural_crossings", "fissure_crossings", "pleural_angle_deg",
         "rib_clearance_mm", "reaches_skin", "cost", "refusals", "refused_layer"]
BONE_HU, BODY_HU, LUNG_HU = 300.0, -400.0, -400.0


def case_spec(case):
    spec = json.loads((case / "case.json").read_text())
    ct = (case / spec["files"]["ct_dicom_dir"]).resolve()
    if not ct.exists():
        pytest.skip(f"shared data not found at {ct}")
    return spec, ct


def plan(out, *args):
    """Runs the plan command; returns (exit status, plan.json)."""
    r = subprocess.run([executable("needle_nav"), "plan", *args, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode in (0, 3), f"exit {r.returncode}: {r.stderr[-3000:]}"
    return r.returncode, json.loads((out / "plan.json").read_text())


def judged(p):
    """The candidate a plan reports: the chosen path, or when refused the best refused one."""
    return p["chosen"] if p["status"] == "ok" else p["best_refused"]


def planted():
    for case in (THORAX, CTA):
        for path in json.loads((case / "case.json").read_text()).get("planted_unsafe_paths", []):
            yield pytest.param(case, path, id=f"{case.name}-{path['through']}")


@pytest.mark.parametrize("case,path", list(planted()))
def test_a_planted_unsafe_path_is_refused_by_the_layer_it_crosses(case, path, tmp_path):
    spec, ct = case_spec(case)
    target = np.array(spec["reference"]["lesion_centre_mm"])
    entry = np.array(path["entry_mm"])
    rc, p = plan(tmp_path, "--case", str(case), "--no-network", "--entry-mm", ",".join(f"{v}" for v in entry))
    assert rc == 3 and p["status"] == "refused", p["reason"]
    assert p["refused_layer"] == path["expected_layer"], (p["refused_layer"], p["reason"])
    c = judged(p)
    assert c is not None and c["refused_layer"] == path["expected_layer"]
    # The judged path is the proposed one: from the target towards the entry.
    want = (entry - target) / np.linalg.norm(entry - target)
    assert np.allclose(c["direction"], want, atol=1e-6), (c["direction"], want)
    margin = {l["name"]: l["margin_mm"] for l in p["layers"]}[path["expected_layer"]]
    assert c["clearance_mm"][path["expected_layer"]] < margin

    # Independently: the line crosses what case.json says. HU along it (nearest voxel, 0.5 mm),
    # beyond the lesion: blood or soft tissue for >= 20 mm (aorta, heart, trunk), or a vessel: 3-12 mm
    # above -500 HU (half way from aerated lung to blood: 2 mm slices blur a 4 mm vessel) with a
    # tissue peak, between aerated lung.
    hu, affine = load_ct(ct)
    s = np.arange(spec["reference"]["lesion_radius_mm"] + 3.0, np.linalg.norm(entry - target), 0.5)
    ijk = voxel_index(affine, target[None] + s[:, None] * want[None])
    h = hu[tuple(ijk.T)]
    if path["expected_layer"] == "mediastinum":
        runs = tissue_runs(h > -200)
        assert any((b - a) * 0.5 >= 20.0 and np.median(h[a:b]) > -50 for a, b in runs), runs
    else:
        runs = tissue_runs(h > -500)
        assert any(3.0 <= (b - a) * 0.5 <= 12.0 and h[a:b].max() > -100 and h[a - 4:a].min() < -650 and h[b:b + 4].min() < -650
                   for a, b in runs if a >= 4 and b < len(h)), runs


def voxel_index(affine, p_mm):
    """Nearest voxel (round the continuous index) of LPS points on a grid whose affine maps to LPS."""
    inv = np.linalg.inv(affine)
    return np.rint(p_mm @ inv[:3, :3].T + inv[:3, 3]).astype(int)


def tissue_runs(mask):
    edges = np.diff(np.r_[0, mask.astype(int), 0])
    return list(zip(np.where(edges == 1)[0], np.where(edges == -1)[0]))


def layer_on_grid(path):
    """(mask bool[i, j, k], affine voxel -> LPS mm, spacing mm) of a written layer."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj) > 0, RAS_TO_LPS @ img.affine, np.asarray(img.header.get_zooms()[:3], float)


def ct_on_grid(hu, ct_affine, grid_affine, shape):
    """The CT resampled onto a layer's grid, nearest voxel; the grids must coincide up to axis order
    and direction (checked), so this is exact."""
    m = np.linalg.inv(ct_affine) @ grid_affine
    assert np.allclose(m, np.rint(m), atol=1e-4), f"the layer grid is not the CT grid:\n{m}"
    return ndimage.affine_transform(hu, np.rint(m), output_shape=shape, order=0, mode="constant", cval=-2000)


def outside_body(hu):
    """Air (HU <= -400) connected to a slice border within the slice: outside the body (on the thorax
    series no lung touches the border, so the planner's exception for cropped lungs does not arise)."""
    out = np.zeros(hu.shape, bool)
    four = ndimage.generate_binary_structure(2, 1)
    for k in range(hu.shape[2]):
        lab, _ = ndimage.label(hu[:, :, k] <= BODY_HU, structure=four)
        border = np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])
        out[:, :, k] = np.isin(lab, border[border > 0])
    return out


def own_lung_mask(hu, spacing):
    """Lung air: below -400 HU, not outside, in components of at least 100 ml."""
    air = (hu < LUNG_HU) & ~outside_body(hu)
    lab, n = ndimage.label(air)
    ml = ndimage.sum(air, lab, range(1, n + 1)) * np.prod(spacing) / 1000.0
    return np.isin(lab, 1 + np.flatnonzero(ml >= 100.0))


@pytest.fixture(scope="module", params=["no_network", "network"])
def thorax_plan(request, tmp_path_factory):
    spec, ct = case_spec(THORAX)
    out = tmp_path_factory.mktemp(f"thorax_{request.param}")
    args = ["--case", str(THORAX)] + (["--no-network"] if request.param == "no_network" else [])
    rc, p = plan(out, *args)
    return request.param, spec, ct, out, rc, p


def test_the_thorax_plan_reports_every_term(thorax_plan):
    mode, spec, _, out, rc, p = thorax_plan
    assert (rc == 0) == (p["status"] == "ok")
    assert np.allclose(p["target_mm"], spec["reference"]["lesion_centre_mm"]) and p["lesion_radius_mm"] == spec["reference"]["lesion_radius_mm"]
    assert sorted(l["name"] for l in p["layers"]) == sorted(LAYERS)
    for l in p["layers"]:
        assert (out / l["path"]).is_file() and l["margin_mm"] >= 0
    for key in ["aerated_path", "region_path", "fissures_path"]:
        assert (out / p["lung"][key]).is_file()
    assert (p["label_map_path"] is None) == (mode == "no_network")
    c = judged(p)
    assert c is not None, p["reason"]
    assert set(TERMS) <= set(c), set(TERMS) - set(c)
    assert set(c["clearance_mm"]) == set(LAYERS)
    assert (c["cost"] is None) == bool(c["refusals"])
    for alt in p["alternatives"]:
        assert set(TERMS) <= set(alt) and not alt["refusals"]
        assert np.linalg.norm(np.subtract(alt["entry_mm"], c["entry_mm"])) >= 10.0 - 1e-6


def test_the_thorax_plan_terms_recomputed_from_the_layers_and_the_ct(thorax_plan):
    """Clearances to 0.01 mm (same samples, exact EDT), lengths to one step, crossings exactly."""
    _, spec, ct, out, _, p = thorax_plan
    c = judged(p)
    step = p["step_mm"]
    target = np.array(p["target_mm"])
    direction = np.array(c["direction"])
    assert math.isclose(np.linalg.norm(direction), 1.0, abs_tol=1e-9)
    n = int(round(c["length_mm"] / step))
    assert math.isclose(n * step, c["length_mm"], abs_tol=1e-6), "the entry is not a sample"
    assert np.allclose(target + direction * c["length_mm"], c["entry_mm"], atol=1e-6)
    s = np.arange(n + 1) * step

    layers = {}
    for l in p["layers"]:
        layers[l["name"]] = layer_on_grid(out / l["path"])
    _, affine, spacing = layers["bone"]
    ijk = voxel_index(affine, target[None] + s[:, None] * direction[None])
    for name, (mask, a, sp) in layers.items():
        assert np.allclose(a, affine) and mask.shape == layers["bone"][0].shape
        reported = c["clearance_mm"][name]
        if not mask.any():
            assert reported is None, (name, reported)
            continue
        distance = ndimage.distance_transform_edt(~mask, sampling=sp)
        mine = float(distance[tuple(ijk.T)].min())
        assert abs(mine - reported) <= 0.01, (name, mine, reported)
    finite = {k: v for k, v in c["clearance_mm"].items() if v is not None}
    assert math.isclose(c["min_clearance_mm"], min(finite.values()), abs_tol=1e-6)
    assert c["nearest_layer"] == min(finite, key=finite.get)

    aerated, _, _ = layer_on_grid(out / p["lung"]["aerated_path"])
    region, _, _ = layer_on_grid(out / p["lung"]["region_path"])
    lung_length = step * np.count_nonzero(aerated[tuple(ijk[1:].T)])
    assert abs(lung_length - c["lung_length_mm"]) <= step + 1e-9, (lung_length, c["lung_length_mm"])
    # Pleural crossings: every change into or out of the lung region walking in from the skin, the
    # lesion's own samples (s <= its radius) left out (the planner's documented rule).
    kept = int(math.floor(p["lesion_radius_mm"] / step)) + 1 if p["lesion_radius_mm"] > 0 else 0
    inside = region[tuple(ijk[min(kept, n):][::-1].T)]
    changes = int(np.count_nonzero(inside[:-1] != inside[1:]))
    assert changes == c["pleural_crossings"], (changes, c["pleural_crossings"])

    # The CT read independently (pydicom), on the layers' grid.
    hu_dicom, ct_affine = load_ct(ct)
    hu = ct_on_grid(hu_dicom, ct_affine, affine, aerated.shape)
    # The march: every sample inside the body, the next one outside (the skin) or off the image.
    outside = outside_body(hu)
    assert not outside[tuple(ijk.T)].any()
    beyond = voxel_index(affine, (target + direction * (n + 1) * step)[None])[0]
    on_image = bool(((beyond >= 0) & (beyond < hu.shape)).all())
    assert c["reaches_skin"] == (on_image and bool(outside[tuple(beyond)]))
    assert c["reaches_skin"], "the thorax series shows the skin all round"

    # Bone is CT >= 300 HU exactly, apart from what the lesion exception removed (inside the lesion).
    bone = layers["bone"][0]
    ct_bone = hu >= BONE_HU
    centres = np.indices(bone.shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    in_lesion = (np.linalg.norm(centres - target, axis=1) <= p["lesion_radius_mm"]).reshape(bone.shape)
    assert np.array_equal(bone & ~in_lesion, ct_bone & ~in_lesion), np.count_nonzero((bone ^ ct_bone) & ~in_lesion)
    assert not (bone & ~ct_bone).any()

    # Aerated lung against a mask made here (threshold, per-slice outside, components >= 100 ml):
    # the same definition written independently, so they should agree closely.
    mine = own_lung_mask(hu, spacing)
    dice = 2.0 * np.count_nonzero(mine & aerated) / (np.count_nonzero(mine) + np.count_nonzero(aerated))
    assert dice > 0.99, dice  # 0.998 measured on 2026-11-30
    # The lung region holds the aerated lung and the lesion's centre (a lung lesion).
    assert np.count_nonzero(aerated & ~region) <= 0.01 * np.count_nonzero(aerated)
    assert region[tuple(ijk[0])]


def test_the_cropped_cta_cannot_reach_the_skin(tmp_path):
    spec, _ = case_spec(CTA)
    rc, p = plan(tmp_path, "--case", str(CTA), "--no-network")
    c = judged(p)
    assert c is not None, p["reason"]
    assert set(TERMS) <= set(c), set(TERMS) - set(c)
    if p["status"] == "ok":
        # Only acceptable if the planner really found the skin inside the crop.
        assert rc == 0 and c["reaches_skin"]
    else:
        assert rc == 3 and not c["reaches_skin"], c
        assert any("skin" in r or "field of view" in r for r in c["refusals"]), c["refusals"]
    assert np.allclose(p["target_mm"], spec["reference"]["lesion_centre_mm"])


def test_a_target_inside_the_pulmonary_trunk_is_refused_naming_the_layer(tmp_path):
    """A target deep inside TotalSegmentator's pulmonary artery label of the chest CTA (the label
    voxel farthest from its surface, found here with scipy) lies in the heart and great vessels:
    refused without the network's labels, naming the mediastinum layer."""
    _, ct = case_spec(CTA)
    label = nib.load(ct.parent / "pulmonary_artery.nii.gz")
    mask = np.asarray(label.dataobj) > 0
    depth = ndimage.distance_transform_edt(mask, sampling=np.sqrt((label.affine[:3, :3] ** 2).sum(axis=0)))
    deepest = np.unravel_index(np.argmax(depth), depth.shape)
    assert depth[deepest] > 8.0  # mm inside the trunk
    target_lps = (label.affine[:3, :3] @ np.array(deepest) + label.affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    status, p = plan(tmp_path, "--ct", str(ct), "--target-mm", ",".join(f"{v:.3f}" for v in target_lps),
                     "--no-network")
    assert status == 3 and p["status"] == "refused"
    assert p["refused_layer"] == "mediastinum" and "inside the mediastinum layer" in p["reason"], p["reason"]
    assert p["chosen"] is None and p["best_refused"] is None
