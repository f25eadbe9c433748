"""Training pairs for the refinement network T (SPEC §2.2), made from exact procedural flow.

A pair is ``(Gaussian field, true flow)``: arrows are sampled from the true per-frame flow ``v`` of a clip
(an arrow starts at a pixel ``p`` whose flow is exact and moving, and points along ``v(p)``), then turned
into a field exactly as a user's arrows are at inference — eq. 5 (sparse), eq. 6 (Gaussian densification),
eq. 7 (threshold relative to the longest arrow) via :func:`shanshui.control.arrows.dense_field`. Arrows
are expressed over the whole clip (``(frames − 1)·v(p)`` px, as a user draws them); the field is divided by
``frames − 1`` back to px/frame, as the painting pipeline does.
"""

from __future__ import annotations

import numpy as np

from . import arrows as arrow_ops

MIN_SPEED = 0.05   # px/frame: slower pixels are not used as arrow starts


def sample_arrows(flow: np.ndarray, valid: np.ndarray | None, rng: np.random.Generator, max_arrows: int,
                  frames: int, min_speed: float = MIN_SPEED) -> list:
    """Up to ``max_arrows`` (at least 1 when anything moves) arrows along ``flow`` ``(H, W, 2)`` px/frame.

    Starts are drawn uniformly among pixels with ``valid`` and speed > ``min_speed``; an arrow spans
    ``frames − 1`` frames of motion. Returns ``[]`` when nothing moves.
    """
    speed = np.linalg.norm(flow, axis=-1)
    ok = speed > min_speed
    if valid is not None:
        ok &= valid
    ys, xs = np.nonzero(ok)
    if len(ys) == 0:
        return []
    n = int(rng.integers(1, max_arrows + 1))
    picks = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
    out = []
    for i in picks:
        y, x = int(ys[i]), int(xs[i])
        dx, dy = (flow[y, x].astype(np.float64) * (frames - 1)).tolist()
        out.append(arrow_ops.Arrow(float(x), float(y), x + dx, y + dy, 1.0))
    return out


def training_pair(flow: np.ndarray, valid: np.ndarray | None, rng: np.random.Generator, max_arrows: int,
                  frames: int, sigma: float | None = None, r: float = arrow_ops.THRESHOLD):
    """``(field (H, W, 2) px/frame, arrows)``: the Gaussian field T sees for arrows sampled from ``flow``."""
    h, w = flow.shape[:2]
    arrows = sample_arrows(flow, valid, rng, max_arrows, frames)
    field = arrow_ops.dense_field(arrows, h, w, sigma=sigma, r=r) / np.float32(frames - 1)
    return field.astype(np.float32), arrows
