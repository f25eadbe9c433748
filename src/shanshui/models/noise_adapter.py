"""The noise adapter ``g`` of NADM's contrastive noise learning.

``g`` maps each frame's predicted noise (``c × h × w``) to one vector on which frames are compared. It pools
the noise to a fixed ``grid × grid`` first, so the same adapter works at any resolution (the official code's
MLP over the raw width only fits 256-px training), then applies Linear–ReLU–Linear. It exists only for the
training loss and is thrown away at inference.

It always computes in float32, also under mixed-precision autocast: its embeddings are compared by cosine
similarity divided by τ = 0.07, where bf16's 3 significant digits would already move a logit by ~0.1; the
adapter is tiny (a pooled 8×8 grid), so fp32 costs nothing measurable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn


class NoiseAdapter(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 4, grid: int = 8, hidden_dim: int = 512, proj_dim: int = 128):
        super().__init__()
        self.grid = grid
        self.net = nn.Sequential(
            nn.Linear(in_channels * grid * grid, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, proj_dim),
        )

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        """``(b, c, f, h, w)`` predicted noise -> ``(b, f, proj_dim)`` frame embeddings."""
        b = eps.shape[0]
        x = rearrange(eps, "b c f h w -> (b f) c h w")                  # (b·f, c, h, w)
        with torch.autocast(x.device.type, enabled=False):             # fp32 under mixed precision too
            x = F.adaptive_avg_pool2d(x.float(), self.grid)             # (b·f, c, g, g)
            x = self.net(x.flatten(1).to(self.net[0].weight.dtype))     # (b·f, proj)
        return rearrange(x, "(b f) p -> b f p", b=b)
