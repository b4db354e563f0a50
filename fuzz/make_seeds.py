#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/), small and from the
repository's own material: a 16x16x16 phantom written by `needle_nav phantom`, config/*.yaml,
a tiny rosbag2 MCAP bag written with rosbags (the peer implementation), hand-made requests, DICOM SEGs
of the phantom's labels (ours and highdicom's), OpenIGTLink messages packed by pyigtl, DIMSE messages encoded by pydicom.

Usage: python fuzz/make_seeds.py PATH_TO_needle_nav_BINARY   (from the repository root, in the
project's venv for rosbags). Deterministic: run again, same seeds."""
import gzip
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
SEP = b"\n--NNFUZZ-FILE--\n"


def put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def phantom(binary: str, tmp: Path) -> Path:
    case = tmp / "case"
    subprocess.run([binary, "phantom", "--out", str(case), "--dims", "16x16x16", "--spacing", "10x10x10",
                    "--phases", "2", "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
    return case


def dicom_seeds(case: Path) -> None:
    slices = sorted((case / "ct").iterdir())
    put("dicom_series", f"series_{len(slices)}_slices", SEP.join(p.read_bytes() for p in slices))
    put("dicom_series", "two_slices", SEP.join(p.read_bytes() for p in slices[:2]))
    put("dicom_series", "one_slice", slices[0].read_bytes())


def nifti_seeds(case: Path) -> None:
    for p in sorted(case.glob("*.nii.gz")):
        raw = gzip.decompress(p.read_bytes())
        if len(raw) <= 64 * 1024:
            put("nifti", p.name, p.read_bytes())
            put("nifti", p.name[:-3], raw)


def case_seeds(case: Path) -> None:
    text = (case / "case.json").read_text()
    put("case_file", "phantom_case.json", text.encode())
    doc = json.loads(text)
    put("case_file", "minimal.json", json.dumps({"reference": {"lesion_centre_mm": [1.0, 2.0, 3.0]},
                                                  "preset_entry_mm": [0.0, 0.0, 0.0]}).encode())
    doc.pop("phases", None)
    put("case_file", "no_phases.json", json.dumps(doc).encode())


def config_seeds() -> None:
    for p in sorted((ROOT / "config").glob("*.yaml")):
        put("param_yaml", p.name, p.read_bytes())
    put("param_yaml", "wildcard_and_namespace.yaml",
        b"/**:\n  ros__parameters:\n    frame_id: world\n/robot/marker_tracker:\n  ros__parameters:\n"
        b"    rate_hz: 250.0\n    region: {min_x: 1.5}\n")


def bag_seed(tmp: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED) if hasattr(Stores, "ROS2_KILTED") else get_typestore(Stores.LATEST)
    String = store.types["std_msgs/msg/String"]
    bag = tmp / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/chatter", String.__msgtype__, typestore=store)
        for i in range(3):
            w.write(conn, 1_000_000_000 + i * 100_000_000, store.serialize_cdr(String(data=f"m{i}"), String.__msgtype__))
    meta = (bag / "metadata.yaml").read_text()
    mcap_name = next(bag.glob("*.mcap")).name
    meta = meta.replace(mcap_name, "bag_0.mcap")
    mcap = next(bag.glob("*.mcap")).read_bytes()
    put("bag", "rosbags_mcap_3_messages", meta.encode() + SEP + mcap)
    put("bag", "metadata_only", meta.encode())


def register_seeds() -> None:
    pts = [[0, 0, 0], [60, 0, 0], [0, 50, 0], [0, 0, 40], [30, 30, 10]]
    moved = [[p[1] + 5, -p[0] + 2, p[2] - 1] for p in pts]
    put("register_json", "five_markers.json", json.dumps({"moving": pts, "fixed": moved, "targets": [[10, 10, 10]]}).encode())
    put("register_json", "weights_config.json", json.dumps({
        "moving": pts, "fixed": moved, "weights": [1, 1, 1, 0.5, 2],
        "config": {"min_markers": 3, "max_outliers": 1, "max_fre": 2.0, "fle_rms": 0.3}}).encode())
    put("register_json", "mismatch.json", b'{"moving": [[0,0,0]], "fixed": []}')


def tracker_seeds() -> None:
    def record(dt_ms, repeat, markers):
        out = struct.pack("<hBB", dt_ms, repeat, len(markers))
        for mid, flags, d in markers:
            out += struct.pack("<BBhhh", mid, flags, *d)
        return out
    six = [(i, 0, (0, 0, 0)) for i in range(1, 7)]
    calm = bytes([2]) + record(20, 255, six) + record(20, 255, six) + record(20, 200, six)
    put("tracker_samples", "calm_breathing_ar", calm)
    put("tracker_samples", "calm_breathing_4dct_modes", bytes([2 | 4 | 8 | 16]) + calm[1:])
    occluded = [(i, 1 if i == 5 else 0, (0, 0, 0)) for i in range(1, 7)]
    put("tracker_samples", "occlusion_nan_back_in_time",
        bytes([1]) + record(20, 150, six) + record(20, 20, occluded) + record(20, 3, [(4, 2, (0, 0, 0))] + six[1:])
        + record(-500, 10, six) + record(20, 100, six))


def segment_seeds() -> None:
    def req(flags, overlap, text):
        return bytes([flags]) + struct.pack("<f", overlap) + text.encode()
    put("segment_request", "nifti_refined_surface", req(3, 0.5, "ct.nii\nout"))
    put("segment_request", "nifti_gz_default_overlap", req(0, 0.0, "ct.nii.gz\nout/sub"))
    put("segment_request", "dicom_dir", req(1, 0.25, "dicom\nout"))
    put("segment_request", "empty_dir", req(0, 0.5, "empty\nout"))
    put("segment_request", "png", req(0, 0.5, "notes.png\nout"))
    put("segment_request", "bad_overlap", req(0, 1.5, "ct.nii\nout"))
    put("segment_request", "blank_output", req(0, 0.5, "ct.nii\n "))


def seg_seeds(binary: str, case: Path, tmp: Path) -> None:
    """A SEG of the phantom's vessel labels by our writer, and (when highdicom is there) the same labels
    by highdicom, an independent writer."""
    ours = tmp / "seg.dcm"
    subprocess.run([binary, "nifti-to-seg", str(case / "labels.nii.gz"), "--series", str(case / "ct"),
                    "--out", str(ours)], check=True, stdout=subprocess.DEVNULL)
    put("dicom_seg", "needle_nav_phantom.dcm", ours.read_bytes())
    try:
        import highdicom as hd
        import nibabel as nib
        import numpy as np
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError:
        return
    seg = pydicom.dcmread(ours)
    slices = [pydicom.dcmread(p) for p in sorted((case / "ct").iterdir())]
    by_uid = {str(d.SOPInstanceUID): d for d in slices}
    frames = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    sources = [by_uid[str(r.ReferencedSOPInstanceUID)] for r in frames]
    labels = np.asarray(nib.load(case / "labels.nii.gz").dataobj)
    # (x, y, z) -> (slice, row, column); the grid's slice k is the k-th referenced instance.
    mask = np.stack([(labels[:, :, k].T == c) for k in range(labels.shape[2]) for c in (1, 2, 3)])
    mask = mask.reshape(labels.shape[2], 3, labels.shape[1], labels.shape[0]).transpose(0, 2, 3, 1)
    types = [codes.SCT.Artery, codes.SCT.Vein, codes.SCT.Aorta]
    algorithm = hd.AlgorithmIdentificationSequence(name="fuzz seed", version="1",
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(segment_number=i + 1, segment_label=t.meaning,
                                              segmented_property_category=codes.SCT.AnatomicalStructure,
                                              segmented_property_type=t, algorithm_type="AUTOMATIC",
                                              algorithm_identification=algorithm) for i, t in enumerate(types)]
    theirs = hd.seg.Segmentation(source_images=sources, pixel_array=mask.astype(np.uint8),
                                 segmentation_type="BINARY", segment_descriptions=descriptions,
                                 series_instance_uid="1.2.826.0.1.3680043.8.498.1", series_number=2,
                                 sop_instance_uid="1.2.826.0.1.3680043.8.498.2", instance_number=1,
                                 manufacturer="fuzz", manufacturer_model_name="seed", software_versions="1",
                                 device_serial_number="1")
    out = tmp / "theirs.dcm"
    theirs.save_as(out)
    put("dicom_seg", "highdicom_phantom.dcm", out.read_bytes())


def igtl_seeds() -> None:
    """OpenIGTLink messages packed by pyigtl (the SlicerIGT team's implementation): raw streams (byte 0
    even) and the same bodies as typed packets (byte 0 odd: type index, header version, device name)."""
    try:
        import numpy as np
        import pyigtl
    except ImportError:
        return
    matrix = np.array([[1, 0, 0, 10.5], [0, 1, 0, -20.25], [0, 0, 1, 30.0], [0, 0, 0, 1]])
    transform = pyigtl.TransformMessage(matrix, device_name="Marker1ToTracker", timestamp=1.5).pack()
    string = pyigtl.StringMessage("hello", device_name="Text").pack()
    point = pyigtl.PointMessage([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], names=["Marker2", "Marker3"],
                                device_name="Points").pack()
    position = pyigtl.PositionMessage([[7.0, 8.0, 9.0]], quaternions=[[0, 0, 0, 1]], names=["Marker4"],
                                      device_name="Positions").pack()
    put("igtl_stream", "raw_transform", b"\x00" + transform)
    put("igtl_stream", "raw_all_with_garbage", b"\x00" + transform + b"garbage" + point + position + string)
    types = ["TRANSFORM", "POSITION", "POINT", "TDATA", "STATUS", "STRING", "GET_IMAGE", "IMAGE"]
    for name, packed in [("TRANSFORM", transform), ("POINT", point), ("POSITION", position), ("STRING", string)]:
        device = packed[14:34]
        put("igtl_stream", f"typed_{name.lower()}", bytes([1, types.index(name), 0]) + device + packed[58:])


def pacs_seeds() -> None:
    """DIMSE messages as a PACS sends them, encoded by pydicom (the peer implementation): a C-FIND
    response with its series identifier and a C-STORE request of a C-GET with a small CT slice, one
    seed per transfer syntax (byte 0), the command's length in bytes 1-2."""
    try:
        from pydicom.dataset import Dataset
        from pydicom.filewriter import write_dataset
        from pydicom.filebase import DicomBytesIO
    except ImportError:
        return

    def encode(ds, implicit: bool, little: bool) -> bytes:
        buf = DicomBytesIO()
        buf.is_implicit_VR, buf.is_little_endian = implicit, little
        write_dataset(buf, ds)
        return buf.getvalue()

    def command(**fields) -> bytes:
        cmd = Dataset()
        for k, v in fields.items():
            setattr(cmd, k, v)
        body = encode(cmd, True, True)
        cmd.CommandGroupLength = len(body)
        return encode(cmd, True, True)

    find_rsp = command(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.1", CommandField=0x8020,
                       MessageIDBeingRespondedTo=1, CommandDataSetType=0x0000, Status=0xFF00)
    ident = Dataset()
    ident.QueryRetrieveLevel = "SERIES"
    ident.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ident.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ident.Modality = "CT"
    ident.NumberOfSeriesRelatedInstances = "20"
    ident.SeriesDescription = "seed"
    store_rq = command(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2", CommandField=0x0001, MessageID=3,
                       Priority=0, CommandDataSetType=0x0000,
                       AffectedSOPInstanceUID="1.2.826.0.1.3680043.8.498.3")
    ct = Dataset()
    ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ct.StudyInstanceUID = ident.StudyInstanceUID
    ct.SeriesInstanceUID = ident.SeriesInstanceUID
    ct.ImagePositionPatient = [0, 0, 0]
    ct.Rows, ct.Columns, ct.BitsAllocated, ct.BitsStored, ct.HighBit = 4, 4, 16, 16, 15
    ct.PixelRepresentation, ct.SamplesPerPixel, ct.PhotometricInterpretation = 1, 1, "MONOCHROME2"
    ct.PixelData = bytes(range(32))
    for pick, (implicit, little) in [(0, (True, True)), (1, (False, True)), (2, (False, False))]:
        for name, cmd, ds in [("find_rsp", find_rsp, ident), ("store_rq", store_rq, ct)]:
            put("pacs_message", f"{name}_ts{pick}", bytes([pick]) + struct.pack("<H", len(cmd)) + cmd
                + encode(ds, implicit, little))


def main() -> None:
    binary = sys.argv[1]
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        case = phantom(binary, tmp)
        dicom_seeds(case)
        nifti_seeds(case)
        case_seeds(case)
        bag_seed(tmp)
        seg_seeds(binary, case, tmp)
    igtl_seeds()
    pacs_seeds()
    config_seeds()
    register_seeds()
    tracker_seeds()
    segment_seeds()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
