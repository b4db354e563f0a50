"""Bag reading speed: `needle_nav bag-info` (Rust, mcap crate; reads every message and checks it
against metadata.yaml) against the PyPI `rosbags` reader doing the same (every raw message, counts
per topic), in the same run, on a bag recorded here by the whole tracker side of the stack.
Both are timed as whole processes (start-up included), median of 5; rosbags also in-process."""
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release"
RUNS = 5

PEER = """
import sys, time
from collections import Counter
from rosbags.rosbag2 import Reader
t0 = time.perf_counter()
with Reader(sys.argv[1]) as r:
    counts = Counter(c.topic for c, _, _ in r.messages())
print(sum(counts.values()), time.perf_counter() - t0)
"""


def timed(cmd):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, out.stdout


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    bag = Path(tempfile.mkdtemp(prefix="nn_bench_bag_")) / "session"
    subprocess.run([str(BIN / "needle_nav_stack"), "--only", "marker_tracker,marker_classifier", "--run-for",
                    str(seconds), "--record", str(bag)], check=True, capture_output=True, timeout=seconds + 60)
    size_mb = sum(f.stat().st_size for f in bag.iterdir()) / 1e6
    rust, peer, peer_inside = [], [], []
    for _ in range(RUNS):
        t, out = timed([str(BIN / "needle_nav"), "bag-info", "--json", str(bag)])
        rust.append(t)
        summary = json.loads(out)
        t, out = timed([sys.executable, "-c", PEER, str(bag)])
        peer.append(t)
        n, inside = out.split()
        peer_inside.append(float(inside))
    # Both must read the same messages.
    assert int(n) == summary["messages"], (n, summary["messages"])
    from rosbags.rosbag2 import Reader
    with Reader(bag) as r:
        counts = Counter(c.topic for c, _, _ in r.messages())
    assert counts == {t["name"]: t["messages"] for t in summary["topics"] if t["messages"]}, counts
    r, p, pi = statistics.median(rust), statistics.median(peer), statistics.median(peer_inside)
    print(f"bag: {summary['messages']} messages on {len(summary['topics'])} topics, {summary['duration_s']:.1f} s, "
          f"{size_mb:.1f} MB")
    print(f"needle_nav bag-info (whole process)      : {r * 1e3:8.1f} ms")
    print(f"rosbags Reader (whole process)           : {p * 1e3:8.1f} ms ({p / r:.1f}x slower)")
    print(f"rosbags Reader (reading only, in-process): {pi * 1e3:8.1f} ms ({pi / r:.1f}x)")
    print("per-topic counts agree between the two readers")


if __name__ == "__main__":
    main()
