"""Warping images with dense optical flow.

Flow convention (the whole of :mod:`shanshui.flow`): ``flow[..., 0]`` is dx and ``flow[..., 1]`` is dy, in
pixels, and a flow from frame ``a`` to frame ``b`` satisfies ``a(p) ≈ b(p + flow(p))``.

* :func:`backward_warp` pulls pixels: ``out(p) = image(p + flow(p))`` (bilinear), so
  ``backward_warp(b, flow_ab) ≈ a``.
* :func:`forward_splat` pushes values: every source pixel ``p`` deposits its value at ``p + flow(p)``
  with bilinear weights, and the caller gets the weighted sum and the weight mass per target pixel.
  SOFP uses it to carry flow vectors to the half-way frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import check

BORDERS = {
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT101,
    "zero": cv2.BORDER_CONSTANT,
    "constant": cv2.BORDER_CONSTANT,
}


def check_flow(flow: np.ndarray, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a ``(H, W, 2)`` flow (optionally of size ``hw``) and return it as float32."""
    flow = np.asarray(flow)
    check(flow.ndim == 3 and flow.shape[-1] == 2, f"flow must have shape (H, W, 2), got {flow.shape}")
    if hw is not None:
        check(tuple(flow.shape[:2]) == tuple(hw), f"flow size {flow.shape[:2]} does not match image size {tuple(hw)}")
    return flow.astype(np.float32, copy=False)


def sampling_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute sampling coordinates ``(x + dx, y + dy)`` for a flow, each ``(H, W)`` float32."""
    h, w = flow.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]  # (H, W)
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]  # (H, W)
    return xs, ys


def backward_warp(image: np.ndarray, flow: np.ndarray, border: str = "replicate") -> np.ndarray:
    """Bilinear resampling ``out(p) = image(p + flow(p))``.

    ``image`` is ``(H, W)`` or ``(H, W, C)``, uint8 or float; the result has the same shape and dtype.
    ``border``: ``replicate`` (clamp to the edge), ``reflect`` or ``zero`` for samples outside the image.
    """
    image = np.asarray(image)
    check(image.ndim in (2, 3), f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    check(border in BORDERS, f"border='{border}' is not supported; allowed: {', '.join(BORDERS)}")
    flow = check_flow(flow, image.shape[:2])
    xs, ys = sampling_maps(flow)
    dtype = image.dtype
    # OpenCV resamples float64 and int16 images in fixed point (sample positions rounded to 1/32 px); every
    # dtype other than uint8, uint16 and float32 therefore goes through float32
    work = image if dtype in (np.uint8, np.float32, np.uint16) else image.astype(np.float32)
    chans = 1 if work.ndim == 2 else work.shape[2]
    # cv2.remap handles at most 4 channels at once: warp wider images in slices of 4 channels.
    if chans <= 4:
        out = cv2.remap(work, xs, ys, cv2.INTER_LINEAR, borderMode=BORDERS[border], borderValue=0)
        out = out.reshape(work.shape)
    else:
        out = np.concatenate(
            [cv2.remap(np.ascontiguousarray(work[..., c : c + 4]), xs, ys, cv2.INTER_LINEAR,
                       borderMode=BORDERS[border], borderValue=0).reshape(*work.shape[:2], -1)
             for c in range(0, chans, 4)], axis=2)
    if work.dtype != dtype and np.issubdtype(dtype, np.integer):  # round like OpenCV does for uint8/uint16
        out = _round_into(out, dtype)
    return out.astype(dtype, copy=False)


def _round_into(values: np.ndarray, dtype) -> np.ndarray:
    """Round float ``values`` to the nearest integer and saturate them at ``dtype``'s limits (float32 rounds
    2**31 - 1 up to 2**31, which would wrap round to the other sign in int32)."""
    info = np.iinfo(dtype)
    hi = np.float64(info.max)
    if int(hi) > info.max:  # int64's largest value is not a float64: use the largest float64 below it
        hi = np.nextafter(hi, 0)
    return np.clip(np.rint(values.astype(np.float64)), np.float64(info.min), hi).astype(dtype)


def inside_mask(flow: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: where ``p + flow(p)`` lands inside the image (so a backward warp reads real data)."""
    flow = check_flow(flow)
    h, w = flow.shape[:2]
    xs, ys = sampling_maps(flow)
    return (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)


def forward_splat(values: np.ndarray, flow: np.ndarray, weights: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Push ``values`` from ``p`` to ``p + flow(p)`` with bilinear kernels.

    ``values`` ``(H, W, C)`` float, ``flow`` ``(H, W, 2)``, optional per-source ``weights`` ``(H, W)`` >= 0.
    Returns ``(acc (H, W, C), mass (H, W))``: the weighted sums and the summed weights landing on each
    target pixel; ``acc / mass`` is the splatted average where ``mass > 0``. Targets outside the frame
    are dropped.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 2:
        values = values[..., None]
    h, w, c = values.shape
    flow = check_flow(flow, (h, w))
    wsrc = np.ones((h, w), np.float32) if weights is None else np.asarray(weights, np.float32)
    xs, ys = sampling_maps(flow)  # (H, W) target coordinates
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0).ravel(), (ys - y0).ravel()  # (HW,)
    x0, y0 = x0.astype(np.int64).ravel(), y0.astype(np.int64).ravel()
    # the four bilinear corners of every source pixel, stacked: (4·HW,)
    tx = np.concatenate([x0, x0 + 1, x0, x0 + 1])
    ty = np.concatenate([y0, y0, y0 + 1, y0 + 1])
    kw = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(wsrc.ravel(), 4)
    ok = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    kw = np.where(ok, kw, 0.0)  # drop targets outside the frame
    idx = np.where(ok, ty * w + tx, 0)
    mass = np.bincount(idx, weights=kw, minlength=h * w)
    flat_vals = np.tile(values.reshape(-1, c), (4, 1))  # (4·HW, C)
    acc = np.stack([np.bincount(idx, weights=kw * flat_vals[:, ch], minlength=h * w) for ch in range(c)], -1)
    return acc.reshape(h, w, c).astype(np.float32), mass.reshape(h, w).astype(np.float32)
