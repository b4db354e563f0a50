"""Does the digital patient look like CT (issue 12)? The references are independent of the
phantom: the real scans under their TotalSegmentator labels and published HU values."""
import json
from functools import lru_cache

import numpy as np
import pytest

from needle_nav_training import data as D
from needle_nav_training import realism as R

SEED = 1  # the CLI's default seed
needs_data = pytest.mark.skipif(not (D.SHARED / "MANIFEST.md").is_file(),
                                reason=f"shared data not present ({D.SHARED}, ../shared/data beside the checkout)")


@lru_cache(maxsize=None)
def rendered(seed, phase, fov):
    from needle_nav_training.anatomy import render

    return render(seed, phase, fov)


def phantom(phase, fov):
    return R.phantom_volume(rendered, SEED, phase, fov)


@lru_cache(maxsize=None)
def real(key):
    return R.SCANS[key][0]()


def stats_of(scan, structure, side="real"):
    s = next(s for s in R.STRUCTURES if s.scan == scan and s.name == structure)
    if side == "real":
        v = real(scan)
        return R.hu_stats(v.hu[R.real_mask(v, s)[0]])
    _, phase, fov = R.SCANS[scan]
    v = phantom(phase, s.phantom_fov or fov)
    return R.hu_stats(v.hu[R.phantom_mask(v, s)[0]])


# ------------------------------------------------------------------ no data needed


def test_stats_and_erosion():
    rng = np.random.default_rng(0)
    v = rng.normal(40, 10, 100_000)
    s = R.hu_stats(v)
    assert s["n"] == 100_000 and abs(s["median"] - 40) < 0.5 and abs(s["std"] - 10) < 0.2
    assert abs(s["p5"] - (40 - 16.45)) < 0.5 and abs(s["p95"] - (40 + 16.45)) < 0.5
    m = np.zeros((9, 9, 9), bool)
    m[2:7, 2:7, 2:7] = True
    e, how = R.erode(m)  # 5^3 cube -> 3^3 core (27 < MIN_VOXELS) -> in-plane erosion: 5 x 3 x 3
    assert e.sum() == 45 and "in-plane" in how
    m[1:8, 1:8, 1:8] = True
    e, how = R.erode(m)
    assert e.sum() == 125 and how.startswith("eroded 1 voxel (3x3x3)")


def test_threshold_rules_on_a_synthetic_body():
    hu = np.full((6, 80, 80), -1000.0, np.float32)
    yy, xx = np.mgrid[:80, :80]
    r = np.hypot(yy - 40, xx - 40)
    hu[:, r < 35] = -100  # fat
    hu[:, r < 25] = 50  # muscle
    hu[:, r < 15] = -850  # lung
    v = R.Volume("synthetic", hu, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    for rule, want in (("lung", -850), ("fat", -100), ("muscle", 50)):
        m = R.rule_mask(v, rule)
        assert m.sum() > 100 and np.all(hu[m] == want), rule
    assert not R.is_crop_inside_body(hu) and R.is_crop_inside_body(np.zeros((3, 10, 10)))


# ------------------------------------------------------------------ real scans: levels and published values


@needs_data
def test_levels_of_the_real_scans():
    t = real("thorax")
    assert t.index("z", t.levels["carina"][2]) == 82  # one lumen at k=82, two main bronchi at 81 (by eye)
    a = real("abdomen_plain")
    k_bif = a.index("z", a.levels["aortic_bifurcation"][2])
    assert k_bif == 61  # lowest aorta slice; the iliac arteries (65/66) reach up to 61
    assert a.levels["renal"][2] > a.levels["aortic_bifurcation"][2] + 60  # kidneys well above the bifurcation
    c = real("cta")
    assert c.levels["pul_bifurcation"][2] > c.levels["pulmonary_trunk"][2]


@needs_data
def test_real_scans_agree_with_published_hu():
    # The measurement itself: the real scans must give textbook values under these masks.
    assert -900 <= stats_of("thorax", "lung parenchyma")["median"] <= -750
    assert -130 <= stats_of("thorax", "subcutaneous fat")["median"] <= -70
    assert 30 <= stats_of("abdomen_plain", "aorta")["median"] <= 55  # unenhanced blood 35-50 HU
    assert stats_of("cta", "pulmonary artery")["median"] >= 250  # CT pulmonary angiography target
    j = real("abdomen_contrast").info["phase_evidence_median_hu"]
    assert 100 < j["portal"] and j["liver"] > 80  # enhanced liver and portal vein: portal venous phase


# ------------------------------------------------------------------ the digital patient against them


@needs_data
def test_phantom_plain_blood_matches_the_real_plain_aorta():
    ref = stats_of("abdomen_plain", "aorta")["median"]
    for structure in ("aorta", "inferior vena cava"):
        got = stats_of("abdomen_plain", structure, "phantom")["median"]
        assert abs(got - ref) <= 15, f"phantom plain {structure} median {got} vs real aorta {ref}"


@needs_data
def test_phantom_lung_parenchyma_and_fat_have_published_hu():
    lung = stats_of("thorax", "lung parenchyma", "phantom")["median"]
    assert -900 <= lung <= -750, f"phantom lung parenchyma median {lung}"
    fat = stats_of("thorax", "subcutaneous fat", "phantom")["median"]
    assert -130 <= fat <= -70, f"phantom fat median {fat}"


@needs_data
def test_real_cta_pulmonary_artery_lies_inside_the_phantom_population():
    """Contrast level is a per-patient draw (bolus timing, dose), so one seed may be low or high; the
    real CTA's pulmonary artery must lie inside the digital patients' 5-95 % range (300 patients, the
    same draws as render), and the rendered seed must reproduce its drawn value."""
    from needle_nav_training.anatomy import T, phase_hu_table

    real_median = stats_of("cta", "pulmonary artery")["median"]
    drawn = np.array([phase_hu_table(s, "pulmonary_arterial", "heart")["pulmonary_artery"] for s in range(300)])
    lo, hi = np.percentile(drawn, [5, 95])
    assert lo <= real_median <= hi, f"real CTA PA median {real_median} outside the phantom population {lo:.0f}..{hi:.0f}"
    v = phantom("pulmonary_arterial", "heart")
    rendered = float(np.median(v.hu[v.tissue == T["pulmonary_artery"]]))
    assert abs(rendered - drawn[SEED]) < 30, (rendered, drawn[SEED])


# ------------------------------------------------------------------ the writer


@needs_data
def test_report_writer_produces_its_files(tmp_path):
    res = R.run(tmp_path, SEED, render=rendered, scans=["abdomen_plain"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["realism.md", "realism_abdomen_iliac.png", "realism_abdomen_renal.png", "realism_hu.json"]
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000
    j = json.loads((tmp_path / "realism_hu.json").read_text())
    assert j["seed"] == SEED and {r["structure"] for r in j["hu"]} >= {"aorta", "liver", "iliac arteries"}
    md = (tmp_path / "realism.md").read_text()
    assert "realism_abdomen_renal.png" in md and "| abdomen_plain" in md
    # both panels on the same mm scale
    panels = res["figures"][0]["panels"]
    assert [p["volume"] for p in panels] == [real("abdomen_plain").name, phantom("plain", "abdomen").name]
    assert panels[0]["mm_limits"] == panels[1]["mm_limits"]
