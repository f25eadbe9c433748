"""Noise schedules, samplers and prediction parameterisations used for video (SPEC §0).

Everything video uses the *linear* beta schedule from 0.00085 to 0.012 over 1000 steps (NADM §IV-A; CCDM
Table 3 found it better than SD's scaled-linear for motion training). Sampling defaults to DDIM.

A model folder may change the *objective* on top of those betas through its
``scheduler/scheduler_config.json`` — the three keys of :data:`OBJECTIVE_KEYS`:

* ``prediction_type``: ``epsilon`` (SD 1.5, the default) or ``v_prediction`` (the network predicts
  ``v = √ᾱ·ε − √(1−ᾱ)·x0``);
* ``rescale_betas_zero_snr``: rescale the betas so that the last timestep is pure noise (ᾱ_T = 0, "zero
  terminal SNR"); only meaningful with ``v_prediction`` (ε cannot recover x0 from pure noise);
* ``timestep_spacing``: ``leading`` (SD 1.5) or ``trailing`` (sampling starts at t = T − 1).

SD 1.5 configs carry ``epsilon`` and no rescaling, so SD 1.5 models keep exactly today's behaviour; the
bundled model v2 ships ``v_prediction`` + zero terminal SNR + ``trailing`` (MODEL_CARD.md).

Every place that needs ε or x0 from a network output goes through :func:`split_prediction`, which is
numerically stable for both parameterisations, also at ᾱ = 0 where ``x0 = (z − √(1−ᾱ)ε)/√ᾱ`` is undefined.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import ShanshuiError, check

BETA_START = 0.00085
BETA_END = 0.012
TRAIN_TIMESTEPS = 1000

SCHEDULER_CONFIG = dict(
    num_train_timesteps=TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
    steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon",
)

OBJECTIVE_KEYS = ("prediction_type", "rescale_betas_zero_snr", "timestep_spacing")
PREDICTION_TYPES = ("epsilon", "v_prediction")
SPACINGS = ("leading", "trailing", "linspace")


def check_objective(objective: dict) -> dict:
    """Validate an objective dict (keys of :data:`OBJECTIVE_KEYS`); returns it with only those keys."""
    unknown = sorted(set(objective) - set(OBJECTIVE_KEYS))
    check(not unknown, f"unknown schedule key(s) {unknown}; allowed: {', '.join(OBJECTIVE_KEYS)}")
    pred = objective.get("prediction_type", "epsilon")
    check(pred in PREDICTION_TYPES, f"prediction_type='{pred}' must be one of {', '.join(PREDICTION_TYPES)}")
    spacing = objective.get("timestep_spacing", "leading")
    check(spacing in SPACINGS, f"timestep_spacing='{spacing}' must be one of {', '.join(SPACINGS)}")
    zero = bool(objective.get("rescale_betas_zero_snr", False))
    check(not (zero and pred == "epsilon"),
          "rescale_betas_zero_snr=true needs prediction_type='v_prediction' (ε cannot describe pure noise)")
    return {k: objective[k] for k in OBJECTIVE_KEYS if k in objective}


def make_scheduler(kind: str = "ddim", objective: dict | None = None):
    """A fresh sampler with the video schedule. ``kind``: ``ddim`` (default) or ``ddpm`` (for training).

    ``objective`` (see :data:`OBJECTIVE_KEYS`) overrides the parameterisation, terminal SNR and spacing.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = {**SCHEDULER_CONFIG, **check_objective(dict(objective or {}))}
    if kind == "ddim":
        return DDIMScheduler(**cfg)
    if kind == "ddpm":
        cfg.pop("set_alpha_to_one")
        return DDPMScheduler(**cfg)
    raise ValueError(f"scheduler kind='{kind}' must be 'ddim' or 'ddpm'")


def read_objective(model_dir: str | Path | None) -> dict:
    """The objective keys of ``MODEL/scheduler/scheduler_config.json`` ({} when the file is absent)."""
    if model_dir is None:
        return {}
    path = Path(model_dir) / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShanshuiError(f"cannot read scheduler config '{path}': {exc}") from exc
    return check_objective({k: cfg[k] for k in OBJECTIVE_KEYS if k in cfg})


def scheduler_config_for(objective: dict | None) -> dict:
    """The ``scheduler_config.json`` a model folder with this objective ships (a DDIM config)."""
    return {"_class_name": "DDIMScheduler", **SCHEDULER_CONFIG, **check_objective(dict(objective or {}))}


# ------------------------------------------------------------------------------------ parameterisation

def _coefficients(scheduler, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(√ᾱ_t, √(1−ᾱ_t))`` broadcastable to ``like`` (a batch of per-sample ``t`` or one scalar ``t``)."""
    acp = scheduler.alphas_cumprod.to(like.device, torch.float32)
    a = acp[torch.as_tensor(t, device=like.device).long()]
    if a.dim():                                                       # (b,) -> (b, 1, ..., 1)
        a = a.reshape(a.shape + (1,) * (like.dim() - a.dim()))
    return a.sqrt(), (1 - a).sqrt()


def split_prediction(scheduler, output: torch.Tensor, sample: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, ε)`` implied by a network ``output`` for the noisy ``sample`` at timestep ``t``.

    ``epsilon``: ``ε = output``, ``x0 = (z − σε)/α``. ``v_prediction``: ``x0 = α·z − σ·v``, ``ε = σ·z + α·v``
    (α = √ᾱ_t, σ = √(1−ᾱ_t)), exact also at ᾱ = 0. Computed in float32, returned in ``output``'s dtype.
    """
    alpha, sigma = _coefficients(scheduler, t, sample)
    z, out = sample.float(), output.float()
    pred = scheduler.config.prediction_type
    if pred == "v_prediction":
        x0, eps = alpha * z - sigma * out, sigma * z + alpha * out
    elif pred == "epsilon":
        eps = out
        x0 = (z - sigma * eps) / alpha
    else:
        raise ValueError(f"prediction_type='{pred}' is not supported (epsilon or v_prediction)")
    return x0.to(output.dtype), eps.to(output.dtype)


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network learns to output: ``ε`` (epsilon) or ``v = α·ε − σ·x0`` (v_prediction)."""
    pred = scheduler.config.prediction_type
    if pred == "epsilon":
        return noise
    if pred == "v_prediction":
        alpha, sigma = _coefficients(scheduler, t, x0)
        return (alpha * noise.float() - sigma * x0.float()).to(noise.dtype)
    raise ValueError(f"prediction_type='{pred}' is not supported (epsilon or v_prediction)")


def snr(scheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``ᾱ_t / (1 − ᾱ_t)`` per timestep (float32)."""
    acp = scheduler.alphas_cumprod.to(torch.as_tensor(t).device, torch.float32)[torch.as_tensor(t).long()]
    return acp / (1 - acp)


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023) for the scheduler's parameterisation, one per timestep.

    In x0 terms every timestep gets weight ``min(SNR, γ)``; expressed on the ε loss that is
    ``min(SNR, γ)/SNR`` and on the v loss ``min(SNR, γ)/(SNR + 1)``.
    """
    check(gamma > 0, f"min-SNR gamma={gamma} must be > 0")
    s = snr(scheduler, t)
    clipped = torch.clamp(s, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (s + 1)
    return torch.where(s > 0, clipped / s.clamp(min=1e-12), torch.ones_like(s))


# ------------------------------------------------------------------------------------ model folders
SCHEDULER_FILE = "scheduler/scheduler_config.json"


def model_scheduler_config(model_dir) -> dict:
    """The full DDIM config of a model folder: the video schedule with the folder's objective on top."""
    return scheduler_config_for(read_objective(model_dir))


def make_model_scheduler(model_dir, kind: str = "ddim"):
    """A sampler (``ddim``) or training schedule (``ddpm``) with the objective of ``model_dir``."""
    return make_scheduler(kind, objective=read_objective(model_dir))


def predicted_noise(scheduler, model_output, sample, timestep):
    """ε implied by a model output (``sample`` = z_t at ``timestep``); see :func:`split_prediction`."""
    return split_prediction(scheduler, model_output, sample, timestep)[1]
