import numpy as np

from needle_nav_training.augment import AugmentConfig, PatchSampler, rotation_matrix
from needle_nav_training.data import Case

NORM = {"clip_hu": [-900.0, 900.0], "mean_hu": -100.0, "std_hu": 380.0}


def case():
    hu = np.full((40, 40, 40), -800.0, np.float32)
    lab = np.zeros(hu.shape, np.uint8)
    lab[:, 18:22, 18:22] = 1
    lab[10:30, 5:8, 5:35] = 2
    hu[lab > 0] = 300.0
    return Case("t", hu, lab, (2, 2, 2), "contrast", "t")


def test_rotation_matrix_is_orthonormal():
    r = rotation_matrix(np.array([1.0, 2.0, 3.0]), 0.7)
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)


def test_patches_have_the_patch_shape_valid_labels_and_are_seeded():
    a = PatchSampler([case()], 24, NORM, np.random.default_rng(3), aug=AugmentConfig())
    b = PatchSampler([case()], 24, NORM, np.random.default_rng(3), aug=AugmentConfig())
    xa, ya = a.batch(4)
    xb, yb = b.batch(4)
    assert xa.shape == (4, 1, 24, 24, 24) and ya.shape == (4, 24, 24, 24)
    assert xa.dtype == np.float32 and set(np.unique(ya)) <= {0, 1, 2}
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_vessel_oversampling_puts_vessels_in_most_patches():
    s = PatchSampler([case()], 16, NORM, np.random.default_rng(0), p_vessel=1.0, aug=None)
    _, y = s.batch(20, augment=False)
    assert sum((yy > 0).any() for yy in y) >= 18


def test_labels_follow_the_image_under_rotation_and_scaling():
    cfg = AugmentConfig(p_rotate=1.0, p_scale=1.0, p_noise=0, p_brightness=0, p_contrast=0)
    s = PatchSampler([case()], 24, NORM, np.random.default_rng(1), p_vessel=1.0, aug=cfg)
    x, y = s.batch(6)
    hu = x * NORM["std_hu"] + NORM["mean_hu"]
    # Vessel labels sit on bright voxels, background on dark ones (up to interpolation at edges).
    assert np.median(hu[:, 0][y > 0]) > 200
    assert np.median(hu[:, 0][y == 0]) < -700


def test_contrast_level_augmentation_rescales_each_class_enhancement_only():
    c = case()
    c.plain = np.where(c.labels > 0, 40.0, c.hu).astype(np.float32)
    c.enhancement = (c.hu - c.plain).astype(np.float32)
    c.enhancement_class = c.labels.copy()
    cfg = AugmentConfig(p_rotate=0, p_scale=0, p_noise=0, p_brightness=0, p_contrast=0, p_enhancement=1.0)
    s = PatchSampler([c], 24, NORM, np.random.default_rng(2), p_vessel=1.0, aug=cfg)
    seen = []
    for _ in range(8):
        x, y = s.batch(1)
        hu = x[0, 0] * NORM["std_hu"] + NORM["mean_hu"]
        bg = hu[y[0] == 0]  # background untouched (air outside the volume)
        assert np.all(np.isclose(bg, -800.0, atol=1e-3) | np.isclose(bg, -900.0, atol=1e-3))  # air clipped
        for k in (1, 2):
            if (y[0] == k).any():
                v = hu[y[0] == k]
                assert np.ptp(v) < 1e-3  # one k per class
                e = (v[0] - 40.0) / 260.0
                assert 0.45 - 1e-4 <= e <= 1.76 + 1e-4
                seen.append(e)
    assert np.ptp(seen) > 0.2
