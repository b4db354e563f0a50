"""needle_nav's point registration (`needle_nav register`: JSON on stdin, JSON on stdout) against
scikit-surgerycore 0.8.3, an independent implementation of the same theory: Arun's orthogonal
Procrustes with Fitzpatrick's reflection fix, and the FRE/TRE predictions of Fitzpatrick, West &
Maurer (1998).

Conventions of the peer (read from its source): orthogonal_procrustes(fixed, moving) returns R, T
with fixed ~ R @ moving + T; compute_fre_from_fle and compute_tre_from_fle take and return
*squared* errors. compute_tre_from_fle takes rows of np.linalg.eig's eigenvector matrix as the
principal axes, but eig returns them as columns, so its TRE is only right when the fiducials'
principal axes are the coordinate axes. TRE is invariant under a rigid motion of fiducials and
target together (checked here on our side), so the peer is evaluated in the fiducials'
principal-axis frame.
"""
import json
import subprocess

import numpy as np
import pytest
from conftest import executable
from sksurgerycore.algorithms.errors import compute_fre, compute_fre_from_fle, compute_tre_from_fle
from sksurgerycore.algorithms.procrustes import orthogonal_procrustes

FLE = 0.35e-3  # m, RMS
# Both sides compute in double precision with different (but backward-stable) SVDs.
RTOL = 1e-9
ATOL_ROTATION = 1e-10  # entries of R are O(1), some near 0
ATOL_LENGTH = 1e-12  # m


def register(payload):
    out = subprocess.run([executable("needle_nav"), "register"], input=json.dumps(payload),
                         capture_output=True, text=True, timeout=30)
    result = json.loads(out.stdout)
    return out.returncode, result


def register_ok(payload):
    rc, result = register(payload)
    assert "error" not in result, result
    assert rc == 0
    return result


def random_rotation(rng):
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def make_case(seed, n, planar=False):
    """Markers in a 16 cm box (image frame), moved rigidly into the tracker frame, plus FLE."""
    rng = np.random.default_rng(seed)
    moving = rng.uniform(-0.08, 0.08, size=(n, 3))
    if planar:
        moving[:, 2] = 0.0
    rotation = random_rotation(rng)
    translation = rng.uniform(-0.5, 0.5, size=3)
    noise = rng.normal(scale=FLE / np.sqrt(3), size=(n, 3))
    fixed = moving @ rotation.T + translation + noise
    targets = rng.uniform(-0.15, 0.15, size=(3, 3))
    return moving, fixed, targets


def payload(moving, fixed, targets=(), weights=None, **config):
    body = {"moving": np.asarray(moving).tolist(), "fixed": np.asarray(fixed).tolist(),
            "targets": np.asarray(targets).reshape(-1, 3).tolist(),
            "config": {"fle_rms": FLE, "max_outliers": 0, "max_fre": 0.01, **config}}
    if weights is not None:
        body["weights"] = list(weights)
    return body


def peer_tre(fiducials, target, fle):
    """scikit-surgerycore's RMS TRE, evaluated where its principal axes are the coordinate axes."""
    centroid = fiducials.mean(axis=0)
    _, axes = np.linalg.eigh(np.cov(fiducials.T))
    aligned = (fiducials - centroid) @ axes
    aligned_target = ((np.asarray(target) - centroid) @ axes).reshape(1, 3)
    return np.sqrt(compute_tre_from_fle(aligned, fle ** 2, aligned_target))


CASES = [(seed, n, False) for seed, n in [(11, 3), (12, 4), (13, 6), (14, 10), (15, 25)]] + [(16, 5, True), (17, 8, True)]


@pytest.mark.parametrize("seed,n,planar", CASES)
def test_transform_fre_and_predictions_match_sksurgerycore(seed, n, planar):
    moving, fixed, targets = make_case(seed, n, planar)
    ours = register_ok(payload(moving, fixed, targets))
    rotation, translation, fre = orthogonal_procrustes(fixed, moving)
    ours_r = np.array(ours["rotation_matrix"])
    np.testing.assert_allclose(ours_r, rotation, rtol=0, atol=ATOL_ROTATION)
    assert np.linalg.det(ours_r) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(ours["translation"], translation.ravel(), rtol=RTOL, atol=ATOL_LENGTH)
    assert ours["fre_rms"] == pytest.approx(fre, rel=RTOL)
    assert ours["fre_rms"] == pytest.approx(compute_fre(fixed, moving, rotation, translation), rel=RTOL)
    peer_residuals = np.linalg.norm(moving @ rotation.T + translation.ravel() - fixed, axis=1)
    np.testing.assert_allclose(ours["residuals"], peer_residuals, rtol=1e-7, atol=ATOL_LENGTH)
    assert ours["used"] == list(range(n)) and ours["excluded"] == [] and ours["status"] == "Ok"
    assert ours["expected_fre"] == pytest.approx(np.sqrt(compute_fre_from_fle(moving, FLE ** 2)), rel=1e-12)
    for target, tre, mapped in zip(targets, ours["predicted_tre"], ours["targets_fixed"]):
        assert tre == pytest.approx(peer_tre(moving, target, FLE), rel=RTOL)
        np.testing.assert_allclose(mapped, rotation @ target + translation.ravel(), rtol=RTOL, atol=ATOL_LENGTH)


def test_predicted_tre_is_invariant_under_a_rigid_motion():
    """Justifies evaluating the peer's TRE in the principal-axis frame."""
    moving, fixed, targets = make_case(21, 6)
    rng = np.random.default_rng(22)
    rotation, shift = random_rotation(rng), rng.uniform(-1, 1, size=3)
    a = register_ok(payload(moving, fixed, targets))
    b = register_ok(payload(moving @ rotation.T + shift, fixed, targets @ rotation.T + shift))
    np.testing.assert_allclose(a["predicted_tre"], b["predicted_tre"], rtol=1e-9)


def test_integer_weights_match_the_peer_on_duplicated_markers():
    moving, fixed, _ = make_case(31, 5)
    weights = [1, 3, 2, 1, 4]
    ours = register_ok(payload(moving, fixed, weights=[float(w) for w in weights]))
    dup_moving, dup_fixed = np.repeat(moving, weights, axis=0), np.repeat(fixed, weights, axis=0)
    rotation, translation, fre = orthogonal_procrustes(dup_fixed, dup_moving)
    np.testing.assert_allclose(ours["rotation_matrix"], rotation, rtol=0, atol=ATOL_ROTATION)
    np.testing.assert_allclose(ours["translation"], translation.ravel(), rtol=RTOL, atol=ATOL_LENGTH)
    # Our weighted FRE is the weighted RMS, i.e. the FRE of the duplicated set.
    assert ours["fre_rms"] == pytest.approx(fre, rel=RTOL)


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_gross_outlier_is_excluded_and_the_rest_matches_the_peer(seed):
    moving, fixed, targets = make_case(seed, 6)
    bad = seed % 6
    direction = np.random.default_rng(seed + 100).normal(size=3)
    fixed[bad] += 10e-3 * direction / np.linalg.norm(direction)
    ours = register_ok(payload(moving, fixed, targets, max_outliers=1))
    assert ours["status"] == "OutlierExcluded"
    assert ours["excluded"] == [bad]
    keep = [i for i in range(6) if i != bad]
    assert ours["used"] == keep
    rotation, translation, fre = orthogonal_procrustes(fixed[keep], moving[keep])
    np.testing.assert_allclose(ours["rotation_matrix"], rotation, rtol=0, atol=ATOL_ROTATION)
    np.testing.assert_allclose(ours["translation"], translation.ravel(), rtol=RTOL, atol=ATOL_LENGTH)
    assert ours["fre_rms"] == pytest.approx(fre, rel=RTOL)
    assert ours["expected_fre"] == pytest.approx(np.sqrt(compute_fre_from_fle(moving[keep], FLE ** 2)), rel=1e-12)
    for target, tre in zip(targets, ours["predicted_tre"]):
        assert tre == pytest.approx(peer_tre(moving[keep], target, FLE), rel=RTOL)


def test_refusals_come_back_as_errors():
    moving, fixed, _ = make_case(51, 6)
    for body in [payload(moving[:2], fixed[:2]),  # too few markers (the peer refuses too)
                 payload(np.outer(np.linspace(0, 0.1, 5), [1.0, 0.5, 0.2]),
                         np.outer(np.linspace(0, 0.1, 5), [1.0, 0.5, 0.2])),  # collinear
                 payload(moving, fixed[:5]),  # length mismatch
                 payload(moving, fixed + np.linspace(0, 0.02, 18).reshape(6, 3), max_fre=1e-3)]:  # FRE
        _, result = register(body)
        assert isinstance(result.get("error"), str), result
    with pytest.raises(ValueError):
        orthogonal_procrustes(fixed[:2], moving[:2])
