"""Text-to-video speed: Shanshui (NADM, sparse-causal on) vs diffusers' AnimateDiffPipeline (plain AnimateDiff).

Both pipelines run on *identical* components (same image UNet, motion weights, VAE, text encoder, DDIM
schedule); the only difference is the second temporal attention: an O(f) causal shift for NADM, a full f×f
attention for AnimateDiff. Each measurement runs in a fresh subprocess (so peak RSS is per run) and the two
contenders alternate (interleaved repeats) to spread machine noise evenly.

    python benchmarks/t2v_speed.py                 # both sizes, 3 repeats
    python benchmarks/t2v_speed.py --sizes tiny --repeats 5
Writes benchmarks/results/t2v_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "tiny": dict(preset="tiny", size=64, frames=16, steps=10),
    "small": dict(preset="small", size=128, frames=16, steps=10),
}
PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."


def build(which: str, preset: str):
    import torch

    from shanshui.models.motion import build_video_unet, motion_parameters, set_temporal_attention
    from shanshui.models.presets import make_components
    from shanshui.pipelines.text_to_video import TextToVideoPipeline
    from shanshui.schedulers import make_scheduler

    c = make_components(preset, seed=0)
    unet = build_video_unet(c["unet"], c["motion_config"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in motion_parameters(unet):
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    if which == "ours":
        return TextToVideoPipeline(c["vae"], c["text_encoder"], c["tokenizer"], unet, make_scheduler()), unet
    from diffusers import AnimateDiffPipeline

    set_temporal_attention(unet, "off")
    pipe = AnimateDiffPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=unet,
                               scheduler=make_scheduler(), motion_adapter=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe, unet


def worker(which: str, setting: str) -> dict:
    import torch

    s = SETTINGS[setting]
    pipe, unet = build(which, s["preset"])
    kwargs = dict(num_frames=s["frames"], height=s["size"], width=s["size"], num_inference_steps=s["steps"],
                  guidance_scale=8.0)
    start = time.perf_counter()
    if which == "ours":
        pipe(PROMPT, seed=0, progress=False, **kwargs)
    else:
        pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6}


def run_worker(which: str, setting: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", which, "--sizes", setting], check=True,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=["ours", "peer"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "t2v_speed.json"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.sizes)))
        return
    results = {}
    for setting in args.sizes.split(","):
        runs = {"ours": [], "peer": []}
        for r in range(args.repeats):
            order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
            for which in order:
                runs[which].append(run_worker(which, setting))
        summary = {}
        for which, rs in runs.items():
            summary[which] = {"median_s": statistics.median(x["seconds"] for x in rs),
                              "all_s": [round(x["seconds"], 3) for x in rs],
                              "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                              "unet_params_m": rs[0]["unet_params_m"]}
        summary["ratio_time_ours_over_peer"] = summary["ours"]["median_s"] / summary["peer"]["median_s"]
        summary["ratio_rss_ours_over_peer"] = summary["ours"]["peak_rss_mb"] / summary["peer"]["peak_rss_mb"]
        summary["setting"] = SETTINGS[setting]
        results[setting] = summary
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": __import__("torch").get_num_threads(), "repeats": args.repeats}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"{'size':<6} {'contender':<22} {'median s':>9} {'peak RSS MB':>12} {'UNet M params':>14}")
    for setting, s in results.items():
        for which, label in (("ours", "shanshui (NADM, SC on)"), ("peer", "diffusers AnimateDiff")):
            print(f"{setting:<6} {label:<22} {s[which]['median_s']:>9.3f} {s[which]['peak_rss_mb']:>12.0f} "
                  f"{s[which]['unet_params_m']:>14.2f}")
        print(f"{setting:<6} {'ratio ours/peer':<22} {s['ratio_time_ours_over_peer']:>9.3f} "
              f"{s['ratio_rss_ours_over_peer']:>12.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
