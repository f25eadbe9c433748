"""Keyframes (training-free): does a pinned frame flash? Measured on the bundled model.

For each seed a keyframe is taken from a *different* generation of the same prompt (frame 0 of the video for
seed + 1000, so the keyframe is a plausible image for the model, but not the frame the seed would have made),
and pinned at the middle index (and, in a second setting, at the first and last index). Measured on the
decoded frames in [0, 1]:

* ``pinned_psnr_roundtrip`` — PSNR (dB) of the pinned frame against the keyframe's VAE round trip (the
  pipeline's promise: equal up to float error), and ``pinned_psnr_keyframe`` against the keyframe itself
  (what the VAE loses);
* ``flash_ratio`` — mean |frame_i − frame_{i+1}| over the pairs that touch a pinned frame, divided by the
  same over all other pairs (≤ 1: the pinned frame does not jump out of the sequence);
* ``dE_pinned_vs_neighbours`` — CIE76 ΔE between the mean Lab colour of the pinned frame and that of its
  neighbours, against ``dE_other_neighbours`` — the same between ordinary neighbouring frames (a colour
  flash shows up as a larger first number);
* the same numbers without keyframes (``plain``) and with ``decay = 0`` (pinning only, neighbours start from
  their own noise) as ablation;
* with ``--keyframe-guidance 0 0.5 1``, each setting also with neighbour guidance ``g``
  (:meth:`shanshui.control.keyframes.KeyframePins.guide`), rows named ``decay2-g0.5/middle`` etc.

    python benchmarks/keyframes.py [--frames 16] [--steps 15] [--seeds 3]
    python benchmarks/keyframes.py --model MODEL_DIR --motion-module MM.safetensors --keyframe-guidance 0 0.5 1 \
        --decays 2 --out results.json
Writes benchmarks/results/keyframes_bundled.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

PROMPT = "Misty mountains, pines, a boat on the lake, light fog."


def lab_mean(frame):
    import cv2
    import numpy as np

    lab = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.float32), cv2.COLOR_RGB2LAB)  # float input: L 0..100
    return lab.reshape(-1, 3).mean(0)


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def measure(frames, pinned: list[int], key_rt=None, key=None) -> dict:
    import numpy as np

    n = len(frames)
    diffs = [float(np.abs(frames[i + 1] - frames[i]).mean()) for i in range(n - 1)]
    touch = [i for i in range(n - 1) if i in pinned or i + 1 in pinned]
    other = [i for i in range(n - 1) if i not in touch]
    labs = [lab_mean(f) for f in frames]
    de_pin = [float(np.linalg.norm(labs[p] - labs[q])) for p in pinned for q in (p - 1, p + 1) if 0 <= q < n]
    de_other = [float(np.linalg.norm(labs[i + 1] - labs[i])) for i in other]
    out = dict(flash_ratio=statistics.mean(diffs[i] for i in touch) / statistics.mean(diffs[i] for i in other),
               diff_at_pins=statistics.mean(diffs[i] for i in touch),
               diff_elsewhere=statistics.mean(diffs[i] for i in other),
               dE_pinned_vs_neighbours=statistics.mean(de_pin), dE_other_neighbours=statistics.mean(de_other))
    if key_rt is not None:
        out["pinned_psnr_roundtrip"] = statistics.mean(psnr(frames[p], key_rt[j]) for j, p in enumerate(pinned))
        out["pinned_psnr_keyframe"] = statistics.mean(psnr(frames[p], key[j]) for j, p in enumerate(pinned))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--motion-module", default=None)
    ap.add_argument("--decays", type=float, nargs="+", default=[2.0, 0.0])
    ap.add_argument("--keyframe-guidance", type=float, nargs="+", default=[0.0])
    ap.add_argument("--settings", nargs="+", default=["middle", "ends"], choices=["middle", "ends"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "keyframes_bundled.json"))
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from shanshui.control.keyframes import encode_rgb
    from shanshui.pipelines.text_to_video import load_pipeline

    pipe = load_pipeline(args.model, args.motion_module)
    L = args.frames
    kw = dict(num_frames=L, num_inference_steps=args.steps, progress=False)
    settings = {k: v for k, v in {"middle": [L // 2], "ends": [0, L - 1]}.items() if k in args.settings}
    rows: dict[str, list[dict]] = {}
    t0 = time.time()
    for s in range(args.seeds):
        plain = pipe(PROMPT, seed=s, **kw).frames[0]
        for name, idx in settings.items():
            rows.setdefault(f"plain/{name}", []).append(measure(plain, idx))
        donor = pipe(PROMPT, seed=s + 1000, **kw).frames[0]
        for name, idx in settings.items():
            keys = [donor[0] if j == 0 else donor[-1] for j in range(len(idx))]
            keys_u8 = [(k * 255 + 0.5).astype(np.uint8) for k in keys]
            with torch.no_grad():
                rts = [pipe.decode_latents(encode_rgb(pipe, k[None]))[0, 0].permute(1, 2, 0).numpy() for k in keys_u8]
            for decay in args.decays:
                for g in args.keyframe_guidance:
                    out = pipe(PROMPT, seed=s, keyframes=list(zip(idx, keys_u8)), keyframe_decay=decay,
                               keyframe_guidance=g, **kw).frames[0]
                    label = f"decay{decay:g}" + (f"-g{g:g}" if g else "")
                    rows.setdefault(f"{label}/{name}", []).append(
                        measure(out, idx, rts, [k.astype(np.float32) / 255 for k in keys_u8]))
        print(f"seed {s} done ({time.time() - t0:.0f} s)", flush=True)
    summary = {k: {m: statistics.mean(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    result = dict(model=args.model or "bundled", motion_module=args.motion_module, prompt=PROMPT, frames=L, steps=args.steps, seeds=args.seeds,
                  guidance=8.0, machine=platform.platform(), seconds=round(time.time() - t0, 1),
                  summary=summary, runs=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    cols = ["flash_ratio", "diff_at_pins", "diff_elsewhere", "dE_pinned_vs_neighbours", "dE_other_neighbours",
            "pinned_psnr_roundtrip", "pinned_psnr_keyframe"]
    print(f"{'setting':18s} " + " ".join(f"{c[:14]:>14s}" for c in cols))
    for k, v in summary.items():
        print(f"{k:18s} " + " ".join(f"{v.get(c, float('nan')):14.3f}" for c in cols))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
