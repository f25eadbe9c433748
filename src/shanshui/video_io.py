"""Reading and writing videos: mp4 (H.264), gif, webp, folders of frames, and PNG contact sheets.

Frames are always ``(F, H, W, 3)`` ``uint8`` numpy arrays. Every writer goes through
:func:`atomic_output`: the file is written under a temporary name in the destination folder and renamed
only once complete, so an interrupted run never leaves a truncated video behind (and never destroys an
earlier good file of the same name).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .errors import ShanshuiError, check

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp", ".png")
READABLE_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".webp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def as_uint8_frames(frames) -> np.ndarray:
    """Convert frames to ``(F, H, W, 3)`` uint8.

    Accepts uint8 arrays, float arrays in [0, 1], torch tensors (moved to CPU), or a list of PIL images.
    """
    if isinstance(frames, (list, tuple)) and frames and isinstance(frames[0], Image.Image):
        frames = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().float().cpu().numpy()
    arr = np.asarray(frames)
    check(arr.ndim == 4 and arr.shape[-1] == 3, f"frames must have shape (F, H, W, 3), got {arr.shape}")
    check(arr.shape[0] >= 1, "frames must contain at least one frame")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ShanshuiError(f"frames dtype {arr.dtype} is not supported (use uint8 or float in [0, 1])")


def write_error(path: Path, exc: OSError) -> ShanshuiError:
    """A one-line :class:`ShanshuiError` for an OS failure while writing ``path``."""
    path = Path(path)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return ShanshuiError(f"cannot write '{path}': '{blocker}' is a file, not a folder")
    reasons = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large (file-size limit reached)",
               errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied (read-only folder?)", errno.EPERM: "operation not permitted"}
    reason = reasons.get(exc.errno) or exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return ShanshuiError(f"cannot write '{path}': {reason}")


def check_output_location(path: str | os.PathLike, folder: bool = False) -> None:
    """Fail early, before any work is done, when ``path`` (a file, or a ``folder`` to create) cannot be made:
    its nearest existing ancestor must be a folder we may write into (probed with a temporary file that is
    removed at once). The writers still report failures that only show while writing (disk full)."""
    path = Path(path).expanduser()
    anc = path if folder else path.parent
    anc = anc if str(anc) else Path(".")
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if folder and anc == path:
        check(path.is_dir(), f"cannot write into '{path}': it is a file, not a folder")
    check(anc.is_dir(), f"cannot write '{path}': '{anc}' is a file, not a folder")
    try:  # a real probe (permission bits do not stop root; read-only mounts do)
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as exc:
        raise write_error(path, exc) from None


def normal_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the permissions of a freshly created one.

    ``tempfile.mkstemp``/``mkdtemp`` create 0600 files and 0700 folders, and safetensors writes its files as
    0600 too; published outputs should instead be readable as the user's umask says (0644/0755 under 022)."""
    umask = os.umask(0)
    os.umask(umask)
    path = Path(path)
    items = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in items:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An OS failure while creating the folder, writing or renaming (parent is a file, read-only folder, disk
    full, file-size limit) becomes a one-line :class:`ShanshuiError` naming ``path``; the temporary file is
    removed and an existing file at ``path`` is left as it was.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            normal_permissions(tmp_path)  # mkstemp creates 0600
            os.replace(tmp_path, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def contact_sheet(frames, cols: int | None = None, pad: int = 2, background: int = 255) -> np.ndarray:
    """Tile frames into one image, row-major, ``cols`` per row (default: close to square)."""
    frames = as_uint8_frames(frames)
    n, h, w, _ = frames.shape
    cols = cols or min(n, max(1, math.ceil(math.sqrt(n * h / w))))
    check(cols >= 1, f"cols={cols} must be >= 1")
    rows = math.ceil(n / cols)
    sheet = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), background, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = frame
    return sheet


def check_mp4_complete(tmp: Path, path: Path) -> None:
    """Raise unless ``tmp`` is a whole MP4 file: its top-level boxes tile the file exactly and include
    ``moov`` and ``mdat``. The ffmpeg encoder runs as a separate process whose failure (disk full, file-size
    limit) imageio does not report; a truncated file fails this test."""
    size = os.path.getsize(tmp)
    seen, pos = set(), 0
    with open(tmp, "rb") as fh:
        while pos < size:
            fh.seek(pos)
            head = fh.read(16)
            if len(head) < 8:
                break
            box, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if box == 1 and len(head) == 16:
                box = int.from_bytes(head[8:16], "big")
            elif box == 0:
                box = size - pos
            if box < 8:
                break
            seen.add(kind)
            pos += box
    if pos != size or not {b"moov", b"mdat"} <= seen:
        raise ShanshuiError(f"cannot write '{path}': the video encoder stopped early "
                            f"(disk full or file-size limit?); nothing was written")


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even sizes: replicate the last row/column when a side is odd."""
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def write_video(frames, path: str | os.PathLike, fps: float = 8.0, quality: int = 8) -> Path:
    """Write frames to ``path``; the format follows the suffix (.mp4, .gif, .webp, .png sheet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    check(suffix in VIDEO_SUFFIXES, f"output '{path}' must end in one of {', '.join(VIDEO_SUFFIXES)}")
    check(fps > 0, f"fps={fps} must be > 0")
    frames = as_uint8_frames(frames)
    with atomic_output(path) as tmp:
        if suffix == ".mp4":
            import imageio.v2 as imageio

            writer = imageio.get_writer(
                tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality,
                pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
            )
            try:
                for frame in _even(frames):
                    writer.append_data(frame)
            finally:
                writer.close()
            check_mp4_complete(tmp, path)
        elif suffix in (".gif", ".webp"):
            images = [Image.fromarray(f) for f in frames]
            duration = int(round(1000.0 / fps))
            kwargs = {"lossless": False, "quality": 90} if suffix == ".webp" else {"optimize": False}
            images[0].save(tmp, format=suffix[1:].upper(), save_all=True, append_images=images[1:],
                           duration=duration, loop=0, **kwargs)
        else:
            Image.fromarray(contact_sheet(frames)).save(tmp, format="PNG")
    return path


class VideoWriter:
    """Frames appended chunk by chunk; see :func:`open_video_writer`."""

    def __init__(self, path: Path, tmp: Path, fps: float, quality: int, total: int | None, sheet_tiles: int):
        self.path, self.tmp, self.fps, self.quality = path, tmp, fps, quality
        self.suffix = path.suffix.lower()
        self.count = 0
        self._ffmpeg = None
        self._images: list[Image.Image] = []
        self._sheet: list[np.ndarray] = []
        self._keep = None
        if self.suffix == ".png" and total is not None and total > sheet_tiles:
            self._keep = set(np.linspace(0, total - 1, sheet_tiles).round().astype(int).tolist())

    def append(self, frames) -> None:
        """Add frames (anything :func:`as_uint8_frames` accepts, or one ``(H, W, 3)`` frame)."""
        arr = np.asarray(frames) if not hasattr(frames, "detach") else frames
        if getattr(arr, "ndim", 0) == 3:
            arr = arr[None]
        frames = as_uint8_frames(arr)
        if self.suffix == ".mp4":
            if self._ffmpeg is None:
                import imageio.v2 as imageio

                self._ffmpeg = imageio.get_writer(
                    self.tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", quality=self.quality,
                    pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
                )
            for frame in _even(frames):
                self._ffmpeg.append_data(frame)
        elif self.suffix in (".gif", ".webp"):
            self._images.extend(Image.fromarray(f) for f in frames)
        else:
            for i, frame in enumerate(frames, start=self.count):
                if self._keep is None or i in self._keep:
                    self._sheet.append(frame)
        self.count += len(frames)

    def _finish(self) -> None:
        check(self.count > 0, f"no frames were written to '{self.path}'")
        if self.suffix == ".mp4":
            self._ffmpeg.close()
            self._ffmpeg = None
            check_mp4_complete(self.tmp, self.path)
        elif self.suffix in (".gif", ".webp"):
            duration = int(round(1000.0 / self.fps))
            kwargs = {"lossless": False, "quality": 90} if self.suffix == ".webp" else {"optimize": False}
            self._images[0].save(self.tmp, format=self.suffix[1:].upper(), save_all=True,
                                 append_images=self._images[1:], duration=duration, loop=0, **kwargs)
        else:
            Image.fromarray(contact_sheet(np.stack(self._sheet))).save(self.tmp, format="PNG")

    def _abort(self) -> None:
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.close()
            except Exception:
                pass
            self._ffmpeg = None


@contextlib.contextmanager
def open_video_writer(path: str | os.PathLike, fps: float = 8.0, quality: int = 8, total: int | None = None,
                      sheet_tiles: int = 32) -> Iterator[VideoWriter]:
    """Write a video chunk by chunk: ``with open_video_writer("a.mp4", fps=8) as w: w.append(frames)``.

    Atomic like :func:`write_video` (temporary file, renamed when the block ends without error). mp4 frames go
    straight to the encoder, so memory stays flat; gif/webp keep the uint8 frames until the end (Pillow
    writes animations in one call); a ``.png`` contact sheet keeps only ``sheet_tiles`` frames evenly spread
    over ``total`` (all frames when ``total`` is not given or small).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    check(suffix in VIDEO_SUFFIXES, f"output '{path}' must end in one of {', '.join(VIDEO_SUFFIXES)}")
    check(fps > 0, f"fps={fps} must be > 0")
    check(sheet_tiles >= 1, f"sheet_tiles={sheet_tiles} must be >= 1")
    with atomic_output(path) as tmp:
        writer = VideoWriter(path, tmp, fps, quality, total, sheet_tiles)
        try:
            yield writer
        except BaseException:
            writer._abort()
            raise
        writer._finish()


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Read a video file or a folder of frame images. Returns ``(frames uint8 (F,H,W,3), fps)``.

    Raises :class:`ShanshuiError` for a missing, unsupported or unreadable input.
    """
    path = Path(path)
    check(path.exists(), f"video '{path}' does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        check(bool(files), f"folder '{path}' holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
        files = files[:max_frames] if max_frames else files
        frames = [_read_rgb(p) for p in files]
        shapes = {f.shape for f in frames}
        check(len(shapes) == 1, f"frames in '{path}' have different sizes: {sorted(shapes)}")
        return np.stack(frames), 8.0
    suffix = path.suffix.lower()
    check(suffix in READABLE_VIDEO_SUFFIXES,
          f"video '{path}' has suffix '{suffix}'; readable: {', '.join(READABLE_VIDEO_SUFFIXES)} or a folder of frames")
    try:
        if suffix in (".gif", ".webp"):
            frames, fps = _read_pillow_animation(path, max_frames)
        else:
            frames, fps = _read_ffmpeg(path, max_frames)
    except ShanshuiError:
        raise
    except Exception as exc:  # corrupt container, truncated stream, codec errors ...
        raise ShanshuiError(f"cannot read video '{path}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    check(len(frames) > 0, f"video '{path}' contains no frames")
    return np.stack(frames), fps


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ShanshuiError(f"cannot read image '{path}': {type(exc).__name__}") from exc


def _read_pillow_animation(path: Path, max_frames: int | None) -> tuple[list[np.ndarray], float]:
    frames, durations = [], []
    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1)
        for i in range(n if max_frames is None else min(n, max_frames)):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
            durations.append(im.info.get("duration", 125) or 125)
    fps = 1000.0 / float(np.median(durations)) if durations else 8.0
    return frames, fps


def _read_ffmpeg(path: Path, max_frames: int | None) -> tuple[list[np.ndarray], float]:
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        fps = float(reader.get_meta_data().get("fps", 8.0) or 8.0)
        frames = []
        for frame in reader:
            frames.append(np.asarray(frame)[..., :3])
            if max_frames and len(frames) >= max_frames:
                break
    finally:
        reader.close()
    return frames, fps
