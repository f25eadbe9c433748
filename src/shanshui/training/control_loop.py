"""``shanshui train-control``: train the image-to-video control model on clips with exact flow.

Built from the same parts as ``shanshui train`` (:mod:`shanshui.training.loop`): accelerate, the epoch
sampler and per-step random generators that make a resumed run continue exactly, atomic checkpoints with
pruning (:mod:`shanshui.training.checkpoint`), the NaN/inf stop that keeps the last good checkpoint, the
frozen-weight guard, and the CSV/TensorBoard log. What differs is the model and the loss:

* frozen: VAE, text encoder, every image layer of the UNet;
* trainable: the I2V model's motion modules (fresh, or started from ``model.motion_module``) and the
  control module (first-frame conditioning, motion encoder + value projections, strength embedding,
  refinement network T) — see :mod:`shanshui.models.control`;
* loss: ``λ_diff·||target − UNet(z_t, t, text, z0[frame 0], F, M_s)||² + λ_refine·EPE(T(field, frame 0), v)``
  where the target follows the base model's prediction type (ε or v, read from its scheduler config),
  ``F`` is the clip's exact per-frame flow, ``M_s`` its mean speed (px/frame), and ``(field, v)`` a pair of
  eq. 5–7 Gaussian field and true flow (:mod:`shanshui.control.refine`).

``max_minutes`` caps the wall time of the training steps: when reached, the run stops after the current
step, writes a checkpoint and the final weights, and exits normally (``--resume latest`` continues).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ShanshuiError, check
from .checkpoint import resolve_resume
from .control_config import ControlTrainConfig
from .loop import (
    FROZEN_DTYPES,
    RunCheckpoints,
    StepLosses,
    TrainResult,
    any_process,
    epoch_batches,
    make_accelerator,
    make_optimization,
    register_weight_hooks,
    start_run,
    step_generator,
)
from .monitor import FrozenGuard

logger = logging.getLogger("shanshui.training")

FIELDS = ("step", "loss", "loss_diff", "loss_refine", "lr", "grad_norm", "seconds", "samples")


@dataclass
class ControlModels:
    net: nn.Module                 # ImageToVideoUNet (UNet + control module)
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    noise_scheduler: object
    motion_config: object

    def trainable_parameters(self, train_motion: bool = True) -> list[nn.Parameter]:
        from ..models.motion import motion_parameters

        motion = motion_parameters(self.net.unet) if train_motion else []
        return motion + list(self.net.control.parameters())

    def frozen_parameters(self, trainable) -> list[tuple[str, nn.Parameter]]:
        ids = {id(p) for p in trainable}
        out = []
        for prefix, module in (("unet", self.net.unet), ("vae", self.vae), ("text_encoder", self.text_encoder)):
            out += [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if id(p) not in ids]
        return out


def build_control_models(cfg: ControlTrainConfig, device="cpu", frozen_dtype=torch.float32) -> ControlModels:
    from ..models.control import ControlConfig, build_control
    from ..models.motion import MotionConfig, build_video_unet
    from ..schedulers import make_model_scheduler, make_scheduler

    m = cfg.model
    fields = dict(sparse_causal=m.sparse_causal, versatile=m.versatile, norm=m.norm, max_seq_length=m.max_seq_length)
    if m.num_attention_heads is not None:
        fields["num_attention_heads"] = m.num_attention_heads
    if m.preset is not None:
        from ..models.presets import make_components

        comps = make_components(m.preset, seed=m.preset_seed, motion=fields)
        motion_config = comps["motion_config"]
        scheduler = make_scheduler("ddpm")
    else:
        from ..pipelines.loading import load_base_components

        comps = load_base_components(m.base_model, torch.float32)
        motion_config = MotionConfig.for_unet(comps["unet"].config, **fields)
        scheduler = make_model_scheduler(Path(m.base_model).expanduser(), "ddpm")
    if m.prediction_type is not None:
        scheduler.register_to_config(prediction_type=m.prediction_type)
    state = None
    if m.motion_module is not None:
        from ..models.motion_io import load_motion_module

        state, file_config = load_motion_module(m.motion_module)
        file_config.sparse_causal, file_config.versatile = m.sparse_causal, m.versatile
        motion_config = file_config
    torch.manual_seed(cfg.seed)
    try:
        video_unet = build_video_unet(comps["unet"], motion_config, state)
    except ShanshuiError:
        raise
    except Exception as exc:
        raise ShanshuiError(f"cannot build the video UNet: {type(exc).__name__}: {exc}") from exc
    vae = comps["vae"]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    overrides = dict(first_frame=m.first_frame, motion=m.motion, refiner_channels=tuple(m.refiner_channels))
    if m.encoder_channels is not None:
        overrides["encoder_channels"] = tuple(m.encoder_channels)
    control_config = ControlConfig.for_unet(video_unet.config, vae_factor=factor,
                                            temb_dim=video_unet.time_embedding.linear_2.out_features, **overrides)
    net = build_control(video_unet, control_config)
    net.unet.requires_grad_(False)
    if m.train_motion_modules:
        from ..models.motion import motion_parameters

        for p in motion_parameters(net.unet):
            p.requires_grad_(True)
    net.control.requires_grad_(True)
    net.train()
    if m.gradient_checkpointing:
        net.unet.enable_gradient_checkpointing()
    text_encoder = comps["text_encoder"]
    vae.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    net.to(device)
    for frozen in (vae, text_encoder):
        frozen.to(device)
        if frozen_dtype != torch.float32:
            frozen.to(frozen_dtype)
    return ControlModels(net=net, vae=vae, text_encoder=text_encoder, tokenizer=comps["tokenizer"],
                         noise_scheduler=scheduler, motion_config=motion_config)


def save_control_weights(models: ControlModels, folder) -> dict:
    from ..models.control import save_control

    return save_control(models.net, folder, models.motion_config, scheduler_config=models.noise_scheduler.config)


def load_control_weights(models: ControlModels, folder) -> None:
    """Strictly load what :func:`save_control_weights` wrote into ``models`` (names the first bad key)."""
    from ..models.control import read_control
    from ..models.motion_io import load_motion_module, load_state_dict_strict, motion_state_dict

    folder = Path(folder)
    state, _ = load_motion_module(folder / "motion_module.safetensors")
    expected = motion_state_dict(models.net.unet)
    for key in sorted(set(expected) | set(state)):
        if key not in state:
            raise ShanshuiError(f"checkpoint '{folder}': motion module key '{key}' is missing")
        if key not in expected:
            raise ShanshuiError(f"checkpoint '{folder}': motion module key '{key}' is unexpected")
        check(state[key].shape == expected[key].shape,
              f"checkpoint '{folder}': '{key}' has shape {tuple(state[key].shape)}, expected "
              f"{tuple(expected[key].shape)}")
    with torch.no_grad():
        current = models.net.unet.state_dict()
        for key, value in state.items():
            current[key].copy_(value)
    control_state, _ = read_control(folder)
    load_state_dict_strict(models.net.control, control_state, what=f"control module in '{folder}'")


def _randn(shape, generator, device):
    return torch.randn(shape, generator=generator).to(device)


def control_step(batch: dict, models: ControlModels, cfg: ControlTrainConfig, generator: torch.Generator,
                 net=None) -> dict[str, torch.Tensor]:
    """The loss of one batch; every random draw comes from ``generator`` (CPU), in a fixed order."""
    from ..schedulers import training_target
    from .step import encode_captions, encode_pixels

    net = models.net if net is None else net
    d, lo = cfg.data, cfg.loss
    sched = models.noise_scheduler
    device = next(models.net.unet.parameters()).device
    pixels = batch["pixel_values"]                                                     # (b, f, 3, H, W)
    b, f = pixels.shape[:2]
    sf = models.vae.config.scaling_factor

    mean, std = encode_pixels(models.vae, pixels)                                      # (b, c, f, h, w)
    z0 = mean + std * _randn(mean.shape, generator, device) if d.latent_sampling == "sample" else mean
    z0 = z0 * sf
    first = mean[:, :, 0] * sf                                                         # (b, c, h, w) clean

    drop_text = torch.rand(b, generator=generator) < d.text_dropout
    drop_motion = torch.rand(b, generator=generator) < d.motion_dropout
    drop_strength = torch.rand(b, generator=generator) < d.strength_dropout
    captions = ["" if x else c for c, x in zip(batch["caption"], drop_text.tolist())]
    text = encode_captions(models.tokenizer, models.text_encoder, captions)             # (b, 77, d)

    flow = batch["flow"].to(device).float()                                            # (b, f−1, H, W, 2)
    motion = torch.cat([flow, flow[:, -1:]], dim=1).permute(0, 1, 4, 2, 3)             # (b, f, 2, H, W)
    strength = flow.norm(dim=-1).mean(dim=(1, 2, 3))                                   # (b,) M_s px/frame

    noise = _randn(z0.shape, generator, device)
    timesteps = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = sched.add_noise(z0, noise, timesteps)
    target = training_target(sched, z0, noise, timesteps)

    dtype = next(models.net.unet.parameters()).dtype
    text_frames = text.to(dtype).repeat_interleave(f, dim=0)
    loss_diff = torch.zeros((), device=device)
    loss_refine = torch.zeros((), device=device)
    if lo.lambda_diff > 0:
        # dropped rows get no motion field (zero field, zero flag) / no strength embedding
        pred = net(noisy.to(dtype), timesteps, text_frames, first_latent=first.to(dtype), motion=motion,
                   strength=strength, motion_keep=(~drop_motion).to(device),
                   strength_keep=(~drop_strength).to(device))
        loss_diff = torch.nn.functional.mse_loss(pred.float(), target.float())
    if lo.lambda_refine > 0:
        field = batch["refine_input"].to(device).float().permute(0, 3, 1, 2)           # (b, 2, H, W)
        true = flow[:, 0].permute(0, 3, 1, 2)                                          # (b, 2, H, W)
        valid = batch["valid"][:, 0].to(device).float()                                # (b, H, W)
        image = pixels[:, 0].to(device).float()                                        # (b, 3, H, W)
        refined = models.net.control.refiner(field, image)
        epe = (refined - true).norm(dim=1)                                             # (b, H, W)
        loss_refine = (epe * valid).sum() / valid.sum().clamp_min(1.0)
    loss = lo.lambda_diff * loss_diff + lo.lambda_refine * loss_refine
    return {"loss": loss, "loss_diff": loss_diff.detach(), "loss_refine": loss_refine.detach()}


def train_control(cfg: ControlTrainConfig, step_fn=None, progress: bool = True) -> TrainResult:
    """Run (or continue) the control training described by ``cfg``."""
    step_fn = step_fn or control_step
    from tqdm.auto import tqdm

    from ..data.control_dataset import ControlClipDataset, collate_control

    out = Path(cfg.output_dir).expanduser()
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # 1. Data and resume point before any model is built
    d = cfg.data
    dataset = ControlClipDataset(d.root, frames=d.frames, size=d.size, seed=cfg.seed, max_arrows=d.max_arrows,
                                 limit=d.limit)
    per_step = cfg.optim.batch_size * accelerator.num_processes
    check(len(dataset) >= per_step, f"the dataset has {len(dataset)} clip(s), fewer than one step's {per_step}")
    resume = resolve_resume(cfg.checkpoint.resume, out)

    # 2. Models
    models = build_control_models(cfg, device=accelerator.device, frozen_dtype=FROZEN_DTYPES[cfg.mixed_precision])
    factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
    check(d.size % factor == 0, f"data.size={d.size} must be a multiple of the VAE's factor {factor}")
    params = models.trainable_parameters(cfg.model.train_motion_modules)
    refiner_ids = {id(p) for p in models.net.control.refiner.parameters()}
    # T and the diffusion parts are clipped separately: T's small gradients are not scaled by the UNet's
    clip_groups = [[p for p in params if id(p) not in refiner_ids], [p for p in params if id(p) in refiner_ids]]

    o = cfg.optim
    optimizer, lr_scheduler, sampler, loader = make_optimization(cfg, params, dataset, collate_control)
    guard = FrozenGuard(models.frozen_parameters(params), params, params)
    net, optimizer, loader, lr_scheduler = accelerator.prepare(models.net, optimizer, loader, lr_scheduler)

    register_weight_hooks(accelerator, lambda folder: load_control_weights(models, folder))
    pos, metrics = start_run(accelerator, cfg, out, resume, fields=FIELDS)
    checkpoints = RunCheckpoints(accelerator, out, cfg, guard, len(loader),
                                 write_weights=lambda folder: save_control_weights(models, folder))
    last_ckpt = resume

    max_steps = cfg.schedule.max_steps
    budget = cfg.max_minutes * 60.0
    started = time.time()
    out_of_time = False
    bar = tqdm(total=max_steps, initial=pos.step, desc="training control", disable=not (progress and main))
    losses = StepLosses(accelerator, out, "loss_refine")
    last_loss, checked, grad_norm = None, False, None
    try:
        for batch in epoch_batches(accelerator, loader, sampler, dataset, pos, max_steps):
            with accelerator.accumulate(net):
                gen = step_generator(cfg.seed, accelerator.process_index, pos.epoch, pos.batch_in_epoch)
                terms = step_fn(batch, models, cfg, gen, net=net)
                values = losses.finite(terms, pos.step)
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and o.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(clip_groups[0], o.max_grad_norm)
                    accelerator.clip_grad_norm_(clip_groups[1], o.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.add(values, batch)
            pos.batch_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            lr_scheduler.step()
            pos.step += 1
            if not checked:
                guard.verify()
                checked = True
            mean = losses.mean()
            last_loss = float(mean[0])
            if budget > 0:
                out_of_time = any_process(accelerator, time.time() - started >= budget)
            if main and (pos.step % cfg.log_every == 0 or pos.step in (1, max_steps) or out_of_time):
                metrics.log(losses.row(pos.step, mean, lr_scheduler.get_last_lr()[0], grad_norm))
            bar.update()
            bar.set_postfix(loss=f"{last_loss:.4f}")
            losses.reset()
            if cfg.checkpoint.every and pos.step % cfg.checkpoint.every == 0:
                last_ckpt = checkpoints.save(pos)
            if pos.step >= max_steps or out_of_time:
                break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if out_of_time and main:
        logger.info("time budget of %.1f min reached at step %d: saving and stopping", cfg.max_minutes,
                    pos.step)

    last_ckpt = checkpoints.final(last_ckpt, pos)
    final_dir = out / "final"
    if main:
        save_control_weights(models, final_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(out, pos.step, final_dir, last_ckpt, last_loss, main)


def evaluate_control_loss(cfg: ControlTrainConfig, weights: str | Path | None, root: str | Path, clips: int = 4,
                          seed: int = 1234, device="cpu") -> dict:
    """Mean ``loss_diff`` and ``loss_refine`` of the first ``clips`` clips of ``root`` with fixed random draws,
    for the models of ``cfg`` with ``weights`` (a ``final``/checkpoint folder) loaded, or as initialised when
    ``None``: a held-out measure of progress."""
    import math

    from ..data.control_dataset import ControlClipDataset, collate_control

    d = cfg.data
    models = build_control_models(cfg, device=device)
    if weights is not None:
        load_control_weights(models, weights)
    models.net.eval()
    dataset = ControlClipDataset(root, frames=d.frames, size=d.size, seed=seed, max_arrows=d.max_arrows, limit=clips)
    sums = {"loss_diff": 0.0, "loss_refine": 0.0}
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = collate_control([dataset[i]])
            terms = control_step(batch, models, cfg, step_generator(seed, 0, 0, i))
            for k in sums:
                sums[k] += float(terms[k])
    out = {k: v / len(dataset) for k, v in sums.items()}
    check(all(math.isfinite(v) for v in out.values()), f"held-out loss is {out}")
    return out
