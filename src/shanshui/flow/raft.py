"""RAFT optical flow (Teed & Deng, ECCV 2020) in plain torch — no torchvision.

The module tree and parameter names follow the official ``princeton-vl/RAFT`` release (full model, not
RAFT-small), so its checkpoints (``raft-things.pth``, ``raft-sintel.pth`` …; saved from
``nn.DataParallel``, hence the ``module.`` prefix, which is accepted and stripped) load strictly. Weights
are read with ``torch.load(weights_only=True)`` or from a ``.safetensors`` file with the same keys.

Pieces: two convolutional encoders (features with instance norm, context with batch norm) at 1/8
resolution; an all-pairs correlation volume pooled into a 4-level pyramid; a convolutional GRU that
looks up a 9×9 window of every level around the current match and predicts flow updates; a learned
convex 8× upsampling of the final flow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ShanshuiError, check

try:  # torch is a hard dependency of shanshui, but keep the import error readable
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as _exc:  # pragma: no cover
    raise ShanshuiError("flow method 'raft' needs torch: pip install torch") from _exc

HIDDEN_DIM = 128
CONTEXT_DIM = 128
CORR_LEVELS = 4
CORR_RADIUS = 4


def _norm(kind: str, planes: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(num_groups=groups, num_channels=planes)
    if kind == "batch":
        return nn.BatchNorm2d(planes)
    if kind == "instance":
        return nn.InstanceNorm2d(planes)
    return nn.Sequential()


class ResidualBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm_fn: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = _norm(norm_fn, planes, planes // 8)
        self.norm2 = _norm(norm_fn, planes, planes // 8)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm_fn, planes, planes // 8)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class BasicEncoder(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, output_dim, H/8, W/8)."""

    def __init__(self, output_dim: int, norm_fn: str):
        super().__init__()
        self.norm1 = _norm(norm_fn, 64, 8)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64, norm_fn, 1), ResidualBlock(64, 64, norm_fn, 1))
        self.layer2 = nn.Sequential(ResidualBlock(64, 96, norm_fn, 2), ResidualBlock(96, 96, norm_fn, 1))
        self.layer3 = nn.Sequential(ResidualBlock(96, 128, norm_fn, 2), ResidualBlock(128, 128, norm_fn, 1))
        self.conv2 = nn.Conv2d(128, output_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 128, H/8, W/8)
        return self.conv2(x)  # (B, out, H/8, W/8)


class BasicMotionEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        cor_planes = CORR_LEVELS * (2 * CORR_RADIUS + 1) ** 2
        self.convc1 = nn.Conv2d(cor_planes, 256, 1, padding=0)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))  # (B, 192, h, w)
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))  # (B, 64, h, w)
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))  # (B, 126, h, w)
        return torch.cat([out, flow], dim=1)  # (B, 128, h, w)


class SepConvGRU(nn.Module):
    def __init__(self, hidden_dim: int = 128, input_dim: int = 192 + 128):
        super().__init__()
        c = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(c, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(c, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(c, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(c, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(c, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(c, hidden_dim, (5, 1), padding=(2, 0))

    @staticmethod
    def _step(h, x, convz, convr, convq):
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(convz(hx))
        r = torch.sigmoid(convr(hx))
        q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self._step(h, x, self.convz1, self.convr1, self.convq1)  # horizontal pass
        return self._step(h, x, self.convz2, self.convr2, self.convq2)  # vertical pass


class FlowHead(nn.Module):
    def __init__(self, input_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


class BasicUpdateBlock(nn.Module):
    def __init__(self, hidden_dim: int = HIDDEN_DIM):
        super().__init__()
        self.encoder = BasicMotionEncoder()
        self.gru = SepConvGRU(hidden_dim=hidden_dim, input_dim=128 + hidden_dim)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=256)
        self.mask = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(256, 64 * 9, 1, padding=0))

    def forward(self, net, inp, corr, flow):
        motion = self.encoder(flow, corr)  # (B, 128, h, w)
        net = self.gru(net, torch.cat([inp, motion], dim=1))  # (B, hidden, h, w)
        delta_flow = self.flow_head(net)  # (B, 2, h, w)
        mask = 0.25 * self.mask(net)  # (B, 576, h, w); the 0.25 scale is part of the trained model
        return net, mask, delta_flow


def bilinear_sampler(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample ``img`` (N, C, H, W) at pixel coordinates ``coords`` (N, h, w, 2) as (x, y), zeros outside."""
    h, w = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * xgrid / (w - 1) - 1, 2 * ygrid / (h - 1) - 1], dim=-1)
    return F.grid_sample(img, grid, align_corners=True)


class CorrBlock:
    """All-pairs correlation pyramid with windowed lookup."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = CORR_LEVELS,
                 radius: int = CORR_RADIUS):
        self.num_levels, self.radius = num_levels, radius
        b, d, h, w = fmap1.shape
        corr = torch.matmul(fmap1.view(b, d, h * w).transpose(1, 2), fmap2.view(b, d, h * w))  # (B, hw, hw)
        corr = corr.reshape(b * h * w, 1, h, w) / (d ** 0.5)  # (B·hw, 1, h, w)
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)  # (B, h, w, 2)
        b, h, w, _ = coords.shape
        d = torch.linspace(-r, r, 2 * r + 1, device=coords.device, dtype=coords.dtype)
        # The official code stacks meshgrid(dy, dx) and adds it to (x, y); the trained weights expect
        # exactly this ordering of the (2r+1)² window, so keep it.
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        out = []
        for i, corr in enumerate(self.pyramid):
            centroid = coords.reshape(b * h * w, 1, 1, 2) / 2**i
            sampled = bilinear_sampler(corr, centroid + delta)  # (B·hw, 1, 2r+1, 2r+1)
            out.append(sampled.view(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()  # (B, L·(2r+1)², h, w)


def coords_grid(b: int, h: int, w: int, device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], dim=0).float()[None].repeat(b, 1, 1, 1)  # (B, 2, h, w)


class RAFT(nn.Module):
    """The full RAFT model; ``forward`` takes two (B, 3, H, W) images in [0, 255], H and W multiples of 8."""

    def __init__(self):
        super().__init__()
        self.fnet = BasicEncoder(output_dim=256, norm_fn="instance")
        self.cnet = BasicEncoder(output_dim=HIDDEN_DIM + CONTEXT_DIM, norm_fn="batch")
        self.update_block = BasicUpdateBlock(hidden_dim=HIDDEN_DIM)

    @staticmethod
    def upsample_flow(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 2, h, w) flow at 1/8 -> (B, 2, 8h, 8w) as a convex combination of 3×3 neighbours."""
        b, _, h, w = flow.shape
        mask = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
        up = F.unfold(8 * flow, [3, 3], padding=1).view(b, 2, 9, 1, 1, h, w)
        up = torch.sum(mask * up, dim=2)  # (B, 2, 8, 8, h, w)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12) -> torch.Tensor:
        image1 = 2 * (image1 / 255.0) - 1.0
        image2 = 2 * (image2 / 255.0) - 1.0
        fmaps = self.fnet(torch.cat([image1, image2], dim=0)).float()  # (2B, 256, h, w)
        fmap1, fmap2 = fmaps.chunk(2, dim=0)
        corr_fn = CorrBlock(fmap1, fmap2)
        net, inp = torch.split(self.cnet(image1), [HIDDEN_DIM, CONTEXT_DIM], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        b, _, h, w = fmap1.shape
        coords0 = coords_grid(b, h, w, image1.device)
        coords1 = coords0.clone()
        flow_up = None
        for _ in range(iters):
            corr = corr_fn(coords1)  # (B, 324, h, w)
            net, up_mask, delta = self.update_block(net, inp, corr, coords1 - coords0)
            coords1 = coords1 + delta
        flow_up = self.upsample_flow(coords1 - coords0, up_mask)
        return flow_up  # (B, 2, H, W)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a RAFT checkpoint (.pth/.pt via ``weights_only=True``, or .safetensors), prefix stripped."""
    path = Path(path)
    check(path.is_file(), f"RAFT weights '{path}' do not exist (supply a local raft-things.pth or .safetensors)")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ShanshuiError(f"cannot read RAFT weights '{path}': {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    check(isinstance(state, dict), f"RAFT weights '{path}' do not hold a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_raft(path: str | os.PathLike, device: str = "cpu") -> RAFT:
    """Build RAFT and load ``path`` strictly; a key or shape mismatch is a :class:`ShanshuiError`."""
    state = read_state_dict(path)
    model = RAFT()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    check(not missing and not unexpected,
          f"RAFT weights '{path}' do not match the full RAFT layout: {len(missing)} missing "
          f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
          "RAFT-small checkpoints are not supported")
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    check(not bad, f"RAFT weights '{path}': shape mismatch for {bad[:3]}")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


_CACHE: dict[tuple, RAFT] = {}


def raft_flow(a: np.ndarray, b: np.ndarray, weights: str | os.PathLike, iters: int = 12,
              device: str = "cpu") -> np.ndarray:
    """Flow ``a -> b`` for two ``(H, W, 3)`` uint8 RGB frames; float32 ``(H, W, 2)``."""
    check(iters >= 1, f"iters={iters} must be >= 1")
    p = Path(weights)
    key = (str(p.resolve()), p.stat().st_mtime if p.exists() else 0, str(device))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_raft(p, device)
    model = _CACHE[key]
    h, w = a.shape[:2]
    # pad (replicate) to multiples of 8 and to >= 128 px: the coarsest correlation level must be >= 2 px
    ph, pw = max((-h) % 8, 128 - h), max((-w) % 8, 128 - w)
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
    x = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float().to(device)  # (2, 3, H, W)
    x = F.pad(x, pads, mode="replicate")
    with torch.inference_mode():
        flow = model(x[:1], x[1:], iters=iters)[0]  # (2, H', W')
    flow = flow[:, pads[2] : pads[2] + h, pads[0] : pads[0] + w]
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)
