"""Clip decoding benchmark: what one training sample costs to read from a 1080p video.

One sample (SPEC 1.3) is 8 frames at stride 4 -- 29 source frames -- resized and centre-cropped to 256.
Methods, side by side in one run, on the same files and the same random starts:

  shanshui     :func:`shanshui.data.decode.read_frames` (seek when the clip starts >= 16 frames in,
               grab-only for skipped frames, stop at the last wanted frame, resize as frames arrive)
  no-seek      the same, always decoding forward from frame 0
  decode-all   decode every frame of the file to RGB (imageio-ffmpeg, as a "read the video, then slice"
               loader does), then take the 8 frames and resize them

Two synthetic 1920x1080, 25 fps, 6 s (150 frame) H.264 files are written first: one with x264's default
key-frame interval (250: the whole file is one group of pictures, so a seek cannot skip decoding) and one
with a key frame every 25 frames (typical of cut and re-encoded clips). Reported: mean and max ms per clip,
and the size of the decoded frames each method holds at once.

    .venv/bin/python benchmarks/clip_decode.py                 # 5 starts per file, results JSON
    .venv/bin/python benchmarks/clip_decode.py --repeats 10 --workdir /tmp/clipbench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from shanshui.data.decode import probe_video, read_frames, resize_center_crop

RESULTS = Path(__file__).parent / "results" / "clip_decode.json"
FRAMES, STRIDE, SIZE = 8, 4, 256
SPAN = (FRAMES - 1) * STRIDE + 1


def make_video(path: Path, keyint: int | None, n: int = 150, h: int = 1080, w: int = 1920) -> None:
    """Moving sinusoidal bands plus a growing bar: cheap to render, not trivial to compress."""
    import imageio.v2 as imageio

    if path.exists():
        return
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    params = ["-g", str(keyint)] if keyint else []
    tmp = path.with_suffix(".part.mp4")
    writer = imageio.get_writer(tmp, format="FFMPEG", fps=25, codec="libx264", quality=8,
                                pixelformat="yuv420p", macro_block_size=1, output_params=params)
    for i in range(n):
        f = np.empty((h, w, 3), np.uint8)
        f[..., 0] = 127 + 120 * np.sin(x / 80 + i / 5)
        f[..., 1] = 127 + 120 * np.sin(y / 60 - i / 7)
        f[..., 2] = 127 + 120 * np.sin((x + y) / 90 + i / 3)
        f[20:60, 20 : 20 + (8 * i) % 1800] = 255
        writer.append_data(f)
    writer.close()
    os.replace(tmp, path)


def shanshui(path: Path, start: int) -> tuple[np.ndarray, int]:
    frames = read_frames(path, range(start, start + SPAN, STRIDE),
                         transform=lambda f: resize_center_crop(f, SIZE))
    return np.stack(frames), 1080 * 1920 * 3  # one full-size frame alive at a time


def no_seek(path: Path, start: int) -> tuple[np.ndarray, int]:
    import shanshui.data.decode as decode

    saved, decode.SEEK_MIN_FRAMES = decode.SEEK_MIN_FRAMES, 10**9
    try:
        return shanshui(path, start)
    finally:
        decode.SEEK_MIN_FRAMES = saved


def decode_all(path: Path, start: int) -> tuple[np.ndarray, int]:
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        frames = np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
    clip = np.stack([resize_center_crop(f, SIZE) for f in frames[start : start + SPAN : STRIDE]])
    return clip, frames.nbytes


METHODS = {"shanshui": shanshui, "no-seek": no_seek, "decode-all": decode_all}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="random clip starts per file")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "shanshui-clipbench")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = {"gop250": args.workdir / "hd_gop250.mp4", "gop25": args.workdir / "hd_gop25.mp4"}
    for name, path in files.items():
        make_video(path, keyint=None if name == "gop250" else 25)

    rows = []
    for name, path in files.items():
        n = probe_video(path).num_frames
        starts = np.random.default_rng(0).integers(0, n - SPAN + 1, args.repeats).tolist()
        reference = None
        for method, fn in METHODS.items():
            times, held = [], 0
            for start in starts:
                t0 = time.perf_counter()
                clip, held = fn(path, start)
                times.append(time.perf_counter() - t0)
                if start == starts[0]:
                    if reference is None:
                        reference = clip
                    # every method must return the same pixels (same decoder, same resize)
                    diff = int(np.abs(clip.astype(int) - reference.astype(int)).max())
                    assert diff <= 2, f"{method} differs from shanshui by {diff} grey levels on {name}"
            rows.append({"file": name, "method": method, "starts": starts,
                         "ms_mean": 1000 * float(np.mean(times)), "ms_max": 1000 * float(np.max(times)),
                         "decoded_mb_held": held / 2**20})

    print(f"{'file':8s} {'method':11s} {'ms/clip mean':>13s} {'max':>8s} {'decoded MB held':>16s}")
    for r in rows:
        print(f"{r['file']:8s} {r['method']:11s} {r['ms_mean']:13.0f} {r['ms_max']:8.0f} "
              f"{r['decoded_mb_held']:16.1f}")
    result = {"clip": {"frames": FRAMES, "stride": STRIDE, "size": SIZE},
              "source": "1920x1080 25 fps 150 frames", "repeats": args.repeats, "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
