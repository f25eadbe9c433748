"""Eulerian cinemagraph: animate a still image along a static velocity field.

The field ``v`` (pixels per frame, ``(H, W, 2)``) describes how content at each *place* moves, not how a
given particle moves, so frame ``k`` is found by tracing each output pixel ``k`` steps back along ``−v``:

    s_0 = p,    s_{j+1} = s_j − v(s_j)    (v sampled bilinearly),    frame_k(p) = image(s_k)

Each trace step is one :func:`shanshui.flow.backward_warp` of the field by the current displacement
``d_j = s_j − p``, and the frame itself is ``backward_warp(image, d_k)``. A uniform field ``(1, 0)`` shifts
the picture right by ``k`` pixels at frame ``k``, and the optical flow from frame ``k`` to ``k + 1`` equals
``v`` where the field is smooth — the convention of :mod:`shanshui.flow`. Where moving content leaves a
place and nothing flows in, the image edge nearest along the trace is stretched (``border="replicate"``).
"""

from __future__ import annotations

import numpy as np

from ..errors import check
from ..flow import backward_warp


def displacements(velocity: np.ndarray, frames: int) -> np.ndarray:
    """``(frames, H, W, 2)`` source offsets ``d_k`` with ``frame_k(p) = image(p + d_k(p))``; ``d_0 = 0``."""
    velocity = np.asarray(velocity, np.float32)
    check(velocity.ndim == 3 and velocity.shape[-1] == 2, f"velocity must be (H, W, 2), got {velocity.shape}")
    check(isinstance(frames, (int, np.integer)) and frames >= 1, f"frames={frames} must be an integer >= 1")
    out = np.zeros((frames, *velocity.shape), np.float32)
    for k in range(1, frames):
        out[k] = out[k - 1] - backward_warp(velocity, out[k - 1])          # d_k = d_{k-1} − v(p + d_{k-1})
    return out


def animate(image: np.ndarray, velocity: np.ndarray, frames: int) -> np.ndarray:
    """``(frames, H, W, C)`` video of ``image`` (``(H, W, C)``, any dtype backward_warp takes) moving along
    ``velocity``; frame 0 is ``image`` itself."""
    image = np.asarray(image)
    check(image.shape[:2] == velocity.shape[:2],
          f"image size {image.shape[:2]} does not match the velocity field {velocity.shape[:2]}")
    d = displacements(velocity, frames)
    video = np.empty((frames, *image.shape), image.dtype)
    video[0] = image
    for k in range(1, frames):
        video[k] = backward_warp(image, d[k])
    return video
