"""How the target of cases/chest_cta_lung_point was chosen (../shared/data/chest_cta_pulmonary_artery).
Lung parenchyma = HU < -700; tissue = HU > -500 (vessels, walls, heart). The target is the lung voxel
farthest from any tissue (exact Euclidean distance, mm) among those at least 25 mm inside the image
border (so paths can be judged over some length before leaving the crop) and in the right lung
(LPS x below the pulmonary trunk's centre). Prints the point and its distances."""
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from ct_io import load_ct, to_mm  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared/data/chest_cta_pulmonary_artery"


def main():
    hu, affine = load_ct(DATA / "ct_cropped.nii.gz")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    pa = np.asarray(nib.load(str(DATA / "pulmonary_artery.nii.gz")).dataobj) > 0
    dist_tissue = ndi.distance_transform_edt(~(hu > -500), sampling=spacing)
    border = np.ones(hu.shape, bool)
    border[1:-1, 1:-1, 1:-1] = False
    dist_border = ndi.distance_transform_edt(~border, sampling=spacing)
    pa_centre = to_mm(affine, np.argwhere(pa).mean(0))
    ijk = np.indices(hu.shape).reshape(3, -1).T
    x = to_mm(affine, ijk)[:, 0].reshape(hu.shape)
    ok = (hu < -700) & (dist_border >= 25) & (x < pa_centre[0] - 40)
    score = np.where(ok, dist_tissue, -1)
    best = np.unravel_index(np.argmax(score), hu.shape)
    p = to_mm(affine, np.array(best))
    d_pa = ndi.distance_transform_edt(~pa, sampling=spacing)[best]
    print(json.dumps(dict(target_ijk=[int(v) for v in best], target_mm=[round(float(v), 1) for v in p], hu=float(hu[best]),
                          clearance_to_tissue_mm=round(float(dist_tissue[best]), 1), to_border_mm=round(float(dist_border[best]), 1),
                          to_pulmonary_artery_label_mm=round(float(d_pa), 1), pulmonary_trunk_centre_mm=[round(float(v), 1) for v in pa_centre])))


if __name__ == "__main__":
    main()
