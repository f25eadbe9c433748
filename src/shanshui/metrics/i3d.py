"""Inception-I3D (Carreira & Zisserman) in plain torch, with the parameter names of the widely used
``pytorch_i3d.py`` port, so that the TATS / cd-fvd ``i3d_pretrained_400.pt`` state dict loads unchanged.

Every convolution is a ``Unit3D`` (Conv3d without bias, BatchNorm3d eps 1e-3, ReLU) with TensorFlow "SAME"
padding computed from the input size; max-pools pad the same way (with zeros, as the port does). The head
averages a 2×7×7 window, applies a 1×1×1 conv with bias, squeezes space and averages the remaining time
steps: ``(B, 3, T, 224, 224)`` in [-1, 1] -> ``(B, num_classes)`` logits (for 16 frames there is one
time step left, so the average is the identity).

``width`` scales every channel count (1.0 for the real network); it exists so that tests can save a
small stand-in in the real key layout. :func:`i3d_from_state_dict` reads ``width`` and ``num_classes``
from the tensor shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShanshuiError

# name -> output channels of the six branches (1x1 | 3x3 reduce, 3x3 | 3x3 reduce, 3x3 | pool proj)
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
FIRST_KEY = "Conv3d_1a_7x7.conv3d.weight"
LOGITS_KEY = "logits.conv3d.weight"


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), activation: bool = True,
                 batch_norm: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x):
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    def __init__(self, cin: int, c: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, num_classes)`` time-averaged logits (see the module doc)."""

    def __init__(self, num_classes: int = 400, width: float = 1.0):
        super().__init__()
        ch = lambda n: max(1, int(round(n * width)))  # noqa: E731
        self.num_classes, self.width = num_classes, width
        self.Conv3d_1a_7x7 = Unit3D(3, ch(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64))
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        cin = ch(192)
        for name, c in MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            c = tuple(ch(n) for n in c)
            setattr(self, name, InceptionModule(cin, c))
            cin = c[0] + c[2] + c[4] + c[5]
        self.logits = Unit3D(cin, num_classes, activation=False, batch_norm=False, bias=True)
        self.order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                      "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                      "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        t = x.shape[2]
        x = F.avg_pool3d(x, (min(2, t), 7, 7), stride=1)  # the port's AvgPool3d([2, 7, 7]); dropout is a no-op
        x = self.logits(x)  # (B, C, T', H', W'), H' = W' = 1 at 224 px
        return x.mean(dim=(3, 4)).mean(dim=2)


def i3d_from_state_dict(state: dict, source: str = "state dict") -> InceptionI3d:
    """Build an :class:`InceptionI3d` that fits ``state`` (width and class count read from its shapes)
    and load it strictly (BatchNorm ``num_batches_tracked`` may be absent)."""
    if FIRST_KEY not in state or LOGITS_KEY not in state:
        raise ShanshuiError(f"{source} is not an Inception-I3D state dict (no '{FIRST_KEY}' / '{LOGITS_KEY}')")
    width = state[FIRST_KEY].shape[0] / 64
    model = InceptionI3d(num_classes=int(state[LOGITS_KEY].shape[0]), width=width)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ShanshuiError(f"{source} does not fit Inception-I3D: {str(exc).splitlines()[-1].strip()}") from exc
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ShanshuiError(f"{source} does not fit Inception-I3D: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
