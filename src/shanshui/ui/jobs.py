"""What the web page does, without gradio: checks, model cache, result files, cancellation, command lines.

* :class:`TextSettings`, :class:`PaintingSettings`, :class:`InterpolateSettings` hold one form's values.
  ``check()`` validates everything that needs no weights (so a bad value is reported before a model is
  loaded); ``command()`` is the equivalent ``shanshui ...`` command line.
* :class:`ModelCache` loads a base model + motion module once and hands every job its own light pipeline
  object around the shared weights (each with its own scheduler, which holds per-run state).
* :class:`Workspace` writes every result under a new name (``YYYYmmdd-HHMMSS-<kind>-<random>``) as mp4, gif
  and a PNG contact sheet, so concurrent jobs never overwrite each other.
* :class:`JobControl` is cooperative cancellation: a forward pre-hook on the UNet raises
  :class:`JobCancelled` at the next UNet evaluation once ``cancel()`` was called, which ends the job and
  frees its worker within one denoising step.
"""

from __future__ import annotations

import copy
import shlex
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ShanshuiError, check

MAX_SIDE = 1024        # pixels per side the page accepts (larger takes hours on a CPU)
MAX_FRAMES = 512       # frames of a text-to-video job (long videos included)
MAX_STEPS = 200
MAX_GUIDANCE = 50.0
TIMES = (1, 2, 4, 8)
FLOWS = ("dis", "farneback", "tvl1")
BASE_FPS = 8.0


class JobCancelled(Exception):
    """Raised inside a job's thread when its :class:`JobControl` was cancelled."""


_local = threading.local()


class JobControl:
    """Cancellation flag of one job, checked at every UNet evaluation of the thread running it."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self.unet_calls = 0

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled("cancelled")

    def __enter__(self) -> "JobControl":
        self.raise_if_cancelled()
        _local.control = self
        return self

    def __exit__(self, *exc) -> None:
        _local.control = None


def _unet_pre_hook(module, args) -> None:
    control = getattr(_local, "control", None)
    if control is not None:
        control.unet_calls += 1
        control.raise_if_cancelled()


# ------------------------------------------------------------------------------------------ value checks
def as_int(value, name: str, lo: int, hi: int) -> int:
    """A whole number in ``[lo, hi]`` (gradio numbers arrive as floats or strings)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ShanshuiError(f"{name}={value!r} must be a whole number") from None
    check(np.isfinite(f) and f == int(f), f"{name}={value!r} must be a whole number")
    check(lo <= int(f) <= hi, f"{name}={int(f)} must be in [{lo}, {hi}]")
    return int(f)


def as_float(value, name: str, lo: float, hi: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ShanshuiError(f"{name}={value!r} must be a number") from None
    check(np.isfinite(f) and lo <= f <= hi, f"{name}={value!r} must be a number in [{lo:g}, {hi:g}]")
    return f


def _path_or_none(value) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def parse_size_text(text, what: str = "size") -> tuple[int, int] | None:
    """``""`` -> None (the model's native size); ``"256"`` / ``"512x320"`` -> (w, h), checked against
    :data:`MAX_SIDE`."""
    from ..commands.generate import parse_size

    text = str(text or "").strip()
    if not text:
        return None
    w, h = parse_size(text)
    check(w <= MAX_SIDE and h <= MAX_SIDE,
          f"{what} {w}x{h} is too large for this page (at most {MAX_SIDE} per side)")
    return w, h


def _model_args(model: str | None, motion: str | None) -> list[str]:
    out = []
    if model:
        out += ["--model", model]
    if motion:
        out += ["--motion-module", motion]
    return out


def _join(args: list) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def _num(x: float) -> str:
    return f"{x:g}"


# ------------------------------------------------------------------------------------------ settings
@dataclass
class TextSettings:
    prompt: str
    negative: str = ""
    frames: int = 16
    size: str = ""
    steps: int = 25
    guidance: float = 8.0
    seed: int = 0
    times: int = 2
    gamma: float = 0.8
    omega: float = 0.2
    overlap: int = 4
    model: str | None = None
    motion_module: str | None = None

    def check(self) -> "TextSettings":
        """Validate and normalise in place (returns self)."""
        from ..commands.generate import check_cheap

        check(isinstance(self.prompt, str) and self.prompt.strip() != "", "prompt must not be empty")
        self.prompt = self.prompt.strip()
        self.negative = (self.negative or "").strip()
        self.frames = as_int(self.frames, "frames", 2, MAX_FRAMES)
        self.steps = as_int(self.steps, "steps", 1, MAX_STEPS)
        self.guidance = as_float(self.guidance, "guidance", 0.0, MAX_GUIDANCE)
        self.seed = as_int(self.seed, "seed", 0, 2**32 - 1)
        self.times = as_int(self.times, "interpolation", 1, 8)
        check(self.times in TIMES, f"interpolation={self.times} must be one of 1, 2, 4, 8")
        self.gamma = as_float(self.gamma, "gamma", 0.0, 1.0)
        self.omega = as_float(self.omega, "omega", 0.0, 10.0)
        self.overlap = as_int(self.overlap, "overlap", 0, MAX_FRAMES)
        check_cheap(self.frames, self.steps, self.guidance, self.gamma, self.omega, self.overlap)
        parse_size_text(self.size)
        self.size = str(self.size or "").strip()
        self.model, self.motion_module = _path_or_none(self.model), _path_or_none(self.motion_module)
        return self

    def command(self, out: str = "out.mp4") -> str:
        args = ["shanshui", "generate", self.prompt or "PROMPT"]
        if self.negative:
            args += ["--negative", self.negative]
        args += _model_args(self.model, self.motion_module)
        args += ["--frames", self.frames]
        if self.size:
            args += ["--size", self.size]
        args += ["--steps", self.steps, "--guidance", _num(self.guidance), "--seed", self.seed]
        args += ["--no-interpolate"] if self.times == 1 else ["--interp-times", self.times]
        for name, value, default in (("--gamma", self.gamma, 0.8), ("--omega", self.omega, 0.2),
                                     ("--overlap", self.overlap, 4)):
            if value != default:
                args += [name, _num(value)]
        return _join(args + ["-o", out])


@dataclass
class PaintingSettings:
    painting: str | None
    prompt: str
    arrows: str = ""                 # JSON: [[x0, y0, x1, y1, strength], ...] in the painting's pixels
    mask: str | None = None          # image file, white = still
    strength: float = 0.0            # speed in px/frame at the output size, as `animate --strength`; 0 = as drawn
    use_proxy: bool = True
    use_vsds: bool = True
    proxy_strength: float = 0.5
    motion_guidance: float = 0.5
    negative: str = ""
    frames: int = 16
    size: int = 0                    # longer side; 0 = the model's native size
    steps: int = 25
    guidance: float = 8.0
    seed: int = 0
    model: str | None = None
    motion_module: str | None = None
    parsed_arrows: list = field(default_factory=list, repr=False)
    painting_size: tuple[int, int] | None = field(default=None, repr=False)

    def check(self) -> "PaintingSettings":
        from ..control.arrows import check_arrows_inside, parse_arrows_json
        from ..image_intake import read_image

        check(self.painting is not None and str(self.painting).strip() != "", "upload a painting first")
        check(isinstance(self.prompt, str) and self.prompt.strip() != "", "prompt must not be empty")
        self.prompt = self.prompt.strip()
        self.negative = (self.negative or "").strip()
        self.strength = as_float(self.strength or 0.0, "strength", 0.0, 10.0)
        self.proxy_strength = as_float(self.proxy_strength, "proxy strength", 0.01, 1.0)
        self.motion_guidance = as_float(self.motion_guidance, "motion guidance", 0.0, 1.0)
        self.frames = as_int(self.frames, "frames", 2, MAX_FRAMES)
        self.size = as_int(self.size or 0, "size", 0, MAX_SIDE)
        check(self.size % 8 == 0, f"size={self.size} must be a multiple of 8 (or 0 for the model's size)")
        self.steps = as_int(self.steps, "steps", 2, MAX_STEPS)
        self.guidance = as_float(self.guidance, "guidance", 0.0, MAX_GUIDANCE)
        self.seed = as_int(self.seed, "seed", 0, 2**32 - 1)
        self.use_proxy, self.use_vsds = bool(self.use_proxy), bool(self.use_vsds)
        self.model, self.motion_module = _path_or_none(self.model), _path_or_none(self.motion_module)
        rgb, _ = read_image(self.painting)                      # unreadable image -> ShanshuiError
        h, w = rgb.shape[:2]
        self.painting_size = (w, h)
        self.parsed_arrows = parse_arrows_json(self.arrows, "arrows")
        check_arrows_inside(self.parsed_arrows, w, h, "arrow")
        return self

    def command(self, out: str = "out.mp4", painting_name: str | None = None,
                mask_name: str | None = None) -> str:
        name = painting_name or (Path(self.painting).name if self.painting else "painting.png")
        args = ["shanshui", "animate", name, self.prompt or "PROMPT"]
        for a in self.parsed_arrows:
            args += ["--arrow", ",".join(_num(round(v, 1)) for v in (a.x0, a.y0, a.x1, a.y1, a.strength))]
        if self.mask:
            args += ["--mask", mask_name or Path(self.mask).name]
        if self.strength > 0:
            args += ["--strength", _num(self.strength)]
        if not self.use_proxy:
            args += ["--no-proxy"]
        elif self.proxy_strength != 0.5:
            args += ["--proxy-strength", _num(self.proxy_strength)]
        if not self.use_vsds:
            args += ["--no-vsds"]
        if self.motion_guidance != 0.5:
            args += ["--motion-guidance", _num(self.motion_guidance)]
        if self.negative:
            args += ["--negative", self.negative]
        args += _model_args(self.model, self.motion_module)
        if self.size:
            args += ["--size", self.size]
        args += ["--frames", self.frames, "--steps", self.steps, "--guidance", _num(self.guidance),
                 "--seed", self.seed]
        return _join(args + ["-o", out])


@dataclass
class InterpolateSettings:
    video: str | None
    times: int = 2
    flow: str = "dis"

    def check(self) -> "InterpolateSettings":
        check(self.video is not None and str(self.video).strip() != "", "upload a video first")
        self.times = as_int(self.times, "times", 2, 8)
        check(self.times in TIMES, f"times={self.times} must be 2, 4 or 8")
        check(self.flow in FLOWS, f"flow='{self.flow}' must be one of {', '.join(FLOWS)}")
        return self

    def command(self, out: str = "out.mp4") -> str:
        name = Path(self.video).name if self.video else "video.mp4"
        return _join(["shanshui", "interpolate", name, "--times", self.times, "--flow", self.flow, "-o", out])


# ------------------------------------------------------------------------------------------ results
@dataclass
class Result:
    """Files of one finished job (all new), the command line that reproduces it, and what it took."""

    mp4: Path
    gif: Path
    sheet: Path
    frames: int
    seconds: float
    command: str
    extra: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [self.mp4, self.gif, self.sheet, *self.extra]


class Workspace:
    """The output folder; every job gets a stem no other job has."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir).expanduser().resolve()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ShanshuiError(f"output folder '{self.out_dir}' cannot be created: {exc.strerror}") from None
        self._lock = threading.Lock()

    def new_stem(self, kind: str) -> Path:
        with self._lock:
            while True:
                stem = self.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:8]}"
                if not any(stem.with_suffix(s).exists() for s in (".mp4", ".gif", ".png")):
                    return stem

    @staticmethod
    def write(stem: Path, frames, fps: float) -> tuple[Path, Path, Path]:
        from ..video_io import write_video

        paths = (stem.with_suffix(".mp4"), stem.with_suffix(".gif"), stem.with_name(stem.name + "-sheet.png"))
        for p in paths:
            write_video(frames, p, fps=fps)
        return paths


# ------------------------------------------------------------------------------------------ models
class ModelCache:
    """Base model + motion module loaded once per (model, motion module) pair and reused by every job.

    ``keep`` pairs stay in memory (least recently used dropped first). Jobs get shallow pipeline objects
    that share the weights but own a copy of the scheduler, so concurrent jobs do not disturb each other's
    timesteps."""

    def __init__(self, device: str = "cpu", keep: int = 1, default_model: str | None = None,
                 default_motion: str | None = None) -> None:
        self.device = device
        self.keep = max(1, int(keep))
        self.default_model, self.default_motion = _path_or_none(default_model), _path_or_none(default_motion)
        self.loads = 0
        self._lock = threading.Lock()
        self._pipes: OrderedDict = OrderedDict()

    def key(self, model: str | None, motion: str | None) -> tuple:
        model = _path_or_none(model) or self.default_model
        motion = _path_or_none(motion) or self.default_motion
        norm = lambda p: str(Path(p).expanduser().resolve()) if p else None  # noqa: E731
        return norm(model), norm(motion)

    def base(self, model: str | None = None, motion: str | None = None):
        from ..pipelines.text_to_video import load_pipeline

        key = self.key(model, motion)
        with self._lock:  # one load at a time; a second job for the same model waits and reuses it
            if key in self._pipes:
                self._pipes.move_to_end(key)
                return self._pipes[key]
            for what, path in (("model", key[0]), ("motion module", key[1])):
                check(path is None or Path(path).exists(), f"{what} '{path}' does not exist")
            check(key[0] is not None or key[1] is None,
                  "a motion module path needs a model path too (or leave both empty for the bundled model)")
            check(key[0] is None or key[1] is not None,
                  "a base model path needs a motion module path too (or leave both empty for the "
                  "bundled model)")
            pipe = load_pipeline(key[0], key[1], device=self.device)
            pipe.unet.register_forward_pre_hook(_unet_pre_hook)
            self.loads += 1
            self._pipes[key] = pipe
            while len(self._pipes) > self.keep:
                self._pipes.popitem(last=False)
            return pipe

    def _fresh(self, cls, model, motion):
        base = self.base(model, motion)
        parts = dict(base.components)
        parts["scheduler"] = copy.deepcopy(base.scheduler)
        return cls(**parts)

    def text(self, model: str | None = None, motion: str | None = None):
        from ..pipelines.text_to_video import TextToVideoPipeline

        return self._fresh(TextToVideoPipeline, model, motion)

    def painting(self, model: str | None = None, motion: str | None = None):
        from ..pipelines.painting_to_video import PaintingToVideoPipeline

        return self._fresh(PaintingToVideoPipeline, model, motion)


# ------------------------------------------------------------------------------------------ jobs
def run_text(models: ModelCache, ws: Workspace, s: TextSettings, control: JobControl | None = None) -> Result:
    """Text -> video; writes ``<stem>.mp4``, ``.gif``, ``-sheet.png``."""
    start = time.perf_counter()
    s.check()
    size = parse_size_text(s.size)
    control = control or JobControl()
    control.raise_if_cancelled()
    pipe = models.text(s.model, s.motion_module)
    width, height = size if size else (None, None)
    with control:
        out = pipe(s.prompt, negative_prompt=s.negative or None, num_frames=s.frames, height=height,
                   width=width, num_inference_steps=s.steps, guidance_scale=s.guidance, seed=s.seed,
                   interpolate_times=s.times,
                   gamma=s.gamma, omega=s.omega, overlap=s.overlap)
    frames = out.frames[0]
    stem = ws.new_stem("text")
    mp4, gif, sheet = ws.write(stem, frames, fps=BASE_FPS * s.times)
    return Result(mp4, gif, sheet, len(frames), time.perf_counter() - start, s.command(mp4.name))


def save_mask(mask: np.ndarray, path: Path) -> Path:
    """A bool ``(H, W)`` still mask as the PNG ``shanshui animate --mask`` reads (white = still)."""
    from PIL import Image

    from ..video_io import atomic_output

    with atomic_output(path) as tmp:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    return path


def run_painting(models: ModelCache, ws: Workspace, s: PaintingSettings, control: JobControl | None = None,
                 mask: np.ndarray | None = None) -> Result:
    """Painting -> video. ``mask`` (bool, any size, e.g. the brush editor's; resized to the painting) replaces
    ``s.mask``; after a successful run it is saved next to the result as ``<stem>-mask.png`` (the file the
    command line's ``--mask`` names). Nothing is written when a check fails or the job is cancelled."""
    start = time.perf_counter()
    s.check()
    still = None
    if mask is not None and np.any(mask):
        from PIL import Image

        w, h = s.painting_size
        small = Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255)
        still = np.asarray(small.resize((w, h), Image.NEAREST)) > 127
    control = control or JobControl()
    control.raise_if_cancelled()
    pipe = models.painting(s.model, s.motion_module)
    check(s.frames <= pipe.max_frames,
          f"frames={s.frames} must be at most {pipe.max_frames} (this motion module's window) for a painting")
    with control:
        out = pipe(s.painting, s.prompt, negative_prompt=s.negative or None, num_frames=s.frames,
                   num_inference_steps=s.steps, guidance_scale=s.guidance, arrows=s.parsed_arrows,
                   still_mask=still if still is not None else s.mask, speed=s.strength or None,
                   control="trained" if getattr(pipe, "i2v", None) is not None else "training-free",
                   motion_guidance=s.motion_guidance, proxy_strength=s.proxy_strength, use_proxy=s.use_proxy,
                   use_vsds=s.use_vsds, long_side=s.size or None, seed=s.seed)
    frames = out.frames[0]
    stem = ws.new_stem("painting")
    extra = [save_mask(still, stem.with_name(stem.name + "-mask.png"))] if still is not None else []
    if extra:
        s.mask = str(extra[0])
    mp4, gif, sheet = ws.write(stem, frames, fps=BASE_FPS)
    return Result(mp4, gif, sheet, len(frames), time.perf_counter() - start, s.command(mp4.name), extra)


def run_interpolate(ws: Workspace, s: InterpolateSettings, control: JobControl | None = None) -> Result:
    """SOFP interpolation of an uploaded video (output fps = input fps × times, same duration)."""
    from ..flow import interpolate
    from ..video_io import read_video

    start = time.perf_counter()
    s.check()
    control = control or JobControl()
    control.raise_if_cancelled()
    frames, fps = read_video(s.video)
    check(len(frames) >= 2, f"the video has {len(frames)} frame; interpolation needs at least 2")
    h, w = frames.shape[1:3]
    check(w <= 4 * MAX_SIDE and h <= 4 * MAX_SIDE, f"video {w}x{h} is too large for this page")
    out = interpolate(frames, times=s.times, flow=s.flow)
    control.raise_if_cancelled()
    stem = ws.new_stem("interp")
    mp4, gif, sheet = ws.write(stem, out, fps=fps * s.times)
    return Result(mp4, gif, sheet, len(out), time.perf_counter() - start, s.command(mp4.name))
