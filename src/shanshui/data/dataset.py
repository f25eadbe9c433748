"""The torch dataset of training clips drawn from a folder of (video, caption) pairs.

Clip sampling (SPEC 1.3): ``frames`` frames taken ``stride`` apart, so one clip spans
``(frames - 1) * stride + 1`` source frames, from a start drawn uniformly among the starts that fit.
Only those frames are decoded (:func:`~shanshui.data.decode.read_frames`). Each is scaled so its
shorter side is ``size`` -- ``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_CUBIC`` when enlarging --
and centre-cropped to ``size x size`` (:func:`~shanshui.data.decode.resize_center_crop`).

The start depends only on ``(seed, epoch, index)``, so DataLoader workers, several GPUs and a resumed
run all draw the same clips. Finding the pairs (manifest or ``.txt`` sidecars) and the dataset
statistics live in :mod:`shanshui.data.index` and are re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ShanshuiError, check
from .decode import DecodeError, StreamEnded, VideoInfo, read_frames, resize_center_crop
from .index import (
    DatasetIndex,
    VideoItem,
    clip_span,
    dataset_stats,
    empty_dataset_message,
    probe_items,
    scan_dataset,
)

__all__ = ["DatasetIndex", "VideoItem", "VideoTextDataset", "clip_span", "collate", "dataset_stats",
           "scan_dataset"]

logger = logging.getLogger("shanshui.data")

# How many random stand-ins are tried for a bad item before walking the list in order.
_RANDOM_REPLACEMENT_TRIES = 16


class VideoTextDataset(Dataset):
    """Clips of ``frames`` frames, ``stride`` apart, ``size x size``, with their captions.

    Each sample is ``{"pixel_values": float32 (F, 3, size, size) in [-1, 1], "caption": str,
    "index": int, "start": int, "replaced": bool}``. ``index`` is the item the clip was taken from and
    ``start`` its first source frame; ``replaced`` is true when the requested item turned out to be
    unreadable and another one stands in for it.

    Construction scans ``root`` and probes every item (header + first frame), dropping those that are
    unreadable or shorter than one clip (:attr:`skipped`). A file that breaks only while a clip is
    decoded is logged once, remembered in :attr:`bad_items` and replaced by another item chosen from
    ``(seed, epoch, index)``, so a DataLoader never stops on it. The counters live in each process:
    with DataLoader workers, sum ``sample["replaced"]`` in the training loop to see them all.

    Call :meth:`set_epoch` before iterating each epoch. DataLoader workers copy the dataset when they
    start, so with ``persistent_workers=True`` they would keep the old epoch: leave that option off.
    """

    def __init__(self, root: str | os.PathLike, frames: int = 8, stride: int = 4, size: int = 256,
                 random_start: bool = True, seed: int = 0, *, index: DatasetIndex | None = None,
                 probe_workers: int = 4):
        check(isinstance(frames, int) and frames >= 1, f"frames={frames!r} must be an integer >= 1")
        check(isinstance(stride, int) and stride >= 1, f"stride={stride!r} must be an integer >= 1")
        check(isinstance(size, int) and size >= 8, f"size={size!r} must be an integer >= 8")
        check(isinstance(seed, int) and seed >= 0, f"seed={seed!r} must be an integer >= 0")
        self.root = Path(root)
        self.frames, self.stride, self.size = frames, stride, size
        self.random_start, self.seed = random_start, seed
        self.epoch = 0
        self.index = index if index is not None else scan_dataset(self.root)

        span = self.span
        self.items: list[VideoItem] = []
        self.infos: list[VideoInfo] = []
        self.skipped: list[tuple[Path, str]] = list(self.index.skipped)
        for item, info in zip(self.index.items, probe_items(self.index.items, workers=probe_workers)):
            if isinstance(info, DecodeError):
                self.skipped.append((item.video, f"unreadable: {info}"))
            elif info.num_frames < span:
                self.skipped.append((item.video, f"too short: {info.num_frames} frame(s), one clip of "
                                                 f"{frames} frames at stride {stride} needs {span}"))
            else:
                self.items.append(item)
                self.infos.append(info)
        if not self.items:
            probe_problems = self.skipped[len(self.index.skipped):]
            raise ShanshuiError(empty_dataset_message(self.index, problems=probe_problems))
        if self.skipped:
            shown = "; ".join(f"{p}: {r}" for p, r in self.skipped[:3])
            more = f" (and {len(self.skipped) - 3} more)" if len(self.skipped) > 3 else ""
            logger.warning("dataset '%s': skipped %d of %d entries -- %s%s", self.root, len(self.skipped),
                           len(self.skipped) + len(self.items), shown, more)
        # Files found broken while decoding a clip, in this process: index -> reason.
        self.bad_items: dict[int, str] = {}
        self.replaced_samples = 0

    # -- sampling ---------------------------------------------------------------------------------

    @property
    def span(self) -> int:
        return clip_span(self.frames, self.stride)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Use the clip starts of ``epoch`` (call at the start of every epoch, in every process)."""
        check(isinstance(epoch, int) and epoch >= 0, f"epoch={epoch!r} must be an integer >= 0")
        self.epoch = epoch

    def _rng(self, index: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, *extra])

    def clip_start(self, index: int, num_frames: int | None = None) -> int:
        """First source frame of item ``index``'s clip in the current epoch (0 without random starts)."""
        n = self.infos[index].num_frames if num_frames is None else num_frames
        if not self.random_start:
            return 0
        u = self._rng(index).random()
        return min(int(u * (n - self.span + 1)), n - self.span)

    def frame_indices(self, start: int) -> list[int]:
        return [start + k * self.stride for k in range(self.frames)]

    # -- loading ----------------------------------------------------------------------------------

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        return resize_center_crop(frame, self.size)

    def load_clip(self, index: int) -> tuple[np.ndarray, int]:
        """Decode item ``index``'s clip: ``(uint8 (F, size, size, 3), start)``. Raises DecodeError."""
        item = self.items[index]
        start = self.clip_start(index)
        try:
            frames = read_frames(item.video, self.frame_indices(start), transform=self._fit)
        except StreamEnded as exc:
            # The header over-counted (common for webm): take the last clip that really exists. This
            # depends only on the file, so every process still agrees on the clip.
            if exc.frames_read < self.span:
                raise DecodeError(f"'{item.video}' has only {exc.frames_read} decodable frame(s); "
                                  f"one clip needs {self.span}") from exc
            start = exc.frames_read - self.span if start + self.span > exc.frames_read else start
            frames = read_frames(item.video, self.frame_indices(start), transform=self._fit)
        return np.stack(frames), start

    def _candidates(self, index: int):
        """Items to try for sample ``index``: itself, then random stand-ins, then all others in order."""
        n = len(self.items)
        yield index
        rng = self._rng(index, 1)
        for _ in range(min(_RANDOM_REPLACEMENT_TRIES, n - 1)):
            yield int(rng.integers(n))
        for k in range(1, n):
            yield (index + k) % n

    def _mark_bad(self, index: int, reason: str) -> None:
        if index not in self.bad_items:
            self.bad_items[index] = reason
            logger.warning("skipping unreadable video '%s' (%s); another item stands in for it",
                           self.items[index].video, reason)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} item(s)")
        index %= n
        for j in self._candidates(index):
            if j in self.bad_items:
                continue
            try:
                clip, start = self.load_clip(j)
            except DecodeError as exc:
                self._mark_bad(j, str(exc))
                continue
            except Exception as exc:  # a decoder choking on a corrupt stream: still a bad file
                self._mark_bad(j, f"{type(exc).__name__}: {exc}")
                continue
            if j != index:
                self.replaced_samples += 1
            pixels = torch.from_numpy(clip).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            return {"pixel_values": pixels, "caption": self.items[j].caption, "index": j, "start": start,
                    "replaced": j != index}
        raise ShanshuiError(f"dataset folder '{self.root}': all {n} item(s) turned out unreadable, "
                            f"e.g. '{self.items[index].video}': {self.bad_items.get(index, '?')}")

    def counters(self) -> dict[str, int]:
        """How many entries were skipped when the dataset was built, and found bad since (this process)."""
        return {"items": len(self.items), "skipped": len(self.skipped), "bad_at_load": len(self.bad_items),
                "replaced_samples": self.replaced_samples}


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: ``pixel_values`` stacked to ``(B, F, 3, H, W)``, captions as a list, ints as tensors."""

    check(len(samples) > 0, "cannot collate an empty batch")
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "start": torch.tensor([s["start"] for s in samples], dtype=torch.long),
        "replaced": torch.tensor([bool(s.get("replaced", False)) for s in samples]),
    }
