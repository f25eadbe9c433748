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
