"""Training losses: the diffusion objective and NADM's contrastive learning of noise.

``noise_contrastive_loss`` implements the per-frame InfoNCE of NADM (SPEC §1.2): frame ``i``'s embedded
predicted noise should be most similar (cosine, temperature ``tau``) to frame ``i+1`` and dissimilar to every
frame more than ``m`` frames away. Frames within ``m`` other than the positive are neither pulled nor pushed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POSITIVE_MODES = ("next", "window")


def diffusion_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``E ||ε − ε_θ||²`` (mean squared error over all elements, computed in float32)."""
    return F.mse_loss(eps_pred.float(), eps.float())


def frame_similarities(emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of frames: ``(b, f, p) -> (b, f, f)``."""
    z = F.normalize(emb.float(), dim=-1)
    return z @ z.transpose(1, 2)


def contrastive_loss_from_embeddings(emb: torch.Tensor, m: int = 4, tau: float = 0.07,
                                     positives: str = "next") -> torch.Tensor:
    """InfoNCE over frames of each video. ``emb``: ``(b, f, p)``; returns the mean over anchors and videos.

    ``positives="next"``: anchors ``i = 0..f-2``, positive ``i+1``, negatives ``|k-i| > m``; an anchor without
    negatives contributes ``-log 1 = 0``. ``positives="window"`` (NADM Table IV ablation): every frame is an
    anchor, every other frame within ``m`` is a positive; each positive forms its own term against the same
    negatives and the terms are averaged per anchor.
    """
    if positives not in POSITIVE_MODES:
        raise ValueError(f"positives='{positives}' must be one of {POSITIVE_MODES}")
    if m < 1 or tau <= 0:
        raise ValueError(f"need m >= 1 and tau > 0, got m={m}, tau={tau}")
    b, f, _ = emb.shape
    if f < 2:
        raise ValueError(f"the contrastive loss needs at least 2 frames, got {f}")
    logits = frame_similarities(emb) / tau                                          # (b, f, f)
    idx = torch.arange(f, device=emb.device)
    dist = (idx[:, None] - idx[None, :]).abs()                                      # (f, f)
    neg_logits = logits.masked_fill(~(dist > m), float("-inf"))                     # (b, f, f)
    neg_lse = torch.logsumexp(neg_logits, dim=-1)                                   # (b, f); -inf if none
    if positives == "next":
        pos = torch.diagonal(logits, offset=1, dim1=1, dim2=2)                      # (b, f-1): r(i, i+1)
        denom = torch.logaddexp(pos, neg_lse[:, :-1])                               # (b, f-1)
        return (denom - pos).mean()
    pos_mask = (dist <= m) & (dist > 0)                                             # (f, f)
    terms = torch.logaddexp(logits, neg_lse[:, :, None]) - logits                   # (b, f, f)
    per_anchor = (terms * pos_mask).sum(-1) / pos_mask.sum(-1).clamp(min=1)        # (b, f)
    return per_anchor.mean()


def noise_contrastive_loss(eps_pred: torch.Tensor, adapter, m: int = 4, tau: float = 0.07,
                           positives: str = "next") -> torch.Tensor:
    """``L_con`` on predicted noise ``(b, c, f, h, w)`` embedded by the noise adapter."""
    return contrastive_loss_from_embeddings(adapter(eps_pred), m=m, tau=tau, positives=positives)
