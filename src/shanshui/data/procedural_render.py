"""Render a :class:`~shanshui.data.procedural_scene.Scene` into frames and exact ground-truth flow.

The picture is a stack of layers, back to front, each a premultiplied RGBA canvas in world coordinates
(the painting unrolled as a hand scroll) that moves rigidly: in frame ``k`` a frame pixel ``p`` shows the
layer's canvas at world point ``p + cam_k - move_k``, where ``cam_k`` is the camera's horizontal pan and
``move_k`` the layer's own motion (drifting mist, a sailing boat, falling rain ...). The lake adds a
per-row horizontal shift (shimmer) and the waterfall moves inside a fixed mask.

Because every layer is a pure translation, its forward flow is exact and constant per layer (per row
for the lake)::

    flow_k = (move_{k+1} - move_k) - (cam_{k+1} - cam_k),   frame_k(p) = frame_{k+1}(p + flow_k(p))

A pixel's flow is that of the layer contributing most to its colour. Where no single layer dominates
(translucent mist over a ridge, a rain streak) or where the layer is covered in the next frame
(occlusion), the pixel is marked invalid in the optional ``valid`` mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import check
from . import procedural_paint as paint
from .procedural_paint import Window
from .procedural_scene import Scene

DOMINANCE = 0.95  # a pixel's flow is exact ("valid") when one layer gives at least this share of its colour


@dataclass
class Layer:
    """A rigidly moving, premultiplied RGBA canvas (``rgba`` (h, w, 4)) placed over world window ``win``."""

    name: str
    rgba: np.ndarray
    win: Window
    move: np.ndarray  # (F, 2) own displacement in world px per frame
    row_shift: np.ndarray | None = None  # (F, win.h) extra horizontal displacement per canvas row
    wrap: bool = False  # the canvas tiles the plane (rain)
    mask: np.ndarray | None = None  # (h, w) coverage that stays fixed on the scroll (waterfall channel)

    @property
    def pans_only(self) -> bool:
        return not self.move.any() and self.row_shift is None and not self.wrap and self.mask is None


def check_size(size) -> tuple[int, int]:
    """``size`` as ``(height, width)``; each side a multiple of 8 in 32..1024."""
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    for name, v in (("height", h), ("width", w)):
        check(isinstance(v, (int, np.integer)) and 32 <= v <= 1024 and v % 8 == 0,
              f"{name}={v!r} must be a multiple of 8 in 32..1024")
    return int(h), int(w)


def _window(h: int, w: int, offsets: np.ndarray, margin: int) -> Window:
    """The world window a layer must cover when frame pixels sample it at ``p + offsets[k]``."""
    x0 = int(np.floor(offsets[:, 0].min())) - margin
    y0 = int(np.floor(offsets[:, 1].min())) - margin
    x1 = int(np.ceil(offsets[:, 0].max())) + w + margin
    y1 = int(np.ceil(offsets[:, 1].max())) + h + margin
    return Window(x0, y0, x1 - x0, y1 - y0)


def _rgba(layer: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    rgb, alpha = layer
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def _over(front: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Premultiplied 'over' of two RGBA canvases of the same window."""
    return front + (1.0 - front[..., 3:4]) * back


class _Builder:
    """Plans the layout of one scene and paints its layers (all randomness from the scene's seed)."""

    def __init__(self, scene: Scene, frames: int, h: int, w: int):
        self.scene, self.F, self.H, self.W = scene, frames, h, w
        self.s = float(np.sqrt(h * w) / 128.0)
        self.t = np.arange(frames, dtype=np.float32) - (frames - 1) / 2.0  # time centred on the middle frame
        direction = {"still": 0.0, "pan right": 1.0, "pan left": -1.0}[scene.camera]
        self.cam = direction * scene.pan_speed * self.s * self.t
        self.layout = np.random.default_rng([scene.seed, 1])
        self.layers: list[Layer] = []
        self._texture_stream = 0
        self.shimmer_px = 0.8 * self.s if scene.lake else 0.0
        self.waterline = h * self.layout.uniform(0.6, 0.7) if scene.lake else float(h)
        margin = 3 + int(np.ceil(self.shimmer_px))
        scroll = _window(h, w, np.stack([self.cam, np.zeros_like(self.cam)], 1), margin)
        if scene.lake:  # the lake mirrors the sky too: reach as far above the frame as the water is deep
            y0 = min(scroll.y0, int(np.floor(2 * self.waterline - h)) - margin)
            scroll = Window(scroll.x0, y0, scroll.w, scroll.y0 + scroll.h - y0)
        self.scroll = scroll
        self.view = (float(self.cam.min()) - 0.15 * w, float(self.cam.max()) + 1.15 * w)  # world x seen

    # -- helpers --------------------------------------------------------------------------------------
    def rng(self) -> np.random.Generator:
        """A fresh texture stream per painted element, so layout draws never shift textures."""
        self._texture_stream += 1
        return np.random.default_rng([self.scene.seed, 2, self._texture_stream])

    def moving_window(self, velocity) -> tuple[np.ndarray, Window]:
        move = np.outer(self.t, np.asarray(velocity, np.float32) * self.s).astype(np.float32)
        offsets = np.stack([self.cam, np.zeros_like(self.cam)], 1) - move
        return move, _window(self.H, self.W, offsets, 3)

    def add_static(self, name: str, painted) -> None:
        self.layers.append(Layer(name, _rgba(painted), self.scroll, np.zeros((self.F, 2), np.float32)))

    def add_moving(self, name: str, velocity, painter) -> None:
        move, win = self.moving_window(velocity)
        self.layers.append(Layer(name, _rgba(painter(win)), win, move))

    # -- the scene --------------------------------------------------------------------------------------
    def build(self) -> tuple[list[Layer], np.ndarray]:
        sc, H, s = self.scene, self.H, self.s
        darkness = 0.3 if sc.sun == "moon" else 0.2 if sc.rain else 0.05
        self.add_static("sky", paint.sky(self.rng(), self.scroll, s, darkness))
        self.add_sun()
        if sc.clouds:
            self.add_moving("clouds", (0.7 * sc.mist_speed, 0.0),
                            lambda win: paint.clouds(self.rng(), win, s, 0.04 * H, 0.3 * H))
        ranges = self.plan_ranges()
        fall_x = self.pick_waterfall(ranges[-1]) if sc.waterfall else None
        for i, (ridge, tone, nearness, fade) in enumerate(ranges):
            cliffs = (fall_x,) if fall_x is not None and i == len(ranges) - 1 else ()
            painted = paint.mountain_range(self.rng(), self.scroll, s, ridge, tone, nearness, fade, cliffs)
            self.add_static(f"range{i}", painted)
            if i == len(ranges) - 1 and fall_x is not None:
                self.add_waterfall(ridge, fall_x, fade)
            self.add_mist(i, ridge, fade, nearness)
        if sc.lake:
            self.add_lake()
        if sc.boat:
            self.add_boat()
        self.add_foreground(ranges[-1][0])
        if sc.birds:
            self.add_birds()
        if sc.rain:
            self.add_rain()
        paper = paint.paper_texture(self.rng(), self.scroll, s)
        return self.layers, paper

    def plan_ranges(self) -> list[tuple[paint.Ridge, float, float, float]]:
        sc, H, W, s, L = self.scene, self.H, self.W, self.s, self.layout
        n = sc.ranges
        lift, sharp, width = {"gentle hills": (0.55, 0.6, 1.5), "mountains": (1.0, 1.0, 1.0),
                              "steep peaks": (1.5, 2.4, 0.55)}[sc.mountains]
        lowest = self.waterline + 0.02 * H if sc.lake else 0.8 * H
        fog = {"none": 1.7, "light": 1.0, "dense": 0.7}[sc.fog]
        out = []
        for i in range(n):
            nearness = i / (n - 1)
            base = 0.36 * H + (lowest - 0.36 * H) * (i + 1) / n
            height = H * (0.17 + 0.1 * nearness) * lift * L.uniform(0.85, 1.15)
            peaks = tuple((L.uniform(*self.view), W * L.uniform(0.07, 0.2) * width, L.uniform(0.55, 1.0))
                          for _ in range(int(L.integers(2, 4))))
            ridge = paint.Ridge(base=base, height=height, peaks=peaks, wave=paint.Wave1D(L, 0.45 * W, 3),
                                jitter=paint.Wave1D(L, 7 * s, 3, 0.6), sharpness=sharp,
                                jitter_px=(0.8 + 1.2 * nearness) * s)
            tone = (0.2 + 0.55 * nearness ** 1.3) * (0.75 if sc.fog == "dense" and nearness < 1 else 1.0)
            fade = H * (0.07 + 0.05 * nearness) * fog * L.uniform(0.85, 1.2)
            out.append((ridge, tone, 0.15 + 0.75 * nearness, fade))
        return out

    def add_sun(self) -> None:
        sc, H, W, s, L = self.scene, self.H, self.W, self.s, self.layout
        if sc.sun == "none":
            L.random(3)  # keep the layout stream aligned between scenes with and without a sun
            return
        radius = 0.06 * np.sqrt(H * W) * L.uniform(0.85, 1.15)
        centre = (L.uniform(0.2, 0.8) * W, H * L.uniform(0.15, 0.28))
        speed = {"still": 0.0, "rising": -sc.sun_speed, "setting": sc.sun_speed}[sc.sun_motion]
        painter = paint.sun_disc if sc.sun == "red sun" else paint.moon_disc
        self.add_moving(sc.sun, (0.0, speed), lambda win: painter(self.rng(), win, s, centre, radius))

    def add_mist(self, i: int, ridge: paint.Ridge, fade: float, nearness: float) -> None:
        sc, H, s, L = self.scene, self.H, self.s, self.layout
        chance, opacity, thick = {"none": (0.0, 0.0, 0.0), "light": (0.6, 0.55, 0.045),
                                  "dense": (1.0, 0.85, 0.07)}[sc.fog]
        if L.random() >= chance:
            return
        centre = ridge.base - ridge.height * L.uniform(0.0, 0.35)  # across the lower slopes of the range
        thickness = H * thick * L.uniform(0.8, 1.3)
        speed = sc.mist_speed * (0.6 + 0.5 * nearness)
        self.add_moving(f"mist{i}", (speed, 0.0),
                        lambda win: paint.mist_band(self.rng(), win, s, centre, thickness, opacity))

    def pick_waterfall(self, host) -> float:
        ridge = host[0]
        xs = np.linspace(0.25 * self.W, 0.75 * self.W, 41, dtype=np.float32)
        return float(xs[np.argmin(ridge.top(xs))] + self.layout.uniform(-2, 2) * self.s)

    def add_waterfall(self, ridge: paint.Ridge, x: float, fade: float) -> None:
        s = self.s
        win = self.scroll
        start = float(ridge.top(np.array([x], np.float32))[0]) + 0.6 * s
        length = 2.2 * fade
        half = max(1.5, 2.2 * s)
        xs, ys = win.xs()[None, :], win.ys()[:, None]
        across = np.clip(half - np.abs(xs - x) + 0.5, 0.0, 1.0)
        ending = 1.0 - paint.smoothstep(start + 0.45 * length, start + length, ys)
        along = np.clip(ys - start + 0.5, 0.0, 1.0) * ending
        speed = 1.6
        move, _ = self.moving_window((0.0, speed))
        fall_win = Window(win.x0, win.y0 - int(np.ceil(np.abs(move[:, 1]).max())) - 2, win.w,
                          win.h + 2 * int(np.ceil(np.abs(move[:, 1]).max())) + 4)
        rng = self.rng()
        streaks = paint.smoothstep(0.5, 0.85, paint.value_noise(rng, fall_win.h, fall_win.w, 9 * s, 0.7 * s))
        paper = np.ones((fall_win.h, fall_win.w), np.float32)
        water = paint.ink_over_paper(paper, 0.35 * streaks, paint.INK_FAR)
        mask = (across * along).astype(np.float32)
        self.layers.append(Layer("waterfall", _rgba(water), fall_win, move, mask=mask))

    def add_lake(self) -> None:
        H, s = self.H, self.s
        win, yw = self.scroll, self.waterline
        behind = np.zeros((win.h, win.w, 4), np.float32)
        for layer in self.layers:  # mirror what stands on the far shore: sky and ranges (the scroll)
            if layer.win == win and layer.pans_only:
                behind = _over(layer.rgba, behind)
        ys = win.ys()
        mirror_rows = np.clip(np.round(2 * yw - ys).astype(int) - win.y0, 0, win.h - 1)
        reflected = cv2.GaussianBlur(behind[mirror_rows, :, :3], (0, 0), sigmaX=0.6 * s, sigmaY=1.6 * s)
        depth = np.clip((ys - yw) / max(H - yw, 1.0), 0.0, 1.0)[:, None, None]
        strength = 0.5 * np.exp(-2.5 * depth)
        water = paint.PAPER * (1.0 - strength) + reflected * strength
        rng = self.rng()
        ripples = np.zeros((win.h, win.w), np.uint8)
        for _ in range(int(0.1 * win.w * (H - yw) / (s * s) / 12)):
            y = rng.uniform(yw + 1.5 * s, H + 2) - win.y0
            x = rng.uniform(0, win.w)
            length = rng.uniform(2, 9) * s * (0.6 + (y + win.y0 - yw) / max(H - yw, 1.0))
            stroke = [(x, y), (x + length, y + rng.normal(0, 0.2))]
            paint.draw_polyline(ripples, stroke, 1, int(rng.integers(30, 100)))
        rip = ripples.astype(np.float32)[..., None] / 255.0
        water = water * (1.0 - rip) + paint.INK_FAR * rip
        body = np.clip(ys - yw + 0.5, 0.0, 1.0)[:, None, None] * np.ones((1, win.w, 1), np.float32)
        rgba = np.concatenate([water * body, body], axis=-1).astype(np.float32)
        yrow = ys[None, :]
        amp = self.shimmer_px * np.clip((yrow - yw) / max(H - yw, 1.0), 0.0, 1.0) ** 0.7
        phase = self.layout.uniform(0, 2 * np.pi)
        shift = amp * np.sin(2 * np.pi * yrow / (4.5 * s) - 0.9 * self.t[:, None] + phase)
        self.layers.append(Layer("lake", rgba, win, np.zeros((self.F, 2), np.float32),
                                 row_shift=shift.astype(np.float32)))

    def add_boat(self) -> None:
        sc, H, W, s, L = self.scene, self.H, self.W, self.s, self.layout
        yw = self.waterline
        centre = (W * L.uniform(0.3, 0.7), yw + (H - yw) * L.uniform(0.3, 0.6))
        length = 0.13 * np.sqrt(H * W) * L.uniform(0.85, 1.2)
        facing = 1.0 if sc.boat_speed > 0 else -1.0
        self.add_moving("boat", (sc.boat_speed, 0.0),
                        lambda win: paint.boat(self.rng(), win, s, centre, length, facing))

    def add_foreground(self, nearest: paint.Ridge) -> None:
        """The dark near bank: a rock rising from a bottom corner (lake) or low ground (no lake)."""
        sc, H, W, s, L = self.scene, self.H, self.W, self.s, self.layout
        side = L.choice([0.08, 0.92])
        top = H * L.uniform(0.5, 0.6) if sc.lake else H * L.uniform(0.62, 0.72)
        base = 1.08 * H if sc.lake else 0.9 * H
        peak = (side * W, W * L.uniform(0.14, 0.22), 1.0)
        ridge = paint.Ridge(base=base, height=base - top, peaks=(peak,), wave=paint.Wave1D(L, 0.6 * W, 3),
                            jitter=paint.Wave1D(L, 5 * s, 3, 0.6), sharpness=1.0, jitter_px=1.5 * s)
        rgb, alpha = paint.mountain_range(self.rng(), self.scroll, s, ridge, 0.95, 1.0, 0.16 * H)
        if sc.pines:
            trees = np.zeros(alpha.shape, np.uint8)
            rng = self.rng()
            count = int(L.integers(2, 5))
            for _ in range(count):
                x = peak[0] + L.uniform(-0.7, 0.7) * peak[1]
                root_y = float(ridge.top(np.array([x], np.float32))[0]) + 1.0 * s
                root = (x - self.scroll.x0, root_y - self.scroll.y0)
                paint.pine(trees, rng, root, H * L.uniform(0.13, 0.22), s)
            for _ in range(int(L.integers(3, 7))):  # small distant pines on the nearest range
                x = L.uniform(*self.view)
                root_y = float(nearest.top(np.array([x], np.float32))[0]) + 0.5 * s
                root = (x - self.scroll.x0, root_y - self.scroll.y0)
                paint.pine(trees, rng, root, H * L.uniform(0.04, 0.065), s)
            tree_rgb, tree_alpha = paint.wash(trees.astype(np.float32) / 255.0, paint.INK)
            rgb, alpha = tree_rgb + (1 - tree_alpha[..., None]) * rgb, tree_alpha + (1 - tree_alpha) * alpha
        self.add_static("foreground", (rgb, alpha))

    def add_birds(self) -> None:
        sc, H, W, s, L = self.scene, self.H, self.W, self.s, self.layout
        centre = (W * L.uniform(0.3, 0.7), H * L.uniform(0.12, 0.3))
        count = int(L.integers(3, 8))
        self.add_moving("birds", sc.bird_velocity,
                        lambda win: paint.birds(self.rng(), win, s, centre, 0.07 * W, count))

    def add_rain(self) -> None:
        H, W, s, L = self.H, self.W, self.s, self.layout
        slant = L.uniform(-0.3, 0.3)
        vy = 7.0 * L.uniform(0.85, 1.15)
        move = np.outer(self.t, np.array([slant * vy, vy], np.float32) * s).astype(np.float32)
        tile = _rgba(paint.rain_tile(self.rng(), H, W, s, slant, 1.0))
        self.layers.append(Layer("rain", tile, Window(0, 0, W, H), move, wrap=True))


def _merge_static(layers: list[Layer]) -> list[Layer]:
    """Fold runs of layers that only pan with the camera (sky, ranges, bank) into one canvas."""
    out: list[Layer] = []
    for layer in layers:
        if out and layer.pans_only and out[-1].pans_only and out[-1].win == layer.win:
            prev = out[-1]
            out[-1] = Layer(f"{prev.name}+{layer.name}", _over(layer.rgba, prev.rgba), prev.win, prev.move)
        else:
            out.append(layer)
    return out


def _sample(layer: Layer, k: int, cam: float, h: int, w: int, scroll: Window) -> np.ndarray:
    """The layer as seen in frame ``k``: (h, w, 4) premultiplied RGBA."""
    tx = cam - layer.move[k, 0] - layer.win.x0
    ty = -layer.move[k, 1] - layer.win.y0
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_WRAP if layer.wrap else cv2.BORDER_CONSTANT
    if layer.row_shift is not None:
        rows = (np.arange(h, dtype=np.float32) + ty).astype(np.float32)
        shift = np.interp(rows, np.arange(layer.win.h, dtype=np.float32), layer.row_shift[k])
        map_x = (np.arange(w, dtype=np.float32)[None, :] + tx - shift[:, None]).astype(np.float32)
        map_y = np.repeat(rows[:, None], w, axis=1).astype(np.float32)
        out = cv2.remap(layer.rgba, map_x, map_y, cv2.INTER_LINEAR, borderMode=border)
    else:
        m = np.float32([[1, 0, tx], [0, 1, ty]])
        out = cv2.warpAffine(layer.rgba, m, (w, h), flags=flags, borderMode=border)
    if layer.mask is not None:
        m = np.float32([[1, 0, cam - scroll.x0], [0, 1, -scroll.y0]])
        out = out * cv2.warpAffine(layer.mask, m, (w, h), flags=flags)[..., None]
    return out


def _layer_flow(layer: Layer, k: int, cam: np.ndarray, h: int) -> np.ndarray:
    """Forward flow of one layer from frame k to k+1: (2,) or, with a row shift, (h, 2) per row."""
    base = (layer.move[k + 1] - layer.move[k]) - np.array([cam[k + 1] - cam[k], 0.0], np.float32)
    if layer.row_shift is None:
        return base
    rows = np.arange(h, dtype=np.float32) - layer.win.y0  # the lake does not move vertically
    dx = (np.interp(rows, np.arange(layer.win.h), layer.row_shift[k + 1])
          - np.interp(rows, np.arange(layer.win.h), layer.row_shift[k]))
    per_row = np.tile(base, (h, 1))
    per_row[:, 0] += dx
    return per_row


def render_clip(scene: Scene, frames: int = 16, size=128, return_valid: bool = False):
    """Render ``scene`` as a clip.

    Returns ``(frames uint8 (F, H, W, 3), flow float32 (F-1, H, W, 2))`` where ``flow[k]`` maps frame
    ``k`` to ``k+1`` in pixels, ``(dx, dy)``, so that ``frames[k](p) ~= frames[k+1](p + flow[k](p))``.
    With ``return_valid`` a third array ``valid`` bool (F-1, H, W) marks the pixels where that holds
    exactly (one layer dominates and stays visible). ``size`` is an int or ``(height, width)``.
    """
    check(isinstance(frames, (int, np.integer)) and frames >= 2, f"frames={frames!r} must be an integer >= 2")
    h, w = check_size(size)
    builder = _Builder(scene, int(frames), h, w)
    layers, paper = builder.build()
    layers = _merge_static(layers)
    cam, scroll = builder.cam, builder.scroll

    video = np.empty((frames, h, w, 3), np.uint8)
    ids = np.empty((frames, h, w), np.int16)
    share = np.empty((frames, h, w), np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for k in range(frames):
        sampled = [_sample(layer, k, float(cam[k]), h, w, scroll) for layer in layers]
        image = np.broadcast_to(paint.PAPER, (h, w, 3)).astype(np.float32)
        for rgba in sampled:
            image = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * image
        m = np.float32([[1, 0, cam[k] - scroll.x0], [0, 1, -scroll.y0]])
        image = image * cv2.warpAffine(paper, m, (w, h), flags=flags)[..., None]
        video[k] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        ids[k], share[k] = _dominant(sampled)

    flow = np.empty((frames - 1, h, w, 2), np.float32)
    for k in range(frames - 1):
        per_layer = [_layer_flow(layer, k, cam, h) for layer in layers]
        table = np.stack([f if f.ndim == 1 else np.zeros(2, np.float32) for f in per_layer])
        flow[k] = table[ids[k]]
        for i, f in enumerate(per_layer):
            if f.ndim == 2:  # per-row flow (the lake's shimmer)
                sel = ids[k] == i
                flow[k][sel] = np.broadcast_to(f[:, None, :], (h, w, 2))[sel]
    if not return_valid:
        return video, flow
    return video, flow, _validity(ids, share, flow)


def _dominant(sampled: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: index of the layer contributing most to the colour, and its share of the colour."""
    h, w = sampled[0].shape[:2]
    through = np.ones((h, w), np.float32)  # transmittance of the layers in front
    best = np.zeros((h, w), np.float32)
    ids = np.zeros((h, w), np.int16)
    for i in range(len(sampled) - 1, -1, -1):
        alpha = sampled[i][..., 3]
        weight = alpha * through
        better = weight > best
        best = np.where(better, weight, best)
        ids = np.where(better, np.int16(i), ids)
        through = through * (1.0 - alpha)
    return ids, best


def _validity(ids: np.ndarray, share: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """A flow vector is exact where its layer dominates at ``p`` in frame k and at ``p + flow`` in k+1."""
    f, h, w = ids.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    valid = np.zeros((f - 1, h, w), bool)
    for k in range(f - 1):
        qx, qy = gx + flow[k, ..., 0], gy + flow[k, ..., 1]
        inside = (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)
        # the next frame's layer and share around p + flow: all four bilinear neighbours must agree
        ok = inside & (share[k] >= DOMINANCE)
        for ox in (0, 1):
            for oy in (0, 1):
                xi = np.clip(np.floor(qx).astype(int) + ox, 0, w - 1)
                yi = np.clip(np.floor(qy).astype(int) + oy, 0, h - 1)
                ok &= (ids[k + 1][yi, xi] == ids[k]) & (share[k + 1][yi, xi] >= DOMINANCE)
        valid[k] = ok
    return valid
