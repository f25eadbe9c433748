"""Attention processors for the second temporal attention (``attn2``) of every motion-module block.

Inside a diffusers motion module the temporal transformer sees hidden states shaped ``(b·h·w, f, d)``: one
sequence of ``f`` frame tokens per latent pixel, with the sinusoidal frame position already added. The first
attention (``attn1``) lets every frame look at every frame ("Versatile" attention). NADM follows it with a
"Sparse-Causal" attention in which frame ``i`` may only look at frame ``i-1``.

With exactly one key per query the softmax weight is 1, so the sub-layer reduces to
``out_i = W_O · W_V · x_{i-1}`` — a learned causal shift by one frame. :class:`SparseCausalAttnProcessor`
computes exactly that, in O(f), without building an ``f × f`` score matrix (the query and key projections
of ``attn2`` are kept in the checkpoint for compatibility but receive no gradient). Frame 0 has no
predecessor and uses its own value.

:class:`SpatialSparseCausalAttnProcessor` is the variant dormant in the official release (Tune-A-Video
style): every pixel of frame ``i`` attends over *all* pixels of frames ``0`` and ``i-1``. It needs the
batch size to unfold ``b·h·w``; :func:`install_frame_layout_hook` records it from the UNet input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

SPARSE_CAUSAL_MODES = ("temporal", "spatial", "off")


def shift_to_previous_frame(x: torch.Tensor) -> torch.Tensor:
    """``(n, f, d) -> (n, f, d)`` with frame i replaced by frame i-1; frame 0 keeps itself."""
    return torch.cat([x[:, :1], x[:, :-1]], dim=1)


def _finish(attn, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    out = attn.to_out[0](out)  # (n, f, d) linear
    out = attn.to_out[1](out)  # dropout
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def _check_temporal_input(attn, hidden_states, encoder_hidden_states, attention_mask) -> None:
    if hidden_states.ndim != 3:
        raise ValueError(f"sparse-causal attention expects (b*h*w, frames, dim) input, got {tuple(hidden_states.shape)}")
    if encoder_hidden_states is not None or attention_mask is not None:
        raise ValueError("sparse-causal attention is a self-attention: encoder_hidden_states/attention_mask must be None")
    if attn.spatial_norm is not None or attn.group_norm is not None:
        raise ValueError("sparse-causal attention does not support spatial_norm/group_norm on the attention layer")


class SparseCausalAttnProcessor:
    """NADM Sparse-Causal attention over time: frame i takes key/value from frame i-1 only (O(f))."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_temporal_input(attn, hidden_states, encoder_hidden_states, attention_mask)
        residual = hidden_states                                   # (n, f, d)
        value = attn.to_v(hidden_states)                           # (n, f, inner)
        return _finish(attn, shift_to_previous_frame(value), residual)


class FrameLayout:
    """Mutable holder of the current UNet batch size, shared by spatial processors."""

    def __init__(self) -> None:
        self.batch_size: int | None = None


def install_frame_layout_hook(unet, layout: FrameLayout):
    """Record ``sample.shape[0]`` (the video batch, CFG included) before every UNet forward."""

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        layout.batch_size = int(sample.shape[0])

    return unet.register_forward_pre_hook(hook, with_kwargs=True)


class SpatialSparseCausalAttnProcessor:
    """Tune-A-Video style: the pixels of frame i attend over all pixels of frames 0 and i-1."""

    def __init__(self, layout: FrameLayout) -> None:
        self.layout = layout

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_temporal_input(attn, hidden_states, encoder_hidden_states, attention_mask)
        b = self.layout.batch_size
        if b is None or hidden_states.shape[0] % b:
            raise RuntimeError("spatial sparse-causal attention needs the UNet batch size; use set_temporal_attention()")
        residual = hidden_states                                                   # ((b n), f, d)
        x = rearrange(hidden_states, "(b n) f d -> b f n d", b=b)                  # (b, f, n, d)
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)                         # (b, f, n, inner)
        first = lambda t: t[:, :1].expand_as(t)                                    # frame 0 for every i
        prev = lambda t: torch.cat([t[:, :1], t[:, :-1]], dim=1)                   # frame i-1 (0 -> 0)
        k = torch.cat([first(k), prev(k)], dim=2)                                  # (b, f, 2n, inner)
        v = torch.cat([first(v), prev(v)], dim=2)                                  # (b, f, 2n, inner)
        split = lambda t: rearrange(t, "b f n (h e) -> (b f) h n e", h=attn.heads)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))        # ((b f), h, n, e)
        out = rearrange(out, "(b f) h n e -> (b n) f (h e)", b=b)                  # ((b n), f, inner)
        return _finish(attn, out.to(residual.dtype), residual)


class NullAttnProcessor:
    """Switches a sub-layer off (for the "without Versatile attention" ablation): contributes zero."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = torch.zeros_like(hidden_states)
        return out + hidden_states if attn.residual_connection else out
