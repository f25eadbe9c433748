"""Evaluation table of the bundled model (MODEL_CARD.md): temporal metrics of generated clips vs real ones.

For a few prompts, generate 16-frame 128 px clips with the bundled model (no interpolation) and measure, with
the project's flow-based metrics, how much they move (motion magnitude, px/frame), how much they flicker
(flicker index) and how well consecutive frames are explained by warping (warping error); the same metrics on
procedural clips of the training set are the reference. Prints a Markdown table and writes JSON.

    python benchmarks/bundled_eval.py --data data/bundled --out benchmarks/results/bundled_eval.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

PROMPTS = [
    "Mountains, dense fog, red sun, boat on the lake, flying birds.",
    "Steep peaks, light fog, lake, waterfall, pine trees.",
    "Gentle hills, pine trees, flying birds, rain.",
    "Mountains, drifting clouds, pale moon, boat on the lake.",
]


def metrics(frames: np.ndarray) -> dict:
    from shanshui.metrics.video import flicker_index, motion_magnitude, warping_error

    return {"motion_px": motion_magnitude(frames), "flicker": flicker_index(frames),
            "warp_error": warping_error(frames)}


def mean_rows(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/bundled")
    ap.add_argument("--out", default="benchmarks/results/bundled_eval.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--real-clips", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from shanshui.data.decode import read_frames
    from shanshui.pipelines.text_to_video import load_pipeline

    pipe = load_pipeline()
    gen = []
    for prompt in PROMPTS:
        for seed in args.seeds:
            out = pipe(prompt, num_frames=16, num_inference_steps=25, guidance_scale=8.0, seed=seed,
                       output_type="np", progress=False)
            gen.append(metrics((out.frames[0] * 255).round().astype(np.uint8)))
    records = [json.loads(line) for line in (Path(args.data) / "metadata.jsonl").read_text().splitlines()]
    real = []
    for rec in records[: args.real_clips]:
        frames = np.stack(read_frames(Path(args.data) / rec["video"], list(range(16))))
        real.append(metrics(frames))
    table = {"generated": mean_rows(gen), "real": mean_rows(real), "n_generated": len(gen), "n_real": len(real)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=2))
    print("| clips | n | motion (px/frame) | flicker index | warping error |")
    print("|---|---|---|---|---|")
    for name in ("generated", "real"):
        r = table[name]
        print(f"| {name} | {table['n_' + name]} | {r['motion_px']:.3f} | {r['flicker']:.4f} | {r['warp_error']:.4f} |")


if __name__ == "__main__":
    main()
