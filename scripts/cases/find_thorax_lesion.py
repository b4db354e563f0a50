"""How the lung lesion of cases/thorax_ct_lung_lesion was found (../shared/data/thorax_ct_dicom).

1. Body: HU > -400, largest component, holes filled per slice. Lung (with airways): HU < -400
   inside the body, largest component. Lung region: the lung with holes filled per slice and a
   closing, so vessels and nodules inside it belong to it.
2. Candidates: tissue (HU > -300) in the lung region, away from its wall (7x7x3 erosion), opened
   with a 3 mm ball: vessels thinner than ~6 mm vanish, compact blobs stay. Each remaining
   component is listed with volume, extent and compactness (fraction of its volume inside the
   sphere of equal volume at its centroid: 1 for a ball, low for a tube).
3. The lesion: the largest, most compact candidate; its mask is tissue (HU > -400, half way between
   aerated lung and soft tissue) connected to the opened core after growing it back by the ball.
Prints the numbers that go into case.json and draws cases/thorax_ct_lung_lesion/lesion.png.
"""
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
from scipy import ndimage as ndi

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ct_io import load_ct, to_mm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SERIES = ROOT.parent / "shared/data/thorax_ct_dicom"


def largest(mask):
    lab, n = ndi.label(mask)
    sizes = ndi.sum(mask, lab, range(1, n + 1))
    return lab == 1 + int(np.argmax(sizes))


def fill_slices(mask):
    return np.stack([ndi.binary_fill_holes(mask[:, :, k]) for k in range(mask.shape[2])], -1)


def ball(spacing, radius_mm):
    r = np.ceil(radius_mm / spacing).astype(int)
    x, y, z = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    return (x * spacing[0]) ** 2 + (y * spacing[1]) ** 2 + (z * spacing[2]) ** 2 <= radius_mm ** 2 + 1e-6


def compactness(mask, spacing):
    idx = np.argwhere(mask) * spacing
    c = idx.mean(0)
    r = (3 * len(idx) * np.prod(spacing) / (4 * np.pi)) ** (1 / 3)
    return float(np.mean(np.linalg.norm(idx - c, axis=1) <= r))


def main():
    hu, affine = load_ct(SERIES)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    body = fill_slices(largest(hu > -400))
    lung = largest((hu < -400) & body)
    region = ndi.binary_closing(fill_slices(lung), structure=np.ones((5, 5, 3))) & body
    inner = ndi.binary_erosion(region, structure=np.ones((7, 7, 3)))
    b3 = ball(spacing, 3.0)
    core = ndi.binary_opening((hu > -300) & inner, structure=b3)
    lab, n = ndi.label(core)
    cands = []
    for i, sl in enumerate(ndi.find_objects(lab)):
        m = lab[sl] == i + 1
        vol = m.sum() * np.prod(spacing)
        if vol < 50:
            continue
        c = np.array(ndi.center_of_mass(m)) + [s.start for s in sl]
        cands.append(dict(label=i + 1, volume_mm3=round(float(vol)), extent_mm=[round(float((s.stop - s.start) * d), 1) for s, d in zip(sl, spacing)],
                          centre_mm=[round(float(v), 1) for v in to_mm(affine, c)], compactness=round(compactness(m, spacing), 2)))
    cands.sort(key=lambda d: -d["volume_mm3"])
    for d in cands:
        print("candidate", d)
    best = cands[0]
    grown = ndi.binary_dilation(lab == best["label"], structure=b3) & (hu > -400) & region
    lesion = largest(grown)
    vol = float(lesion.sum() * np.prod(spacing))
    centre_ijk = np.array(ndi.center_of_mass(lesion))
    centre = to_mm(affine, centre_ijk)
    ks = np.where(lesion.any((0, 1)))[0]
    result = dict(lesion_centre_mm=[round(float(v), 1) for v in centre], radius_mm=round((3 * vol / (4 * np.pi)) ** (1 / 3), 1),
                  volume_ml=round(vol / 1000, 2), voxels=int(lesion.sum()), centre_ijk=[round(float(v), 1) for v in centre_ijk],
                  slices=[int(ks.min()), int(ks.max())], hu_median=float(np.median(hu[lesion])), hu_mean=round(float(hu[lesion].mean())),
                  compactness=compactness(lesion, spacing), next_largest_mm3=cands[1]["volume_mm3"] if len(cands) > 1 else None)
    print(json.dumps(result))

    k = int(round(centre_ijk[2]))
    i0, j0 = (int(round(v)) for v in centre_ijk[:2])
    fig, ax = plt.subplots(1, 2, figsize=(8, 4))
    ax[0].imshow(hu[:, :, k].T, cmap="gray", vmin=-1000, vmax=200)
    ax[0].contour(lesion[:, :, k].T, [0.5], colors="r", linewidths=0.8)
    ax[0].set_title(f"slice k={k} (z={centre[2]:.1f} mm), lung window")
    w = 40
    ax[1].imshow(hu[i0 - w:i0 + w, j0 - w:j0 + w, k].T, cmap="gray", vmin=-1000, vmax=200,
                 extent=(i0 - w - 0.5, i0 + w - 0.5, j0 + w - 0.5, j0 - w - 0.5))
    ax[1].contour(np.arange(i0 - w, i0 + w), np.arange(j0 - w, j0 + w), lesion[i0 - w:i0 + w, j0 - w:j0 + w, k].T, [0.5], colors="r", linewidths=1)
    ax[1].plot(*centre_ijk[:2], "y+", ms=10)
    ax[1].set_title(f"lesion: {vol / 1000:.1f} ml, r_eq {result['radius_mm']} mm")
    for a_ in ax:
        a_.set_xticks([])
        a_.set_yticks([])
    ax[0].text(5, 20, "R", color="w")
    ax[0].text(495, 20, "L", color="w", ha="right")
    plt.tight_layout()
    out = ROOT / "cases/thorax_ct_lung_lesion/lesion.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(out, dpi=80)
    print("wrote", out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
