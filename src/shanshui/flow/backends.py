"""Dense optical-flow backends behind one function, :func:`estimate_flow`.

=============  ===================================================================================
``dis``        OpenCV DIS (dense inverse search) — default: fast, robust to brightness changes.
``farneback``  OpenCV Farneback polynomial expansion (the official NADM demo's choice).
``tvl1``       OpenCV contrib Dual TV-L1 (``cv2.optflow``; needs opencv-contrib-python[-headless]).
``raft``       RAFT (Teed & Deng 2020) in plain torch, from a local weights file (``weights=PATH``).
=============  ===================================================================================

Every backend returns float32 ``(H, W, 2)`` forward flow ``a -> b`` with ``a(p) ≈ b(p + flow(p))``.
"""

from __future__ import annotations

import inspect
from typing import Callable

import cv2
import numpy as np

from ..errors import ShanshuiError, check

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB or ``(H, W)`` gray, uint8 or float in [0, 1] -> ``(H, W)`` uint8 gray."""
    image = np.asarray(image)
    check(image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3)),
          f"frame must have shape (H, W) or (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        check(np.issubdtype(image.dtype, np.floating), f"frame dtype {image.dtype} is not supported (uint8 or float)")
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image)


def _to_rgb_u8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image


def flow_dis(a: np.ndarray, b: np.ndarray, preset: str = "medium", finest_scale: int | None = None) -> np.ndarray:
    """OpenCV DIS flow. ``preset``: ultrafast, fast or medium (default: medium)."""
    check(preset in DIS_PRESETS, f"DIS preset '{preset}' is not known; allowed: {', '.join(DIS_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    if finest_scale is not None:
        dis.setFinestScale(int(finest_scale))
    return dis.calc(to_gray_u8(a), to_gray_u8(b), None)


def flow_farneback(a: np.ndarray, b: np.ndarray, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15,
                   iterations: int = 3, poly_n: int = 5, poly_sigma: float = 1.2) -> np.ndarray:
    """OpenCV Farneback flow with OpenCV's commonly used parameters."""
    return cv2.calcOpticalFlowFarneback(to_gray_u8(a), to_gray_u8(b), None, pyr_scale, levels, winsize,
                                        iterations, poly_n, poly_sigma, 0)


def flow_tvl1(a: np.ndarray, b: np.ndarray, **params) -> np.ndarray:
    """OpenCV contrib Dual TV-L1 flow (slow but accurate); ``params`` go to its setters, e.g. ``lambda_=0.15``."""
    optflow = getattr(cv2, "optflow", None)
    if optflow is None or not hasattr(optflow, "DualTVL1OpticalFlow_create"):
        raise ShanshuiError("flow method 'tvl1' needs OpenCV's contrib modules (cv2.optflow): "
                            "pip install opencv-contrib-python-headless (instead of opencv-python-headless)")
    tvl1 = optflow.DualTVL1OpticalFlow_create()
    for name, value in params.items():
        setter = getattr(tvl1, "set" + "".join(p.capitalize() for p in name.rstrip("_").split("_")), None)
        check(setter is not None, f"TV-L1 has no parameter '{name}'")
        setter(value)
    return tvl1.calc(to_gray_u8(a), to_gray_u8(b), None)


def flow_raft(a: np.ndarray, b: np.ndarray, weights: str | None = None, iters: int = 12,
              device: str = "cpu") -> np.ndarray:
    """RAFT flow from a local weights file (official ``raft-*.pth`` layout, or the same keys in safetensors)."""
    if weights is None:
        raise ShanshuiError("flow method 'raft' needs a local weights file: pass weights=PATH "
                            "(CLI: --raft-weights PATH), e.g. the official raft-things.pth")
    from .raft import raft_flow

    return raft_flow(_to_rgb_u8(a), _to_rgb_u8(b), weights, iters=iters, device=device)


BACKENDS: dict[str, Callable[..., np.ndarray]] = {
    "dis": flow_dis,
    "farneback": flow_farneback,
    "tvl1": flow_tvl1,
    "raft": flow_raft,
}


def available_backends() -> dict[str, str]:
    """``name -> "ok"`` or the reason it cannot run here (without loading any weights)."""
    out = {"dis": "ok", "farneback": "ok"}
    optflow = getattr(cv2, "optflow", None)
    out["tvl1"] = "ok" if optflow is not None and hasattr(optflow, "DualTVL1OpticalFlow_create") else \
        "needs opencv-contrib-python-headless"
    try:
        import torch  # noqa: F401

        out["raft"] = "ok (needs weights=PATH)"
    except ImportError:
        out["raft"] = "needs torch"
    return out


def estimate_flow(a: np.ndarray, b: np.ndarray, method: str = "dis", **opts) -> np.ndarray:
    """Dense forward flow from frame ``a`` to frame ``b``: float32 ``(H, W, 2)`` (dx, dy) in pixels.

    Convention: ``a(p) ≈ b(p + flow(p))``, so ``backward_warp(b, flow) ≈ a``. Frames are ``(H, W, 3)`` RGB
    or ``(H, W)`` gray, uint8 or float in [0, 1], of equal size. ``opts`` go to the backend (e.g.
    ``preset="fast"`` for DIS, ``weights=PATH, iters=12`` for RAFT).
    """
    check(method in BACKENDS, f"flow method '{method}' is not known; allowed: {', '.join(BACKENDS)}")
    a, b = np.asarray(a), np.asarray(b)
    check(a.shape == b.shape, f"frames must have the same shape, got {a.shape} and {b.shape}")
    check(a.ndim >= 2 and a.shape[0] >= 2 and a.shape[1] >= 2, f"frames of shape {a.shape} are too small for flow")
    fn = BACKENDS[method]
    if method != "tvl1":  # tvl1 forwards arbitrary names to OpenCV setters and checks them itself
        allowed = [n for n in inspect.signature(fn).parameters if n not in ("a", "b")]
        unknown = sorted(set(opts) - set(allowed))
        check(not unknown, f"flow method '{method}' has no option(s) {unknown}; allowed: {allowed}")
    flow = fn(a, b, **opts)
    return np.ascontiguousarray(flow, dtype=np.float32)
