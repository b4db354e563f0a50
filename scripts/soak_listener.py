#!/usr/bin/env python3
"""Soak listener (scripts/soak.sh): an rclpy subscriber to needle_nav/target that, per interval,
reports the target latency (receive time minus the tracker sample's source_stamp, p50/p99/max) and
the invalid targets by reason code, and samples the resident memory of the stack's process from
/proc/<pid>/status. Runs in its own process so that the stack's memory is the stack's alone (the
in-process --summary monitor keeps every latency and error for its final report and would grow).

Writes into OUT_DIR: intervals.csv, memory.csv and report.md."""
import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import rclpy
from needle_nav_msgs.msg import NeedleTarget
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# REASON_* code -> name, from the message definition itself.
REASONS = {getattr(NeedleTarget, n): n.removeprefix("REASON_") for n in dir(NeedleTarget)
           if n.startswith("REASON_") and isinstance(getattr(NeedleTarget, n), int)}
INVALID_REASONS = [REASONS[c] for c in sorted(REASONS) if REASONS[c] != "NONE"]


def percentile(sorted_values, q):
    """Nearest-rank on (n - 1) * q, the same rule as the stack's --summary monitor."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round((len(sorted_values) - 1) * q))]


def proc_status(pid):
    """VmRSS, VmHWM [KiB], threads, open file descriptors and CPU time [s] of `pid`, and the
    machine's 1-min load average; None when the process is gone."""
    try:
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        # utime and stime: fields 14 and 15 of /proc/<pid>/stat, after the parenthesised name.
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
        return (int(fields["VmRSS"][0]), int(fields["VmHWM"][0]), int(fields["Threads"][0]), fds,
                round(cpu_s, 2), load1)
    except (OSError, KeyError, IndexError, ValueError):
        return None


class Interval:
    def __init__(self, start_s):
        self.start_s = start_s
        self.latency_ms = []
        self.valid = 0
        self.invalid = dict.fromkeys(INVALID_REASONS, 0)

    def row(self, end_s):
        lat = sorted(self.latency_ms)
        return {
            "start_s": round(self.start_s, 1), "end_s": round(end_s, 1),
            "targets": self.valid + sum(self.invalid.values()), "valid": self.valid,
            "rate_hz": round((self.valid + sum(self.invalid.values())) / max(end_s - self.start_s, 1e-9), 1),
            "latency_p50_ms": round(percentile(lat, 0.5), 3), "latency_p99_ms": round(percentile(lat, 0.99), 3),
            "latency_max_ms": round(lat[-1], 3) if lat else float("nan"),
            **{f"invalid_{k}": v for k, v in self.invalid.items()},
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pid", type=int, required=True, help="the stack's process")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--duration-s", type=float, required=True)
    ap.add_argument("--interval-s", type=float, default=300.0)
    ap.add_argument("--sample-s", type=float, default=10.0, help="memory sampling period")
    ap.add_argument("--warmup-s", type=float, default=300.0,
                    help="memory growth is fitted from this time on (start-up allocations excluded)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rclpy.init()
    node = rclpy.create_node("needle_nav_soak_listener")
    t0 = time.monotonic()
    current = Interval(0.0)
    totals = Interval(0.0)
    qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                     history=HistoryPolicy.KEEP_LAST, depth=10)

    def on_target(msg):
        now_ns = time.time_ns()  # the stack's ROS clock is the system clock (no use_sim_time)
        source_ns = msg.source_stamp.sec * 1_000_000_000 + msg.source_stamp.nanosec
        for iv in (current, totals):
            if msg.valid:
                iv.valid += 1
            else:
                name = REASONS.get(msg.reason_code, f"CODE_{msg.reason_code}")
                iv.invalid[name] = iv.invalid.get(name, 0) + 1
        if source_ns > 0:
            latency_ms = (now_ns - source_ns) * 1e-6
            current.latency_ms.append(latency_ms)

    node.create_subscription(NeedleTarget, "/needle_nav/target", on_target, qos)

    mem_file = open(args.out / "memory.csv", "w", newline="")
    mem = csv.writer(mem_file)
    mem.writerow(["elapsed_s", "vmrss_kib", "vmhwm_kib", "threads", "fds", "cpu_s", "load1"])
    memory = []
    rows = []
    next_sample = 0.0
    next_interval = args.interval_s
    ended = "duration reached"
    try:
        while True:
            rclpy.spin_once(node, timeout_sec=0.05)
            elapsed = time.monotonic() - t0
            if elapsed >= next_sample:
                status = proc_status(args.pid)
                if status is None:
                    ended = "the stack's process ended"
                    break
                memory.append((elapsed, *status))
                mem.writerow([round(elapsed, 1), *status])
                mem_file.flush()
                next_sample += args.sample_s
            if elapsed >= next_interval:
                rows.append(current.row(elapsed))
                print("soak interval", rows[-1], flush=True)
                current = Interval(elapsed)
                next_interval += args.interval_s
            if elapsed >= args.duration_s:
                break
    except KeyboardInterrupt:
        ended = "interrupted"
    elapsed = time.monotonic() - t0
    if current.valid + sum(current.invalid.values()) > 0 and elapsed - current.start_s >= 1.0:
        rows.append(current.row(elapsed))  # the last, partial interval
    mem_file.close()
    node.destroy_node()
    rclpy.shutdown()

    columns = list(Interval(0.0).row(1.0).keys())
    for r in rows:  # reasons outside the message's list (none expected)
        columns += [k for k in r if k not in columns]
    with open(args.out / "intervals.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval=0)
        w.writeheader()
        w.writerows(rows)
    write_report(args, rows, columns, memory, totals, ended, elapsed)


def rss_slope_mib_per_h(memory, warmup_s):
    """Least-squares slope of VmRSS over time after the warm-up [MiB/h]; None with < 3 samples."""
    pts = [(t, rss / 1024.0) for t, rss, *_ in memory if t >= warmup_s]
    if len(pts) < 3:
        return None
    return statistics.linear_regression([p[0] for p in pts], [p[1] for p in pts]).slope * 3600.0


def write_report(args, rows, columns, memory, totals, ended, elapsed):
    lines = ["# needle_nav soak report", "",
             f"Listened {elapsed / 60:.1f} min ({ended}); intervals of {args.interval_s:.0f} s; "
             f"stack process {args.pid}.", ""]
    lines += ["## Targets per interval", "",
              "Latency: receive time at this rclpy listener (another process) minus the tracker sample's "
              "acquisition stamp. Invalid targets by NeedleTarget reason code.", ""]
    reason_cols = [c for c in columns if c.startswith("invalid_")
                   and any(r.get(c, 0) for r in rows)] or ["invalid_STALE_DATA"]
    head = ["interval [min]", "targets", "valid", "rate [Hz]", "p50 [ms]", "p99 [ms]", "max [ms]"] + \
           [c.removeprefix("invalid_") for c in reason_cols]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r['start_s'] / 60:.0f}-{r['end_s'] / 60:.0f}", r["targets"], r["valid"], r["rate_hz"],
                 r["latency_p50_ms"], r["latency_p99_ms"], r["latency_max_ms"]] + [r.get(c, 0) for c in reason_cols]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    n = totals.valid + sum(totals.invalid.values())
    lines += ["", f"Whole run: {n} targets, {totals.valid} valid; invalid by reason: "
              + (", ".join(f"{k} {v}" for k, v in totals.invalid.items() if v) or "none"), ""]
    lines += ["## Resident memory of the stack", ""]
    if memory:
        first, last = memory[0], memory[-1]
        after = [m for m in memory if m[0] >= args.warmup_s] or memory
        slope = rss_slope_mib_per_h(memory, args.warmup_s)
        lines += [f"Samples every {args.sample_s:.0f} s (memory.csv). VmRSS {first[1] / 1024:.1f} MiB at "
                  f"{first[0]:.0f} s, {after[0][1] / 1024:.1f} MiB at {after[0][0]:.0f} s (after the warm-up), "
                  f"{last[1] / 1024:.1f} MiB at {last[0]:.0f} s; peak (VmHWM) {last[2] / 1024:.1f} MiB; "
                  f"threads {first[3]} -> {last[3]}, open files {first[4]} -> {last[4]}.",
                  "", "Least-squares VmRSS growth after the warm-up: "
                  + (f"{slope:+.2f} MiB/h" if slope is not None else "(too few samples)") + ".", ""]
        lines += ["| time [min] | VmRSS [MiB] | threads | fds | stack CPU since last row [%] | load (1 min) |",
                  "|---|---|---|---|---|---|"]
        step = max(1, round(args.interval_s / args.sample_s))
        prev = None
        for m in memory[::step] + ([memory[-1]] if (len(memory) - 1) % step else []):
            cpu = f"{100 * (m[5] - prev[5]) / (m[0] - prev[0]):.0f}" if prev and m[0] > prev[0] else "-"
            lines.append(f"| {m[0] / 60:.1f} | {m[1] / 1024:.1f} | {m[3]} | {m[4]} | {cpu} | {m[6]:.2f} |")
            prev = m
    else:
        lines.append("No memory sample: the stack's process was not found.")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
