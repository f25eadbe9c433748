"""Measured quality of text-to-video models on held-out procedural prompts, read by an attribute probe.

The prompts are the captions of a held-out procedural dataset (60 clips, master seed 12345, never used for
training); its clips are the real reference. A small CNN probe (:mod:`shanshui.metrics.probe`), trained on
frames of the training set (``data/bundled``), reads the appearance attributes of every frame. For each
model and prompt ``i`` the benchmark generates 16 frames at 128 px (seed ``i``, DDIM, no interpolation) and
reports:

* attribute accuracy — frame-averaged probe prediction vs the prompt's labels, per attribute and the mean
  over the 10 appearance attributes; the camera (still / pan left / pan right) is read from DIS optical
  flow with :func:`~shanshui.metrics.probe.camera_direction`. ``sun_motion`` is not measured. As a
  control, the same predictions are also scored against every *other* prompt ("vs other prompts"): a
  video that shows its own prompt scores clearly higher against it than against the others;
* temporal consistency — mean cosine of the probe features of adjacent frames (raw, and after subtracting
  the mean feature of the real held-out frames, which is the more sensitive of the two);
* motion presence — mean DIS flow length (px/frame) over prompts that ask for a moving element (camera
  pan, rising/setting sun, drifting clouds, boat, flying birds, rain) vs prompts that ask for none, and
  their ratio; also camera pan vs still camera. In the real clips the waterfall always falls, the lake
  always shimmers and fog mist always drifts, whatever the caption says, so the "still" prompts are
  not motionless there either;
* Fréchet distance of per-frame probe features, generated vs real held-out frames (the real row gives
  the distance between the held-out clips and as many training clips: a reference, not a floor, since
  those scenes differ from the held-out prompts);
* motion magnitude, flicker index and warping error of :mod:`shanshui.metrics.video`.

Rows: each model, the real held-out clips (the probe's ceiling) and, for accuracy, the majority-class
baseline (the most frequent training value of each attribute, whatever the prompt says).

    # the bundled model, all 60 prompts (renders data/heldout and trains runs/probe/ when missing)
    python benchmarks/procedural_quality.py --model bundled=bundled
    # a quick check on the first 4 prompts
    python benchmarks/procedural_quality.py --model bundled=bundled --limit 4 --out /tmp/pq.json
    # ablations next to the bundled model
    python benchmarks/procedural_quality.py --model bundled=bundled \\
        --model no-sparse-causal=runs/ablate_sc/base:runs/ablate_sc/motion_module.safetensors \\
        --model no-contrastive=runs/ablate_con/base:runs/ablate_con/motion_module.safetensors

The held-out set is the same as ``shanshui data synth --n 60 --out data/heldout --seed 12345 --size 128
--frames 16 --format frames``. Generated clips are cached under ``out/procedural_quality/videos/`` keyed by
the model files and settings (``--regenerate`` ignores the cache); a contact sheet of the first prompts of
each model (frames 0, 5, 10, 15 per row) is written to ``out/procedural_quality/NAME.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HELDOUT_SEED = 12345
HELDOUT_N = 60
FRAMES = 16
SIZE = 128
SHEET_PROMPTS = 4
SHEET_FRAMES = (0, 5, 10, 15)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ data
def read_metadata(root: Path) -> list[dict]:
    from shanshui.errors import check

    path = root / "metadata.jsonl"
    check(path.is_file(), f"'{path}' does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ensure_heldout(root: Path, n: int, seed: int) -> list[dict]:
    """The held-out records, rendering the dataset first if it is missing or short."""
    from shanshui.data.procedural import write_dataset

    meta = root / "metadata.jsonl"
    if not meta.is_file() or len(read_metadata(root)) < n:
        log(f"rendering held-out set: {n} clips, seed {seed} -> {root}")
        write_dataset(root, n=n, seed=seed, size=SIZE, frames=FRAMES, fmt="frames", workers=1, progress=False)
    return read_metadata(root)[:n]


def load_clip(root: Path, record: dict, indices=None, frames: int = FRAMES) -> np.ndarray:
    from shanshui.data.decode import read_frames

    idx = list(range(frames)) if indices is None else list(indices)
    return np.stack(read_frames(root / record["video"], idx))


def spread(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over ``0 .. n_frames-1``."""
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, k)})


# ------------------------------------------------------------------------------------------------ probe
def train_and_save_probe(path: Path, train_root: Path, per_clip: int, epochs: int, threads: int, seed: int,
                         weight_power: float = 0.0):
    from shanshui.metrics.probe import (TrainConfig, appearance_attributes, label_matrix, save_probe,
                                        train_probe)

    records = read_metadata(train_root)
    idx = spread(FRAMES, per_clip)
    t0 = time.time()
    frames = np.concatenate([load_clip(train_root, r, idx) for r in records])
    per_clip_labels = label_matrix([r["attributes"] for r in records], appearance_attributes())
    labels = np.repeat(per_clip_labels, len(idx), axis=0)
    log(f"probe: {len(frames)} training frames ({len(records)} clips x {len(idx)}) "
        f"read in {time.time() - t0:.0f} s")
    t0 = time.time()
    cfg = TrainConfig(epochs=epochs, threads=threads, seed=seed, class_weight_power=weight_power)
    probe, history = train_probe(frames, labels, config=cfg, log=log)
    seconds = time.time() - t0
    extra = {"train_data": str(train_root), "clips": len(records), "frame_indices": idx, "epochs": epochs,
             "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": seed, "threads": threads,
             "class_weight_power": weight_power,
             "loss_per_epoch": history, "train_seconds": round(seconds, 1)}
    save_probe(probe, path, extra)
    log(f"probe: trained in {seconds:.0f} s, saved to {path}")
    return probe


def get_probe(args):
    from shanshui.metrics.probe import load_probe

    path = Path(args.probe)
    if args.retrain_probe or not path.is_file():
        train_and_save_probe(path, Path(args.train_data), args.probe_frames, args.probe_epochs, args.threads,
                             args.probe_seed, args.probe_class_weight)
    probe = load_probe(path)
    info = json.loads(path.with_suffix(".json").read_text()).get("extra", {})
    return probe, {"path": str(path), **info}


# ------------------------------------------------------------------------------------------------ metrics
MOVING = {  # what a caption asks to move (camera pan, sun/moon travel, drifting clouds, boat, birds, rain)
    "camera": lambda v: v != "still",
    "sun_motion": lambda v: v != "still",
    "clouds": bool, "boat": bool, "birds": bool, "rain": bool,
}


def asks_for_motion(attrs: dict) -> bool:
    return any(test(attrs[k]) for k, test in MOVING.items())


def clip_row(probe, frames: np.ndarray, attrs: dict, centre: np.ndarray | None) -> dict:
    """Every per-clip measurement of one uint8 clip ``(F, H, W, 3)`` against its prompt's attributes."""
    from shanshui.metrics.composition import gradient_energy, red_region_counts
    from shanshui.metrics.probe import camera_direction, frame_outputs, median_dx, temporal_cosine
    from shanshui.metrics.video import consecutive_flows, flicker_index, motion_magnitude, warping_error

    feats, probs = frame_outputs(probe, frames)
    pred = {k: probe.label_set[k][int(np.argmax(p.mean(0)))] for k, p in probs.items()}
    flows = consecutive_flows(frames, "dis")
    camera = camera_direction(flows)
    return {
        "pred": pred, "camera_pred": camera, "median_dx": median_dx(flows),
        "correct": {**{k: pred[k] == attrs[k] for k in pred}, "camera": camera == attrs["camera"]},
        "temporal_cos": temporal_cosine(feats),
        "temporal_cos_centred": temporal_cosine(feats, centre) if centre is not None else None,
        "motion_px": motion_magnitude(frames, flows), "flicker": flicker_index(frames, flows),
        "warp_error": warping_error(frames), "asks_motion": asks_for_motion(attrs),
        "pans": attrs["camera"] != "still", "_feats": feats,
        "red_sun": attrs["sun"] == "red sun", "red_regions": red_region_counts(frames).tolist(),
        "grad_energy": gradient_energy(frames),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def mismatched_accuracy(rows: list[dict], prompts: list[dict], keys: list[str]) -> float | None:
    """Mean appearance accuracy of each clip's predictions against every *other* prompt's attributes.

    The control for "does the video show its own prompt": a model (or probe) that answers the same thing
    whatever the prompt scores as well here as against its own prompt.
    """
    if len(rows) < 2:
        return None
    scores = [np.mean([r["pred"][k] == p[k] for k in keys])
              for i, r in enumerate(rows) for j, p in enumerate(prompts) if i != j]
    return float(np.mean(scores))


def summarise(rows: list[dict], prompts: list[dict], keys: list[str], reference_feats: np.ndarray) -> dict:
    from shanshui.metrics.probe import frechet_distance

    acc = {k: _mean([r["correct"][k] for r in rows]) for k in keys + ["camera"]}
    moving = [r["motion_px"] for r in rows if r["asks_motion"]]
    still = [r["motion_px"] for r in rows if not r["asks_motion"]]
    pan = [r["motion_px"] for r in rows if r["pans"]]
    fixed = [r["motion_px"] for r in rows if not r["pans"]]
    ratio = lambda a, b: (float(np.mean(a) / np.mean(b)) if a and b and np.mean(b) > 0 else None)
    feats = np.concatenate([r["_feats"] for r in rows])
    sun_frames = [c == 1 for r in rows if r["red_sun"] for c in r["red_regions"]]
    nosun_frames = [c == 0 for r in rows if not r["red_sun"] for c in r["red_regions"]]
    return {
        "sun_one_share": _mean(sun_frames), "nosun_zero_share": _mean(nosun_frames),
        "grad_energy": _mean([r["grad_energy"] for r in rows]),
        "pan_direction_acc": _mean([r["correct"]["camera"] for r in rows if r["pans"]]),
        "n": len(rows),
        "attr_acc": acc,
        "attr_mean": _mean([acc[k] for k in keys]),
        "attr_mean_other_prompts": mismatched_accuracy(rows, prompts, keys),
        "camera_acc": acc["camera"],
        "temporal_cos": _mean([r["temporal_cos"] for r in rows]),
        "temporal_cos_centred": _mean([r["temporal_cos_centred"] for r in rows]),
        "motion_when_asked": _mean(moving), "motion_when_not": _mean(still),
        "n_asked": len(moving), "n_not": len(still), "motion_ratio": ratio(moving, still),
        "motion_pan": _mean(pan), "motion_still_camera": _mean(fixed), "n_pan": len(pan),
        "pan_ratio": ratio(pan, fixed),
        "fd": frechet_distance(feats, reference_feats),
        "motion_px": _mean([r["motion_px"] for r in rows]),
        "flicker": _mean([r["flicker"] for r in rows]),
        "warp_error": _mean([r["warp_error"] for r in rows]),
    }


def majority_row(train_records: list[dict], prompts: list[dict], keys: list[str]) -> dict:
    """Accuracy of always answering the most frequent training value of each attribute."""
    from collections import Counter

    acc = {}
    for k in keys + ["camera"]:
        top = Counter(json.dumps(r["attributes"][k]) for r in train_records).most_common(1)[0][0]
        acc[k] = float(np.mean([json.dumps(p[k]) == top for p in prompts]))
    return {"n": len(prompts), "attr_acc": acc, "attr_mean": float(np.mean([acc[k] for k in keys])),
            "camera_acc": acc["camera"]}


def public(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# ------------------------------------------------------------------------------------------------ models
def parse_model(spec: str) -> tuple[str, str | None, str | None]:
    """``NAME=bundled`` or ``NAME=BASE_DIR:MOTION_MODULE`` -> (name, base, motion)."""
    from shanshui.errors import check

    name, sep, rest = spec.partition("=")
    check(bool(sep) and name.strip() != "" and rest.strip() != "",
          f"--model '{spec}' must be NAME=bundled or NAME=BASE_DIR:MOTION_MODULE")
    check(name not in ("real", "majority"), f"--model name '{name}' is reserved")
    if rest == "bundled":
        return name, None, None
    base, sep, motion = rest.rpartition(":")
    check(bool(sep) and base != "" and motion != "", f"--model '{spec}' must be NAME=BASE_DIR:MOTION_MODULE")
    check(Path(base).is_dir(), f"--model {name}: base model folder '{base}' does not exist")
    check(Path(motion).is_file(), f"--model {name}: motion module '{motion}' does not exist")
    return name, base, motion


def model_fingerprint(base: str | None, motion: str | None, settings: dict) -> str:
    """A short hash of the model's weight files (path, size, mtime) and the sampling settings."""
    from shanshui.pipelines.loading import BUNDLED_DIR, BUNDLED_MOTION

    base_dir = Path(base) if base else Path(BUNDLED_DIR)
    files = sorted(base_dir.rglob("*.safetensors")) + sorted(base_dir.rglob("*.json"))
    files.append(Path(motion) if motion else Path(BUNDLED_MOTION))
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    blob = json.dumps({"files": stats, **settings}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def generate_all(name, base, motion, prompts, args) -> tuple[list[np.ndarray], dict, int]:
    """Clips for every prompt (cached on disk, with the seconds each took in ``times.json``); returns the
    clips, ``{prompt index: generation seconds}`` of the clips whose time is known, and how many were
    generated in this run."""
    from shanshui.pipelines.text_to_video import load_pipeline

    settings = {"steps": args.steps, "guidance": args.guidance, "frames": args.frames, "size": SIZE}
    cache = Path(args.cache) / name / model_fingerprint(base, motion, settings)
    times_path = cache / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() and not args.regenerate else {}
    clips, pipe, made = [], None, 0
    for i, rec in enumerate(prompts):
        path = cache / f"{i:03d}.npy"
        if path.is_file() and not args.regenerate:
            clips.append(np.load(path))
            continue
        if pipe is None:
            pipe = load_pipeline(device=args.device) if base is None else load_pipeline(base, motion,
                                                                                          device=args.device)
        t0 = time.time()
        out = pipe(rec["caption"], num_frames=args.frames, height=SIZE, width=SIZE, num_inference_steps=args.steps,
                   guidance_scale=args.guidance, seed=i, output_type="np", progress=False)
        clip = (out.frames[0] * 255).round().astype(np.uint8)
        times[str(i)] = round(time.time() - t0, 2)
        made += 1
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, clip)
        os.replace(tmp, path)
        write_json_atomic(times, times_path)
        clips.append(clip)
        log(f"{name}: prompt {i + 1}/{len(prompts)} generated ({times[str(i)]:.1f} s)")
    known = {i: float(times[str(i)]) for i in range(len(prompts)) if str(i) in times}
    return clips, known, made


def save_sheet(clips: list[np.ndarray], path: Path) -> None:
    from PIL import Image

    from shanshui.video_io import contact_sheet

    shown = spread(len(clips[0]), len(SHEET_FRAMES))      # frames 0, 5, 10, 15 of a 16-frame clip
    picked = np.concatenate([c[shown] for c in clips[:SHEET_PROMPTS]])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(picked, cols=len(shown))).save(path)


# ------------------------------------------------------------------------------------------------ report
def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(result: dict, keys: list[str]) -> str:
    rows = result["rows"]
    names = list(rows)
    lines = ["| row | n | attr acc (mean of 10) | vs other prompts | camera acc | temporal cos | "
             "temporal cos (centred) | "
             "motion asked / not (px/f) | ratio | pan / still cam (px/f) | ratio | FD (probe) | "
             "motion px | flicker | warp err |", "|" + "---|" * 15]
    for name in names:
        r = rows[name]
        if name == "majority":
            lines.append(f"| majority baseline | {r['n']} | {_fmt(r['attr_mean'])} | – | "
                         f"{_fmt(r['camera_acc'])} |" + " – |" * 10)
            continue
        lines.append(
            f"| {name} | {r['n']} | {_fmt(r['attr_mean'])} | {_fmt(r['attr_mean_other_prompts'])} | "
            f"{_fmt(r['camera_acc'])} | "
            f"{_fmt(r['temporal_cos'], 4)} | {_fmt(r['temporal_cos_centred'])} | "
            f"{_fmt(r['motion_when_asked'])} / {_fmt(r['motion_when_not'])} "
            f"({r['n_asked']}/{r['n_not']}) | {_fmt(r['motion_ratio'], 2)} | {_fmt(r['motion_pan'])} / "
            f"{_fmt(r['motion_still_camera'])} | {_fmt(r['pan_ratio'], 2)} | {_fmt(r['fd'], 2)} | "
            f"{_fmt(r['motion_px'])} | {_fmt(r['flicker'])} | {_fmt(r['warp_error'], 4)} |")
    lines += ["", "| row | one red sun (sun prompts) | no red (other prompts) | gradient energy | "
              "pan direction acc |", "|---|---|---|---|---|"]
    for name in names:
        r = rows[name]
        if name == "majority":
            continue
        lines.append(f"| {name} | {_fmt(r['sun_one_share'])} | {_fmt(r['nosun_zero_share'])} | "
                     f"{_fmt(r['grad_energy'], 5)} | {_fmt(r['pan_direction_acc'])} |")
    lines += ["", "| attribute | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys + ["camera"]:
        lines.append(f"| {k} | " + " | ".join(_fmt(rows[n]["attr_acc"][k], 2) for n in names) + " |")
    lines.append("| **mean of 10** | " + " | ".join(_fmt(rows[n]["attr_mean"], 3) for n in names) + " |")
    return "\n".join(lines)


def write_json_atomic(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=BASE_DIR:MOTION_MODULE",
                    help="a model to evaluate (repeatable); NAME=bundled is the bundled model")
    ap.add_argument("--heldout", default="data/heldout", help="held-out procedural set (rendered if missing)")
    ap.add_argument("--train-data", default="data/bundled", help="procedural training set for the probe")
    ap.add_argument("--probe", default="runs/probe/probe.safetensors")
    ap.add_argument("--retrain-probe", action="store_true")
    ap.add_argument("--probe-frames", type=int, default=4, help="training frames per clip")
    ap.add_argument("--probe-epochs", type=int, default=12)
    ap.add_argument("--probe-seed", type=int, default=0)
    ap.add_argument("--probe-class-weight", type=float, default=0.5,
                    help="class weights ∝ frequency**-P in the probe loss (0: plain cross-entropy)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    ap.add_argument("--frames", type=int, default=FRAMES,
                    help="frames generated per clip (and taken from the start of each real clip)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is much faster than 2 on a 2-core machine that is busy")
    ap.add_argument("--device", default="cpu", help="where the models generate (cpu, cuda)")
    ap.add_argument("--cache", default="out/procedural_quality/videos")
    ap.add_argument("--regenerate", action="store_true", help="ignore cached generated clips")
    ap.add_argument("--sheets", default="out/procedural_quality")
    ap.add_argument("--out", default="benchmarks/results/procedural_quality.json")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from shanshui.errors import ShanshuiError, check

    try:
        check(args.limit is None or args.limit >= 1, f"--limit={args.limit} must be >= 1")
        check(args.threads >= 1, f"--threads={args.threads} must be >= 1")
        check(2 <= args.frames <= FRAMES, f"--frames={args.frames} must be in 2..{FRAMES}")
        models = [parse_model(s) for s in args.model]
        check(len({m[0] for m in models}) == len(models), "--model names must be distinct")
        torch.set_num_threads(args.threads)
        t_start = time.time()
        from shanshui.metrics.probe import appearance_attributes

        keys = list(appearance_attributes())
        heldout = Path(args.heldout)
        records = ensure_heldout(heldout, HELDOUT_N, HELDOUT_SEED)[: args.limit]
        check(len(records) >= 2, "at least 2 prompts are needed (Fréchet distance)")
        prompts = [r["attributes"] for r in records]
        probe, probe_info = get_probe(args)

        real_clips = [load_clip(heldout, r, frames=args.frames) for r in records]
        train_root = Path(args.train_data)
        train_records = read_metadata(train_root)
        floor_clips = [load_clip(train_root, r, frames=args.frames) for r in train_records[: len(records)]]
        from shanshui.metrics.probe import frame_outputs

        real_feats = np.concatenate([frame_outputs(probe, c)[0] for c in real_clips])
        centre = real_feats.mean(0)
        floor_feats = np.concatenate([frame_outputs(probe, c)[0] for c in floor_clips])

        t0 = time.time()
        real_rows = [clip_row(probe, c, a, centre) for c, a in zip(real_clips, prompts)]
        result = {"rows": {}, "per_prompt": {}, "timing_s": {}}
        result["rows"]["real"] = summarise(real_rows, prompts, keys, floor_feats)
        result["rows"]["majority"] = majority_row(train_records, prompts, keys)
        result["per_prompt"]["real"] = public(real_rows)
        result["timing_s"]["real_metrics"] = round(time.time() - t0, 1)
        save_sheet(real_clips, Path(args.sheets) / "real.png")

        for name, base, motion in models:
            t0 = time.time()
            clips, gen_times, made = generate_all(name, base, motion, records, args)
            t1 = time.time()
            rows = [clip_row(probe, c, a, centre) for c, a in zip(clips, prompts)]
            result["rows"][name] = summarise(rows, prompts, keys, real_feats)
            result["per_prompt"][name] = public(rows)
            per_clip = list(gen_times.values())
            result["timing_s"][name] = {"generated_this_run": made, "clips_timed": len(per_clip),
                                        "generation": round(sum(per_clip), 1),
                                        "per_clip": round(float(np.mean(per_clip)), 2) if per_clip else None,
                                        "metrics": round(time.time() - t1, 1),
                                        "total": round(time.time() - t0, 1)}
            save_sheet(clips, Path(args.sheets) / f"{name}.png")
            log(f"{name}: done in {time.time() - t0:.0f} s")

        result["settings"] = {"heldout": str(heldout), "heldout_seed": HELDOUT_SEED, "prompts": len(records),
                              "limit": args.limit, "frames": args.frames, "size": SIZE, "steps": args.steps,
                              "guidance": args.guidance, "threads": args.threads, "flow": "dis",
                              "models": {n: (b or "bundled") + (f":{m}" if m else "") for n, b, m in models},
                              "captions": [r["caption"] for r in records]}
        result["probe"] = {**probe_info, "heldout_real_accuracy": result["rows"]["real"]["attr_acc"],
                           "heldout_real_mean": result["rows"]["real"]["attr_mean"]}
        result["timing_s"]["total"] = round(time.time() - t_start, 1)
        write_json_atomic(result, Path(args.out))
        print(markdown(result, keys))
        log(f"wrote {args.out} ({time.time() - t_start:.0f} s)")
        return 0
    except ShanshuiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
