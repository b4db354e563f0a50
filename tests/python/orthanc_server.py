"""A real PACS for the tests: Debian's Orthanc with its own configuration in a temporary folder.

Ports are picked free at run time; HTTP answers on the loopback only (RemoteAccessAllowed false).
Orthanc 1.10 has no bind address for its DICOM port, so the DICOM side is closed to everyone but
our AE title from 127.0.0.1: every DicomAlwaysAllow* is false and DicomCheckModalityHost is on.
"""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom

ORTHANC = os.environ.get("NEEDLE_NAV_ORTHANC", "/usr/sbin/Orthanc")
OUR_AE = "NEEDLE_NAV"
ORTHANC_AE = "ORTHANC"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available():
    return shutil.which(ORTHANC) is not None or Path(ORTHANC).is_file()


class Orthanc:
    def __init__(self, folder, check_called_aet=True, tls=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.check_called_aet = check_called_aet
        self.tls = tls  # dict with certificate, private_key, trusted (PEM paths), or None
        self.process = None
        self.log_path = self.folder / "orthanc.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def config(self):
        c = {
            "Name": "needle_nav_test_pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomCheckModalityHost": True,
            # Our AE as a known modality: C-GET (and everything else here) is allowed to it only.
            # Its port is unused (C-GET answers on our own association).
            "DicomModalities": {"needle_nav": [OUR_AE, "127.0.0.1", 104]},
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "Plugins": [],
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
        }
        if self.tls:
            c.update({
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": self.tls["certificate"],
                "DicomTlsPrivateKey": self.tls["private_key"],
                "DicomTlsTrustedCertificates": self.tls["trusted"],
                "DicomTlsRemoteCertificateRequired": self.tls.get("client_certificate_required", True),
            })
        return c

    def start(self, timeout=30):
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system")
                if self.dicom_listening():
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s:\n{self.log()}")

    def dicom_listening(self):
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def request(self, method, path, data=None, content_type=None):
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body and body[:1] in (b"{", b"[") else body

    def get(self, path):
        return self.request("GET", path)

    def upload(self, path):
        """POST one DICOM file to /instances; Orthanc's answer (ID, Status, ParentSeries, ...)."""
        return self.request("POST", "/instances", Path(path).read_bytes(), "application/dicom")

    def find(self, level, query):
        body = json.dumps({"Level": level, "Query": query, "Expand": True}).encode()
        return self.request("POST", "/tools/find", body, "application/json")

    def instance_file(self, orthanc_id):
        return self.get(f"/instances/{orthanc_id}/file")


def with_uids(ds):
    """The identifiers the shipped series lacks, derived from what it has (same every run)."""
    frame = str(ds.FrameOfReferenceUID)
    ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[frame, "needle_nav test study"])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[frame, "needle_nav test series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
