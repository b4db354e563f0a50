"""Benchmark: vessel segmentation of the real 512x512x141 thorax DICOM series, end to end
(load -> labels written), three ways in one run:
  1. needle_nav segment (Rust, ort, 2 intra-op threads), stage times from its summary JSON;
  2. the same model and steps in Python: pydicom + numpy/scipy + onnxruntime (2 threads) + nibabel
     (tests/python/vessel_peer.py);
  3. the classic threshold + region-growing extraction the network replaces (needle_nav segment --classic).
Prints figures and ratios, and how far 1 and 2 agree; asserts nothing about time."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
import vessel_peer  # noqa: E402

EXE = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release")) / "needle_nav"
SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", ROOT.parent / "shared" / "data"))
SERIES = SHARED / "thorax_ct_dicom"
MODEL = ROOT / "models" / "vessel_unet.onnx"


def main():
    if not SERIES.is_dir():
        print(f"skipped: {SERIES} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. Rust
        t = time.perf_counter()
        run = subprocess.run([str(EXE), "segment", str(SERIES), "--out", str(tmp / "rust"), "--threads", "2"],
                             check=True, capture_output=True, text=True)
        rust_wall = time.perf_counter() - t
        summary = json.loads((tmp / "rust" / "vessel_summary.json").read_text())
        rust_stages = {s["stage"]: s["seconds"] for s in summary["stages"]}

        # 2. Python peer, same model
        t0 = time.perf_counter()
        hu, affine = vessel_peer.load_dicom_series(SERIES)
        py_stages = {"load": time.perf_counter() - t0}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
        times = {}
        labels, contrast = vessel_peer.segment(hu, affine, session, times=times)
        t = time.perf_counter()
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        nib.save(nib.Nifti1Image(labels, ras), str(tmp / "peer_labels.nii.gz"))
        py_stages.update({k: v for k, v in times.items() if k != "patches"})
        py_stages["write"] = time.perf_counter() - t
        py_wall = time.perf_counter() - t0

        # 3. Classic
        t = time.perf_counter()
        subprocess.run([str(EXE), "segment", str(SERIES), "--out", str(tmp / "classic"), "--classic"],
                       check=True, capture_output=True, text=True)
        classic_wall = time.perf_counter() - t

        rust_labels = np.asarray(nib.load(str(tmp / "rust" / "vessel_labels.nii.gz")).dataobj)
        agree = float((rust_labels == labels).mean())
        classic = np.asarray(nib.load(str(tmp / "classic" / "vessel_mask_classic.nii.gz")).dataobj)

    print(f"input: {SERIES.name} {hu.shape[0]}x{hu.shape[1]}x{hu.shape[2]}; model grid {summary['model_grid_dims']}, "
          f"{summary['patches']} patches of {vessel_peer.model_info(session)['patch_size_zyx']} (z,y,x), "
          f"overlap {summary['patch_overlap']}")
    print(f"{'stage':<16}{'Rust (ort)':>12}{'Python (onnxruntime)':>22}")
    for stage in ["load", "resample", "inference", "refinement", "resample back", "write"]:
        print(f"{stage:<16}{rust_stages.get(stage, float('nan')):>11.2f}s{py_stages.get(stage, float('nan')):>21.2f}s")
    print(f"{'end to end':<16}{rust_wall:>11.2f}s{py_wall:>21.2f}s")
    print(f"Python / Rust end to end: {py_wall / rust_wall:.2f}x; "
          f"inference {py_stages['inference'] / rust_stages['inference']:.2f}x; "
          f"non-network stages {(py_wall - py_stages['inference']) / (rust_wall - rust_stages['inference']):.2f}x")
    print(f"classic threshold + region growing (Rust, end to end): {classic_wall:.2f} s "
          f"= {rust_wall / classic_wall:.1f}x faster than the network pipeline; "
          f"{int(classic.sum())} vessel voxels (no classes) vs {int((rust_labels > 0).sum())} from the network")
    print(f"Rust and Python labels agree on {100 * agree:.3f}% of voxels; "
          f"volumes ml {dict(zip(summary['class_names'][1:], [round(v, 1) for v in summary['volumes_ml'][1:]]))}; "
          f"phase detected: {'contrast' if summary['contrast_enhanced'] else 'plain'}")


if __name__ == "__main__":
    main()
