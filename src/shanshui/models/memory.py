"""Split inference for the video UNet: the same computation in smaller pieces (a ``--low-vram`` option).

Inside a ``UNetMotionModel`` the image layers (resnets, spatial transformers, up/down samplers) see a batch of
``b·f`` frames and treat every frame on its own; the motion modules' transformer blocks see ``b·h·w`` pixel
sequences and treat every sequence on its own. Running those layers on slices of that batch dimension and
concatenating gives the same numbers while only one slice's activations are alive at a time. diffusers'
:class:`~diffusers.pipelines.free_noise_utils.SplitInferenceModule` does the slicing; unlike diffusers'
``enable_free_noise_split_inference`` the wrapping here can be undone (:func:`disable_split_inference`), so
module names — which LoRA loading and checkpoints rely on — come back.

Not split: the motion modules' GroupNorm, which normalises over all frames jointly (it runs before
``proj_in``, on the whole tensor, as without splitting). With the Tune-A-Video ("spatial") sparse-causal
variant the motion blocks need the whole ``b·h·w`` batch, so only the image layers are split then.
"""

from __future__ import annotations

from torch import nn


def _split_cls():
    from diffusers.pipelines.free_noise_utils import SplitInferenceModule

    return SplitInferenceModule


def _wrap_list(modules: nn.ModuleList, size: int, keys: list[str]) -> None:
    cls = _split_cls()
    for i, m in enumerate(modules):
        if not isinstance(m, cls):
            modules[i] = cls(m, size, 0, keys)


def enable_split_inference(unet, spatial_split: int = 256, temporal_split: int = 4) -> None:
    """Split the UNet's image layers into ``temporal_split`` frames and its motion blocks into
    ``spatial_split`` pixel sequences per call."""
    cls = _split_cls()
    split_motion = getattr(unet, "_shanshui_attention", ("temporal", True))[0] != "spatial"
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        for mm in getattr(block, "motion_modules", None) or []:
            if not split_motion:
                break
            if not isinstance(mm.proj_in, cls):
                mm.proj_in = cls(mm.proj_in, spatial_split, 0, ["input"])
                mm.proj_out = cls(mm.proj_out, spatial_split, 0, ["input"])
            _wrap_list(mm.transformer_blocks, spatial_split, ["hidden_states", "encoder_hidden_states"])
        if getattr(block, "attentions", None) is not None:
            _wrap_list(block.attentions, temporal_split, ["hidden_states", "encoder_hidden_states"])
        if getattr(block, "resnets", None) is not None:
            _wrap_list(block.resnets, temporal_split, ["input_tensor", "temb"])
        for name in ("downsamplers", "upsamplers"):
            if getattr(block, name, None) is not None:
                _wrap_list(getattr(block, name), temporal_split, ["hidden_states"])
    unet._shanshui_split = (spatial_split, temporal_split)


def disable_split_inference(unet) -> None:
    """Remove every split wrapper, restoring the original module tree (and state-dict names)."""
    cls = _split_cls()
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, cls):
                setattr(parent, name, child.module)  # ModuleList children are named "0", "1", ... too
    unet._shanshui_split = None


def split_inference_enabled(unet) -> bool:
    return getattr(unet, "_shanshui_split", None) is not None
