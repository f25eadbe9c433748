"""Inception-v3 as pytorch-fid builds it (``fid_inception_v3``), in plain torch with torchvision's
parameter names, so that ``pt_inception-2015-12-05-*.pth`` loads without torchvision.

pytorch-fid patches torchvision's Inception3 to match the 2015 TensorFlow graph: the average pools in the
A, C and first E blocks do not count padding, the last E block max-pools its pool branch, and the
classifier has 1008 outputs. :meth:`FIDInceptionV3.forward` takes ``(B, 3, 299, 299)`` already
normalised to [-1, 1] and returns the 2048-d pool features and the 1008 logits *without* the fc bias
(``no_output_bias``, as StyleGAN2-ADA and torch-fidelity compute the Inception Score).

``width`` scales every channel count (1.0 for the real network) so that tests can save a small stand-in
in the real key layout; :func:`inception_from_state_dict` reads it and the class count from the shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShanshuiError

FIRST_KEY = "Conv2d_1a_3x3.conv.weight"
FC_KEY = "fc.weight"


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin, pool, ch):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, ch(64), 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(cin, ch(48), 1), BasicConv2d(ch(48), ch(64), 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, ch(64), 1)
        self.branch3x3dbl_2 = BasicConv2d(ch(64), ch(96), 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(ch(96), ch(96), 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool, 1)
        self.out = ch(64) + ch(64) + ch(96) + pool

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin, ch):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, ch(384), 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, ch(64), 1)
        self.branch3x3dbl_2 = BasicConv2d(ch(64), ch(96), 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(ch(96), ch(96), 3, stride=2)
        self.out = ch(384) + ch(96) + cin

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7, ch):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, ch(192), 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, ch(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, ch(192), (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, ch(192), 1)
        self.out = 4 * ch(192)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin, ch):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv2d(cin, ch(192), 1), BasicConv2d(ch(192), ch(320), 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, ch(192), 1)
        self.branch7x7x3_2 = BasicConv2d(ch(192), ch(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(ch(192), ch(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(ch(192), ch(192), 3, stride=2)
        self.out = ch(320) + ch(192) + cin

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, ch, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, ch(320), 1)
        self.branch3x3_1 = BasicConv2d(cin, ch(384), 1)
        self.branch3x3_2a = BasicConv2d(ch(384), ch(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(ch(384), ch(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, ch(448), 1)
        self.branch3x3dbl_2 = BasicConv2d(ch(448), ch(384), 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(ch(384), ch(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(ch(384), ch(384), (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, ch(192), 1)
        self.out = ch(320) + 4 * ch(384) + ch(192)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's Inception-v3 (see the module doc): normalised images -> (pool features, logits)."""

    def __init__(self, num_classes: int = 1008, width: float = 1.0):
        super().__init__()
        ch = lambda n: max(1, int(round(n * width)))  # noqa: E731
        self.width = width
        self.Conv2d_1a_3x3 = BasicConv2d(3, ch(32), 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(ch(32), ch(32), 3)
        self.Conv2d_2b_3x3 = BasicConv2d(ch(32), ch(64), 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(ch(64), ch(80), 1)
        self.Conv2d_4a_3x3 = BasicConv2d(ch(80), ch(192), 3)
        self.Mixed_5b = InceptionA(ch(192), ch(32), ch)
        self.Mixed_5c = InceptionA(self.Mixed_5b.out, ch(64), ch)
        self.Mixed_5d = InceptionA(self.Mixed_5c.out, ch(64), ch)
        self.Mixed_6a = InceptionB(self.Mixed_5d.out, ch)
        self.Mixed_6b = InceptionC(self.Mixed_6a.out, ch(128), ch)
        self.Mixed_6c = InceptionC(self.Mixed_6b.out, ch(160), ch)
        self.Mixed_6d = InceptionC(self.Mixed_6c.out, ch(160), ch)
        self.Mixed_6e = InceptionC(self.Mixed_6d.out, ch(192), ch)
        self.Mixed_7a = InceptionD(self.Mixed_6e.out, ch)
        self.Mixed_7b = InceptionE(self.Mixed_7a.out, ch, max_pool=False)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out, ch, max_pool=True)
        self.fc = nn.Linear(self.Mixed_7c.out, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        feats = x.mean(dim=(2, 3))
        return feats, feats @ self.fc.weight.T


def inception_from_state_dict(state: dict, source: str = "state dict") -> FIDInceptionV3:
    """Build a :class:`FIDInceptionV3` that fits ``state`` and load it (``num_batches_tracked`` optional;
    torchvision's ``AuxLogits.*`` are ignored)."""
    if FIRST_KEY not in state or FC_KEY not in state:
        raise ShanshuiError(f"{source} is not an Inception-v3 state dict (no '{FIRST_KEY}' / '{FC_KEY}')")
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    model = FIDInceptionV3(num_classes=int(state[FC_KEY].shape[0]), width=state[FIRST_KEY].shape[0] / 32)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ShanshuiError(f"{source} does not fit Inception-v3: {str(exc).splitlines()[-1].strip()}") from exc
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ShanshuiError(f"{source} does not fit Inception-v3: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
