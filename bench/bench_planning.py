"""Planning on the real thorax series (cases/thorax_ct_lung_lesion, 512x512x141): wall time and
peak memory of `needle_nav plan --no-network` (CT-derived layers, six exact distance transforms,
3000 paths judged), against the peer part scipy can do: the exact Euclidean distance transform of
the same written layers (scipy.ndimage.distance_transform_edt, anisotropic sampling) and nibabel
reading them. Prints the figures; asserts nothing about speed."""
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "cases" / "thorax_ct_lung_lesion"


def main():
    out = Path(tempfile.mkdtemp(prefix="bench_plan_"))
    cmd = [str(ROOT / "target/release/needle_nav"), "plan", "--case", str(CASE), "--no-network",
           "--approach", "0,1,0", "--max-angle-deg", "60", "--out", str(out)]
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if run.returncode not in (0, 3):
        sys.exit(f"needle_nav plan failed ({run.returncode}): {run.stderr[-2000:]}")
    plan = json.loads((out / "plan.json").read_text())
    started = time.perf_counter()
    maps = 0
    for layer in plan["layers"]:
        img = nib.load(out / layer["path"])
        mask = np.asarray(img.dataobj) > 0
        if mask.any():
            spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
            ndimage.distance_transform_edt(~mask, sampling=spacing)
            maps += 1
    scipy_s = time.perf_counter() - started
    planning_s = plan["timing_s"]["planning"]
    print(f"needle_nav plan (thorax, no network): {wall:.1f} s wall, planning {planning_s:.1f} s, "
          f"peak RSS {peak_mib:.0f} MiB; status {plan['status']}")
    print(f"scipy distance transforms of the same {maps} non-empty layers (+ nibabel reads): {scipy_s:.1f} s")
    print(f"ratio: the whole Rust planning (layers + transforms + 3000 paths) takes {planning_s / scipy_s:.2f}x "
          f"the time scipy needs for the transforms alone")


if __name__ == "__main__":
    main()
