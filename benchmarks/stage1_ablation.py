"""Compare stage-1 image models (e.g. the first steps of several objectives) on held-out procedural prompts.

For each model folder and each of the first ``--n`` captions of a held-out set, one image is sampled (seed =
prompt index, DDIM, the model's own objective from its scheduler config). Measured against frame 0 of the
held-out clips (the real row):

* ``sun_one_share`` — images of red-sun prompts that show exactly one red region;
* ``nosun_zero_share`` — images of the other prompts that show no red region;
* ``grad_ratio`` — mean image-gradient energy relative to the real frames
  (:mod:`shanshui.metrics.composition`);
* ``attr_acc`` (with ``--probe``) — the attribute probe of ``benchmarks/procedural_quality.py`` reads each
  image; the share of the 10 appearance attributes that match the prompt. It is what tells a landscape from
  a texture: an undertrained model's high-frequency noise has as much gradient energy as brush strokes;
* ``score`` — the mean of the two shares, ``min(grad_ratio, 1 / grad_ratio)`` (too much gradient energy is
  as far from the real frames as too little) and ``attr_acc``; ``--pick FILE`` writes the name of the
  best-scoring model there (ties: the first given).

    python benchmarks/stage1_ablation.py --model eps=runs/a/model --model v=runs/b/model \\
        --heldout data/heldout --n 24 --out results.json --pick winner.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(images: list[np.ndarray], suns: list[bool], probe=None, attrs: list[dict] | None = None) -> dict:
    from shanshui.metrics.composition import gradient_energy, red_regions

    counts = [red_regions(im) for im in images]
    one = [c == 1 for c, s in zip(counts, suns) if s]
    zero = [c == 0 for c, s in zip(counts, suns) if not s]
    row = {"sun_one_share": float(np.mean(one)) if one else None,
           "nosun_zero_share": float(np.mean(zero)) if zero else None,
           "grad_energy": float(np.mean([gradient_energy(im) for im in images])), "red_regions": counts}
    if probe is not None:
        row["attr_acc"] = attribute_accuracy(probe, images, attrs)
    return row


def attribute_accuracy(probe, images: list[np.ndarray], attrs: list[dict]) -> float:
    """Mean over images and the probe's attributes of (probe's reading == the prompt's value)."""
    from shanshui.metrics.probe import frame_outputs

    _, probs = frame_outputs(probe, np.stack(images))
    hits = [probe.label_set[k][int(np.argmax(p[i]))] == a[k] for k, p in probs.items() for i, a in enumerate(attrs)]
    return float(np.mean(hits))


def score(row: dict) -> float:
    r = row["grad_ratio"]
    parts = [row["sun_one_share"], row["nosun_zero_share"], min(r, 1 / r) if r > 0 else 0.0, row.get("attr_acc")]
    return float(np.mean([p for p in parts if p is not None]))


def sample_model(folder: str, captions: list[str], steps: int, guidance: float, device: str,
                 batch: int = 16) -> list[np.ndarray]:
    from shanshui.pipelines.loading import load_base_components
    from shanshui.schedulers import read_objective
    from shanshui.training.image_stage import sample_images

    comps = load_base_components(folder)
    unet, vae, text = (comps[k].to(device).eval() for k in ("unet", "vae", "text_encoder"))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = unet.config.sample_size * factor
    out = []
    for i in range(0, len(captions), batch):
        imgs = sample_images(unet, vae, text, comps["tokenizer"], captions[i:i + batch], steps, guidance, 0, size,
                             objective=read_objective(folder), seeds=list(range(i, min(i + batch, len(captions)))))
        out += [(im.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8) for im in imgs]
    return out


def main(argv=None) -> int:
    from procedural_quality import load_clip, read_metadata

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=8.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--pick", default=None)
    ap.add_argument("--probe", default=None, help="attribute probe (benchmarks/procedural_quality.py --probe)")
    args = ap.parse_args(argv)
    root = Path(args.heldout)
    records = read_metadata(root)[: args.n]
    captions = [r["caption"] for r in records]
    suns = [r["attributes"]["sun"] == "red sun" for r in records]
    attrs = [r["attributes"] for r in records]
    real = [load_clip(root, r, [0])[0] for r in records]
    probe = None
    if args.probe:
        from shanshui.metrics.probe import load_probe

        probe = load_probe(args.probe)
    result = {"settings": {"n": len(records), "steps": args.steps, "guidance": args.guidance,
                           "heldout": str(root), "probe": args.probe},
              "rows": {"real": measure(real, suns, probe, attrs)}}
    g_real = result["rows"]["real"]["grad_energy"]
    for spec in args.model:
        name, _, folder = spec.partition("=")
        t0 = time.time()
        row = measure(sample_model(folder, captions, args.steps, args.guidance, args.device), suns, probe, attrs)
        row["grad_ratio"] = row["grad_energy"] / g_real
        row["score"] = score(row)
        row["seconds"] = round(time.time() - t0, 1)
        row["model"] = folder
        result["rows"][name] = row
        print(f"{name}: one sun {row['sun_one_share']}, no red {row['nosun_zero_share']}, "
              f"gradient {row['grad_ratio']:.2f}x real, attributes {row.get('attr_acc')}, score {row['score']:.3f}",
              flush=True)
    names = [spec.partition("=")[0] for spec in args.model]
    best = max(names, key=lambda n: result["rows"][n]["score"])   # max keeps the first of equal scores
    result["winner"] = best
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.pick:
        Path(args.pick).write_text(best + "\n")
    print(f"winner: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
