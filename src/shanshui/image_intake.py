"""Bringing a painting in: reading any common image file, converting it to 8-bit RGB, and fitting it to a
size the diffusion model accepts (both sides multiples of 8 px) with a documented geometry.

Conversions (each one is reported in :attr:`Painting.notes`):

* EXIF orientation is applied; an animated file (GIF/WebP/TIFF pages) contributes its first frame.
* Transparency (RGBA, LA, palette with transparency) is composited over ``background`` (paper white).
* Grayscale, 1-bit, palette, CMYK, YCbCr, LAB and HSV images are converted to RGB.
* 16-bit images (``I;16`` and ``I`` modes, e.g. 16-bit PNG/TIFF) are scaled to 8 bit (``v·255/65535``).
* 32-bit float images (``F``) are accepted if their values lie in [0, 1], otherwise refused.
* Images over ``max_pixels`` (default 64 MP) are refused before their pixels are decoded.

Geometry policies (``policy=``):

* ``fit`` (default) — the canvas is the painting scaled so its longer side is ``long_side``, with each
  side rounded to the nearest multiple of 8; the painting is scaled to cover that canvas and centre-cropped
  (less than 8 px are trimmed). The output video has the painting's aspect ratio (to within 4 px).
* ``crop`` — an exact ``size=(W, H)``: scale to cover it, centre-crop the excess.
* ``pad`` — an exact ``size=(W, H)``: scale to fit inside it, pad the rest with the median colour of the
  painting's border; :attr:`Painting.content` tells where the painting lies, and the pipeline crops the
  output back to it (so the video again has the painting's aspect ratio).

Arrows and masks drawn on the original file are mapped through the same geometry
(:meth:`Painting.map_xy`, :func:`apply_geometry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import ShanshuiError, check

POLICIES = ("fit", "crop", "pad")
MULTIPLE = 8
MIN_SIDE = 32
MAX_PIXELS = 64_000_000
PAPER_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Geometry:
    """``working = original · scale + offset`` (per axis), then the canvas is ``size`` (W, H)."""

    original: tuple[int, int]       # (w, h) of the source
    resized: tuple[int, int]        # (w, h) after scaling, before crop/pad
    offset: tuple[int, int]         # (x, y) where the resized image's top-left lands on the canvas
    size: tuple[int, int]           # (W, H) canvas

    @property
    def scale(self) -> tuple[float, float]:
        return self.resized[0] / self.original[0], self.resized[1] / self.original[1]

    @property
    def content(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the painting on the canvas (clipped to it)."""
        x0, y0 = max(self.offset[0], 0), max(self.offset[1], 0)
        x1 = min(self.offset[0] + self.resized[0], self.size[0])
        y1 = min(self.offset[1] + self.resized[1], self.size[1])
        return x0, y0, x1, y1


@dataclass
class Painting:
    """A painting ready for the pipeline: ``image`` uint8 ``(H, W, 3)`` with H, W multiples of 8."""

    image: np.ndarray
    geometry: Geometry
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.geometry.size

    @property
    def content(self) -> tuple[int, int, int, int]:
        return self.geometry.content

    def map_xy(self, x: float, y: float) -> tuple[float, float]:
        """A point of the original image -> the working canvas (pixel centres map to pixel centres)."""
        sx, sy = self.geometry.scale
        ox, oy = self.geometry.offset
        return (x + 0.5) * sx - 0.5 + ox, (y + 0.5) * sy - 0.5 + oy


# ---------------------------------------------------------------------------------------------- reading
def _to_uint8_rgb(im, background, notes: list[str]) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        if mode != "I" or arr.max(initial=0) > 255:
            check(arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535,
                  f"integer image values span [{arr.min():g}, {arr.max():g}]; "
                  f"only 8- or 16-bit ranges are supported")
            arr = arr * (255.0 / 65535.0)
            notes.append(f"16-bit {mode} image scaled to 8 bit")
        gray = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        notes.append("grayscale converted to RGB")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        check(np.isfinite(arr).all() and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 1,
              f"32-bit float image values span [{np.nanmin(arr):g}, {np.nanmax(arr):g}]; "
              f"only [0, 1] is supported "
              f"(save the painting as an 8- or 16-bit PNG/JPEG/TIFF)")
        notes.append("32-bit float image scaled to 8 bit; grayscale converted to RGB")
        gray = (arr * 255 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        if mode == "La":  # premultiplied grey + alpha: Pillow converts it to LA only
            im = im.convert("LA")
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32) / 255.0
        a = rgba[..., 3:4]
        if float(a.min()) < 1.0:
            notes.append(f"transparency composited over background {tuple(background)}")
        bg = np.asarray(background, np.float32)[None, None, :] / 255.0
        out = rgba[..., :3] * a + bg * (1.0 - a)
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    if mode != "RGB":
        notes.append(f"{mode} image converted to RGB")
        im = im.convert("RGB")
    del Image
    return np.asarray(im, dtype=np.uint8).copy()


def read_image(path: str | Path, background=PAPER_WHITE, max_pixels: int = MAX_PIXELS
               ) -> tuple[np.ndarray, list[str]]:
    """Read ``path`` as uint8 RGB ``(H, W, 3)`` plus the list of conversions that were applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path).expanduser()
    check(path.exists(), f"painting '{path}' does not exist")
    check(path.is_file(), f"painting '{path}' is not a file")
    notes: list[str] = []
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, before decoding
    try:
        with Image.open(path) as im:
            w, h = im.size
            check(w * h <= max_pixels,
                  f"painting '{path.name}' is {w}x{h} = {w * h / 1e6:.1f} MP; "
                  f"the limit is {max_pixels / 1e6:g} MP "
                  f"(downscale it first)")
            check(w >= 1 and h >= 1, f"painting '{path.name}' is empty ({w}x{h})")
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"{im.n_frames}-frame file: using its first frame")
                im.seek(0)
            im.load()
            if im.getexif().get(0x0112, 1) not in (0, 1):
                notes.append("EXIF orientation applied")
            transposed = ImageOps.exif_transpose(im)
            return _to_uint8_rgb(transposed, background, notes), notes
    except ShanshuiError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ShanshuiError(f"painting '{path}' is not a readable image ({type(exc).__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShanshuiError(f"painting '{path}' cannot be decoded: {first}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def array_to_rgb(arr: np.ndarray, background=PAPER_WHITE) -> tuple[np.ndarray, list[str]]:
    """An in-memory image (``(H, W)``, ``(H, W, 1|3|4)``; uint8, uint16 or float in [0, 1]) -> uint8 RGB."""
    arr = np.asarray(arr)
    notes: list[str] = []
    check(arr.ndim in (2, 3), f"image array must be (H, W) or (H, W, C), got shape {arr.shape}")
    if arr.ndim == 2:
        arr = arr[..., None]
    check(arr.shape[2] in (1, 3, 4), f"image array must have 1, 3 or 4 channels, got {arr.shape[2]}")
    check(arr.shape[0] >= 1 and arr.shape[1] >= 1, f"image array is empty (shape {arr.shape})")
    # float64 throughout, as read_image's 32-bit float path: one picture rounds to the same 8-bit values
    # whether it arrives as a file or as an array
    if arr.dtype == np.uint8:
        x = arr.astype(np.float64) / 255.0
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float64) / 65535.0
        notes.append("16-bit image scaled to 8 bit")
    elif np.issubdtype(arr.dtype, np.floating):
        check(np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1,
              f"float image values span [{np.nanmin(arr):g}, {np.nanmax(arr):g}]; expected [0, 1]")
        x = arr.astype(np.float64)
    else:
        raise ShanshuiError(f"image dtype {arr.dtype} is not supported (uint8, uint16 or float in [0, 1])")
    if x.shape[2] == 4:
        a = x[..., 3:4]
        x = x[..., :3] * a + np.asarray(background, np.float64) / 255.0 * (1 - a)
        notes.append(f"transparency composited over background {tuple(background)}")
    elif x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
        notes.append("grayscale converted to RGB")
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8), notes


# --------------------------------------------------------------------------------------------- geometry
def _check_size(size, what: str = "size") -> tuple[int, int]:
    check(isinstance(size, (tuple, list)) and len(size) == 2, f"{what}={size!r} must be (width, height)")
    w, h = (int(v) for v in size)
    for name, v in (("width", w), ("height", h)):
        check(v >= MIN_SIDE and v % MULTIPLE == 0,
              f"{what} {name}={v} must be a multiple of {MULTIPLE} and >= {MIN_SIDE}")
    return w, h


def plan_geometry(width: int, height: int, policy: str = "fit", long_side: int = 512,
                  size: tuple[int, int] | None = None) -> Geometry:
    """Where an image of ``width x height`` goes on the working canvas under ``policy``."""
    check(policy in POLICIES, f"policy='{policy}' must be one of {', '.join(POLICIES)}")
    check(width >= 1 and height >= 1, f"an image of {width}x{height} px is empty: nothing to place")
    if policy == "fit":
        check(size is None, "policy 'fit' takes long_side, not an exact size (use 'crop' or 'pad' for W x H)")
        check(isinstance(long_side, int) and long_side >= MIN_SIDE and long_side % MULTIPLE == 0,
              f"long side={long_side} must be a multiple of {MULTIPLE} and >= {MIN_SIDE}")
        s = long_side / max(width, height)
        cw = max(MULTIPLE, round(width * s / MULTIPLE) * MULTIPLE)
        ch = max(MULTIPLE, round(height * s / MULTIPLE) * MULTIPLE)
        check(min(cw, ch) >= MIN_SIDE,
              f"a {width}x{height} painting is too elongated: at long side {long_side} "
              f"its short side would be "
              f"{min(width, height) * s:.0f} px (< {MIN_SIDE}); use a larger size or policy 'crop'/'pad'")
        s = max(cw / width, ch / height)  # cover the nearest multiple-of-8 canvas, trim < 8 px
        rw, rh = max(cw, math.ceil(width * s - 1e-9)), max(ch, math.ceil(height * s - 1e-9))
        return Geometry((width, height), (rw, rh), (-((rw - cw) // 2), -((rh - ch) // 2)), (cw, ch))
    tw, th = _check_size(size if size is not None else (long_side, long_side))
    if policy == "crop":
        s = max(tw / width, th / height)
        rw, rh = max(tw, math.ceil(width * s - 1e-9)), max(th, math.ceil(height * s - 1e-9))
    else:  # pad
        s = min(tw / width, th / height)
        rw, rh = min(tw, max(1, round(width * s))), min(th, max(1, round(height * s)))
    return Geometry((width, height), (rw, rh), ((tw - rw) // 2, (th - rh) // 2), (tw, th))


def apply_geometry(image: np.ndarray, geom: Geometry, nearest: bool = False, fill=None) -> np.ndarray:
    """Resize/crop/pad ``image`` (``(h, w)`` or ``(h, w, C)``, of the original size) onto the canvas.

    Downscaling uses area averaging (no aliasing on fine brushwork), upscaling bicubic; ``nearest`` is for
    masks. ``fill`` is the pad value (default: median colour of the image's outer border).
    """
    check(image.shape[1] == geom.original[0] and image.shape[0] == geom.original[1],
          f"image is {image.shape[1]}x{image.shape[0]}, "
          f"the geometry expects {geom.original[0]}x{geom.original[1]}")
    rw, rh = geom.resized
    if (rw, rh) == geom.original:
        resized = image.copy()
    else:
        down = rw * rh < geom.original[0] * geom.original[1]
        interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if down else cv2.INTER_CUBIC)
        src = image.astype(np.uint8) if image.dtype == bool else image
        resized = cv2.resize(src, (rw, rh), interpolation=interp)
        if image.dtype == bool:
            resized = resized.astype(bool)
        if resized.ndim < image.ndim:
            resized = resized[..., None]
    tw, th = geom.size
    if fill is None:
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        border = border.reshape(-1, *image.shape[2:])
        fill = np.median(border, axis=0).astype(image.dtype)
    canvas = np.empty((th, tw, *image.shape[2:]), image.dtype)
    canvas[...] = fill
    ox, oy = geom.offset
    x0, y0, x1, y1 = geom.content
    canvas[y0:y1, x0:x1] = resized[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return canvas


def prepare_painting(source, policy: str = "fit", long_side: int = 512, size: tuple[int, int] | None = None,
                     background=PAPER_WHITE, max_pixels: int = MAX_PIXELS) -> Painting:
    """A path, PIL image or array -> :class:`Painting` on a canvas the model accepts."""
    if isinstance(source, Painting):
        return source
    if isinstance(source, (str, Path)):
        rgb, notes = read_image(source, background, max_pixels)
    elif hasattr(source, "mode") and hasattr(source, "size"):  # PIL image
        from PIL import ImageOps

        w, h = source.size
        check(w >= 1 and h >= 1, f"painting is empty ({w}x{h})")
        check(w * h <= max_pixels,
              f"painting is {w}x{h} = {w * h / 1e6:.1f} MP; the limit is {max_pixels / 1e6:g} MP")
        notes: list[str] = []
        rgb = _to_uint8_rgb(ImageOps.exif_transpose(source), background, notes)
    else:
        arr = np.asarray(source)
        check(arr.ndim in (2, 3), f"image array must be (H, W) or (H, W, C), got shape {arr.shape}")
        check(arr.shape[0] * arr.shape[1] <= max_pixels,
              f"painting of shape {arr.shape} exceeds the {max_pixels / 1e6:g} MP limit")
        rgb, notes = array_to_rgb(arr, background)
    h, w = rgb.shape[:2]
    geom = plan_geometry(w, h, policy, long_side, size)
    return Painting(apply_geometry(rgb, geom), geom, notes)


def fit_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Cover-and-centre-crop ``image`` (uint8 RGB) to exactly ``width x height`` (for user proxy images)."""
    h, w = image.shape[:2]
    s = max(width / w, height / h)
    rw, rh = max(width, math.ceil(w * s - 1e-9)), max(height, math.ceil(h * s - 1e-9))
    geom = Geometry((w, h), (rw, rh), (-((rw - width) // 2), -((rh - height) // 2)), (width, height))
    return apply_geometry(image, geom)
