"""The training run of the shipped vessel model (issue 12): resumable, time-budgeted, CPU or GPU.

    python -m needle_nav_training.train_anatomy --seed 12 --iterations 3000 --budget-minutes 600

(scripts/train-model.sh runs exactly this.) Steps, each skipped when its output is already in the
checkpoint folder, so the same command resumes where a stopped run ended:
  1. calibration: normalisation statistics and per-class HU windows (contrast, and synthesised plain)
     from 12 fixed digital patients;
  2. training: batches from stream.py (a pure function of seed and batch number), cross-entropy +
     batch soft Dice, AdamW, warm-up then polynomial decay over --iterations; a checkpoint (model,
     optimiser, schedule, history) every --checkpoint-every iterations and when the time budget
     (--budget-minutes, of this invocation) runs out;
  3. export (when --iterations are done, or with --export-now): ONNX with metadata, parity fixture,
     evaluation on held-out digital patients (onnxruntime, whole volumes), report.
--device auto takes CUDA when torch sees a GPU; the data stream and the schedule do not depend on it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import CLASS_NAMES
from . import anatomy as A
import torch.nn.functional as F

from .model import VesselUNet, parameter_count
from .stream import BatchStream, blood_labels
from .synthesis import synthesise_plain

REPO = Path(__file__).resolve().parents[2]
VAL_CASES = [(fov, phase) for fov in ("chest", "heart", "abdomen") for phase in ("plain", "synth")] + [
    ("chest", "pulmonary_arterial"), ("heart", "systemic_arterial"), ("abdomen", "portal_venous"),
    ("pelvis", "systemic_arterial"), ("pelvis", "plain")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--base", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--budget-minutes", type=float, default=600.0, help="wall clock for this invocation's training")
    p.add_argument("--checkpoint-dir", type=Path, default=REPO / "training" / "data" / "checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=1, help="data workers (rendering is the bottleneck)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--real-npz", type=Path, default=REPO / "training" / "data" / "real_j2k_2mm.npz",
                   help="the real contrast abdomen series at 2 mm (made by `--prepare-real`)")
    p.add_argument("--prepare-real", action="store_true", help="write --real-npz from ../shared/data and exit")
    p.add_argument("--export-now", action="store_true", help="export the current checkpoint even if not done")
    p.add_argument("--train-only", action="store_true", help="never export (e.g. on a GPU machine)")
    p.add_argument("--val-seeds", type=int, default=3)
    p.add_argument("--model-out", type=Path, default=REPO / "models" / "vessel_unet.onnx")
    p.add_argument("--report-dir", type=Path, default=REPO / "models" / "vessel_unet_report")
    p.add_argument("--fixture-dir", type=Path, default=REPO / "tests" / "fixtures" / "vessel_unet_parity")
    return p.parse_args(argv)


def log(msg):
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_real(path: Path):
    from . import data as D
    case = D.prepare(D.load_j2k_training_case(), (2.0, 2.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, hu=case.hu.astype(np.float32), labels=case.labels, source=case.source)
    log(f"wrote {path}: {case.hu.shape}, voxels per class {np.bincount(case.labels.ravel(), minlength=4)}")


def load_real(path: Path):
    if not path.is_file():
        return None
    d = np.load(path)
    return {"hu": d["hu"].astype(np.float32), "labels": d["labels"].astype(np.uint8), "source": str(d["source"])}


def calibrate(seed: int) -> dict:
    """Normalisation (nnU-Net style: 0.5/99.5 percentiles of body voxels, mean/std inside them) and
    per-class HU windows (p1-p99 of voxels one voxel inside the class), contrast and synthesised plain."""
    from scipy import ndimage
    rng = np.random.default_rng([seed, 5])
    samples, contrast = [], {c: [] for c in (1, 2, 3)}
    renders = []
    for i in range(12):
        fov = ("chest", "heart", "abdomen", "pelvis")[i % 4]
        phase = ("pulmonary_arterial", "systemic_arterial", "portal_venous")[i % 3]
        renders.append(A.render(20_000_000 + seed * 1000 + i, phase, fov))
    deep = [{c: ndimage.binary_erosion(r.labels == c) for c in (1, 2, 3)} for r in renders]
    for r, d in zip(renders, deep):
        for c in (1, 2, 3):
            contrast[c].append(r.hu[d[c]])
    cw = {CLASS_NAMES[c]: [float(np.percentile(np.concatenate(v), 1)), float(np.percentile(np.concatenate(v), 99))]
          for c, v in contrast.items()}
    plain = {c: [] for c in (1, 2, 3)}
    outside = (A.T["air"], A.T["table"])
    for r, d in zip(renders, deep):
        syn, _ = synthesise_plain(r.hu, blood_labels(r), cw, rng)
        body = ~np.isin(r.tissue, outside)
        samples.append(rng.choice(syn[body], 100_000))
        for c in (1, 2, 3):
            plain[c].append(syn[d[c]])
        samples.append(rng.choice(r.hu[body], 100_000))
    pw = {CLASS_NAMES[c]: [float(np.percentile(np.concatenate(v), 1)), float(np.percentile(np.concatenate(v), 99))]
          for c, v in plain.items()}
    s = np.concatenate(samples)
    lo, hi = -1000.0, float(np.percentile(s, 99.5))  # lungs and airways stay apart from each other
    inside = s[(s >= lo) & (s <= hi)]
    norm = {"clip_hu": [float(lo), float(hi)], "mean_hu": float(inside.mean()), "std_hu": float(inside.std())}
    return {"normalisation": norm, "windows": {"contrast": cw, "plain": pw}}


def loss_fn(logits, target):
    """Cross-entropy + (1 - batch soft Dice over the three vessel classes)."""
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, 4).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)[1:]
    denom = (prob.sum(dims) + onehot.sum(dims))[1:]
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1 - dice.mean()), ce.item()


def lr_factor(it, total, warm=100):
    return min(1.0, (it + 1) / warm) * max(0.0, 1 - it / total) ** 0.9


def train(args, cal, device):
    ck = args.checkpoint_dir / "last.pt"
    net = VesselUNet(base=args.base).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    state = {"iteration": 0, "history": {"iteration": [], "loss": [], "ce": [], "source": []}, "seconds": 0.0}
    if ck.is_file():
        saved = torch.load(ck, map_location=device, weights_only=False)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log(f"resumed at iteration {state['iteration']} ({state['seconds']:.0f} s trained so far)")
    start = state["iteration"]
    if start >= args.iterations or args.export_now:
        return net.cpu().eval(), state

    def save():
        tmp = ck.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "state": state,
                    "config": net.config, "calibration": cal}, tmp)
        os.replace(tmp, ck)

    stream = BatchStream(args.seed, start, args.iterations, cal["windows"]["contrast"], cal["normalisation"],
                         load_real(args.real_npz), args.batch, args.patch)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                         prefetch_factor=4 if args.workers else None,
                                         persistent_workers=False)
    t0 = time.time()
    base_seconds = state["seconds"]
    net.train()
    use_amp = device.type == "cuda"
    for k, x, y, desc in loader:
        assert k == state["iteration"], (k, state["iteration"])
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(k, args.iterations)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = net(x)
        loss, ce = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        state["iteration"] = k + 1
        h = state["history"]
        h["iteration"].append(k + 1)
        h["loss"].append(round(loss.item(), 5))
        h["ce"].append(round(ce, 5))
        h["source"].append(desc)
        elapsed = time.time() - t0
        if (k + 1) % 25 == 0:
            log(f"it {k + 1}/{args.iterations} loss {np.mean(h['loss'][-25:]):.4f} ({elapsed / (k + 1 - start):.2f} s/it,"
                f" lr {opt.param_groups[0]['lr']:.2e})")
        if (k + 1) % args.checkpoint_every == 0 or k + 1 == args.iterations or elapsed > 60 * args.budget_minutes:
            state["seconds"] = base_seconds + time.time() - t0
            save()
        if elapsed > 60 * args.budget_minutes:
            log(f"time budget of {args.budget_minutes} min reached at iteration {k + 1}: checkpoint saved, "
                f"run the same command again to go on")
            break
    state["seconds"] = base_seconds + time.time() - t0
    machine = (torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {args.threads} threads")
    state.setdefault("runs", []).append({"from": start, "to": state["iteration"], "machine": machine,
                                         "workers": args.workers, "seconds": round(time.time() - t0, 1)})
    save()
    return net.cpu().eval(), state


def validation_cases(seed, n, windows):
    cases = []
    for i in range(n):
        pseed = 30_000_000 + seed * 1000 + i
        for fov, phase in VAL_CASES:
            if phase == "synth":
                r = A.render(pseed, "systemic_arterial" if fov != "abdomen" else "portal_venous", fov)
                hu, _ = synthesise_plain(r.hu, blood_labels(r), windows, np.random.default_rng([seed, i]))
                kind = "synth_plain"
            else:
                r = A.render(pseed, phase, fov)
                hu, kind = r.hu, "plain" if phase == "plain" else "contrast"
            cases.append({"name": f"s{pseed}_{fov}_{phase}", "kind": kind, "hu": hu, "labels": r.labels})
    return cases


def evaluate_digital(onnx_path, cases, norm, patch, threads):
    from .evaluate import dice_counts, dice_from_counts, ort_infer, pooled, predict_volume
    infer = ort_infer(onnx_path, threads)
    per_kind, out = {}, []
    for c in cases:
        prob = predict_volume(infer, c["hu"], norm, patch, overlap=0.25)
        pred = prob.argmax(0).astype(np.uint8)
        counts = dice_counts(pred, c["labels"])
        per_kind.setdefault(c["kind"], []).append(counts)
        conf = np.zeros((4, 4), int)
        np.add.at(conf, (c["labels"].ravel(), pred.ravel()), 1)
        out.append({"name": c["name"], "kind": c["kind"], "dice": dice_from_counts(counts),
                    "confusion_reference_rows": conf.tolist()})
    return {k: dice_from_counts(pooled(v)) for k, v in per_kind.items()}, out


def main(argv=None):
    args = parse_args(argv)
    if args.prepare_real:
        prepare_real(args.real_npz)
        return
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    cal_path = args.checkpoint_dir / "calibration.json"
    if cal_path.is_file():
        cal = json.loads(cal_path.read_text())
    else:
        t = time.time()
        cal = calibrate(args.seed)
        cal_path.write_text(json.dumps(cal, indent=1))
        log(f"calibration in {time.time() - t:.0f} s: {cal}")
    log(f"torch {torch.__version__} on {device}, {args.workers} data workers, real series "
        f"{'yes' if args.real_npz.is_file() else 'NO (' + str(args.real_npz) + ' missing)'}")
    net, state = train(args, cal, device)
    done = state["iteration"] >= args.iterations
    if args.train_only or not (done or args.export_now):
        log(f"stopped at iteration {state['iteration']} of {args.iterations}; no export")
        return
    export_and_report(args, net, state, cal)


def export_and_report(args, net, state, cal):
    from .export import export_onnx, git_commit, metadata, set_metadata, write_parity_fixture
    t = time.time()
    norm, windows = cal["normalisation"], cal["windows"]
    meta_training = {
        "seed": args.seed, "torch": torch.__version__, "git_commit": git_commit(REPO),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iterations": state["iteration"], "parameters": parameter_count(net),
        "data": "anatomical digital patients rendered on the fly (training/needle_nav_training/anatomy.py) + the "
                "real contrast abdomen series example_ct_dicom_j2k (TotalSegmentator labels), see the report",
        "validation_dice": None,
    }
    meta = metadata([2.0, 2.0, 2.0], [args.patch] * 3, norm, windows, meta_training)
    export_onnx(net, args.model_out, meta)
    cases = validation_cases(args.seed, args.val_seeds, windows["contrast"])
    summary, per_case = evaluate_digital(args.model_out, cases, norm, args.patch, args.threads)
    meta_training["validation_dice"] = summary
    set_metadata(args.model_out, metadata([2.0, 2.0, 2.0], [args.patch] * 3, norm, windows, meta_training))
    src = next(c for c in cases if c["kind"] == "contrast")
    crop = _parity_crop(src)
    diff = write_parity_fixture(net, args.model_out, crop, norm, args.fixture_dir,
                                f"{src['name']} (held-out digital patient), 32^3 crop around the most vessel classes")
    report = {
        "seed": args.seed, "torch": torch.__version__, "python": platform.python_version(),
        "git_commit": meta_training["git_commit"], "date": meta_training["date"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {**net.config, "parameters": parameter_count(net), "onnx_bytes": args.model_out.stat().st_size},
        "calibration": cal, "iterations": state["iteration"], "seconds_trained": round(state["seconds"], 1),
        "runs": state.get("runs", []),
        "history": state["history"], "validation_summary": summary, "validation_cases": per_case,
        "parity_max_abs_diff": diff, "seconds_export_and_eval": round(time.time() - t, 1),
    }
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    _loss_plot(state["history"], args.report_dir / "loss_curve.png")
    log(f"exported {args.model_out}; validation {summary}; parity {diff:.2e}")


def _parity_crop(case, size=32):
    lab = case["labels"]
    best, best_key = None, (-1, -1)
    for z in range(0, lab.shape[0] - size + 1, 16):
        for y in range(0, lab.shape[1] - size + 1, 16):
            for x in range(0, lab.shape[2] - size + 1, 16):
                sub = lab[z:z + size, y:y + size, x:x + size]
                key = (len(np.unique(sub)), int((sub > 0).sum()))
                if key > best_key:
                    best, best_key = (z, y, x), key
    z, y, x = best
    return case["hu"][z:z + size, y:y + size, x:x + size]


def _loss_plot(h, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    it = np.array(h["iteration"])
    loss = np.array(h["loss"])
    if len(it) == 0:
        return
    w = max(1, len(it) // 100)
    sm = np.convolve(loss, np.ones(w) / w, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(it, loss, alpha=0.25, lw=0.5)
    ax.plot(it[w - 1:], sm)
    ax.set_xlabel("iteration")
    ax.set_ylabel("CE + (1 - soft Dice)")
    ax.set_title("training loss (batches of new digital patients)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
