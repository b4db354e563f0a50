"""Benchmark: does a vessel segmentation on the same machine steal the guidance's deadlines?

The all-in-one stack (needle_nav_stack --summary, 250 Hz simulated tracker with its default 8 ms
delivery latency, a digital-patient case) runs for SECONDS while `needle_nav segment` segments the
real 512x512x141 thorax DICOM series over and over (2 inference threads), under three conditions:
  none    no segmentation
  normal  segmentation at normal scheduling (`--scheduling normal`, as before this change)
  idle    segmentation at SCHED_IDLE (`--scheduling idle`, the default now)
The conditions are interleaved (none, normal, idle, none, normal, idle, ...) so that a change in the
machine's other load hits each alike. Prints per run and per condition: targets, stale-data refusals
(NeedleTarget reason STALE_DATA, "stale tracker data" in the summary) and their share, target latency
p50/p99 from the stack's monitor, and how many segmentation patches were inferred meanwhile.
  python bench/bench_segmentation_contention.py [SECONDS] [ROUNDS]   (default 60 s, 2 rounds)
"""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release"))
SHARED = Path(os.environ.get("NEEDLE_NAV_SHARED_DATA", ROOT.parent / "shared" / "data"))
SERIES = SHARED / "thorax_ct_dicom"
CONDITIONS = ["none", "normal", "idle"]


def start_segmentation_loop(scheduling, work):
    """Segments the series again and again until stopped; its stderr (progress lines) to a file."""
    log = open(work / f"segment_{scheduling}.log", "w")
    script = (f'while true; do "{BIN}/needle_nav" segment "{SERIES}" --out "{work}/seg_{scheduling}" '
              f'--scheduling {scheduling} >/dev/null || exit 1; rm -rf "{work}/seg_{scheduling}"; done')
    # A new session, so the whole loop (shell and segment) is stopped together.
    return subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log


def patches_done(log_path):
    """Inference patches completed, from the `[inference] done/total` progress lines."""
    done, last, base = 0, 0, 0
    for m in re.finditer(r"\[inference\] (\d+)/(\d+)", Path(log_path).read_text()):
        d = int(m.group(1))
        if d < last:  # a new segmentation started
            base += last
        last = d
        done = base + d
    return done


def parse_summary(text):
    targets = re.search(r"^targets\s*:\s*(\d+) valid, (\d+) invalid", text, re.M)
    latency = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms \(n = (\d+)\)", text)
    stale = re.search(r"^\s+(\d+) x stale tracker data", text, re.M)
    if not (targets and latency):
        return None
    valid, invalid = int(targets.group(1)), int(targets.group(2))
    return {"targets": valid + invalid, "valid": valid, "stale": int(stale.group(1)) if stale else 0,
            "p50": float(latency.group(1)), "p99": float(latency.group(2))}


def run_once(condition, seconds, case, work, domain):
    seg = None
    if condition != "none":
        seg = start_segmentation_loop(condition, work)
        time.sleep(3)  # the model is loaded and inference running before the stack starts
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", RUST_LOG="warn")
    args = [str(BIN / "needle_nav_stack"), "--run-for", str(seconds), "--summary", "--ros-args",
            "-p", "marker_tracker:rate_hz:=250.0", "-p", f"lesion_registration:ct_case_dir:={case}",
            "-p", f"needle_target:ct_case_dir:={case}", "-p", "needle_target:baseline_s:=8.0"]
    try:
        out = subprocess.run(["timeout", "-k", "5", str(seconds + 30)] + args, env=env, capture_output=True,
                             text=True).stdout
    finally:
        if seg is not None:
            proc, log = seg
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            log.close()
    result = parse_summary(out)
    if result is not None and seg is not None:
        result["patches"] = patches_done(work / f"segment_{condition}.log")
        (work / f"segment_{condition}.log").unlink()
    return result


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    if not SERIES.is_dir():
        sys.exit(f"no {SERIES} (NEEDLE_NAV_SHARED_DATA)")
    work = Path(tempfile.mkdtemp(prefix="nn_seg_contention_"))
    try:
        case = work / "case"
        subprocess.run([str(BIN / "needle_nav"), "phantom", "--out", str(case), "--phases", "6", "--dims",
                        "176x128x160", "--spacing", "2x2x2"], check=True, stdout=subprocess.DEVNULL)
        domain = int(os.environ.get("NEEDLE_NAV_BENCH_DOMAIN", 10 + random.Random().randrange(80)))
        print(f"{seconds} s per run, {rounds} rounds interleaved ({', '.join(CONDITIONS)}), "
              f"{os.cpu_count()} CPUs, load at start {os.getloadavg()[0]:.2f}", flush=True)
        print(f"{'condition':<8} {'round':>5} {'targets':>8} {'stale':>6} {'stale %':>8} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'patches':>8} {'load':>5}", flush=True)
        results = {c: [] for c in CONDITIONS}
        for r in range(rounds):
            for c in CONDITIONS:
                res = run_once(c, seconds, case, work, domain)
                load = os.getloadavg()[0]
                if res is None:
                    print(f"{c:<8} {r + 1:>5} (no summary: the run failed)", flush=True)
                    continue
                results[c].append(res)
                print(f"{c:<8} {r + 1:>5} {res['targets']:>8} {res['stale']:>6} "
                      f"{100 * res['stale'] / max(res['targets'], 1):>8.2f} {res['p50']:>7.2f} {res['p99']:>7.2f} "
                      f"{res.get('patches', '-'):>8} {load:>5.2f}", flush=True)
        print("--- per condition (all rounds; latency: median of the runs' p50 and p99) ---")
        for c in CONDITIONS:
            rs = results[c]
            if not rs:
                continue
            targets, stale = sum(x["targets"] for x in rs), sum(x["stale"] for x in rs)
            med = lambda k: sorted(x[k] for x in rs)[len(rs) // 2]  # noqa: E731
            patches = sum(x.get("patches", 0) for x in rs)
            print(f"{c:<8} stale {stale}/{targets} = {100 * stale / max(targets, 1):.2f} %, "
                  f"p50 {med('p50'):.2f} ms, p99 {med('p99'):.2f} ms"
                  + (f", {patches} patches inferred in {len(rs) * seconds} s" if c != "none" else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
