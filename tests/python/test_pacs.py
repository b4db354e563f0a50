"""A PACS in and out, against a real PACS: Debian's Orthanc, started here on free ports with its own
configuration and storage (orthanc_server.py), stopped after.

A real CT series is uploaded through Orthanc's REST API; `needle_nav pacs` and the SegmentVessels
service (via rclpy) retrieve it by study and series UID (C-FIND, C-GET); the DICOM SEG the service
stores back (C-STORE) is found in Orthanc over REST and read with highdicom. Orthanc stopped, a
series that is not there and a refused association each give a clear error on the response.

The series is abdomen_ct_vessels/example_ct_dicom_j2k (20 slices, JPEG 2000 lossless). As shipped it
is anonymised down to empty StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID and SOPClassUID in
its data sets (the SOP class and instance UIDs survive only in the file meta), and Orthanc refuses
such files ("missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID":
test_orthanc_refuses_the_series_as_shipped); no PACS can file it. (With only those three filled,
Orthanc files the images as SOP class "OT" and then cannot send them by C-GET.) The tests upload a
copy with the four UIDs filled: SOP class and instance UIDs from the file meta, study and series
UIDs derived from its FrameOfReferenceUID (pydicom's generate_uid with fixed entropy, so the same
every run). Nothing else in the files changes.
"""
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import executable, wait_until
from orthanc_server import ORTHANC_AE, OUR_AE, Orthanc, available, with_uids

pytestmark = pytest.mark.skipif(not available(), reason="Debian's orthanc is not installed (scripts/setup.sh installs it)")

SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SERIES_DIR = SHARED / "abdomen_ct_vessels" / "example_ct_dicom_j2k"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PATIENCE_S = 600


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def series(orthanc, tmp_path_factory):
    """The j2k series with a SeriesInstanceUID, uploaded: (study uid, series uid, {sop uid: file})."""
    folder = tmp_path_factory.mktemp("series_with_uid")
    files = {}
    study = series_uid = None
    for path in sorted(SERIES_DIR.iterdir()):
        ds = pydicom.dcmread(path)
        with_uids(ds)
        study, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        out = folder / path.name
        ds.save_as(out, enforce_file_format=True)
        answer = orthanc.upload(out)
        assert answer["Status"] in ("Success", "AlreadyStored"), answer
        files[str(ds.SOPInstanceUID)] = out
    assert len(files) == 20
    return study, series_uid, files


def connection(orthanc, called=ORTHANC_AE):
    return ["--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--called-ae-title", called,
            "--calling-ae-title", OUR_AE, "--timeout-s", "20"]


def pacs_cli(*args, timeout=120):
    return subprocess.run([executable("needle_nav"), "pacs", *args], capture_output=True, text=True, timeout=timeout)


def pacs_parameters(orthanc, node=None, called=ORTHANC_AE, port=None):
    prefix = f"{node}:" if node else ""
    values = {"host": "127.0.0.1", "port": port or orthanc.dicom_port, "called_ae_title": called,
              "calling_ae_title": OUR_AE, "timeout_s": 30.0, "connect_timeout_s": 3.0}
    args = []
    for key, value in values.items():
        args += ["-p", f"{prefix}pacs.{key}:={value}"]
    return args


def test_orthanc_refuses_the_series_as_shipped(orthanc):
    """Why the tests add a SeriesInstanceUID: Orthanc (like any PACS) cannot file an image without one."""
    import urllib.error
    first = sorted(SERIES_DIR.iterdir())[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    assert ds.StudyInstanceUID == ds.SeriesInstanceUID == ds.SOPInstanceUID == ds.SOPClassUID == ""
    with pytest.raises(urllib.error.HTTPError) as refused:
        orthanc.upload(first)
    assert refused.value.code == 400
    assert b"missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID" in refused.value.read()


def test_cli_echo_find_get_against_orthanc(orthanc, series, tmp_path):
    study, series_uid, files = series
    r = pacs_cli("echo", *connection(orthanc))
    assert r.returncode == 0 and "success" in r.stdout, r.stderr
    r = pacs_cli("find", "--study", study, *connection(orthanc))
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.strip().splitlines()[1:]]
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == [(study, series_uid, "CT", "20")]
    out = tmp_path / "got"
    r = pacs_cli("get", "--study", study, "--series", series_uid, "--out", str(out), *connection(orthanc))
    assert r.returncode == 0, r.stderr
    got = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in out.iterdir()}
    assert set(got) == set(files)
    # The pixels came through unchanged: byte for byte when Orthanc sent the stored JPEG 2000,
    # else the decoded values against Orthanc's own decoding of what we uploaded.
    for sop, path in got.items():
        mine, uploaded = pydicom.dcmread(path), pydicom.dcmread(files[sop])
        assert mine.SeriesInstanceUID == series_uid and mine.StudyInstanceUID == study
        if mine.file_meta.TransferSyntaxUID == uploaded.file_meta.TransferSyntaxUID:
            assert mine.PixelData == uploaded.PixelData
        else:
            orthanc_id = orthanc.find("Instance", {"SOPInstanceUID": sop})[0]["ID"]
            reference = np.load(io.BytesIO(orthanc.get(f"/instances/{orthanc_id}/numpy")))
            assert np.array_equal(mine.pixel_array, reference.reshape(mine.pixel_array.shape))
    # Store the first file back (already there: Orthanc answers success and keeps one copy).
    r = pacs_cli("store", str(next(iter(files.values()))), *connection(orthanc))
    assert r.returncode == 0 and "stored" in r.stdout, r.stderr


def test_cli_names_what_went_wrong(orthanc, series, tmp_path):
    study, series_uid, _ = series
    r = pacs_cli("echo", *connection(orthanc, called="WRONG_AE"))
    assert r.returncode == 1
    assert "rejected the association" in r.stderr and "called AE title not recognized" in r.stderr, r.stderr
    missing = pydicom.uid.generate_uid(entropy_srcs=["no such series"])
    r = pacs_cli("get", "--study", study, "--series", missing, "--out", str(tmp_path / "x"), *connection(orthanc))
    assert r.returncode == 1 and f"series {missing} not found" in r.stderr, r.stderr
    other_study = pydicom.uid.generate_uid(entropy_srcs=["another study"])
    r = pacs_cli("get", "--study", other_study, "--series", series_uid, "--out", str(tmp_path / "y"),
                 *connection(orthanc))
    assert r.returncode == 1 and f"is in study {study}" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def segmentation_client(processes, peer, *args):
    from needle_nav_msgs.srv import SegmentVessels
    processes.start("vessel_segmentation", "--ros-args", *args)
    client = peer.create_client(SegmentVessels, "/needle_nav/segment_vessels")
    wait_until(client.service_is_ready, 30, peer, "the segment_vessels service")

    def call(timeout=PATIENCE_S, **fields):
        future = client.call_async(SegmentVessels.Request(**fields))
        wait_until(future.done, timeout, peer, "a SegmentVessels response")
        return future.result()
    return call


def test_segment_vessels_by_study_and_series_uid(processes, peer, orthanc, series, tmp_path):
    import nibabel as nib
    study, series_uid, files = series
    call = segmentation_client(processes, peer, *pacs_parameters(orthanc))
    r = call(study_instance_uid=study, series_instance_uid=series_uid, output_dir=str(tmp_path), hu_refinement=True)
    assert r.success, r.message
    retrieved = tmp_path / "pacs_input" / series_uid
    assert sorted(p.name for p in retrieved.iterdir()) == sorted(f"{sop}.dcm" for sop in files)
    assert r.stage_names[0] == "pacs_retrieve" and r.stored_seg_to == ""
    assert str(retrieved) in r.message
    # The labels are on the retrieved series' grid: 512 x 512 x 20.
    assert nib.load(r.label_map_path).shape == (512, 512, 20)
    print("stage seconds:", dict(zip(r.stage_names, (round(t, 2) for t in r.stage_seconds))))


def test_the_seg_is_stored_back_to_the_pacs_and_read_by_highdicom(processes, peer, orthanc, series, tmp_path):
    import highdicom
    study, series_uid, files = series
    call = segmentation_client(processes, peer, *pacs_parameters(orthanc))
    r = call(study_instance_uid=study, series_instance_uid=series_uid, store_seg_to_pacs=True,
             output_dir=str(tmp_path), hu_refinement=True)
    assert r.success, r.message
    assert "pacs_retrieve" in r.stage_names and "pacs_store" in r.stage_names
    print("stage seconds:", dict(zip(r.stage_names, (round(t, 2) for t in r.stage_seconds))))
    assert r.stored_seg_to == f"{ORTHANC_AE}@127.0.0.1:{orthanc.dicom_port}"
    # The SEG, as Orthanc holds it, read back by highdicom: it references the uploaded series.
    found = orthanc.find("Instance", {"SOPInstanceUID": r.dicom_seg_sop_instance_uid})
    assert len(found) == 1, found
    path = tmp_path / "from_orthanc_seg.dcm"
    path.write_bytes(orthanc.instance_file(found[0]["ID"]))
    seg = highdicom.seg.segread(path)
    assert seg.SOPClassUID == SEG_STORAGE and seg.SOPInstanceUID == r.dicom_seg_sop_instance_uid
    assert seg.StudyInstanceUID == study
    # (study, series, SOP instance) of each source image the SEG names.
    referenced = seg.get_source_image_uids()
    assert referenced and {(st, se) for st, se, _ in referenced} == {(study, series_uid)}
    assert {sop for _, _, sop in referenced} <= set(files)
    # The SEG is filed in the same study as its CT.
    seg_study = orthanc.get(f"/instances/{found[0]['ID']}/study")
    assert seg_study["MainDicomTags"]["StudyInstanceUID"] == study


def test_pacs_failures_are_clear_errors_on_the_service_response(processes, peer, orthanc, series, tmp_path):
    study, series_uid, _ = series
    call = segmentation_client(processes, peer, *pacs_parameters(orthanc))
    missing = pydicom.uid.generate_uid(entropy_srcs=["no such series"])
    r = call(study_instance_uid=study, series_instance_uid=missing, output_dir=str(tmp_path / "a"))
    assert not r.success and f"series {missing} not found in the PACS" in r.message, r.message
    other_study = pydicom.uid.generate_uid(entropy_srcs=["another study"])
    r = call(study_instance_uid=other_study, series_instance_uid=series_uid, output_dir=str(tmp_path / "b"))
    assert not r.success and f"is in study {study}" in r.message, r.message
    r = call(input_path=str(SERIES_DIR), study_instance_uid=study, series_instance_uid=series_uid,
             output_dir=str(tmp_path / "c"))
    assert not r.success and "not both" in r.message, r.message


def test_a_refused_association_is_a_clear_error(processes, peer, orthanc, series, tmp_path):
    study, series_uid, _ = series
    call = segmentation_client(processes, peer, *pacs_parameters(orthanc, called="WRONG_AE"))
    r = call(study_instance_uid=study, series_instance_uid=series_uid, output_dir=str(tmp_path))
    assert not r.success
    assert "rejected the association" in r.message and "called AE title not recognized" in r.message, r.message
    assert "pacs.called_ae_title" in r.message


def test_a_pacs_that_is_down_is_a_clear_error(processes, peer, series, tmp_path):
    study, series_uid, _ = series
    down = Orthanc(tmp_path / "down").start()
    port = down.dicom_port
    down.stop()
    call = segmentation_client(processes, peer, *pacs_parameters(down, port=port))
    r = call(study_instance_uid=study, series_instance_uid=series_uid, output_dir=str(tmp_path / "out"), timeout=60)
    assert not r.success
    assert "PACS unreachable" in r.message and "connection refused" in r.message and str(port) in r.message, r.message


def test_the_planner_reports_a_pacs_failure_as_no_ct(processes, peer, orthanc, series, tmp_path):
    from needle_nav_msgs.msg import NeedlePlan
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    study, _, _ = series
    missing = pydicom.uid.generate_uid(entropy_srcs=["no such series"])
    plans = []
    peer.create_subscription(NeedlePlan, "/needle_nav/plan", plans.append, latched)
    processes.start("trajectory_planner", "--ros-args", "-p", f"ct_study_instance_uid:={study}",
                    "-p", f"ct_series_instance_uid:={missing}", "-p", f"output_dir:={tmp_path}",
                    *pacs_parameters(orthanc))
    wait_until(lambda: plans and plans[-1].status != NeedlePlan.STATUS_PENDING, 60, peer, "the planner's verdict")
    p = plans[-1]
    assert p.status == NeedlePlan.STATUS_NO_CT
    assert p.status_message.startswith("planning CT from the PACS: series") and "not found" in p.status_message


def make_certificates(folder):
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, by openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=needle_nav test CA")
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")]:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=needle_nav test {name}")
        (folder / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    # A second CA that signed nothing here: the PACS's certificate must not pass with it.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
            "-days", "2", "-subj", "/CN=another CA")
    return folder


def test_dicom_over_tls_with_orthanc(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    server = Orthanc(tmp_path / "tls_orthanc", tls={
        "certificate": str(certs / "server.pem"), "private_key": str(certs / "server.key"),
        "trusted": str(certs / "ca.pem")}).start()
    try:
        plain = connection(server)
        tls = [*plain, "--tls-ca", str(certs / "ca.pem")]
        client = ["--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client.key")]
        r = pacs_cli("echo", *tls, *client)
        assert r.returncode == 0 and "(TLS): success" in r.stdout, r.stderr + server.log()
        # Without TLS, to a TLS-only PACS: refused, and the message says TLS.
        r = pacs_cli("echo", *plain)
        assert r.returncode == 1 and "TLS" in r.stderr, r.stderr
        # A PACS certificate from an authority we do not trust: refused by us.
        r = pacs_cli("echo", *plain, "--tls-ca", str(certs / "other.pem"), *client)
        assert r.returncode == 1 and "TLS with the PACS" in r.stderr and "certificate" in r.stderr.lower(), r.stderr
        # No client certificate, while Orthanc requires one: refused by the PACS.
        r = pacs_cli("echo", *tls)
        assert r.returncode == 1 and "requires a client certificate" in r.stderr, r.stderr
    finally:
        server.stop()


def test_the_planner_plans_on_a_ct_from_the_pacs(processes, peer, orthanc, series, tmp_path):
    """Retrieved by the planner, segmented by the service from that folder, planned: any verdict of the
    planner itself (a path, or a refusal by its rules), never "no CT" or a failed segmentation."""
    from needle_nav_msgs.msg import NeedlePlan
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    study, series_uid, files = series
    first = pydicom.dcmread(next(iter(files.values())), stop_before_pixels=True)
    # The image's centre, in the middle of the 20 slices (LPS, metres).
    x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
    spacing = float(first.PixelSpacing[0])
    target = [(x0 + 256 * spacing) / 1000, (y0 + 256 * spacing) / 1000, (z0 - 19.0) / 1000]
    plans = []
    peer.create_subscription(NeedlePlan, "/needle_nav/plan", plans.append, latched)
    processes.start("needle_nav_stack", "--only", "vessel_segmentation,trajectory_planner", "--ros-args",
                    "-p", f"trajectory_planner:ct_study_instance_uid:={study}",
                    "-p", f"trajectory_planner:ct_series_instance_uid:={series_uid}",
                    "-p", f"trajectory_planner:target_point_m:=[{target[0]}, {target[1]}, {target[2]}]",
                    "-p", f"trajectory_planner:output_dir:={tmp_path}",
                    *pacs_parameters(orthanc, node="trajectory_planner"))
    wait_until(lambda: plans and plans[-1].status != NeedlePlan.STATUS_PENDING, PATIENCE_S, peer, "a finished plan")
    p = plans[-1]
    assert p.status not in (NeedlePlan.STATUS_NO_CT, NeedlePlan.STATUS_SEGMENTATION_FAILED), p.status_message
    assert p.ct_path == str(tmp_path / "pacs_input" / series_uid)
    assert len(list(Path(p.ct_path).iterdir())) == 20
