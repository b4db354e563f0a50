"""Checks the planted unsafe paths of the real cases independently of the planner, and draws them.

For each path in cases/<case>/case.json "planted_unsafe_paths": samples every 0.5 mm from the target
through the entry (nearest voxel, the planner's rule) until the image ends, prints the runs of tissue
(HU > -500) with their length and HU, and for the CTA the length inside the TotalSegmentator label
of the structure; draws cases/<case>/planted_paths.png (oblique plane along each path, HU profile).

    planted_paths.py [CASE_DIR ...]   (default: both real cases)"""
import json
import sys
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from check_path import oblique, runs  # noqa: E402
from ct_io import load_ct, to_voxel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CASES = [ROOT / "cases/thorax_ct_lung_lesion", ROOT / "cases/chest_cta_lung_point"]


def structure_labels(ct_path, shape):
    """TotalSegmentator labels beside the CTA, on its grid (heart.nii.gz is on another grid)."""
    folder = Path(ct_path).parent
    ct_affine = nib.load(str(ct_path)).affine
    out = {}
    for name, file in [("heart", "heart.nii.gz"), ("pulmonary_trunk", "pulmonary_artery.nii.gz")]:
        img = nib.load(str(folder / file))
        m = np.linalg.inv(img.affine) @ ct_affine
        out[name] = ndi.affine_transform(np.asarray(img.dataobj) > 0, m, output_shape=shape, order=0)
    return out


def main(case_dirs):
    for case in case_dirs:
        spec = json.loads((case / "case.json").read_text())
        ct_path = (case / spec["files"]["ct_dicom_dir"]).resolve()
        hu, affine = load_ct(ct_path)
        labels = structure_labels(ct_path, hu.shape) if ct_path.is_file() else {}
        target = np.array(spec["reference"]["lesion_centre_mm"])
        paths = spec["planted_unsafe_paths"]
        fig, axes = plt.subplots(len(paths), 2, figsize=(11, 3.2 * len(paths)), gridspec_kw=dict(width_ratios=[2.2, 1]), squeeze=False)
        for row, p in zip(axes, paths):
            entry = np.array(p["entry_mm"])
            d = (entry - target) / np.linalg.norm(entry - target)
            s = np.arange(0.0, 400.0, 0.5)
            v = to_voxel(affine, target[None] + s[:, None] * d[None])
            inside = ((v >= 0) & (v < hu.shape)).all(1)
            n = int(np.argmin(inside)) if not inside.all() else len(s)
            s, v = s[:n], v[:n]
            h = hu[tuple(v.T)]
            print(f"{case.name} through {p['through']}: image ends at s = {s[-1]:.1f} mm, entry at {np.linalg.norm(entry - target):.1f} mm")
            for a, b in runs(h > -500):
                print(f"   tissue {s[a]:6.1f}-{s[b - 1]:6.1f} mm ({(b - a) * 0.5:5.1f} mm), HU median {np.median(h[a:b]):5.0f}, max {h[a:b].max():5.0f}")
            if p["through"] in labels:
                m = labels[p["through"]][tuple(v.T)]
                print(f"   inside the {p['through']} label: {m.sum() * 0.5:.1f} mm from {s[m][0]:.1f} mm, HU median {np.median(h[m]):.0f}")
            length = min(s[-1], np.linalg.norm(entry - target) + 30)
            img, ss, tt = oblique(hu, affine, target, d, length)
            row[0].imshow(img, cmap="gray", vmin=-1000, vmax=400, extent=(ss[0], ss[-1], tt[-1], tt[0]))
            row[0].plot([0, length], [0, 0], "r-", lw=0.7)
            row[0].plot([np.linalg.norm(entry - target)], [0], "yo", ms=4)
            row[0].set_title(f"through {p['through']} (expected layer {p['expected_layer']}); entry {p['entry_mm']} mm", fontsize=8)
            row[0].set_xlabel("mm from the target along the path", fontsize=7)
            row[1].plot(s, h, lw=0.6)
            row[1].axhline(-500, color="k", lw=0.3)
            row[1].set_ylabel("HU", fontsize=7)
            row[1].set_xlabel("s [mm]", fontsize=7)
            for ax in row:
                ax.tick_params(labelsize=6)
        plt.tight_layout()
        out = case / "planted_paths.png"
        plt.savefig(out, dpi=60)
        print("wrote", out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main([Path(a).resolve() for a in sys.argv[1:]] or CASES)
