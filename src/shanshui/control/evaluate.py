"""Measuring an output video against the painting and the requested motion.

* :func:`control_errors` — estimate the optical flow between consecutive output frames
  (:func:`shanshui.flow.estimate_flow`) and compare it with the requested velocity field ``v`` (px/frame):
  ``epe`` — mean endpoint error ``|F_k(p) − v(p)|`` over the arrows' region (where ``v ≠ 0``) and all
  frame pairs; ``direction`` — mean cosine between the clip's mean flow and ``v`` there (1 = same direction,
  0 = unrelated or still, −1 = opposite); ``speed_ratio`` — the mean flow's component along ``v``
  divided by ``|v|``; ``still_motion`` — mean flow length (px/frame) inside the still mask.
* :func:`style_drift` — how far each frame's look wanders from the painting: ``colour`` is the CIE-Lab
  distance (ΔE76) between the frame's mean colour and the painting's; ``texture`` is ``|log(g_k / g_0)|``
  with ``g`` the mean Sobel gradient magnitude of the gray image (brush-stroke energy). Both are averaged
  over frames (frame 0 included).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import check


def _u8(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    return arr


def control_errors(frames, velocity: np.ndarray, still: np.ndarray | None = None, flows=None,
                   flow: str = "dis") -> dict:
    """See the module docstring. ``frames`` (F, H, W, 3); ``velocity`` (H, W, 2); ``still`` bool (H, W)."""
    from ..metrics import consecutive_flows

    arr = _u8(frames)
    check(arr.ndim == 4 and len(arr) >= 2, f"frames must be (F>=2, H, W, 3), got {arr.shape}")
    check(velocity.shape == (*arr.shape[1:3], 2),
          f"velocity {velocity.shape} does not match frames {arr.shape}")
    f = consecutive_flows(arr, flow) if flows is None else np.asarray(flows, np.float32)   # (F-1, H, W, 2)
    out = {"motion": float(np.linalg.norm(f, axis=-1).mean())}
    speed = np.linalg.norm(velocity, axis=-1)                                               # (H, W)
    region = speed > 0
    if region.any():
        out["epe"] = float(np.linalg.norm(f - velocity[None], axis=-1)[:, region].mean())
        mean_flow = f.mean(axis=0)                                                          # (H, W, 2)
        mf, v = mean_flow[region], velocity[region]                                         # (n, 2)
        along = (mf * v).sum(-1) / speed[region]
        norm = np.linalg.norm(mf, axis=-1)
        cos = np.where(norm > 1e-6, along / np.maximum(norm, 1e-6), 0.0)
        out["direction"] = float(cos.mean())
        out["speed_ratio"] = float((along / speed[region]).mean())
    if still is not None and still.any():
        check(still.shape == arr.shape[1:3],
              f"still mask {still.shape} does not match frames {arr.shape[1:3]}")
        out["still_motion"] = float(np.linalg.norm(f, axis=-1)[:, still].mean())
    return out


def _stats(image: np.ndarray) -> tuple[np.ndarray, float]:
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float64)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    gx = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)
    return lab.reshape(-1, 3).mean(0), float(np.hypot(gx, gy).mean())


def style_drift(frames, painting: np.ndarray) -> dict:
    """Colour (ΔE76 of mean Lab) and texture (|log gradient-energy ratio|) drift of frames vs ``painting``."""
    arr, ref = _u8(frames), _u8(painting[None])[0]
    check(arr.shape[1:] == ref.shape, f"frames {arr.shape[1:]} and painting {ref.shape} differ in size")
    lab0, g0 = _stats(ref)
    colour, texture = [], []
    for frame in arr:
        lab, g = _stats(frame)
        colour.append(float(np.linalg.norm(lab - lab0)))
        texture.append(float(abs(np.log((g + 1e-6) / (g0 + 1e-6)))))
    return {"colour": float(np.mean(colour)), "colour_last": colour[-1], "texture": float(np.mean(texture)),
            "texture_last": texture[-1]}
