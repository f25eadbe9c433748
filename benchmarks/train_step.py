"""Seconds per training step and peak step memory: NADM (contrastive on) vs. contrastive off vs. a plain
AnimateDiff-style step, on identical frozen components, measured side by side in one run.

Variants (all: VAE encode + text encode + video-UNet forward/backward + AdamW step on the motion weights):

* ``nadm``          sparse-causal attn2, λ_con = 0.07 (noise adapter + InfoNCE over frames)
* ``nadm_no_con``   sparse-causal attn2, λ_con = 0
* ``animatediff``   diffusers' default attn2 (two full temporal attentions), plain MSE, no adapter

Timed steps are interleaved round-robin so that drift in machine load hits every variant alike.
Peak memory (CUDA only) is the allocator's peak during one step minus what was allocated before it.

    python benchmarks/train_step.py                                   # small preset, CPU
    python benchmarks/train_step.py --components sd15-random --device cuda --size 256 --frames 8

Writes benchmarks/results/train_step.json (or --out).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def make_base(kind: str, seed: int = 0) -> dict:
    """Frozen components: an in-code preset, or SD 1.5-shaped random weights from the shipped configs."""
    if kind in ("tiny", "small"):
        from shanshui.models.presets import make_components

        return make_components(kind, seed=seed)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from shanshui.pipelines.loading import sd15_config_dir

    cfg = sd15_config_dir()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder", local_files_only=True))
    tok = CLIPTokenizer.from_pretrained(cfg / "tokenizer", local_files_only=True)
    return dict(unet=unet, vae=vae, text_encoder=text.eval(), tokenizer=tok)


def make_models(base: dict, sparse_causal: str, device, frozen_dtype):
    from shanshui.models.motion import MotionConfig, build_video_unet, freeze_image_layers
    from shanshui.models.noise_adapter import NoiseAdapter
    from shanshui.training.components import TrainableNet, TrainingModels, make_noise_scheduler

    heads = 8 if base["unet"].config["block_out_channels"][0] % 8 == 0 else 4
    mcfg = MotionConfig.for_unet(base["unet"].config, num_attention_heads=heads, sparse_causal=sparse_causal)
    torch.manual_seed(0)
    unet = build_video_unet(copy.deepcopy(base["unet"]), mcfg)
    freeze_image_layers(unet)
    adapter = NoiseAdapter(in_channels=4)
    net = TrainableNet(unet, adapter).to(device).train()
    vae, text = base["vae"], base["text_encoder"]
    return TrainingModels(net=net, vae=vae, text_encoder=text, tokenizer=base["tokenizer"],
                          noise_scheduler=make_noise_scheduler(), motion_config=mcfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", default="small", choices=["tiny", "small", "sd15-random"])
    ap.add_argument("--size", type=int, default=None, help="clip size [64 for presets, 256 for sd15-random]")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"],
                    help="autocast dtype [bf16 on CUDA, none on CPU]")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = ap.parse_args(argv)

    from shanshui.training.config import config_from_dict
    from shanshui.training.loop import step_generator
    from shanshui.training.step import training_step

    device = torch.device(args.device)
    amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    size = args.size or (256 if args.components == "sd15-random" else 64)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    base = make_base(args.components)
    frozen_dtype = amp_dtype or torch.float32
    base["vae"].to(device, frozen_dtype).requires_grad_(False).eval()
    base["text_encoder"].to(device, frozen_dtype).requires_grad_(False).eval()

    variants = {
        "nadm": ("temporal", 0.07),
        "nadm_no_con": ("temporal", 0.0),
        "animatediff": ("off", 0.0),
    }
    runs = {}
    for name, (sc, lam) in variants.items():
        models = make_models(base, sc, device, frozen_dtype)
        if args.gradient_checkpointing:
            models.unet.enable_gradient_checkpointing()
        params = [p for p in models.trainable_parameters() if lam > 0 or not any(p is q for q in models.adapter.parameters())]
        cfg = config_from_dict(dict(
            output_dir="unused", model=dict(preset="tiny", sparse_causal=sc),
            data=dict(cache=None, root=".", frames=args.frames, size=size, text_dropout=0.1),
            loss=dict(lambda_con=lam, m=min(4, args.frames - 2))))
        runs[name] = dict(models=models, cfg=cfg, opt=torch.optim.AdamW(params, lr=1e-5), times=[], peak=None)
    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(args.batch, args.frames, 3, size, size, generator=g) * 2 - 1,
             "caption": ["Mountains, dense fog, red sun, boat on the lake."] * args.batch}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def one_step(run, i: int) -> float:
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = training_step(batch, run["models"], run["models"].noise_scheduler, run["cfg"],
                                step_generator(0, 0, 0, i))
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(run["opt"].param_groups[0]["params"], 1.0)
        run["opt"].step()
        run["opt"].zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    for name, run in runs.items():  # warm-up, and one step under the memory probe
        for i in range(args.warmup):
            one_step(run, i)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            one_step(run, 0)
            run["peak"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    for i in range(args.steps):  # interleaved timing
        for run in runs.values():
            run["times"].append(one_step(run, i))

    ref = runs["nadm"]
    rows = {}
    for name, run in runs.items():
        med = statistics.median(run["times"])
        rows[name] = {"s_per_step_median": med, "s_per_step_mean": statistics.fmean(run["times"]),
                      "peak_step_mib": run["peak"]}
    for name in rows:
        rows[name]["time_vs_nadm"] = rows[name]["s_per_step_median"] / rows["nadm"]["s_per_step_median"]
    overhead_con = rows["nadm"]["s_per_step_median"] / rows["nadm_no_con"]["s_per_step_median"] - 1
    overhead_ad = rows["nadm"]["s_per_step_median"] / rows["animatediff"]["s_per_step_median"] - 1
    mem_con = (rows["nadm"]["peak_step_mib"] / rows["nadm_no_con"]["peak_step_mib"] - 1
               if rows["nadm"]["peak_step_mib"] else None)
    trainable = sum(p.numel() for p in ref["models"].trainable_parameters())
    result = {
        "setup": {"components": args.components, "size": size, "frames": args.frames, "batch": args.batch,
                  "steps": args.steps, "warmup": args.warmup, "device": str(device), "amp": amp,
                  "gradient_checkpointing": args.gradient_checkpointing,
                  "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                  "trainable_params": trainable},
        "variants": rows,
        "contrastive_time_overhead": overhead_con,
        "contrastive_memory_overhead": mem_con,
        "nadm_vs_animatediff_time_overhead": overhead_ad,
        "expectation_contrastive_overhead_le_10pct": overhead_con <= 0.10,
    }
    print(f"{'variant':<14}{'s/step (median)':>17}{'vs nadm':>9}{'peak step MiB':>15}")
    for name, r in rows.items():
        peak = f"{r['peak_step_mib']:.0f}" if r["peak_step_mib"] is not None else "n/a"
        print(f"{name:<14}{r['s_per_step_median']:>17.4f}{r['time_vs_nadm']:>9.3f}{peak:>15}")
    print(f"contrastive overhead: time {overhead_con:+.1%}"
          + (f", memory {mem_con:+.1%}" if mem_con is not None else "")
          + f"; NADM vs AnimateDiff-style step: {overhead_ad:+.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
