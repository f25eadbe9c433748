"""Keyframes: pin chosen frames of a generated video to given images (CCDM's keyframe control, training-free).

The recipe (see ``docs/your-own-models.md``):

* each keyframe image is VAE-encoded once to ``z_k`` and gets **one fixed noise sample** ``ε_k``;
* **before every UNet call** the pinned frame is set to ``z_k`` noised to the current step,
  ``√ᾱ_t·z_k + √(1−ᾱ_t)·ε_k`` — the motion modules therefore see a consistent, gradually sharpening frame
  at that index and pull its neighbours towards it;
* **after every step** the sampler's output for that frame is replaced again (noised to the next step,
  and by ``z_k`` itself after the last one): the projection is two-sided, so the pinned frame never
  drifts, and it decodes to the VAE reconstruction of the keyframe;
* **neighbours start from noise correlated with the keyframe**: frame ``f`` at distance ``d`` from its
  nearest keyframe starts from ``√ᾱ_T·ρ·z_k + √(1−ᾱ_T)·(ρ·ε_k + √(1−ρ²)·n_f)`` with ``ρ = exp(−d/τ)``
  (``τ`` = ``decay`` frames), so the first steps already agree on the keyframe's layout near it.

With ``ρ → 0`` far away, distant frames start from their own noise as without keyframes.

**Neighbour guidance** (``guidance = g > 0``, beyond CCDM): after every step, each unpinned frame's predicted
clean latent ``x̂0_f`` is pulled towards its nearest keyframe by ``w = g·ρ·(1 − i/N)`` (step ``i`` of ``N``):
the latent gets ``√ᾱ_next·w·(z_k − x̂0_f)``, which for DDIM is exactly a step taken from
``(1 − w)·x̂0_f + w·z_k`` with the frame's own noise direction. Strong at the start (the layout around a
keyframe agrees with it), nothing at the end (the frames finish with the model's own detail).

``mode="clean"`` pins the clean ``z_k`` itself before every UNet call instead of its noised version. An
untrained motion module has never seen a clean frame among noisy ones; a module trained with CCDM's keyframe
term (``loss.lambda_key`` in ``shanshui train``) has, and this is the mode that matches its training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ShanshuiError, check

DEFAULT_DECAY = 2.0
DEFAULT_GUIDANCE = 0.75   # measured on the bundled model: removes the mid-clip flash (docs/your-own-models.md)
MODES = ("noised", "clean")


@dataclass
class Keyframe:
    index: int
    image: object  # path, PIL image or uint8 array (H, W, 3)


def parse_keyframe(spec: str) -> Keyframe:
    """``"INDEX:IMAGE"`` (CLI) -> :class:`Keyframe` (the index may be negative: -1 = last frame)."""
    head, sep, tail = str(spec).partition(":")
    try:
        index = int(head)
    except ValueError:
        index = None
    check(sep == ":" and index is not None and tail != "",
          f"--keyframe '{spec}' must be INDEX:IMAGE, e.g. 0:first.png or -1:last.png")
    check(Path(tail).expanduser().is_file(), f"--keyframe image '{tail}' does not exist")
    return Keyframe(index, Path(tail).expanduser())


def as_keyframes(items) -> list[Keyframe]:
    out = []
    for item in items or []:
        if isinstance(item, Keyframe):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse_keyframe(item))
        else:
            check(isinstance(item, (tuple, list)) and len(item) == 2,
                  f"keyframe {item!r} must be (index, image) or 'INDEX:IMAGE'")
            out.append(Keyframe(int(item[0]), item[1]))
    return out


def resolve_indices(keyframes: list[Keyframe], num_frames: int) -> list[Keyframe]:
    """Negative indices counted from the end; out of range or repeated indices are errors."""
    out, seen = [], set()
    for k in keyframes:
        i = k.index + num_frames if k.index < 0 else k.index
        check(0 <= i < num_frames, f"keyframe index {k.index} is outside the video's {num_frames} frames "
                                   f"(allowed: 0..{num_frames - 1} or -{num_frames}..-1)")
        check(i not in seen, f"keyframe index {i} is given twice")
        seen.add(i)
        out.append(Keyframe(i, k.image))
    return sorted(out, key=lambda k: k.index)


def keyframe_rgb(image, width: int, height: int) -> np.ndarray:
    """A keyframe as uint8 RGB exactly ``width × height`` (cover and centre-crop)."""
    from ..image_intake import array_to_rgb, fit_to, read_image

    if isinstance(image, (str, Path)):
        rgb = read_image(image)[0]
    else:
        rgb = array_to_rgb(np.asarray(image))[0]
    return fit_to(rgb, width, height)


def correlation(distance: np.ndarray | float, decay: float) -> np.ndarray:
    """``ρ = exp(−d/τ)``; 0 everywhere when ``decay`` is 0."""
    d = np.asarray(distance, dtype=np.float64)
    if decay <= 0:
        return np.where(d == 0, 1.0, 0.0)
    return np.exp(-d / decay)


class KeyframePins:
    """Pinned frames of one latent video ``(1, c, L, h, w)``: ``z`` ``(1, c, K, h, w)`` and fixed ``eps``."""

    def __init__(self, scheduler, indices: list[int], z: torch.Tensor, eps: torch.Tensor, num_frames: int,
                 decay: float = DEFAULT_DECAY, mode: str = "noised", guidance: float = DEFAULT_GUIDANCE):
        check(decay >= 0 and math.isfinite(decay), f"keyframe decay={decay} must be a finite number >= 0")
        check(mode in MODES, f"keyframe mode='{mode}' must be one of {', '.join(MODES)}")
        check(0 <= guidance <= 1, f"keyframe guidance={guidance} must be in [0, 1]")
        self.scheduler, self.indices, self.z, self.eps = scheduler, list(indices), z, eps
        self.num_frames, self.decay, self.mode, self.guidance = num_frames, decay, mode, float(guidance)

    def noised(self, t) -> torch.Tensor:
        """``√ᾱ_t·z_k + √(1−ᾱ_t)·ε_k`` (``t=None`` or ``mode="clean"``: the clean ``z_k``)."""
        if t is None or self.mode == "clean":
            return self.z
        return self.scheduler.add_noise(self.z, self.eps, torch.as_tensor([int(t)], device=self.z.device))

    def pin(self, latents: torch.Tensor, t) -> torch.Tensor:
        out = latents.clone()
        out[:, :, self.indices] = self.noised(t).to(latents.dtype)
        return out

    def guide(self, latents: torch.Tensor, x0: torch.Tensor, t_next, fraction_left: float) -> torch.Tensor:
        """Neighbour guidance after a step: ``latents + √ᾱ_next·w·(z_k − x̂0)`` per unpinned frame, with
        ``w = guidance·ρ(d)·fraction_left`` (see the module notes); unchanged when ``w`` is 0 everywhere."""
        if self.guidance <= 0 or t_next is None or fraction_left <= 0:
            return latents
        which, dist = self.nearest()
        w = self.guidance * correlation(dist, self.decay) * float(fraction_left)
        w[dist == 0] = 0.0                                   # pinned frames are set exactly by pin()
        w = torch.as_tensor(w, dtype=torch.float32, device=latents.device).view(1, 1, -1, 1, 1)
        a = self.scheduler.alphas_cumprod[int(t_next)].to(latents.device, torch.float32)
        pull = a.sqrt() * w * (self.z[:, :, which].float() - x0.float())
        return (latents.float() + pull).to(latents.dtype)

    def nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """For every frame: index into ``self.indices`` of the nearest keyframe, and the distance to it."""
        frames = np.arange(self.num_frames)[:, None]
        dist = np.abs(frames - np.asarray(self.indices)[None])
        return dist.argmin(1), dist.min(1)

    def start(self, latents: torch.Tensor, t) -> torch.Tensor:
        """Initial latents: neighbours correlated with their nearest keyframe, pinned frames set."""
        which, dist = self.nearest()
        rho = torch.as_tensor(correlation(dist, self.decay), dtype=torch.float32, device=latents.device)
        a = self.scheduler.alphas_cumprod[int(t)].to(latents.device, torch.float32)
        z_near = self.z[:, :, which].float()                                           # (1, c, L, h, w)
        e_near = self.eps[:, :, which].float()
        r = rho.view(1, 1, -1, 1, 1)
        noise = r * e_near + (1 - r * r).clamp(min=0).sqrt() * latents.float()
        out = a.sqrt() * r * z_near + (1 - a).sqrt() * noise
        return self.pin(out.to(latents.dtype), t)


def make_pins(pipe, keyframes, num_frames: int, width: int, height: int, generator, dtype,
              decay: float = DEFAULT_DECAY, images: list[np.ndarray] | None = None,
              mode: str = "noised", guidance: float = DEFAULT_GUIDANCE) -> KeyframePins | None:
    """Encode the keyframes for ``pipe`` (any pipeline with ``encode_images``/``vae``); None without any.

    ``images``: the uint8 RGB images already fitted to the canvas (otherwise they are cover-cropped)."""
    from diffusers.utils.torch_utils import randn_tensor

    keyframes = resolve_indices(as_keyframes(keyframes), num_frames)
    if not keyframes:
        return None
    if images is None:
        images = [keyframe_rgb(k.image, width, height) for k in keyframes]
    z = encode_rgb(pipe, np.stack(images)).to(dtype)                                     # (1, c, K, h, w)
    eps = randn_tensor(z.shape, generator=generator, device=z.device, dtype=dtype)
    return KeyframePins(pipe.scheduler, [k.index for k in keyframes], z, eps, num_frames, decay, mode, guidance)


def encode_rgb(pipe, images: np.ndarray, chunk: int = 8) -> torch.Tensor:
    """uint8 ``(n, H, W, 3)`` -> latents ``(1, c, n, H/8, W/8)`` with the painting pipeline's encoder (it only
    needs ``pipe.vae``, so text-to-video pipelines use it too)."""
    from ..pipelines.painting_to_video import PaintingToVideoPipeline

    return PaintingToVideoPipeline.encode_images(pipe, images, chunk)


def check_not_long(keyframes, num_frames: int, max_frames: int) -> None:
    if keyframes:
        if num_frames > max_frames:
            raise ShanshuiError(f"keyframes work within one clip of at most {max_frames} frames "
                                f"(this motion module's window); frames={num_frames}")
