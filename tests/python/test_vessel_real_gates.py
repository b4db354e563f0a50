"""Real-data gates of the committed vessel network (issue 12): `needle_nav evaluate-segmentation
--real-only` on the real scans in ../shared/data must not fall behind the figures recorded for the
committed model in models/vessel_unet_report/real_gates.json, and its figures must be checkable
independently (Dice recomputed with nibabel/numpy from the label map `needle_nav segment` writes;
the thorax body mask recomputed with pydicom/scipy).

The references are TotalSegmentator outputs: the figures are agreement with that model, not
clinical accuracy. Skipped only when the shared data folder is missing.
"""
import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
from nibabel.affines import apply_affine
import numpy as np
import pytest
import scipy.ndimage as ndi

import vessel_peer

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release")) / "needle_nav"
MODEL = ROOT / "models" / "vessel_unet.onnx"
RECORDED = ROOT / "models" / "vessel_unet_report" / "real_gates.json"
SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", ROOT.parent / "shared" / "data"))
# A figure may move this far in its worse direction before the test fails.
TOLERANCE = 0.02
RERECORD = ("target/release/needle_nav evaluate-segmentation --real-only --model models/vessel_unet.onnx "
            "--json models/vessel_unet_report/real_gates.json")
CASES = ["chest_cta", "abdomen_plain", "abdomen_contrast", "thorax_plain"]


def require_shared():
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")


def executable():
    if not EXE.is_file():
        pytest.fail(f"{EXE} not built: run scripts/test.sh (it builds before testing)")
    return str(EXE)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    require_shared()
    out = tmp_path_factory.mktemp("real_gates") / "real_gates.json"
    run = subprocess.run([executable(), "evaluate-segmentation", "--real-only", "--model", str(MODEL),
                          "--shared-data", str(SHARED), "--json", str(out)],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


def figures(report):
    """(case id, variant, figure name) -> figure, over every scored real case."""
    return {(c["id"], v["variant"], f["name"]): f
            for c in report["real_cases"] for v in c["variants"] for f in v["figures"]}


def figure_value(report, case, variant, name):
    return figures(report)[(case, variant, name)]["value"]


def test_every_real_case_is_scored_in_all_three_variants(measured):
    assert measured["schema_version"] == 2
    assert [c["id"] for c in measured["real_cases"]] == CASES
    for c in measured["real_cases"]:
        assert c["error"] is None, f"{c['id']}: {c['error']}"
        assert [v["variant"] for v in c["variants"]] == ["network", "refined", "refined_unbounded"]
        for v in c["variants"]:
            # The confusion rows cover the grid, each voxel once.
            assert sum(r["voxels"] for r in v["confusion"]) == int(np.prod(c["dims"]))
            assert all(sum(r["labelled"]) == r["voxels"] for r in v["confusion"])
            assert sum(v["label_voxels"]) == int(np.prod(c["dims"]))


def test_no_figure_falls_behind_the_recorded_one(measured):
    recorded = json.loads(RECORDED.read_text())
    rec, now = figures(recorded), figures(measured)
    failures = []
    for key, m in sorted(now.items()):
        if m["better"] is not None and key not in rec:
            failures.append(f"{'/'.join(key)}: measured {m['value']}, not recorded")
    for key, r in sorted(rec.items()):
        better = r["better"]
        if better is None:
            continue
        name = "/".join(key)
        if key not in now:
            failures.append(f"{name}: recorded {r['value']}, not measured any more")
            continue
        before, after = r["value"], now[key]["value"]
        if before is None:
            continue
        if after is None:
            failures.append(f"{name}: recorded {before:.4f}, measured nothing (undefined)")
        elif better == "higher" and after < before - TOLERANCE:
            failures.append(f"{name} (higher is better): recorded {before:.4f}, measured {after:.4f} "
                            f"(drop {before - after:.4f} > {TOLERANCE})")
        elif better == "lower" and after > before + TOLERANCE:
            failures.append(f"{name} (lower is better): recorded {before:.4f}, measured {after:.4f} "
                            f"(rise {after - before:.4f} > {TOLERANCE})")
    assert not failures, ("real-data figures fell behind the recorded ones "
                          f"({RECORDED.relative_to(ROOT)}):\n  " + "\n  ".join(failures)
                          + f"\nafter an intended model change, re-record with: {RERECORD}")


def dice(labels, cls, reference):
    a = labels == cls
    return 2.0 * np.count_nonzero(a & reference) / (np.count_nonzero(a) + np.count_nonzero(reference))


@pytest.mark.parametrize("variant, args", [("refined", []), ("network", ["--no-refinement"])])
def test_chest_cta_dice_is_reproduced_from_the_label_map_segment_writes(measured, tmp_path, variant, args):
    ct = SHARED / "chest_cta_pulmonary_artery" / "ct_cropped.nii.gz"
    run = subprocess.run([executable(), "segment", str(ct), "--out", str(tmp_path), "--model", str(MODEL),
                          "--no-surface", *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    img = nib.load(str(tmp_path / "vessel_labels.nii.gz"))
    labels = np.asarray(img.dataobj)
    ref_img = nib.load(str(SHARED / "chest_cta_pulmonary_artery" / "pulmonary_artery.nii.gz"))
    np.testing.assert_allclose(img.affine, ref_img.affine, atol=1e-4)
    reference = np.asarray(ref_img.dataobj) > 0
    peer = dice(labels, 1, reference)
    rust = figure_value(measured, "chest_cta", variant, "pulmonary_artery_dice")
    assert abs(peer - rust) <= 1e-9, f"{variant}: Dice from the written label map {peer!r}, reported {rust!r}"
    # The heart fraction as well: heart.nii.gz mapped onto the CT grid through both affines.
    heart_img = nib.load(str(SHARED / "chest_cta_pulmonary_artery" / "heart.nii.gz"))
    heart_src = np.asarray(heart_img.dataobj) > 0
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in labels.shape], indexing="ij"), -1).reshape(-1, 3)
    src = apply_affine(np.linalg.inv(heart_img.affine) @ img.affine, ijk)
    src = np.rint(src).astype(int)
    inside = np.all((src >= 0) & (src < np.array(heart_src.shape)), axis=1)
    heart = np.zeros(len(ijk), bool)
    heart[inside] = heart_src[tuple(src[inside].T)]
    heart = heart.reshape(labels.shape) & ~reference
    peer_heart = np.count_nonzero((labels > 0) & heart) / np.count_nonzero(heart)
    rust_heart = figure_value(measured, "chest_cta", variant, "heart_labelled_vessel_fraction")
    assert abs(peer_heart - rust_heart) <= 1e-9, f"{variant}: heart fraction {peer_heart!r}, reported {rust_heart!r}"


def test_thorax_body_mask_is_reproduced_with_pydicom_and_scipy(measured):
    hu, affine = vessel_peer.load_dicom_series(SHARED / "thorax_ct_dicom")
    above = hu > -500
    components, _ = ndi.label(above)  # 6-connectivity
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == sizes.argmax()
    for k in range(body.shape[2]):
        body[:, :, k] = ndi.binary_fill_holes(body[:, :, k])
    body_ml = np.count_nonzero(body) * abs(np.linalg.det(affine[:3, :3])) / 1000.0
    rust = figure_value(measured, "thorax_plain", "network", "body_ml")
    assert abs(body_ml - rust) <= 1e-6 * body_ml, f"body {body_ml} mL with scipy, {rust} mL reported"
