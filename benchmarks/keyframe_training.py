"""Ablation of CCDM's trained keyframe term (λ2 = ``loss.lambda_key``) on the bundled model — a SMALL run.

Two fine-tunings of the bundled motion module start from the same weights, data, seed and step count, and
differ only in ``loss.lambda_key`` (0 vs ``--lambda-key``). Each resulting module then generates videos with a
keyframe pinned in the middle (taken from another generation of the same prompt, as in
``benchmarks/keyframes.py``), pinned clean (``keyframe_mode="clean"``, what λ2 trains for) and noised (the
training-free mode), and the pinned frame is compared with its neighbours:

* ``flash_ratio`` — mean |frame_i − frame_{i+1}| at pairs touching the pinned frame / elsewhere (≤ 1: no flash);
* ``dE_pinned_vs_neighbours`` vs ``dE_other_neighbours`` — colour jump at the keyframe vs ordinary steps;
* ``pinned_psnr_roundtrip`` — keyframe fidelity (the pinned frame against the keyframe's VAE round trip).

The data are procedural clips (``shanshui data synth``); with a few dozen steps on a CPU this measures only
whether the term moves these numbers at all, not what a full training run would reach.

    python benchmarks/keyframe_training.py [--steps 40] [--lambda-key 1.0] [--seeds 2]
Writes benchmarks/results/keyframe_training_bundled.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Misty mountains, pines, a boat on the lake, light fog."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps per run")
    ap.add_argument("--lambda-key", type=float, default=1.0)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sample-steps", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--work", default="runs/keyframe_ablation")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "keyframe_training_bundled.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from shanshui.pipelines.loading import BUNDLED_DIR, BUNDLED_MOTION
    from shanshui.training.config import config_from_dict
    from shanshui.training.loop import train

    work = Path(args.work)
    data = work / "data"
    if not (data / "metadata.jsonl").exists():
        subprocess.run([sys.executable, "-m", "shanshui.cli", "data", "synth", "--n", "24", "--out", str(data),
                        "--size", "128", "--frames", str(args.frames), "--format", "frames", "--workers", "1"],
                       check=True)
    t0 = time.time()
    modules = {}
    for lam in (0.0, args.lambda_key):
        cfg = config_from_dict(dict(
            output_dir=str(work / f"lambda_key_{lam:g}"), seed=0, mixed_precision="no", log_every=10,
            model=dict(base_model=str(BUNDLED_DIR), motion_module=str(BUNDLED_MOTION), num_attention_heads=4,
                       adapter_hidden_dim=256, adapter_proj_dim=64),
            data=dict(root=str(data), frames=args.frames, stride=1, size=128, text_dropout=0.1),
            optim=dict(lr=1e-4, batch_size=1), schedule=dict(max_steps=args.steps, warmup_steps=0),
            loss=dict(lambda_con=0.07, m=4, lambda_key=lam, keyframes=1),
            checkpoint=dict(every=0, total_limit=1), validation=dict(every=0, prompts=[])))
        result = train(cfg, progress=False)
        modules[lam] = result.final_dir / "motion_module.safetensors"
        print(f"trained lambda_key={lam:g}: {result.step} steps, last loss {result.last_loss} "
              f"({time.time() - t0:.0f} s)", flush=True)

    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from keyframes import measure

    from shanshui.control.keyframes import encode_rgb
    from shanshui.pipelines.text_to_video import load_pipeline

    L = args.frames
    kw = dict(num_frames=L, num_inference_steps=args.sample_steps, progress=False)
    rows: dict[str, list[dict]] = {}
    for lam, path in modules.items():
        pipe = load_pipeline(BUNDLED_DIR, path)
        for s in range(args.seeds):
            donor = pipe(PROMPT, seed=s + 1000, **kw).frames[0]
            key = (donor[0] * 255 + 0.5).astype(np.uint8)
            with torch.no_grad():
                rt = pipe.decode_latents(encode_rgb(pipe, key[None]))[0, 0].permute(1, 2, 0).numpy()
            for mode in ("clean", "noised"):
                out = pipe(PROMPT, seed=s, keyframes=[(L // 2, key)], keyframe_mode=mode, **kw).frames[0]
                rows.setdefault(f"lambda_key={lam:g}/{mode}", []).append(
                    measure(out, [L // 2], [rt], [key.astype(np.float32) / 255]))
        print(f"evaluated lambda_key={lam:g} ({time.time() - t0:.0f} s)", flush=True)
    summary = {k: {m: statistics.mean(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    res = dict(model="bundled (fine-tuned from the bundled motion module)", train_steps=args.steps,
               lambda_key=args.lambda_key, frames=L, sample_steps=args.sample_steps, seeds=args.seeds,
               data="24 procedural clips (shanshui data synth --size 128)", seconds=round(time.time() - t0),
               summary=summary, runs=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    cols = ["flash_ratio", "dE_pinned_vs_neighbours", "dE_other_neighbours", "pinned_psnr_roundtrip"]
    print(f"{'setting':24s} " + " ".join(f"{c[:14]:>14s}" for c in cols))
    for k, v in summary.items():
        print(f"{k:24s} " + " ".join(f"{v[c]:14.3f}" for c in cols))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
