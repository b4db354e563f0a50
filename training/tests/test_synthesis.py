import numpy as np

from needle_nav_training.synthesis import PLAIN_BLOOD_HU, noise_sigma, synthesise_plain

WINDOWS = {"artery": [150, 700], "vein": [120, 600], "aorta": [150, 700]}


def tube_phantom(seed=0, noise=12.0):
    """Soft tissue at 50 HU with an enhanced tube (artery 380) and a lung block with a vein (260)."""
    rng = np.random.default_rng(seed)
    hu = np.full((40, 40, 40), 50.0, np.float32)
    hu[:, :, 20:] = -850.0
    lab = np.zeros(hu.shape, np.uint8)
    z, y, x = np.mgrid[:40, :40, :40]
    art = (y - 20) ** 2 + (x - 10) ** 2 <= 16
    vein = (y - 20) ** 2 + (x - 30) ** 2 <= 9
    hu[art], lab[art] = 380.0, 1
    hu[vein], lab[vein] = 260.0, 2
    return hu + rng.normal(0, noise, hu.shape).astype(np.float32), lab


def test_vessels_are_lowered_to_plain_blood_and_keep_the_noise_level():
    hu, lab = tube_phantom()
    out, f = synthesise_plain(hu, lab, WINDOWS, np.random.default_rng(1))
    for c in (1, 2):
        deep = lab == c
        assert abs(np.median(out[deep]) - PLAIN_BLOOD_HU) < 8, (c, np.median(out[deep]))
        assert 8 < out[deep].std() < 16  # noise restored, not compressed to ~1.5 HU
    assert f["artery"]["enhancement_hu"] > 300 and f["vein"]["enhancement_hu"] > 180
    assert "aorta" not in f  # absent class: nothing done
    assert 10 < noise_sigma(hu) < 14


def test_far_background_is_untouched():
    hu, lab = tube_phantom()
    out, _ = synthesise_plain(hu, lab, WINDOWS, np.random.default_rng(1))
    from scipy import ndimage

    far = ~ndimage.binary_dilation(lab > 0, np.ones((3, 3, 3), bool))
    assert np.array_equal(out[far], hu[far])


def test_unenhanced_vessels_are_left_alone():
    hu, lab = tube_phantom()
    hu[lab > 0] = 45.0
    win = {"artery": [0, 700], "vein": [0, 600], "aorta": [0, 700]}
    out, f = synthesise_plain(hu, lab, win, np.random.default_rng(1))
    assert f["artery"]["skipped"] == "not enhanced"
    assert np.array_equal(out, hu)
