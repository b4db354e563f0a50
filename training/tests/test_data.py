import nibabel as nib
import numpy as np
import pytest

from needle_nav_training import data as D


def test_reorientation_to_lps_from_ras_and_las():
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    # RAS affine: i -> R. In LPS the i axis must be flipped (and j too).
    ras = np.diag([2.0, 3.0, 4.0, 1.0])
    out, aff, zooms = D.reorient_lps(nib.Nifti1Image(arr, ras))
    assert out.shape == (4, 5, 6) and zooms == (2.0, 3.0, 4.0)
    assert out[0, 0, 0] == arr[3, 4, 0]
    assert nib.aff2axcodes(aff) == ("L", "P", "S")
    # Same voxel, same world position.
    w1 = ras @ [3, 4, 0, 1]
    w2 = aff @ [0, 0, 0, 1]
    assert np.allclose(w1, w2)
    # Tensor order [Z, Y, X] = [k, j, i].
    t = D.to_tensor_order(out)
    assert t.shape == (6, 5, 4) and t[0, 0, 0] == out[0, 0, 0] and t[1, 0, 0] == out[0, 0, 1]


def test_resampling_keeps_the_first_voxel_and_the_extent():
    vol = np.arange(10, dtype=np.float32)[None, None, :].repeat(3, 0).repeat(3, 1)  # X varies
    out = D.resample(vol, (1.0, 2.0, 2.0), (2.0, 2.0, 2.0), order=1)
    assert out.shape == (3, 3, 5)
    assert np.allclose(out[0, 0], [0, 2, 4, 6, 8])
    lab = D.resample((vol > 4).astype(np.uint8), (1.0, 2.0, 2.0), (2.0, 2.0, 2.0), order=0)
    assert lab.dtype == np.uint8 and list(lab[0, 0]) == [0, 0, 0, 1, 1]


def test_body_box_and_mask():
    hu = np.full((10, 20, 20), -1000.0, np.float32)
    hu[2:8, 5:15, 4:16] = 40.0
    hu[4:6, 8:12, 8:12] = -850.0  # lung inside the body
    box = D.body_bbox(hu, margin=1)
    assert box == (slice(1, 9), slice(4, 16), slice(3, 17))
    m = D.body_mask(hu)
    assert m[5, 10, 10] and not m[0, 0, 0]


def test_class_windows_ignore_partial_volume_rims():
    hu = np.full((20, 20, 20), -850.0, np.float32)
    lab = np.zeros(hu.shape, np.uint8)
    for c, v in ((1, 380.0), (2, 260.0), (3, 330.0)):
        sl = (slice(2, 18), slice(2 + 5 * (c - 1), 6 + 5 * (c - 1)), slice(4, 10))
        lab[sl] = c
        hu[sl] = v
    hu[lab > 0] += np.linspace(-5, 5, int((lab > 0).sum()))
    rim = (lab > 0) & ~np.any([D.deep_mask(lab, c) for c in (1, 2, 3)], axis=0)
    hu[rim] = -200.0  # partial volume
    case = D.Case("t", hu, lab, (1, 1, 1), "contrast", "t")
    w = D.class_windows([case])["windows"]
    assert 370 < w["artery"][0] < w["artery"][1] < 390
    assert 250 < w["vein"][0] < w["vein"][1] < 270


@pytest.mark.skipif(not D.J2K_DIR.is_dir(), reason="shared data not present")
def test_real_jpeg2000_series_loads_with_its_segmentation_aligned():
    case = D.load_j2k_training_case()
    assert case.hu.shape == (20, 512, 512)
    assert np.allclose(case.spacing_xyz, (0.9765625, 0.9765625, 2.0))
    present = case.info["totalseg_ids_present"]
    assert {52, 63, 64} <= set(present)
    # Contrast CT: the aorta's voxels are enhanced (a segmentation flipped against the series
    # would put them on other tissue), and the aorta lies to the patient's left of the inferior
    # vena cava (larger X in LPS).
    aorta = case.labels == 3
    assert np.median(case.hu[aorta]) > 120
    seg = nib.load(str(D.J2K_SEG))
    ivc = D.to_tensor_order(D.reorient_lps(seg)[0]) == 63
    assert np.argwhere(aorta)[:, 2].mean() > np.argwhere(ivc)[:, 2].mean() + 10
