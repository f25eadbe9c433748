"""Inflating a Stable-Diffusion-1.5-shaped image UNet into the NADM video UNet.

The video UNet *is* diffusers' :class:`~diffusers.UNetMotionModel` (``from_unet2d`` + a
:class:`~diffusers.MotionAdapter`), so AnimateDiff / diffusers motion weights load into it unchanged and
every diffusers feature keeps working. NADM's contribution is configured, not forked:

* ``attn1`` of each motion-module block stays full temporal attention (Versatile attention);
* ``attn2`` gets :class:`~shanshui.models.attention.SparseCausalAttnProcessor` (``sparse_causal="temporal"``,
  the default), the Tune-A-Video variant (``"spatial"``), or diffusers' default (``"off"`` = AnimateDiff).

A brand-new motion module has its output projections zeroed, so before training the video UNet equals the
image UNet applied to every frame independently.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from ..errors import ShanshuiError, check
from .attention import (
    SPARSE_CAUSAL_MODES,
    FrameLayout,
    NullAttnProcessor,
    SparseCausalAttnProcessor,
    SpatialSparseCausalAttnProcessor,
    install_frame_layout_hook,
)

NORM_MODES = ("joint", "frame")


@dataclass
class MotionConfig:
    """Shape and behaviour of a motion module (saved next to its weights as JSON).

    ``norm``: ``"joint"`` normalises each group over (channels, frames, h, w) as diffusers'
    ``AnimateDiffTransformer3D`` and the NADM release do (the default for new modules); ``"frame"`` normalises
    every frame separately, as the original AnimateDiff code does in every release (v1, v2, v3).
    """

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    use_mid_block: bool = True
    num_attention_heads: int = 8
    norm_num_groups: int = 32
    max_seq_length: int = 32
    norm: str = "joint"
    sparse_causal: str = "temporal"
    versatile: bool = True
    format_version: int = field(default=1)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        check(self.norm in NORM_MODES, f"norm='{self.norm}' must be one of {NORM_MODES}")
        check(self.sparse_causal in SPARSE_CAUSAL_MODES,
              f"sparse_causal='{self.sparse_causal}' must be one of {SPARSE_CAUSAL_MODES}")
        check(self.max_seq_length >= 2, f"max_seq_length={self.max_seq_length} must be >= 2")
        for c in self.block_out_channels:
            check(c % self.num_attention_heads == 0,
                  f"channels {c} not divisible by num_attention_heads={self.num_attention_heads}")
            check(c % self.norm_num_groups == 0, f"channels {c} not divisible by norm_num_groups={self.norm_num_groups}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "MotionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        check(not unknown, f"unknown motion-module config keys: {unknown}")
        return cls(**d)

    @classmethod
    def for_unet(cls, unet_config, **overrides) -> "MotionConfig":
        """A config matching an image UNet's block layout (heads/groups default to SD 1.5's 8 / 32)."""
        layers = unet_config["layers_per_block"]
        check(isinstance(layers, int), f"layers_per_block={layers}: only a single int is supported")
        base = dict(
            block_out_channels=tuple(unet_config["block_out_channels"]),
            layers_per_block=layers,
            norm_num_groups=unet_config["norm_num_groups"],
        )
        base.update(overrides)
        return cls(**base)

    def adapter_kwargs(self) -> dict:
        return dict(
            block_out_channels=self.block_out_channels,
            motion_layers_per_block=self.layers_per_block,
            motion_num_attention_heads=self.num_attention_heads,
            motion_norm_num_groups=self.norm_num_groups,
            motion_max_seq_length=self.max_seq_length,
            use_motion_mid_block=self.use_mid_block,
        )


class FramewiseGroupNorm(nn.GroupNorm):
    """GroupNorm applied to each frame of a ``(b, c, f, h, w)`` tensor separately (original AnimateDiff)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[2]
        x = rearrange(x, "b c f h w -> (b f) c h w")
        x = super().forward(x)
        return rearrange(x, "(b f) c h w -> b c f h w", f=f)


def motion_transformers(unet) -> list[nn.Module]:
    """Every ``AnimateDiffTransformer3D`` of a video UNet, in state-dict order."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    return [m for m in unet.modules() if isinstance(m, AnimateDiffTransformer3D)]


def motion_parameters(unet) -> list[nn.Parameter]:
    """The trainable parameters of a video UNet: those of its motion modules, nothing else."""
    return [p for m in motion_transformers(unet) for p in m.parameters()]


def freeze_image_layers(unet) -> None:
    """Freeze everything but the motion modules (by structure, not by name)."""
    unet.requires_grad_(False)
    for p in motion_parameters(unet):
        p.requires_grad_(True)


def set_norm_mode(unet, norm: str) -> None:
    """Switch every motion-module GroupNorm between joint and per-frame normalisation (weights unchanged)."""
    check(norm in NORM_MODES, f"norm='{norm}' must be one of {NORM_MODES}")
    cls = FramewiseGroupNorm if norm == "frame" else nn.GroupNorm
    for module in motion_transformers(unet):
        old = module.norm
        if type(old) is cls:
            continue
        new = cls(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine)
        new.load_state_dict(old.state_dict())
        module.norm = new.to(device=old.weight.device, dtype=old.weight.dtype)


def set_temporal_attention(unet, sparse_causal: str = "temporal", versatile: bool = True) -> None:
    """Install the NADM attention processors on every motion-module block.

    ``sparse_causal`` picks ``attn2``'s processor; ``versatile=False`` switches ``attn1`` off (ablation).
    Processors of the image layers are left as they are.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    check(sparse_causal in SPARSE_CAUSAL_MODES,
          f"sparse_causal='{sparse_causal}' must be one of {', '.join(SPARSE_CAUSAL_MODES)}")
    old_hook = getattr(unet, "_shanshui_layout_hook", None)
    if old_hook is not None:
        old_hook.remove()
        unet._shanshui_layout_hook = None
    layout = FrameLayout()
    if sparse_causal == "spatial":
        unet._shanshui_layout_hook = install_frame_layout_hook(unet, layout)
    procs = {}
    for name, proc in unet.attn_processors.items():
        if ".motion_modules." in name and name.endswith("attn2.processor"):
            procs[name] = {
                "temporal": SparseCausalAttnProcessor(),
                "spatial": SpatialSparseCausalAttnProcessor(layout),
                "off": AttnProcessor2_0(),
            }[sparse_causal]
        elif ".motion_modules." in name and name.endswith("attn1.processor"):
            procs[name] = AttnProcessor2_0() if versatile else NullAttnProcessor()
        else:
            procs[name] = proc
    unet.set_attn_processor(procs)
    unet._shanshui_attention = (sparse_causal, versatile)


def zero_output_projections(unet) -> None:
    """Zero ``proj_out`` of every motion module, making each an identity map (residual only)."""
    for module in motion_transformers(unet):
        nn.init.zeros_(module.proj_out.weight)
        nn.init.zeros_(module.proj_out.bias)


def build_video_unet(unet2d, config: MotionConfig | None = None, motion_state_dict: dict | None = None):
    """Inflate an image UNet into the NADM video UNet.

    Args:
        unet2d: a ``UNet2DConditionModel`` (SD 1.5 layout or a smaller one with the same block types).
        config: motion-module shape/behaviour; default: matched to ``unet2d`` with SD 1.5 heads.
        motion_state_dict: motion weights in diffusers names (see :mod:`shanshui.models.motion_io`); when
            ``None`` a fresh module is created with zeroed output projections.
    Returns:
        a ``UNetMotionModel`` with the requested attention processors and norm mode installed.
    """
    from diffusers import MotionAdapter, UNetMotionModel

    config = config or MotionConfig.for_unet(unet2d.config)
    expected_blocks = tuple(unet2d.config["block_out_channels"])
    if config.block_out_channels != expected_blocks:
        raise ShanshuiError(
            f"motion module has block channels {config.block_out_channels} but the image UNet has {expected_blocks}")
    if config.layers_per_block != unet2d.config["layers_per_block"]:
        raise ShanshuiError(f"motion module has {config.layers_per_block} layers per block but the image UNet has "
                            f"{unet2d.config['layers_per_block']}")
    adapter = MotionAdapter(**config.adapter_kwargs())
    if motion_state_dict is None:
        video_unet = UNetMotionModel.from_unet2d(unet2d, adapter)
        zero_output_projections(video_unet)
    else:
        from .motion_io import load_state_dict_strict

        load_state_dict_strict(adapter, motion_state_dict, what="motion module")
        video_unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    set_norm_mode(video_unet, config.norm)
    set_temporal_attention(video_unet, config.sparse_causal, config.versatile)
    video_unet.shanshui_motion_config = config
    return video_unet
