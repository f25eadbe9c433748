"""Decoding only the frames a training clip needs, and fitting them to the training size.

A training clip uses a handful of frames (8, four apart) out of a video that may hold hundreds of
1080p frames. Decoding everything and throwing most of it away costs time and, at 1080p, close to a
gigabyte of memory per 6 s video. The readers here therefore take the list of wanted frame numbers:

* video files (mp4, webm, mov, mkv, avi) go through OpenCV's FFmpeg backend. For a clip that starts
  far into the file we seek (FFmpeg jumps to the preceding key frame and decodes forward to the exact
  frame); frames in between are only ``grab``-bed (decoded, not converted to RGB); decoding stops at
  the last wanted frame.
* gif / animated webp go through Pillow, which decodes up to the wanted frame but converts only the
  frames we keep.
* a folder of frame images opens only the wanted files.

Every failure to read a file is raised as :class:`DecodeError` (a :class:`~shanshui.errors.ShanshuiError`),
so a dataset can tell "this file is bad" apart from programming errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import ShanshuiError
from ..video_io import IMAGE_SUFFIXES

# Containers decoded with OpenCV/FFmpeg, and animations decoded with Pillow.
FFMPEG_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
ANIMATION_SUFFIXES = (".gif", ".webp")
VIDEO_FILE_SUFFIXES = FFMPEG_SUFFIXES + ANIMATION_SUFFIXES

# Seek only when the clip starts at least this many frames into the file. Below that, decoding forward
# from the first frame costs about the same as a seek (which must decode from a key frame anyway) and
# avoids the seek's own overhead.
SEEK_MIN_FRAMES = 16


class DecodeError(ShanshuiError):
    """A video (or frame folder) could not be read."""


class StreamEnded(DecodeError):
    """The stream ended before the last wanted frame: ``frames_read`` frames were actually there."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


@dataclass(frozen=True)
class VideoInfo:
    """What a cheap look at a video says about it. ``fps`` is ``None`` when the source has no frame rate."""

    num_frames: int
    width: int
    height: int
    fps: float | None

    @property
    def duration(self) -> float | None:
        return self.num_frames / self.fps if self.fps else None


def _natural_key(name: str):
    """Sort ``frame_2.png`` before ``frame_10.png`` (digits compare as numbers)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (hidden files ignored)."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _clean_fps(fps: float | None) -> float | None:
    # Containers sometimes report 0, NaN or a time base (90000) instead of a frame rate.
    if fps is None or not np.isfinite(fps) or fps <= 0 or fps > 1000:
        return None
    return float(fps)


def _open_capture(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise DecodeError(f"cannot open video '{path}' (not a video, or a corrupt container)")
    return cap


def probe_video(path: str | Path, fps: float | None = None, count_frames: bool = False) -> VideoInfo:
    """Frame count, size and frame rate of a video file or frame folder; decodes the first frame.

    ``fps`` is used for frame folders (which carry no rate). With ``count_frames`` a video file is
    decoded to its end so that the count is exact and a corrupt stream is found; otherwise the count is
    the container's (exact for mp4, estimated from duration x rate for some webm/mkv files).
    """
    path = Path(path)
    if not path.exists():
        raise DecodeError(f"'{path}' does not exist")
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise DecodeError(f"frame folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        try:
            with Image.open(files[0]) as im:
                width, height = im.size
                im.load()
        except Exception as exc:
            raise DecodeError(f"cannot read frame '{files[0]}': {type(exc).__name__}") from exc
        return VideoInfo(len(files), width, height, _clean_fps(fps))
    suffix = path.suffix.lower()
    if suffix in ANIMATION_SUFFIXES:
        try:
            with Image.open(path) as im:
                width, height = im.size
                n = int(getattr(im, "n_frames", 1))
                duration = im.info.get("duration") or 0
                im.load()
                if count_frames:
                    for i in range(n):
                        im.seek(i)
                        im.load()
        except Exception as exc:
            raise DecodeError(f"cannot read animation '{path}': {type(exc).__name__}: {exc}") from exc
        rate = 1000.0 / duration if duration else fps
        return VideoInfo(n, width, height, _clean_fps(rate))
    if suffix not in FFMPEG_SUFFIXES:
        raise DecodeError(f"'{path}' has suffix '{suffix}'; readable: {', '.join(VIDEO_FILE_SUFFIXES)} "
                          "or a folder of frames")
    import cv2

    cap = _open_capture(path)
    try:
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        rate = _clean_fps(cap.get(cv2.CAP_PROP_FPS))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, frame = cap.read()
        if not ok or frame is None:
            raise DecodeError(f"video '{path}' has no decodable frame")
        height, width = frame.shape[:2]
        if count_frames or n <= 0:
            counted = 1
            while cap.grab():
                counted += 1
            n = counted
    finally:
        cap.release()
    return VideoInfo(n, width, height, rate)


def read_frames(path: str | Path, indices: Sequence[int],
                transform: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """Decode the frames numbered ``indices`` (increasing, 0-based) as RGB uint8 ``(H, W, 3)`` arrays.

    ``transform`` is applied to each kept frame as soon as it is decoded (resize/crop there keeps the
    memory of a clip small). Raises :class:`StreamEnded` when the source has fewer frames than
    ``indices[-1] + 1``, and :class:`DecodeError` for any other read failure.
    """
    path = Path(path)
    wanted = [int(i) for i in indices]
    if not wanted or wanted[0] < 0 or any(b <= a for a, b in zip(wanted, wanted[1:])):
        raise ValueError(f"indices must be non-negative and strictly increasing, got {wanted}")
    keep = transform or (lambda f: f)
    if path.is_dir():
        return _read_folder(path, wanted, keep)
    suffix = path.suffix.lower()
    if suffix in ANIMATION_SUFFIXES:
        return _read_animation(path, wanted, keep)
    if suffix in FFMPEG_SUFFIXES:
        return _read_ffmpeg(path, wanted, keep)
    raise DecodeError(f"'{path}' has suffix '{suffix}'; readable: {', '.join(VIDEO_FILE_SUFFIXES)} "
                      "or a folder of frames")


def _read_folder(folder: Path, wanted: list[int], keep) -> list[np.ndarray]:
    files = frame_files(folder)
    if wanted[-1] >= len(files):
        raise StreamEnded(f"frame folder '{folder}' has {len(files)} frames, frame {wanted[-1]} was asked",
                          len(files))
    out, shape = [], None
    for i in wanted:
        try:
            with Image.open(files[i]) as im:
                frame = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise DecodeError(f"cannot read frame '{files[i]}': {type(exc).__name__}") from exc
        if shape is not None and frame.shape != shape:
            raise DecodeError(f"frames in '{folder}' differ in size: {shape[:2]} and {frame.shape[:2]} "
                              f"('{files[i].name}')")
        shape = frame.shape
        out.append(keep(frame))
    return out


def _read_animation(path: Path, wanted: list[int], keep) -> list[np.ndarray]:
    out = []
    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1))
            if wanted[-1] >= n:
                raise StreamEnded(f"'{path}' has {n} frames, frame {wanted[-1]} was asked", n)
            for i in wanted:
                im.seek(i)
                out.append(keep(np.asarray(im.convert("RGB"))))
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot read animation '{path}': {type(exc).__name__}: {exc}") from exc
    return out


def _read_ffmpeg(path: Path, wanted: list[int], keep) -> list[np.ndarray]:
    import cv2

    cap = _open_capture(path)
    try:
        pos = 0
        if wanted[0] >= SEEK_MIN_FRAMES:
            landed = cap.set(cv2.CAP_PROP_POS_FRAMES, wanted[0])
            if landed and int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) == wanted[0]:
                pos = wanted[0]
            else:  # the backend could not land on the frame: decode forward from the start instead
                cap.release()
                cap = _open_capture(path)
        targets = set(wanted)
        out = []
        while pos <= wanted[-1]:
            if not cap.grab():
                raise StreamEnded(f"video '{path}' ended (or broke off) after {pos} frames; "
                                  f"frame {wanted[-1]} was asked", pos)
            if pos in targets:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise DecodeError(f"video '{path}': frame {pos} could not be decoded")
                out.append(keep(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            pos += 1
        return out
    finally:
        cap.release()


def resize_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Scale ``frame`` so that its shorter side is ``size``, then cut the central ``size x size`` square.

    Downscaling uses ``cv2.INTER_AREA`` (averages the source pixels each output pixel covers, so fine
    texture such as brush strokes does not alias); upscaling uses ``cv2.INTER_CUBIC``. The longer side
    becomes ``round(long * size / short)``; the crop starts at ``(new_long - size) // 2``.
    """
    import cv2

    h, w = frame.shape[:2]
    short = min(h, w)
    if short != size:
        scale = size / short
        new_h = size if h == short else max(size, int(round(h * scale)))
        new_w = size if w == short else max(size, int(round(w * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interp)
        h, w = new_h, new_w
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frame[top : top + size, left : left + size])
