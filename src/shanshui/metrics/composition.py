"""Composition and detail measures of ink-wash frames: red sun discs and image-gradient energy.

The procedural scenes paint a red sun as one cinnabar disc (RGB ≈ (189, 36, 26), mottled, partly veiled by
mist); nothing else in them is saturated red. A frame's *red regions* are the connected components (8-way)
of pixels whose red channel exceeds both others by at least :data:`RED_MARGIN` and is itself at least
:data:`RED_MIN`, keeping components of at least :data:`MIN_AREA_FRACTION` of the frame (at 128 px: 8
pixels), so that a stray reddish pixel of paper grain is not a sun. A frame with a red sun should show
exactly one region; a frame without one, none.

*Gradient energy* is the mean of ``(∂x L)² + (∂y L)²`` over the frame, with ``L`` the luminance in [0, 1]
and forward differences: a soft, washed-out frame has a fraction of the energy of a crisp one.
"""

from __future__ import annotations

import numpy as np

RED_MARGIN = 45          # R − max(G, B), 0..255
RED_MIN = 110            # R, 0..255
MIN_AREA_FRACTION = 8 / (128 * 128)


def _uint8(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames of shape {frames.shape} must be (H, W, 3) or (F, H, W, 3)")
    return frames


def red_mask(frame: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` mask of saturated red pixels of one uint8 ``(H, W, 3)`` frame."""
    f = frame.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (r >= RED_MIN) & (r - np.maximum(g, b) >= RED_MARGIN)


def red_regions(frame: np.ndarray, min_area_fraction: float = MIN_AREA_FRACTION) -> int:
    """How many red regions (connected components no smaller than the area threshold) a frame shows."""
    import cv2

    frame = _uint8(frame)[0]
    mask = red_mask(frame).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = max(1, int(round(min_area_fraction * mask.size)))
    return int(np.sum(stats[1:, cv2.CC_STAT_AREA] >= min_area))


def red_region_counts(frames: np.ndarray) -> np.ndarray:
    """:func:`red_regions` of every frame of a clip ``(F, H, W, 3)``: an int array ``(F,)``."""
    return np.array([red_regions(f) for f in _uint8(frames)], dtype=np.int64)


def gradient_energy(frames: np.ndarray) -> float:
    """Mean squared luminance gradient of a frame or clip (uint8 or float in [0, 1])."""
    x = _uint8(frames).astype(np.float64) / 255.0
    lum = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]          # (F, H, W)
    dx = np.diff(lum, axis=2)[:, :-1, :]
    dy = np.diff(lum, axis=1)[:, :, :-1]
    return float(np.mean(dx ** 2 + dy ** 2))
