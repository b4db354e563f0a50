"""Benchmark: generate a 512x512x300 digital-patient case (render, DICOM series, NIfTI) with
needle_nav, and write the same volume as a DICOM series with pydicom (peer) in the same run.
Prints the figures; asserts nothing about time."""
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release")) / "needle_nav"
DIMS, SPACING = "512x512x300", "0.75x0.75x1"


def pydicom_write(volume_hu, affine, out):
    """The same series as needle_nav writes: one CT slice per file, stored = HU + 1024."""
    out.mkdir(parents=True)
    nx, ny, nz = volume_hu.shape
    dx, dy, dz = (abs(affine[i, i]) for i in range(3))
    ox, oy, oz = -affine[0, 3], -affine[1, 3], affine[2, 3]
    series, study, frame = (generate_uid(prefix=None) for _ in range(3))  # 2.25 UIDs leave room for .k
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = f"{series}.{k + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Digital^Patient", "NN"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [ox, oy, oz + k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (volume_hu[:, :, k].T.astype(np.int32) + 1024).clip(0, 65535).astype("<u2").tobytes()
        ds.save_as(out / f"IM_{k + 1:05d}.dcm", enforce_file_format=True)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        run = subprocess.run([str(EXE), "phantom", "--out", str(tmp / "case"), "--dims", DIMS, "--spacing", SPACING],
                             check=True, capture_output=True, text=True)
        rust_wall = time.perf_counter() - t
        stages = dict(re.findall(r"(render|DICOM|NIfTI|total) ([0-9.]+) s", run.stdout))
        img = nib.load(tmp / "case" / "ct.nii.gz")
        volume = np.asarray(img.dataobj)
        t = time.perf_counter()
        pydicom_write(volume, img.affine, tmp / "pydicom")
        py_dicom = time.perf_counter() - t
        rust_dicom = float(stages["DICOM"])
        size_mb = sum(f.stat().st_size for f in (tmp / "case" / "ct").iterdir()) / 1e6
        print(f"digital patient {DIMS} voxels at {SPACING} mm ({volume.size / 1e6:.1f} M voxels, {size_mb:.0f} MB DICOM)")
        print(f"  needle_nav render (anatomy, {os.cpu_count()} threads)  {float(stages['render']):7.2f} s")
        print(f"  needle_nav DICOM series write             {rust_dicom:7.2f} s")
        print(f"  needle_nav NIfTI write (4 volumes, gzip)  {float(stages['NIfTI']):7.2f} s")
        print(f"  needle_nav whole case                     {float(stages['total']):7.2f} s  (process wall {rust_wall:.2f} s)")
        print(f"  pydicom DICOM series write (peer)         {py_dicom:7.2f} s")
        print(f"  ratio pydicom / needle_nav DICOM write    {py_dicom / rust_dicom:7.1f} x")


if __name__ == "__main__":
    sys.exit(main())
