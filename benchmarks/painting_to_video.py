"""Painting -> video quality and motion control: the full method, its ablations, and no control, side by side.

For each painting in a small set (procedural ink-wash landscapes rendered by ``shanshui.data.procedural`` and
two hand-drawn "scroll" and "album leaf" images made here with OpenCV), every variant animates it with the
same prompt, seed, arrows and still mask, and we measure:

* first-frame fidelity — PSNR / SSIM of the decoded frame 0 vs the (fitted) painting, next to the VAE's own
  round-trip PSNR / SSIM (the ceiling: frame 0 is pinned to the painting's latent);
* style drift — ``shanshui.control.evaluate.style_drift``: ΔE76 of each frame's mean Lab colour vs the
  painting and |log| of its gradient-energy ratio (texture), mean over frames;
* motion — mean DIS flow length between consecutive frames (px/frame);
* control — ``control_errors``: endpoint error and direction agreement (mean cosine) of the output's flow
  vs the requested field in the arrows' region, and motion inside the still mask. The "no control" variant
  is measured against the same request;
* painting kept — mean PSNR / SSIM of frames 1..N to the painting (frame 0 is pinned, so it says nothing),
  and the jump: the change from frame 0 to 1 over the median change between later consecutive frames.

When the model has an image-to-video module (``i2v/``, or ``--i2v FOLDER``), the same paintings also go through
it ("I2V ..." variants: trained control with the proxy / VSDS / slerp ablations, and no field).

Two reference rows need no diffusion: the pixel cinemagraph (the painting warped along the field) shows what
the flow estimator reads back from an exactly followed request, and the same frames passed through the VAE
show what the autoencoder alone leaves of it. "baseline" is plain image-to-video from the cinemagraph
latents (no proxy, no VSDS).

    python benchmarks/painting_to_video.py                       # bundled model if installed, else 'small'
    python benchmarks/painting_to_video.py --components tiny --frames 6 --steps 6
Writes benchmarks/results/painting_to_video.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

PROMPT = "Mist drifting over the mountains, a boat on the river."
VARIANTS = {
    "full": dict(),
    "baseline (no proxy, no VSDS)": dict(use_proxy=False, use_vsds=False),
    "no control": dict(control=False),
    "no proxy": dict(use_proxy=False),
    "no VSDS": dict(use_vsds=False),
    "linear fusion": dict(fusion="linear"),
    "full, motion guidance 1.0": dict(motion_guidance=1.0),
}
I2V_VARIANTS = {
    "I2V trained (proxy+VSDS+slerp)": dict(mode="trained"),
    "I2V trained, no proxy": dict(mode="trained", use_proxy=False),
    "I2V trained, no VSDS": dict(mode="trained", use_vsds=False),
    "I2V trained, linear fusion": dict(mode="trained", fusion="linear"),
    "I2V trained, no proxy/VSDS": dict(mode="trained", use_proxy=False, use_vsds=False),
    "I2V, no field": dict(mode="none", control=False),
}


# --------------------------------------------------------------------------------------------- paintings
def _paper(h: int, w: int, rng) -> np.ndarray:
    base = np.array([236, 226, 204], np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.2)
    return np.clip(base[None, None] + grain[..., None], 0, 255)


def scroll_painting(h: int = 192, w: int = 96, seed: int = 0) -> np.ndarray:
    """A tall hanging-scroll composition: layered peaks, a waterfall, a pine, a poem column in red seal."""
    rng = np.random.default_rng(seed)
    img = _paper(h, w, rng)
    for k, (top, tone) in enumerate(((0.15, 150), (0.35, 110), (0.6, 70))):
        xs = np.linspace(0, w - 1, 9)
        ys = (top + 0.08 * rng.standard_normal(9)) * h
        pts = np.concatenate([np.stack([xs, ys], 1), [[w - 1, h - 1], [0, h - 1]]]).astype(np.int32)
        layer = np.zeros((h, w), np.float32)
        cv2.fillPoly(layer, [pts], 1.0)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.5 + k)
        img = img * (1 - 0.45 * layer[..., None]) + tone * 0.45 * layer[..., None]
    cv2.line(img, (w // 2, int(0.35 * h)), (w // 2 + 3, int(0.8 * h)), (245, 242, 235), 4)        # waterfall
    cv2.line(img, (int(0.2 * w), h - 10), (int(0.25 * w), int(0.62 * h)), (40, 35, 30), 2)       # pine trunk
    for j in range(6):
        y = int(0.62 * h) + 6 * j
        cv2.line(img, (int(0.12 * w), y), (int(0.34 * w), y - 3), (50, 60, 45), 2)
    cv2.rectangle(img, (w - 14, 8), (w - 6, 18), (170, 40, 30), -1)                                # seal
    return np.clip(img, 0, 255).astype(np.uint8)


def album_leaf(h: int = 112, w: int = 160, seed: int = 1) -> np.ndarray:
    """A wide album leaf: moon, distant hills, a lake with reeds and a small boat."""
    rng = np.random.default_rng(seed)
    img = _paper(h, w, rng)
    cv2.circle(img, (int(0.75 * w), int(0.22 * h)), 10, (215, 205, 180), -1)
    hills = np.zeros((h, w), np.float32)
    xs = np.arange(w)
    ridge = (0.45 + 0.08 * np.sin(xs / 17.0) + 0.05 * np.sin(xs / 6.3 + 1)) * h
    hills[np.arange(h)[:, None] > ridge[None, :]] = 1
    hills[int(0.62 * h):] = 0
    hills = cv2.GaussianBlur(hills, (0, 0), 2)
    img = img * (1 - 0.5 * hills[..., None]) + 90 * 0.5 * hills[..., None]
    for x in range(5, w, 9):                                                                        # reeds
        cv2.line(img, (x, h - 2), (x + int(rng.integers(-3, 4)), h - 14 - int(rng.integers(0, 10))),
                 (60, 70, 50), 1)
    boat = np.array([[60, 80], [92, 80], [86, 86], [66, 86]], np.int32)
    cv2.fillPoly(img, [boat], (45, 40, 35))
    return np.clip(img, 0, 255).astype(np.uint8)


def paintings() -> dict:
    """name -> (image uint8 (H, W, 3), arrows as fractions (x0, y0, x1, y1, strength), still region rows)."""
    from shanshui.data.procedural import render_clip, sample_scene

    wide = render_clip(sample_scene(3), frames=2, size=(96, 144))[0][0]
    tall = render_clip(sample_scene(21), frames=2, size=(160, 112))[0][0]
    return {
        # arrows in fractions of width/height; the still mask covers the rows below ``still_from``
        "procedural-wide": (wide, [(0.2, 0.3, 0.45, 0.3, 1.0), (0.7, 0.25, 0.8, 0.2, 1.0)], 0.7),
        "procedural-tall": (tall, [(0.5, 0.35, 0.5, 0.55, 1.0)], 0.75),
        "scroll": (scroll_painting(), [(0.5, 0.45, 0.5, 0.7, 1.0)], 0.85),
        "album-leaf": (album_leaf(), [(0.3, 0.2, 0.6, 0.2, 1.0), (0.3, 0.8, 0.5, 0.8, 0.5)], None),
    }


# ------------------------------------------------------------------------------------------------ pipes
def build_pipeline(components: str, model: str | None = None, motion_module: str | None = None,
                   i2v: str | None = None):
    pipe, label = _build_pipeline(components, model, motion_module)
    if i2v is not None:
        from shanshui.pipelines.loading import BUNDLED_DIR
        from shanshui.pipelines.painting_to_video import attach_i2v

        attach_i2v(pipe, i2v, model or BUNDLED_DIR)
        label += f"; I2V module {i2v}"
    elif pipe.i2v is not None:
        label += "; with its I2V module"
    return pipe, label


def _build_pipeline(components: str, model: str | None = None, motion_module: str | None = None):
    import torch

    from shanshui.models.motion import build_video_unet, motion_parameters
    from shanshui.models.presets import make_components
    from shanshui.pipelines.loading import bundled_model_available
    from shanshui.pipelines.painting_to_video import PaintingToVideoPipeline, load_painting_pipeline

    if model is not None:
        from shanshui.pipelines.loading import load_base_components
        from shanshui.schedulers import make_scheduler

        if motion_module is not None:
            return load_painting_pipeline(model, motion_module), f"model {model} + motion module {motion_module}"
        c = load_base_components(model)
        unet = build_video_unet(c["unet"])  # fresh motion modules: zeroed outputs, i.e. the identity
        pipe = PaintingToVideoPipeline(c["vae"], c["text_encoder"], c["tokenizer"], unet, make_scheduler())
        return pipe, f"trained image model {model}; motion module UNTRAINED (identity)"
    if components == "bundled":
        if not bundled_model_available():
            raise SystemExit("no bundled model is installed; use --components small or tiny")
        return load_painting_pipeline(), "bundled model (trained)"
    c = make_components(components, seed=0)
    unet = build_video_unet(c["unet"], c["motion_config"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in motion_parameters(unet):
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    pipe = PaintingToVideoPipeline(c["vae"], c["text_encoder"], c["tokenizer"], unet, c["scheduler"])
    return pipe, f"'{components}' preset, RANDOM weights (seed 0; motion modules randomised x0.02) - not a trained model"


def measure(frames: np.ndarray, painting, velocity, still, vae_ref) -> dict:
    from shanshui.control.evaluate import control_errors, style_drift
    from shanshui.metrics import psnr, ssim

    x0, y0, x1, y1 = painting.content
    ref = painting.image[y0:y1, x0:x1]
    u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    row = {"psnr0": psnr(u8[0], ref), "ssim0": ssim(u8[0], ref),
           "vae_psnr": psnr(vae_ref, ref), "vae_ssim": ssim(vae_ref, ref)}
    row.update({f"drift_{k}": v for k, v in style_drift(u8, ref).items()})
    v = velocity[y0:y1, x0:x1]
    s = None if still is None else still[y0:y1, x0:x1]
    row.update(control_errors(u8, v, still=s))
    p = [psnr(f, ref) for f in u8[1:]]
    row["kept_psnr"] = float(np.mean([x for x in p if np.isfinite(x)] or [99.0]))
    row["kept_ssim"] = float(np.mean([ssim(f, ref) for f in u8[1:]]))
    steps = [float(np.abs(u8[k + 1].astype(np.float32) - u8[k]).mean()) for k in range(len(u8) - 1)]
    row["jump"] = float(steps[0] / max(np.median(steps[1:]) if len(steps) > 1 else steps[0], 1e-6))
    return row


def run(args) -> dict:
    import torch

    from shanshui.control.arrows import Arrow
    from shanshui.control.cinemagraph import animate
    from shanshui.image_intake import prepare_painting

    torch.set_num_threads(args.threads)
    pipe, label = build_pipeline(args.components, args.model, args.motion_module, args.i2v)
    variants = dict(VARIANTS)
    if pipe.i2v is not None:
        variants.update(I2V_VARIANTS)
    long_side = args.long_side or pipe.native_size
    results, rows = {}, []
    for name, (image, fr_arrows, still_from) in paintings().items():
        h, w = image.shape[:2]
        arrows = [Arrow(a[0] * w, a[1] * h, a[2] * w, a[3] * h, a[4]) for a in fr_arrows]
        still = None
        if still_from is not None:
            still = np.zeros((h, w), bool)
            still[int(still_from * h):] = True
        work = prepare_painting(image, "fit", long_side)
        velocity, still_w = pipe.motion_field(work, arrows, still, args.strength, args.frames, None, 0.05)
        with torch.no_grad():
            z = pipe.encode_images(work.image[None])
            vae_ref = (pipe.decode_latents(z)[0, 0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        results[name] = {"size": list(work.size), "variants": {}}
        cine = animate(work.image, velocity, args.frames).astype(np.float32) / 255
        ref_row = measure(cine, work, velocity, still_w, vae_ref)
        results[name]["variants"]["cinemagraph only (reference)"] = ref_row
        rows.append((name, "cinemagraph only (reference)", ref_row, 0.0))
        with torch.no_grad():  # the same frames through the VAE alone: what the autoencoder leaves of the motion
            zc = pipe.encode_images((cine * 255 + 0.5).astype(np.uint8))
            cine_vae = pipe.decode_latents(zc)[0].permute(0, 2, 3, 1).numpy()
        vae_row = measure(cine_vae, work, velocity, still_w, vae_ref)
        results[name]["variants"]["cinemagraph via VAE (reference)"] = vae_row
        rows.append((name, "cinemagraph via VAE (reference)", vae_row, 0.0))
        for vname, opts in variants.items():
            opts = dict(opts)
            control = opts.pop("control", True)
            if "mode" in opts:
                opts["control"] = opts.pop("mode")
            start = time.perf_counter()
            out = pipe(work, PROMPT, num_frames=args.frames, num_inference_steps=args.steps, seed=args.seed,
                       arrows=arrows if control else None, still_mask=still if control else None,
                       strength=args.strength, progress=False, **opts)
            seconds = time.perf_counter() - start
            row = measure(out.frames[0], work, velocity, still_w, vae_ref)
            row["seconds"] = seconds
            results[name]["variants"][vname] = row
            rows.append((name, vname, row, seconds))
            print(f"  {name:<16} {vname:<31} {seconds:6.1f}s", flush=True)
    return {"label": label, "results": results, "rows": rows}


def _finite(x):
    """JSON has no infinity: an identical first frame (PSNR = inf) is written as null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows) -> None:
    head = (f"{'painting':<16} {'variant':<31} {'PSNR0':>6} {'SSIM0':>6} {'VAE PSNR':>8} {'kept dB':>7} "
            f"{'kept SSIM':>9} {'jump':>5} {'drift dE':>8} {'drift tex':>9} {'motion':>7} {'EPE':>6} {'dir cos':>7} "
            f"{'still':>6}")
    print(head)
    for name, vname, r, _ in rows:
        print(f"{name:<16} {vname:<31} {fmt(r['psnr0'], '6.2f')} {fmt(r['ssim0'], '6.3f')} "
              f"{fmt(r['vae_psnr'], '8.2f')} {fmt(r.get('kept_psnr'), '7.2f')} {fmt(r.get('kept_ssim'), '9.3f')} "
              f"{fmt(r.get('jump'), '5.2f')} {fmt(r['drift_colour'], '8.2f')} {fmt(r['drift_texture'], '9.3f')} "
              f"{fmt(r['motion'], '7.3f')} {fmt(r.get('epe'), '6.3f')} {fmt(r.get('direction'), '7.3f')} "
              f"{fmt(r.get('still_motion'), '6.3f')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", choices=["bundled", "small", "tiny"], default=None,
                    help="default: bundled if installed, else small")
    ap.add_argument("--model", default=None, help="a base-model folder instead of --components (e.g. a stage-1 "
                                                   "image model); with no --motion-module a fresh one is used")
    ap.add_argument("--motion-module", default=None)
    ap.add_argument("--i2v", default=None, help="train-control output folder to add the I2V variants")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--long-side", type=int, default=None, help="default: the model's native size")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "painting_to_video.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.components is None and args.model is None:
        from shanshui.pipelines.loading import bundled_model_available

        args.components = "bundled" if bundled_model_available() else "small"
    start = time.perf_counter()
    out = run(args)
    total = time.perf_counter() - start
    print(f"\ncomponents: {out['label']}")
    print(f"prompt: {PROMPT!r}; frames {args.frames}, DDIM steps {args.steps} (VSDS on t >= 0.6 T), seed "
          f"{args.seed}, strength {args.strength}; flow: DIS; total {total:.0f} s\n")
    print_table(out["rows"])
    means = {}
    for vname in dict.fromkeys(v for _, v, _, _ in out["rows"]):
        rs = [r for _, v, r, _ in out["rows"] if v == vname]
        means[vname] = {k: float(np.mean([r[k] for r in rs if r.get(k) is not None]))
                        for k in rs[0] if any(r.get(k) is not None for r in rs)}
    print("\nmean over paintings")
    print_table([("(mean)", v, m, 0.0) for v, m in means.items()])
    meta = {"components": out["label"], "prompt": PROMPT, "frames": args.frames, "steps": args.steps,
            "seed": args.seed, "strength": args.strength, "threads": args.threads,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "total_s": total}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "paintings": out["results"], "mean": means}
    Path(args.out).write_text(json.dumps(_finite(doc), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
