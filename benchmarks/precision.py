"""bf16 vs fp32 (and --low-vram vs default) on the bundled model, on the CPU: frames and time, side by side.

For text -> video (the demo prompt, 16 frames, 25 DDIM steps, CFG 8, no interpolation) and painting -> video
(a procedural painting, one arrow, 16 frames), runs fp32, bf16 and fp32 with every exact memory option
(``MemoryOptions.low_vram()``; CPU offload is a no-op on a CPU) and reports PSNR of each against fp32
(data range 1, all frames) and the wall and process-CPU time of each call (at 1 thread the CPU time is the
compute time, whatever else loads the machine). Calls alternate per repeat.

    python benchmarks/precision.py                  # writes benchmarks/results/precision.json
    python benchmarks/precision.py --threads 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."
VARIANTS = ("fp32", "bf16", "fp32+low-vram")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from shanshui.control.arrows import Arrow
    from shanshui.data.procedural import render_clip, sample_scene
    from shanshui.metrics.video import psnr
    from shanshui.pipelines.painting_to_video import load_painting_pipeline
    from shanshui.pipelines.text_to_video import load_pipeline

    painting = render_clip(sample_scene(11), frames=2, size=(128, 128))[0][0]
    pipes = {"fp32": dict(dtype="fp32"), "bf16": dict(dtype="bf16"), "fp32+low-vram": dict(dtype="fp32", low_vram=True)}
    tasks = {
        "text_to_video": lambda kw: load_pipeline(**kw),
        "painting_to_video": lambda kw: load_painting_pipeline(**kw),
    }
    calls = {
        "text_to_video": lambda p: p(PROMPT, num_frames=args.frames, num_inference_steps=args.steps, seed=0,
                                     progress=False).frames,
        "painting_to_video": lambda p: p(painting, PROMPT, num_frames=args.frames,
                                         num_inference_steps=args.steps, seed=0, progress=False,
                                         arrows=[Arrow(20, 64, 100, 64)]).frames,
    }
    result = {"setup": {"model": "bundled", "frames": args.frames, "steps": args.steps, "threads": args.threads,
                        "repeats": args.repeats, "torch": torch.__version__}, "tasks": {}}
    for task, build in tasks.items():
        built = {v: build(kw) for v, kw in pipes.items()}
        frames, times, cpu = {}, {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
        for r in range(args.repeats):
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                t0, c0 = time.perf_counter(), time.process_time()
                frames[v] = np.asarray(calls[task](built[v]))
                times[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
        ref = frames["fp32"]
        rows = {}
        for v in VARIANTS:
            rows[v] = {"s_median": statistics.median(times[v]), "s_all": times[v],
                       "cpu_s_median": statistics.median(cpu[v]),
                       "psnr_vs_fp32_db": None if v == "fp32" else psnr(frames[v], ref, data_range=1.0),
                       "max_abs_diff_vs_fp32": float(np.abs(frames[v] - ref).max())}
        result["tasks"][task] = rows
        for v, row in rows.items():
            print(f"{task:<18} {v:<14} {row['s_median']:7.1f} s wall {row['cpu_s_median']:7.1f} s CPU   PSNR vs fp32 "
                  f"{'—' if row['psnr_vs_fp32_db'] is None else format(row['psnr_vs_fp32_db'], '.1f')} dB   "
                  f"max |Δ| {row['max_abs_diff_vs_fp32']:.2e}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
