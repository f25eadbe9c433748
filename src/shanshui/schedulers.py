"""Noise schedules and samplers used for video (SPEC §0).

Everything video uses the *linear* beta schedule from 0.00085 to 0.012 over 1000 steps (NADM §IV-A; CCDM
Table 3 found it better than SD's scaled-linear for motion training). Sampling defaults to DDIM.
"""

from __future__ import annotations

BETA_START = 0.00085
BETA_END = 0.012
TRAIN_TIMESTEPS = 1000

SCHEDULER_CONFIG = dict(
    num_train_timesteps=TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
    steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon",
)


def make_scheduler(kind: str = "ddim"):
    """A fresh sampler with the video schedule. ``kind``: ``ddim`` (default) or ``ddpm`` (for training)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind == "ddim":
        return DDIMScheduler(**SCHEDULER_CONFIG)
    if kind == "ddpm":
        cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"}
        return DDPMScheduler(**cfg)
    raise ValueError(f"scheduler kind='{kind}' must be 'ddim' or 'ddpm'")


SCHEDULER_FILE = "scheduler/scheduler_config.json"


def model_scheduler_config(model_dir) -> dict:
    """The noise schedule a model folder declares in ``scheduler/scheduler_config.json`` (betas, prediction type,
    zero-terminal-SNR rescaling, ...), or the video default above when the folder has none."""
    import json
    from pathlib import Path

    path = Path(model_dir) / SCHEDULER_FILE if model_dir is not None else None
    if path is None or not path.is_file():
        return dict(SCHEDULER_CONFIG)
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def make_model_scheduler(model_dir, kind: str = "ddim"):
    """A sampler (``ddim``) or training schedule (``ddpm``) with the schedule of ``model_dir`` (see above)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = model_scheduler_config(model_dir)
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg)
    if kind == "ddpm":
        return DDPMScheduler.from_config({k: v for k, v in cfg.items() if k != "set_alpha_to_one"})
    raise ValueError(f"scheduler kind='{kind}' must be 'ddim' or 'ddpm'")


def training_target(scheduler, z0, noise, timesteps):
    """What the UNet learns to predict under ``scheduler.config.prediction_type``: ε, v, or z0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, timesteps)
    if kind == "sample":
        return z0
    raise ValueError(f"prediction_type='{kind}' is not supported")


def predicted_noise(scheduler, model_output, sample, timestep):
    """Convert a model output to ε under the scheduler's prediction type (``sample`` = z_t at ``timestep``)."""
    import torch

    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return model_output
    a = scheduler.alphas_cumprod.to(device=sample.device, dtype=torch.float32)[int(timestep)]
    sa, sb = a.sqrt(), (1 - a).sqrt()
    if kind == "v_prediction":
        return (sa * model_output.float() + sb * sample.float()).to(model_output.dtype)
    if kind == "sample":
        return ((sample.float() - sa * model_output.float()) / sb.clamp_min(1e-8)).to(model_output.dtype)
    raise ValueError(f"prediction_type='{kind}' is not supported")
