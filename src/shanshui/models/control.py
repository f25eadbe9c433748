"""The image-to-video control module: first-frame conditioning, motion-field encoder, motion strength,
and the flow refinement network T (SPEC §2.1–2.3).

The video UNet stays diffusers' ``UNetMotionModel`` (frozen image layers + motion modules); the control
parts attach to it through hooks, so no diffusers class is forked and every part starts as an exact no-op:

* **First frame** — the clean latent of frame 0 plus a "this is frame 0" indicator channel enter every
  frame through a zero-initialised 3×3 convolution added to the output of ``conv_in``. A convolution is
  linear, so this is exactly ``conv_in`` applied to the input concatenated with 5 extra channels whose
  weights start at zero (the SVD / ConsistI2V / SEINE way of conditioning on an image), without touching
  the image model's own ``conv_in`` weights.
* **Motion encoder** (eq. 4) — a small CNN turns the per-frame motion field ``F`` (px/frame at the output
  size, expressed in latent cells, plus a "field given" flag) into feature maps at every UNet resolution.
  In every motion module the first temporal attention computes ``softmax(QKᵀ)·(W_V z + W_M z_m)`` — the
  motion features enter as attention values, as in eq. 4, added to the module's own values so that a
  zero-initialised ``W_M`` leaves the model unchanged (eq. 4 taken literally, ``V = W_V z_m``, would
  discard the pretrained values and could not start as a no-op).
* **Motion strength** ``M_s`` (px/frame at the output size) → sinusoidal embedding of ``M_s · scale`` →
  MLP whose last layer is zero-initialised → added to the timestep embedding (adding after a linear map is
  the same as concatenating and projecting).
* **Refinement network T** — a pix2pix-style U-Net: (Gaussian-densified arrow field, first frame) → dense
  flow, predicted as a residual on the Gaussian field with a zero-initialised output layer (so an untrained
  T returns its input field).

:class:`ImageToVideoUNet` wraps a video UNet with a :class:`ControlModule`; its ``forward`` takes the
conditions as arguments and hands them to the hooks for the duration of one call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShanshuiError, check

FIRST_FRAME_MODES = ("concat", "none")
MOTION_MODES = ("value", "none")


@dataclass
class ControlConfig:
    """Shape of a control module (saved next to its weights as JSON)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)   # the UNet's
    temb_dim: int = 1280                                           # the UNet's timestep-embedding size
    latent_channels: int = 4
    vae_factor: int = 8
    first_frame: str = "concat"             # "none": ablation without first-frame conditioning
    motion: str = "value"                   # "none": ablation without the motion encoder
    encoder_channels: tuple[int, ...] = (32, 64, 128, 128)
    strength_dim: int = 64
    strength_scale: float = 100.0           # M_s · scale is embedded (0.01 px/frame ↔ one "timestep")
    refiner_channels: tuple[int, ...] = (32, 64, 128)
    refiner_flow_scale: float = 2.0         # px/frame mapped to 1 inside T
    format_version: int = field(default=1)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.refiner_channels = tuple(int(c) for c in self.refiner_channels)
        check(self.first_frame in FIRST_FRAME_MODES,
              f"first_frame='{self.first_frame}' must be one of {', '.join(FIRST_FRAME_MODES)}")
        check(self.motion in MOTION_MODES, f"motion='{self.motion}' must be one of {', '.join(MOTION_MODES)}")
        check(len(self.encoder_channels) >= len(self.block_out_channels),
              f"encoder_channels {self.encoder_channels} needs one entry per UNet level "
              f"({len(self.block_out_channels)})")
        check(self.strength_dim % 2 == 0 and self.strength_dim > 0, f"strength_dim={self.strength_dim} must be even")
        check(len(self.refiner_channels) >= 1, "refiner_channels must not be empty")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ControlConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        check(not unknown, f"unknown control-module config keys: {unknown}")
        return cls(**d)

    @classmethod
    def for_unet(cls, unet_config, vae_factor: int = 8, **overrides) -> "ControlConfig":
        blocks = tuple(unet_config["block_out_channels"])
        enc = tuple(min(c, 128) for c in blocks)
        temb = unet_config.get("time_embedding_dim") or blocks[0] * 4
        base = dict(block_out_channels=blocks, temb_dim=int(temb), vae_factor=vae_factor, encoder_channels=enc,
                    latent_channels=int(unet_config.get("in_channels", 4)))
        base.update(overrides)
        return cls(**base)


# ----------------------------------------------------------------------------------------------- parts
def strength_sinusoid(strength: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """``(b,)`` px/frame -> ``(b, dim)``: ``[cos(s·scale·ω_i), sin(s·scale·ω_i)]``, ``ω_i = 10000^(−i/(dim/2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=strength.device) / half)
    arg = strength.float()[:, None] * scale * freqs[None]                       # (b, half)
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class StrengthEmbedding(nn.Module):
    """``M_s`` -> sinusoid -> Linear -> SiLU -> Linear (zero-initialised) -> ``(b, temb_dim)``."""

    def __init__(self, dim: int, temb_dim: int, scale: float):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.linear_1 = nn.Linear(dim, temb_dim)
        self.linear_2 = nn.Linear(temb_dim, temb_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, strength: torch.Tensor) -> torch.Tensor:
        x = strength_sinusoid(strength, self.dim, self.scale).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(x)))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU())


class MotionEncoder(nn.Module):
    """``(n, 3, h, w)`` (flow in latent cells/frame, flag) -> one feature map per UNet level (``h / 2^i``)."""

    def __init__(self, channels: tuple[int, ...], levels: int):
        super().__init__()
        chans = channels[:levels]
        self.blocks = nn.ModuleList([_block(3, chans[0])] +
                                    [_block(chans[i - 1], chans[i], stride=2) for i in range(1, levels)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


class FlowRefiner(nn.Module):
    """Refinement network T: ``(Gaussian field (b, 2, H, W) px/frame, image (b, 3, H, W) in [-1, 1])`` ->
    dense flow ``(b, 2, H, W)`` px/frame. A U-Net of ``len(channels)`` levels; the output is a residual on the
    input field through a zero-initialised head, so an untrained T is the identity on the field."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), flow_scale: float = 2.0):
        super().__init__()
        self.flow_scale = flow_scale
        self.down = nn.ModuleList([_block(5, channels[0])] +
                                  [_block(channels[i - 1], channels[i], stride=2) for i in range(1, len(channels))])
        self.up = nn.ModuleList([_block(channels[i] + channels[i - 1], channels[i - 1])
                                 for i in range(len(channels) - 1, 0, -1)])
        self.head = nn.Conv2d(channels[0], 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.down) - 1)

    def forward(self, field: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h, w = field.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        x = torch.cat([field / self.flow_scale, image.to(field.dtype)], dim=1)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        delta = self.head(x)[..., :h, :w] * self.flow_scale
        return field + delta


def motion_module_names(unet) -> list[tuple[str, int]]:
    """``(name, level)`` of every motion module of a video UNet, in module order (level 0 = full latent size)."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    levels = len(unet.config.block_out_channels)
    out = []
    for name, module in unet.named_modules():
        if not isinstance(module, AnimateDiffTransformer3D):
            continue
        m = re.match(r"^(down_blocks|up_blocks)\.(\d+)\.", name)
        if m:
            i = int(m.group(2))
            level = i if m.group(1) == "down_blocks" else levels - 1 - i
        else:
            check(name.startswith("mid_block."), f"unexpected motion module '{name}'")
            level = levels - 1
        out.append((name, level))
    return out


def _key(name: str) -> str:
    return name.replace(".", "-")


class ControlModule(nn.Module):
    """All learned control parts; ``value_proj`` has one zero-initialised projection per motion module."""

    def __init__(self, config: ControlConfig, motion_modules: list[tuple[str, int, int]]):
        """``motion_modules``: ``(name, level, channels)`` as found in the video UNet."""
        super().__init__()
        self.config = config
        levels = len(config.block_out_channels)
        c0 = config.block_out_channels[0]
        if config.first_frame == "concat":
            self.first_frame = nn.Conv2d(config.latent_channels + 1, c0, 3, padding=1)
            nn.init.zeros_(self.first_frame.weight)
            nn.init.zeros_(self.first_frame.bias)
        if config.motion == "value":
            self.motion_encoder = MotionEncoder(config.encoder_channels, levels)
            self.value_proj = nn.ModuleDict()
            for name, level, channels in motion_modules:
                proj = nn.Linear(config.encoder_channels[level], channels)
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
                self.value_proj[_key(name)] = proj
        self.strength = StrengthEmbedding(config.strength_dim, config.temb_dim, config.strength_scale)
        self.refiner = FlowRefiner(config.refiner_channels, config.refiner_flow_scale)

    def diffusion_parameters(self) -> list[nn.Parameter]:
        """Everything but T (which is trained by its own loss)."""
        refiner = {id(p) for p in self.refiner.parameters()}
        return [p for p in self.parameters() if id(p) not in refiner]


class MotionValueAttnProcessor:
    """Temporal self-attention with motion values: ``softmax(QKᵀ/√d)·(W_V x + v_m)`` (eq. 4, residual form).

    ``v_m`` ``(b·h·w, f, inner)`` is read from the shared context (set by the module's pre-hook); without it
    this is plain scaled-dot-product self-attention, as diffusers' ``AttnProcessor2_0``."""

    def __init__(self, context: dict, name: str):
        self.context, self.name = context, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        check(hidden_states.ndim == 3 and encoder_hidden_states is None and attention_mask is None,
              "motion-value attention is a temporal self-attention over (b*h*w, frames, dim)")
        residual = hidden_states
        n, f, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        extra = self.context.get("values", {}).get(self.name)
        if extra is not None:
            v = v + extra.to(v.dtype)
        heads = attn.heads
        d = q.shape[-1] // heads
        q, k, v = (x.view(n, f, heads, d).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)                               # (n, heads, f, d)
        out = out.transpose(1, 2).reshape(n, f, heads * d)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class ImageToVideoUNet(nn.Module):
    """A video UNet with first-frame, motion-field and strength conditioning.

    ``forward(sample (b, c, f, h, w), timestep, encoder_hidden_states (b·f, 77, d), first_latent (b, c, h, w)
    or None, motion (b, f, 2, H, W) px/frame at the output size or None, strength (b,) px/frame or None)``
    returns the UNet's prediction ``(b, c, f, h, w)``. When ``sample`` has ``k·b`` rows (classifier-free
    guidance), the conditions are repeated ``k`` times.
    """

    def __init__(self, unet, control: ControlModule):
        super().__init__()
        self.unet = unet
        self.control = control
        self.context: dict = {}
        self._install()

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    # ------------------------------------------------------------------ hooks
    def _install(self) -> None:
        ctx = self.context
        cfg = self.control.config

        def conv_in_hook(module, args, output):
            cond = ctx.get("first_frame")
            return output if cond is None else output + cond.to(output.dtype)

        def temb_hook(module, args, output):
            s = ctx.get("strength_emb")
            return output if s is None else output + s.to(output.dtype)

        self.unet.conv_in.register_forward_hook(conv_in_hook)
        self.unet.time_embedding.register_forward_hook(temb_hook)
        if cfg.motion != "value":
            return
        procs = {}
        modules = dict(self.unet.named_modules())
        for name, _level in motion_module_names(self.unet):
            module = modules[name]

            def pre_hook(mod, args, kwargs, name=name):
                feats = ctx.get("motion_feats")
                values = ctx.setdefault("values", {})
                values.pop(name, None)
                if feats is None:
                    return
                hidden = args[0] if args else kwargs["hidden_states"]
                h, w = hidden.shape[-2:]
                fmap = feats.get((h, w))
                check(fmap is not None, f"no motion features at {h}x{w} for motion module '{name}'")
                frames = kwargs.get("num_frames", 1) if len(args) < 5 else args[4]
                bf, c = fmap.shape[:2]                                          # (b·f, C, h, w)
                b = bf // frames
                x = fmap.reshape(b, frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, frames, c)
                values[name] = self.control.value_proj[_key(name)](x)          # (b·h·w, f, inner)

            module.register_forward_pre_hook(pre_hook, with_kwargs=True)
            for block_index, block in enumerate(module.transformer_blocks):
                procs[f"{name}.transformer_blocks.{block_index}.attn1.processor"] = \
                    MotionValueAttnProcessor(ctx, name) if block_index == 0 else None
        current = self.unet.attn_processors
        self.unet.set_attn_processor({k: (procs.get(k) or v) for k, v in current.items()})

    # ------------------------------------------------------------------ conditions
    def _conditions(self, batch: int, frames: int, h: int, w: int, first_latent, motion, strength, dtype,
                    motion_keep=None, strength_keep=None) -> None:
        cfg = self.control.config
        ctx = self.context
        ctx.clear()
        if first_latent is not None and cfg.first_frame == "concat":
            rows = first_latent.shape[0]
            check(batch % rows == 0, f"first_latent has {rows} rows for a batch of {batch}")
            z = first_latent.to(dtype).repeat(batch // rows, 1, 1, 1)                    # (b, c, h, w)
            z = z[:, None].expand(batch, frames, *z.shape[1:])                          # (b, f, c, h, w)
            flag = torch.zeros(batch, frames, 1, h, w, device=z.device, dtype=dtype)
            flag[:, 0] = 1
            x = torch.cat([z, flag], dim=2).flatten(0, 1)                               # (b·f, c+1, h, w)
            ctx["first_frame"] = self.control.first_frame(x.to(self.control.first_frame.weight.dtype))
        if strength is not None:
            s = torch.as_tensor(strength, device=self.unet.device, dtype=torch.float32).reshape(-1)
            check(batch % s.shape[0] == 0, f"strength has {s.shape[0]} rows for a batch of {batch}")
            emb = self.control.strength(s)                                              # (rows, temb)
            if strength_keep is not None:
                emb = emb * strength_keep.to(emb.device, emb.dtype).reshape(-1, 1)
            ctx["strength_emb"] = emb.repeat(batch // s.shape[0], 1)
        if cfg.motion == "value":
            if motion is None:  # "no field" is the zero field with its flag off, as in training's dropout
                motion = torch.zeros(1, frames, 2, h, w, device=self.unet.device)
                motion_keep = torch.zeros(1, dtype=torch.bool, device=self.unet.device)
            rows = motion.shape[0]
            check(batch % rows == 0, f"motion has {rows} rows for a batch of {batch}")
            check(motion.ndim == 5 and motion.shape[1] == frames and motion.shape[2] == 2,
                  f"motion must be (b, {frames}, 2, H, W), got {tuple(motion.shape)}")
            m = motion.to(self.unet.device, torch.float32).flatten(0, 1)                # (b·f, 2, H, W)
            if m.shape[-2:] != (h, w):
                m = F.interpolate(m, size=(h, w), mode="area")                          # mean per latent cell
            m = m / cfg.vae_factor                                                      # latent cells/frame
            flag = torch.ones_like(m[:, :1])
            if motion_keep is not None:
                keep = motion_keep.to(m.device, m.dtype).repeat_interleave(frames).reshape(-1, 1, 1, 1)
                m, flag = m * keep, flag * keep
            x = torch.cat([m, flag], dim=1).to(next(self.control.motion_encoder.parameters()).dtype)
            feats = self.control.motion_encoder(x)
            x_rep = [f_.unflatten(0, (rows, frames)).repeat(batch // rows, 1, 1, 1, 1).flatten(0, 1) for f_ in feats]
            ctx["motion_feats"] = {tuple(f_.shape[-2:]): f_ for f_ in x_rep}

    def forward(self, sample, timestep, encoder_hidden_states, first_latent=None, motion=None, strength=None,
                motion_keep=None, strength_keep=None):
        """``motion_keep`` / ``strength_keep`` ``(rows,)`` bool: rows where they are False get no motion field
        (zero field and flag) / no strength embedding, as when the condition is not given at all."""
        b, _, f, h, w = sample.shape
        try:
            self._conditions(b, f, h, w, first_latent, motion, strength, sample.dtype, motion_keep, strength_keep)
            out = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample
        finally:
            self.context.clear()
        return out


def build_control(video_unet, config: ControlConfig | None = None, vae_factor: int = 8) -> ImageToVideoUNet:
    """Wrap ``video_unet`` with a fresh (zero-effect) control module."""
    if config is None:
        temb = video_unet.time_embedding.linear_2.out_features
        config = ControlConfig.for_unet(video_unet.config, vae_factor=vae_factor, temb_dim=temb)
    temb = video_unet.time_embedding.linear_2.out_features
    check(config.temb_dim == temb, f"control module made for a {config.temb_dim}-d timestep embedding, the UNet "
                                   f"has {temb}")
    check(tuple(config.block_out_channels) == tuple(video_unet.config.block_out_channels),
          f"control module made for UNet channels {config.block_out_channels}, the UNet has "
          f"{tuple(video_unet.config.block_out_channels)}")
    modules = dict(video_unet.named_modules())
    mm = [(name, level, modules[name].proj_in.in_features) for name, level in motion_module_names(video_unet)]
    control = ControlModule(config, mm).to(device=video_unet.device)
    return ImageToVideoUNet(video_unet, control)


# ----------------------------------------------------------------------------------------------- files
CONTROL_META_KEY = "shanshui_control_config"


SCHEDULER_FILE = "scheduler_config.json"


def save_control(model: ImageToVideoUNet, folder, motion_config, scheduler_config: dict | None = None) -> dict:
    """Write ``folder/motion_module.safetensors`` (+ .json; the I2V model's motion modules),
    ``folder/control.safetensors`` (+ ``control.json``) and, when given, the noise schedule the model was
    trained with (``scheduler_config.json``, so that sampling uses the same betas and prediction type)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..video_io import atomic_output
    from .motion_io import save_motion_module

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    motion_path = save_motion_module(model.unet, folder / "motion_module.safetensors", motion_config)
    state = {k: v.detach().cpu().contiguous() for k, v in model.control.state_dict().items()}
    cfg_json = model.control.config.to_json()
    path = folder / "control.safetensors"
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={CONTROL_META_KEY: cfg_json, "format": "pt"})
    with atomic_output(folder / "control.json") as tmp:
        tmp.write_text(cfg_json + "\n")
    if scheduler_config is not None:
        with atomic_output(folder / SCHEDULER_FILE) as tmp:
            tmp.write_text(json.dumps({k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")},
                                      indent=2, sort_keys=True) + "\n")
    return {"motion_module": motion_path, "control": path}


def control_scheduler(folder, kind: str = "ddim"):
    """The sampler for a saved control model: its training schedule (``scheduler_config.json``), or the
    project's default video schedule when the folder has none."""
    from pathlib import Path

    from diffusers import DDIMScheduler, DDPMScheduler

    from ..schedulers import SCHEDULER_CONFIG

    path = Path(folder) / SCHEDULER_FILE
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else dict(SCHEDULER_CONFIG)
    if kind == "ddim":
        cfg.setdefault("set_alpha_to_one", False)
        return DDIMScheduler.from_config(cfg)
    return DDPMScheduler.from_config(cfg)


def read_control(folder) -> tuple[dict[str, torch.Tensor], ControlConfig]:
    """``(state dict, config)`` of ``folder/control.safetensors`` (config from the file's metadata)."""
    from pathlib import Path

    from safetensors import safe_open

    path = Path(folder) / "control.safetensors"
    check(path.is_file(), f"control module '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise ShanshuiError(f"cannot read control module '{path}': {type(exc).__name__}: {exc}") from exc
    check(CONTROL_META_KEY in meta, f"'{path}' has no Shanshui control config in its metadata")
    return state, ControlConfig.from_dict(json.loads(meta[CONTROL_META_KEY]))


def has_control(folder) -> bool:
    from pathlib import Path

    folder = Path(folder)
    return (folder / "control.safetensors").is_file() and (folder / "motion_module.safetensors").is_file()


def load_control(folder, unet2d, dtype: torch.dtype = torch.float32) -> ImageToVideoUNet:
    """Inflate ``unet2d`` with the I2V model's motion modules and attach its control module (strict)."""
    from pathlib import Path

    from .motion import build_video_unet
    from .motion_io import load_motion_module, load_state_dict_strict

    folder = Path(folder)
    state, config = read_control(folder)
    motion_state, motion_config = load_motion_module(folder / "motion_module.safetensors")
    video_unet = build_video_unet(unet2d, motion_config, motion_state)
    model = build_control(video_unet, config)
    load_state_dict_strict(model.control, state, what=f"control module in '{folder}'")
    model.shanshui_motion_config = motion_config
    return model.to(dtype=dtype)
