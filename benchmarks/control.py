"""Image-to-video control on held-out procedural clips with exact flow (SPEC §2.1–2.3, issue 13).

Held-out clips are rendered here by ``shanshui.data.procedural`` from scene seeds the training set does not use
(``clip_seed(HELDOUT_SEED, i)``; ``shanshui data synth`` uses master seed 0). Each clip's frame 0 is the painting;
arrows are sampled from its true flow as in T's training pairs (:mod:`shanshui.control.refine`). Measured:

* **painting kept** — mean PSNR / SSIM of frames 1..N to the painting, next to the same figure for the real
  clip and for the real clip sent through the model's VAE (encode + decode: the most a latent model can keep,
  since its every frame comes out of that decoder); and the "jump": the change from frame 0 to 1 divided by the median change between later consecutive
  frames (mean absolute pixel difference), 1 = no jump;
* **control** — ``control_errors`` of the output's DIS flow against the requested field in the arrows' region
  (EPE px/frame, mean direction cosine), and the same against the clip's true flow there;
* **strength** — the I2V model without a field, asked for 0.5 / 1 / 2 px/frame: the measured mean DIS motion of
  the frame, and with arrows scaled to that speed: the measured speed along the arrows' field in its region;
* **refinement network T** — EPE of T's output vs the true flow (valid pixels) against the plain Gaussian
  field, over many arrow samples (no diffusion);
* **still mask** — mean DIS motion inside a still mask (the lower third) with trained control.

    python benchmarks/control.py                                  # bundled model (needs its i2v/ module)
    python benchmarks/control.py --model M --i2v runs/bundled/control/final --clips 3 --frames 8 --steps 10
Writes benchmarks/results/control.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HELDOUT_SEED = 7
PROMPT_FALLBACK = "Mountains, mist, a lake."


def heldout_clips(n: int, frames: int, size: int):
    from shanshui.data.procedural import caption, clip_seed, render_clip, sample_scene

    out = []
    for i in range(n):
        scene = sample_scene(clip_seed(HELDOUT_SEED, i))
        video, flow, valid = render_clip(scene, frames=frames, size=size, return_valid=True)
        out.append({"video": video, "flow": flow, "valid": valid, "caption": caption(scene) or PROMPT_FALLBACK})
    return out


def kept(frames_u8: np.ndarray, painting: np.ndarray) -> dict:
    from shanshui.metrics import psnr, ssim

    p = [psnr(f, painting) for f in frames_u8[1:]]
    s = [ssim(f, painting) for f in frames_u8[1:]]
    steps = [float(np.abs(frames_u8[k + 1].astype(np.float32) - frames_u8[k]).mean()) for k in range(len(frames_u8) - 1)]
    later = np.median(steps[1:]) if len(steps) > 1 else steps[0]
    return {"kept_psnr": float(np.mean([x for x in p if np.isfinite(x)] or [99.0])), "kept_ssim": float(np.mean(s)),
            "jump": float(steps[0] / max(later, 1e-6))}


def u8(frames) -> np.ndarray:
    return (np.clip(np.asarray(frames), 0, 1) * 255 + 0.5).astype(np.uint8)


def control_rows(frames_u8, requested, true_flow, region, still=None) -> dict:
    from shanshui.control.evaluate import control_errors
    from shanshui.metrics import consecutive_flows

    flows = consecutive_flows(frames_u8, "dis")
    req = np.where(region[..., None], requested, 0).astype(np.float32)
    tru = np.where(region[..., None], true_flow, 0).astype(np.float32)
    a = control_errors(frames_u8, req, still=still, flows=flows)
    b = control_errors(frames_u8, tru, flows=flows)
    return {"motion": a["motion"], "epe": a.get("epe"), "direction": a.get("direction"),
            "speed_ratio": a.get("speed_ratio"), "epe_true": b.get("epe"), "direction_true": b.get("direction"),
            "still_motion": a.get("still_motion")}


def refiner_eval(pipe, clips, samples: int, seed: int = 0) -> dict:
    import torch

    from shanshui.control.refine import training_pair

    refiner = pipe.i2v.control.refiner
    rng = np.random.default_rng(seed)
    e_gauss, e_t = [], []
    for clip in clips:
        v, valid = clip["flow"][0], clip["valid"][0]
        img = torch.from_numpy(clip["video"][0]).permute(2, 0, 1)[None].float() / 127.5 - 1
        for _ in range(samples):
            field, arrows = training_pair(v, valid, rng, 5, len(clip["video"]))
            if not arrows:
                continue
            with torch.no_grad():
                out = refiner(torch.from_numpy(field).permute(2, 0, 1)[None], img)[0].permute(1, 2, 0).numpy()
            e_gauss.append(float(np.linalg.norm(field - v, axis=-1)[valid].mean()))
            e_t.append(float(np.linalg.norm(out - v, axis=-1)[valid].mean()))
    g, t = float(np.mean(e_gauss)), float(np.mean(e_t))
    return {"pairs": len(e_t), "epe_gaussian": g, "epe_T": t, "reduction": 1 - t / g}


VARIANTS = {
    "trained (I2V, proxy+VSDS+slerp)": dict(control="trained"),
    "trained, no proxy": dict(control="trained", use_proxy=False),
    "trained, no VSDS": dict(control="trained", use_vsds=False),
    "trained, linear fusion": dict(control="trained", fusion="linear"),
    "trained, no proxy/VSDS": dict(control="trained", use_proxy=False, use_vsds=False),
    "I2V, no field (none)": dict(control="none"),
    "training-free (T2V)": dict(control="training-free"),
}


def run(args) -> dict:
    import torch

    from shanshui.control.arrows import dense_field
    from shanshui.control.refine import sample_arrows
    from shanshui.pipelines.painting_to_video import load_painting_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_painting_pipeline(args.model, args.motion_module, i2v=args.i2v)
    if pipe.i2v is None:
        raise SystemExit("this model has no image-to-video module: pass --i2v FOLDER (train-control output)")
    size = pipe.native_size
    clips = heldout_clips(args.clips, args.frames, size)
    rows, real, real_vae = {v: [] for v in VARIANTS}, [], []
    strength_rows = []
    rng = np.random.default_rng(args.seed)
    for ci, clip in enumerate(clips):
        video, flow, valid = clip["video"], clip["flow"], clip["valid"]
        painting = video[0]
        true_v = flow.mean(axis=0)
        moving = np.linalg.norm(true_v, axis=-1) > 0.05
        real.append({**kept(video, painting), **control_rows(video, true_v, true_v, moving)})
        with torch.no_grad():
            through_vae = u8(pipe.decode_latents(pipe.encode_images(video))[0].permute(0, 2, 3, 1).numpy())
        real_vae.append({**kept(through_vae, painting), **control_rows(through_vae, true_v, true_v, moving)})
        arrows = sample_arrows(flow[0], valid[0], rng, 3, args.frames)
        if not arrows:
            print(f"  clip {ci}: nothing moves, skipped", flush=True)
            continue
        gauss = dense_field(arrows, size, size) / np.float32(args.frames - 1)
        region = np.linalg.norm(gauss, axis=-1) > 0
        still = np.zeros((size, size), bool)
        still[2 * size // 3:] = True
        for name, opts in VARIANTS.items():
            start = time.perf_counter()
            use = dict(opts)
            arrows_in = arrows if use["control"] != "none" else None
            out = pipe(painting, clip["caption"], num_frames=args.frames, num_inference_steps=args.steps,
                       guidance_scale=args.guidance, arrows=arrows_in, seed=args.seed, progress=False, **use)
            f8 = u8(out.frames[0])
            row = {**kept(f8, painting), **control_rows(f8, gauss, true_v, region), "seconds":
                   time.perf_counter() - start}
            rows[name].append(row)
            print(f"  clip {ci} {name:<34} {row['seconds']:5.1f}s  kept {row['kept_psnr']:5.2f} dB  "
                  f"EPE {row['epe']:.3f}  cos {row['direction']:.3f}", flush=True)
        # still mask with trained control
        out = pipe(painting, clip["caption"], num_frames=args.frames, num_inference_steps=args.steps,
                   guidance_scale=args.guidance, arrows=arrows, still_mask=still, seed=args.seed, progress=False,
                   control="trained")
        f8 = u8(out.frames[0])
        rows.setdefault("trained + still mask (lower third)", []).append(
            {**kept(f8, painting), **control_rows(f8, gauss, true_v, region & ~still, still=still)})
        # strength
        if ci < args.strength_clips:
            for s in args.speeds:
                for mode in ("none", "trained"):
                    out = pipe(painting, clip["caption"], num_frames=args.frames, num_inference_steps=args.steps,
                               guidance_scale=args.guidance, arrows=arrows if mode == "trained" else None,
                               speed=s, seed=args.seed, progress=False, control=mode)
                    f8 = u8(out.frames[0])
                    from shanshui.metrics import consecutive_flows

                    fl = consecutive_flows(f8, "dis")
                    if mode == "none":
                        measured = float(np.linalg.norm(fl, axis=-1).mean())
                    else:
                        v = out.velocity
                        mag = np.linalg.norm(v, axis=-1)
                        reg = mag > 0.05 * mag.max()
                        along = (fl.mean(axis=0)[reg] * v[reg]).sum(-1) / mag[reg]
                        measured = float(along.mean())
                    strength_rows.append({"clip": ci, "mode": mode, "requested": s, "measured": measured})
                    print(f"  clip {ci} strength {mode:<8} {s:.1f} px/frame -> {measured:.3f}", flush=True)
    t_row = refiner_eval(pipe, clips, args.refine_samples)
    return {"real": real, "real_vae": real_vae, "rows": rows, "strength": strength_rows, "refiner": t_row, "size": size}


def mean_rows(rs: list[dict]) -> dict:
    keys = {k for r in rs for k in r}
    return {k: float(np.mean([r[k] for r in rs if r.get(k) is not None])) for k in sorted(keys)
            if any(r.get(k) is not None for r in rs)}


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers model folder (default: the bundled model)")
    ap.add_argument("--motion-module", default=None, help="the T2V motion module (training-free variant)")
    ap.add_argument("--i2v", default=None, help="train-control output folder (default: the model's i2v/)")
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--strength-clips", type=int, default=1)
    ap.add_argument("--speeds", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--refine-samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "control.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    res = run(args)
    total = time.perf_counter() - start
    table = {"real clips (reference)": mean_rows(res["real"]),
             "real clips through the VAE (ceiling)": mean_rows(res["real_vae"])}
    table.update({k: mean_rows(v) for k, v in res["rows"].items() if v})
    print(f"\n{args.clips} held-out clips, {res['size']} px, {args.frames} frames, {args.steps} DDIM steps, "
          f"guidance {args.guidance}, seed {args.seed}; flow: DIS; total {total:.0f} s\n")
    print(f"{'variant':<36} {'kept PSNR':>9} {'kept SSIM':>9} {'jump':>6} {'motion':>7} {'EPE req':>8} "
          f"{'cos req':>7} {'EPE true':>8} {'cos true':>8} {'still':>6}")
    for name, m in table.items():
        print(f"{name:<36} {fmt(m.get('kept_psnr'), '9.2f')} {fmt(m.get('kept_ssim'), '9.3f')} "
              f"{fmt(m.get('jump'), '6.2f')} {fmt(m.get('motion'), '7.3f')} {fmt(m.get('epe'), '8.3f')} "
              f"{fmt(m.get('direction'), '7.3f')} {fmt(m.get('epe_true'), '8.3f')} "
              f"{fmt(m.get('direction_true'), '8.3f')} {fmt(m.get('still_motion'), '6.3f')}")
    print("\nstrength (requested px/frame -> measured)")
    for mode in ("none", "trained"):
        for s in args.speeds:
            ms = [r["measured"] for r in res["strength"] if r["mode"] == mode and r["requested"] == s]
            if ms:
                print(f"  {mode:<8} {s:4.1f} -> {np.mean(ms):.3f}  (ratio {np.mean(ms) / s:.2f})")
    t = res["refiner"]
    print(f"\nrefinement network T on {t['pairs']} arrow samples: EPE Gaussian field {t['epe_gaussian']:.3f}, "
          f"T {t['epe_T']:.3f} px/frame ({100 * t['reduction']:.0f} % lower)")
    meta = {k: v for k, v in vars(args).items() if k != "out"}
    meta.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), total_s=total)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "table": table, "strength": res["strength"],
                                          "refiner": t}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
