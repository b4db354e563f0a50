#!/usr/bin/env python3
"""Writes docs/results/guidance-evaluation.md from the JSON `needle_nav evaluate` printed.

Every figure comes from that JSON; nothing here is typed by hand. Called by
scripts/evaluate-guidance.sh.
"""
import argparse
import datetime
import json
import subprocess


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mm(x):
    return f"{x:.2f} mm"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--command", required=True)
    ap.add_argument("--seconds", type=int, required=True)
    a = ap.parse_args()
    r = json.load(open(a.json))
    reg, trk, real = r["registration"], r["tracking"], r["real_breathing"]
    day = datetime.date.today().isoformat()
    out = [
        "# Guidance evaluation (`needle_nav evaluate`)",
        "",
        f"> Written by `scripts/evaluate-guidance.sh` on {day} (commit {commit()}): `{a.command}`, "
        f"{a.seconds} s on this machine. The raw output is [guidance-evaluation.json](guidance-evaluation.json).",
        "",
        "Method: [../guidance.md](../guidance.md#evaluation). The evaluation runs the nodes' own state machines "
        "(sample checks, classifier, registration update grid, target machine).",
        "",
        f"| lesion target error ({trk['trials']} digital patients, {trk['valid_targets']:,} valid targets) "
        "| RMS | 95th percentile |",
        "|---|---|---|",
    ]
    latency_ms = round(trk["latency_s"] * 1000)
    for key, label in [("no_correction", "no correction (registered lesion, static)"),
                       ("correction", "correction"),
                       ("correction_at_latency_without_prediction",
                        f"correction, robot acts {latency_ms} ms later, no prediction"),
                       ("correction_with_prediction", f"correction with prediction at {latency_ms} ms (as shipped)")]:
        out.append(f"| {label} | {mm(trk[key]['rms_mm'])} | {mm(trk[key]['p95_mm'])} |")
    invalid = ", ".join(f"{k} {v:,}" for k, v in sorted(trk["invalid_targets"].items(), key=lambda kv: -kv[1]))
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(trk.get("registration_refusals", {}).items()))
    out += [
        "",
        f"Classification accuracy: {trk['classification_accuracy']:.1%}. Registrations from the node's update "
        f"grid: {trk['registrations']:,}" + (f" (refused: {refusals})" if refusals else "") + ".",
        f"Invalid targets by reason: {invalid or 'none'}.",
        "",
        f"| registration, {reg['registered']} of {reg['trials']} seeded patients registered | value |",
        "|---|---|",
        f"| observed TRE at the lesion, RMS / 95th percentile | {mm(reg['observed_tre_rms_mm'])} / "
        f"{mm(reg.get('observed_tre_p95_mm', float('nan')))} |",
        f"| predicted TRE with the configured FLE ({reg['fle_assumed_mm']:.2f} mm) | "
        f"{mm(reg['predicted_tre_rms_mm'])} (observed/predicted {reg['observed_over_predicted']:.2f}) |",
        f"| predicted TRE with the simulated FLE ({reg['simulated_fle_mm']:.2f} mm) | "
        f"{mm(reg['predicted_tre_with_simulated_fle_rms_mm'])} (observed/predicted "
        f"{reg['observed_over_predicted_with_simulated_fle']:.2f}) |",
        f"| mean RMS FRE | {mm(reg['fre_rms_mean_mm'])} |",
        f"| marker observations dropped by the sample checks | {reg.get('markers_dropped_by_sample_checks', 0):,} |",
        "",
    ]
    if "error" in real:
        out.append(f"Real breathing: not run ({real['error']}).")
    else:
        loo = real["leave_one_out_rmse_mm"]
        out += [
            f"Real breathing (ExtMarker, {real['sessions']} sessions): each marker's 3-D position estimated from "
            f"the other two: RMSE {mm(loo['from_other_markers'])} against {mm(loo['no_correction'])} without "
            "correction. Prediction RMSE of marker positions:",
            "",
        ]
        pred = real["prediction_rmse_mm"]
        methods = list(pred)
        horizons = list(pred[methods[0]])
        out += ["| horizon | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for h in horizons:
            out.append(f"| {h} | " + " | ".join(mm(pred[m][h]) for m in methods) + " |")
        out.append("")
    study = r.get("combination_criterion")
    if study:
        out += combination_tables(study)
    print("\n".join(out).rstrip() + "\n")


def combination_tables(s):
    out = ["## Marker combination: smallest range (the method) against smallest standard deviation", ""]
    if "patients" in s:
        out.append(f"{s['patients']} digital patients with a 4-D CT; per search setting, the correction-marker "
                   "combination each criterion chooses and the resulting error against the truth.")
        out.append("")
    for setting in s.get("settings", []):
        out.append(f"Search radius {setting['search_radius_mm']:.0f} mm, {setting['min_markers']}-"
                   f"{setting['max_markers']} markers: the criteria chose differently for "
                   f"{setting['patients_with_different_choice']} patients.")
        out.append("")
        out += ["| criterion | target RMS | entry RMS | mean markers | failed patients |", "|---|---|---|---|---|"]
        for res in setting["results"]:
            name = res["criterion"] or "all correction markers (no selection)"
            out.append(f"| {name} | {mm(res['target_rms_mm'])} | {mm(res['entry_rms_mm'])} | "
                       f"{res['mean_markers']:.1f} | {res['failed_patients']} |")
        out.append("")
    if s.get("extmarker"):
        out += [s["extmarker"], ""]
    return out


if __name__ == "__main__":
    main()
