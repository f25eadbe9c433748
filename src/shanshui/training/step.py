"""One NADM training step as a function of its inputs (SPEC §0, §1.2).

``L = λ_diff·||ε − ε_θ(z_t, t, τ(y))||² + λ_con·L_con(g(ε_θ)) [+ λ_key·L_key]``.

``L_key`` is CCDM's keyframe term (SPEC §3 eq. 13, λ2): ``loss.keyframes`` random frames of each clip are
*pinned clean* (their ``z_t`` replaced by ``z_0``) in a second UNet pass, and the noise of the other frames
must still be predicted: ``||ε − ε_θ(z_t with clean keyframes)||²`` over the free frames. It teaches the
motion modules to take a clean frame as an anchor, which is what ``keyframe_mode="clean"`` gives them at
inference (:mod:`shanshui.control.keyframes`). Every random draw of the step (posterior
sample, text dropout, noise, timesteps) comes from the ``generator`` argument, in a fixed order, on the CPU,
so a step is reproducible on any device and the raw-video and latent-cache paths draw identical numbers.
"""

from __future__ import annotations

import torch

from ..losses import contrastive_loss_from_embeddings, diffusion_loss
from ..schedulers import split_prediction, training_target
from .config import TrainConfig

VAE_CHUNK = 16  # frames encoded at once


def _randn(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


@torch.no_grad()
def encode_pixels(vae, pixel_values: torch.Tensor, chunk: int = VAE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, f, 3, H, W)`` in [-1, 1] -> VAE posterior ``(mean, std)``, each ``(b, c, f, H/8, W/8)`` float32.

    Not yet multiplied by the VAE's scaling factor.
    """
    b, f = pixel_values.shape[:2]
    x = pixel_values.flatten(0, 1).to(device=vae.device, dtype=vae.dtype)              # (b·f, 3, H, W)
    means, stds = [], []
    for i in range(0, x.shape[0], chunk):
        dist = vae.encode(x[i : i + chunk]).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    mean = torch.cat(means).unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)                 # (b, c, f, h, w)
    std = torch.cat(stds).unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)                   # (b, c, f, h, w)
    return mean.contiguous(), std.contiguous()


@torch.no_grad()
def encode_captions(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    """Captions -> ``(b, 77, d)`` CLIP hidden states (the UNet's cross-attention context)."""
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def training_step(batch: dict, models, noise_scheduler, cfg: TrainConfig, generator: torch.Generator,
                  net=None) -> dict[str, torch.Tensor]:
    """Compute the NADM loss of one batch. Returns ``loss`` (with graph), ``loss_diff``, ``loss_con`` (detached).

    ``batch`` holds either ``pixel_values`` ``(b, f, 3, H, W)`` and ``caption`` (raw videos), or
    ``latent_mean``/``latent_std`` ``(b, c, f, h, w)``, ``text_embeds`` ``(b, 77, d)`` and ``empty_text``
    ``(77, d)`` (latent cache). ``net`` is the (possibly DDP-wrapped) :class:`TrainableNet`; default
    ``models.net``.
    """
    net = models.net if net is None else net
    lc, dc = cfg.loss, cfg.data
    device = next(models.net.unet.parameters()).device

    # 1. Clean latents z0 = (posterior sample or mean) · scaling factor
    if "latent_mean" in batch:
        mean, std = batch["latent_mean"].to(device).float(), batch["latent_std"].to(device).float()
    else:
        mean, std = encode_pixels(models.vae, batch["pixel_values"])
    b, _, f = mean.shape[:3]
    z0 = mean
    if dc.latent_sampling == "sample":
        z0 = mean + std * _randn(mean.shape, generator, device)                        # (b, c, f, h, w)
    z0 = z0 * models.vae.config.scaling_factor

    # 2. Text embeddings, with the caption dropped to "" with probability p (classifier-free guidance)
    drop = torch.rand(b, generator=generator) < dc.text_dropout                         # (b,)
    if "text_embeds" in batch:
        text = batch["text_embeds"].to(device)
        empty = batch["empty_text"].to(device=device, dtype=text.dtype)
        text = torch.where(drop.to(device)[:, None, None], empty.expand_as(text), text)   # (b, 77, d)
    else:
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        text = encode_captions(models.tokenizer, models.text_encoder, captions)          # (b, 77, d)

    # 3. Forward process z_t = sqrt(ᾱ_t)·z0 + sqrt(1-ᾱ_t)·ε
    noise = _randn(z0.shape, generator, device)                                          # (b, c, f, h, w)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(z0, noise, timesteps)                              # (b, c, f, h, w)

    # 4. Predict (ε or v); the adapter embeds the predicted noise only when the contrastive term is on
    use_con = lc.lambda_con > 0
    unet_dtype = next(models.net.unet.parameters()).dtype
    text_frames = text.to(unet_dtype).repeat_interleave(f, dim=0)                        # (b·f, 77, d)
    to_eps = None
    if noise_scheduler.config.prediction_type != "epsilon":  # the adapter embeds the predicted noise (SPEC §1.2)
        to_eps = lambda out: split_prediction(noise_scheduler, out, noisy, timesteps)[1]  # noqa: E731
    pred, emb = net(noisy.to(unet_dtype), timesteps, text_frames, with_embeddings=use_con,
                    **({"to_eps": to_eps} if to_eps is not None else {}))

    # 5. Losses: the diffusion term on the model's own parameterisation (ε, or v for v-prediction models)
    loss_diff = diffusion_loss(pred, training_target(noise_scheduler, z0, noise, timesteps))
    if use_con:
        loss_con = contrastive_loss_from_embeddings(emb, m=lc.m, tau=lc.tau, positives=lc.positives)
    else:
        loss_con = torch.zeros((), device=device)
    loss = lc.lambda_diff * loss_diff + lc.lambda_con * loss_con
    out = {"loss_diff": loss_diff.detach(), "loss_con": loss_con.detach()}

    # 6. Keyframe term (drawn after everything else, so runs without it keep their random stream)
    if getattr(lc, "lambda_key", 0.0) > 0:
        pinned = keyframe_mask(b, f, lc.keyframes, generator).to(device)                # (b, 1, f, 1, 1)
        keyed = torch.where(pinned, z0, noisy)
        eps_key, _ = net(keyed.to(unet_dtype), timesteps, text_frames, with_embeddings=False)
        loss_key = masked_mse(eps_key, noise, ~pinned)
        loss = loss + lc.lambda_key * loss_key
        out["loss_key"] = loss_key.detach()
    out["loss"] = loss
    return out


def keyframe_mask(batch: int, frames: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Bool ``(b, 1, f, 1, 1)``: ``k`` distinct random frames per clip, drawn from ``generator``."""
    mask = torch.zeros(batch, 1, frames, 1, 1, dtype=torch.bool)
    for i in range(batch):
        mask[i, 0, torch.randperm(frames, generator=generator)[:k]] = True
    return mask


def masked_mse(pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the frames where ``keep`` ``(b, 1, f, 1, 1)`` holds."""
    err = (pred.float() - target.float()) ** 2 * keep
    count = keep.expand_as(err).sum().clamp(min=1)
    return err.sum() / count
