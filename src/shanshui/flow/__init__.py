"""Optical flow, warping and SOFP frame interpolation.

* :func:`estimate_flow` — dense flow between two frames (OpenCV DIS / Farneback / TV-L1, or RAFT from
  local weights); float32 ``(H, W, 2)``, convention ``a(p) ≈ b(p + flow(p))``.
* :func:`backward_warp`, :func:`forward_splat` — resampling with a flow.
* :func:`interpolate` — SOFP interpolation of a clip (N -> 2N-1, or 4×/8× by repeated doubling).
* :func:`projection_ratio` — the per-pixel projection ratio ``D_t`` of SPEC eq. 14.
"""

from .backends import BACKENDS, available_backends, estimate_flow
from .sofp import METHODS, interpolate, midpoint, projection_ratio, projection_reliability
from .warp import backward_warp, forward_splat, inside_mask

__all__ = [
    "BACKENDS",
    "METHODS",
    "available_backends",
    "backward_warp",
    "estimate_flow",
    "forward_splat",
    "inside_mask",
    "interpolate",
    "midpoint",
    "projection_ratio",
    "projection_reliability",
]
