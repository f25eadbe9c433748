"""Frame and video metrics as pure functions on numpy arrays.

* :func:`psnr`, :func:`ssim` — fidelity to a reference (same definitions as scikit-image's
  ``peak_signal_noise_ratio`` and ``structural_similarity`` with its defaults: 7×7 uniform window,
  sample covariance, K1 = 0.01, K2 = 0.03, mean over channels; a video is the mean over its frames).
* :func:`motion_magnitude` — SPEC §2.3 ``M_s``: mean length (px) of the flow between consecutive frames.
* :func:`flicker_index` — CCDM's flicker measure: the same mean flow length, normalised by the frame
  diagonal and given in percent (lower = calmer video).
* :func:`warping_error` — temporal-consistency error: mean squared difference (on a [0, 1] scale)
  between each frame and its successor warped back onto it, over pixels whose flow passes a
  forward/backward check (so occlusions do not count).

The flow-based metrics take the frames and, optionally, precomputed flows ``(F-1, H, W, 2)`` (frame k
to k+1); otherwise they estimate them with :func:`shanshui.flow.estimate_flow` (``flow=`` backend).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import check


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    check(a.shape == b.shape, f"inputs must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def psnr(a, b, data_range: float = 255) -> float:
    """Peak signal-to-noise ratio in dB over all elements; ``inf`` for identical inputs."""
    a, b = _pair(a, b)
    check(data_range > 0, f"data_range={data_range} must be > 0")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def _ssim_2d(x: np.ndarray, y: np.ndarray, data_range: float, win: int = 7) -> float:
    """SSIM of two float64 (H, W) images (scikit-image defaults)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    box = lambda im: cv2.boxFilter(im, cv2.CV_64F, (win, win), normalize=True, borderType=cv2.BORDER_REFLECT)
    n = win * win
    cov = n / (n - 1.0)  # sample covariance, as scikit-image
    ux, uy = box(x), box(y)
    vx = cov * (box(x * x) - ux * ux)
    vy = cov * (box(y * y) - uy * uy)
    vxy = cov * (box(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))  # (H, W)
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(a, b, data_range: float | None = None) -> float:
    """Mean SSIM. Inputs ``(H, W)``, ``(H, W, C)`` or a video ``(F, H, W, C)`` (mean over frames).

    ``data_range`` defaults to 255 for uint8 and 1.0 for float inputs.
    """
    a, b = _pair(a, b)
    check(a.ndim in (2, 3, 4), f"ssim expects (H, W), (H, W, C) or (F, H, W, C), got {a.shape}")
    if data_range is None:
        data_range = 255.0 if a.dtype == np.uint8 else 1.0
    if a.ndim == 4:
        return float(np.mean([ssim(x, y, data_range) for x, y in zip(a, b)]))
    check(min(a.shape[:2]) >= 7, f"ssim needs images of at least 7x7, got {a.shape[:2]}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        return _ssim_2d(a, b, data_range)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c], data_range) for c in range(a.shape[2])]))


# ------------------------------------------------------------------------------------ flow-based
def _frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    check(arr.ndim == 4 and arr.shape[-1] in (1, 3), f"frames must have shape (F, H, W, 3), got {arr.shape}")
    check(len(arr) >= 2, f"a flow metric needs at least 2 frames, got {len(arr)}")
    return arr


def consecutive_flows(frames, flow: str = "dis", **opts) -> np.ndarray:
    """Flows from each frame to the next: float32 ``(F-1, H, W, 2)``."""
    from ..flow import estimate_flow

    arr = _frames(frames)
    return np.stack([estimate_flow(arr[k], arr[k + 1], flow, **opts) for k in range(len(arr) - 1)])


def _flows(frames, flows, flow) -> np.ndarray:
    if flows is None:
        return consecutive_flows(frames, flow)
    flows = np.asarray(flows, np.float32)
    arr = np.asarray(frames)
    check(flows.ndim == 4 and flows.shape[-1] == 2 and len(flows) == len(arr) - 1 and flows.shape[1:3] == arr.shape[1:3],
          f"flows must have shape (F-1, H, W, 2) = ({len(arr) - 1}, {arr.shape[1]}, {arr.shape[2]}, 2), got {flows.shape}")
    return flows


def motion_magnitude(frames, flows=None, flow: str = "dis") -> float:
    """SPEC §2.3 ``M_s = (1/N) Σ_k mean_p |F_{k→k+1}(p)|`` in pixels per frame."""
    _frames(frames)
    f = _flows(frames, flows, flow)
    return float(np.mean(np.linalg.norm(f, axis=-1)))


def flicker_index(frames, flows=None, flow: str = "dis") -> float:
    """CCDM flicker index: mean flow length between consecutive frames / frame diagonal, in percent."""
    arr = _frames(frames)
    h, w = arr.shape[1:3]
    return 100.0 * motion_magnitude(arr, flows, flow) / float(np.hypot(h, w))


def warping_error(frames, flow: str = "dis") -> float:
    """Mean squared error ([0, 1] scale) between frame k and frame k+1 warped onto it, over non-occluded
    pixels (forward/backward flow check), averaged over consecutive pairs."""
    from ..flow import backward_warp, estimate_flow

    arr = _frames(frames)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    errs = []
    for k in range(len(arr) - 1):
        a, b = arr[k], arr[k + 1]
        fab, fba = estimate_flow(a, b, flow), estimate_flow(b, a, flow)
        back = backward_warp(fba, fab)  # (H, W, 2)
        err = ((fab + back) ** 2).sum(-1)
        ok = err <= 0.01 * ((fab**2).sum(-1) + (back**2).sum(-1)) + 0.5  # (H, W) non-occluded
        diff = (a.astype(np.float32) - backward_warp(b.astype(np.float32), fab)) / scale  # (H, W, C)
        errs.append(float((diff[ok] ** 2).mean()) if ok.any() else 0.0)
    return float(np.mean(errs))
