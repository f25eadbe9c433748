"""Stand-in for NADM Table I on this machine: the bundled model vs real procedural clips, with the
project's attribute probe as the feature network (no I3D/Inception/CLIP weights exist offline).

The numbers come from the same code as ``shanshui evaluate`` — videos decoded by
:class:`shanshui.metrics.suite.VideoSet`, distances from :func:`~shanshui.metrics.frechet_distance` /
:func:`~shanshui.metrics.kernel_distance`, the score from :func:`~shanshui.metrics.inception_score`, the
table from :func:`~shanshui.metrics.suite.format_table` — but the feature network is a small CNN trained
on procedural frames, so **they are not comparable to any paper's FVD/KVD/IS**:

* probe-FD / probe-KD: Fréchet / polynomial-kernel distance of per-frame probe features (128-d),
  generated vs real held-out frames (unbiased covariance, SciPy ``sqrtm`` route; the eigen route is
  stored too as a parity check);
* probe-IS: per attribute head of the probe, the Inception-Score formula on the frame probabilities
  (one split), then the geometric mean over the 10 heads (``exp`` of the mean log score).

Rows: the bundled model (one video per held-out caption, seed 0, generated with
``shanshui generate --prompts ... --out-dir ...``); as a reference, procedural clips from another master
seed (the same renderer, other scenes); and the probe-IS of the real held-out clips themselves.

    python benchmarks/eval_standin.py                    # 24 prompts, 8 frames (the committed result)
    python benchmarks/eval_standin.py --prompts 16 --out /tmp/standin.json

Everything is cached under ``out/eval_standin/``: the probe's training set (160 clips, master seed 0),
the held-out set (master seed 12345, the captions are the prompts), the reference set (seed 777), the
probe, and the generated videos in a folder named after a fingerprint of the bundled model's files, so
a new bundled model is generated afresh.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def render(root: Path, n: int, seed: int, frames: int) -> list[dict]:
    from shanshui.data.procedural import write_dataset

    if not (root / "metadata.jsonl").is_file() or len((root / "metadata.jsonl").read_text().splitlines()) < n:
        log(f"rendering {n} procedural clips (seed {seed}, {frames} frames) -> {root}")
        write_dataset(root, n=n, seed=seed, size=SIZE, frames=frames, fmt="frames", workers=1, progress=False)
    return [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines()[:n]]


def bundled_fingerprint() -> str:
    from shanshui.pipelines.loading import BUNDLED_DIR, BUNDLED_MOTION

    files = sorted(Path(BUNDLED_DIR).rglob("*.safetensors")) + [Path(BUNDLED_MOTION)]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def get_probe(path: Path, train_root: Path, n_train: int, epochs: int):
    from shanshui.metrics.probe import TrainConfig, appearance_attributes, label_matrix, load_probe, save_probe, \
        train_probe

    if path.is_file():
        return load_probe(path)
    records = render(train_root, n_train, 0, 4)
    from shanshui.data.decode import read_frames

    frames = np.concatenate([np.stack(read_frames(train_root / r["video"], [0, 1, 2, 3])) for r in records])
    labels = np.repeat(label_matrix([r["attributes"] for r in records], appearance_attributes()), 4, axis=0)
    t0 = time.time()
    probe, hist = train_probe(frames, labels, config=TrainConfig(epochs=epochs, threads=1, seed=0), log=log)
    save_probe(probe, path, {"train_clips": n_train, "frames_per_clip": 4, "epochs": epochs, "loss": hist,
                             "seconds": round(time.time() - t0, 1)})
    return probe


def probe_outputs(probe, videos) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from shanshui.metrics.probe import frame_outputs

    feats, probs = [], {k: [] for k in probe.keys}
    for _, clip in videos.clips():
        f, p = frame_outputs(probe, clip)
        feats.append(f)
        for k in probs:
            probs[k].append(p[k])
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in probs.items()}


def row(feats, probs, real_feats) -> dict:
    from shanshui.metrics import frechet_distance, inception_score
    from shanshui.metrics.suite import distribution_scores

    s = distribution_scores(feats, real_feats, ddof=1, fd_method="sqrtm")
    per_head = {k: inception_score(p, splits=1, kind="probs")[0] for k, p in probs.items()}
    proto = "probe, per frame"
    out = {"probe-FD": {"value": s["fd"], "protocol": proto,
                        "eigen_route": frechet_distance(feats, real_feats, ddof=1, method="eigen")},
           "probe-KD": {"value": s["kd"]["value"], "protocol": proto},
           "probe-IS": {"value": float(np.exp(np.mean(np.log(list(per_head.values()))))), "protocol": proto,
                        "per_head": per_head},
           "n_frames": int(len(feats))}
    if s["warning"]:
        out["probe-FD"]["warning"] = s["warning"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24, help="held-out captions used as prompts")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--train-clips", type=int, default=160)
    ap.add_argument("--probe-epochs", type=int, default=8)
    ap.add_argument("--work", default=str(ROOT / "out" / "eval_standin"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_standin.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    t_start = time.time()
    from shanshui.cli import main as cli
    from shanshui.metrics.suite import VideoSet, format_table

    probe = get_probe(work / "probe" / "probe.safetensors", work / "train", args.train_clips, args.probe_epochs)
    heldout = render(work / "heldout", args.prompts, 12345, args.frames)
    other = render(work / "reference", args.prompts, 777, args.frames)
    prompts_file = work / f"prompts{args.prompts}.txt"
    prompts_file.parent.mkdir(parents=True, exist_ok=True)
    prompts_file.write_text("\n".join(r["caption"] for r in heldout) + "\n")
    gen_dir = work / f"generated-{bundled_fingerprint()}-{args.prompts}p-{args.frames}f-{args.steps}s"
    t0 = time.time()
    rc = cli(["generate", "--prompts", str(prompts_file), "--out-dir", str(gen_dir), "--seeds", "0",
              "--frames", str(args.frames), "--size", str(SIZE), "--steps", str(args.steps), "--format", "gif"])
    assert rc == 0, f"generation failed ({rc})"
    gen_seconds = time.time() - t0
    real = VideoSet.open(work / "heldout" / "clips", args.frames, "--real")
    real_feats, real_probs = probe_outputs(probe, real)
    rows = {}
    gen_feats, gen_probs = probe_outputs(probe, VideoSet.open(gen_dir, args.frames, "generated"))
    rows["bundled model"] = row(gen_feats, gen_probs, real_feats)
    ref_feats, ref_probs = probe_outputs(probe, VideoSet.open(work / "reference" / "clips", args.frames, "reference"))
    rows["procedural clips, other scenes (reference)"] = row(ref_feats, ref_probs, real_feats)
    real_row = row(real_feats, real_probs, real_feats)  # FD/KD of a set with itself are 0: only the IS is shown
    rows["real held-out clips (probe-IS only)"] = {"probe-IS": real_row["probe-IS"], "n_frames": real_row["n_frames"]}
    note = ("Stand-in: the feature network is the project's procedural attribute probe, not I3D/Inception; "
            "these numbers are NOT comparable to any paper's FVD/KVD/IS.")
    table = format_table({k: {m: v for m, v in r.items() if m.startswith("probe")} for k, r in rows.items()}, note)
    print(table)
    result = {"table": table, "rows": rows, "settings": {
        "prompts": args.prompts, "frames": args.frames, "size": SIZE, "steps": args.steps, "seed": 0,
        "heldout_seed": 12345, "reference_seed": 777, "train_clips": args.train_clips,
        "probe_epochs": args.probe_epochs, "bundled_fingerprint": bundled_fingerprint(),
        "captions": [r["caption"] for r in heldout]},
        "timing_s": {"generation": round(gen_seconds, 1), "total": round(time.time() - t_start, 1)},
        "command": "python benchmarks/eval_standin.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
