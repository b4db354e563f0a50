"""Round-trip times of the ROS-native services (parameter and lifecycle services), as `ros2 param`
and `ros2 lifecycle` call them: the needle_target node (Rust, r2r) against an rclpy node serving the
same standard services (rclpy's own parameter services, rclpy.lifecycle), in the same run, each in
a process of its own, called from one rclpy client. Median and 95th percentile of N calls each."""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release"
CALLS = int(os.environ.get("NEEDLE_NAV_BENCH_CALLS", "300"))
os.environ.setdefault("ROS_DOMAIN_ID", str(70 + os.getpid() % 20))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402  (after the domain is set)
from lifecycle_msgs.srv import GetState  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters  # noqa: E402

# The peer: an rclpy lifecycle node declaring the same parameters with the same descriptors' kind.
PEER = """
import rclpy, sys
from rclpy.lifecycle import LifecycleNode
from rcl_interfaces.msg import ParameterDescriptor, FloatingPointRange
rclpy.init()
node = LifecycleNode(sys.argv[1])
node.declare_parameter("deviation_tolerance_m", 0.005, ParameterDescriptor(
    description="breathing deviation from baseline beyond which the target is invalid [m]",
    floating_point_range=[FloatingPointRange(from_value=0.0005, to_value=0.05, step=0.0)]))
node.declare_parameter("frame_id", "tracker", ParameterDescriptor(read_only=True))
print("ready", flush=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""


def wait_service(node, client, what, timeout=30.0):
    if not client.wait_for_service(timeout_sec=timeout):
        raise SystemExit(f"{what} did not appear within {timeout} s")


def call(node, client, request):
    t0 = time.perf_counter()
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=5.0)
    if not future.done():
        raise SystemExit("a service call got no answer within 5 s")
    return time.perf_counter() - t0, future.result()


def measure(node, server):
    """Median and p95 [ms] of each call against the node named `server`."""
    get = node.create_client(GetParameters, f"/{server}/get_parameters")
    describe = node.create_client(DescribeParameters, f"/{server}/describe_parameters")
    setp = node.create_client(SetParameters, f"/{server}/set_parameters")
    state = node.create_client(GetState, f"/{server}/get_state")
    for c, what in [(get, "get_parameters"), (describe, "describe_parameters"), (setp, "set_parameters"),
                    (state, "get_state")]:
        wait_service(node, c, f"/{server}/{what}")
    values = [0.004, 0.006]
    requests = {
        "get_parameters": (get, lambda i: GetParameters.Request(names=["deviation_tolerance_m"])),
        "describe_parameters": (describe, lambda i: DescribeParameters.Request(names=["deviation_tolerance_m"])),
        "set_parameters (accepted)": (setp, lambda i: SetParameters.Request(parameters=[Parameter(
            name="deviation_tolerance_m",
            value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=values[i % 2]))])),
        "set_parameters (read-only, refused)": (setp, lambda i: SetParameters.Request(parameters=[Parameter(
            name="frame_id", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="x"))])),
        "lifecycle get_state": (state, lambda i: GetState.Request()),
    }
    out = {}
    for label, (client, make) in requests.items():
        times = []
        for i in range(CALLS):
            t, result = call(node, client, make(i))
            times.append(t)
        if label.startswith("set_parameters (accepted)") and not result.results[0].successful:
            raise SystemExit(f"{server}: an accepted set was refused: {result.results[0].reason}")
        if label.startswith("set_parameters (read-only") and result.results[0].successful:
            raise SystemExit(f"{server}: a read-only set was accepted")
        times.sort()
        out[label] = (statistics.median(times) * 1e3, times[int(0.95 * (len(times) - 1))] * 1e3)
    return out


def main():
    log = tempfile.NamedTemporaryFile(prefix="nn_bench_services_", suffix=".log", delete=False)
    ours = subprocess.Popen([str(BIN / "needle_target")], stdout=subprocess.DEVNULL, stderr=log)
    peer_name = f"rclpy_peer_{os.getpid()}"
    peer = subprocess.Popen([sys.executable, "-c", PEER, peer_name], stdout=subprocess.PIPE, stderr=log, text=True)
    rclpy.init()
    node = rclpy.create_node(f"bench_client_{os.getpid()}")
    try:
        rust = measure(node, "needle_target")
        python = measure(node, peer_name)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in (ours, peer):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        os.unlink(log.name)
    print(f"{CALLS} calls each from one rclpy client; round trip [ms], median / p95")
    print(f"{'call':38s} {'needle_target (r2r)':>22s} {'rclpy node':>18s} {'ratio (median)':>15s}")
    for label in rust:
        (rm, rp), (pm, pp) = rust[label], python[label]
        print(f"{label:38s} {rm:10.3f} / {rp:8.3f}   {pm:8.3f} / {pp:7.3f}   {rm / pm:13.2f}")


if __name__ == "__main__":
    main()
