"""Size presets for SD-1.5-format components, built in code (no download).

``tiny`` is for unit tests (a forward pass takes milliseconds); ``small`` is a ~10M-parameter UNet used by
the speed benchmark and as the starting point for the bundled model. Both keep SD 1.5's structure: a VAE
with an 8× downsampling and 4 latent channels, a CLIP text encoder, a cross-attention UNet whose block types
mirror SD's, and AnimateDiff-style motion modules after every image layer.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass

import torch

from .motion import MotionConfig


@dataclass(frozen=True)
class Preset:
    unet_channels: tuple[int, ...]
    unet_layers: int
    unet_groups: int
    attention_head_dim: int
    text_dim: int
    text_layers: int
    text_heads: int
    vae_channels: tuple[int, ...]
    vae_groups: int
    motion_heads: int
    sample_size: int                     # latent size of the native resolution
    unet_attn_levels: tuple[int, ...] | None = None   # levels with (cross-)attention; None = all but the deepest
    vae_layers: int = 1


PRESETS = {
    "tiny": Preset(unet_channels=(32, 64), unet_layers=1, unet_groups=8, attention_head_dim=8, text_dim=32,
                   text_layers=2, text_heads=4, vae_channels=(8, 8, 16, 16), vae_groups=8, motion_heads=4,
                   sample_size=8),
    "small": Preset(unet_channels=(64, 128, 256), unet_layers=1, unet_groups=32, attention_head_dim=32,
                    text_dim=128, text_layers=4, text_heads=4, vae_channels=(32, 64, 64, 64), vae_groups=32,
                    motion_heads=8, sample_size=16),
    # The model shipped inside the package, trained on a 2-core CPU (see MODEL_CARD.md): 128 px frames,
    # 16x16 latents, a 3-level UNet, a 2-layer text encoder.
    "bundled": Preset(unet_channels=(32, 64, 128), unet_layers=1, unet_groups=8, attention_head_dim=4,
                      text_dim=64, text_layers=2, text_heads=4, vae_channels=(16, 32, 64, 64), vae_groups=8,
                      motion_heads=4, sample_size=16),
    # Bundled model v2 (MODEL_CARD.md): a 4x VAE (128 px -> 32x32 latents, so boats and birds span several
    # latent pixels), a 4-level UNet with self- and cross-attention on the 16, 8 and 4 px levels and the mid
    # block (global composition: one sun, one boat), a 4-layer 128-d text encoder. Trained on a GPU.
    "bundled2": Preset(unet_channels=(32, 64, 128, 192), unet_layers=1, unet_groups=16, attention_head_dim=4,
                       text_dim=128, text_layers=4, text_heads=4, vae_channels=(32, 64, 128), vae_groups=16,
                       motion_heads=4, sample_size=32, unet_attn_levels=(1, 2, 3), vae_layers=2),
}


def _blocks(n: int, attn_levels: tuple[int, ...] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Block types: (cross-)attention on ``attn_levels`` (default, as SD: everywhere but the deepest level)."""
    levels = set(range(n - 1) if attn_levels is None else attn_levels)
    down = tuple("CrossAttnDownBlock2D" if i in levels else "DownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i in levels else "UpBlock2D" for i in reversed(range(n)))
    return down, up


def make_components(preset: str = "tiny", seed: int = 0, motion: MotionConfig | dict | None = None,
                    tokenizer_dir: str | None = None, tokenizer_corpus: list[str] | None = None,
                    tokenizer_merges: int = 400) -> dict:
    """Randomly initialised ``unet`` (2D), ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``.

    Also returns ``motion_config`` (a :class:`MotionConfig` matched to the UNet). Deterministic for ``seed``.
    The tokenizer's BPE vocabulary is learned from ``tokenizer_corpus`` (default: the landscape word list).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..schedulers import make_scheduler
    from .tokenizer import load_tokenizer, write_tokenizer

    if preset not in PRESETS:
        raise ValueError(f"preset='{preset}' must be one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    tokenizer = load_tokenizer(write_tokenizer(tokenizer_dir or tempfile.mkdtemp(prefix="shanshui-tok-"),
                                               corpus=tokenizer_corpus, num_merges=tokenizer_merges))
    down, up = _blocks(len(p.unet_channels), p.unet_attn_levels)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=p.sample_size, in_channels=4, out_channels=4, block_out_channels=p.unet_channels,
        layers_per_block=p.unet_layers, down_block_types=down, up_block_types=up,
        cross_attention_dim=p.text_dim, attention_head_dim=p.attention_head_dim, norm_num_groups=p.unet_groups,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=p.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(p.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(p.vae_channels),
        layers_per_block=p.vae_layers, norm_num_groups=p.vae_groups,
        sample_size=p.sample_size * 2 ** (len(p.vae_channels) - 1),
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=p.text_dim, intermediate_size=p.text_dim * 4,
        num_hidden_layers=p.text_layers, num_attention_heads=p.text_heads, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=p.text_dim,
    ))
    if isinstance(motion, dict):
        motion = MotionConfig.for_unet(unet.config, num_attention_heads=p.motion_heads, **motion)
    motion = motion or MotionConfig.for_unet(unet.config, num_attention_heads=p.motion_heads)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                scheduler=make_scheduler(), motion_config=motion)


def preset_names() -> list[str]:
    return sorted(PRESETS)


def describe(preset: str) -> dict:
    return dataclasses.asdict(PRESETS[preset])
