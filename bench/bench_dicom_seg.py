"""Benchmark: writing the vessel labels of the real 512x512x141 thorax series as a DICOM SEG, in one run:
  1. needle_nav's writer (Rust, dicom-object): `needle_nav nifti-to-seg`, the write itself as it
     prints it, and the whole command (process start, series headers matched, NIfTI read, write);
  2. highdicom (the reference Python implementation): hd.seg.Segmentation(...) + save_as, from the
     same labels and the source slices already read by pydicom (reading them is not counted).
Both leave out empty frames (highdicom's default). The labels are a `needle_nav segment` run's,
made first (not timed). Prints figures and the ratio; asserts nothing about time."""
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release")) / "needle_nav"
SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", ROOT.parent / "shared" / "data"))
SERIES = SHARED / "thorax_ct_dicom"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
CLASSES = [("artery", codes.SCT.Artery), ("vein", codes.SCT.Vein), ("aorta", codes.SCT.Aorta)]


def highdicom_write(labels, datasets, path):
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="vessel_unet", version="bench", family=codes.cid7162.ArtificialIntelligence),
        )
        for n, (name, code) in enumerate(CLASSES, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench", manufacturer_model_name="bench",
        software_versions=hd.__version__, device_serial_number="1")
    seg.save_as(path)
    return int(seg.NumberOfFrames)


def main():
    if not SERIES.is_dir():
        print(f"skipped: {SERIES} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([str(EXE), "segment", str(SERIES), "--out", str(tmp / "run"), "--no-surface",
                        "--scheduling", "normal"], check=True, capture_output=True, text=True)
        nifti = tmp / "run" / "vessel_labels.nii.gz"
        labels = np.asarray(nib.load(nifti).dataobj).astype(np.uint8)
        datasets = [pydicom.dcmread(p) for p in sorted(SERIES.iterdir())]
        datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # axial: the volume's k order
        stack = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))
        rust_write, rust_command, hd_write = [], [], []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            r = subprocess.run([str(EXE), "nifti-to-seg", str(nifti), "--series", str(SERIES), "--out",
                                str(tmp / "ours.dcm")], check=True, capture_output=True, text=True)
            rust_command.append(time.perf_counter() - t)
            rust_write.append(float(re.search(r"SEG write ([0-9.]+) s", r.stdout).group(1)))
            t = time.perf_counter()
            frames = highdicom_write(stack, datasets, tmp / "hd.dcm")
            hd_write.append(time.perf_counter() - t)
        ours = pydicom.dcmread(tmp / "ours.dcm", stop_before_pixels=True)
        counts = [int((labels == c).sum()) for c in (1, 2, 3)]
        print(f"labels: 512x512x141, voxels artery/vein/aorta {counts}; frames ours {ours.NumberOfFrames}, "
              f"highdicom {frames}; files {(tmp / 'ours.dcm').stat().st_size / 1e6:.2f} MB / "
              f"{(tmp / 'hd.dcm').stat().st_size / 1e6:.2f} MB; {ROUNDS} rounds, median:")
        med = lambda v: float(np.median(v))  # noqa: E731
        print(f"  needle_nav writer (in process)        {med(rust_write) * 1000:8.1f} ms")
        print(f"  needle_nav nifti-to-seg (whole cmd)    {med(rust_command) * 1000:8.1f} ms")
        print(f"  highdicom Segmentation + save_as       {med(hd_write) * 1000:8.1f} ms")
        print(f"  ratio highdicom / needle_nav writer    {med(hd_write) / med(rust_write):8.1f}x")
        print(f"  ratio highdicom / whole command        {med(hd_write) / med(rust_command):8.1f}x")


if __name__ == "__main__":
    main()
