"""Landscape-like test clips with known in-between frames.

Each scene is rendered analytically at *double* frame rate from continuous functions of position and
time (sums of sinusoids for textures and ridge lines, smooth edges), so sub-pixel motion is exact and no
frame is a resampled copy of another. Split a clip with :func:`split_ground_truth`: the even frames are
the interpolator's input, the odd frames are the true half-way frames.

Scenes (speeds are per double-rate frame at 256 px and scale with the size):

========  ======================================================================================
parallax  three mountain ranges drifting sideways at 0.5, 1.5 and 3.5 px (near moves fastest)
mist      still mountains under a band of mist drifting at 2 px and slowly changing shape
boat      a boat with a mast crossing a still lake at 3 px
pan       a camera panning across a wide painting at 2.5 px
static    nothing moves (every frame identical)
flicker   still scene whose brightness pulses, with a different phase in each region
========  ======================================================================================

numpy + OpenCV only; deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np

from ..errors import check

SCENES = ("parallax", "mist", "boat", "pan", "static", "flicker")
MOVING_SCENES = ("parallax", "mist", "boat", "pan")

PAPER = np.array([236, 229, 211], np.float32)
INKS = [np.array(c, np.float32) for c in ([176, 184, 186], [118, 132, 128], [62, 74, 70])]


class _Field:
    """A smooth random field ``f(x, y)`` in roughly [-1, 1]: a fixed sum of oriented sinusoids."""

    def __init__(self, rng: np.random.Generator, scale: float, n: int = 6):
        ang = rng.uniform(0, np.pi, n)
        freq = rng.uniform(0.5, 2.0, n) * 2 * np.pi / scale
        self.kx, self.ky = freq * np.cos(ang), freq * np.sin(ang)
        self.phase = rng.uniform(0, 2 * np.pi, n)
        self.amp = rng.uniform(0.5, 1.0, n) / n * 2

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(x, y).shape, np.float32)
        for kx, ky, ph, a in zip(self.kx, self.ky, self.phase, self.amp):
            out += a * np.sin(kx * x + ky * y + ph)
        return out


class _Ridge:
    """A mountain ridge line ``y = r(x)`` (sum of sinusoids around a base height)."""

    def __init__(self, rng: np.random.Generator, base: float, height: float, size: int):
        self.base, self.height = base, height
        self.freq = rng.uniform(1.0, 6.0, 5) * 2 * np.pi / size
        self.phase = rng.uniform(0, 2 * np.pi, 5)
        self.amp = rng.uniform(0.3, 1.0, 5) / np.arange(1, 6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        r = sum(a * np.sin(f * x + p) for f, p, a in zip(self.freq, self.phase, self.amp))
        return self.base - self.height * r / self.amp.sum()


def _smoothstep(v: np.ndarray) -> np.ndarray:
    """Anti-aliased edge: 0 -> 1 over about one pixel around v = 0."""
    return np.clip(v + 0.5, 0.0, 1.0).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _sky(size: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    return np.broadcast_to(PAPER * (0.94 + 0.06 * t), (size, size, 3)).copy()  # (H, W, 3)


def _mountains(img, x, y, ridges, fields, offsets):
    """Paint ridges back to front; ``offsets[i]`` shifts layer i sideways (pixels)."""
    for ridge, field, ink, off in zip(ridges, fields, INKS, offsets):
        xs = x - off
        alpha = _smoothstep(y - ridge(xs))[..., None]  # (H, W, 1): 1 below the ridge line
        tex = 1.0 + 0.12 * field(xs, y)[..., None]  # ink-wash texture moving with the layer
        img = img * (1 - alpha) + alpha * np.clip(ink * tex, 0, 255)
    return img


def _scene_layers(rng, size):
    ridges = [_Ridge(rng, size * b, size * h, size) for b, h in ((0.45, 0.18), (0.62, 0.14), (0.80, 0.10))]
    fields = [_Field(rng, size / s) for s in (6.0, 8.0, 10.0)]
    return ridges, fields


def _frame(name: str, k: int, size: int, seed: int, x, y, ridges, fields, extra) -> np.ndarray:
    s = size / 256.0
    img = _sky(size)
    if name == "parallax":
        return _mountains(img, x, y, ridges, fields, [0.5 * s * k, 1.5 * s * k, 3.5 * s * k])
    if name == "pan":
        off = 2.5 * s * k
        return _mountains(img, x, y, ridges, fields, [off, off, off])
    img = _mountains(img, x, y, ridges, fields, [0.0, 0.0, 0.0])
    if name == "mist":
        mist_field, = extra
        xs = x - 2.0 * s * k
        band = np.exp(-(((y - 0.68 * size) / (0.14 * size)) ** 2))
        dens = np.clip(0.5 + 0.9 * mist_field(xs, y + 0.3 * s * k * np.sin(xs / (40 * s))), 0, 1)
        a = (0.9 * band * dens)[..., None]
        return img * (1 - a) + a * np.float32(248.0)
    if name == "boat":
        cx, cy = 0.15 * size + 3.0 * s * k, 0.86 * size
        hull = _smoothstep(np.minimum.reduce([
            (y - (cy - 5 * s)), (cy + 4 * s) - y,
            (22 * s - np.abs(x - cx)) - 0.9 * np.maximum(y - (cy - 5 * s), 0)]))
        mast = _smoothstep(np.minimum.reduce([1.5 * s - np.abs(x - cx), y - (cy - 30 * s), cy - y]))
        sail = _smoothstep(np.minimum.reduce([x - cx - 1 * s, (cy - 8 * s) - y,
                                              (y - (cy - 28 * s)) - 0.9 * (x - cx)]))
        img = img * (1 - sail[..., None]) + sail[..., None] * np.float32([200, 170, 120])
        a = np.maximum(hull, mast)[..., None]
        return img * (1 - a) + a * np.float32([40, 34, 30])
    if name == "flicker":
        region_phase, = extra
        gain = 1.0 + 0.12 * np.sin(2 * np.pi * k / 5.0 + region_phase)[..., None]  # (H, W, 1)
        return img * gain
    return img  # static


def render_scene(name: str, size: int = 256, frames: int = 17, seed: int = 0) -> np.ndarray:
    """Render ``frames`` consecutive double-rate frames of scene ``name``: uint8 ``(frames, size, size, 3)``."""
    check(name in SCENES, f"scene '{name}' is not known; allowed: {', '.join(SCENES)}")
    check(size >= 32, f"size={size} must be >= 32")
    check(frames >= 3, f"frames={frames} must be >= 3")
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    ridges, fields = _scene_layers(rng, size)
    extra = ()
    if name == "mist":
        extra = (_Field(rng, size / 6.0),)
    elif name == "flicker":
        extra = (np.pi * (_Field(rng, size / 1.5)(x, y) + 1.0),)
    out = np.empty((frames, size, size, 3), np.uint8)
    for k in range(frames):
        out[k] = np.clip(_frame(name, k, size, seed, x, y, ridges, fields, extra) + 0.5, 0, 255).astype(np.uint8)
    return out


def split_ground_truth(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, truth)`` = even frames and odd frames of a double-rate clip (odd length required)."""
    video = np.asarray(video)
    check(video.ndim == 4 and len(video) >= 3 and len(video) % 2 == 1,
          f"a ground-truth clip needs an odd number >= 3 of frames, got shape {video.shape}")
    return video[0::2], video[1::2]
