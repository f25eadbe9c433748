"""Write a procedural ink-wash dataset to disk (the ``shanshui data synth`` command).

The layout is the contract with the trainer and is documented in ``docs/dataset-format.md``:
``metadata.jsonl`` (one clip per line), ``clips/`` (mp4 files or folders of PNG frames), ``flow/`` (npz)
and ``synth.json`` (the settings, so a later run can extend the dataset consistently).

Clip ``i`` is rendered from :func:`clip_seed` ``(seed, i)``, so the dataset does not depend on the number
of workers or on the order in which clips finish, and ``--n`` can be raised later to extend it.
Every file is written under a temporary name and renamed when complete; a run skips the clips that are
already complete, so an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ShanshuiError, check
from ..video_io import atomic_output, normal_permissions, write_video
from .procedural_render import check_size, render_clip
from .procedural_scene import attributes, caption, sample_scene

FPS = 8
FORMATS = ("mp4", "frames")
FORMAT_VERSION = 1


def clip_seed(master_seed: int, index: int) -> int:
    """The scene seed of clip ``index`` in a dataset made with ``master_seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(master_seed), int(index)]).generate_state(1)[0])


def check_settings(n: int, seed: int, size: int, frames: int, fmt: str) -> None:
    """Raise :class:`ShanshuiError` naming the first bad value and its allowed range."""
    check(isinstance(n, int) and n >= 1, f"n={n!r} must be an integer >= 1")
    check(isinstance(seed, int) and seed >= 0, f"seed={seed!r} must be an integer >= 0")
    check(isinstance(size, int) and 32 <= size <= 1024 and size % 8 == 0,
          f"size={size!r} must be a multiple of 8 in 32..1024")
    check(isinstance(frames, int) and frames >= 2, f"frames={frames!r} must be an integer >= 2")
    check(fmt in FORMATS, f"format={fmt!r} must be one of {', '.join(FORMATS)}")


def _names(index: int, fmt: str) -> tuple[str, str]:
    stem = f"{index:06d}"
    video = f"clips/{stem}.mp4" if fmt == "mp4" else f"clips/{stem}"
    return video, f"flow/{stem}.npz"


def clip_record(index: int, seed: int, size: int, frames: int, fmt: str) -> dict:
    """The ``metadata.jsonl`` line of clip ``index`` (needs no rendering)."""
    scene = sample_scene(clip_seed(seed, index))
    video, flow = _names(index, fmt)
    return {"video": video, "caption": caption(scene), "attributes": attributes(scene), "flow": flow,
            "seed": scene.seed, "fps": FPS, "frames": frames, "height": size, "width": size}


def _is_complete(root: Path, record: dict) -> bool:
    video, flow = root / record["video"], root / record["flow"]
    if not flow.is_file():
        return False
    if video.suffix == ".mp4":
        return video.is_file() and video.stat().st_size > 0
    return video.is_dir() and len(list(video.glob("*.png"))) == record["frames"]


def _write_frames(frames: np.ndarray, folder: Path) -> None:
    """PNG frames ``0000.png, 0001.png ...`` written into a temporary folder, then renamed into place."""
    from PIL import Image

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        for k, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{k:04d}.png", compress_level=6)
        if folder.exists():  # an incomplete folder left by an older tool: replace it
            shutil.rmtree(folder)
        normal_permissions(tmp)  # mkdtemp made it 0700
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def render_and_write(root: str, record: dict) -> int:
    """Worker: render one clip and write its flow, then its video (the video marks it complete)."""
    root_path = Path(root)
    frames, flow, valid = render_clip(sample_scene(record["seed"]), record["frames"], record["height"],
                                      return_valid=True)
    with atomic_output(root_path / record["flow"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, flow=flow.astype(np.float16), valid=valid)
    if record["video"].endswith(".mp4"):
        write_video(frames, root_path / record["video"], fps=record["fps"])
    else:
        _write_frames(frames, root_path / record["video"])
    return len(frames)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _check_or_write_settings(root: Path, settings: dict) -> None:
    path = root / "synth.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ShanshuiError(f"cannot read '{path}': {exc}") from exc
        for key, value in settings.items():
            check(old.get(key) == value,
                  f"'{root}' holds a dataset made with {key}={old.get(key)!r}, not {value!r}; "
                  f"use another --out or the same settings")
        return
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2) + "\n")


def write_dataset(out: str | os.PathLike, n: int, seed: int = 0, size: int = 128, frames: int = 16,
                  fmt: str = "mp4", workers: int | None = None, progress: bool = True) -> Path:
    """Write ``n`` procedural clips under ``out``; returns the path of ``metadata.jsonl``.

    Clips already complete in ``out`` (from an interrupted or smaller earlier run with the same settings)
    are kept. ``workers`` defaults to the number of CPUs; 1 renders in this process.
    """
    check_settings(n, seed, size, frames, fmt)
    check_size(size)
    workers = (os.cpu_count() or 1) if workers is None else workers
    check(isinstance(workers, int) and workers >= 1, f"workers={workers!r} must be an integer >= 1")
    root = Path(out)
    check(not root.exists() or root.is_dir(), f"--out '{root}' exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    _check_or_write_settings(root, {"format_version": FORMAT_VERSION, "generator": "shanshui.data.procedural",
                                    "seed": seed, "size": size, "frames": frames, "format": fmt, "fps": FPS})
    records = [clip_record(i, seed, size, frames, fmt) for i in range(n)]
    todo = [r for r in records if not _is_complete(root, r)]

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="clip", desc=f"synth ({n - len(todo)} already done)",
               disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for record in todo:
                render_and_write(str(root), record)
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")  # no inherited threads or locks
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                jobs = [(str(root), r) for r in todo]
                for _ in pool.imap_unordered(_star_render, jobs, chunksize=1):
                    bar.update(1)
    finally:
        bar.close()

    metadata = root / "metadata.jsonl"
    with atomic_output(metadata) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return metadata


def _star_render(args: tuple[str, dict]) -> int:
    return render_and_write(*args)
