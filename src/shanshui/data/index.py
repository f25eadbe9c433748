"""Finding the (video, caption) pairs of a dataset folder, probing them, and their statistics.

This module does not import torch, so ``shanshui data check`` starts quickly; the torch dataset that
samples training clips from these pairs is :mod:`shanshui.data.dataset`.

A dataset is a folder laid out like LPV-HD (see ``docs/dataset-format.md``), read in this order:

1. ``DIR/metadata.jsonl`` -- one JSON object per line, ``{"video": "clips/000123.mp4", "caption": "..."}``;
   ``video`` may also name a folder of frame images; optional ``fps`` (used for frame folders) and any
   other keys (``attributes``, ``flow``, ``seed`` ...) are kept in :attr:`VideoItem.meta`.
2. ``DIR/metadata.csv`` -- columns ``video`` and ``caption`` (optional ``fps``; other columns kept in
   ``meta``).
3. no manifest -- every video file and every frame folder under ``DIR`` (recursively) whose caption is
   in a ``.txt`` file of the same stem next to it (``a/b.mp4`` or ``a/b/`` -> ``a/b.txt``). A folder
   counts as a frame folder when it holds images and no ``.txt`` file.

Entries that cannot be used (no caption, missing file, unsupported type) are listed with the reason in
:attr:`DatasetIndex.skipped`; nothing stops on one bad entry.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from ..errors import check
from ..video_io import IMAGE_SUFFIXES
from .decode import VIDEO_FILE_SUFFIXES, DecodeError, VideoInfo, probe_video

logger = logging.getLogger("shanshui.data")

MANIFESTS = ("metadata.jsonl", "metadata.csv")


@dataclass(frozen=True)
class VideoItem:
    """One (video, caption) pair. ``video`` is a file or a folder of frames."""

    video: Path
    caption: str
    fps: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class DatasetIndex:
    """What :func:`scan_dataset` found: usable-looking items, and skipped entries as ``(path, reason)``."""

    root: Path
    source: str
    items: list[VideoItem]
    skipped: list[tuple[Path, str]]


# ------------------------------------------------------------------------------------------------
# Scanning


def _clean_caption(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def _parse_fps(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


def _resolve_entry(root: Path, video: Any, caption: Any, where: str, fps: Any, meta: dict,
                   skipped: list) -> VideoItem | None:
    """Turn one manifest row into an item, or record why it cannot be one."""
    if not isinstance(video, str) or not video.strip():
        skipped.append((root / where, f"{where}: no 'video' path"))
        return None
    path = Path(video.strip())
    path = path if path.is_absolute() else root / path
    caption = _clean_caption(caption)
    if not caption:
        skipped.append((path, f"{where}: no caption"))
        return None
    if not path.exists():
        skipped.append((path, f"{where}: file not found"))
        return None
    if path.is_file() and path.suffix.lower() not in VIDEO_FILE_SUFFIXES:
        skipped.append((path, f"{where}: unsupported type '{path.suffix}' "
                              f"(readable: {', '.join(VIDEO_FILE_SUFFIXES)} or a folder of frames)"))
        return None
    return VideoItem(path, caption, _parse_fps(fps), meta)


def _scan_jsonl(root: Path, manifest: Path, skipped: list) -> list[VideoItem]:
    items = []
    with open(manifest, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{manifest.name} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                skipped.append((manifest, f"{where}: not valid JSON ({exc.msg})"))
                continue
            if not isinstance(row, dict):
                skipped.append((manifest, f"{where}: expected a JSON object, got {type(row).__name__}"))
                continue
            meta = {k: v for k, v in row.items() if k not in ("video", "caption", "fps")}
            item = _resolve_entry(root, row.get("video"), row.get("caption"), where, row.get("fps"), meta,
                                  skipped)
            if item is not None:
                items.append(item)
    return items


def _scan_csv(root: Path, manifest: Path, skipped: list) -> list[VideoItem]:
    items = []
    with open(manifest, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        check("video" in columns and "caption" in columns,
              f"manifest '{manifest}' has columns {columns}; it needs 'video' and 'caption'")
        for rowno, row in enumerate(reader, 2):
            row = {(k or "").strip(): v for k, v in row.items()}
            meta = {k: v for k, v in row.items() if k not in ("video", "caption", "fps") and k}
            item = _resolve_entry(root, row.get("video"), row.get("caption"), f"{manifest.name} row {rowno}",
                                  row.get("fps"), meta, skipped)
            if item is not None:
                items.append(item)
    return items


def _is_frame_folder(folder: Path) -> bool:
    """A folder of frames holds images, and neither captions nor videos (those make it a folder of clips)."""
    try:
        suffixes = {Path(n).suffix.lower() for n in os.listdir(folder) if not n.startswith(".")}
    except OSError:
        return False
    if ".txt" in suffixes or suffixes & (set(VIDEO_FILE_SUFFIXES) - set(IMAGE_SUFFIXES)):
        return False
    return bool(suffixes & set(IMAGE_SUFFIXES))


def _scan_sidecars(root: Path, skipped: list) -> list[VideoItem]:
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        videos: list[Path] = []
        for d in list(dirnames):
            if _is_frame_folder(here / d):  # one video: do not walk into it
                dirnames.remove(d)
                videos.append(here / d)
        videos += [here / f for f in sorted(filenames)
                   if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_FILE_SUFFIXES]
        for video in sorted(videos):
            sidecar = video.with_suffix(".txt") if video.is_file() else video.parent / f"{video.name}.txt"
            if not sidecar.is_file():
                skipped.append((video, f"no caption (expected '{sidecar.relative_to(root)}')"))
                continue
            caption = _clean_caption(sidecar.read_text(encoding="utf-8", errors="replace"))
            if not caption:
                skipped.append((video, f"empty caption file '{sidecar.relative_to(root)}'"))
                continue
            items.append(VideoItem(video, caption))
    return items


def scan_dataset(root: str | os.PathLike) -> DatasetIndex:
    """List the (video, caption) pairs in ``root`` without decoding anything.

    Raises :class:`ShanshuiError` if ``root`` is not a folder; an empty result is returned as such
    (:class:`VideoTextDataset` and ``shanshui data check`` decide what to make of it).
    """
    root = Path(root).expanduser()
    check(root.exists(), f"dataset folder '{root}' does not exist")
    check(root.is_dir(), f"dataset path '{root}' is a file; expected a folder of videos and captions")
    skipped: list[tuple[Path, str]] = []
    if (root / "metadata.jsonl").is_file():
        source, items = "metadata.jsonl", _scan_jsonl(root, root / "metadata.jsonl", skipped)
    elif (root / "metadata.csv").is_file():
        source, items = "metadata.csv", _scan_csv(root, root / "metadata.csv", skipped)
    else:
        source, items = ".txt sidecar captions", _scan_sidecars(root, skipped)
    return DatasetIndex(root, source, items, skipped)


def empty_dataset_message(index: DatasetIndex, problems: Sequence[tuple[Path, str]] = ()) -> str:
    """Explain, in one line, why ``index`` gives no usable clip."""
    root = index.root
    problems = list(index.skipped) + list(problems)
    if problems:
        first = problems[0]
        hint = ("; clips need fewer frames or a smaller stride"
                if all("too short" in reason for _, reason in problems) else "")
        return (f"dataset folder '{root}' has no usable (video, caption) pair: {len(problems)} entry(ies) "
                f"from {index.source} were skipped, e.g. '{first[0]}': {first[1]}{hint} "
                f"(run 'shanshui data check {root}' for the full list)")
    if index.source != ".txt sidecar captions":
        return f"dataset folder '{root}': {index.source} lists no videos"
    loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES] if root.is_dir() else []
    hint = (f"; it holds {len(loose)} loose image(s) -- put a frame folder in a subfolder with a "
            "same-name .txt caption" if loose else "")
    return (f"dataset folder '{root}' holds no (video, caption) pairs: no {' or '.join(MANIFESTS)}, and no "
            f"video ({', '.join(VIDEO_FILE_SUFFIXES)}) or frame folder with a .txt caption{hint}")


# ------------------------------------------------------------------------------------------------
# Probing


def probe_items(items: Sequence[VideoItem], workers: int = 4, count_frames: bool = False,
                on_done: Callable[[], None] | None = None) -> list[VideoInfo | DecodeError]:
    """Probe every item (in threads: the decoders release the GIL). Failures come back as the error.

    ``on_done`` is called once per probed item (for a progress bar).
    """

    def one(item: VideoItem):
        try:
            return probe_video(item.video, fps=item.fps, count_frames=count_frames)
        except DecodeError as exc:
            return exc
        except Exception as exc:  # a decoder crashing on a corrupt file is still "this file is bad"
            return DecodeError(f"cannot read '{item.video}': {type(exc).__name__}: {exc}")
        finally:
            if on_done is not None:
                on_done()

    if workers <= 1 or len(items) <= 1:
        return [one(it) for it in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))


# ------------------------------------------------------------------------------------------------
# Statistics


def clip_span(frames: int, stride: int) -> int:
    """Source frames one clip covers: ``(frames - 1) * stride + 1``."""
    return (frames - 1) * stride + 1


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": float(min(values)), "median": float(statistics.median(values)), "max": float(max(values))}


def _fps_key(fps: float | None) -> str:
    if fps is None:
        return "unknown"
    return f"{fps:.2f}".rstrip("0").rstrip(".")


def dataset_stats(index: DatasetIndex, frames: int = 8, stride: int = 4, count_frames: bool = False,
                  workers: int = 4, on_done: Callable[[], None] | None = None) -> dict[str, Any]:
    """The numbers a dataset paper reports, as a JSON-ready dict.

    ``count``: readable items; ``duration_s`` / ``num_frames`` / ``caption_words``: min, median, max (and
    total seconds); ``resolutions`` and ``fps``: histograms (most common first); ``too_short``: readable
    items shorter than one clip of ``frames`` at ``stride``; ``unreadable`` and ``skipped``:
    ``[path, reason]`` lists (files that failed to decode, and manifest/sidecar problems). With
    ``count_frames`` every video is decoded to the end (exact counts, corrupt streams found; slow).
    """
    infos = probe_items(index.items, workers=workers, count_frames=count_frames, on_done=on_done)
    root = index.root
    rel = lambda p: str(p.relative_to(root)) if Path(p).is_relative_to(root) else str(p)  # noqa: E731
    readable = [(it, inf) for it, inf in zip(index.items, infos) if isinstance(inf, VideoInfo)]
    unreadable = [[rel(it.video), str(inf)] for it, inf in zip(index.items, infos)
                  if isinstance(inf, DecodeError)]
    durations = [inf.duration for _, inf in readable if inf.duration is not None]
    res: dict[str, int] = {}
    fps: dict[str, int] = {}
    for _, inf in readable:
        key = f"{inf.width}x{inf.height}"
        res[key] = res.get(key, 0) + 1
        fps[_fps_key(inf.fps)] = fps.get(_fps_key(inf.fps), 0) + 1
    span = clip_span(frames, stride)
    duration = _summary(durations)
    if duration is not None:
        duration["total"] = float(sum(durations))
    return {
        "root": str(root),
        "source": index.source,
        "entries": len(index.items) + len(index.skipped),
        "count": len(readable),
        "duration_s": duration,
        "duration_unknown": len(readable) - len(durations),
        "num_frames": _summary([inf.num_frames for _, inf in readable]),
        "frame_count_exact": bool(count_frames),
        "resolutions": dict(sorted(res.items(), key=lambda kv: (-kv[1], kv[0]))),
        "fps": dict(sorted(fps.items(), key=lambda kv: (-kv[1], kv[0]))),
        "caption_words": _summary([len(it.caption.split()) for it, _ in readable]),
        "clip": {"frames": frames, "stride": stride, "span": span},
        "too_short": [[rel(it.video), inf.num_frames] for it, inf in readable if inf.num_frames < span],
        "unreadable": unreadable,
        "skipped": [[rel(p), reason] for p, reason in index.skipped],
    }
