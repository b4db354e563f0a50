"""Reading the real cases' CT into numpy with patient coordinates (DICOM LPS, mm), independently of
the Rust loader: pydicom for a DICOM series, nibabel for a NIfTI file (its RAS affine turned to LPS)."""
from pathlib import Path

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def load_ct(path):
    """Returns (hu[i, j, k] float32, affine 4x4 from voxel index (i, j, k, 1) to LPS mm)."""
    path = Path(path)
    if path.is_dir():
        return load_dicom_series(path)
    import nibabel as nib
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), RAS_TO_LPS @ img.affine


def load_dicom_series(folder):
    import pydicom
    slices = [pydicom.dcmread(str(f)) for f in sorted(Path(folder).iterdir()) if f.is_file()]
    row, col = (np.array(slices[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    normal = np.cross(row, col)
    # Slice order along the normal, not file order.
    slices.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    origin = np.array(slices[0].ImagePositionPatient, dtype=float)
    positions = np.array([np.dot(normal, np.array(d.ImagePositionPatient, dtype=float)) for d in slices])
    steps = np.diff(positions)
    if not np.allclose(steps, steps[0], atol=1e-3):
        raise ValueError(f"{folder}: uneven slice spacing")
    dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
    # pixel_array[row, col]: i = column (along `row` direction cosine), j = row.
    hu = np.stack([d.pixel_array.T.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for d in slices], axis=-1)
    affine = np.eye(4)
    affine[:3, 0] = row * dc
    affine[:3, 1] = col * dr
    affine[:3, 2] = normal * steps[0]
    affine[:3, 3] = origin
    return hu, affine


def to_voxel(affine, p_mm):
    """Nearest voxel index of LPS mm points (..., 3)."""
    inv = np.linalg.inv(affine)
    p = np.asarray(p_mm, dtype=float)
    return np.rint(p @ inv[:3, :3].T + inv[:3, 3]).astype(int)


def to_mm(affine, ijk):
    ijk = np.asarray(ijk, dtype=float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]
