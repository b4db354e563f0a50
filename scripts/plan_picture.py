#!/usr/bin/env python3
"""Report picture of a `needle_nav plan` output folder: the CT in a lung window with every obstacle
layer as a translucent overlay, the chosen path (solid), the alternatives (dashed), the target and
the lesion circle; left an axial slice through the target (paths projected onto it), right the
oblique plane that contains the chosen path (or the best refused one).

    plan_picture.py PLAN_DIR [--ct CT] [--out PNG] [--title TEXT]

PLAN_DIR holds plan.json and layers/*.nii.gz; CT defaults to plan.json's ct_path (a DICOM folder or
a NIfTI file; a relative path is taken from the current folder, then from PLAN_DIR)."""
import argparse
import json
import textwrap
import sys
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
from scipy import ndimage

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "cases"))
from ct_io import RAS_TO_LPS, load_ct  # noqa: E402

# Layer -> colour, drawn in this order (later on top).
COLOURS = {
    "bone": "#f2e600",
    "mediastinum": "#e8312f",
    "airways": "#2f7fe8",
    "lung_vessels": "#22c55e",
    "contrast_vessels": "#ff8c00",
    "network_vessels": "#d946ef",
    "fissures": "#ffffff",
}
LUNG_WINDOW = (-1350.0, 150.0)  # width 1500, level -600
HALF_WIDTH_MM = 90.0
RES_MM = 0.5


def plane_points(origin, u, v, su, sv):
    """LPS points of a plane: rows along v, columns along u."""
    return origin + su[None, :, None] * u + sv[:, None, None] * v


def sample(volume, affine, pts, order):
    inv = np.linalg.inv(affine)
    ijk = pts.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    cval = -1024.0 if order else 0
    return ndimage.map_coordinates(volume, ijk.T, order=order, cval=cval, mode="constant").reshape(pts.shape[:2])


def overlay(ax, layers, affine, pts, extent):
    shown = []
    for name, colour in COLOURS.items():
        if name not in layers:
            continue
        m = sample(layers[name].astype(np.uint8), affine, pts, 0) > 0
        if not m.any():
            continue
        ax.imshow(np.where(m, 1.0, np.nan), cmap=ListedColormap([colour]), alpha=0.45, extent=extent, interpolation="nearest", vmin=0, vmax=1)
        shown.append(name)
    return shown


def in_plane(p, origin, u, v):
    d = np.asarray(p, float) - origin
    return d @ u, d @ v


def draw(ax, ct, ct_affine, layers, affine, origin, u, v, su, sv, paths, target, radius, title):
    pts = plane_points(origin, u, v, su, sv)
    extent = (su[0], su[-1], sv[-1], sv[0])
    ax.imshow(sample(ct, ct_affine, pts, 1), cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], extent=extent)
    if "lung_region" in layers:
        region = sample(layers["lung_region"].astype(np.uint8), affine, pts, 0)
        if region.any():
            ax.contour(su, sv, region, [0.5], colors="#7dd3fc", linewidths=0.5)
    shown = overlay(ax, layers, affine, pts, extent)
    for i, c in enumerate(paths):
        (x0, y0), (x1, y1) = in_plane(c["target_mm"], origin, u, v), in_plane(c["entry_mm"], origin, u, v)
        chosen = i == 0
        ax.plot([x0, x1], [y0, y1], "-" if chosen else "--", color="#00e5ff" if chosen else "#fde68a", lw=1.6 if chosen else 0.9)
        ax.plot([x1], [y1], "o", color="#00e5ff" if chosen else "#fde68a", ms=3)
    tx, ty = in_plane(target, origin, u, v)
    ax.plot([tx], [ty], "+", color="#00ff66", ms=9, mew=1.5)
    if radius > 0:
        ax.add_patch(plt.Circle((tx, ty), radius, fill=False, color="#00ff66", lw=1.0))
    ax.set_xlim(su[0], su[-1])
    ax.set_ylim(sv[-1], sv[0])
    ax.set_title(textwrap.fill(title, 80), fontsize=8)
    ax.tick_params(labelsize=6)
    return shown


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan_dir", type=Path)
    ap.add_argument("--ct", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    plan = json.loads((a.plan_dir / "plan.json").read_text())
    ct_path = a.ct or Path(plan["ct_path"])
    if not ct_path.exists() and (a.plan_dir / ct_path).exists():
        ct_path = a.plan_dir / ct_path

    layers, affine = {}, None
    files = {l["name"]: l["path"] for l in plan["layers"] if l.get("path")}
    files.update({"lung_region": plan["lung"]["region_path"], "fissures": plan["lung"]["fissures_path"]})
    for name, rel in files.items():
        img = nib.load(str(a.plan_dir / rel))
        layers[name] = np.asarray(img.dataobj) > 0
        affine = RAS_TO_LPS @ img.affine  # voxel -> LPS mm, the same for every layer
    hu, ct_affine = load_ct(ct_path)

    target = np.array(plan["target_mm"], float)
    radius = float(plan.get("lesion_radius_mm") or 0.0)
    chosen = plan.get("chosen") or plan.get("best_refused")
    paths = ([chosen] if chosen else []) + list(plan.get("alternatives") or [])

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.8))
    # Wide enough for the whole chosen path.
    half = min(max(HALF_WIDTH_MM, (chosen["length_mm"] + 15.0) if chosen else 0.0), 200.0)
    s = np.arange(-half, half, RES_MM)
    shown = draw(axes[0], hu, ct_affine, layers, affine, target, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), s, s, paths, target, radius,
                 f"axial through the target, z = {target[2]:.1f} mm (paths projected); patient right on the left")
    axes[0].set_xlabel("LPS x - target [mm]", fontsize=7)
    axes[0].set_ylabel("LPS y - target [mm] (posterior down)", fontsize=7)
    if chosen:
        d = np.array(chosen["direction"], float)
        axis = np.eye(3)[np.argmin(np.abs(np.eye(3) @ d))]
        v = axis - d * (axis @ d)
        v /= np.linalg.norm(v)
        su = np.arange(-25.0, chosen["length_mm"] + 25.0, RES_MM)
        sv = np.arange(-45.0, 45.0, RES_MM)
        shown += draw(axes[1], hu, ct_affine, layers, affine, target, d, v, su, sv, paths, target, radius,
                      f"oblique plane along the {'chosen' if plan.get('chosen') else 'best refused'} path "
                      f"({chosen['length_mm']:.0f} mm, min clearance {chosen['min_clearance_mm']:.1f} mm to {chosen['nearest_layer']})")
        axes[1].set_xlabel("along the path from the target [mm]", fontsize=7)
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no path", ha="center")
    handles = [Patch(color=COLOURS[n], alpha=0.6, label=n) for n in COLOURS if n in set(shown)]
    handles += [plt.Line2D([], [], color="#00e5ff", lw=1.6, label="chosen path" if plan.get("chosen") else "best refused path"),
                plt.Line2D([], [], color="#fde68a", lw=0.9, ls="--", label="alternatives"),
                plt.Line2D([], [], color="#7dd3fc", lw=0.5, label="lung region"),
                plt.Line2D([], [], color="#00ff66", marker="+", ls="", label="target, lesion radius")]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
    verdict = plan["status"] + (f" ({plan['refused_layer']})" if plan.get("refused_layer") else "")
    fig.suptitle(textwrap.fill(f"{a.title} needle_nav plan: {verdict}. {plan['reason']}", 170), fontsize=8)
    plt.tight_layout(rect=(0, 0.1, 1, 0.92))
    out = a.out or a.plan_dir / "plan.png"
    plt.savefig(out, dpi=80)
    print("wrote", out)


if __name__ == "__main__":
    main()
