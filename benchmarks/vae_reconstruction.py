"""Reconstruction quality of the VAE of one or more model folders on held-out procedural frames.

Encodes frame 8 of every clip of a procedural set (posterior mean), decodes it and reports the mean PSNR and
SSIM (``shanshui.metrics.video``) against the original. MODEL_CARD.md uses it to show what the decoder-only
phase of ``train-image`` (``vae.decoder_steps``) bought:

    python benchmarks/vae_reconstruction.py runs/bundled/stage1/model-4400 runs/bundled/stage1/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def reconstruct(vae, frames: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    return ((rec.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="diffusers model folders (their vae/ is used)")
    ap.add_argument("--data", default="data/heldout", help="procedural set (shanshui data synth)")
    ap.add_argument("--frame", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from shanshui.data.decode import read_frames
    from shanshui.metrics.video import psnr, ssim
    from shanshui.pipelines.loading import load_base_components

    root = Path(args.data)
    records = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    frames = np.stack([read_frames(root / r["video"], [args.frame])[0] for r in records])
    print(f"{len(frames)} frames from {root}")
    print("| model | PSNR (dB) | SSIM |")
    print("|---|---|---|")
    for folder in args.models:
        vae = load_base_components(folder)["vae"].eval()
        rec = reconstruct(vae, frames)
        p = np.mean([psnr(a, b) for a, b in zip(frames, rec)])
        s = np.mean([ssim(a, b) for a, b in zip(frames, rec)])
        print(f"| {folder} | {p:.2f} | {s:.4f} |")


if __name__ == "__main__":
    main()
