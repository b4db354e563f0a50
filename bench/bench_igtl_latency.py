"""Latency through OpenIGTLink: a tracker frame sent by pyigtl (playing a PLUS Server) -> igtl_bridge
-> marker_classifier -> lesion_registration -> needle_target -> igtl_bridge -> the target TRANSFORM
arriving at pyigtl (playing 3D Slicer), on the digital patient.

The simulated tracker (marker_tracker, 60 Hz, no delivery latency, its topic remapped away from
needle_nav/markers) supplies the patient's marker positions; this script sends each of its samples
as 12 TRANSFORMs (one per marker, mm, the sample's stamp as the OpenIGTLink timestamp, as PLUS does).
The bridge stamps the target's messages with the tracker frame they answer (NeedleTarget.source_stamp),
so each target TRANSFORM is matched to its frame by timestamp.

latency = arrival of the target TRANSFORM at the "Slicer" socket's reader - the moment the frame's
first byte was handed to the "PLUS" socket (both hooked inside pyigtl, so pyigtl's 10 ms polling loop
on the sending side is not counted). Reference, in the same run: the same pyigtl sender -> a pyigtl
receiver directly on loopback (one way), and a pyigtl round trip (send, echo, receive).

  python bench/bench_igtl_latency.py [SECONDS]     (default 40; prints p50/p95/p99)
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release"))
os.environ.setdefault("ROS_DOMAIN_ID", os.environ.get("NEEDLE_NAV_BENCH_DOMAIN", str(10 + os.getpid() % 80)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import pyigtl  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

from needle_nav_msgs.msg import TrackedMarkerArray  # noqa: E402

SENSOR = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.BEST_EFFORT, durability=QoSDurabilityPolicy.VOLATILE)
RATE_HZ = 60.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedServer(pyigtl.OpenIGTLinkServer):
    """pyigtl's server, noting when each message goes onto the socket and when each arrives."""

    def __init__(self, port):
        self.sent = {}      # (device, timestamp) -> wall time the bytes were handed to the socket
        self.arrived = []   # (wall time, device, timestamp)
        self.echo = False
        super().__init__(port=port, local_server=True)
        server = self

        class Recorder(dict):
            def __setitem__(self, device, message):
                server.arrived.append((time.time(), device, message.timestamp))
                if server.echo:
                    server.send_message(message, wait=False)
                dict.__setitem__(self, device, message)
        self.incoming_messages = Recorder()

    def _send_queued_message_from_socket(self, sock):
        with self.lock_outgoing_messages:
            if not self.outgoing_messages:
                return False
            message = self.outgoing_messages.popleft()
            binary = message.pack()
        self.sent.setdefault((message.device_name, message.timestamp), time.time())
        sock.sendall(binary)
        return True


class TimedClient(pyigtl.OpenIGTLinkClient):
    def __init__(self, port):
        self.arrived = []
        super().__init__(host="127.0.0.1", port=port, start_now=False)
        client = self

        class Recorder(dict):
            def __setitem__(self, device, message):
                client.arrived.append((time.time(), device, message.timestamp))
                dict.__setitem__(self, device, message)
        self.incoming_messages = Recorder()
        self.start()


def percentiles(ms):
    a = np.asarray(ms)
    return f"n={len(a)}  p50 {np.percentile(a, 50):.2f} ms  p95 {np.percentile(a, 95):.2f} ms  p99 {np.percentile(a, 99):.2f} ms  max {a.max():.2f} ms"


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def reference(n=600):
    """pyigtl -> pyigtl on loopback: one way (wire to reader) and a round trip through an echo."""
    port = free_port()
    server = TimedServer(port)
    client = TimedClient(port)
    wait_for(lambda: server.is_connected() and client.is_connected(), 10, "the reference pyigtl pair")
    m = np.eye(4)
    for k in range(n):
        server.send_message(pyigtl.TransformMessage(m, timestamp=1e9 + k, device_name="Ref"), wait=True)
        time.sleep(1 / RATE_HZ)
    time.sleep(0.3)
    one_way = [(t - server.sent[(d, ts)]) * 1e3 for t, d, ts in client.arrived if (d, ts) in server.sent]
    # Round trip: the client sends, the server echoes, the client receives.
    server.echo = True
    sent_at = {}
    client.arrived.clear()
    for k in range(n // 2):
        ts = 2e9 + k
        sent_at[ts] = time.time()
        client.send_message(pyigtl.TransformMessage(m, timestamp=ts, device_name="Echo"), wait=True)
        time.sleep(1 / RATE_HZ)
    time.sleep(0.3)
    round_trip = [(t - sent_at[ts]) * 1e3 for t, d, ts in client.arrived if d == "Echo" and ts in sent_at]
    client.stop()
    server.stop()
    return one_way, round_trip


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    case = tempfile.mkdtemp(prefix="nn_igtl_bench_")
    subprocess.run([str(BIN / "needle_nav"), "phantom", "--out", case, "--phases", "6", "--dims", "176x128x160",
                    "--spacing", "2x2x2"], check=True, stdout=subprocess.DEVNULL)
    plus_port, slicer_port = free_port(), free_port()
    plus = TimedServer(plus_port)
    slicer = TimedServer(slicer_port)
    env = dict(os.environ, RUST_LOG="warn")
    limit = str(int(seconds + 60))
    procs = [
        subprocess.Popen(["timeout", "-k", "5", limit, str(BIN / "marker_tracker"), "--ros-args", "-p", "latency_s:=0.0",
                          "-p", f"rate_hz:={RATE_HZ}", "-p", "publish_visualization:=false",
                          "-r", "needle_nav/markers:=needle_nav/sim_markers"], env=env),
        subprocess.Popen(["timeout", "-k", "5", limit, str(BIN / "needle_nav_stack"), "--only",
                          "marker_classifier,lesion_registration,needle_target", "--ros-args",
                          "-p", f"lesion_registration:ct_case_dir:={case}", "-p", f"needle_target:ct_case_dir:={case}",
                          "-p", "needle_target:baseline_s:=8.0", "-p", f"needle_target:tracker_rate_hz:={RATE_HZ}"], env=env),
        subprocess.Popen(["timeout", "-k", "5", limit, str(BIN / "igtl_bridge"), "--ros-args",
                          "-p", f"tracker.port:={plus_port}", "-p", "slicer.mode:=client", "-p", f"slicer.port:={slicer_port}",
                          "-p", f"expected_rate_hz:={RATE_HZ}"], env=env),
    ]
    rclpy.init()
    node = rclpy.create_node("bench_igtl_latency")
    frames = []

    def on_sample(msg):
        t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        for m in msg.markers:
            if not m.visible:
                continue  # a tracker sends nothing for a tool it does not see
            matrix = np.eye(4)
            matrix[:3, 3] = [m.position.x * 1000, m.position.y * 1000, m.position.z * 1000]
            plus.send_message(pyigtl.TransformMessage(matrix, timestamp=t, device_name=f"Marker{m.id}ToTracker"), wait=False)
        frames.append(t)
    node.create_subscription(TrackedMarkerArray, "needle_nav/sim_markers", on_sample, SENSOR)
    try:
        wait_for(lambda: plus.is_connected() and slicer.is_connected(), 30, "the bridge's connections")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.01)
        time.sleep(0.5)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        node.destroy_node()
        rclpy.shutdown()
    # The send time of a frame: its first TRANSFORM on the wire.
    frame_sent = {}
    for (device, ts), t in plus.sent.items():
        frame_sent[ts] = min(t, frame_sent.get(ts, t))
    latencies = []
    for t, device, ts in slicer.arrived:
        if device != "NeedleToTracker":
            continue
        # pyigtl rounds the timestamp through the wire's 2^-32 s fraction: match within 1 us.
        key = min(frame_sent, key=lambda s: abs(s - ts), default=None)
        if key is not None and abs(key - ts) < 1e-6:
            latencies.append((t - frame_sent[key]) * 1e3)
    plus.stop()
    slicer.stop()
    one_way, round_trip = reference()
    print(f"tracker frames sent: {len(frame_sent)} at {RATE_HZ:.0f} Hz, 12 TRANSFORMs each; target TRANSFORMs matched: {len(latencies)}")
    if latencies:
        print(f"tracker frame in -> target TRANSFORM out (bridge + classifier + registration + target + bridge): {percentiles(latencies)}")
    else:
        print("no target TRANSFORM matched a tracker frame (the chain did not register in time?)")
    print(f"reference, pyigtl -> pyigtl one way on loopback:   {percentiles(one_way)}")
    print(f"reference, pyigtl -> pyigtl round trip (echo):     {percentiles(round_trip)}")


if __name__ == "__main__":
    main()
