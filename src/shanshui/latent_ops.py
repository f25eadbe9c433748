"""Latent-space operations of Every Painting Awakened (SPEC §4.2–4.3), as pure functions on tensors.

* :func:`slerp_frames` — hybrid latent fusion: frame ``l`` of the result is the spherical interpolation
  between the painting path and the proxy path at ``β_l = l / (L − 1)`` (eq. 4), with ``θ`` the angle
  between the two whole latent videos (one angle per batch item, as in the paper). When ``sin θ`` is tiny
  (the two latents are parallel, or anti-parallel) the weights ``sin((1−β)θ)/sin θ`` are numerically
  unstable; there the function returns the linear interpolation, which is slerp's limit for ``θ → 0``.
  ``linear=True`` gives the uniform linear interpolation of the paper's ablation.
* :func:`vsds` — video score distillation: one fixed noise ``ε``; for each timestep ``t`` (high to low)
  ``z_t = √ᾱ_t·ẑ0 + √(1−ᾱ_t)·ε``, ``∇ = ω(t)·(ε_θ(z_t, t) − ε)``, ``ẑ0 ← ẑ0 − α_i·∇``
  with ``ω(t) = 1 − ᾱ_t`` (the DreamFusion weighting that I4VGen's VSDS uses).
* :func:`alpha_schedule` — the "stepwise-decreasing" update weights the paper found best: ``high`` for the
  first half of the steps, 1 for the rest (the paper gives the shape, not the numbers; ``high = 2`` is ours).
* :func:`vsds_timesteps` — the sampler's timesteps in ``[p·T, T]``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .errors import check

P_VSDS = 0.6
ALPHA_HIGH = 2.0
PARALLEL_EPS = 1e-4


def frame_betas(frames: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``β_l = l / (L − 1)`` for ``l = 0 … L−1`` (``[0.]`` for a single frame)."""
    check(frames >= 1, f"frames={frames} must be >= 1")
    if frames == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.arange(frames, dtype=torch.float64, device=device).div(frames - 1).to(dtype)


def slerp_frames(z_r: torch.Tensor, z_s: torch.Tensor, linear: bool = False,
                 betas: torch.Tensor | None = None, eps: float = PARALLEL_EPS) -> torch.Tensor:
    """Fuse two latent videos ``(b, c, f, h, w)`` over frames, from ``z_r`` (β=0) to ``z_s`` (β=1)."""
    check(z_r.shape == z_s.shape and z_r.ndim == 5, f"latents must both be (b, c, f, h, w), got "
                                                    f"{tuple(z_r.shape)} and {tuple(z_s.shape)}")
    b, _, f = z_r.shape[:3]
    beta = frame_betas(f, torch.float64, z_r.device) if betas is None else betas.to(z_r.device, torch.float64)
    check(beta.shape == (f,), f"betas must have one value per frame ({f}), got {tuple(beta.shape)}")
    beta = beta.view(1, 1, f, 1, 1)                                                   # (1, 1, f, 1, 1)
    r, s = z_r.double(), z_s.double()
    w_r, w_s = 1.0 - beta, beta                                                       # linear weights
    if not linear:
        cos = torch.nn.functional.cosine_similarity(r.reshape(b, -1), s.reshape(b, -1), dim=1)  # (b,)
        theta = torch.arccos(cos.clamp(-1.0, 1.0)).view(b, 1, 1, 1, 1)               # (b, 1, 1, 1, 1)
        sin = torch.sin(theta)
        safe = sin.abs() > eps
        sin_safe = torch.where(safe, sin, torch.ones_like(sin))
        w_r = torch.where(safe, torch.sin((1.0 - beta) * theta) / sin_safe, w_r)
        w_s = torch.where(safe, torch.sin(beta * theta) / sin_safe, w_s)
    return (w_r * r + w_s * s).to(z_r.dtype)


def alpha_schedule(n: int, high: float = ALPHA_HIGH) -> list[float]:
    """Stepwise-decreasing weights: ``high`` for the first ``ceil(n/2)`` steps, then 1."""
    check(n >= 0, f"n={n} must be >= 0")
    check(high >= 1 and math.isfinite(high), f"alpha high={high} must be a finite number >= 1")
    return [float(high) if i < math.ceil(n / 2) else 1.0 for i in range(n)]


def vsds_timesteps(timesteps: Sequence[int] | torch.Tensor, p: float = P_VSDS,
                   train_steps: int = 1000) -> list[int]:
    """The timesteps ``t >= p·T`` of a (descending) sampler schedule: the VSDS phase."""
    check(0.0 < p < 1.0, f"p={p} must be in (0, 1)")
    return [int(t) for t in timesteps if int(t) >= p * train_steps]


def vsds(z0: torch.Tensor, noise: torch.Tensor, timesteps: Sequence[int], eps_fn: Callable,
         alphas_cumprod: torch.Tensor, alphas: Sequence[float] | None = None) -> torch.Tensor:
    """Refine a (static) latent video ``z0`` by video score distillation (see the module docstring).

    ``eps_fn(z_t, t)`` returns the model's (guided) noise prediction for ``z_t``; ``noise`` is the one
    fixed ``ε`` (same shape as ``z0``); ``alphas`` the per-step update weights (default:
    stepwise-decreasing).
    """
    check(noise.shape == z0.shape, f"noise shape {tuple(noise.shape)} != latent shape {tuple(z0.shape)}")
    alphas = alpha_schedule(len(timesteps)) if alphas is None else list(alphas)
    check(len(alphas) == len(timesteps), f"{len(alphas)} update weights for {len(timesteps)} timesteps")
    z = z0
    for t, a in zip(timesteps, alphas):
        ab = alphas_cumprod[int(t)].to(z.device, torch.float64)
        z_t = (ab.sqrt() * z.double() + (1 - ab).sqrt() * noise.double()).to(z.dtype)
        grad = (1 - ab).to(z.dtype) * (eps_fn(z_t, t) - noise)                     # ω(t)·(ε_θ − ε)
        z = z - a * grad
    return z
