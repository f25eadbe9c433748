"""Stage 1 of the bundled model: an SD-1.5-format image model trained from scratch on single frames.

Four phases, run in order and resumable at any checkpoint:

1. ``vae`` — an :class:`~diffusers.AutoencoderKL` (8× downsampling, 4 latent channels) learns to reconstruct
   random crops of the frames: L1 + MSE + an image-gradient L1 (keeps brush edges crisp) + a very small KL
   term. Afterwards the latents' standard deviation is measured and ``1/std`` becomes the VAE's
   ``scaling_factor`` (stored in its config), so scaled latents have about unit variance, as SD 1.5's do.
2. ``latents`` — every training frame is encoded once (posterior mean and std), so phase 3 never runs the
   VAE encoder.
3. ``unet`` — a CLIP text encoder (with a BPE vocabulary learned from the captions) and a
   ``UNet2DConditionModel`` are trained jointly on the linear 0.00085–0.012 schedule with the objective of
   ``objective`` (ε-prediction by default; v-prediction, zero terminal SNR, trailing spacing and min-SNR-γ
   weighting are options, see :mod:`shanshui.schedulers`), with the caption dropped 10 % of the time
   (classifier-free guidance) and an EMA of both. The objective is written into the exported model's
   ``scheduler/scheduler_config.json``, which every pipeline and stage 2 read.
4. ``decoder`` (optional, ``vae.decoder_steps``) — the VAE decoder alone is trained further on whole frames,
   decoding posterior samples of the cached latents. The encoder is untouched, so the latents the UNet learned
   stay valid: the pictures get sharper without retraining anything downstream.

The result, ``OUTPUT/model/``, is a diffusers folder that :func:`shanshui.pipelines.loading.
load_base_components` reads, and the base model for stage 2 (``shanshui train`` with ``model.base_model``).

Every random draw of a step comes from a CPU generator seeded by ``(seed, phase, step)``, so a resumed run
draws exactly the numbers the uninterrupted run would have drawn, on any device. ``device: auto`` trains on
CUDA when there is one; ``mixed_precision: bf16`` runs the forward passes under bf16 autocast (the weights,
optimiser state and EMA stay float32). Checkpoints are numbered by the count of
optimiser steps taken so far in the output folder, over all phases and extensions, so the newest always
sorts last.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import check
from .checkpoint import STATE_FILE, checkpoint_dir, checkpoint_name, prune, resolve_resume
from .config import _build, _non_negative, _positive, apply_overrides, read_config_file

logger = logging.getLogger("shanshui.training.image")

PHASES = ("vae", "latents", "unet", "decoder", "done")
_PHASE_ID = {"vae": 1, "unet": 3, "decoder": 4}


# ----------------------------------------------------------------------------------------------- config

@dataclass
class ImageDataConfig:
    root: str | None = None              # a `shanshui data synth` folder (or any folder with metadata.jsonl)
    size: int = 128
    frames_per_clip: int = 4             # evenly spaced frames taken from each clip
    max_clips: int = 0                   # 0 = all


@dataclass
class ImageModelConfig:
    preset: str = "bundled"
    seed: int = 0
    tokenizer_merges: int = 1000


@dataclass
class VAEPhaseConfig:
    steps: int = 600
    batch_size: int = 8
    crop: int = 64                       # square crops (the VAE is convolutional; 0 = whole frames)
    lr: float = 1e-3
    warmup_steps: int = 20
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    edge_weight: float = 0.5
    kl_weight: float = 1e-6
    decoder_steps: int = 0               # phase 4: decoder-only steps on whole frames after the UNet (0 = none)
    decoder_batch_size: int = 8
    decoder_lr: float = 3e-4


@dataclass
class ObjectiveConfig:
    prediction_type: str = "epsilon"     # or "v_prediction"
    zero_terminal_snr: bool = False      # rescale the betas so that ᾱ_T = 0 (needs v_prediction)
    timestep_spacing: str = "leading"    # sampling: "leading" (SD 1.5) or "trailing"
    min_snr_gamma: float = 0.0           # min-SNR-γ loss weighting (0 = off, plain MSE)

    def scheduler_objective(self) -> dict:
        return {"prediction_type": self.prediction_type, "rescale_betas_zero_snr": self.zero_terminal_snr,
                "timestep_spacing": self.timestep_spacing}


@dataclass
class UNetPhaseConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    text_lr: float = 5e-4
    max_minutes: float = 0.0             # safety net: end the UNet phase early after this long (0 = never)
    warmup_steps: int = 50
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    text_dropout: float = 0.1
    ema_decay: float = 0.999
    stop_after: int = 0                  # end this command after this UNet step (schedule unchanged; 0 = never)


@dataclass
class ImageCheckpointConfig:
    every_minutes: float = 4.0
    total_limit: int = 2
    resume: str | None = None


@dataclass
class ImageSampleConfig:
    prompts: list[str] = field(default_factory=list)
    every: int = 0                       # UNet steps between sample sheets (0 = only at the end)
    steps: int = 20
    guidance: float = 5.0
    seed: int = 0


@dataclass
class ImageTrainConfig:
    output_dir: str = "runs/bundled/stage1"
    seed: int = 0
    threads: int = 2
    log_every: int = 25
    device: str = "auto"                 # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    until: str = "done"                  # "latents": stop after the latent cache (to fork UNet ablations)
    mixed_precision: str = "no"          # no | bf16 (autocast of the forward passes)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    vae: VAEPhaseConfig = field(default_factory=VAEPhaseConfig)
    unet: UNetPhaseConfig = field(default_factory=UNetPhaseConfig)
    checkpoint: ImageCheckpointConfig = field(default_factory=ImageCheckpointConfig)
    samples: ImageSampleConfig = field(default_factory=ImageSampleConfig)

    def to_yaml(self) -> str:
        import dataclasses

        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


def load_image_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ImageTrainConfig:
    data = read_config_file(path) if path is not None else {}
    apply_overrides(data, list(overrides))
    cfg = _build(ImageTrainConfig, data, "")
    validate_image_config(cfg)
    return cfg


def validate_image_config(cfg: ImageTrainConfig, need_data: bool = True) -> None:
    from ..models.presets import preset_names

    d, v, u = cfg.data, cfg.vae, cfg.unet
    check(bool(cfg.output_dir), "output_dir must be set")
    _positive(cfg.threads, "threads")
    _positive(cfg.log_every, "log_every")
    check(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
          f"device='{cfg.device}' must be auto, cpu, cuda or cuda:N")
    check(cfg.mixed_precision in ("no", "bf16"), f"mixed_precision='{cfg.mixed_precision}' must be no or bf16")
    check(cfg.until in ("latents", "done"), f"until='{cfg.until}' must be latents or done")
    from ..schedulers import check_objective

    check_objective(cfg.objective.scheduler_objective())
    _non_negative(cfg.objective.min_snr_gamma, "objective.min_snr_gamma")
    _non_negative(cfg.unet.stop_after, "unet.stop_after")
    _non_negative(cfg.unet.max_minutes, "unet.max_minutes")
    if need_data:
        check(d.root is not None, "data.root must name a dataset folder (made by `shanshui data synth`)")
        check((Path(d.root).expanduser() / "metadata.jsonl").is_file(),
              f"data.root '{d.root}' has no metadata.jsonl (create it with `shanshui data synth`)")
    check(d.size >= 16 and d.size % 8 == 0, f"data.size={d.size} must be a multiple of 8, >= 16")
    _positive(d.frames_per_clip, "data.frames_per_clip")
    _non_negative(d.max_clips, "data.max_clips")
    check(cfg.model.preset in preset_names(), f"model.preset='{cfg.model.preset}' must be one of "
                                              f"{', '.join(preset_names())}")
    _positive(cfg.model.tokenizer_merges, "model.tokenizer_merges")
    for name in ("steps", "batch_size", "lr"):
        _positive(getattr(v, name), f"vae.{name}")
        _positive(getattr(u, name), f"unet.{name}")
    check(v.crop == 0 or (v.crop % 8 == 0 and 8 <= v.crop <= d.size),
          f"vae.crop={v.crop} must be 0 or a multiple of 8 no larger than data.size={d.size}")
    for name in ("warmup_steps", "l1_weight", "mse_weight", "edge_weight", "kl_weight"):
        _non_negative(getattr(v, name), f"vae.{name}")
    check(v.l1_weight + v.mse_weight > 0, "vae.l1_weight and vae.mse_weight cannot both be 0")
    _non_negative(v.decoder_steps, "vae.decoder_steps")
    _positive(v.decoder_batch_size, "vae.decoder_batch_size")
    _positive(v.decoder_lr, "vae.decoder_lr")
    for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
        _non_negative(getattr(u, name), f"unet.{name}")
    _positive(u.text_lr, "unet.text_lr")
    check(0.0 <= u.text_dropout <= 1.0, f"unet.text_dropout={u.text_dropout} must be in [0, 1]")
    check(0.0 <= u.ema_decay < 1.0, f"unet.ema_decay={u.ema_decay} must be in [0, 1)")
    _positive(cfg.checkpoint.every_minutes, "checkpoint.every_minutes")
    _non_negative(cfg.checkpoint.total_limit, "checkpoint.total_limit")
    if cfg.checkpoint.resume not in (None, "latest"):
        check(Path(cfg.checkpoint.resume).expanduser().is_dir(),
              f"checkpoint.resume '{cfg.checkpoint.resume}' is not a checkpoint folder")
    _non_negative(cfg.samples.every, "samples.every")
    _positive(cfg.samples.steps, "samples.steps")
    _non_negative(cfg.samples.guidance, "samples.guidance")


# ----------------------------------------------------------------------------------------------- data

def caption_corpus(captions: list[str]) -> list[str]:
    """Words for the tokenizer's BPE: every caption word plus the landscape word list."""
    from ..models.tokenizer import LANDSCAPE_CORPUS

    words = []
    for c in captions:
        words += "".join(ch if ch.isalnum() else " " for ch in c.lower()).split()
    return sorted(set(words) | set(LANDSCAPE_CORPUS))


def load_frames(cfg: ImageDataConfig) -> tuple[torch.Tensor, list[str]]:
    """Evenly spaced frames of every clip as uint8 ``(n, 3, S, S)`` and one caption per frame."""
    from ..data.decode import read_frames, resize_center_crop

    root = Path(cfg.root).expanduser()
    records = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines() if line.strip()]
    if cfg.max_clips:
        records = records[: cfg.max_clips]
    check(bool(records), f"'{root}/metadata.jsonl' lists no clips")
    from concurrent.futures import ThreadPoolExecutor

    def clip_frames(rec: dict) -> list[np.ndarray]:
        count = int(rec.get("frames", 1))
        idx = sorted(set(np.linspace(0, count - 1, min(cfg.frames_per_clip, count)).round().astype(int).tolist()))
        return read_frames(root / rec["video"], idx, lambda f: resize_center_crop(f, cfg.size))

    frames, captions = [], []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:   # image decoding frees the GIL
        for rec, imgs in zip(records, pool.map(clip_frames, records)):
            for img in imgs:
                frames.append(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))
                captions.append(rec["caption"])
    return torch.stack(frames), captions


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------- losses

def reconstruction_terms(rec: torch.Tensor, x: torch.Tensor, cfg: VAEPhaseConfig) -> dict[str, torch.Tensor]:
    """L1 + MSE + L1 of the image gradients (crisp brush edges) between ``rec`` and ``x``, weighted by ``cfg``."""
    l1 = (rec - x).abs().mean()
    mse = ((rec - x) ** 2).mean()

    def grads(img):
        return img[..., :, 1:] - img[..., :, :-1], img[..., 1:, :] - img[..., :-1, :]

    (rx, ry), (tx, ty) = grads(rec), grads(x)
    edge = (rx - tx).abs().mean() + (ry - ty).abs().mean()
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.edge_weight * edge
    return {"loss": loss, "l1": l1.detach(), "mse": mse.detach(), "edge": edge.detach()}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def vae_loss(vae, x: torch.Tensor, cfg: VAEPhaseConfig, generator: torch.Generator,
             autocast_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction loss of ``x`` ``(b, 3, H, W)`` in [-1, 1] through a posterior sample."""
    with _autocast(x.device, autocast_dtype):
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=generator).to(x.device)
        rec = vae.decode(z).sample
    out = reconstruction_terms(rec.float(), x, cfg)
    kl = post.kl().mean()
    out["loss"] = out["loss"] + cfg.kl_weight * kl
    out["kl"] = kl.detach()
    return out


def decoder_loss(vae, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, cfg: VAEPhaseConfig,
                 generator: torch.Generator, autocast_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction loss of ``x`` decoded from a posterior sample of its cached latent (encoder not run)."""
    z = mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)
    with _autocast(x.device, autocast_dtype):
        rec = vae.decode(z).sample
    return reconstruction_terms(rec.float(), x, cfg)


def diffusion_step_loss(unet, text_encoder, noise_scheduler, mean: torch.Tensor, std: torch.Tensor,
                        ids: torch.Tensor, empty_ids: torch.Tensor, scaling: float, text_dropout: float,
                        generator: torch.Generator, min_snr_gamma: float = 0.0,
                        autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Diffusion loss on cached latents ``(b, c, h, w)`` with caption token ids ``(b, L)``.

    The target is the scheduler's parameterisation (ε or v); with ``min_snr_gamma > 0`` each sample's squared
    error is weighted by min-SNR-γ. Random numbers come from the CPU ``generator`` and move to the latents'
    device, so every device draws the same numbers."""
    from ..schedulers import min_snr_weights, training_target

    device = mean.device
    b = mean.shape[0]
    z0 = (mean + std * torch.randn(mean.shape, generator=generator).to(device)) * scaling
    drop = (torch.rand(b, generator=generator) < text_dropout).to(device)
    ids = torch.where(drop[:, None], empty_ids.to(device).expand_as(ids), ids)
    noise = torch.randn(z0.shape, generator=generator).to(device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(z0, noise, t)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        text = text_encoder(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=text).sample
    err = ((pred.float() - training_target(noise_scheduler, z0, noise, t).float()) ** 2).mean(dim=(1, 2, 3))
    if min_snr_gamma > 0:
        err = err * min_snr_weights(noise_scheduler, t, min_snr_gamma)
    return err.mean()


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


def _gen(seed: int, phase: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + _PHASE_ID[phase] * 100_000_007 + step)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - d)


# ----------------------------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample_images(unet, vae, text_encoder, tokenizer, prompts: list[str], steps: int, guidance: float,
                  seed: int, size: int, objective: dict | None = None, seeds: list[int] | None = None) -> torch.Tensor:
    """DDIM samples of the image model, ``(n, 3, size, size)`` in [0, 1] (one per prompt), on the models'
    device. ``objective``: the model's parameterisation (see :func:`shanshui.schedulers.make_scheduler`).
    ``seeds``: one initial-noise seed per prompt (default: one generator seeded with ``seed`` for all)."""
    from ..schedulers import make_scheduler

    device = next(unet.parameters()).device
    sched = make_scheduler("ddim", objective=objective)
    sched.set_timesteps(steps)
    ids = tokenizer(list(prompts) + [""] * len(prompts), padding="max_length",
                    max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    text = text_encoder(ids.to(device))[0]
    n = len(prompts)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (unet.config.in_channels, size // factor, size // factor)
    if seeds is None:
        z = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    else:
        z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    z = z.to(device)
    for t in sched.timesteps:
        out = unet(torch.cat([z, z]), t, encoder_hidden_states=text).sample
        cond, unc = out.chunk(2)
        z = sched.step(unc + guidance * (cond - unc), t, z).prev_sample
    img = vae.decode(z / vae.config.scaling_factor).sample
    return (img.float() / 2 + 0.5).clamp(0, 1)


def save_grid(images: torch.Tensor, path: Path, columns: int = 4) -> Path:
    from PIL import Image

    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    cols = min(columns, n)
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    arr = (images.permute(0, 2, 3, 1).cpu().float().numpy() * 255).round().astype(np.uint8)
    for i, img in enumerate(arr):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path


# ----------------------------------------------------------------------------------------------- trainer

class ImageStageTrainer:
    """Runs the three phases with time-based checkpoints. ``run()`` returns the exported model folder."""

    def __init__(self, cfg: ImageTrainConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.autocast = torch.bfloat16 if cfg.mixed_precision == "bf16" else None
        self.stopped_early = False
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.last_save = time.monotonic()
        self.log_file = self.out / "log.jsonl"
        self.progress = 0                # optimiser steps taken in this output folder (names the checkpoints)

    # ---------- models
    def build(self, captions: list[str]) -> None:
        from ..models.presets import make_components
        from ..schedulers import make_scheduler

        comps = make_components(self.cfg.model.preset, seed=self.cfg.model.seed,
                                tokenizer_dir=str(self.out / "tokenizer"),
                                tokenizer_corpus=caption_corpus(captions),
                                tokenizer_merges=self.cfg.model.tokenizer_merges)
        self.vae, self.unet = comps["vae"].to(self.device), comps["unet"].to(self.device)
        self.text_encoder, self.tokenizer = comps["text_encoder"].to(self.device), comps["tokenizer"]
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.noise_scheduler = make_scheduler("ddpm", objective=self.cfg.objective.scheduler_objective())
        u, v = self.cfg.unet, self.cfg.vae
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=v.lr, weight_decay=0.0)
        self.vae_sched = torch.optim.lr_scheduler.LambdaLR(self.vae_opt, _lr_lambda(v.warmup_steps))
        self.unet_opt = torch.optim.AdamW([
            {"params": list(self.unet.parameters()), "lr": u.lr},
            {"params": list(self.text_encoder.parameters()), "lr": u.text_lr},
        ], weight_decay=u.weight_decay)
        self.unet_sched = torch.optim.lr_scheduler.LambdaLR(self.unet_opt, self._cosine(u.steps, u.warmup_steps))
        self.dec_opt = torch.optim.AdamW(self.decoder_parameters(), lr=v.decoder_lr, weight_decay=0.0)

    def decoder_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vae.decoder.parameters()) + list(self.vae.post_quant_conv.parameters())

    @staticmethod
    def _cosine(total: int, warmup: int):
        def f(step):
            if step < warmup:
                return (step + 1) / max(1, warmup)
            p = (step - warmup) / max(1, total - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
        return f

    # ---------- state
    def state_dict(self) -> dict:
        return {k: getattr(self, k).state_dict() for k in
                ("vae", "unet", "text_encoder", "ema_unet", "ema_text", "vae_opt", "vae_sched", "unet_opt",
                 "unet_sched", "dec_opt")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            getattr(self, k).load_state_dict(v)

    def save(self, phase: str, step: int, extra: dict | None = None) -> Path:
        root = checkpoint_dir(self.out)
        root.mkdir(parents=True, exist_ok=True)
        final = root / checkpoint_name(self.progress)
        tmp = root / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(self.state_dict(), tmp / "state.pt")
        (tmp / "config.yaml").write_text(self.cfg.to_yaml())
        (tmp / STATE_FILE).write_text(json.dumps({"phase": phase, "step": step, **(extra or {}),
                                                 "progress": self.progress}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune(self.out, self.cfg.checkpoint.total_limit)
        self.last_save = time.monotonic()
        logger.info("checkpoint %s (phase %s, step %d)", final, phase, step)
        return final

    def maybe_save(self, phase: str, step: int, extra: dict | None = None) -> None:
        if time.monotonic() - self.last_save >= self.cfg.checkpoint.every_minutes * 60:
            self.save(phase, step, extra)

    def log(self, record: dict) -> None:
        with open(self.log_file, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    # ---------- phases
    def run(self) -> Path:
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        t0 = time.monotonic()
        frames, captions = load_frames(cfg.data)
        frames = frames.to(self.device)
        logger.info("%d training frames from %s (%.1f s)", len(frames), cfg.data.root, time.monotonic() - t0)
        self.build(captions)
        self.frames_loaded_s = time.monotonic() - t0
        phase, step, extra = "vae", 0, {}
        resume = resolve_resume(cfg.checkpoint.resume, self.out)
        if resume is not None:
            st = json.loads((resume / STATE_FILE).read_text())
            self.load_state_dict(torch.load(resume / "state.pt", map_location="cpu", weights_only=True))
            phase, step = st["phase"], st["step"]
            extra = {k: v for k, v in st.items() if k not in ("phase", "step", "progress")}
            self.progress = int(st.get("progress", _legacy_progress(st, cfg)))
            logger.info("resumed from %s (phase %s, step %d)", resume, phase, step)
            if phase == "done":
                phase, step = self._extension(extra)
        if phase == "vae":
            self.train_vae(frames, step)
            phase, step = "latents", 0
        if phase == "latents":
            extra = {"scaling_factor": self.cache_latents(frames, captions)}
            phase, step = "unet", 0
            self.save("unet", 0, extra)
        if cfg.until == "latents":
            return self.out
        self.vae.register_to_config(scaling_factor=float(extra["scaling_factor"]))
        if phase == "unet":
            done = self.train_unet(step, extra)
            if done < cfg.unet.steps:  # stop_after (an ablation's first steps) or max_minutes: export as it is
                self.stopped_early = True
                return self.export()
            extra["unet_steps"] = cfg.unet.steps
            phase, step = "decoder", int(extra.get("decoder_steps", 0))
        if phase == "decoder":
            self.train_decoder(frames, step, extra)
            extra["decoder_steps"] = max(int(extra.get("decoder_steps", 0)), cfg.vae.decoder_steps)
            self.save("done", 0, extra)
        return self.export()

    def _extension(self, extra: dict) -> tuple[str, int]:
        """Where a finished run continues when the config asks for more steps than it took."""
        unet_done, dec_done = int(extra.get("unet_steps", 0)), int(extra.get("decoder_steps", 0))
        if self.cfg.unet.steps > unet_done:
            # the cosine schedule follows the new total: the learning rate rises again and decays to the new end
            logger.info("continuing the UNet phase from step %d to %d", unet_done, self.cfg.unet.steps)
            return "unet", unet_done
        if self.cfg.vae.decoder_steps > dec_done:
            logger.info("continuing the decoder phase from step %d to %d", dec_done, self.cfg.vae.decoder_steps)
            return "decoder", dec_done
        return "done", 0

    def train_vae(self, frames: torch.Tensor, start: int) -> None:
        v = self.cfg.vae
        self.vae.train()
        n, _, size, _ = frames.shape
        crop = v.crop or size
        t_last = time.monotonic()
        for step in range(start, v.steps):
            g = _gen(self.cfg.seed, "vae", step)
            idx = torch.randint(0, n, (v.batch_size,), generator=g).to(frames.device)
            oy, ox = (torch.randint(0, size - crop + 1, (2,), generator=g) // 8 * 8).tolist()
            x = to_unit(frames[idx, :, oy:oy + crop, ox:ox + crop])
            out = vae_loss(self.vae, x, v, g, self.autocast)
            self.vae_opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            self.vae_opt.step()
            self.vae_sched.step()
            self.progress += 1
            check(torch.isfinite(out["loss"]).item(), f"VAE loss diverged at step {step}")
            if (step + 1) % self.cfg.log_every == 0 or step + 1 == v.steps:
                now = time.monotonic()
                self.log({"phase": "vae", "step": step + 1, **{k: float(t.detach()) for k, t in out.items()},
                          "s_per_step": (now - t_last) / self.cfg.log_every})
                t_last = now
            self.maybe_save("vae", step + 1)
        self.vae.eval()

    @torch.no_grad()
    def cache_latents(self, frames: torch.Tensor, captions: list[str]) -> float:
        """Encode every frame; returns the scaling factor 1/std of the posterior means."""
        t0 = time.monotonic()
        self.vae.eval()
        means, stds = [], []
        for i in range(0, len(frames), 64):
            dist = self.vae.encode(to_unit(frames[i:i + 64])).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
        mean, std = torch.cat(means), torch.cat(stds)
        scaling = float(1.0 / mean.std())
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        torch.save({"mean": mean, "std": std, "ids": ids}, self.out / "latents.pt")
        # reconstructions of a few frames, for looking at
        pick = torch.linspace(0, len(frames) - 1, 8).long()
        rec = self.vae.decode(mean[pick].to(self.device)).sample
        save_grid(torch.cat([to_unit(frames[pick.to(frames.device)]), rec]).add(1).div(2).clamp(0, 1),
                  self.out / "samples" / "vae_reconstructions.png", columns=8)
        self.log({"phase": "latents", "frames": len(frames), "latent_std": float(mean.std()),
                  "latent_mean": float(mean.mean()), "scaling_factor": scaling, "seconds": time.monotonic() - t0})
        return scaling

    def train_unet(self, start: int, extra: dict) -> int:
        """Train to ``unet.steps`` (or ``unet.stop_after`` / ``unet.max_minutes``); returns the step reached."""
        u = self.cfg.unet
        cache = torch.load(self.out / "latents.pt", map_location="cpu", weights_only=True)
        mean, std, ids = (cache[k].to(self.device) for k in ("mean", "std", "ids"))
        empty = self.tokenizer([""], padding="max_length", max_length=self.tokenizer.model_max_length,
                               return_tensors="pt").input_ids
        scaling = float(extra["scaling_factor"])
        self.unet.train()
        self.text_encoder.train()
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        t_last, running, t_start = time.monotonic(), [], time.monotonic()
        end = min(u.steps, u.stop_after) if u.stop_after else u.steps
        for step in range(start, end):
            g = _gen(self.cfg.seed, "unet", step)
            idx = torch.randint(0, len(mean), (u.batch_size,), generator=g).to(self.device)
            loss = diffusion_step_loss(self.unet, self.text_encoder, self.noise_scheduler, mean[idx], std[idx],
                                       ids[idx], empty, scaling, u.text_dropout, g,
                                       self.cfg.objective.min_snr_gamma, self.autocast)
            self.unet_opt.zero_grad(set_to_none=True)
            loss.backward()
            if u.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, u.max_grad_norm)
            self.unet_opt.step()
            self.unet_sched.step()
            self.progress += 1
            check(torch.isfinite(loss).item(), f"diffusion loss diverged at step {step}")
            ema_update(self.ema_unet, self.unet, u.ema_decay, step)
            ema_update(self.ema_text, self.text_encoder, u.ema_decay, step)
            running.append(float(loss.detach()))
            if (step + 1) % self.cfg.log_every == 0 or step + 1 == u.steps:
                now = time.monotonic()
                self.log({"phase": "unet", "step": step + 1, "loss": sum(running) / len(running),
                          "lr": self.unet_sched.get_last_lr()[0],
                          "s_per_step": (now - t_last) / len(running)})
                t_last, running = now, []
            s = self.cfg.samples
            if s.every and s.prompts and (step + 1) % s.every == 0 and step + 1 < u.steps:
                self.write_samples(f"step-{step + 1:06d}")
            self.maybe_save("unet", step + 1, extra)
            if u.max_minutes and time.monotonic() - t_start > u.max_minutes * 60 and step + 1 < end:
                logger.warning("unet.max_minutes=%g reached: UNet phase ends at step %d of %d", u.max_minutes,
                               step + 1, u.steps)
                self.log({"phase": "unet", "stopped_at": step + 1, "reason": "max_minutes"})
                end = step + 1
                break
        self.save("unet", end, extra)
        return end

    def train_decoder(self, frames: torch.Tensor, start: int, extra: dict) -> None:
        """Phase 4: the decoder alone learns to turn posterior samples of the cached latents into whole frames."""
        v = self.cfg.vae
        if start >= v.decoder_steps:
            return
        cache = {k: v.to(self.device) for k, v in
                 torch.load(self.out / "latents.pt", map_location="cpu", weights_only=True).items()}
        check(len(frames) == len(cache["mean"]), f"the latent cache holds {len(cache['mean'])} frames but the "
                                                 f"dataset gives {len(frames)}; the data changed since phase 2")
        self.vae.train()
        params = self.decoder_parameters()
        t_last, running = time.monotonic(), []
        for step in range(start, v.decoder_steps):
            g = _gen(self.cfg.seed, "decoder", step)
            idx = torch.randint(0, len(frames), (v.decoder_batch_size,), generator=g).to(self.device)
            out = decoder_loss(self.vae, to_unit(frames[idx]), cache["mean"][idx], cache["std"][idx], v, g,
                               self.autocast)
            self.dec_opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.dec_opt.step()
            self.progress += 1
            check(torch.isfinite(out["loss"]).item(), f"decoder loss diverged at step {step}")
            running.append({k: float(t.detach()) for k, t in out.items()})
            if (step + 1) % self.cfg.log_every == 0 or step + 1 == v.decoder_steps:
                now = time.monotonic()
                self.log({"phase": "decoder", "step": step + 1,
                          **{k: float(np.mean([r[k] for r in running])) for k in running[0]},
                          "s_per_step": (now - t_last) / len(running)})
                t_last, running = now, []
            self.maybe_save("decoder", step + 1, extra)
        self.vae.eval()
        with torch.no_grad():
            pick = torch.linspace(0, len(frames) - 1, 8).long().to(self.device)
            rec = self.vae.decode(cache["mean"][pick]).sample
        save_grid(torch.cat([to_unit(frames[pick]), rec]).add(1).div(2).clamp(0, 1), self.out / "samples" /
                  "decoder_reconstructions.png", columns=8)

    def write_samples(self, name: str) -> Path | None:
        s = self.cfg.samples
        if not s.prompts:
            return None
        imgs = sample_images(self.ema_unet.eval(), self.vae.eval(), self.ema_text.eval(), self.tokenizer,
                             s.prompts, s.steps, s.guidance, s.seed, self.cfg.data.size,
                             objective=self.cfg.objective.scheduler_objective())
        return save_grid(imgs, self.out / "samples" / f"{name}.png")

    def export(self) -> Path:
        """Write the EMA image model as a diffusers folder ``OUTPUT/model`` (float32)."""
        from ..pipelines.loading import save_base_components
        from ..schedulers import scheduler_config_for

        self.ema_unet.eval()
        self.ema_text.eval()
        folder = save_base_components({"unet": self.ema_unet, "vae": self.vae, "text_encoder": self.ema_text,
                                       "tokenizer": self.tokenizer}, self.out / "model",
                                      scheduler_config=scheduler_config_for(self.cfg.objective.scheduler_objective()))
        self.write_samples("final")
        return folder


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N`` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        check(torch.cuda.is_available(), f"device='{name}' but this machine has no CUDA device (use cpu or auto)")
        check((device.index or 0) < torch.cuda.device_count(),
              f"device='{name}' but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _legacy_progress(state: dict, cfg: ImageTrainConfig) -> int:
    """Step count of a checkpoint written before checkpoints recorded it (they only knew phase and step)."""
    vae_steps = cfg.vae.steps
    return {"vae": state["step"], "unet": vae_steps + state["step"],
            "done": vae_steps + int(state.get("unet_steps", 0))}.get(state["phase"], vae_steps)


def train_image_model(cfg: ImageTrainConfig) -> Path:
    return ImageStageTrainer(cfg).run()
