"""LPIPS (Zhang et al. 2018, version 0.1, AlexNet) in plain torch, without torchvision.

The two parts come from files the user has: the AlexNet ``features`` weights (torchvision's
``alexnet-owt-7be5be79.pth`` state dict, or any state dict with ``features.{0,3,6,8,10}.weight/bias``)
and the five learned 1x1 linear layers that the ``lpips`` wheel ships as ``lpips/weights/v0.1/alex.pth``
(read from the installed package folder without importing it, because ``import lpips`` imports
torchvision). Install the wheel with ``pip install --no-deps lpips==0.1.4``, or pass the file itself.

Distance of two images in [-1, 1]: shift and scale the channels (the ``ScalingLayer``), take the ReLU
outputs after AlexNet conv 1..5, unit-normalise each feature vector over channels (eps 1e-10), square the
difference, weight the channels with the linear layer, average over space, sum over the five layers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShanshuiError, check

CHANNELS = (64, 192, 384, 256, 256)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def default_linear_weights() -> Path:
    """``lpips/weights/v0.1/alex.pth`` of the installed ``lpips`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ShanshuiError("LPIPS needs the linear-layer weights of the 'lpips' wheel: run "
                            "'pip install --no-deps lpips==0.1.4' (or pass the alex.pth file explicitly)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    check(path.is_file(), f"the installed lpips package has no '{path}'")
    return path


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet ``features`` (layer indices 0..12), returning the five LPIPS taps."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))

    def forward(self, x):
        taps = []
        for lo, hi in ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)):
            x = self.features[lo:hi](x)
            taps.append(x)
        return taps


class LPIPS(nn.Module):
    """``forward(a, b)`` on ``(N, 3, H, W)`` in [-1, 1] -> ``(N,)`` distances."""

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.net((a - self.shift) / self.scale)
        fb = self.net((b - self.shift) / self.scale)
        total = 0.0
        for x, y, w in zip(fa, fb, self.lins):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((x - y) ** 2, w).mean(dim=(2, 3))
        return total[:, 0]


def _load_state(path: Path, flag: str) -> dict:
    from .networks import read_weights, _describe

    kind, obj = read_weights(path, flag)
    if kind != "state_dict":
        raise ShanshuiError(f"{flag} '{path}' is {_describe(kind, obj)}, not a state dict")
    return obj


def load_lpips(alexnet_path, linear_path=None) -> LPIPS:
    """LPIPS-AlexNet from the user's AlexNet state dict and the lpips v0.1 linear weights."""
    alexnet_path = Path(alexnet_path)
    state = _load_state(alexnet_path, "--lpips-alexnet")
    model = LPIPS()
    wanted = {k: v for k, v in model.net.state_dict().items()}
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    if set(feats) != set(wanted):
        from .networks import _describe

        raise ShanshuiError(f"--lpips-alexnet '{alexnet_path}' is {_describe('state_dict', state)}, not an "
                            f"AlexNet state dict (needs {sorted(wanted)[:2]} ...)")
    bad = [k for k in wanted if tuple(feats[k].shape) != tuple(wanted[k].shape)]
    check(not bad, f"--lpips-alexnet '{alexnet_path}': {bad[0] if bad else ''} has shape "
                   f"{tuple(feats[bad[0]].shape) if bad else ''}, AlexNet needs {tuple(wanted[bad[0]].shape) if bad else ''}")
    model.net.load_state_dict(feats)
    linear_path = Path(linear_path) if linear_path else default_linear_weights()
    lin = _load_state(linear_path, "LPIPS linear weights")
    for i, c in enumerate(CHANNELS):
        key = f"lin{i}.model.1.weight"
        check(key in lin and tuple(lin[key].shape) == (1, c, 1, 1),
              f"LPIPS linear weights '{linear_path}' lack '{key}' of shape (1, {c}, 1, 1)")
        model.lins[i].data.copy_(lin[key].float())
    return model.eval()


@torch.no_grad()
def lpips_frames(model: LPIPS, frames_a, frames_b, batch: int = 16) -> np.ndarray:
    """Per-frame LPIPS of two uint8 ``(N, H, W, 3)`` frame stacks of equal shape (scaled to [-1, 1])."""
    a, b = np.asarray(frames_a), np.asarray(frames_b)
    check(a.shape == b.shape and a.ndim == 4 and a.shape[-1] == 3,
          f"LPIPS needs two frame stacks of the same shape (N, H, W, 3), got {a.shape} and {b.shape}")
    out = []
    for i in range(0, len(a), batch):
        ta = torch.from_numpy(np.ascontiguousarray(a[i : i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        tb = torch.from_numpy(np.ascontiguousarray(b[i : i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        dev = model.shift.device
        out.append(model(ta.to(dev), tb.to(dev)).double().cpu().numpy())
    return np.concatenate(out)
