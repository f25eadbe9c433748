"""Real-size cost on the CPU: SD 1.5 UNet + AnimateDiff-v2-size motion module, random weights, fp32 vs bf16,
ours (NADM, sparse-causal on) vs diffusers' AnimateDiffPipeline on the very same weights.

What is measured, per dtype and contender, in one process (the weights are built once, then cast):

* seconds per denoising step: every UNet call (one per step: CFG is batched) is timed by forward hooks, in
  process CPU time (robust to other jobs on a shared machine; equal to compute time at 1 thread) and wall
  time; the first ``--warmup`` steps of each call can be dropped (none by default: at this size the
  one-time set-up is well under 1 % of a step);
* peak RSS of the call (the kernel's high-water mark ``VmHWM``, reset before each call through
  ``/proc/self/clear_refs``), and the RSS before it (mostly the weights);
* the FLOPs of one step, counted exactly by ``torch.utils.flop_counter`` on meta tensors (no compute), and
  from them the achieved rate and its fraction of this machine's measured matmul rate (2048² GEMM, same
  dtype and thread count).

The contenders alternate (ours first in fp32, the peer first in bf16). Output latents only (no VAE decode).
Also prints the FLOP model, per resolution and frame count, for both contenders.

    python benchmarks/real_size.py                      # 256x256x16, CFG, 2 timed steps, 1 thread
    python benchmarks/real_size.py --frames 8           # what docs/performance.md reports (a loaded 2-core CPU)
    python benchmarks/real_size.py --flops-only         # just the FLOP table (seconds)
    python benchmarks/real_size.py --tiny               # tiny models: tests the script

Writes benchmarks/results/real_size.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."
CONTENDERS = ("ours", "peer")


# ------------------------------------------------------------------------------------------ memory
def _status(key: str) -> float | None:
    try:
        m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def rss_mib() -> float | None:
    return _status("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    return _status("VmHWM")


# ------------------------------------------------------------------------------------------ rates and FLOPs
def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GEMM rate per second of process CPU time (best of ``reps``), i.e. per core-second at 1 thread."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best / 1e9


def meta_unet(tiny: bool):
    """The same architecture on the meta device (no memory, no compute): for FLOP counting."""
    from gpu_check import build_components
    from shanshui.models.motion import build_video_unet

    with torch.device("meta"):
        base = build_components(tiny)
        return build_video_unet(base["unet"], base["motion_config"])


def step_flops(unet, size: int, frames: int, contender: str, cfg: bool = True) -> int:
    """FLOPs of one guided denoising step (one UNet call on the batch of 2 with CFG)."""
    from torch.utils.flop_counter import FlopCounterMode

    from shanshui.models.motion import set_temporal_attention

    set_temporal_attention(unet, "temporal" if contender == "ours" else "off")
    b = 2 if cfg else 1
    lat = size // 8
    x = torch.empty(b, 4, frames, lat, lat, device="meta")
    text = torch.empty(b * frames, 77, unet.config.cross_attention_dim, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x, torch.tensor(500, device="meta"), encoder_hidden_states=text)
    return int(counter.get_total_flops())


def flop_table(unet, sizes, frames_list) -> list[dict]:
    rows = []
    for size in sizes:
        for f in frames_list:
            row = {"size": size, "frames": f}
            for c in CONTENDERS:
                row[f"{c}_tflop_per_step"] = step_flops(unet, size, f, c) / 1e12
            rows.append(row)
    return rows


def attn2_microbench(size: int, frames: int, repeats: int = 7) -> dict:
    """CPU seconds of one motion-module attn2 call at the UNet's largest resolution (320 channels, CFG batch
    of 2): NADM's sparse-causal processor vs diffusers' full temporal attention, interleaved, best of
    ``repeats``. The one place where the two contenders differ, measured without the other 97 % of a step."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from shanshui.models.attention import SparseCausalAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=320, heads=8, dim_head=40, bias=False)
    x = torch.randn(2 * (size // 8) ** 2, frames, 320)
    procs = {"ours": SparseCausalAttnProcessor(), "peer": AttnProcessor2_0()}
    best = {k: float("inf") for k in procs}
    with torch.no_grad():
        for _ in range(repeats):
            for k, proc in procs.items():
                c0 = time.process_time()
                proc(attn, x)
                best[k] = min(best[k], time.process_time() - c0)
    return {"cpu_s_ours": best["ours"], "cpu_s_peer": best["peer"], "ratio_ours_over_peer": best["ours"] / best["peer"],
            "tokens": int(x.shape[0]), "frames": frames, "channels": 320}


# ------------------------------------------------------------------------------------------ timed runs
class UNetTimer:
    """Wall time and process CPU time of every UNet forward (pre/post hooks).

    On a shared machine the wall time depends on the other jobs; the process CPU time (all of this
    process's threads) does much less, so rates are computed from it."""

    def __init__(self, unet):
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._t0 = self._c0 = 0.0
        self._hooks = [unet.register_forward_pre_hook(self._pre), unet.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def _post(self, module, args, out):
        self.times.append(time.perf_counter() - self._t0)
        self.cpu_times.append(time.process_time() - self._c0)

    def remove(self):
        for h in self._hooks:
            h.remove()


def run_call(pipe, peer, contender: str, size: int, frames: int, steps: int) -> tuple[list[float], dict, torch.Tensor]:
    from shanshui.models.motion import set_temporal_attention

    set_temporal_attention(pipe.unet, "temporal" if contender == "ours" else "off")
    timer = UNetTimer(pipe.unet)
    before = rss_mib()
    reset_peak_rss()
    kw = dict(num_frames=frames, height=size, width=size, num_inference_steps=steps, guidance_scale=8.0)
    try:
        if contender == "ours":
            lat = pipe(PROMPT, seed=0, progress=False, output_type="latent", **kw).latents
        else:
            lat = peer(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **kw).frames
    finally:
        timer.remove()
    mem = {"rss_before_mib": before, "peak_rss_mib": peak_rss_mib()}
    return (timer.times, timer.cpu_times), mem, lat.float()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=None, help="[256; 64 with --tiny]")
    ap.add_argument("--frames", type=int, default=None, help="[16; 4 with --tiny]")
    ap.add_argument("--steps", type=int, default=2, help="denoising steps per call, warm-up included")
    ap.add_argument("--warmup", type=int, default=0, help="steps of each call not timed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--tiny", action="store_true", help="tiny models (tests the script)")
    ap.add_argument("--flops-only", action="store_true")
    ap.add_argument("--attn-only", action="store_true", help="just the attn2 micro-benchmark")
    ap.add_argument("--peer-first", action="store_true",
                    help="start with the peer in the first dtype (a second run with this flag completes an "
                         "ABBA order with the first)")
    ap.add_argument("--out", default=str(HERE / "results" / "real_size.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = args.size or (64 if args.tiny else 256)
    frames = args.frames or (4 if args.tiny else 16)
    if args.steps <= args.warmup or args.threads < 1:
        ap.error("--steps must exceed --warmup")

    from gpu_check import build_components, build_video_pipeline, peer_pipeline
    from shanshui.pipelines.text_to_video import place
    from shanshui.runtime import resolve_dtype

    meta = meta_unet(args.tiny)
    table = flop_table(meta, [size] if args.tiny else [256, 512], sorted({frames, 8, 16}) if not args.tiny else [frames])
    print(f"{'size':>5} {'frames':>6} {'ours TFLOP/step':>16} {'peer TFLOP/step':>16}   (CFG: a UNet batch of 2)")
    for r in table:
        print(f"{r['size']:>5} {r['frames']:>6} {r['ours_tflop_per_step']:>16.3f} {r['peer_tflop_per_step']:>16.3f}")
    flops = {c: step_flops(meta, size, frames, c) for c in CONTENDERS}
    del meta
    result = {"setup": {"size": size, "frames": frames, "cfg": True, "steps": args.steps, "warmup": args.warmup,
                        "peer_first": args.peer_first,
                        "threads": args.threads, "tiny": args.tiny, "torch": torch.__version__,
                        "cpu": _cpu_name(), "output": "latents (no VAE decode)"},
              "flop_table": table, "flops_per_step": flops, "runs": {}}
    result["attn2_microbench"] = attn2_microbench(size, frames)
    a = result["attn2_microbench"]
    print(f"attn2 at {size // 8}x{size // 8} latents, {frames} frames: ours {1000 * a['cpu_s_ours']:.1f} ms, "
          f"peer {1000 * a['cpu_s_peer']:.1f} ms (ratio {a['ratio_ours_over_peer']:.2f})")
    if args.flops_only or args.attn_only:
        if args.attn_only:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0

    rates = {}
    t0 = time.perf_counter()
    base = build_components(args.tiny)
    pipe = build_video_pipeline(base)
    del base
    result["setup"]["build_s"] = time.perf_counter() - t0
    result["setup"]["unet_params_m"] = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    peer = peer_pipeline(pipe)
    latents = {}
    for k, name in enumerate(args.dtypes.split(",")):
        dtype = resolve_dtype(name, "cpu")
        rates[name] = matmul_gflops(dtype)
        place(pipe, "cpu", dtype)
        order = CONTENDERS if (k + args.peer_first) % 2 == 0 else CONTENDERS[::-1]
        for contender in order:
            print(f"[real_size] {name} {contender} ...", flush=True)
            (times, cpu_times), mem, lat = run_call(pipe, peer, contender, size, frames, args.steps)
            s = statistics.median(cpu_times[args.warmup:])
            latents[(name, contender)] = lat
            result["runs"][f"{name}/{contender}"] = {
                "cpu_s_per_step_median": s, "cpu_s_per_step_all": cpu_times,
                "wall_s_per_step_median": statistics.median(times[args.warmup:]), "wall_s_per_step_all": times,
                **mem, "achieved_gflops_per_cpu_s": flops[contender] / s / 1e9,
                "fraction_of_matmul_rate": flops[contender] / s / 1e9 / rates[name]}
            (Path(args.out).parent).mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    result["matmul_gflops"] = rates
    ratios = {}
    for name in args.dtypes.split(","):
        o, p = result["runs"][f"{name}/ours"], result["runs"][f"{name}/peer"]
        ratios[name] = {"time_ours_over_peer": o["cpu_s_per_step_median"] / p["cpu_s_per_step_median"],
                        "peak_rss_ours_over_peer": (o["peak_rss_mib"] / p["peak_rss_mib"])
                        if o["peak_rss_mib"] and p["peak_rss_mib"] else None}
    result["ratios"] = ratios
    names = args.dtypes.split(",")
    if "fp32" in names and "bf16" in names:
        for c in CONTENDERS:
            a, b = latents[("fp32", c)], latents[("bf16", c)]
            result.setdefault("bf16_vs_fp32", {})[c] = {
                "time_ratio": result["runs"][f"bf16/{c}"]["cpu_s_per_step_median"]
                / result["runs"][f"fp32/{c}"]["cpu_s_per_step_median"],
                "latent_rel_l2": float((a - b).norm() / a.norm())}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'run':<11}{'CPU s/step':>11}{'wall s/step':>12}{'peak RSS MiB':>14}{'RSS before':>12}"
          f"{'GFLOP/s':>9}{'of GEMM':>9}")
    for key, r in result["runs"].items():
        print(f"{key:<11}{r['cpu_s_per_step_median']:>11.2f}{r['wall_s_per_step_median']:>12.2f}"
              f"{r['peak_rss_mib'] or float('nan'):>14.0f}{r['rss_before_mib'] or float('nan'):>12.0f}"
              f"{r['achieved_gflops_per_cpu_s']:>9.1f}{r['fraction_of_matmul_rate']:>9.2f}")
    for name, r in ratios.items():
        print(f"{name}: time ours/peer {r['time_ours_over_peer']:.3f}, peak RSS ours/peer "
              f"{r['peak_rss_ours_over_peer'] if r['peak_rss_ours_over_peer'] is None else round(r['peak_rss_ours_over_peer'], 3)}"
              f"; GEMM {rates[name]:.0f} GFLOP/s")
    for c, r in result.get("bf16_vs_fp32", {}).items():
        print(f"{c}: bf16/fp32 time {r['time_ratio']:.3f}, latent relative L2 difference {r['latent_rel_l2']:.4f}")
    print(f"wrote {args.out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
