"""Rough anatomy from HU alone, to choose and check the planted unsafe paths independently of the
planner: body, lung (aerated, airways included), lung region (holes filled), bone (>= 300 HU),
mediastinum (tissue between the lungs: inside each slice's convex hull of the lung region, outside
the lung region, not bone), lung vessels (tissue > -500 HU inside the lung region)."""
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import Delaunay


def largest(mask, n=1):
    lab, k = ndi.label(mask)
    sizes = ndi.sum(mask, lab, range(1, k + 1))
    keep = 1 + np.argsort(sizes)[::-1][:n]
    return np.isin(lab, keep)


def fill_slices(mask):
    return np.stack([ndi.binary_fill_holes(mask[:, :, k]) for k in range(mask.shape[2])], -1)


def hull_slices(mask):
    out = np.zeros_like(mask)
    for k in range(mask.shape[2]):
        pts = np.argwhere(mask[:, :, k])
        if len(pts) < 10:
            continue
        try:
            hull = Delaunay(pts[::7])
        except Exception:
            continue
        lo, hi = pts.min(0), pts.max(0) + 1
        grid = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]].reshape(2, -1).T
        inside = hull.find_simplex(grid) >= 0
        out[grid[inside, 0], grid[inside, 1], k] = True
    return out


def layers(hu, spacing):
    body = fill_slices(largest(hu > -400))
    lung = largest((hu < -400) & body)
    region = ndi.binary_closing(fill_slices(lung), structure=np.ones((5, 5, 3))) & body
    bone = hu >= 300
    mediastinum = hull_slices(region) & ~region & body & ~bone & (hu > -300)
    vessels = region & (hu > -500)
    return dict(body=body, lung=lung, region=region, bone=bone, mediastinum=mediastinum, lung_vessels=vessels)
