"""Independent check of a straight path from a target through an entry point: the HU profile along
it (nearest-voxel samples every 0.5 mm, the planner's rule) and a picture of the oblique plane that
contains the path, to see which structure it crosses.

    check_path.py CT TARGET_X,Y,Z ENTRY_X,Y,Z OUT.png [TITLE]
Prints the runs of tissue (HU > -500) it crosses beyond the target, with their length and mean HU."""
import sys
from pathlib import Path

import matplotlib
import numpy as np
from scipy import ndimage as ndi

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ct_io import load_ct, to_voxel  # noqa: E402


def march(hu, affine, target, direction, step=0.5, body_hu=-400.0):
    """Samples until the first point outside the image; `outside` marks air connected to the image
    border (per slice), which is where the planner stops."""
    out = []
    s = 0.0
    while True:
        v = to_voxel(affine, target + direction * s)
        if (v < 0).any() or (v >= hu.shape).any():
            return np.array(out)
        out.append((s, *v))
        s += step


def runs(mask):
    edges = np.diff(np.r_[0, mask.astype(int), 0])
    return list(zip(np.where(edges == 1)[0], np.where(edges == -1)[0]))


def oblique(hu, affine, target, direction, length, half_width=40.0, res=0.5):
    """The plane through the path spanned by the path and the axis most perpendicular to it."""
    axes = np.eye(3)
    up = axes[np.argmin(np.abs(axes @ direction))]
    u = up - direction * (up @ direction)
    u /= np.linalg.norm(u)
    s = np.arange(-15.0, length + 10.0, res)
    t = np.arange(-half_width, half_width, res)
    pts = target + s[None, :, None] * direction + t[:, None, None] * u
    inv = np.linalg.inv(affine)
    ijk = pts @ inv[:3, :3].T + inv[:3, 3]
    img = ndi.map_coordinates(hu, ijk.reshape(-1, 3).T, order=1, cval=-1024).reshape(len(t), len(s))
    return img, s, t


def main():
    ct, target, entry, png = sys.argv[1], np.array(sys.argv[2].split(","), float), np.array(sys.argv[3].split(","), float), sys.argv[4]
    title = sys.argv[5] if len(sys.argv) > 5 else ""
    hu, affine = load_ct(ct)
    d = (entry - target) / np.linalg.norm(entry - target)
    length = np.linalg.norm(entry - target)
    samples = march(hu, affine, target, d)
    samples = samples[samples[:, 0] <= length + 1e-9]
    h = hu[tuple(samples[:, 1:].astype(int).T)]
    for a, b in runs(h > -500):
        seg = h[a:b]
        print(f"tissue s {samples[a, 0]:6.1f}-{samples[b - 1, 0]:6.1f} mm ({(b - a) * 0.5:5.1f} mm) mean HU {seg.mean():6.0f} max {seg.max():5.0f}")
    img, s, t = oblique(hu, affine, target, d, length)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw=dict(width_ratios=[2, 1]))
    ax[0].imshow(img, cmap="gray", vmin=-1000, vmax=300, extent=(s[0], s[-1], t[-1], t[0]), aspect="equal")
    ax[0].plot([0, length], [0, 0], "r-", lw=0.6)
    ax[0].set_xlabel("distance from target along the path [mm]")
    ax[0].set_title(f"{title} oblique plane along the path")
    ax[1].plot(samples[:, 0], h, lw=0.7)
    ax[1].axhline(-500, color="k", lw=0.4)
    ax[1].set_xlabel("s [mm]")
    ax[1].set_ylabel("HU")
    plt.tight_layout()
    plt.savefig(png, dpi=70)


if __name__ == "__main__":
    main()
