"""Brush and wash primitives for the procedural ink-wash renderer.

Every painter works in *world* pixel coordinates (the painting as an unrolled hand scroll) over a
:class:`Window` and returns a premultiplied-alpha layer ``(rgb (h, w, 3), alpha (h, w))`` in float32.
A painted object is "ink on a piece of paper": ``body`` is where the object hides what lies behind it
(it is filled with paper), ``dens`` is the ink density laid on top — see :func:`ink_over_paper`.
Lengths are given at 128 px and multiplied by the scale ``s = sqrt(H * W) / 128``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAPER = np.array([0.925, 0.885, 0.800], np.float32)  # warm, unbleached rice paper
INK = np.array([0.085, 0.080, 0.085], np.float32)  # pine-soot ink
INK_FAR = np.array([0.36, 0.42, 0.47], np.float32)  # the cool grey of thinned ink on distant ridges
SEAL_RED = np.array([0.74, 0.14, 0.10], np.float32)  # cinnabar, as in a seal


@dataclass(frozen=True)
class Window:
    """A rectangle of world pixels: top-left ``(x0, y0)``, size ``w`` x ``h``."""

    x0: int
    y0: int
    w: int
    h: int

    def xs(self) -> np.ndarray:
        return (self.x0 + np.arange(self.w)).astype(np.float32)

    def ys(self) -> np.ndarray:
        return (self.y0 + np.arange(self.h)).astype(np.float32)


# --- noise -------------------------------------------------------------------------------------------

def value_noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float) -> np.ndarray:
    """Smooth random field in [0, 1]: a coarse random grid with cells of ``cell_y`` x ``cell_x`` px,
    upsampled bicubically. Cells much taller than wide give the vertical fibres of a hemp-fibre stroke."""
    cell_y, cell_x = max(cell_y, 1.0), max(cell_x, 1.0)
    gh, gw = int(h / cell_y) + 3, int(w / cell_x) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    target = (int(np.ceil(gw * cell_x)), int(np.ceil(gh * cell_y)))
    big = cv2.resize(grid, target, interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0.0, 1.0)


def fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3,
        aspect: float = 1.0) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves, normalised to [0, 1]; ``aspect`` = cell width / height."""
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        total += amp * value_noise(rng, h, w, cell, cell * aspect)
        norm += amp
        amp *= 0.5
        cell /= 2.0
    return total / norm


class Wave1D:
    """A smooth random function of world x: a sum of sines (defined for any x, so any window agrees)."""

    def __init__(self, rng: np.random.Generator, period: float, octaves: int = 4, roughness: float = 0.5):
        self.freqs = [(2.0 ** i) / period * rng.uniform(0.8, 1.25) for i in range(octaves)]
        self.amps = [roughness ** i for i in range(octaves)]
        self.phases = rng.uniform(0, 2 * np.pi, octaves)
        self.norm = sum(self.amps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Values in [-1, 1]."""
        out = np.zeros_like(x, dtype=np.float32)
        for f, a, p in zip(self.freqs, self.amps, self.phases):
            out += a * np.sin(2 * np.pi * f * x + p)
        return out / self.norm


def smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --- compositing -------------------------------------------------------------------------------------

def ink_over_paper(body: np.ndarray, dens: np.ndarray,
                   ink: np.ndarray = INK) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied layer of ink (density ``dens``, colour ``ink``) laid over a paper-filled ``body``.

    Where ``body`` is 1 the layer hides whatever is behind it; elsewhere only the ink covers.
    """
    dens = np.clip(dens, 0.0, 1.0)[..., None]
    body = np.clip(body, 0.0, 1.0)[..., None]
    rgb = ink * dens + (1.0 - dens) * PAPER * body
    alpha = dens + (1.0 - dens) * body
    return rgb.astype(np.float32), alpha[..., 0].astype(np.float32)


def wash(alpha: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied layer of a flat colour with coverage ``alpha``."""
    alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)
    return (alpha[..., None] * colour).astype(np.float32), alpha


# --- drawing (OpenCV anti-aliases only 8-bit images; we draw there at 1/16 px precision) -------------

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32)


def draw_polyline(canvas: np.ndarray, points, thickness: float, value: int = 255,
                  closed: bool = False) -> None:
    """Anti-aliased polyline on a uint8 canvas; points in canvas pixels (float)."""
    width = max(1, int(round(thickness)))
    cv2.polylines(canvas, [_fixed(points)], closed, int(value), width, cv2.LINE_AA, _SHIFT)


def draw_polygon(canvas: np.ndarray, points, value: int = 255) -> None:
    cv2.fillPoly(canvas, [_fixed(points)], int(value), cv2.LINE_AA, _SHIFT)


def draw_disc(canvas: np.ndarray, centre, radius: float, value: int = 255) -> None:
    c = _fixed(centre)
    r = max(1, int(round(radius * _ONE)))
    cv2.circle(canvas, (int(c[0]), int(c[1])), r, int(value), -1, cv2.LINE_AA, _SHIFT)


def draw_ellipse(canvas: np.ndarray, centre, axes, angle: float = 0.0, value: int = 255) -> None:
    c = _fixed(centre)
    a = _fixed(np.maximum(axes, 0.5))
    cv2.ellipse(canvas, (int(c[0]), int(c[1])), (int(a[0]), int(a[1])), angle, 0, 360, int(value), -1,
                cv2.LINE_AA, _SHIFT)


# --- painters ----------------------------------------------------------------------------------------

def paper_texture(rng: np.random.Generator, win: Window, s: float) -> np.ndarray:
    """Multiplicative paper factor around 1: mottled sizing, long fibres, and fine grain."""
    h, w = win.h, win.w
    mottle = fbm(rng, h, w, 24 * s, octaves=3) - 0.5
    grain = rng.standard_normal((h, w)).astype(np.float32)
    fibres = np.zeros((h, w), np.uint8)
    n = int(0.02 * h * w / max(s, 0.5))
    x, y = rng.uniform(0, w, n), rng.uniform(0, h, n)
    ang, length = rng.uniform(0, np.pi, n), rng.uniform(3, 9, n) * s
    bend = rng.normal(0, 0.4, n)
    for i in range(n):
        t = np.linspace(-0.5, 0.5, 4)[:, None]
        direction = np.array([np.cos(ang[i]), np.sin(ang[i])])
        normal = np.array([-direction[1], direction[0]])
        pts = np.array([x[i], y[i]]) + t * length[i] * direction + (t ** 2) * bend[i] * length[i] * normal
        draw_polyline(fibres, pts, 1, value=int(rng.integers(60, 160)))
    fibre = fibres.astype(np.float32) / 255.0
    return (1.0 + 0.06 * mottle + 0.012 * grain + 0.05 * fibre).astype(np.float32)


def sky(rng: np.random.Generator, win: Window, s: float, darkness: float) -> tuple[np.ndarray, np.ndarray]:
    """Opaque sky: paper with a faint uneven wash, stronger towards the top (``darkness`` sets it)."""
    y = win.ys()[:, None]
    mottle = fbm(rng, win.h, win.w, 40 * s, octaves=3, aspect=2.5)
    gradient = np.clip(1.0 - (y - win.y0) / (0.8 * win.h), 0.25, 1.0)
    dens = darkness * (0.55 + 0.45 * mottle) * gradient
    return ink_over_paper(np.ones((win.h, win.w), np.float32), dens, INK_FAR)


@dataclass(frozen=True)
class Ridge:
    """A mountain range's skyline: ``top(x)`` in world px (y grows downwards)."""

    base: float  # y of the skyline where the range is lowest
    height: float  # how far peaks rise above ``base``
    peaks: tuple  # ((centre x, half-width, relative height), ...)
    wave: Wave1D
    jitter: Wave1D
    sharpness: float  # exponent on the peaks: > 1 gives pointed peaks, < 1 round ones
    jitter_px: float

    def top(self, x: np.ndarray) -> np.ndarray:
        shape = 0.35 * (0.5 + 0.5 * self.wave(x))
        for c, hw, rel in self.peaks:
            bump = np.exp(-np.abs((x - c) / hw) ** 1.6) ** self.sharpness
            shape = np.maximum(shape, rel * bump)
        return self.base - self.height * shape + self.jitter_px * self.jitter(x)


def mountain_range(rng: np.random.Generator, win: Window, s: float, ridge: Ridge, tone: float,
                   nearness: float, fade: float, cliffs: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """One range: dark brushed skyline, texture strokes (cun) and a wash that dissolves into mist below.

    ``tone`` is the peak ink density (pale for far ranges, dark for near ones — the shades of ink);
    ``nearness`` in [0, 1] adds detail (contour line, fibre strokes, moss dots) and removes softness;
    ``fade`` is how many px below the skyline the wash has faded to blank paper (the mist gap);
    ``cliffs`` are world x positions where a waterfall falls: the rock on either side is darkened.
    """
    h, w = win.h, win.w
    xs = win.xs()
    top = ridge.top(xs)
    d = win.ys()[:, None] - top[None, :]
    body = np.clip(d + 0.5, 0.0, 1.0)
    depth = np.maximum(d, 0.0)

    uneven = 0.55 + 0.9 * value_noise(rng, 1, w, 1, 22 * s)[0]
    fade_len = fade * uneven[None, :]
    washed = np.exp(-depth / fade_len) * smoothstep(-0.2, 0.15, 1.0 - depth / (2.2 * fade_len))
    # Cun: fibre strokes hanging from the skyline, each column's stroke of its own length, and only in
    # patches; the rest of the rock is a wash with lighter and darker faces.
    fibres = value_noise(rng, h, w, (5 + 5 * nearness) * s, (0.9 + 0.6 * (1 - nearness)) * s)
    reach = fade * (0.15 + 0.9 * value_noise(rng, 1, w, 1, 2.5 * s)[0])[None, :]
    patches = smoothstep(0.35, 0.7, fbm(rng, h, w, 16 * s, octaves=2))
    strokes = smoothstep(0.5, 0.85, fibres) * np.exp(-depth / reach) * patches
    faces = fbm(rng, h, w, 12 * s, octaves=2, aspect=0.6)
    # Light from the right: flanks that climb to the right (skyline rising, top decreasing) are in shade.
    slope = np.gradient(top) / max(s, 1e-3)
    shade = smoothstep(-0.6, 0.6, -np.tanh(slope))[None, :] * np.exp(-depth / (0.6 * fade))
    body_ink = washed * (0.2 + 0.4 * faces + 0.35 * shade + 0.5 * nearness * strokes)
    body_ink *= 0.75 + 0.35 * nearness

    dry = smoothstep(0.2, 0.55, value_noise(rng, h, w, 2.5 * s, 4 * s))
    width = s * (0.7 + 1.3 * value_noise(rng, 1, w, 1, 9 * s)[0])[None, :]
    contour = np.exp(-(d / width) ** 2) * np.clip(d / width + 1.2, 0.0, 1.0) * (0.45 + 0.55 * dry)

    folds = np.zeros((h, w), np.float32)
    for _ in range(int(1 + 3 * nearness)):  # inner ridge lines: the folds of the rock
        offset = fade * rng.uniform(0.15, 0.6) * (0.7 + 0.3 * Wave1D(rng, 30 * s, 3)(xs))[None, :]
        present = smoothstep(0.45, 0.7, value_noise(rng, 1, w, 1, 16 * s)[0])[None, :]
        folds = np.maximum(folds, np.exp(-((d - offset) / (0.9 * s)) ** 2) * present * (0.45 + 0.55 * dry))
    folds *= washed

    edge_weight = 0.35 + 0.65 * nearness
    strongest = np.maximum(np.maximum(contour * edge_weight, body_ink), 0.85 * folds * nearness)
    dens = tone * np.clip(strongest, 0, 1)
    for cx in cliffs:  # dark wet rock framing a waterfall
        near_fall = np.exp(-((xs - cx) / (4.5 * s)) ** 2)[None, :] * np.exp(-depth / (1.6 * fade))
        dens = np.maximum(dens, min(1.0, tone * 1.3) * near_fall * (0.65 + 0.35 * fibres))
    if nearness < 0.5:  # distant ranges are soft: the wet-in-wet wash of thin ink
        sigma = (1.4 - 2.0 * nearness) * s
        dens = cv2.GaussianBlur(dens, (0, 0), sigma)
    if nearness > 0.3:
        dens = np.maximum(dens, tone * moss_dots(rng, win, s, top, count=int(w / s * 0.18 * nearness)))
    ink = INK_FAR + (INK - INK_FAR) * min(1.0, nearness * 1.3)
    return ink_over_paper(body, dens * body + contour * (1 - body) * tone * edge_weight, ink)


def moss_dots(rng: np.random.Generator, win: Window, s: float, top: np.ndarray, count: int) -> np.ndarray:
    """Dian: small round ink dots clustered along a skyline."""
    canvas = np.zeros((win.h, win.w), np.uint8)
    cols = rng.integers(0, win.w, count)
    for c in cols:
        y = top[c] - win.y0 + abs(rng.normal(0.3, 1.6)) * s
        radius = rng.uniform(0.45, 1.0) * s
        draw_disc(canvas, (c + rng.uniform(-0.5, 0.5), y), radius, int(rng.integers(150, 256)))
    return canvas.astype(np.float32) / 255.0


def mist_band(rng: np.random.Generator, win: Window, s: float, centre: float, thickness: float,
              opacity: float) -> tuple[np.ndarray, np.ndarray]:
    """A drifting band of mist: soft, horizontally stretched patches of blank paper."""
    y = win.ys()[:, None]
    profile = np.exp(-((y - centre) / thickness) ** 2)
    patches = smoothstep(0.25, 0.75, fbm(rng, win.h, win.w, 0.6 * thickness, octaves=3, aspect=4.0))
    return wash(opacity * profile * (0.35 + 0.65 * patches), PAPER * 1.02)


def clouds(rng: np.random.Generator, win: Window, s: float, top: float,
           bottom: float) -> tuple[np.ndarray, np.ndarray]:
    """Pale grey ink clouds: soft-edged, flat-bottomed, in the upper sky."""
    y = win.ys()[:, None]
    edge = 0.3 * (bottom - top)
    band = smoothstep(top, top + edge, y) * (1.0 - smoothstep(bottom - edge, bottom, y))
    shapes = fbm(rng, win.h, win.w, 18 * s, octaves=3, aspect=3.0)
    cover = smoothstep(0.5, 0.72, shapes) * band
    edge = np.clip(cover - cv2.GaussianBlur(cover, (0, 0), 1.5 * s), 0, 1)  # a slightly darker rim
    return wash(0.22 * cover + 0.5 * edge, INK_FAR * 0.9 + PAPER * 0.1)


def sun_disc(rng: np.random.Generator, win: Window, s: float, centre,
             radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A cinnabar sun like a seal impression: slightly irregular edge, mottled where the paste is thin."""
    xs, ys = win.xs()[None, :], win.ys()[:, None]
    dx, dy = xs - centre[0], ys - centre[1]
    r = np.sqrt(dx * dx + dy * dy)
    angle = np.arctan2(dy, dx)
    wobble = Wave1D(rng, 1.0, 4, 0.6)
    edge = radius * (1.0 + 0.045 * wobble(angle / (2 * np.pi)))
    cover = np.clip(edge - r + 0.5, 0.0, 1.0)
    mottle = fbm(rng, win.h, win.w, 3.0 * s, octaves=2)
    alpha = cover * (0.78 + 0.22 * smoothstep(0.25, 0.6, mottle))
    return wash(alpha, SEAL_RED)


def moon_disc(rng: np.random.Generator, win: Window, s: float, centre,
              radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A full moon left as bright paper, ringed by a thin pale outline and a soft halo of wash."""
    xs, ys = win.xs()[None, :], win.ys()[:, None]
    r = np.sqrt((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2)
    body = np.clip(radius - r + 0.5, 0.0, 1.0)
    rim = np.exp(-((r - radius) / (0.7 * s)) ** 2) * 0.25
    rgb, alpha = ink_over_paper(body, rim, INK_FAR)
    rgb = rgb * 1.0 + body[..., None] * 0.03  # the moon is a touch brighter than the paper
    return rgb.astype(np.float32), alpha


def pine(canvas: np.ndarray, rng: np.random.Generator, root, height: float, s: float) -> None:
    """A pine on a uint8 ink canvas: a leaning, slightly crooked trunk and flat tiers of needle clumps."""
    lean = rng.normal(0, 0.12)
    n = 6
    t = np.linspace(0, 1, n)
    bend = rng.normal(0, 0.05, n).cumsum() * height
    trunk = np.stack([root[0] + lean * height * t + bend * t, root[1] - height * t], 1)
    draw_polyline(canvas, trunk, max(1.0, 0.12 * height / 4), 235)
    tiers = int(rng.integers(3, 6))
    for j in range(tiers):
        f = 0.35 + 0.65 * j / max(tiers - 1, 1)
        cx, cy = np.interp(f, t, trunk[:, 0]), np.interp(f, t, trunk[:, 1])
        span = height * (0.42 - 0.25 * f) * rng.uniform(0.8, 1.2)
        side = rng.uniform(-0.35, 0.35) * span
        for k in range(int(rng.integers(4, 8))):  # each tier is a cluster of small flat clumps
            ox = cx + side + rng.uniform(-span, span) * 0.6
            oy = cy + rng.uniform(-0.5, 0.5) * span * 0.18
            draw_ellipse(canvas, (ox, oy), (span * rng.uniform(0.25, 0.45), span * rng.uniform(0.07, 0.14)),
                         rng.uniform(-12, 12), int(rng.integers(170, 250)))
        branch = np.array([[cx, cy], [cx + side, cy + 0.02 * height]])
        draw_polyline(canvas, branch, 1, 220)


def boat(rng: np.random.Generator, win: Window, s: float, centre, length: float, facing: float
         ) -> tuple[np.ndarray, np.ndarray]:
    """A small sampan with a woven canopy and a standing boatman poling it, with a faint reflection."""
    ink = np.zeros((win.h, win.w), np.uint8)
    cover = np.zeros_like(ink)  # where the boat hides the water (its canopy is paper-light, not glass)
    cx, cy = centre[0] - win.x0, centre[1] - win.y0
    L = length
    u = np.linspace(-0.5, 0.5, 12)
    deck = np.stack([cx + u * L, cy - 0.08 * L * (np.abs(u) * 2) ** 2.2], 1)  # raised bow and stern
    keel = np.stack([cx + u[::-1] * L * 0.86, cy + 0.11 * L * (1 - (u[::-1] * 2) ** 2)], 1)
    hull = np.concatenate([deck, keel])
    canopy = np.stack([cx - facing * 0.05 * L + np.linspace(-0.2, 0.2, 7) * L,
                       cy - 0.02 * L - 0.17 * L * np.sin(np.linspace(0, np.pi, 7))], 1)
    for shape in (hull, canopy):
        draw_polygon(cover, shape, 255)
    draw_polygon(ink, hull, 245)
    draw_polygon(ink, canopy, 130)
    draw_polyline(ink, canopy, max(1.0, 0.6 * s), 235)
    man_x = cx - facing * 0.34 * L
    body_line = [(man_x, cy - 0.04 * L), (man_x + facing * 0.02 * L, cy - 0.26 * L)]
    draw_polyline(ink, body_line, max(1.0, 0.9 * s), 250)
    draw_disc(ink, (man_x + facing * 0.025 * L, cy - 0.3 * L), 0.045 * L + 0.3, 250)
    draw_polyline(ink, [(man_x - facing * 0.25 * L, cy + 0.18 * L), (man_x + facing * 0.1 * L, cy - 0.4 * L)],
                  1, 170)  # the pole
    dens = ink.astype(np.float32) / 255.0
    body = cover.astype(np.float32) / 255.0
    reflection = np.zeros_like(dens)
    k = int(round(0.25 * L))
    rows = slice(int(cy) + 1, min(win.h, int(cy) + 1 + k))
    src = dens[int(cy) - (rows.stop - rows.start) + 1: int(cy) + 1][::-1]
    if src.shape[0] == rows.stop - rows.start and rows.stop > rows.start:
        reflection[rows] = 0.22 * cv2.GaussianBlur(src, (0, 0), 0.7 * s)
    return ink_over_paper(body, np.maximum(dens, reflection * (1 - body)))


def birds(rng: np.random.Generator, win: Window, s: float, centre, spread: float, count: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """A loose flock: each bird two curved wing strokes meeting at the body."""
    canvas = np.zeros((win.h, win.w), np.uint8)
    for _ in range(count):
        bx = centre[0] - win.x0 + rng.normal(0, spread)
        by = centre[1] - win.y0 + rng.normal(0, spread * 0.35)
        span = rng.uniform(2.2, 3.6) * s
        lift = rng.uniform(-0.5, 0.9) * span * 0.6
        left = [(bx - span, by - lift), (bx - 0.45 * span, by - 0.35 * span - 0.3 * lift), (bx, by)]
        right = [(bx, by), (bx + 0.45 * span, by - 0.35 * span - 0.3 * lift), (bx + span, by - lift)]
        draw_polyline(canvas, left + right[1:], max(1.0, 0.55 * s), 255)
    return wash(canvas.astype(np.float32) / 255.0, INK)


def rain_tile(rng: np.random.Generator, h: int, w: int, s: float, slant: float, density: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Thin slanted streaks on a tile that wraps seamlessly in both directions."""
    big = np.zeros((3 * h, 3 * w), np.uint8)
    n = int(density * h * w / (s * s) / 110)
    for _ in range(n):  # streaks start in the centre tile; whatever spills over is folded back below
        x, y = rng.uniform(w, 2 * w), rng.uniform(h, 2 * h)
        length = rng.uniform(3, 8) * s
        draw_polyline(big, [(x, y), (x + slant * length, y + length)], 1, int(rng.integers(40, 110)))
    tile = np.zeros((h, w), np.float32)
    for by in range(3):
        for bx in range(3):
            tile = np.maximum(tile, big[by * h:(by + 1) * h, bx * w:(bx + 1) * w].astype(np.float32))
    return wash(tile / 255.0, INK_FAR * 0.7)
