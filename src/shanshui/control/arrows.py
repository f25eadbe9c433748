"""Arrows -> dense motion field (SPEC §2.2, training-free part).

An arrow ``(x0, y0) -> (x1, y1)`` with an object strength ``s`` asks the content under its start to travel
by ``s·(x1 − x0, y1 − y0)`` pixels over the whole clip. The pipeline works on a static *velocity* field,
so the dense field built here (pixels per clip) is divided by ``frames − 1`` by the caller.

* :func:`parse_arrow`, :func:`load_arrows`, :func:`parse_arrows_json` — the CLI text form
  ``x0,y0,x1,y1[,strength]``, a JSON file, JSON text (the web page).
* :func:`sparse_flow` — eq. 5: the arrow's displacement times its strength at its start pixel, zero
  elsewhere.
* :func:`densify` — eq. 6: ``f̂(p) = Σ_i exp(−(|p − p_i| / σ)²) · f_s(p_i)`` (a sum, not a normalised
  mean).
* :func:`threshold` — eq. 7: keep ``f̂`` where ``|f̂| > R``, zero elsewhere. ``R`` is a *fraction of the
  longest arrow* (the paper's 0.05 is on a normalised flow scale; an absolute 0.05 px would keep everything).
* :func:`apply_still_mask`, :func:`load_mask` — a user mask of regions that must not move.
* :func:`dense_field` — the whole chain, with ``σ`` scaled to the image: ``σ = 170/512 ·`` longer side.

Arrays: fields are float32 ``(H, W, 2)`` holding ``(dx, dy)`` in pixels, the convention of
:mod:`shanshui.flow`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ShanshuiError, check

SIGMA_AT_512 = 170.0   # paper default σ for 512 px frames (SPEC §2.2)
THRESHOLD = 0.05       # paper default R, here relative to the longest arrow
MAX_STRENGTH = 10.0


@dataclass(frozen=True)
class Arrow:
    """Start ``(x0, y0)``, end ``(x1, y1)`` in pixels of the image they were drawn on; ``strength`` >= 0."""

    x0: float
    y0: float
    x1: float
    y1: float
    strength: float = 1.0

    @property
    def displacement(self) -> tuple[float, float]:
        return (self.x1 - self.x0) * self.strength, (self.y1 - self.y0) * self.strength


def make_arrow(values, where: str = "arrow") -> Arrow:
    """An :class:`Arrow` from 4 or 5 numbers, with range checks."""
    check(len(values) in (4, 5), f"{where} has {len(values)} numbers; expected x0,y0,x1,y1[,strength]")
    try:
        nums = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ShanshuiError(f"{where} must hold numbers x0,y0,x1,y1[,strength], got {list(values)}") from None
    check(all(math.isfinite(v) for v in nums), f"{where} has a non-finite number: {nums}")
    strength = nums[4] if len(nums) == 5 else 1.0
    check(0.0 <= strength <= MAX_STRENGTH, f"{where} strength={strength:g} must be in [0, {MAX_STRENGTH:g}]")
    return Arrow(*nums[:4], strength)


def parse_arrow(text: str) -> Arrow:
    """``"x0,y0,x1,y1"`` or ``"x0,y0,x1,y1,strength"`` -> :class:`Arrow`."""
    parts = [p.strip() for p in str(text).split(",")]
    return make_arrow(parts, where=f"--arrow '{text}'")


def load_arrows(path: str | Path) -> list[Arrow]:
    """Arrows from a JSON file (the forms of :func:`arrows_from_data`)."""
    path = Path(path)
    check(path.is_file(), f"arrow file '{path}' does not exist")
    return parse_arrows_json(path.read_text(encoding="utf-8", errors="replace"), f"arrow file '{path}'")


def parse_arrows_json(text: str, where: str = "arrows") -> list[Arrow]:
    """Arrows from JSON text (the forms of :func:`arrows_from_data`); blank text means no arrows."""
    if not str(text).strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShanshuiError(f"{where} is not valid JSON: {str(exc).splitlines()[0]}") from None
    return arrows_from_data(data, where)


def arrows_from_data(data, where: str = "arrows") -> list[Arrow]:
    """A list whose items are ``[x0, y0, x1, y1(, strength)]`` or ``{"from": [x, y], "to": [x, y],
    "strength": s}`` (``strength`` optional), or ``{"arrows": [...]}``."""
    if isinstance(data, dict):
        data = data.get("arrows")
    check(isinstance(data, list), f"{where} must hold a list of arrows (or {{\"arrows\": [...]}})")
    arrows = []
    for i, item in enumerate(data):
        at = f"arrow #{i} in {where}"
        if isinstance(item, dict):
            check("from" in item and "to" in item, f"{at} needs 'from' and 'to' (and optionally 'strength')")
            check(all(isinstance(item[k], (list, tuple)) and len(item[k]) == 2 for k in ("from", "to")),
                  f"{at}: 'from' and 'to' must be [x, y]")
            values = [*item["from"], *item["to"], item.get("strength", 1.0)]
        elif isinstance(item, (list, tuple)):
            values = list(item)
        else:
            raise ShanshuiError(f"{at} must be [x0, y0, x1, y1(, strength)] or an object with from/to")
        arrows.append(make_arrow(values, at))
    return arrows


def check_arrows_inside(arrows: list[Arrow], width: int, height: int, where: str = "arrow") -> None:
    """Each arrow must start inside the image (its end may leave it: content may exit the frame)."""
    for a in arrows:
        check(0 <= a.x0 <= width - 1 and 0 <= a.y0 <= height - 1,
              f"{where} start ({a.x0:g}, {a.y0:g}) lies outside the {width}x{height} image "
              f"(x in [0, {width - 1}], y in [0, {height - 1}])")


# --------------------------------------------------------------------------------------------- fields
def sparse_flow(arrows: list[Arrow], height: int, width: int) -> np.ndarray:
    """Eq. 5: ``(H, W, 2)`` zero except at each arrow's (rounded) start pixel, which holds its displacement
    times its strength. Arrows starting on the same pixel add up."""
    flow = np.zeros((height, width, 2), np.float32)
    for a in arrows:
        x, y = int(round(a.x0)), int(round(a.y0))
        if 0 <= x < width and 0 <= y < height:
            flow[y, x] += np.float32(a.displacement)
    return flow


def default_sigma(height: int, width: int) -> float:
    """σ proportional to the frame: the paper's 170 px at 512 px, scaled by the longer side."""
    return SIGMA_AT_512 * max(height, width) / 512.0


def densify(sparse: np.ndarray, sigma: float) -> np.ndarray:
    """Eq. 6: ``f̂(p) = Σ_i exp(−(|p − p_i| / σ)²) · f_s(p_i)`` over the non-zero pixels ``p_i``."""
    check(sigma > 0 and math.isfinite(sigma), f"sigma={sigma} must be a finite number > 0")
    h, w = sparse.shape[:2]
    ys, xs = np.nonzero(np.any(sparse != 0, axis=-1))
    yy = np.arange(h, dtype=np.float64)[:, None]                                   # (H, 1)
    xx = np.arange(w, dtype=np.float64)[None, :]                                   # (1, W)
    out = np.zeros((h, w, 2), np.float64)
    for y, x in zip(ys, xs):
        weight = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / sigma**2)               # (H, W)
        out += weight[..., None] * sparse[y, x].astype(np.float64)
    return out.astype(np.float32)


def threshold(dense: np.ndarray, r: float) -> np.ndarray:
    """Eq. 7: ``dense`` where ``|dense| > r`` (pixels), zero elsewhere."""
    check(r >= 0 and math.isfinite(r), f"threshold R={r} must be a finite number >= 0")
    keep = np.linalg.norm(dense, axis=-1) > r
    return np.where(keep[..., None], dense, 0).astype(np.float32)


def apply_still_mask(field: np.ndarray, still: np.ndarray | None) -> np.ndarray:
    """Zero the field where ``still`` (bool ``(H, W)``) is true."""
    if still is None:
        return field
    check(still.shape == field.shape[:2],
          f"mask size {still.shape} does not match the field {field.shape[:2]}")
    return np.where(still[..., None], 0, field).astype(np.float32)


def dense_field(arrows: list[Arrow], height: int, width: int, sigma: float | None = None,
                r: float = THRESHOLD, still: np.ndarray | None = None, strength: float = 1.0) -> np.ndarray:
    """Arrows -> thresholded dense field (pixels over the whole clip), still regions zeroed, scaled by the
    global ``strength``. ``r`` is relative to the longest arrow displacement (see the module docstring)."""
    check(strength >= 0 and math.isfinite(strength), f"strength={strength} must be a finite number >= 0")
    sigma = default_sigma(height, width) if sigma is None else float(sigma)
    sparse = sparse_flow(arrows, height, width)
    longest = float(np.linalg.norm(sparse, axis=-1).max()) if arrows else 0.0
    if longest == 0.0:
        return np.zeros((height, width, 2), np.float32)
    field = threshold(densify(sparse, sigma), r * longest)
    return apply_still_mask(field, still) * np.float32(strength)


# ----------------------------------------------------------------------------------------------- masks
def load_mask(path: str | Path, height: int, width: int) -> np.ndarray:
    """A still-region mask image -> bool ``(H, W)``: white (> 50 % grey, or opaque alpha if the image has
    an alpha channel) means "keep still". The mask is resized (nearest) to ``(height, width)``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check(path.is_file(), f"mask '{path}' does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                gray = im.convert("RGBA").getchannel("A")
            else:
                gray = im.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise ShanshuiError(f"mask '{path}' is not a readable image: {exc}") from None
    gray = gray.resize((width, height), Image.NEAREST)
    return np.asarray(gray) > 127
