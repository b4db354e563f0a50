"""The anatomical digital patient the vessel network learns from (issue 12).

Rendered straight onto an axis-aligned LPS grid ([Z, Y, X] arrays, index increasing towards
patient Left, Posterior, Superior; same convention as data.py), from a seed, a contrast phase and a
field of view:

    r = render(seed, phase="pulmonary_arterial", fov="chest", spacing_mm=2.0)
    r.hu [Z, Y, X] float32 HU, r.labels (0 background, 1 artery, 2 vein, 3 aorta),
    r.tissue (ids into r.tissue_names), r.origin_lps (mm of voxel [0, 0, 0]), r.landmarks

What is in it (mm, LPS, z = 0 at the right diaphragm dome; every size and position jittered per
seed, the whole body scaled by a habitus factor):
  * body: skin and subcutaneous fat, a muscle layer, paraspinal and psoas muscles, shoulder muscles,
    arms (down beside the chest in some patients, otherwise out of the field of view), the CT table
    (carbon shell, foam core, optional mattress) below the patient;
  * bones: vertebral bodies (cortical shell, marrow) with discs and spinal canal, ribs (cortex and
    marrow) with costal cartilage, sternum, scapulae, clavicles, pelvis, femoral heads;
  * lungs with a gravity gradient and parenchymal texture; an airway tree (trachea, main, lobar,
    segmental and smaller bronchi: lumen and wall), pulmonary arteries running beside every bronchus
    from the pulmonary trunk (leaving the right ventricle) through the left and right pulmonary
    arteries, pulmonary veins grown separately between the bronchovascular bundles into the left
    atrium;
  * the heart: four chambers (right ventricle anterior, left ventricle posterior-left, atria at the
    base), myocardium, pericardial fat, coronary calcifications;
  * aortic root, ascending aorta, arch with brachiocephalic trunk, left carotid and left subclavian,
    descending and abdominal aorta with celiac (hepatic, splenic), superior mesenteric, renal and
    common/external iliac arteries; superior vena cava, brachiocephalic veins, azygos, inferior vena
    cava, hepatic, portal, splenic, superior mesenteric, renal and iliac veins;
  * liver, spleen, kidneys (cortex, medulla, sinus fat), pancreas, gallbladder, stomach, small bowel
    and colon (air, fluid, stool or oral contrast), bladder, esophagus, thyroid, lymph nodes,
    calcifications, and sometimes metal (with streaks) or a port catheter.
Labels follow TotalSegmentator's split: 1 artery = pulmonary and systemic arteries other than the
aorta, 2 vein = pulmonary and systemic veins, 3 aorta; heart chambers are background (the pulmonary
artery starts at the valve).

HU per tissue and phase are published typical values (see PHASE_HU: unenhanced blood 35-50 HU,
lung -850, fat -100, muscle 50, liver 55-65; CT pulmonary angiography 250-450 HU in the pulmonary
arteries with the left heart and aorta lower; systemic arterial phase 250-450 in the aorta; portal
venous phase 130-200 in all blood, liver 100-120), each jittered per patient. The acquisition is
simulated on the rendered grid: partial volume (soft occupancy from signed distances), the slice
profile of a 0.6-5 mm slice (Gaussian along z, sampling at the slice spacing and linear
interpolation back), an in-plane blur for 0.5-1 mm pixels, and noise with a CT-like spatial
correlation (band-limited, its level set by dose, slice thickness and body size).
Everything random comes from numpy's Generator seeded with `seed`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

PHASES = ("plain", "pulmonary_arterial", "systemic_arterial", "portal_venous")
FOVS = ("chest", "heart", "abdomen", "pelvis")
AIR_HU = -1000.0

TISSUES = (
    "air", "table", "fat", "muscle", "skin", "lung", "airway_lumen", "airway_wall", "bone_cortical",
    "bone_marrow", "cartilage", "disc", "spinal_canal", "myocardium", "heart_blood_right", "heart_blood_left",
    "pericardial_fat", "pulmonary_artery", "artery", "aorta", "pulmonary_vein", "vein", "ivc", "portal_vein",
    "svc", "liver", "spleen", "kidney_cortex", "kidney_medulla", "pancreas", "gallbladder", "stomach_wall",
    "bowel_wall", "bowel_content", "oral_contrast", "bladder", "esophagus", "thyroid", "lymph_node",
    "calcification", "metal", "catheter", "mediastinal_fat",
)
T = {name: i for i, name in enumerate(TISSUES)}

# Tissue -> vessel class (1 artery, 2 vein, 3 aorta); everything else is background.
TISSUE_CLASS = {"pulmonary_artery": 1, "artery": 1, "aorta": 3, "pulmonary_vein": 2, "vein": 2, "ivc": 2,
                "portal_vein": 2, "svc": 2}

# (mean, per-patient spread) HU by phase. Sources: typical values in radiology texts and CT
# angiography protocols (e.g. unenhanced blood 40 +/- 5; CTPA target >= 250 HU in the pulmonary
# trunk; aortic CTA 250-450; portal venous phase liver 100-120, portal vein 150-200).
_COMMON = {
    "air": (-1000, 5), "table": (150, 80), "fat": (-102, 8), "muscle": (40, 6), "skin": (30, 10),
    "lung": (-845, 18), "airway_lumen": (-990, 8), "airway_wall": (30, 20), "bone_cortical": (900, 200),
    "bone_marrow": (240, 70), "cartilage": (140, 50), "disc": (85, 15), "spinal_canal": (12, 6),
    "pericardial_fat": (-95, 12), "mediastinal_fat": (-95, 12), "gallbladder": (12, 6), "bowel_content": (20, 12),
    "oral_contrast": (350, 120), "bladder": (8, 5), "calcification": (650, 250), "metal": (2800, 400),
    "catheter": (250, 80), "lymph_node": (40, 8),
}
PHASE_HU = {
    "plain": {
        **_COMMON, "myocardium": (45, 5), "heart_blood_right": (42, 5), "heart_blood_left": (42, 5),
        "pulmonary_artery": (42, 5), "artery": (42, 5), "aorta": (42, 5), "pulmonary_vein": (42, 5),
        "vein": (40, 5), "ivc": (40, 5), "portal_vein": (40, 5), "svc": (40, 5), "liver": (58, 6),
        "spleen": (47, 4), "kidney_cortex": (26, 4), "kidney_medulla": (22, 4), "pancreas": (32, 8),
        "stomach_wall": (40, 6), "bowel_wall": (38, 6), "esophagus": (40, 5), "thyroid": (105, 15),
    },
    "pulmonary_arterial": {
        **_COMMON, "myocardium": (85, 15), "heart_blood_right": (430, 110), "heart_blood_left": (170, 50),
        "pulmonary_artery": (440, 110), "artery": (160, 50), "aorta": (165, 50), "pulmonary_vein": (175, 50),
        "vein": (45, 6), "ivc": (55, 15), "portal_vein": (50, 8), "svc": (700, 250), "liver": (62, 6),
        "spleen": (60, 10), "kidney_cortex": (70, 20), "kidney_medulla": (40, 6), "pancreas": (55, 8),
        "stomach_wall": (50, 8), "bowel_wall": (45, 6), "esophagus": (45, 6), "thyroid": (140, 25),
    },
    "systemic_arterial": {
        **_COMMON, "myocardium": (110, 20), "heart_blood_right": (220, 70), "heart_blood_left": (340, 80),
        "pulmonary_artery": (230, 70), "artery": (330, 80), "aorta": (340, 80), "pulmonary_vein": (330, 80),
        "vein": (50, 10), "ivc": (75, 25), "portal_vein": (110, 25), "svc": (450, 200), "liver": (72, 8),
        "spleen": (125, 25), "kidney_cortex": (185, 35), "kidney_medulla": (75, 15), "pancreas": (110, 20),
        "stomach_wall": (85, 15), "bowel_wall": (80, 15), "esophagus": (60, 10), "thyroid": (170, 30),
    },
    "portal_venous": {
        **_COMMON, "myocardium": (90, 12), "heart_blood_right": (150, 25), "heart_blood_left": (155, 25),
        "pulmonary_artery": (150, 25), "artery": (155, 25), "aorta": (155, 25), "pulmonary_vein": (152, 25),
        "vein": (125, 25), "ivc": (110, 20), "portal_vein": (150, 25), "svc": (145, 25), "liver": (100, 10),
        "spleen": (100, 12), "kidney_cortex": (165, 25), "kidney_medulla": (150, 25), "pancreas": (95, 12),
        "stomach_wall": (80, 12), "bowel_wall": (80, 12), "esophagus": (60, 10), "thyroid": (150, 25),
    },
}
# Low-frequency texture amplitude per tissue (HU), on top of scanner noise.
TEXTURE_HU = {"lung": 28, "liver": 8, "spleen": 8, "bowel_content": 20, "fat": 8, "muscle": 10, "bone_marrow": 60,
              "heart_blood_right": 20, "svc": 60, "table": 10, "kidney_cortex": 8, "pancreas": 8}
# Field-of-view boxes (mm, LPS: x left, y posterior, z superior), before the habitus scale.
FOV_BOX = {
    "chest": ((-260, 260), (-150, 215), (-70, 275)),
    "heart": None,  # a crop centred on the heart, like a cardiac CTA reconstruction
    "abdomen": ((-240, 240), (-150, 215), (-330, 40)),
    "pelvis": ((-240, 240), (-150, 215), (-470, -200)),
}


@dataclass
class Rendered:
    hu: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    spacing_zyx: tuple
    origin_lps: tuple
    phase: str
    fov: str
    seed: int
    landmarks: dict = field(default_factory=dict)
    acquisition: dict = field(default_factory=dict)
    tissue_names: tuple = TISSUES


# ------------------------------------------------------------------------------- the canvas


class Canvas:
    """The grid and the painter: every primitive is a signed distance d (mm, < 0 inside) over the
    voxels of its bounding box; occupancy clip(0.5 - d / h, 0, 1) (h = voxel size) blends its HU over
    what is there (partial volume) and voxels at least half covered take its tissue and label."""

    def __init__(self, box, spacing: float, hu_table: dict):
        (x0, x1), (y0, y1), (z0, z1) = box
        self.h = float(spacing)
        self.origin = np.array([x0, y0, z0], dtype=np.float64)
        self.shape = tuple(int(np.ceil((b - a) / spacing)) for a, b in ((z0, z1), (y0, y1), (x0, x1)))
        self.hu = np.full(self.shape, AIR_HU, dtype=np.float32)
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self.hu_table = hu_table

    def coords(self, lo, hi):
        """Slices and broadcastable x, y, z coordinate arrays of the voxels inside [lo, hi] (mm)."""
        lo_i = np.floor((np.asarray(lo) - self.origin) / self.h).astype(int)
        hi_i = np.ceil((np.asarray(hi) - self.origin) / self.h).astype(int) + 1
        nz, ny, nx = self.shape
        i0, j0, k0 = max(lo_i[0], 0), max(lo_i[1], 0), max(lo_i[2], 0)
        i1, j1, k1 = min(hi_i[0], nx), min(hi_i[1], ny), min(hi_i[2], nz)
        if i0 >= i1 or j0 >= j1 or k0 >= k1:
            return None
        x = (self.origin[0] + self.h * np.arange(i0, i1, dtype=np.float32))[None, None, :]
        y = (self.origin[1] + self.h * np.arange(j0, j1, dtype=np.float32))[None, :, None]
        z = (self.origin[2] + self.h * np.arange(k0, k1, dtype=np.float32))[:, None, None]
        return (slice(k0, k1), slice(j0, j1), slice(i0, i1)), x, y, z

    def paint(self, sl, d, tissue: str, hu=None, label=None):
        occ = np.clip(0.5 - d / self.h, 0.0, 1.0).astype(np.float32)
        if not occ.any():
            return
        value = self.hu_table[tissue] if hu is None else hu
        region = self.hu[sl]
        region += occ * (np.float32(value) - region)
        full = occ >= 0.5
        self.tissue[sl][full] = T[tissue]
        self.labels[sl][full] = TISSUE_CLASS.get(tissue, 0) if label is None else label

    # ---- primitives
    def ellipsoid(self, c, r, tissue, rot=None, hu=None, clip=None):
        c = np.asarray(c, float)
        r = np.asarray(r, float)
        ext = r.max() + 2 * self.h
        g = self.coords(c - ext, c + ext)
        if g is None:
            return
        sl, x, y, z = g
        p = [x - c[0], y - c[1], z - c[2]]
        if rot is not None:
            p = [rot[0, 0] * p[0] + rot[1, 0] * p[1] + rot[2, 0] * p[2],
                 rot[0, 1] * p[0] + rot[1, 1] * p[1] + rot[2, 1] * p[2],
                 rot[0, 2] * p[0] + rot[1, 2] * p[1] + rot[2, 2] * p[2]]
        k0 = np.sqrt((p[0] / r[0]) ** 2 + (p[1] / r[1]) ** 2 + (p[2] / r[2]) ** 2)
        k1 = np.sqrt((p[0] / r[0] ** 2) ** 2 + (p[1] / r[1] ** 2) ** 2 + (p[2] / r[2] ** 2) ** 2)
        d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)
        if clip is not None:
            d = np.maximum(d, clip(x, y, z))
        self.paint(sl, np.broadcast_to(d, np.broadcast_shapes(x.shape, y.shape, z.shape, d.shape)), tissue, hu)

    def tube(self, pts, radii, tissue, hu=None, wall=None):
        """A chain of capsules through pts with linearly varying radius; wall = (thickness, tissue)
        paints a wall first (airways, bowel)."""
        pts = np.asarray(pts, float)
        radii = np.atleast_1d(np.asarray(radii, float))
        if len(radii) != len(pts):  # control radii spread evenly along the path
            radii = np.interp(np.linspace(0, 1, len(pts)), np.linspace(0, 1, len(radii)), radii)
        if wall is not None:
            self.tube(pts, radii + wall[0], wall[1])
        for a, b, ra, rb in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
            self.capsule(a, b, ra, rb, tissue, hu)

    def capsule(self, a, b, ra, rb, tissue, hu=None):
        ext = max(ra, rb) + 2 * self.h
        g = self.coords(np.minimum(a, b) - ext, np.maximum(a, b) + ext)
        if g is None:
            return
        sl, x, y, z = g
        ab = b - a
        L2 = float(ab @ ab) or 1e-9
        px, py, pz = x - a[0], y - a[1], z - a[2]
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / L2, 0.0, 1.0)
        dist = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
        self.paint(sl, dist - (ra + t * (rb - ra)), tissue, hu)

    def field(self, fn, lo, hi, tissue, hu=None):
        """A shape given as a signed-distance function of (x, y, z) over the box [lo, hi]."""
        g = self.coords(lo, hi)
        if g is None:
            return
        sl, x, y, z = g
        d = fn(x, y, z)
        self.paint(sl, np.broadcast_to(d, tuple(s.stop - s.start for s in sl)), tissue, hu)


def _unit(v):
    v = np.asarray(v, float)
    return v / (np.linalg.norm(v) + 1e-12)


def _rot_between(u, angle_axis_rng, max_angle):
    """A random unit vector at an angle up to max_angle (rad) from u."""
    u = _unit(u)
    a = angle_axis_rng.uniform(0.35, 1.0) * max_angle
    perp = _unit(np.cross(u, angle_axis_rng.normal(size=3)))
    return _unit(np.cos(a) * u + np.sin(a) * perp)


def _smooth_path(points, n=6):
    """Catmull-Rom through the control points, n samples per span."""
    p = np.asarray(points, float)
    if len(p) < 3:
        return p
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        for t in np.linspace(0, 1, n, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(p[-1])
    return np.array(out)


# ------------------------------------------------------------------------------- the patient


class Patient:
    """Anatomy of one seeded patient: positions and sizes (mm), independent of phase and FOV."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 12012])
        self.rng = rng
        self.seed = seed
        self.s = rng.uniform(0.88, 1.14)  # habitus (lateral size)
        self.sz = rng.uniform(0.92, 1.08)  # height
        self.fat = rng.uniform(6, 34)  # subcutaneous fat (mm)
        self.arms_down = rng.random() < 0.3
        self.oral_contrast = rng.random() < 0.3
        self.metal = rng.random() < 0.12
        self.port = rng.random() < 0.15
        self.calcified = rng.uniform(0, 1) ** 2  # 0 young .. 1 heavily calcified
        self.female = rng.random() < 0.5
        j = lambda sd: rng.normal(0, sd)  # noqa: E731
        s, sz = self.s, self.sz
        self.body_a = lambda z: s * np.interp(z, [-470, -330, -200, -60, 60, 180, 260, 330],
                                              [175, 170, 150, 148, 160, 165, 150, 70])
        self.body_b = lambda z: s * np.interp(z, [-470, -330, -200, -60, 60, 180, 260, 330],
                                              [105, 110, 115, 115, 112, 105, 90, 60])
        self.body_yc = 12.0 * s
        self.spine_y = 62 * s + j(4)
        self.dome_r = j(6)  # right dome height
        self.dome_l = -18 + j(6)
        self.carina = np.array([j(3), 10 * s + j(4), (118 + j(8)) * sz])
        self.heart_c = np.array([(22 + j(6)) * s, (-25 + j(5)) * s, (45 + j(8)) * sz])
        self.heart_r = np.array([62, 50, 48]) * s * rng.uniform(0.9, 1.12)
        ang = np.deg2rad(rng.normal(0, 8))
        self.heart_axis = _unit(np.array([0.55 + 0.15 * np.sin(ang), -0.5, -0.62 + 0.15 * np.cos(ang)]))
        self.aorta_d = rng.uniform(26, 38)  # ascending aorta diameter
        self.pa_d = rng.uniform(22, 32)
        self.liver_c = np.array([(-62 + j(6)) * s, (2 + j(5)) * s, (-55 + j(8)) * sz])
        self.spleen_c = np.array([(95 + j(6)) * s, (55 + j(6)) * s, (-55 + j(8)) * sz])
        self.kidney_z = (-150 + j(10)) * sz
        self.renal_z = self.kidney_z + 15
        self.bifurcation_z = (-255 + j(12)) * sz
        self.landmarks = {}


def _build(canvas: Canvas, p: Patient, phase: str, rng: np.random.Generator):
    """Paints the patient in priority order (later paint wins the label)."""
    s, sz, c = p.s, p.sz, canvas
    L = p.landmarks
    spine_y = p.spine_y
    ztop, zbot = 330 * sz, -470 * sz

    # ---- table (outside the body, below it)
    y_back = p.body_yc + p.body_b(0) * 1.0
    table_y = y_back + rng.uniform(2, 10) + (rng.uniform(20, 60) if rng.random() < 0.4 else 0)
    curved = rng.random() < 0.6
    thick = rng.uniform(4, 9)
    width = rng.uniform(200, 260)

    def table_sdf(x, y, z):
        yy = y - (table_y - (0.0012 * x * x if curved else 0))
        return np.maximum(np.abs(yy - thick / 2) - thick / 2, np.abs(x) - width)
    lo, hi = (-width, table_y - 0.0012 * width ** 2 - 5, zbot), (width, table_y + thick + 5, ztop)
    c.field(table_sdf, lo, hi, "table")
    if rng.random() < 0.5:  # foam core, darker
        core = lambda x, y, z: table_sdf(x, y, z) + thick * 0.3  # noqa: E731
        c.field(core, lo, hi, "table", hu=rng.uniform(-850, -500))
    if p.body_yc < 1e9 and rng.random() < 0.5:  # mattress between patient and table
        mt = table_y - y_back - 2
        if mt > 8:
            c.field(lambda x, y, z: np.maximum(np.abs(y - (y_back + table_y) / 2) - mt / 2, np.abs(x) - width * 0.9),
                    (-width, y_back, zbot), (width, table_y, ztop), "table", hu=rng.uniform(-900, -600))

    # ---- body: skin+fat ellipse, muscle ring inside
    def body_sdf(shrink):
        def f(x, y, z):
            a = np.maximum(p.body_a(z) - shrink, 5.0)
            b = np.maximum(p.body_b(z) - shrink, 5.0)
            yy = y - p.body_yc
            # flatter back (the patient lies on the table)
            yy = np.where(yy > 0, yy * (1.0 + 0.25 * (yy / b) ** 2), yy)
            k = np.sqrt((x / a) ** 2 + (yy / b) ** 2)
            return (k - 1.0) * np.minimum(a, b)
        return f
    big = (-260 * s, p.body_yc - 140 * s, zbot), (260 * s, p.body_yc + 150 * s, ztop)
    c.field(body_sdf(0), *big, "skin")
    c.field(body_sdf(2.0), *big, "fat")
    muscle_t = rng.uniform(8, 18)
    c.field(body_sdf(2.0 + p.fat), *big, "muscle")
    c.field(body_sdf(2.0 + p.fat + muscle_t), *big, "fat")
    if p.female and rng.random() < 0.8:
        for side in (-1, 1):
            bc = np.array([side * 55 * s, p.body_yc - p.body_b(120) - 10, 120 * sz])
            c.ellipsoid(bc, (55 * s, 35, 55), "fat")
            c.ellipsoid(bc + [0, 5, 0], (32 * s, 18, 32), "muscle", hu=rng.uniform(-40, 30))
    # shoulders / arms
    for side in (-1, 1):
        # pectoral muscles on the front of the chest
        c.ellipsoid((side * 65 * s, p.body_yc - p.body_b(150) + p.fat + 14, 160 * sz), (62 * s, 13, 60), "muscle")
        # shoulder girdle muscles (deltoid, trapezius) at the top of the thorax
        c.ellipsoid((side * 135 * s, p.body_yc + 10, 250 * sz), (45 * s, 60 * s, 50), "muscle")
        if p.arms_down:
            ax = side * (p.body_a(100) + 48 * s + rng.uniform(5, 25))
            arm = np.array([[ax, p.body_yc, 300 * sz], [ax + side * 6, p.body_yc + 10, -150 * sz]])
            c.tube(arm, 45 * s, "fat")
            c.tube(arm, 45 * s - 2, "fat")
            c.tube(arm, 36 * s, "muscle")
            c.tube(arm, 11, "bone_cortical")
            c.tube(arm, 7, "bone_marrow")

    # ---- lungs and thoracic cavity
    def diaphragm(x, y):
        dome = np.where(x < 0, p.dome_r, p.dome_l) - 0.0025 * (np.abs(x) - 75 * s) ** 2 - 0.0015 * (y - 10) ** 2
        return dome + 0.35 * np.maximum(y - 20, 0)  # costophrenic recesses reach lower posteriorly

    lung_top = 240 * sz

    def lung_sdf(side):
        def f(x, y, z):
            cx = side * 72 * s
            a = 62 * s * np.interp(z, [-80, 0, 120, 200, 260], [1.0, 1.05, 1.0, 0.75, 0.3])
            b = 95 * s * np.interp(z, [-80, 0, 120, 200, 260], [0.95, 1.0, 0.95, 0.8, 0.4])
            k = np.sqrt(((x - cx) / a) ** 2 + ((y - 8 * s) / b) ** 2)
            d = (k - 1.0) * np.minimum(a, b)
            d = np.maximum(d, diaphragm(x, y) - z)
            d = np.maximum(d, z - lung_top)
            return np.maximum(d, -side * x + 12)  # mediastinum
        return f
    lung_lo, lung_hi = (-150 * s, -110 * s, -120), (150 * s, 120 * s, 270 * sz)
    c.field(lambda x, y, z: np.minimum(lung_sdf(-1)(x, y, z), lung_sdf(1)(x, y, z)), lung_lo, lung_hi, "lung")
    # mediastinum (fat) between the lungs, in front of the spine
    c.field(lambda x, y, z: _maxall([np.abs(x) - 32 * s - 0.25 * np.maximum(80 - z, 0), y - spine_y + 20,
                                               -y - 95 * s, diaphragm(x, y) - z, z - 230 * sz]),
            lung_lo, lung_hi, "mediastinal_fat")

    # ---- abdominal organs (below the diaphragm)
    def below_diaphragm(x, y, z):
        return z - diaphragm(x, y) + 2
    c.ellipsoid(p.liver_c, np.array([100, 88, 92]) * s, "liver", clip=lambda x, y, z: np.maximum(
        below_diaphragm(x, y, z), x - (60 * s - 0.4 * (z - p.liver_c[2]))))
    c.ellipsoid(p.spleen_c, np.array([32, 58, 55]) * s, "spleen", rot=_rotz(np.deg2rad(-30)),
                clip=below_diaphragm)
    stomach_c = np.array([55 * s, -25 * s, -45 * sz])
    c.ellipsoid(stomach_c, np.array([55, 42, 55]) * s, "stomach_wall", clip=below_diaphragm)
    c.ellipsoid(stomach_c, np.array([50, 37, 50]) * s, "bowel_content",
                hu=PHASE_HU[phase]["oral_contrast"][0] if p.oral_contrast else None, clip=below_diaphragm)
    c.field(lambda x, y, z: np.maximum(y - (stomach_c[1] - 37 * s * rng.uniform(0.1, 0.6)),
                                       np.sqrt(((x - stomach_c[0]) / 50) ** 2 + ((y - stomach_c[1]) / 37) ** 2
                                               + ((z - stomach_c[2]) / 50) ** 2) * 40 - 40),
            stomach_c - 60 * s, stomach_c + 60 * s, "airway_lumen")  # gastric air, anterior (patient supine)
    # pancreas, gallbladder
    c.tube(_smooth_path([[-35 * s, 5, -135 * sz], [10 * s, 15, -120 * sz], [60 * s, 30, -105 * sz],
                         [90 * s, 45, -90 * sz]]), np.array([16, 14, 12, 11, 10, 9, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                                                              8, 8, 8])[:19] * s, "pancreas")
    c.ellipsoid(p.liver_c + np.array([10, -45, -40]) * s, (16, 16, 35), "gallbladder")
    # kidneys: cortex, medulla, sinus fat
    for side in (-1, 1):
        kc = np.array([side * 72 * s, 55 * s, p.kidney_z + (8 if side < 0 else 0)])
        rot = _rotz(np.deg2rad(side * -30))
        c.ellipsoid(kc, np.array([28, 24, 55]) * s, "fat", rot=rot)
        c.ellipsoid(kc, np.array([25, 21, 52]) * s, "kidney_cortex", rot=rot)
        c.ellipsoid(kc, np.array([17, 13, 42]) * s, "kidney_medulla", rot=rot)
        c.ellipsoid(kc + [-side * 14 * s, -4, 0], np.array([8, 7, 20]) * s, "fat", rot=rot)
    # bowel: small bowel loops and colon
    colon = [[-75 * s, -20, -290 * sz], [-85 * s, -10, -200 * sz], [-80 * s, -20, -130 * sz],
             [-20 * s, -70 * s, -125 * sz], [40 * s, -65 * s, -120 * sz], [85 * s, -10, -115 * sz],
             [90 * s, 10, -200 * sz], [80 * s, 0, -290 * sz], [30 * s, -10, -330 * sz], [0, 30, -360 * sz]]
    colon = np.array(colon) + rng.normal(0, 6, (len(colon), 3))
    content = "airway_lumen" if rng.random() < 0.5 else "bowel_content"
    c.tube(_smooth_path(colon), rng.uniform(17, 26), content, wall=(3.0, "bowel_wall"))
    for _ in range(int(rng.integers(5, 11))):
        pt = np.array([rng.uniform(-60, 60) * s, rng.uniform(-70, 10) * s, rng.uniform(-320, -160) * sz])
        path = [pt]
        d = _unit(rng.normal(size=3))
        for _ in range(8):
            d = _rot_between(d, rng, 1.1)
            pt = pt + d * rng.uniform(15, 30)
            pt = np.clip(pt, [-75 * s, -85 * s, -330 * sz], [75 * s, 20 * s, -140 * sz])
            path.append(pt)
        kind = rng.random()
        tissue = "oral_contrast" if (p.oral_contrast and kind < 0.6) else ("airway_lumen" if kind < 0.75
                                                                            else "bowel_content")
        c.tube(_smooth_path(path), rng.uniform(8, 15), tissue, wall=(2.5, "bowel_wall"))
    c.ellipsoid((0, -50 * s, -400 * sz), np.array([45, 35, 35]) * s * rng.uniform(0.5, 1.1), "bladder")

    # ---- muscles around the spine and in the pelvis
    for side in (-1, 1):
        c.tube([[side * 36 * s, spine_y + 32 * s, 260 * sz], [side * 38 * s, spine_y + 30 * s, -300 * sz]],
               22 * s, "muscle")  # erector spinae
        c.tube(_smooth_path([[side * 32 * s, spine_y + 5, -100 * sz], [side * 50 * s, spine_y - 5, -250 * sz],
                             [side * 70 * s, spine_y - 40, -380 * sz]]), np.linspace(12, 25, 13) * s, "muscle")
        c.ellipsoid((side * 95 * s, spine_y + 40, -390 * sz), np.array([55, 45, 70]) * s, "muscle")  # gluteal

    # ---- bones
    # vertebral bodies, discs, canal
    zv = 300 * sz
    while zv > -330 * sz:
        hgt = (17 if zv > 120 else 22 if zv > -130 else 26) * sz
        r_v = (15 if zv > 150 else 20 if zv > -100 else 25) * s
        yc = spine_y - (20 if zv < -150 else 0) * max(0, min(1, (-150 - zv) / 100 + 1))
        seg = np.array([[0, yc, zv - hgt], [0, yc, zv]])
        c.tube(seg, r_v, "bone_cortical")
        c.tube(seg, r_v - 2.5, "bone_marrow")
        c.tube([[0, yc, zv - hgt - 7], [0, yc, zv - hgt]], r_v, "disc")
        c.capsule(np.array([0, yc + r_v + 10, zv - hgt]), np.array([0, yc + r_v + 10, zv]), 13, 13, "bone_cortical")
        c.capsule(np.array([0, yc + r_v + 10, zv - hgt]), np.array([0, yc + r_v + 10, zv]), 10, 10, "bone_marrow")
        c.capsule(np.array([0, yc + r_v + 10, zv - hgt - 8]), np.array([0, yc + r_v + 10, zv + 1]), 8, 8,
                  "spinal_canal")
        c.capsule(np.array([0, yc + r_v + 26, zv - hgt / 2]), np.array([0, yc + r_v + 45 * s, zv - hgt]), 6, 4,
                  "bone_cortical")
        zv -= hgt + 7
    # ribs with costal cartilage; sternum
    zr = 235 * sz
    while zr > -40 * sz:
        for side in (-1, 1):
            pts = []
            for t in np.linspace(0, 1, 12):
                ang = np.pi * (0.08 + 0.82 * t)
                a = p.body_a(zr) - p.fat - muscle_t - 8
                b = p.body_b(zr) - p.fat - muscle_t - 8
                pts.append([side * a * np.sin(ang), p.body_yc + b * np.cos(ang), zr - 55 * sz * t ** 1.3])
            pts = np.array(pts)
            if t_in(-40, zr, 300):
                c.tube(pts[:10], 6.0, "bone_cortical")
                c.tube(pts[:10], 3.5, "bone_marrow")
                c.tube(pts[9:], 5.5, "cartilage")
        zr -= 24 * sz
    for zz in np.arange(200, 40, -8) * sz:
        c.capsule(np.array([0, p.body_yc - p.body_b(zz) + p.fat + 10, zz]),
                  np.array([0, p.body_yc - p.body_b(zz) + p.fat + 10, zz - 8 * sz]), 9, 9, "bone_cortical")
    c.tube([[0, p.body_yc - p.body_b(120) + p.fat + 10, 195 * sz], [0, p.body_yc - p.body_b(60) + p.fat + 10,
                                                                     45 * sz]], 6, "bone_marrow")
    for side in (-1, 1):
        # scapula: a plate behind the upper ribs
        c.field(lambda x, y, z, sd=side: _maxall([
            np.abs(y - (p.body_yc + p.body_b(180) - p.fat - 20 - 0.004 * (x - sd * 90 * s) ** 2)) - 4,
            np.abs(x - sd * 95 * s) - 45 * s, np.abs(z - 175 * sz) - 65 * sz]),
            (side * 95 * s - 60, 0, 100 * sz), (side * 95 * s + 60, 160 * s, 250 * sz), "bone_cortical")
        c.tube([[side * 15, p.body_yc - p.body_b(260) + 25, 262 * sz], [side * 120 * s, p.body_yc, 270 * sz]], 8,
               "bone_cortical")  # clavicle
        # pelvis: iliac wing, acetabulum, femoral head and shaft
        c.field(lambda x, y, z, sd=side: _maxall([
            np.abs((x - sd * 95 * s) * 0.8 + (y - spine_y) * 0.2 * sd) - 6,
            np.abs(y - spine_y + 10) - 60 * s, z + 360 * sz, -z - 245 * sz]),
            (side * 95 * s - 70, spine_y - 80, -370 * sz), (side * 95 * s + 70, spine_y + 70, -240 * sz),
            "bone_cortical")
        c.field(lambda x, y, z, sd=side: _maxall([
            np.abs((x - sd * 95 * s) * 0.8 + (y - spine_y) * 0.2 * sd) - 3,
            np.abs(y - spine_y + 10) - 56 * s, z + 357 * sz, -z - 248 * sz]),
            (side * 95 * s - 70, spine_y - 80, -370 * sz), (side * 95 * s + 70, spine_y + 70, -240 * sz),
            "bone_marrow")
        fh = np.array([side * 85 * s, 0, -425 * sz])
        c.ellipsoid(fh, (25, 25, 25), "bone_cortical")
        c.ellipsoid(fh, (21, 21, 21), "bone_marrow")
        c.tube([fh, fh + [side * 35, 5, -30], fh + [side * 45, 5, -120]], 15, "bone_cortical")
        c.tube([fh, fh + [side * 35, 5, -30], fh + [side * 45, 5, -120]], 10, "bone_marrow")
    c.field(lambda x, y, z: _maxall([np.abs(x) - 45 * s, np.abs(y - spine_y - 10) - 14,
                                               z + 370 * sz, -z - 300 * sz]),
            (-60, spine_y - 20, -380 * sz), (60, spine_y + 40, -290 * sz), "bone_marrow")  # sacrum

    # ---- esophagus, thyroid, lymph nodes
    eso = np.array([[5, p.carina[1] + 20, 300 * sz], [8, p.carina[1] + 22, p.carina[2]],
                    [15 * s, spine_y - 25, 20 * sz], [40 * s, -10 * s, -40 * sz]])
    c.tube(_smooth_path(eso), 9, "esophagus")
    if rng.random() < 0.4:
        c.tube(_smooth_path(eso[:3]), 3, "airway_lumen")
    for side in (-1, 1):
        c.ellipsoid((side * 22, p.carina[1] - 15, 290 * sz), (12, 12, 25), "thyroid")
    for _ in range(int(rng.integers(3, 10))):
        pos = p.carina + [rng.uniform(-40, 40), rng.uniform(-40, 20), rng.uniform(-60, 30)]
        c.ellipsoid(pos, rng.uniform(3, 8, 3), "lymph_node")

    # ---- airways and pulmonary vessels
    bronchi = _airway_tree(p, rng, lung_sdf)
    pv_ostia = _pulmonary_veins(p, rng, lung_sdf, c)  # veins first: arteries and airways win crossings
    # heart: pericardial fat, myocardium, chambers
    u = p.heart_axis
    v = _unit(np.cross(u, [0, 0, 1.0]))
    w = np.cross(u, v)
    R = np.stack([u, v, w], axis=1)  # local (long axis, v, w) -> LPS
    hc, hr = p.heart_c, p.heart_r
    c.ellipsoid(hc, hr + rng.uniform(3, 10), "pericardial_fat", rot=R)
    c.ellipsoid(hc, hr, "myocardium", rot=R)
    loc = lambda a, b_, c_: hc + R @ (np.array([a, b_, c_]) * hr)  # noqa: E731
    # right-sided chambers anterior-right, left-sided posterior-left (w points ~ posterior/left)
    vpos = loc(0.0, 0, 0)
    right_dir = _unit(np.array([-0.6, -0.7, 0.2]))
    left_dir = _unit(np.array([0.55, 0.8, 0.0]))
    lv_c = vpos + left_dir * 0.25 * hr.mean() + u * 0.15 * hr[0]
    rv_c = vpos + right_dir * 0.35 * hr.mean() + u * 0.05 * hr[0]
    la_c = vpos - u * 0.55 * hr[0] + np.array([5, 35, 8]) * s
    ra_c = vpos - u * 0.45 * hr[0] + np.array([-38, 5, -8]) * s
    c.ellipsoid(lv_c, np.array([0.62, 0.42, 0.42]) * hr, "heart_blood_left", rot=R)
    c.ellipsoid(rv_c, np.array([0.6, 0.32, 0.45]) * hr, "heart_blood_right", rot=R)
    c.ellipsoid(la_c, np.array([28, 22, 20]) * s, "myocardium")
    c.ellipsoid(la_c, np.array([25, 19, 17]) * s, "heart_blood_left")
    c.ellipsoid(ra_c, np.array([25, 22, 28]) * s, "myocardium")
    c.ellipsoid(ra_c, np.array([22, 19, 25]) * s, "heart_blood_right")
    for o in pv_ostia:  # the pulmonary veins end at the left atrium wall
        c.capsule(o, la_c + 0.5 * (o - la_c), 6.5, 8, "pulmonary_vein")
        c.capsule(la_c + 0.5 * (o - la_c), la_c + 0.25 * (o - la_c), 8, 10, "heart_blood_left")
    L["heart_centre"] = tuple(hc)

    # pulmonary trunk from the right ventricular outflow (valve), bifurcation, LPA over the left
    # main bronchus, RPA behind the ascending aorta
    valve = rv_c + np.array([8, -8, 30]) * s
    bif = np.array([12 * s, p.carina[1] - 18, p.carina[2] - 15 * sz])
    trunk = _smooth_path([valve, valve + np.array([6, 0, 20]) * s, bif])
    c.tube(trunk, p.pa_d / 2, "pulmonary_artery", hu=None)
    L["pulmonary_trunk"] = tuple(trunk[len(trunk) // 2])
    L["carina"] = tuple(p.carina)
    # aorta
    root = lv_c + np.array([-10, -10, 35]) * s
    asc_top = np.array([-20 * s, -25 * s, p.carina[2] + 30 * sz])
    arch_top = np.array([0, 5 * s, p.carina[2] + 48 * sz])
    desc_top = np.array([22 * s, spine_y - 30, p.carina[2] + 20 * sz])
    desc = [np.array([25 * s, spine_y - 28, z]) for z in (p.carina[2] - 40, 40 * sz)]
    abd = [np.array([12 * s, spine_y - 28, -40 * sz]), np.array([8 * s, spine_y - 26, p.renal_z]),
           np.array([5 * s, spine_y - 30, p.bifurcation_z])]
    aorta_path = _smooth_path([root, root + np.array([-8, -8, 25]) * s, asc_top, arch_top, desc_top, *desc, *abd], 8)
    rad = np.interp(np.arange(len(aorta_path)), [0, 16, 30, len(aorta_path) - 1],
                    [p.aorta_d / 2, p.aorta_d / 2, p.aorta_d * 0.4, p.aorta_d * 0.3])
    L["aortic_bifurcation"] = tuple(abd[-1])
    L["renal_arteries"] = tuple(abd[1])

    # systemic veins first (arteries win crossings): SVC + brachiocephalic, azygos, IVC, hepatic, portal,
    # splenic, SMV, renal, iliac
    svc_bottom = ra_c + np.array([0, 0, 15]) * s
    svc_top = np.array([-38 * s, -15 * s, p.carina[2] + 40 * sz])
    c.tube([svc_bottom, svc_top], rng.uniform(8, 11), "svc")
    c.tube(_smooth_path([svc_top, [-45 * s, -10 * s, 250 * sz], [-70 * s, -5, 275 * sz], [-120 * s, 5, 280 * sz]]),
           7, "svc")
    c.tube(_smooth_path([svc_top, [0, -40 * s, p.carina[2] + 55 * sz], [60 * s, -25 * s, 270 * sz],
                         [120 * s, 5, 280 * sz]]), 6, "svc")  # left brachiocephalic vein (injection side)
    c.tube(_smooth_path([[-12 * s, spine_y - 15, -60 * sz], [-14 * s, spine_y - 12, p.carina[2] - 20],
                         [-20 * s, spine_y - 25, p.carina[2] + 8], [-35 * s, -5 * s, p.carina[2] + 12]]), 4.5, "vein")
    ivc = _smooth_path([ra_c + np.array([0, 10, -25]) * s, [-25 * s, spine_y - 30, -20 * sz],
                        [-22 * s, spine_y - 30, p.renal_z], [-15 * s, spine_y - 25, p.bifurcation_z - 10]])
    c.tube(ivc, np.linspace(14, 11, len(ivc)) * s, "ivc")
    for k in range(3):  # hepatic veins
        c.tube(_smooth_path([ivc[1], ivc[1] + np.array([-30 + 35 * k, -40 + 10 * k, -10]) * s,
                             ivc[1] + np.array([-70 + 55 * k, -70, -45]) * s]), [6, 4, 2.5], "vein")
    confl = np.array([5 * s, spine_y - 55 * s, p.renal_z + 30])
    c.tube(_smooth_path([confl, confl + np.array([-30, -10, 25]) * s, p.liver_c + np.array([20, 10, -10]) * s,
                         p.liver_c + np.array([-30, 0, 0]) * s]), [7, 7, 6, 4], "portal_vein")
    c.tube(_smooth_path([confl, confl + np.array([40, 30, 20]) * s, p.spleen_c + np.array([-25, 0, -5])]), 5,
           "portal_vein")
    c.tube(_smooth_path([confl, confl + np.array([5, -15, -60]) * s, confl + np.array([-10, -30, -130]) * s]),
           [6, 5, 3.5], "vein")  # SMV
    for side in (-1, 1):
        c.tube([[side * 50 * s, 52 * s, p.renal_z - 5], ivc[2] if side < 0 else [-15 * s, spine_y - 40, p.renal_z]],
               4.5, "vein")
    for side in (-1, 1):
        start = np.array([-15 * s, spine_y - 25, p.bifurcation_z - 10])
        il = _smooth_path([start, start + [side * 45 * s + 15 * s, -5, -60 * sz],
                           [side * 75 * s, -10 * s, -400 * sz], [side * 80 * s, -30 * s, -470 * sz]])
        c.tube(il, np.linspace(8, 6, len(il)), "vein")

    # aorta and systemic arteries
    c.tube(aorta_path, rad, "aorta")
    for off, d, tgt in ((-0.35, 6.5, np.array([-30 * s, -10 * s, 280 * sz])),
                        (0.0, 4.0, np.array([-5 * s, 0, 300 * sz])), (0.35, 5.0, np.array([70 * s, 10 * s, 285 * sz]))):
        base = arch_top + np.array([off * 40 * s, off * 15, 0])
        c.tube(_smooth_path([base, base + [0, -5, 20], tgt]), [d, d, d * 0.8], "artery")
    celiac = np.array([9 * s, spine_y - 28, -95 * sz])
    c.tube(_smooth_path([celiac, celiac + np.array([0, -20, 5]) * s]), 3.5, "artery")
    c.tube(_smooth_path([celiac + np.array([0, -20, 5]) * s, p.liver_c + np.array([30, 15, -20]) * s]), 2.6, "artery")
    c.tube(_smooth_path([celiac + np.array([0, -20, 5]) * s, confl + np.array([40, 40, 30]) * s,
                         p.spleen_c + np.array([-25, -5, 5])]), 3.0, "artery")
    sma = np.array([8 * s, spine_y - 28, -112 * sz])
    c.tube(_smooth_path([sma, sma + np.array([0, -25, -10]) * s, sma + np.array([-5, -45, -90]) * s,
                         sma + np.array([-15, -60, -160]) * s]), [3.5, 3.2, 2.5, 2], "artery")
    for side in (-1, 1):
        ra = np.array([8 * s, spine_y - 28, p.renal_z + 6])
        c.tube([ra, [side * 52 * s, 50 * s, p.renal_z - 2]], 3.0, "artery")
        il = _smooth_path([abd[-1], abd[-1] + [side * 40 * s, -8, -60 * sz], [side * 72 * s, -20 * s, -390 * sz],
                           [side * 78 * s, -40 * s, -470 * sz]])
        c.tube(il, np.linspace(6.5, 4.5, len(il)), "artery")
    # pulmonary arteries: trunk split and the arterial tree beside the bronchi
    for side in (-1, 1):
        hilum = bronchi["hilum"][side]
        path = _smooth_path([bif, bif + np.array([side * 25 * s, 8 if side > 0 else -2, 8 if side > 0 else -3]),
                             hilum["artery_start"]])
        c.tube(path, p.pa_d * 0.36, "pulmonary_artery")
    for seg in bronchi["arteries"]:
        c.capsule(*seg, "pulmonary_artery")
    for seg in bronchi["airways"]:
        a, b, ra, rb = seg
        c.capsule(a, b, ra + max(0.5, 0.18 * ra), rb + max(0.5, 0.18 * rb), "airway_wall")
    for seg in bronchi["airways"]:
        c.capsule(*seg, "airway_lumen")
    c.tube(trunk, p.pa_d / 2, "pulmonary_artery")  # trunk wins over the airway walls

    # ---- calcifications, port catheter, metal
    ncalc = int(p.calcified * 25)
    for _ in range(ncalc):
        i = int(rng.integers(10, len(aorta_path)))
        n = _unit(np.cross(rng.normal(size=3), aorta_path[min(i + 1, len(aorta_path) - 1)] - aorta_path[i - 1]))
        pos = aorta_path[i] + n * rad[i]
        c.ellipsoid(pos, rng.uniform(1.0, 2.5, 3), "calcification")
    for _ in range(int(p.calcified * 8)):
        pos = hc + R @ (np.array([rng.uniform(-0.6, 0.6), rng.uniform(-1, 1), rng.uniform(-1, 1)]) * hr)
        pos = hc + _unit(pos - hc) * hr.min() * 1.0
        c.ellipsoid(pos, rng.uniform(1.0, 2.0, 3), "calcification")
    if p.port:
        c.tube(_smooth_path([[70 * s, -60 * s, 200 * sz], [60 * s, -20, 265 * sz], svc_top, svc_bottom]), 1.4,
               "catheter")
    if p.metal:
        kind = rng.integers(0, 3)
        if kind == 0:  # sternal wires
            for zz in np.linspace(170, 70, 5) * sz:
                y0 = p.body_yc - p.body_b(zz) + p.fat + 10
                c.capsule(np.array([-8, y0, zz]), np.array([8, y0, zz]), 1.0, 1.0, "metal")
        elif kind == 1:  # spinal screws
            zz = rng.uniform(-250, -120) * sz
            for side in (-1, 1):
                c.capsule(np.array([side * 20, spine_y + 40, zz]), np.array([side * 8, spine_y, zz]), 3, 3, "metal")
        else:  # surgical clips
            for _ in range(4):
                pos = p.liver_c + rng.normal(0, 30, 3)
                c.ellipsoid(pos, (3, 1.5, 1.5), "metal")


def _maxall(arrays):
    """Intersection of signed distances (elementwise max of broadcastable arrays)."""
    out = arrays[0]
    for a in arrays[1:]:
        out = np.maximum(out, a)
    return out


def t_in(lo, v, hi):
    return lo <= v <= hi


def _rotz(a):
    ca, sa = np.cos(a), np.sin(a)
    return np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1.0]])


def _grow(rng, start, direction, length, radius, inside, out, r_min, angle, depth=0, max_depth=12):
    """Recursive dichotomous branching confined to `inside`; appends (a, b, ra, rb)."""
    if radius < r_min or depth > max_depth:
        return
    d = _unit(direction)
    end = start + d * length
    tries = 0
    while inside(end) > -1.0 and tries < 4:
        d = _rot_between(d, rng, angle)
        length *= 0.75
        end = start + d * length
        tries += 1
    if inside(end) > -1.0:
        return
    rb = radius * 0.92
    out.append((start, end, radius, rb))
    ratio = rng.uniform(0.72, 0.85)
    for k in range(2):
        child_r = rb * (ratio if k == 0 else rng.uniform(0.6, ratio))
        cd = _rot_between(d, rng, angle)
        _grow(rng, end, cd, length * rng.uniform(0.72, 0.92), child_r, inside, out, r_min, angle, depth + 1,
              max_depth)


def _scalar(fn):
    return lambda q: float(np.asarray(fn(np.float32(q[0]), np.float32(q[1]), np.float32(q[2]))))


def _airway_tree(p: Patient, rng, lung_sdf):
    """Trachea, main bronchi and a branching tree per lung; an artery beside every bronchus."""
    s, sz = p.s, p.sz
    car = p.carina
    airways = [(np.array([car[0], car[1] - 4, 300 * sz]), car.copy(), 9.0 * s, 8.5 * s)]
    arteries = []
    hilum = {}
    for side in (-1, 1):
        inside = _scalar(lung_sdf(side))
        main_dir = _unit(np.array([side * (0.55 if side < 0 else 0.75), 0.15, -0.8 if side < 0 else -0.6]))
        main_len = (25 if side < 0 else 45) * s
        main_end = car + main_dir * main_len
        airways.append((car.copy(), main_end, 6.5 * s, 6.0 * s))
        tree = []
        # lobar bronchi: 3 right, 2 left
        lobar = ([(-0.6, -0.1, 0.75), (-0.5, -0.55, -0.4), (-0.35, 0.45, -0.8)] if side < 0
                 else [(0.55, -0.15, 0.8), (0.45, 0.35, -0.8)])
        for dvec in lobar:
            d = _unit(np.array(dvec) + rng.normal(0, 0.12, 3))
            _grow(rng, main_end, d, 28 * s, 4.6 * s, inside, tree, r_min=0.7, angle=np.deg2rad(42))
        airways += tree
        # the artery runs beside its bronchus: offset perpendicular, towards lateral-up/back
        off_dir = _unit(np.array([side * 0.3, 0.5, 0.6]))
        for a, b, ra, rb in tree:
            axis = _unit(b - a)
            o = _unit(off_dir - axis * (off_dir @ axis))
            sep_a = ra * 2.2 + 1.2
            sep_b = rb * 2.2 + 1.2
            arteries.append((a + o * sep_a, b + o * sep_b, ra * rng.uniform(1.0, 1.25), rb * rng.uniform(1.0, 1.25)))
        first = np.mean([t[0] for t in arteries[-len(tree):][:3]], axis=0) if tree else main_end
        hilum[side] = {"artery_start": first + np.array([0, -6, 10])}
        # join each lobar artery start to the hilum point
        for a, b, ra, rb in arteries[-len(tree):]:
            if np.linalg.norm(a - main_end) < 25 * s:
                arteries.append((hilum[side]["artery_start"], a, 7.5 * s, ra))
    return {"airways": airways, "arteries": arteries, "hilum": hilum}


def _pulmonary_veins(p: Patient, rng, lung_sdf, c: Canvas):
    """Four pulmonary veins grown from the left-atrial ostia into the lungs, between the bundles."""
    s = p.s
    ostia = []
    la_guess = p.heart_c + np.array([-5, 45, 30]) * s
    for side in (-1, 1):
        inside = _scalar(lung_sdf(side))
        for updown in (1, -1):
            o = la_guess + np.array([side * 22 * s, 5, updown * 12])
            ostia.append(o)
            start = o + np.array([side * 22 * s, 8, updown * 10])
            tree = []
            d = _unit(np.array([side * 0.8, 0.2, updown * 0.6]) + rng.normal(0, 0.1, 3))
            _grow(rng, start, d, 26 * s, 5.2 * s, inside, tree, r_min=0.7, angle=np.deg2rad(45))
            c.capsule(o, start, 6.5 * s, 6.0 * s, "pulmonary_vein")
            if tree:
                c.capsule(start, tree[0][0], 6.0 * s, 5.5 * s, "pulmonary_vein")
            for seg in tree:
                c.capsule(*seg, "pulmonary_vein")
    return ostia


# ------------------------------------------------------------------------------- acquisition


def _acquire(hu: np.ndarray, tissue: np.ndarray, h: float, rng: np.random.Generator, body_size: float):
    """Texture, slice profile, in-plane blur and CT-like correlated noise, in place-ish."""
    thickness = float(rng.choice([0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0], p=[.12, .18, .1, .12, .12, .12, .12, .12]))
    pixel = rng.uniform(0.5, 1.0)
    # low-frequency texture per tissue
    tex = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), 2.0 * 2.0 / h)
    tex /= tex.std() + 1e-6
    amp = np.zeros(len(TISSUES), np.float32)
    for name, a in TEXTURE_HU.items():
        amp[T[name]] = a
    hu += amp[tissue] * tex
    # lung: gravity gradient (dependent, posterior parts denser)
    lung = tissue == T["lung"]
    if lung.any():
        yy = np.arange(hu.shape[1], dtype=np.float32)[None, :, None] * h
        grad = rng.uniform(0.1, 0.35)
        hu += np.where(lung, grad * (yy - yy.mean()), 0).astype(np.float32)
    # slice profile along z (FWHM = thickness) and sampling at the slice spacing
    sig_z = thickness / 2.355 / h
    sig_xy = max(pixel * 1.2 / 2.355 / h, 0.2)
    out = ndimage.gaussian_filter(hu, (sig_z, sig_xy, sig_xy), mode="nearest")
    if thickness > h * 1.05:
        nz = hu.shape[0]
        zs = np.arange(0, (nz - 1) * h + 1e-6, thickness) / h
        if len(zs) >= 2:
            sampled = ndimage.map_coordinates(out, np.meshgrid(zs, np.arange(hu.shape[1]), np.arange(hu.shape[2]),
                                                               indexing="ij"), order=1, mode="nearest")
            back = np.clip(np.arange(nz) * h / thickness, 0, len(zs) - 1)
            i0 = np.floor(back).astype(int)
            i1 = np.minimum(i0 + 1, len(zs) - 1)
            f = (back - i0).astype(np.float32)[:, None, None]
            out = sampled[i0] * (1 - f) + sampled[i1] * f
    # correlated noise: white noise, band-limited like a filtered-backprojection noise power spectrum
    dose = rng.uniform(0.6, 1.6)
    sigma = float(np.clip(14.0 * np.sqrt(2.0 / max(thickness, 0.6)) * (body_size / 1.0) ** 1.5 / dose, 6, 45))
    n = rng.standard_normal(hu.shape).astype(np.float32)
    corr = rng.uniform(0.5, 1.0)
    nn = ndimage.gaussian_filter(n, (0.5, corr, corr)) - 0.6 * ndimage.gaussian_filter(n, (0.8, 2.5 * corr,
                                                                                             2.5 * corr))
    nn *= sigma / (nn.std() + 1e-6)
    out += nn
    return out, {"slice_thickness_mm": thickness, "pixel_mm": round(pixel, 3), "noise_sd_hu": round(sigma, 1),
                 "dose_factor": round(dose, 2)}


def _metal_streaks(hu, tissue, rng):
    metal = tissue == T["metal"]
    if not metal.any():
        return
    for k in np.unique(np.nonzero(metal)[0]):
        jj, ii = np.nonzero(metal[k])
        cy, cx = jj.mean(), ii.mean()
        ny, nx = hu.shape[1:]
        yy, xx = np.mgrid[0:ny, 0:nx]
        ang = np.arctan2(yy - cy, xx - cx)
        r = np.hypot(yy - cy, xx - cx) + 1
        streak = np.zeros((ny, nx), np.float32)
        for a in rng.uniform(-np.pi, np.pi, 4):
            streak += np.exp(-((np.angle(np.exp(1j * (ang - a)))) ** 2) / 0.0008) * rng.choice([-1, 1])
        hu[k] += (streak * 400 / np.sqrt(r / 5)).astype(np.float32)


# ------------------------------------------------------------------------------- entry point


def _draw_hu_table(rng: np.random.Generator, phase: str) -> dict:
    """This patient's HU per tissue in this phase (published mean + per-patient spread)."""
    table = {name: rng.normal(m, sd) for name, (m, sd) in PHASE_HU[phase].items()}
    if phase == "pulmonary_arterial":
        # bolus timing: the left heart, aorta and systemic arteries reach 35-105 % of the right side
        f = rng.uniform(0.35, 1.05)
        for name in ("heart_blood_left", "aorta", "artery", "pulmonary_vein"):
            table[name] = max(table[name], f * table["pulmonary_artery"] + rng.normal(0, 20))
    table["lung"] = float(np.clip(table["lung"], -880, -805))
    for name, m in table.items():  # keep phase orderings sane
        if name == "fat" or name == "pericardial_fat" or name == "mediastinal_fat":
            table[name] = min(m, -70)
    return table


def phase_hu_table(seed: int, phase: str, fov: str) -> dict:
    """The HU per tissue that `render(seed, phase, fov)` uses (same draws), without rendering."""
    return _draw_hu_table(np.random.default_rng([seed, 12012, PHASES.index(phase), FOVS.index(fov)]), phase)


def render(seed: int, phase: str = "plain", fov: str = "chest", spacing_mm: float = 2.0,
           acquisition: bool = True) -> Rendered:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    if fov not in FOVS:
        raise ValueError(f"fov must be one of {FOVS}, not {fov!r}")
    p = Patient(seed)
    rng = np.random.default_rng([seed, 12012, PHASES.index(phase), FOVS.index(fov)])
    table = _draw_hu_table(rng, phase)
    if fov == "heart":
        hc = p.heart_c + np.array([-10, 10, 25]) * p.s
        half = np.array([rng.uniform(80, 100), rng.uniform(70, 85), rng.uniform(75, 95)])
        box = tuple((hc[i] - half[i], hc[i] + half[i]) for i in range(3))
    else:
        (x0, x1), (y0, y1), (z0, z1) = FOV_BOX[fov]
        xr = rng.uniform(0.8, 1.0) * max(abs(x0), x1) * p.s
        box = ((-xr, xr), (y0 * p.s, y1 * p.s), (z0 * p.sz, z1 * p.sz))
    c = Canvas(box, spacing_mm, table)
    build_rng = np.random.default_rng([seed, 777])  # anatomy draws do not depend on phase/FOV
    _build(c, p, phase, build_rng)
    acq = {}
    if acquisition:
        _metal_streaks(c.hu, c.tissue, rng)
        c.hu, acq = _acquire(c.hu, c.tissue, spacing_mm, rng, p.s)
    return Rendered(hu=c.hu, labels=c.labels, tissue=c.tissue, spacing_zyx=(spacing_mm,) * 3,
                    origin_lps=tuple(float(v) for v in c.origin), phase=phase, fov=fov, seed=seed,
                    landmarks={k: tuple(float(x) for x in v) for k, v in p.landmarks.items()}, acquisition=acq)
