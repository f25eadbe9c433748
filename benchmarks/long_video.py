"""Long videos: ours (phased inference + shared noise reschedule) vs diffusers FreeNoise vs direct chaining.

All three run on *identical* components (same image UNet, motion weights, VAE, text encoder, DDIM schedule,
guidance, steps, seed) and write frames through the same chunked decoder:

* ``ours``      — :func:`shanshui.pipelines.long_video.generate_long` (γ, ω, 16-frame clips, overlap 4);
* ``ours_ccdm`` — the same with CCDM's multi-frame fusion of the shared frames (``fusion="ccdm"``: equal
  weights over the overlap) instead of the linear cross-fade;
* ``freenoise`` — diffusers ``AnimateDiffPipeline.enable_free_noise(context_length=16, context_stride=4)``
  (the NADM sparse-causal processors are re-installed on the blocks FreeNoise rebuilds, so the network is
  the same), run to latents;
* ``chain``     — 16-frame clips one after another, each conditioned on the last frame of the previous one
  (that frame's clean latent is re-noised to the current step and pinned as frame 0 at every step; the
  usual inpainting-style conditioning for a text-to-video model without image input).

Each measurement runs in a fresh subprocess (peak RSS per run) with ``torch.set_num_threads(1)``; methods are
interleaved over repeats. Quality numbers, from the decoded uint8 frames:

* ``seam`` — flow-compensated difference (mean |a − b warped onto a|, DIS flow, [0, 1] scale) at the frame
  pairs where a method switches clips/windows, divided by the same quantity over all other pairs
  (``seam_ratio`` ≤ 1: a seam changes no more than an ordinary frame step);
* ``drift`` — SSIM of frame k to frame 0 for growing k (long-range drift: lower = more drift);
* ``tem_cons`` — mean SSIM of adjacent frames (pixel stand-in for the paper's CLIP Tem-Cons: no CLIP
  weights offline) and ``flow_err`` — mean flow-compensated difference over all adjacent pairs.

    python benchmarks/long_video.py                                 # 64 and 128 frames + γ sweep
    python benchmarks/long_video.py --model bundled                 # the bundled model (when installed)
    python benchmarks/long_video.py --model bundled --steps 15 --lengths 64 --repeats 1 --gammas '' \
        --memory-frames '' --methods ours,ours_ccdm,freenoise \
        --out benchmarks/results/long_video_bundled_fusion.json     # cross-fade vs CCDM fusion vs FreeNoise
Writes benchmarks/results/long_video[_<model>].json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "Slow scroll along misty mountains, a boat on the river, pines, light fog."
CLIP, OVERLAP, STRIDE = 16, 4, 4


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(model: str):
    """Our pipeline on the chosen components (``small``/``tiny`` preset with random motion weights, or the
    bundled model)."""
    import torch

    from shanshui.models.motion import build_video_unet, motion_parameters
    from shanshui.models.presets import make_components
    from shanshui.pipelines.text_to_video import TextToVideoPipeline, load_pipeline
    from shanshui.schedulers import make_scheduler

    if model == "bundled":
        return load_pipeline()
    c = make_components(model, seed=0)
    unet = build_video_unet(c["unet"], c["motion_config"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in motion_parameters(unet):
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return TextToVideoPipeline(c["vae"], c["text_encoder"], c["tokenizer"], unet, make_scheduler())


def run_freenoise(pipe, frames, size, steps, guidance, seed):
    import torch
    from types import SimpleNamespace

    from diffusers import AnimateDiffPipeline

    from shanshui.models.motion import set_temporal_attention

    # the peer samples with the model's own schedule (the bundled model is v-prediction, zero terminal SNR)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    peer = AnimateDiffPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                               unet=pipe.unet, scheduler=scheduler, motion_adapter=None)
    # enable_free_noise reads the window limit from a MotionAdapter; ours is already fused into the UNet
    peer.motion_adapter = SimpleNamespace(config=SimpleNamespace(
        motion_max_seq_length=pipe.unet.config.motion_max_seq_length))
    peer.set_progress_bar_config(disable=True)
    sparse, versatile = getattr(pipe.unet, "_shanshui_attention", ("temporal", True))
    peer.enable_free_noise(context_length=CLIP, context_stride=STRIDE)
    set_temporal_attention(pipe.unet, sparse, versatile)      # FreeNoise rebuilt the blocks: same processors again
    out = peer(PROMPT, num_frames=frames, height=size, width=size, num_inference_steps=steps,
               guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="latent")
    return out.frames


def run_chain(pipe, frames, size, steps, guidance, seed):
    """Clip k+1's frame 0 is pinned to clip k's last clean latent, re-noised to each step (fixed noise)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    embeds = pipe.encode_prompt(PROMPT, None, cfg=guidance > 1.0)
    sched = pipe.scheduler
    shape = (1, pipe.unet.config.in_channels, CLIP, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor)
    clips, last = [], None
    k = math.ceil((frames - 1) / (CLIP - 1))
    for c in range(k):
        sched.set_timesteps(steps)
        z = torch.randn(shape, generator=g)
        pin_noise = torch.randn(shape[:2] + shape[3:], generator=g)
        for t in sched.timesteps:
            if last is not None:
                z[:, :, 0] = sched.add_noise(last, pin_noise, t.reshape(1))
            z = sched.step(pipe.predict(z, t, embeds, guidance), t, z).prev_sample
        if last is not None:
            z[:, :, 0] = last
        clips.append(z if last is None else z[:, :, 1:])
        last = z[:, :, -1].clone()
    return torch.cat(clips, dim=2)[:, :, :frames]


def boundaries(method: str, frames: int, plan=None) -> list[int]:
    """Frame indices b such that (b-1, b) is a pair where the method switches clip or window."""
    if method in ("ours", "ours_ccdm"):
        s = plan.starts
        b = set(s[1:]) | {s[i] + plan.clip_frames for i in range(len(s) - 1)}
    elif method == "chain":
        b = set(range(CLIP, frames, CLIP - 1))
    else:  # FreeNoise: windows of 16 every 4 frames; a window starts or ends every 4 frames
        b = set(range(STRIDE, frames, STRIDE))
    return sorted(x for x in b if 0 < x < frames)


def quality(frames, bounds) -> dict:
    import numpy as np

    from shanshui.flow import backward_warp, estimate_flow
    from shanshui.metrics import ssim

    f = np.asarray(frames)
    diffs = []
    for i in range(len(f) - 1):
        flow = estimate_flow(f[i], f[i + 1], "dis")
        warped = backward_warp(f[i + 1].astype(np.float32), flow)
        diffs.append(float(np.abs(f[i].astype(np.float32) - warped).mean() / 255.0))
    at = [diffs[b - 1] for b in bounds] or [float("nan")]  # a single clip has no seam
    within = [d for i, d in enumerate(diffs) if i + 1 not in set(bounds)]
    n = len(f)
    ks = sorted({k for k in (1, 4, 8, 16, 32, 48, 64, 96, 127) if k < n} | {n - 1})
    drift = {str(k): ssim(f[0], f[k]) for k in ks}
    return {"seam": float(np.mean(at)), "within": float(np.mean(within)),
            "seam_ratio": float(np.mean(at) / max(np.mean(within), 1e-12)),
            "seam_max_ratio": float(np.max(at) / max(np.mean(within), 1e-12)),
            "tem_cons": float(np.mean([ssim(f[i], f[i + 1]) for i in range(n - 1)])),
            "flow_err": float(np.mean(diffs)), "drift_ssim": drift,
            "drift_last_quarter": float(np.mean([ssim(f[0], f[k]) for k in range(3 * n // 4, n)]))}


def worker(method: str, model: str, frames: int, size: int, steps: int, guidance: float, gamma: float,
           omega: float, seed: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from shanshui.pipelines.long_video import iter_decoded, to_uint8

    pipe = build(model)
    pipe.set_progress_bar_config(disable=True)
    base_rss = rss_mb()
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, i, o: calls.append(1))
    collected = []
    start = time.perf_counter()
    plan = None
    with torch.no_grad():
        if method in ("ours", "ours_ccdm"):
            pipe(PROMPT, num_frames=frames, height=size, width=size, num_inference_steps=steps,
                       guidance_scale=guidance, seed=seed, gamma=gamma, omega=omega, overlap=OVERLAP,
                       clip_frames=CLIP, frame_sink=collected.append, progress=False,
                       fusion="ccdm" if method == "ours_ccdm" else "crossfade")
            from shanshui.pipelines.long_video import make_plan

            plan = make_plan(frames, CLIP, OVERLAP, steps, gamma)
        else:
            lat = (run_freenoise if method == "freenoise" else run_chain)(pipe, frames, size, steps, guidance, seed)
            for chunk in iter_decoded(lambda z: pipe.decode_latents(z, 16), lat, 16):
                collected.append(to_uint8(chunk))
    seconds = time.perf_counter() - start
    hook.remove()
    video = np.concatenate(collected)
    assert len(video) == frames, (method, len(video))
    result = {"seconds": seconds, "peak_rss_mb": rss_mb(), "base_rss_mb": base_rss, "unet_calls": len(calls)}
    result.update(quality(video, boundaries(method, frames, plan)))
    return result


def run_worker(args: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    s = {"median_s": statistics.median(r["seconds"] for r in runs), "all_s": [round(r["seconds"], 2) for r in runs],
         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
         "gen_rss_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in runs)}
    for k in ("unet_calls", "seam", "within", "seam_ratio", "seam_max_ratio", "tem_cons", "flow_err",
              "drift_ssim", "drift_last_quarter"):
        s[k] = runs[0][k]  # deterministic for a seed: identical across repeats
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="tiny | small (random components) | bundled")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=8.0)
    ap.add_argument("--lengths", default="64,128")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gamma", type=float, default=0.8)
    ap.add_argument("--omega", type=float, default=0.2)
    ap.add_argument("--gammas", default="0.5,0.6,0.7,0.8,0.9,1.0", help="γ sweep for ours ('' to skip)")
    ap.add_argument("--sweep-frames", type=int, default=64)
    ap.add_argument("--memory-frames", default="16,128", help="ours only: peak RSS of a generate run at these lengths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="ours,freenoise,chain",
                    help="comma-separated: ours, ours_ccdm (CCDM fusion), freenoise, chain")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    common = dict(model=args.model, size=args.size, steps=args.steps, guidance=args.guidance, omega=args.omega,
                  seed=args.seed)
    methods = tuple(m for m in args.methods.split(",") if m)
    known = ("ours", "ours_ccdm", "freenoise", "chain")
    if "ours" not in methods or any(m not in known for m in methods):
        ap.error(f"--methods must include ours and come from {', '.join(known)}")
    lengths = [int(x) for x in args.lengths.split(",") if x]
    runs = {(m, n): [] for m in methods for n in lengths}
    for r in range(args.repeats):
        for n in lengths:
            order = methods[r % len(methods):] + methods[: r % len(methods)]
            for m in order:
                runs[(m, n)].append(run_worker(dict(common, method=m, frames=n, gamma=args.gamma)))
                print(f"  repeat {r + 1} {m:<9} {n:>4} frames: {runs[(m, n)][-1]['seconds']:.1f} s", flush=True)
    results = {str(n): {m: summarise(runs[(m, n)]) for m in methods} for n in lengths}
    for n in lengths:
        res = results[str(n)]
        if "freenoise" in methods:
            res["speedup_vs_freenoise"] = res["freenoise"]["median_s"] / res["ours"]["median_s"]
            # per-repeat ratios of interleaved runs (robust to load drifting between repeats)
            res["speedup_vs_freenoise_per_repeat"] = [round(f["seconds"] / o["seconds"], 3) for f, o in
                                                      zip(runs[("freenoise", n)], runs[("ours", n)])]
        if "chain" in methods:
            res["speedup_vs_chain"] = res["chain"]["median_s"] / res["ours"]["median_s"]

    sweep = {}
    gammas = [float(x) for x in args.gammas.split(",") if x]
    for g in gammas:
        sweep[str(g)] = run_worker(dict(common, method="ours", frames=args.sweep_frames, gamma=g))
        print(f"  sweep γ={g}: {sweep[str(g)]['seconds']:.1f} s", flush=True)

    memory = {}
    for n in [int(x) for x in args.memory_frames.split(",") if x]:
        memory[str(n)] = run_worker(dict(common, method="ours", frames=n, gamma=args.gamma))
        print(f"  memory {n} frames: {memory[str(n)]['peak_rss_mb']:.0f} MB", flush=True)

    import torch

    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch_threads": 1,
            "torch": torch.__version__, "model": args.model,
            "components": "bundled model" if args.model == "bundled" else
            f"preset '{args.model}' with random weights (motion weights randomised, scale 0.02)",
            "size": args.size, "steps": args.steps, "guidance": args.guidance, "gamma": args.gamma,
            "omega": args.omega, "clip_frames": CLIP, "overlap": OVERLAP, "freenoise_context": [CLIP, STRIDE],
            "repeats": args.repeats, "prompt": PROMPT, "methods": list(methods)}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / (
        "long_video.json" if args.model == "small" else f"long_video_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results, "gamma_sweep": sweep, "memory": memory}, indent=2))

    label = {"ours": "ours (phased+reschedule)", "ours_ccdm": "ours + CCDM fusion", "freenoise": "diffusers FreeNoise",
             "chain": "direct chaining"}
    print(f"\ncomponents: {meta['components']}; {args.size}px, {args.steps} DDIM steps, guidance {args.guidance}")
    print(f"{'frames':>6} {'method':<25} {'median s':>9} {'UNet':>5} {'RSS MB':>7} {'+gen MB':>8} {'seam':>7} "
          f"{'seam/in':>8} {'TemCons':>8} {'flowerr':>8} {'SSIM(0,last)':>12}")
    for n in lengths:
        for m in methods:
            s = results[str(n)][m]
            last = s["drift_ssim"][str(n - 1)]
            print(f"{n:>6} {label[m]:<25} {s['median_s']:>9.2f} {s['unet_calls']:>5} {s['peak_rss_mb']:>7.0f} "
                  f"{s['gen_rss_mb']:>8.0f} {s['seam']:>7.4f} {s['seam_ratio']:>8.3f} {s['tem_cons']:>8.4f} "
                  f"{s['flow_err']:>8.4f} {last:>12.3f}")
        r = results[str(n)]
        if "speedup_vs_freenoise" in r and "speedup_vs_chain" in r:
            print(f"{n:>6} speed-up of ours: x{r['speedup_vs_freenoise']:.2f} vs FreeNoise "
                  f"(per repeat {r['speedup_vs_freenoise_per_repeat']}), x{r['speedup_vs_chain']:.2f} vs chaining")
    if sweep:
        print(f"\nγ sweep (ours, {args.sweep_frames} frames)")
        print(f"{'gamma':>6} {'s':>7} {'UNet':>5} {'seam/in':>8} {'TemCons':>8} {'flowerr':>8} {'SSIM(0,last)':>12}")
        for g, s in sweep.items():
            print(f"{g:>6} {s['seconds']:>7.2f} {s['unet_calls']:>5} {s['seam_ratio']:>8.3f} {s['tem_cons']:>8.4f} "
                  f"{s['flow_err']:>8.4f} {s['drift_ssim'][str(args.sweep_frames - 1)]:>12.3f}")
    if memory:
        print("\nmemory (ours, streamed decode): " + ", ".join(
            f"{n} frames {s['peak_rss_mb']:.0f} MB" for n, s in memory.items()))
        ns = sorted(memory, key=int)
        if len(ns) >= 2:
            print(f"ratio {ns[-1]}/{ns[0]} frames: {memory[ns[-1]]['peak_rss_mb'] / memory[ns[0]]['peak_rss_mb']:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
