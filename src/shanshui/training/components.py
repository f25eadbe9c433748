"""Building the models a training run needs, and freezing everything that must not learn.

Frozen: the VAE, the text encoder and every image layer of the UNet. Trainable: the motion modules (found
by structure, :func:`~shanshui.models.motion.motion_parameters`) and the noise adapter. The two trainable
parts are wrapped in one :class:`TrainableNet` so that a distributed wrapper (DDP) synchronises both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ShanshuiError
from .config import ModelConfig

logger = logging.getLogger("shanshui.training")


class TrainableNet(nn.Module):
    """The video UNet plus the noise adapter: ``(z_t, t, text) -> (ε_θ, frame embeddings or None)``.

    ``lora``: a :class:`~shanshui.models.lora.MotionLoRA` hooked into the UNet's motion modules (then it, not
    the motion modules, is what learns)."""

    def __init__(self, unet: nn.Module, adapter: nn.Module, lora: nn.Module | None = None):
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        self.lora = lora

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_embeds: torch.Tensor,
                with_embeddings: bool = True, to_eps=None):
        """``to_eps(output)`` turns a v-prediction into the predicted noise the adapter embeds (None: the
        output already is ε)."""
        out = self.unet(noisy_latents, timesteps, encoder_hidden_states=text_embeds).sample  # (b, c, f, h, w)
        emb = None
        if with_embeddings:
            emb = self.adapter(out if to_eps is None else to_eps(out))                      # (b, f, p)
        return out, emb


@dataclass
class TrainingModels:
    net: TrainableNet
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    noise_scheduler: object
    motion_config: object

    @property
    def unet(self):
        return self.net.unet

    @property
    def adapter(self):
        return self.net.adapter

    def trainable_parameters(self) -> list[nn.Parameter]:
        from ..models.motion import motion_parameters

        if self.net.lora is not None:
            return list(self.net.lora.parameters()) + list(self.net.adapter.parameters())
        return motion_parameters(self.net.unet) + list(self.net.adapter.parameters())

    def frozen_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter that must never change, with a readable name."""
        trainable = {id(p) for p in self.trainable_parameters()}
        out = []
        for prefix, module in (("unet", self.net.unet), ("vae", self.vae), ("text_encoder", self.text_encoder)):
            out += [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if id(p) not in trainable]
        return out


def make_noise_scheduler(objective: dict | None = None):
    """DDPM training schedule: linear betas 0.00085–0.012 over 1000 steps (SPEC §0), ε-prediction unless the
    base model's folder names another objective (:func:`~shanshui.schedulers.read_objective`)."""
    from ..schedulers import make_scheduler

    return make_scheduler("ddpm", objective=objective)


def _motion_fields(cfg: ModelConfig) -> dict:
    fields = dict(sparse_causal=cfg.sparse_causal, versatile=cfg.versatile, norm=cfg.norm,
                  max_seq_length=cfg.max_seq_length)
    if cfg.num_attention_heads is not None:
        fields["num_attention_heads"] = cfg.num_attention_heads
    return fields


def build_models(cfg: ModelConfig, seed: int = 0, device: torch.device | str = "cpu",
                 frozen_dtype: torch.dtype = torch.float32) -> TrainingModels:
    """Load or create the components, inflate the UNet, add the adapter, freeze, and move to ``device``.

    The trainable weights are kept in float32 (mixed precision autocasts their compute); the frozen VAE, text
    encoder and the UNet's frozen image layers are stored in ``frozen_dtype`` (under mixed precision they are
    computed in that dtype anyway: storing them so saves their fp32 copy and a cast per forward pass).
    """
    from ..models.motion import MotionConfig, build_video_unet, freeze_image_layers
    from ..models.noise_adapter import NoiseAdapter

    objective: dict = {}
    if cfg.preset is not None:
        from ..models.presets import make_components

        comps = make_components(cfg.preset, seed=cfg.preset_seed, motion=_motion_fields(cfg))
        motion_config = comps["motion_config"]
    else:
        from ..pipelines.loading import load_base_components
        from ..pipelines.text_to_video import model_objective

        comps = load_base_components(cfg.base_model, torch.float32)
        objective = model_objective(cfg.base_model)
        motion_config = MotionConfig.for_unet(comps["unet"].config, **_motion_fields(cfg))

    state = None
    if cfg.motion_module is not None:
        from ..models.motion_io import load_motion_module

        state, file_config = load_motion_module(cfg.motion_module)
        # Shape and norm come from the file; the attention switches (ablations) from the training config.
        file_config.sparse_causal, file_config.versatile = cfg.sparse_causal, cfg.versatile
        if file_config.max_seq_length < cfg.max_seq_length:
            logger.warning("motion module '%s' was made for %d frames at most; keeping that",
                           cfg.motion_module, file_config.max_seq_length)
        motion_config = file_config

    torch.manual_seed(seed)  # a fresh motion module and the adapter start from the same weights everywhere
    try:
        unet = build_video_unet(comps["unet"], motion_config, state)
    except ShanshuiError:
        raise
    except Exception as exc:  # e.g. heads that do not divide the channels of a custom base model
        raise ShanshuiError(f"cannot build the video UNet: {type(exc).__name__}: {exc}") from exc
    adapter = NoiseAdapter(in_channels=unet.config.in_channels, grid=cfg.adapter_grid,
                           hidden_dim=cfg.adapter_hidden_dim, proj_dim=cfg.adapter_proj_dim)

    freeze_image_layers(unet)
    lora = None
    if cfg.lora_rank > 0:
        from ..models.lora import MotionLoRA
        from ..models.motion import motion_parameters

        for p in motion_parameters(unet):
            p.requires_grad_(False)
        lora = MotionLoRA(unet, cfg.lora_rank)
    adapter.requires_grad_(True)
    vae, text_encoder = comps["vae"], comps["text_encoder"]
    vae.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    unet.train()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()

    net = TrainableNet(unet, adapter, lora).to(device)
    cast_frozen_parameters(unet, frozen_dtype)
    for frozen in (vae, text_encoder):
        frozen.to(device)
        if frozen_dtype != torch.float32:
            frozen.to(frozen_dtype)
    return TrainingModels(net=net, vae=vae, text_encoder=text_encoder, tokenizer=comps["tokenizer"],
                          noise_scheduler=make_noise_scheduler(objective), motion_config=unet.shanshui_motion_config)


def cast_frozen_parameters(module: nn.Module, dtype: torch.dtype) -> None:
    """Store every parameter that takes no gradient in ``dtype``; trainable ones stay as they are."""
    if dtype == torch.float32:
        return
    for p in module.parameters():
        if not p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def save_trained_weights(models: TrainingModels, folder: str | Path, unet=None, adapter=None) -> dict[str, Path]:
    """Write the motion module (AnimateDiff key names + JSON config) — or, when a motion LoRA is trained,
    ``motion_lora.safetensors`` (diffusers/peft keys) — and the noise adapter, all safetensors."""
    import json

    from safetensors.torch import save_file

    from ..models.motion_io import save_motion_module
    from ..video_io import atomic_output

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet = unet if unet is not None else models.unet
    adapter = adapter if adapter is not None else models.adapter
    if models.net.lora is not None:
        motion_key, motion_path = "motion_lora", models.net.lora.save(folder / "motion_lora.safetensors")
    else:
        motion_key = "motion_module"
        motion_path = save_motion_module(unet, folder / "motion_module.safetensors", models.motion_config)
    adapter_path = folder / "noise_adapter.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    with atomic_output(adapter_path) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(dict(adapter.config)), "format": "pt"})
    return {motion_key: motion_path, "noise_adapter": adapter_path}


def load_trained_weights(models: TrainingModels, folder: str | Path) -> None:
    """Strictly load the files written by :func:`save_trained_weights` into ``models``."""
    from safetensors.torch import load_file

    from ..models.motion_io import load_motion_module, load_state_dict_strict, motion_state_dict

    folder = Path(folder)
    if models.net.lora is not None:
        lora_file = folder / "motion_lora.safetensors"
        if not lora_file.is_file():
            raise ShanshuiError(f"checkpoint '{folder}' has no motion_lora.safetensors")
        models.net.lora.load_diffusers_state_dict(load_file(str(lora_file)), f"checkpoint '{folder}'")
        _load_adapter(models, folder)
        return
    state, _ = load_motion_module(folder / "motion_module.safetensors")
    expected = motion_state_dict(models.unet)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise ShanshuiError(f"checkpoint '{folder}': motion module key '{key}' is "
                            f"{'missing' if missing else 'unexpected'} ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected)")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ShanshuiError(f"checkpoint '{folder}': '{key}' has shape {tuple(value.shape)}, "
                                f"expected {tuple(expected[key].shape)}")
    with torch.no_grad():
        current = models.unet.state_dict()  # tensors share storage with the module: copy_ writes through
        for key, value in state.items():
            current[key].copy_(value)
    _load_adapter(models, folder)


def _load_adapter(models: TrainingModels, folder: Path) -> None:
    from safetensors.torch import load_file

    from ..models.motion_io import load_state_dict_strict

    adapter_file = folder / "noise_adapter.safetensors"
    if not adapter_file.is_file():
        raise ShanshuiError(f"checkpoint '{folder}' has no noise_adapter.safetensors")
    load_state_dict_strict(models.adapter, load_file(str(adapter_file)), what=f"noise adapter in '{folder}'")
