"""The real-size GPU check: SD 1.5-size UNet + AnimateDiff-v2-size motion module, random weights, one run.

Sections (each one is timed and guarded: an error or OOM in one is recorded and the next one still runs;
the JSON is rewritten after every section, so a run cut short still leaves what it measured):

1. ``memory_default``  peak CUDA memory of one 512x512x16 text-to-video call (CFG, fp16, default options),
                       and of its two phases (denoising, VAE decode) separately.
2. ``speed``           denoising it/s, ours (NADM, sparse-causal on) vs diffusers' AnimateDiffPipeline on the
                       very same weights, interleaved rounds; ratio ours/peer of seconds per step.
3. ``memory_split``    peak with the exact low-memory options except CPU offload (slicing, CFG halves in
                       sequence, split inference).
4. ``memory_low_vram`` peak with ``--low-vram`` (the options above + model CPU offload), and its it/s.
5. ``train``           one NADM training step at 256x256x8 (mixed precision): s/step, peak memory, and the
                       largest batch (of 1, 2, 4, ...) whose peak stays under 24 GiB.
6. ``sofp``            SOFP interpolation, ms per generated 512x512 frame (SOFP runs on the CPU).

    python3 benchmarks/gpu_check.py --out OUTDIR                # the real thing (CUDA, fp16)
    python3 benchmarks/gpu_check.py --out OUTDIR --tiny         # tiny models on the CPU: tests the script

Writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md. Normally started by ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."
GIB = 2**30
REAL = dict(size=512, frames=16, mem_steps=2, speed_steps=8, rounds=2, train_size=256, train_frames=8,
            train_steps=4, max_batch=32, sofp_size=512, sofp_frames=9, budget_gib=24.0)
TINY = dict(size=64, frames=8, mem_steps=2, speed_steps=2, rounds=2, train_size=64, train_frames=4,
            train_steps=2, max_batch=2, sofp_size=64, sofp_frames=5, budget_gib=24.0)
TARGETS = {"default_peak_gib": 8.0, "low_vram_peak_gib": 5.0, "speed_ratio": 1.0}


# ------------------------------------------------------------------------------------------ helpers
class Probe:
    """Peak memory of a block of work: CUDA allocator peaks (allocated and reserved) on a GPU, None on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> dict:
        if not self.cuda:
            return {"peak_allocated_gib": None, "peak_reserved_gib": None}
        torch.cuda.synchronize(self.device)
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(self.device) / GIB}


def build_components(tiny: bool) -> dict:
    """Random-weight components: SD 1.5 from the shipped configs (or the tiny preset), plus the motion config
    (AnimateDiff v2 shape: MotionConfig's defaults, 32-frame window, mid block)."""
    from shanshui.models.motion import MotionConfig
    from train_step import make_base

    base = make_base("tiny" if tiny else "sd15-random")
    if tiny:
        from shanshui.models.presets import PRESETS

        base["motion_config"] = MotionConfig.for_unet(base["unet"].config,
                                                      num_attention_heads=PRESETS["tiny"].motion_heads)
    else:
        base["motion_config"] = MotionConfig()
    return base


def build_video_pipeline(base: dict):
    from shanshui.models.motion import build_video_unet, motion_parameters
    from shanshui.pipelines.text_to_video import TextToVideoPipeline
    from shanshui.schedulers import make_scheduler

    unet = build_video_unet(base["unet"], base["motion_config"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-trivial motion module (a fresh one is an identity map)
        for p in motion_parameters(unet):
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return TextToVideoPipeline(base["vae"], base["text_encoder"], base["tokenizer"], unet, make_scheduler())


def peer_pipeline(pipe):
    from diffusers import AnimateDiffPipeline

    peer = AnimateDiffPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                               unet=pipe.unet, scheduler=pipe.scheduler.__class__.from_config(pipe.scheduler.config),
                               motion_adapter=None)
    peer.set_progress_bar_config(disable=True)
    return peer


def params_m(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _finite(x) -> bool:
    return bool(np.isfinite(np.asarray(x, dtype=np.float32)).all())


# ------------------------------------------------------------------------------------------ sections
def section_memory_default(ctx) -> dict:
    from shanshui.runtime import DEFAULT_DECODE_CHUNK

    pipe, probe, s = ctx["pipe"], ctx["probe"], ctx["s"]
    kw = dict(num_frames=s["frames"], height=s["size"], width=s["size"], num_inference_steps=s["mem_steps"],
              guidance_scale=8.0, seed=0, progress=False)
    pipe(PROMPT, **{**kw, "num_inference_steps": 1}, output_type="latent")  # warm-up (kernels, allocator)
    probe.reset()
    weights = torch.cuda.memory_allocated(probe.device) / GIB if probe.cuda else None
    out = pipe(PROMPT, **kw, output_type="latent")
    denoise = probe.peaks()
    probe.reset()
    video = pipe.decode_latents(out.latents)
    decode = probe.peaks()
    by_chunk = {}
    for chunk in (1, 4, 16):  # decoding is per frame: the chunk trades memory, not the result
        probe.reset()
        pipe.decode_latents(out.latents, chunk)
        by_chunk[chunk] = probe.peaks()["peak_allocated_gib"]
    probe.reset()
    full = pipe(PROMPT, **kw)
    total = probe.peaks()
    return {"weights_gib": weights, "vae_fp32_redecodes": getattr(pipe, "vae_upcasts", 0), "denoise": denoise,
            "decode": decode, "decode_peak_allocated_gib_by_chunk": by_chunk, "call": total,
            "decode_chunk_size": DEFAULT_DECODE_CHUNK, "frames_finite": _finite(full.frames) and bool(torch.isfinite(video).all()),
            "target_gib": TARGETS["default_peak_gib"],
            "meets_target": None if total["peak_reserved_gib"] is None
            else total["peak_reserved_gib"] <= TARGETS["default_peak_gib"]}


def _time_call(fn, probe) -> float:
    probe.sync()
    t0 = time.perf_counter()
    fn()
    probe.sync()
    return time.perf_counter() - t0


def section_speed(ctx) -> dict:
    from shanshui.models.motion import set_temporal_attention

    pipe, probe, s = ctx["pipe"], ctx["probe"], ctx["s"]
    peer = peer_pipeline(pipe)
    n = s["speed_steps"]
    kw = dict(num_frames=s["frames"], height=s["size"], width=s["size"], num_inference_steps=n, guidance_scale=8.0)

    def ours():
        set_temporal_attention(pipe.unet, "temporal")
        pipe(PROMPT, seed=0, progress=False, output_type="latent", **kw)

    def theirs():
        set_temporal_attention(pipe.unet, "off")
        peer(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **kw)

    times = {"ours": [], "peer": []}
    ours(), theirs()  # warm-up both
    for r in range(s["rounds"]):
        order = (("ours", ours), ("peer", theirs)) if r % 2 == 0 else (("peer", theirs), ("ours", ours))
        for name, fn in order:
            times[name].append(_time_call(fn, probe) / n)
    set_temporal_attention(pipe.unet, "temporal")
    res = {name: {"s_per_step_median": statistics.median(t), "s_per_step_all": t,
                  "it_per_s": 1.0 / statistics.median(t)} for name, t in times.items()}
    res["ratio_time_ours_over_peer"] = res["ours"]["s_per_step_median"] / res["peer"]["s_per_step_median"]
    res["steps_per_call"] = n
    res["note"] = "seconds per denoising step of whole calls with output_type='latent' (text encoding included)"
    return res


def _peak_call(ctx, timed: bool = False) -> dict:
    pipe, probe, s = ctx["pipe"], ctx["probe"], ctx["s"]
    kw = dict(num_frames=s["frames"], height=s["size"], width=s["size"], num_inference_steps=s["mem_steps"],
              guidance_scale=8.0, seed=0, progress=False)
    pipe(PROMPT, **{**kw, "num_inference_steps": 1}, output_type="latent")
    probe.reset()
    t = _time_call(lambda: ctx.__setitem__("last", pipe(PROMPT, **kw)), probe)
    out = {**probe.peaks(), "frames_finite": _finite(ctx["last"].frames)}
    if timed:
        out["s_per_call"] = t
    return out


def section_memory_split(ctx) -> dict:
    from shanshui.runtime import MemoryOptions

    ctx["pipe"].set_memory_options(MemoryOptions(decode_chunk=1, cfg_sequential=True, split_inference=True))
    res = _peak_call(ctx, timed=True)
    res["options"] = "decode_chunk=1, cfg_sequential, split_inference (no offload)"
    return res


def section_memory_low_vram(ctx) -> dict:
    pipe, probe = ctx["pipe"], ctx["probe"]
    if probe.cuda:
        pipe.to("cpu")
        probe.reset()
    pipe.enable_low_vram(device=probe.device)
    res = _peak_call(ctx, timed=True)
    res.update(options="--low-vram: decode_chunk=1, cfg_sequential, split_inference, model CPU offload",
               target_gib=TARGETS["low_vram_peak_gib"],
               meets_target=None if res["peak_reserved_gib"] is None
               else res["peak_reserved_gib"] <= TARGETS["low_vram_peak_gib"])
    return res


def section_train(ctx) -> dict:
    from shanshui.training.components import cast_frozen_parameters
    from shanshui.training.config import config_from_dict
    from shanshui.training.loop import step_generator
    from shanshui.training.step import training_step
    from train_step import make_models

    probe, s, device = ctx["probe"], ctx["s"], ctx["device"]
    ctx.pop("pipe", None)  # the inference models are not needed any more
    probe.reset()
    amp = torch.bfloat16 if probe.cuda else (torch.bfloat16 if ctx["dtype"] == torch.bfloat16 else None)
    base = build_components(ctx["tiny"])
    frozen = amp or torch.float32
    base["vae"].to(device, frozen).requires_grad_(False).eval()
    base["text_encoder"].to(device, frozen).requires_grad_(False).eval()
    models = make_models(base, "temporal", device, frozen)
    cast_frozen_parameters(models.unet, frozen)  # as the training loop stores them
    params = models.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-5)
    size, frames = s["train_size"], s["train_frames"]
    cfg = config_from_dict(dict(output_dir="unused", model=dict(preset="tiny", sparse_causal="temporal"),
                                data=dict(cache=None, root=".", frames=frames, size=size, text_dropout=0.1),
                                loss=dict(lambda_con=0.07, m=min(4, frames - 2))))

    def step(batch_size: int, i: int) -> float:
        g = torch.Generator().manual_seed(i)
        batch = {"pixel_values": torch.rand(batch_size, frames, 3, size, size, generator=g) * 2 - 1,
                 "caption": [PROMPT] * batch_size}

        def run():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = training_step(batch, models, models.noise_scheduler, cfg, step_generator(0, 0, 0, i))
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return _time_call(run, probe)

    step(1, 0)
    step(1, 1)
    probe.reset()
    times = [step(1, 2 + i) for i in range(s["train_steps"])]
    res = {"size": size, "frames": frames, "amp": str(amp), "trainable_params_m": sum(p.numel() for p in params) / 1e6,
           "unet_params_m": params_m(models.unet), "batch1": {"s_per_step_median": statistics.median(times),
                                                             "s_per_step_all": times, **probe.peaks()}}
    fits, batches = 1, {}
    b = 2
    while b <= s["max_batch"]:
        probe.reset()
        try:
            t = step(b, 100 + b)
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            batches[b] = {"oom": True}
            break
        pk = probe.peaks()
        batches[b] = {"s_per_step": t, **pk}
        if pk["peak_reserved_gib"] is not None and pk["peak_reserved_gib"] > s["budget_gib"]:
            break
        fits = b
        b *= 2
    res["batches"] = batches
    res["budget_gib"] = s["budget_gib"]
    res["largest_batch_within_budget"] = fits if probe.cuda else None
    del models, opt, base
    probe.reset()
    return res


def section_sofp(ctx) -> dict:
    from shanshui.flow import interpolate
    from shanshui.flow.testscenes import render_scene

    s = ctx["s"]
    frames = render_scene("pan", size=s["sofp_size"], frames=s["sofp_frames"], seed=0)
    interpolate(frames[:2], times=2)  # warm-up
    t0 = time.perf_counter()
    out = interpolate(frames, times=2)
    dt = time.perf_counter() - t0
    new = len(out) - len(frames)
    return {"size": s["sofp_size"], "input_frames": len(frames), "generated_frames": new,
            "ms_per_generated_frame": 1000 * dt / new, "flow": "dis (OpenCV, CPU)",
            "cpu_threads": torch.get_num_threads()}


SECTIONS = [("memory_default", section_memory_default), ("speed", section_speed),
            ("memory_split", section_memory_split), ("memory_low_vram", section_memory_low_vram),
            ("train", section_train), ("sofp", section_sofp)]


# ------------------------------------------------------------------------------------------ report
def _g(x, fmt="{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def markdown(result: dict) -> str:
    m, r = result["meta"], result["sections"]
    lines = [f"# GPU check ({'tiny, test run' if m['tiny'] else 'real size'})", "",
             f"Device: {m['device_name']} · torch {m['torch']} · dtype {m['dtype']} · "
             f"{m['size']}x{m['size']}x{m['frames']} · UNet {m['unet_params_m']:.0f} M params "
             f"(image {m['unet2d_params_m']:.0f} M + motion {m['motion_params_m']:.0f} M), random weights", "",
             "| measurement | value | target |", "|---|---|---|"]

    def ok(x):
        return "" if x is None else (" (met)" if x else " (**missed**)")

    sec = lambda name: r.get(name, {})  # noqa: E731
    md = sec("memory_default")
    if "call" in md:
        lines += [f"| peak VRAM, default options (reserved / allocated GiB) | {_g(md['call']['peak_reserved_gib'])} / "
                  f"{_g(md['call']['peak_allocated_gib'])} | <= {md['target_gib']} GiB{ok(md['meets_target'])} |",
                  f"| — denoising phase / decode phase (allocated GiB) | {_g(md['denoise']['peak_allocated_gib'])} / "
                  f"{_g(md['decode']['peak_allocated_gib'])} | |",
                  f"| — weights resident (GiB) | {_g(md['weights_gib'])} | |",
                  f"| — decode peak with 1 / 4 / 16 frames per VAE call (allocated GiB; default "
                  f"{md['decode_chunk_size']}) | " + " / ".join(_g(v) for v in md["decode_peak_allocated_gib_by_chunk"].values())
                  + " | |"]
    ms = sec("memory_split")
    if "peak_reserved_gib" in ms:
        lines.append(f"| peak VRAM, slicing + CFG halves + split inference (reserved GiB) | "
                     f"{_g(ms['peak_reserved_gib'])} | |")
    lv = sec("memory_low_vram")
    if "peak_reserved_gib" in lv:
        lines.append(f"| peak VRAM, --low-vram (reserved / allocated GiB) | {_g(lv['peak_reserved_gib'])} / "
                     f"{_g(lv['peak_allocated_gib'])} | <= {lv['target_gib']} GiB{ok(lv['meets_target'])} |")
    sp = sec("speed")
    if "ours" in sp:
        ratio = sp["ratio_time_ours_over_peer"]
        lines += [f"| it/s ours (NADM, sparse-causal) / diffusers AnimateDiff | {_g(sp['ours']['it_per_s'])} / "
                  f"{_g(sp['peer']['it_per_s'])} | |",
                  f"| time ratio ours/peer (s per step) | {_g(ratio, '{:.3f}')} | <= 1.0{ok(ratio <= 1.0)} |"]
    if "s_per_call" in lv and "ours" in sp:
        lines.append(f"| --low-vram: s per {m['mem_steps']}-step call incl. decode | {_g(lv['s_per_call'])} | |")
    tr = sec("train")
    if "batch1" in tr:
        b1 = tr["batch1"]
        lines += [f"| NADM training step {tr['size']}²x{tr['frames']}, batch 1 ({tr['amp']}): s/step | "
                  f"{_g(b1['s_per_step_median'], '{:.3f}')} | |",
                  f"| — peak memory batch 1 (reserved GiB) | {_g(b1['peak_reserved_gib'])} | |",
                  f"| — largest batch within {tr['budget_gib']:.0f} GiB | {tr['largest_batch_within_budget']} | |"]
    so = sec("sofp")
    if "ms_per_generated_frame" in so:
        lines.append(f"| SOFP ms per generated {so['size']}² frame ({so['flow']}) | "
                     f"{_g(so['ms_per_generated_frame'], '{:.0f}')} | |")
    errors = {k: v["error"] for k, v in r.items() if "error" in v}
    if errors:
        lines += ["", "Errors:"] + [f"- {k}: {v}" for k, v in errors.items()]
    lines += ["", f"Section times (s): " + ", ".join(f"{k} {v.get('seconds', 0):.0f}" for k, v in r.items()),
              "", "Peaks are torch.cuda.max_memory_{allocated,reserved} of this process (the CUDA context, "
              "~0.3–0.5 GiB, is not included); targets are checked on the reserved peak."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (tests this script)")
    ap.add_argument("--device", default=None, help="[cuda, or cpu with --tiny]")
    ap.add_argument("--dtype", default=None, help="[fp16 on CUDA, bf16 on CPU]")
    ap.add_argument("--sections", default=",".join(n for n, _ in SECTIONS))
    args = ap.parse_args(argv)

    from shanshui.pipelines.text_to_video import place
    from shanshui.runtime import DTYPE_NAMES, resolve_device, resolve_dtype

    device = resolve_device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = resolve_dtype(args.dtype or ("fp16" if device.type == "cuda" else "bf16"), device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    s = TINY if args.tiny else REAL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = build_components(args.tiny)
    unet2d_m = params_m(base["unet"])
    pipe = build_video_pipeline(base)
    motion_m = params_m(pipe.unet) - unet2d_m
    place(pipe, device, dtype)
    build_s = time.perf_counter() - t0
    ctx = {"pipe": pipe, "probe": Probe(device), "s": s, "device": device, "tiny": args.tiny, "dtype": dtype}
    result = {"meta": {"tiny": args.tiny, "device": str(device),
                       "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                       else (platform.processor() or platform.machine()),
                       "torch": torch.__version__, "dtype": DTYPE_NAMES[dtype], "size": s["size"],
                       "frames": s["frames"], "mem_steps": s["mem_steps"], "unet_params_m": params_m(pipe.unet),
                       "unet2d_params_m": unet2d_m, "motion_params_m": motion_m, "build_s": build_s,
                       "settings": s, "cpu_threads": torch.get_num_threads()},
              "sections": {}}
    wanted = set(args.sections.split(","))
    del pipe, base  # ctx holds the pipeline; the training section drops it to free its memory

    def save():
        (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (out / "gpu_check.md").write_text(markdown(result))

    save()
    for name, fn in SECTIONS:
        if name not in wanted:
            continue
        start = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            res = fn(ctx)
        except Exception as exc:  # recorded, and the next section still runs
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
            ctx["probe"].reset()
        res["seconds"] = time.perf_counter() - start
        result["sections"][name] = res
        save()
        print(f"[gpu_check] {name} done in {res['seconds']:.1f} s", flush=True)
    result["meta"]["total_s"] = time.perf_counter() - t0
    save()
    print((out / "gpu_check.md").read_text())
    return 1 if any("error" in v for v in result["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
