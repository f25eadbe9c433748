"""Look at the procedural ink-wash scenes: a contact sheet of first frames, one clip frame by frame, its flow.

    python examples/procedural_gallery.py                 # writes out/procedural_*.png and a gif
    python examples/procedural_gallery.py --size 256 --first-seed 100

Writes:
  out/procedural_sheet.png   the first frame of a dozen scenes, captions printed to the terminal
  out/procedural_clip.png    every frame of one clip (the demo prompt), row by row
  out/procedural_flow.png    that clip's ground-truth flow (hue = direction, brightness = speed)
  out/procedural_clip.gif    the same clip, animated
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from shanshui.data.procedural import caption, render_clip, sample_scene, scene_from_caption
from shanshui.video_io import contact_sheet, write_video

DEMO_PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds, camera panning left."


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """Colour-code flow (H, W, 2): hue = direction, value = speed relative to the fastest pixel."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (angle * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / max(float(magnitude.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out", help="output folder")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    firsts = []
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.count):
        scene = sample_scene(seed)
        frames, _ = render_clip(scene, frames=args.frames, size=args.size)
        firsts.append(frames[0])
        print(f"seed {seed:4d}: {caption(scene)}")
    per_clip = (time.perf_counter() - start) / args.count
    print(f"{per_clip:.3f} s per {args.frames}-frame {args.size}x{args.size} clip")
    Image.fromarray(contact_sheet(np.stack(firsts), cols=4)).save(out / "procedural_sheet.png")

    scene = scene_from_caption(DEMO_PROMPT, seed=3)
    frames, flow = render_clip(scene, frames=args.frames, size=args.size)
    Image.fromarray(contact_sheet(frames, cols=8)).save(out / "procedural_clip.png")
    flow_sheet = contact_sheet(np.stack([flow_to_rgb(f) for f in flow]), cols=8)
    Image.fromarray(flow_sheet).save(out / "procedural_flow.png")
    write_video(frames, out / "procedural_clip.gif", fps=8)
    print(f"clip: {caption(scene)}  max flow {np.abs(flow).max():.2f} px/frame")
    print(f"wrote {out}/procedural_sheet.png, procedural_clip.png, procedural_flow.png, procedural_clip.gif")


if __name__ == "__main__":
    main()
