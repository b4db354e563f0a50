"""Regression-bag replay under load: how many of the live run's valid targets come again (for the
same tracker samples), how many tracker samples needle_target answered, and how far the replayed
targets are from the live ones, with 0, 1 and 2 busy-looping processes (the machine has 2 cores),
at 2x and 8x, on the recorded schedule and in lockstep (--lockstep).

    python bench/bench_replay_load.py [BAG_NAME ...] [--modes schedule,lockstep] [--busy 0,1,2] [--rates 2,8]

Needs the release build; run with the domain and discovery of scripts/test.sh. Prints one line per replay.
A run with the default bags, modes, busy loops and rates also writes its table to
docs/results/replay-load.md (or to --results FILE for any run).
"""
import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from test_bags import BAGS, busy_loops, ns, read, replay, targets  # noqa: E402
import subprocess  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bags", nargs="*", default=["digital_patient", "extmarker_trace"])
    parser.add_argument("--modes", default="schedule,lockstep")
    parser.add_argument("--busy", default="0,1,2")
    parser.add_argument("--rates", default="2,8")
    parser.add_argument("--results", default=None,
                        help="write the table here (default: docs/results/replay-load.md after a default run)")
    args = parser.parse_args()
    defaults = (args.bags == ["digital_patient", "extmarker_trace"] and args.modes == "schedule,lockstep"
                and args.busy == "0,1,2" and args.rates == "2,8")
    results_path = Path(args.results) if args.results else (ROOT / "docs" / "results" / "replay-load.md"
                                                             if defaults else None)
    rows = []

    def row(line):
        print(line, flush=True)
        rows.append(line)

    case = Path(tempfile.mkdtemp(prefix="nn_bench_case_")) / "case"
    subprocess.run([str(ROOT / "target" / "release" / "needle_nav"), "phantom", "--out", str(case), "--phases", "6",
                    "--dims", "176x128x160", "--spacing", "2x2x2"], check=True, capture_output=True, timeout=300)
    row("bag | mode | busy loops | rate | live targets again / live | samples answered / bag | "
        "extra targets | RMS / max difference to live [mm] | registrations as live | wall [s]")
    for name in args.bags:
        _, _, live = read(BAGS / name)
        expected = targets(live)
        samples = {ns(m.header.stamp) for topic, _, m in live if topic == "/needle_nav/markers"}
        live_regs = registrations(live)
        for mode in args.modes.split(","):
            for busy in (int(b) for b in args.busy.split(",")):
                for rate in (float(r) for r in args.rates.split(",")):
                    with busy_loops(busy):
                        t0 = time.monotonic()
                        try:
                            again = replay(BAGS / name, case, rate, lockstep=(mode == "lockstep"))
                        except AssertionError as e:
                            row(f"{name} | {mode} | {busy} | {rate:g}x | replay failed: {str(e)[-300:]}")
                            continue
                        wall = time.monotonic() - t0
                    got = targets(again)
                    common = sorted(set(expected) & set(got))
                    answered = {ns(m.source_stamp) for topic, _, m in again if topic == "/needle_nav/target"}
                    diff = np.array([np.linalg.norm(expected[k] - got[k]) for k in common]) * 1e3
                    rms, worst = (np.sqrt(np.mean(diff ** 2)), diff.max()) if len(diff) else (float("nan"),) * 2
                    row(f"{name} | {mode} | {busy} | {rate:g}x | {len(common)} / {len(expected)} | "
                        f"{len(samples & answered)} / {len(samples)} | {len(set(got) - set(expected))} | "
                        f"{rms:.3f} / {worst:.3f} | {same_registrations(live_regs, registrations(again))} | "
                        f"{wall:.1f}")
    if results_path is not None:
        write_results(results_path, rows)


def write_results(path, rows):
    """The table as markdown, with when, where and on which commit it was measured."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    header, body = rows[0], rows[1:]
    text = "\n".join([
        "# Replay under load (`bench/bench_replay_load.py`)", "",
        f"> Figures as last measured on {now} (commit {commit}) by bench/bench_replay_load.py; "
        "regenerated by that script.",
        f"> Machine: {os.cpu_count()} cores, load at the end {load}.", "",
        "What it means: [../bags.md](../bags.md).", "",
        f"| {header} |", "|" + "---|" * (header.count("|") + 1),
        *(f"| {r} |" for r in body)]) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def registrations(messages):
    """Successful registrations by stamp: (lesion position, translation) — computed from the samples in
    the registration node's window, so a sample lost there shows as a difference."""
    return {ns(m.header.stamp): (m.lesion_position.x, m.lesion_position.y, m.lesion_position.z,
                                 m.image_to_tracker.translation.x, m.image_to_tracker.translation.y,
                                 m.image_to_tracker.translation.z)
            for topic, _, m in messages if topic == "/needle_nav/registration" and m.status == 0}


def same_registrations(live, again):
    """How many of the live run's registrations came again, bit for bit, at the same stamp."""
    return f"{sum(1 for k, v in live.items() if again.get(k) == v)} / {len(live)}"


if __name__ == "__main__":
    main()
