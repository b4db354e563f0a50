"""The anatomical digital patient: closed-form partial volume, determinism, anatomy on the right
side at published sizes, HU per phase, and the training stream's independence of worker count."""
import numpy as np
import pytest
from scipy import ndimage

from needle_nav_training import anatomy as A


@pytest.fixture(scope="module")
def chest_plain():
    return A.render(4, "plain", "chest", acquisition=False)


def test_painted_sphere_has_its_closed_form_volume():
    c = A.Canvas(((-30, 30), (-30, 30), (-30, 30)), 1.5, {"muscle": 50.0})
    c.ellipsoid((0.3, -0.2, 0.1), (12.0, 12.0, 12.0), "muscle")
    occupancy = (c.hu - A.AIR_HU) / (50.0 - A.AIR_HU)  # painted over air: hu = air + occ * (50 - air)
    exact = 4 / 3 * np.pi * 12.0 ** 3
    assert abs(occupancy.sum() * 1.5 ** 3 - exact) / exact < 0.02
    assert abs((c.tissue == A.T["muscle"]).sum() * 1.5 ** 3 - exact) / exact < 0.05


def test_painted_capsule_has_its_closed_form_volume():
    c = A.Canvas(((-20, 20), (-20, 20), (-40, 40)), 1.0, {"artery": 300.0})
    c.capsule(np.array([0.0, 0.0, -20.0]), np.array([0.0, 0.0, 20.0]), 5.0, 5.0, "artery")
    exact = np.pi * 25 * 40 + 4 / 3 * np.pi * 125
    assert abs((c.labels == 1).sum() - exact) / exact < 0.04
    assert set(np.unique(c.labels)) == {0, 1}


def test_same_seed_same_patient_and_the_anatomy_does_not_depend_on_the_phase(chest_plain):
    again = A.render(4, "plain", "chest", acquisition=False)
    assert np.array_equal(again.hu, chest_plain.hu) and np.array_equal(again.labels, chest_plain.labels)
    # another phase draws its own field-of-view width (another grid), but the same patient: every
    # vessel class has the same volume and centroid in patient coordinates
    contrast = A.render(4, "pulmonary_arterial", "chest", acquisition=False)
    for c in (1, 2, 3):
        va, vb = (chest_plain.labels == c), (contrast.labels == c)
        assert abs(int(va.sum()) - int(vb.sum())) <= 0.03 * va.sum()
        ca = np.array(chest_plain.origin_lps) + 2.0 * np.array(np.nonzero(va))[::-1].mean(axis=1)
        cb = np.array(contrast.origin_lps) + 2.0 * np.array(np.nonzero(vb))[::-1].mean(axis=1)
        assert np.abs(ca - cb).max() < 2.0, (c, ca, cb)
    other = A.render(5, "plain", "chest", acquisition=False)
    assert other.labels.shape != chest_plain.labels.shape or not np.array_equal(other.labels, chest_plain.labels)


def _centroid_x(r, tissue, z_mm):
    k = int(round((z_mm - r.origin_lps[2]) / r.spacing_zyx[0]))
    m = r.tissue[k] == A.T[tissue]
    assert m.any(), (tissue, z_mm)
    return r.origin_lps[0] + r.spacing_zyx[2] * np.nonzero(m)[1].mean()


def test_great_vessels_lie_where_they_lie_in_a_patient(chest_plain):
    r = chest_plain
    # descending aorta left of the midline, azygos / IVC / SVC right of it (LPS: +x is the patient's left)
    assert _centroid_x(r, "aorta", 20) > 5
    assert _centroid_x(r, "svc", 100) < -15
    assert _centroid_x(r, "ivc", -20) < -5
    # liver right, spleen left
    assert _centroid_x(r, "liver", -50) < -20 and _centroid_x(r, "spleen", -50) > 40
    # heart chambers are not vessel
    chambers = np.isin(r.tissue, [A.T["heart_blood_left"], A.T["heart_blood_right"]])
    assert chambers.any() and not r.labels[chambers].any()
    assert {1, 2, 3} <= set(np.unique(r.labels))


def test_aorta_and_pulmonary_trunk_have_adult_calibres():
    for seed in (1, 2, 3):
        p = A.Patient(seed)
        assert 26 <= p.aorta_d <= 38 and 22 <= p.pa_d <= 32  # ascending aorta, pulmonary trunk (mm)
    r = A.render(2, "plain", "abdomen", acquisition=False)
    # abdominal aorta cross-section at the renal arteries: equivalent diameter 15-30 mm
    k = int(round((r.landmarks["renal_arteries"][2] - r.origin_lps[2]) / 2.0))
    lab, n = ndimage.label(r.labels[k] == 3)
    area = max((lab == i).sum() for i in range(1, n + 1)) * 4.0
    assert 15 <= 2 * np.sqrt(area / np.pi) <= 30


def test_lung_arteries_run_beside_bronchi(chest_plain):
    r = chest_plain
    lung_art = (r.tissue == A.T["pulmonary_artery"]) & ndimage.binary_dilation(r.tissue == A.T["lung"], iterations=2)
    airway = np.isin(r.tissue, [A.T["airway_wall"], A.T["airway_lumen"]])
    dist = ndimage.distance_transform_edt(~airway) * 2.0
    assert lung_art.sum() > 200
    assert np.median(dist[lung_art]) < 8.0  # mm: an artery accompanies every bronchus


def test_hu_per_phase_follows_the_published_ranges():
    plain = A.phase_hu_table(7, "plain", "chest")
    assert 30 <= plain["aorta"] <= 55 and -900 <= plain["lung"] <= -800 and plain["fat"] < -70
    pa = [A.phase_hu_table(s, "pulmonary_arterial", "heart") for s in range(100)]
    assert np.median([t["pulmonary_artery"] for t in pa]) > 300  # CTPA target >= 250 HU
    assert all(t["heart_blood_left"] <= 1.3 * t["pulmonary_artery"] + 100 for t in pa)
    sa = [A.phase_hu_table(s, "systemic_arterial", "chest") for s in range(100)]
    assert np.median([t["aorta"] - t["ivc"] for t in sa]) > 150
    r = A.render(3, "pulmonary_arterial", "heart")
    drawn = A.phase_hu_table(3, "pulmonary_arterial", "heart")["pulmonary_artery"]
    assert abs(np.median(r.hu[r.tissue == A.T["pulmonary_artery"]]) - drawn) < 40


def test_acquisition_noise_has_the_reported_level():
    r = A.render(6, "plain", "abdomen")
    liver = ndimage.binary_erosion(r.tissue == A.T["liver"], iterations=3)
    sd = np.std(np.diff(r.hu, axis=2)[liver[:, :, 1:]]) / np.sqrt(2)
    # correlated noise: neighbour differences see less than the full SD; texture adds a little
    assert 0.2 * r.acquisition["noise_sd_hu"] < sd < 1.5 * r.acquisition["noise_sd_hu"] + 10


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="phase"):
        A.render(1, "arterial", "chest")
    with pytest.raises(ValueError, match="fov"):
        A.render(1, "plain", "knee")


def test_training_stream_does_not_depend_on_the_worker_count():
    torch = pytest.importorskip("torch", reason="the training venv has torch; CI's test venv runs the rest")

    from needle_nav_training.stream import BatchStream

    cal_windows = {"artery": [80.0, 600.0], "vein": [0.0, 430.0], "aorta": [110.0, 450.0]}
    norm = {"clip_hu": [-1000.0, 1000.0], "mean_hu": -200.0, "std_hu": 390.0}

    def run(workers):
        ds = BatchStream(3, 10, 13, cal_windows, norm, None, batch=2, patch=32)
        dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        return [(k, x.numpy().copy(), y.numpy().copy()) for k, x, y, _ in dl]

    a, b = run(0), run(2)
    assert [k for k, *_ in a] == [k for k, *_ in b] == [10, 11, 12]
    for (_, xa, ya), (_, xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
