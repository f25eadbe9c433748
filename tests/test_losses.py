"""Noise-contrastive loss vs a literal transcription of NADM eq. 10–11; adapter; gradient flow."""

import math

import pytest
import torch

from shanshui.losses import contrastive_loss_from_embeddings, diffusion_loss, noise_contrastive_loss
from shanshui.models.noise_adapter import NoiseAdapter


def loop_reference(emb, m, tau, positives="next"):
    """Direct, loop-based transcription: cosine r(i,j), per-anchor -log(exp(pos) / (exp(pos) + Σ neg))."""
    total, count = 0.0, 0
    for video in emb:
        n = video.shape[0]
        r = lambda i, j: float(torch.dot(video[i], video[j]) / (video[i].norm() * video[j].norm()))
        negs = lambda i: [k for k in range(n) if abs(k - i) > m]
        if positives == "next":
            for i in range(n - 1):
                pos = math.exp(r(i, i + 1) / tau)
                den = pos + sum(math.exp(r(i, k) / tau) for k in negs(i))
                total += -math.log(pos / den)
                count += 1
        else:
            for i in range(n):
                ps = [k for k in range(n) if 0 < abs(k - i) <= m]
                terms = []
                for p in ps:
                    pos = math.exp(r(i, p) / tau)
                    terms.append(-math.log(pos / (pos + sum(math.exp(r(i, k) / tau) for k in negs(i)))))
                total += sum(terms) / len(terms)
                count += 1
    return total / count


@pytest.mark.parametrize("n,m", [(2, 1), (5, 1), (8, 4), (8, 2), (12, 4), (16, 6), (6, 5)])
@pytest.mark.parametrize("positives", ["next", "window"])
def test_matches_loop_reference(n, m, positives):
    torch.manual_seed(n * 10 + m)
    emb = torch.randn(3, n, 16, dtype=torch.float64)
    ours = contrastive_loss_from_embeddings(emb, m=m, tau=0.07, positives=positives)
    assert ours.item() == pytest.approx(loop_reference(emb, m, 0.07, positives), rel=1e-5, abs=1e-6)


def test_anchors_without_negatives_contribute_zero():
    emb = torch.randn(2, 5, 8)
    assert contrastive_loss_from_embeddings(emb, m=4).item() == 0.0  # nobody is more than 4 apart


def test_lower_when_neighbours_are_similar():
    torch.manual_seed(0)
    n, d = 12, 32
    # a smooth trajectory on the sphere: adjacent frames close, distant frames far
    angles = torch.linspace(0, math.pi, n)
    smooth = torch.zeros(1, n, d)
    smooth[0, :, 0], smooth[0, :, 1] = torch.cos(angles), torch.sin(angles)
    shuffled = smooth[:, torch.randperm(n)]
    assert contrastive_loss_from_embeddings(smooth).item() < contrastive_loss_from_embeddings(shuffled).item() - 1


def test_adapter_is_resolution_independent():
    adapter = NoiseAdapter(in_channels=4, grid=4, hidden_dim=16, proj_dim=8)
    small = torch.randn(2, 4, 3, 8, 8)
    big = small.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)   # same content at 4× resolution
    assert adapter(small).shape == (2, 3, 8)
    assert torch.allclose(adapter(small), adapter(big), atol=1e-5)


def test_gradients_reach_adapter_and_motion_modules(tiny_video_unet):
    from shanshui.models.motion import freeze_image_layers, motion_parameters

    freeze_image_layers(tiny_video_unet)
    adapter = NoiseAdapter(in_channels=4, grid=4, hidden_dim=32, proj_dim=16)
    z = torch.randn(1, 4, 8, 8, 8)
    eps = tiny_video_unet(z, 100, encoder_hidden_states=torch.randn(8, 77, 32)).sample
    loss = noise_contrastive_loss(eps, adapter, m=2)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    grads = [p.grad for p in motion_parameters(tiny_video_unet)]
    assert sum(g is not None and g.abs().sum().item() > 0 for g in grads) > len(grads) // 2
    frozen = [p for p in tiny_video_unet.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


def test_diffusion_loss_is_mse():
    a, b = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    assert diffusion_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positives='all'"):
        contrastive_loss_from_embeddings(torch.randn(1, 4, 3), positives="all")
    with pytest.raises(ValueError, match="at least 2 frames"):
        contrastive_loss_from_embeddings(torch.randn(1, 1, 3))
