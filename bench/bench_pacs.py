#!/usr/bin/env python3
"""PACS round trips against a local Orthanc (Debian), needle_nav's client against pynetdicom in the
same run: C-ECHO, C-GET of the 20-slice JPEG 2000 series (with the UIDs it lacks filled, as in
tests/python/test_pacs.py), C-STORE of one image. Prints medians and the ratio; asserts nothing.

    python bench/bench_pacs.py [--rounds 5]      (NEEDLE_NAV_BIN_DIR: where needle_nav is; default target/release)
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from orthanc_server import ORTHANC_AE, OUR_AE, Orthanc, with_uids  # noqa: E402

import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE, build_role, evt  # noqa: E402
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification  # noqa: E402

SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", ROOT.parent / "shared" / "data"))
SERIES = SHARED / "abdomen_ct_vessels" / "example_ct_dicom_j2k"
BIN = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release")) / "needle_nav"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


def timed(f, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nn_bench_pacs_"))
    orthanc = Orthanc(tmp / "orthanc").start()
    try:
        (tmp / "series").mkdir()
        files = []
        for p in sorted(SERIES.iterdir()):
            ds = pydicom.dcmread(p)
            with_uids(ds)
            out = tmp / "series" / p.name
            ds.save_as(out, enforce_file_format=True)
            orthanc.upload(out)
            files.append(out)
        study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        conn = ["--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--called-ae-title", ORTHANC_AE,
                "--calling-ae-title", OUR_AE]

        def ours(*args):
            subprocess.run([str(BIN), "pacs", *args, *conn], check=True, capture_output=True)

        def pynetdicom_assoc(contexts, roles=(), handlers=()):
            ae = AE(ae_title=OUR_AE)
            for ctx in contexts:
                ae.add_requested_context(*ctx)
            assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=ORTHANC_AE, ext_neg=list(roles),
                                 evt_handlers=list(handlers))
            assert assoc.is_established
            return assoc

        def peer_echo():
            assoc = pynetdicom_assoc([(Verification,)])
            assert assoc.send_c_echo().Status == 0
            assoc.release()

        def peer_get():
            target = tmp / "peer_get"
            target.mkdir(exist_ok=True)

            def store(event):
                ds = event.dataset
                ds.file_meta = event.file_meta
                ds.save_as(target / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
                return 0
            assoc = pynetdicom_assoc([(StudyRootQueryRetrieveInformationModelGet,), (CTImageStorage, [J2K_LOSSLESS])],
                                     [build_role(CTImageStorage, scp_role=True)], [(evt.EVT_C_STORE, store)])
            q = Dataset()
            q.QueryRetrieveLevel, q.StudyInstanceUID, q.SeriesInstanceUID = "SERIES", study, series
            for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
                pass
            assert status.Status == 0
            assoc.release()

        def peer_store():
            assoc = pynetdicom_assoc([(CTImageStorage, [J2K_LOSSLESS])])
            assert assoc.send_c_store(pydicom.dcmread(files[0])).Status == 0
            assoc.release()

        # Ours includes starting the needle_nav process (a few ms); measured alone below.
        rows = [
            ("C-ECHO", lambda: ours("echo"), peer_echo),
            ("C-GET 20 slices (C-FIND first, ours)", lambda: ours("get", "--study", study, "--series", series,
                                                                 "--out", str(tmp / "ours_get")), peer_get),
            ("C-STORE 1 slice", lambda: ours("store", str(files[0])), peer_store),
        ]
        startup = timed(lambda: subprocess.run([str(BIN), "--version"], check=True, capture_output=True), a.rounds)
        print(f"PACS round trips against Orthanc {orthanc.get('/system')['Version']} on the loopback, median of {a.rounds}")
        print(f"needle_nav process start alone: {startup * 1000:.1f} ms (included in the needle_nav column)")
        print("| operation | needle_nav pacs [ms] | pynetdicom [ms] | ratio |")
        print("|---|---|---|---|")
        for name, mine, peer in rows:
            m, p = timed(mine, a.rounds), timed(peer, a.rounds)
            print(f"| {name} | {m * 1000:.1f} | {p * 1000:.1f} | {m / p:.2f} |")
    finally:
        orthanc.stop()


if __name__ == "__main__":
    main()
