"""The one training run: data -> training -> evaluation -> ONNX export -> report.

    python -m needle_nav_training.train --seed 5      (scripts/train-model.sh runs exactly this)

Everything random is seeded from --seed (python `random`, numpy, torch); the run is
deterministic on a given machine and torch build, except that a wall-clock cap
(--max-train-minutes) stops training early if the machine is much slower than expected (the
report then says so).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from . import CLASS_NAMES
from . import data as D
from .augment import AugmentConfig, PatchSampler
from .evaluate import batch_counts, dice_counts, dice_from_counts, ort_infer, pooled, predict_volume
from .export import export_onnx, git_commit, metadata, set_metadata, write_parity_fixture
from .model import VesselUNet, parameter_count
from .synthesis import synthesise_plain

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--data-dir", type=Path, default=REPO / "training" / "data")
    p.add_argument("--phantom-bin", type=Path, default=Path("/tmp/nn_phantom_bin"))
    p.add_argument("--env-script", type=Path, default=REPO / ".setup" / "env.sh")
    p.add_argument("--dims", default="176x128x160")
    p.add_argument("--spacing", default="2x2x2")
    p.add_argument("--train-seeds", type=int, default=16, help="digital patients for training")
    p.add_argument("--contrast-fraction", type=float, default=0.4,
                   help="share of training digital patients kept as contrast CT (rest: synthesised plain)")
    p.add_argument("--val-seeds", type=int, default=3, help="held-out digital patients (contrast + plain each)")
    p.add_argument("--no-real", action="store_true", help="leave out the real JPEG 2000 series")
    p.add_argument("--real-fraction", type=float, default=0.15,
                   help="share of training patches drawn from the real series (contrast + synthesised plain)")
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3600)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--max-train-minutes", type=float, default=27.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base", type=int, default=8)
    p.add_argument("--model-out", type=Path, default=REPO / "models" / "vessel_unet.onnx")
    p.add_argument("--report-dir", type=Path, default=REPO / "models" / "vessel_unet_report")
    p.add_argument("--fixture-dir", type=Path, default=REPO / "tests" / "fixtures" / "vessel_unet_parity")
    p.add_argument("--skip-real-eval", action="store_true")
    return p.parse_args(argv)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def log(msg: str):
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- data


def build_data(args, rng: np.random.Generator):
    t0 = time.time()
    phantom_root = args.data_dir / "phantoms"
    phantom_root.mkdir(parents=True, exist_ok=True)
    base = 1000 + 100 * args.seed
    train_seeds = [base + i for i in range(args.train_seeds)]
    val_seeds = [base + 50 + i for i in range(args.val_seeds)]
    n_contrast = int(round(args.contrast_fraction * len(train_seeds)))
    log(f"digital patients: train seeds {train_seeds[0]}..{train_seeds[-1]}, val seeds {val_seeds}")
    for s in train_seeds + val_seeds:
        D.generate_phantom(args.phantom_bin, phantom_root, s, True, args.dims, args.spacing, args.env_script)
    for s in val_seeds:
        D.generate_phantom(args.phantom_bin, phantom_root, s, False, args.dims, args.spacing, args.env_script)
    t_gen = time.time() - t0

    raw_train = [D.load_phantom(D.phantom_dir(phantom_root, s, True), s, True) for s in train_seeds]
    real_note = None
    if not args.no_real:
        try:
            real = D.load_j2k_training_case()
            raw_train.append(real)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            real_note = f"real JPEG 2000 series skipped: {type(e).__name__}: {e}"
            log(real_note)
    # Training spacing: per-axis median of the training cases' spacings.
    spacings = np.array([c.spacing_xyz for c in raw_train])
    target = tuple(float(v) for v in np.median(spacings, axis=0))
    log(f"training spacing (median) {target} mm from {len(raw_train)} cases")
    train_src = [D.prepare(c, target) for c in raw_train]
    val = []
    for s in val_seeds:
        for contrast in (True, False):
            val.append(D.prepare(D.load_phantom(D.phantom_dir(phantom_root, s, contrast), s, contrast), target))

    # Contrast HU windows from the contrast training cases (before any synthesis).
    contrast_w = D.class_windows(train_src)
    # Training mix: phantom seeds [0, n_contrast) stay contrast, the rest become synthesised
    # plain; the real series enters both ways (it is the only real data).
    entries, factors = [], {}
    for i, c in enumerate(train_src):
        is_real = c.name.startswith("real")
        plain_hu, f = synthesise_plain(c.hu, c.labels, contrast_w["windows"], rng)
        factors[c.name] = f
        if is_real or i < n_contrast:
            # Contrast entry; keeps its synthesised plain and enhancement for the contrast-level
            # augmentation (shell voxels belong to the adjacent class).
            cls = np.where(c.labels > 0, c.labels, ndimage.grey_dilation(c.labels, size=(3, 3, 3))).astype(np.uint8)
            entries.append(D.Case(c.name, c.hu, c.labels, c.spacing_xyz, "contrast", c.source, c.info,
                                  plain=plain_hu, enhancement=(c.hu - plain_hu).astype(np.float32),
                                  enhancement_class=cls))
        if is_real or i >= n_contrast:
            entries.append(D.Case(c.name + "_synth_plain", plain_hu, c.labels, c.spacing_xyz, "synth_plain",
                                  c.source + " -> synthesised plain", c.info))
    plain_w = D.class_windows([e for e in entries if e.kind == "synth_plain"])
    norm = D.intensity_stats(entries, rng)

    # Synthesis fidelity on the held-out seeds: synthesised plain vs the real plain rendering.
    fidelity = []
    for s in val_seeds:
        cc = next(v for v in val if v.name == f"phantom_s{s}_contrast")
        pc = next(v for v in val if v.name == f"phantom_s{s}_plain")
        synth, _ = synthesise_plain(cc.hu, cc.labels, contrast_w["windows"], np.random.default_rng(0))
        ves = cc.labels > 0
        shell = ndimage.binary_dilation(ves, np.ones((3, 3, 3), bool)) & ~ves
        fidelity.append({"seed": s,
                         "mae_hu_vessel_voxels": round(float(np.abs(synth - pc.hu)[ves].mean()), 1),
                         "mae_hu_contrast_vs_plain_vessel_voxels": round(float(np.abs(cc.hu - pc.hu)[ves].mean()), 1),
                         "mae_hu_shell_voxels": round(float(np.abs(synth - pc.hu)[shell].mean()), 1),
                         "median_hu_deep": {CLASS_NAMES[k]: [round(float(np.median(synth[D.deep_mask(cc.labels, k)])), 1),
                                                             round(float(np.median(pc.hu[D.deep_mask(cc.labels, k)])), 1)]
                                            for k in (1, 2, 3)}})
    info = {
        "spacing_xyz": target, "train_seeds": train_seeds, "val_seeds": val_seeds,
        "contrast_seeds": train_seeds[:n_contrast], "synth_plain_seeds": train_seeds[n_contrast:],
        "entries": [{"name": e.name, "kind": e.kind, "shape_zyx": list(e.hu.shape),
                     "voxels_per_class": [int(v) for v in np.bincount(e.labels.ravel(), minlength=4)]}
                    for e in entries],
        "val": [{"name": v.name, "kind": v.kind, "shape_zyx": list(v.hu.shape)} for v in val],
        "real_training_case": None if real_note else raw_train[-1].info, "real_note": real_note,
        "contrast_windows": contrast_w, "plain_windows": plain_w, "normalisation": norm,
        "synthesis_factors": factors, "synthesis_fidelity_val": fidelity,
        "phantom_command": f"needle_nav phantom --seed S --contrast|--plain --phases 1 --dims {args.dims} "
                           f"--spacing {args.spacing}",
        "phantom_binary_sha256": D.sha256(args.phantom_bin) if args.phantom_bin.is_file() else None,
        "seconds_generate": round(t_gen, 1), "seconds_prepare": round(time.time() - t0 - t_gen, 1),
    }
    return entries, val, info


# ---------------------------------------------------------------- training


def loss_fn(logits, target):
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, 4).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)  # batch Dice: pooled over the batch
    inter = (prob * onehot).sum(dims)[1:]
    denom = (prob.sum(dims) + onehot.sum(dims))[1:]
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1 - dice.mean()), ce.item()


def fixed_val_patches(val, patch, norm, rng, per_case=3):
    sampler = PatchSampler(val, patch, norm, rng, p_vessel=1.0, aug=None)
    xs, ys, kinds = [], [], []
    for ci, case in enumerate(val):
        for _ in range(per_case):
            x, y = sampler.extract(case, sampler.centre(ci), augment=False)
            xs.append(x)
            ys.append(y)
            kinds.append(case.kind)
    return np.stack(xs)[:, None], np.stack(ys), kinds


def validate_patches(net, xs, ys, kinds):
    net.eval()
    counts = {"contrast": [], "plain": []}
    with torch.no_grad():
        for i in range(0, len(xs), 4):
            logits = net(torch.from_numpy(xs[i:i + 4]))
            y = torch.from_numpy(ys[i:i + 4])
            for j in range(logits.shape[0]):
                counts[kinds[i + j]].append(batch_counts(logits[j:j + 1], y[j:j + 1]))
    net.train()
    return {k: dice_from_counts(pooled(v)) for k, v in counts.items()}


def train(args, entries, val, norm, rng):
    net = VesselUNet(base=args.base)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: min(1.0, (it + 1) / warm) * (1 - it / args.iterations) ** 0.9)
    real = np.array([e.name.startswith("real") for e in entries])
    weights = np.where(real, args.real_fraction / max(real.sum(), 1), (1 - args.real_fraction) / max((~real).sum(), 1)) \
        if real.any() else None
    sampler = PatchSampler(entries, args.patch, norm, rng, aug=AugmentConfig(), weights=weights)
    vx, vy, vk = fixed_val_patches(val, args.patch, norm, np.random.default_rng(args.seed + 1))
    history = {"iteration": [], "loss": [], "ce": [], "val": []}
    t0 = time.time()
    stopped_early = None
    t_data = 0.0
    net.train()
    for it in range(args.iterations):
        td = time.time()
        x, y = sampler.batch(args.batch)
        t_data += time.time() - td
        logits = net(torch.from_numpy(x))
        loss, ce = loss_fn(logits, torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        sched.step()
        history["iteration"].append(it + 1)
        history["loss"].append(round(loss.item(), 5))
        history["ce"].append(round(ce, 5))
        last = it + 1 == args.iterations
        if (it + 1) % args.val_every == 0 or last:
            v = validate_patches(net, vx, vy, vk)
            history["val"].append({"iteration": it + 1, **v})
            el = time.time() - t0
            log(f"it {it + 1}/{args.iterations} loss {np.mean(history['loss'][-args.val_every:]):.4f} "
                f"val contrast {v['contrast']} plain {v['plain']} ({el / (it + 1):.2f} s/it)")
        if time.time() - t0 > 60 * args.max_train_minutes and not last:
            stopped_early = f"wall-clock cap of {args.max_train_minutes} min reached at iteration {it + 1}"
            log(stopped_early)
            v = validate_patches(net, vx, vy, vk)
            history["val"].append({"iteration": it + 1, **v})
            break
    net.eval()
    return net, history, {"seconds_train": round(time.time() - t0, 1), "seconds_sampling": round(t_data, 1),
                          "iterations_done": history["iteration"][-1], "stopped_early": stopped_early}


# ---------------------------------------------------------------- evaluation


def evaluate_val(infer, val, norm, patch):
    per_case, counts = [], {"contrast": [], "plain": []}
    for v in val:
        t = time.time()
        prob = predict_volume(infer, v.hu, norm, patch)
        pred = prob.argmax(0).astype(np.uint8)
        c = dice_counts(pred, v.labels)
        counts[v.kind].append(c)
        per_case.append({"name": v.name, "kind": v.kind, "dice": dice_from_counts(c),
                         "voxels_true": {k: c[k][2] for k in c}, "voxels_pred": {k: c[k][1] for k in c},
                         "seconds": round(time.time() - t, 1)})
        log(f"val {v.name}: {per_case[-1]['dice']}")
    summary = {}
    for kind, cs in counts.items():
        summary[kind] = {
            "pooled": dice_from_counts(pooled(cs)),
            "mean_over_cases": {n: round(float(np.mean([dice_from_counts(c)[n] for c in cs])), 4) for n in CLASS_NAMES[1:]},
        }
    return summary, per_case


def evaluate_real_heldout(infer, norm, target, patch):
    """Agreement with TotalSegmentator on the held-out real cases (never trained on)."""
    import nibabel as nib

    out = []
    # Chest CTA: pulmonary artery -> artery.
    base = D.SHARED / "chest_cta_pulmonary_artery"
    hu, sp, _ = D.load_nifti_lps(base / "ct_cropped.nii.gz")
    pa, _, _ = D.load_nifti_lps(base / "pulmonary_artery.nii.gz", np.uint8)
    lab = (pa > 0).astype(np.uint8)  # 1 = artery
    out.append(_eval_real(infer, norm, target, patch, "chest_cta_pulmonary_artery (contrast)", hu, lab, sp,
                          ["artery"], "pulmonary_artery.nii.gz -> artery"))
    # Abdomen non-contrast: example_seg.nii.gz (30 slices) lies on slices 82..111 of
    # example_ct.nii.gz (= example_ct_sm.nii.gz, whose header keeps the full volume's origin).
    base = D.SHARED / "abdomen_ct_vessels"
    img = nib.load(str(base / "example_ct.nii.gz"))
    seg_img = nib.load(str(base / "example_seg.nii.gz"))
    full = np.asanyarray(img.dataobj).astype(np.float32)
    nz = seg_img.shape[2]
    sm = nib.load(str(base / "example_ct_sm.nii.gz"))
    sm_data = np.asanyarray(sm.dataobj).astype(np.float32)
    k0 = full.shape[2] - nz
    if not np.array_equal(full[:, :, k0:], sm_data):
        raise ValueError("example_ct_sm is not the top slab of example_ct")
    sub = nib.Nifti1Image(full[:, :, k0:], img.affine @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, k0], [0, 0, 0, 1]], float))
    seg = np.asanyarray(seg_img.dataobj).astype(np.int32)
    lab = np.zeros(seg.shape, np.uint8)
    for tid, l in D.TOTALSEG_TO_LABEL.items():
        lab[seg == tid] = l
    hu_lps, _, zooms = D.reorient_lps(sub, full[:, :, k0:])
    lab_lps, _, _ = D.reorient_lps(sub, lab)
    out.append(_eval_real(infer, norm, target, patch,
                          f"abdomen example_ct.nii.gz slices {k0}..{full.shape[2] - 1} (non-contrast)",
                          D.to_tensor_order(hu_lps), D.to_tensor_order(lab_lps), zooms, ["vein", "aorta"],
                          "TotalSegmentator 52 aorta -> aorta, 63 IVC + 64 portal/splenic vein -> vein"))
    return out


def _eval_real(infer, norm, target, patch, name, hu, lab, spacing, classes, mapping):
    t = time.time()
    case = D.prepare(D.Case(name, hu, lab, spacing, "real", name), target)
    prob = predict_volume(infer, case.hu, norm, patch)
    pred = prob.argmax(0).astype(np.uint8)
    c = dice_counts(pred, case.labels)
    d = dice_from_counts(c)
    res = {"case": name, "labels": mapping, "grid_zyx_at_model_spacing": list(case.hu.shape),
           "dice": {k: d[k] for k in classes}, "voxels_true": {k: c[k][2] for k in classes},
           "voxels_pred": {k: c[k][1] for k in CLASS_NAMES[1:]}, "seconds": round(time.time() - t, 1)}
    log(f"held-out real {name}: {res['dice']}")
    return res


def parity_crop(case: D.Case, size: int = 32):
    """The size^3 crop of a validation case with the most vessel classes, then vessel voxels."""
    best, best_key = None, (-1, -1)
    lab = case.labels
    for z in range(0, lab.shape[0] - size + 1, 8):
        for y in range(0, lab.shape[1] - size + 1, 8):
            for x in range(0, lab.shape[2] - size + 1, 8):
                w = lab[z:z + size, y:y + size, x:x + size]
                counts = np.bincount(w.ravel(), minlength=4)[1:]
                key = (int((counts > 20).sum()), int(counts.sum()))
                if key > best_key:
                    best, best_key = (z, y, x), key
    z, y, x = best
    return case.hu[z:z + size, y:y + size, x:x + size], best, best_key


# ---------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    log(f"torch {torch.__version__}, {args.threads} threads, seed {args.seed}")

    entries, val, info = build_data(args, rng)
    norm = info["normalisation"]
    log(f"data ready in {time.time() - t_start:.0f} s: {len(entries)} training entries, {len(val)} validation "
        f"volumes; normalisation {norm['clip_hu']} mean {norm['mean_hu']} std {norm['std_hu']}")

    net, history, tinfo = train(args, entries, val, norm, rng)
    log(f"trained {tinfo['iterations_done']} iterations in {tinfo['seconds_train']} s")

    # Export first, then evaluate the exported model in onnxruntime (what ships), then store
    # the validation Dice in its metadata (the graph is not touched again).
    t = time.time()
    training_meta = {
        "seed": args.seed, "torch": torch.__version__, "git_commit": git_commit(REPO),
        "validation_dice": None,
        "validation": f"held-out digital-patient seeds {info['val_seeds']}: contrast, and real --plain renderings; "
                      f"Dice pooled over the cases, whole volume, sliding window at the patch size, no refinement",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iterations": tinfo["iterations_done"], "parameters": parameter_count(net),
    }
    windows = {"contrast": info["contrast_windows"]["windows"], "plain": info["plain_windows"]["windows"]}
    export_onnx(net, args.model_out, metadata(info["spacing_xyz"], [args.patch] * 3, norm, windows, training_meta))
    t_export = time.time() - t

    t = time.time()
    infer = ort_infer(args.model_out, args.threads)
    val_summary, val_cases = evaluate_val(infer, val, norm, args.patch)
    real_eval, real_err = [], None
    if not args.skip_real_eval:
        try:
            real_eval = evaluate_real_heldout(infer, norm, info["spacing_xyz"], args.patch)
        except Exception as e:  # noqa: BLE001
            real_err = f"{type(e).__name__}: {e}"
            log(f"held-out real evaluation failed: {real_err}")
    t_eval = time.time() - t

    t = time.time()
    training_meta["validation_dice"] = {k: v["pooled"] for k, v in val_summary.items()}
    meta = metadata(info["spacing_xyz"], [args.patch] * 3, norm, windows, training_meta)
    set_metadata(args.model_out, meta)
    src = next(v for v in val if v.kind == "contrast")
    crop, origin, key = parity_crop(src)
    diff = write_parity_fixture(net, args.model_out, crop, norm, args.fixture_dir,
                                f"{src.name} (held-out validation digital patient, contrast), body-cropped at "
                                f"the model spacing, crop origin zyx {list(origin)}: {key[0]} vessel classes, "
                                f"{key[1]} vessel voxels")
    t_export += time.time() - t
    log(f"exported {args.model_out} ({args.model_out.stat().st_size / 1e6:.2f} MB), parity max abs diff {diff:.2e}")

    from .report import write_report
    report = {
        "seed": args.seed, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "git_commit": training_meta["git_commit"],
        "date": training_meta["date"], "threads": args.threads, "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {**net.config, "parameters": parameter_count(net),
                  "onnx_bytes": args.model_out.stat().st_size, "opset": 17},
        "data": info, "training": tinfo, "history": history,
        "validation": {"summary": val_summary, "cases": val_cases},
        "heldout_real": real_eval, "heldout_real_error": real_err,
        "parity": {"max_abs_diff": diff, "crop_origin_zyx": list(origin), "source": src.name},
        "timings_s": {"data": info["seconds_generate"] + info["seconds_prepare"], "train": tinfo["seconds_train"],
                      "evaluate": round(t_eval, 1), "export": round(t_export, 1),
                      "total": round(time.time() - t_start, 1)},
        "metadata": meta,
    }
    write_report(report, args.report_dir)
    log(f"report in {args.report_dir}; total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
