"""Value tests for bugs an earlier suite let through (issue 18): each compares against a hand computation or an
independent run and fails when the named mistake is put back into the code. The last part holds edge cases
that the mutation run (docs/testing.md) showed untested."""

import math

import numpy as np
import pytest
import torch

from shanshui.latent_ops import slerp_frames


# --------------------------------------------------------------------------------------------- slerp
def test_slerp_at_several_angles_with_distinct_batch_items():
    """Each batch item has its own angle and norms; the result must be the textbook slerp with /sin θ.

    Dropping the division by ``sin θ`` is invisible at θ = 90° only; the angles here are 20°…160°."""
    angles = [20.0, 45.0, 75.0, 120.0, 160.0]
    b, c, f, h, w = len(angles), 2, 5, 3, 4
    g = torch.Generator().manual_seed(0)
    # two orthonormal directions per item (Gram–Schmidt on random tensors)
    u = torch.randn(b, c * f * h * w, generator=g, dtype=torch.float64)
    v = torch.randn(b, c * f * h * w, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    v = v - (v * u).sum(1, keepdim=True) * u
    v = v / v.norm(dim=1, keepdim=True)
    theta = torch.tensor(angles, dtype=torch.float64) * math.pi / 180
    norm_r = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    norm_s = torch.tensor([1.0, 1.0, 2.5, 0.7, 1.5], dtype=torch.float64)
    r = (norm_r[:, None] * u).reshape(b, c, f, h, w)
    s = (norm_s[:, None] * (torch.cos(theta)[:, None] * u + torch.sin(theta)[:, None] * v))
    s = s.reshape(b, c, f, h, w)
    out = slerp_frames(r, s)
    for i in range(b):
        th = theta[i].item()
        for frame in range(f):
            beta = frame / (f - 1)
            ref = (math.sin((1 - beta) * th) * r[i] + math.sin(beta * th) * s[i]) / math.sin(th)
            # slerp is applied to the whole latent video; frame `frame` of the result takes its own frame
            torch.testing.assert_close(out[i, :, frame], ref[:, frame], atol=1e-12, rtol=1e-10)
    # equal norms: every frame keeps the norm (the defining property of spherical interpolation)
    equal = slerp_frames(r / norm_r.view(b, 1, 1, 1, 1), s / norm_s.view(b, 1, 1, 1, 1))
    whole = torch.stack([slerp_frames(r[i:i + 1] / norm_r[i], s[i:i + 1] / norm_s[i]) for i in range(b)])
    torch.testing.assert_close(equal, whole[:, 0])  # each item uses its own angle, not the batch's


# ------------------------------------------------------------------------------------- contrastive τ
@pytest.mark.parametrize("tau", [0.03, 0.2, 1.0, 5.0])
@pytest.mark.parametrize("positives", ["next", "window"])
def test_contrastive_loss_follows_the_temperature(tau, positives):
    from test_losses import loop_reference

    from shanshui.losses import contrastive_loss_from_embeddings

    torch.manual_seed(3)
    emb = torch.randn(2, 9, 12, dtype=torch.float64)
    ours = contrastive_loss_from_embeddings(emb, m=2, tau=tau, positives=positives).item()
    assert ours == pytest.approx(loop_reference(emb, 2, tau, positives), rel=1e-5, abs=1e-6)  # float32 inside


def test_contrastive_temperature_is_passed_through_by_the_adapter_wrapper():
    from shanshui.losses import contrastive_loss_from_embeddings, noise_contrastive_loss

    identity = lambda eps: eps.mean(dim=(3, 4)).transpose(1, 2)  # (b, c, f, h, w) -> (b, f, c)
    eps = torch.randn(1, 4, 8, 3, 3, generator=torch.Generator().manual_seed(1))
    for tau in (0.1, 0.9):
        assert noise_contrastive_loss(eps, identity, m=2, tau=tau).item() == pytest.approx(
            contrastive_loss_from_embeddings(identity(eps), m=2, tau=tau).item(), rel=1e-7)


# -------------------------------------------------------------------------------------- SOFP blend
def _contraction_pair(a: float, b: float, size: int = 64):
    """Two flat frames and exact flows of a 2× zoom-out about the centre: ``i0``'s pixels crowd together on
    their way to the half-way frame (density 1/0.75² = 16/9), ``i1``'s spread out (density 1/1.5² = 4/9)."""
    c = np.array([(size - 1) / 2, (size - 1) / 2], np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    p = np.stack([xx, yy], -1) - c
    i0 = np.full((size, size, 3), a, np.float32)
    i1 = np.full((size, size, 3), b, np.float32)
    return i0, i1, -0.5 * p, p.copy()  # f01: contraction by 2; f10: its inverse


def test_sofp_blend_weighs_each_side_by_the_mass_that_arrived_from_it():
    """Visibility weights in the ratio of the arriving densities, 16/9 : 4/9 = 4 : 1, so the middle of the
    half-way frame is ``(4·A + B)/5`` (a plain average gives (A+B)/2, swapped weights (A + 4·B)/5)."""
    from shanshui.flow.sofp import midpoint

    a, b = 100.0, 130.0
    i0, i1, f01, f10 = _contraction_pair(a, b)
    inner = (slice(24, 40), slice(24, 40))
    blend = midpoint(i0, i1, f01, f10, 255.0, check_agreement=False)[inner]
    assert np.abs(blend - (4 * a + b) / 5).max() < 1.5
    # with the agreement check (default): the half-warps differ exactly as much as the frames do, so the
    # trust is 1/2 and the result is half blend, half plain average
    default = midpoint(i0, i1, f01, f10, 255.0)[inner]
    assert np.abs(default - (0.5 * (4 * a + b) / 5 + 0.5 * (a + b) / 2)).max() < 1.5


# ----------------------------------------------------------------------------- long-video reschedule
def test_reschedule_uses_clip_ones_prediction_inside_the_sampler(tiny, tiny_video_unet, monkeypatch):
    """In every per-clip step, clip 1 steps with its own ε and every later clip with
    ``(ε_clip1 + ω·r) / √(1+ω²)`` where the ``r`` are the same pool of sequences at every step (shuffled)."""
    from shanshui.pipelines import long_video as lv
    from shanshui.pipelines.text_to_video import TextToVideoPipeline
    from shanshui.schedulers import make_scheduler

    pipe = TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())
    updates, predicted = [], []
    real, real_split = lv.ddim_update, pipe.split

    def recording(scheduler, t, x0, direction):
        updates.append(direction.clone())
        return real(scheduler, t, x0, direction)

    def split(out, sample, t):
        x0, eps = real_split(out, sample, t)
        predicted.append(eps.clone())                         # each clip's own ε prediction, in clip order
        return x0, eps

    monkeypatch.setattr(lv, "ddim_update", recording)
    monkeypatch.setattr(pipe, "split", split)
    omega = 0.5
    r = lv.generate_long(pipe, "misty peaks", num_frames=12, clip_frames=4, overlap=0, num_inference_steps=3,
                         gamma=0.0, omega=omega, generator=torch.Generator().manual_seed(2), output_type="latent",
                         height=32, width=32, progress=False)
    assert r.plan.num_clips == 3 and r.plan.shared == 0 and len(updates) == 3 and len(predicted) == 9
    pools = []
    for step, direction in enumerate(updates):
        eps = torch.cat(predicted[3 * step:3 * step + 3])
        assert direction.shape[0] == 3
        # the clips differ (γ = 0: own starting noise), so their own predictions differ from clip 1's
        assert (eps[1:] - eps[:1]).abs().max() > 1e-3
        torch.testing.assert_close(direction[0], eps[0], atol=0, rtol=0)
        residual = (direction[1:] * math.sqrt(1 + omega**2) - eps[:1]) / omega    # the randomness r
        pools.append(residual)
    first = sorted(pools[0], key=lambda x: x.flatten()[0].item())
    for later in pools[1:]:
        for x, y in zip(first, sorted(later, key=lambda x: x.flatten()[0].item())):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------ spatial sparse-causal + CFG
def test_spatial_sparse_causal_batch_equals_each_item_alone(tiny_video_unet):
    """Under classifier-free guidance the UNet sees [uncond, cond] as a batch of 2; the spatial processor must
    keep the two videos apart (a batch size of 1 would let them attend to each other)."""
    from shanshui.models.motion import set_temporal_attention

    set_temporal_attention(tiny_video_unet, "spatial")
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 4, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        both = tiny_video_unet(z, 50, encoder_hidden_states=text.repeat_interleave(4, dim=0)).sample
        alone = [tiny_video_unet(z[i:i + 1], 50, encoder_hidden_states=text[i:i + 1].repeat_interleave(4, 0)).sample
                 for i in range(2)]
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-5, rtol=1e-5)
    assert (alone[0] - alone[1]).abs().max() > 1e-3  # the two items really differ


def test_guided_prediction_with_spatial_attention_equals_separate_passes(tiny, tiny_video_unet):
    from shanshui.models.motion import set_temporal_attention
    from shanshui.pipelines.text_to_video import TextToVideoPipeline
    from shanshui.schedulers import make_scheduler

    set_temporal_attention(tiny_video_unet, "spatial")
    pipe = TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())
    pipe.scheduler.set_timesteps(5)
    t = pipe.scheduler.timesteps[1]
    embeds = pipe.encode_prompt("a boat", "blurry", cfg=True)                     # (2, 77, d)
    z = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        guided = pipe.predict_noise(z, t, embeds, 7.5)
        u, c = (tiny_video_unet(z, t, encoder_hidden_states=e[None].repeat_interleave(4, 0)).sample for e in embeds)
    torch.testing.assert_close(guided, u + 7.5 * (c - u), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------- 16-bit intake
SIXTEEN = np.array([[0, 1, 128, 129, 257], [1000, 20000, 32767, 32768, 40000], [50000, 65000, 65279, 65407, 65535]],
                   np.uint16)


def expected_8bit(v):
    return np.floor(v.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


def test_16_bit_png_is_scaled_to_8_bit_at_every_level(tmp_path):
    from PIL import Image

    from shanshui.image_intake import read_image

    path = tmp_path / "g16.png"
    Image.fromarray(SIXTEEN).save(path)
    assert np.asarray(Image.open(path)).max() == 65535           # really stored with 16 bits
    rgb, notes = read_image(path)
    want = expected_8bit(SIXTEEN)
    assert list(want[0]) == [0, 0, 0, 1, 1] and want[1, 3] == 128  # a few values by hand
    assert want[2, 3] == 255  # 65407·255/65535 = 254.502: a divisor off by one (65536) gives 254
    np.testing.assert_array_equal(rgb, np.repeat(want[..., None], 3, axis=2))
    assert any("16-bit" in n for n in notes)


def test_16_bit_array_is_scaled_to_8_bit_at_every_level():
    from shanshui.image_intake import array_to_rgb

    rgb, _ = array_to_rgb(SIXTEEN)
    np.testing.assert_array_equal(rgb[..., 0], expected_8bit(SIXTEEN))
    rgb3, _ = array_to_rgb(np.stack([SIXTEEN, SIXTEEN[::-1], SIXTEEN[:, ::-1]], -1))
    np.testing.assert_array_equal(rgb3[..., 1], expected_8bit(SIXTEEN[::-1]))


# ================================================================ edges found by the mutation run
# ----------------------------------------------------------------------------------------------- losses
def test_contrastive_defaults_are_the_papers():
    """NADM: m = 4, τ = 0.07, the next frame as the positive (README defaults table)."""
    from test_losses import loop_reference

    from shanshui.losses import contrastive_loss_from_embeddings, noise_contrastive_loss

    torch.manual_seed(0)
    eps = torch.randn(2, 3, 12, 4, 4, dtype=torch.float64)
    embed = lambda e: e.mean(dim=(3, 4)).transpose(1, 2)                 # (b, c, f, h, w) -> (b, f, c)
    want = loop_reference(embed(eps), 4, 0.07, "next")
    assert noise_contrastive_loss(eps, embed).item() == pytest.approx(want, rel=1e-5)
    assert contrastive_loss_from_embeddings(embed(eps)).item() == pytest.approx(want, rel=1e-5)
    for m in (1, 3):
        assert noise_contrastive_loss(eps, embed, m=m, positives="window").item() == pytest.approx(
            loop_reference(embed(eps), m, 0.07, "window"), rel=1e-5)


@pytest.mark.parametrize("m,tau", [(0, 0.07), (4, 0.0), (1, 0.0), (4, -0.5), (0, -1.0)])
def test_contrastive_rejects_bad_margin_or_temperature(m, tau):
    from shanshui.losses import contrastive_loss_from_embeddings

    with pytest.raises(ValueError, match=f"need m >= 1 and tau > 0, got m={m}, tau={tau}"):
        contrastive_loss_from_embeddings(torch.randn(1, 6, 4), m=m, tau=tau)


def test_alpha_schedule_edges():
    from shanshui.errors import ShanshuiError
    from shanshui.latent_ops import alpha_schedule

    assert alpha_schedule(0) == [] and alpha_schedule(1) == [2.0] and alpha_schedule(5) == [2.0, 2.0, 2.0, 1.0, 1.0]
    assert alpha_schedule(4, high=1.0) == [1.0] * 4
    with pytest.raises(ShanshuiError, match="^n=-1 must be >= 0$"):
        alpha_schedule(-1)
    for bad in (0.5, float("inf")):
        with pytest.raises(ShanshuiError, match=f"^alpha high={bad} must be a finite number >= 1$"):
            alpha_schedule(3, high=bad)


def test_frame_betas_values_and_dtypes():
    from shanshui.errors import ShanshuiError
    from shanshui.latent_ops import frame_betas

    one = frame_betas(1, torch.float64)
    assert one.dtype == torch.float64 and one.tolist() == [0.0]
    assert frame_betas(1).dtype == torch.float32
    seven = frame_betas(7, torch.float64)
    assert seven.dtype == torch.float64
    assert torch.equal(seven, torch.tensor([i / 6 for i in range(7)], dtype=torch.float64))  # exact in float64
    assert torch.equal(frame_betas(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(ShanshuiError, match="^frames=0 must be >= 1$"):
        frame_betas(0)


def test_vsds_uses_the_given_weights_timesteps_and_dtype():
    from shanshui.errors import ShanshuiError
    from shanshui.latent_ops import vsds

    acp = torch.linspace(0.9, 0.1, 1000, dtype=torch.float64)
    z0 = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1, 1)
    eps = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1, 1)
    seen = []

    def eps_fn(z, t):
        seen.append((z.dtype, int(t)))
        return 0.5 * z

    out = vsds(z0, eps, [900, 700], eps_fn, acp, alphas=[0.5, 0.25])     # not the default schedule [2, 1]
    z, e = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    for t, a in ((900, 0.5), (700, 0.25)):
        ab = float(acp[t])
        z = z - a * (1 - ab) * (0.5 * (math.sqrt(ab) * z + math.sqrt(1 - ab) * e) - e)
    np.testing.assert_allclose(out.flatten().numpy(), z, rtol=1e-6)
    assert out.dtype == torch.float32 and seen == [(torch.float32, 900), (torch.float32, 700)]
    with pytest.raises(ShanshuiError, match="^1 update weights for 2 timesteps$"):
        vsds(z0, eps, [900, 700], eps_fn, acp, alphas=[1.0])
    with pytest.raises(ShanshuiError, match=r"^noise shape \(1, 2, 1, 1\) != latent shape \(1, 2, 1, 1, 1\)$"):
        vsds(z0, eps[..., 0], [900], eps_fn, acp)
    # no weights given: the stepwise-decreasing default, [2, 2, 1] for three steps
    from shanshui.latent_ops import alpha_schedule

    assert alpha_schedule(3) == [2.0, 2.0, 1.0]
    torch.testing.assert_close(vsds(z0, eps, [900, 800, 700], eps_fn, acp),
                               vsds(z0, eps, [900, 800, 700], eps_fn, acp, alphas=[2.0, 2.0, 1.0]))


def test_slerp_input_checks_and_float32_betas():
    from shanshui.errors import ShanshuiError

    r = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ShanshuiError, match=r"^latents must both be \(b, c, f, h, w\), got \(1, 2, 3, 2, 2\) and "
                                            r"\(1, 2, 3, 2\)$"):
        slerp_frames(r, s[..., 0])
    with pytest.raises(ShanshuiError, match=r"^latents must both be"):
        slerp_frames(r[0], s[0])                                             # same shapes, but 4-D
    with pytest.raises(ShanshuiError, match=r"^betas must have one value per frame \(3\), got \(2,\)$"):
        slerp_frames(r, s, betas=torch.tensor([0.0, 1.0]))
    # float32 betas are used at float64 precision (1 − β is not rounded to float32)
    b32 = torch.tensor([0.1, 0.35, 0.7], dtype=torch.float32)
    assert torch.equal(slerp_frames(r, s, betas=b32), slerp_frames(r, s, betas=b32.double()))


def test_vsds_timesteps_edges():
    from shanshui.errors import ShanshuiError
    from shanshui.latent_ops import vsds_timesteps

    assert vsds_timesteps([999, 601, 600, 599, 0]) == [999, 601, 600]          # t >= 0.6·1000, 600 included
    assert vsds_timesteps([900, 450, 449], p=0.5, train_steps=900) == [900, 450]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ShanshuiError, match=rf"^p={bad} must be in \(0, 1\)$"):
            vsds_timesteps([999], p=bad)


# -------------------------------------------------------------------------------- attention processors
def _attn(dim=8, heads=2):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return attn


def test_processors_refuse_layers_with_their_own_norms():
    from diffusers.models.attention_processor import Attention

    from shanshui.models.attention import FrameLayout, SparseCausalAttnProcessor, SpatialSparseCausalAttnProcessor

    layout = FrameLayout()
    layout.batch_size = 1
    grouped = Attention(query_dim=8, heads=2, dim_head=4, norm_num_groups=2)
    for proc in (SparseCausalAttnProcessor(), SpatialSparseCausalAttnProcessor(layout)):
        with pytest.raises(ValueError, match="^sparse-causal attention does not support spatial_norm/group_norm on "
                                             "the attention layer$"):
            proc(grouped, torch.randn(4, 3, 8))


SELF_ONLY = ("^sparse-causal attention is a self-attention: encoder_hidden_states/attention_mask must be None$")


def test_spatial_processor_refuses_cross_attention_and_masks():
    from shanshui.models.attention import FrameLayout, SparseCausalAttnProcessor, SpatialSparseCausalAttnProcessor

    layout = FrameLayout()
    layout.batch_size = 1
    x = torch.randn(4, 3, 8)
    for proc in (SparseCausalAttnProcessor(), SpatialSparseCausalAttnProcessor(layout)):
        with pytest.raises(ValueError, match=SELF_ONLY):
            proc(_attn(), x, encoder_hidden_states=torch.randn(4, 2, 8))
        with pytest.raises(ValueError, match=SELF_ONLY):
            proc(_attn(), x, attention_mask=torch.ones(4, 3, 3))
        with pytest.raises(ValueError, match=r"expects \(b\*h\*w, frames, dim\) input"):
            proc(_attn(), torch.randn(4, 3, 2, 8))


NO_BATCH = r"^spatial sparse-causal attention needs the UNet batch size; use set_temporal_attention\(\)$"


def test_spatial_processor_needs_a_batch_size_that_divides_the_tokens():
    from shanshui.models.attention import FrameLayout, SpatialSparseCausalAttnProcessor

    layout = FrameLayout()
    proc = SpatialSparseCausalAttnProcessor(layout)
    x = torch.randn(4, 3, 8)                                            # 4 tokens (b·h·w), 3 frames
    with pytest.raises(RuntimeError, match=NO_BATCH):
        proc(_attn(), x)                                                # no batch size recorded
    layout.batch_size = 3                                               # 4 tokens do not split into 3 videos
    with pytest.raises(RuntimeError, match=NO_BATCH):
        proc(_attn(), x)
    layout.batch_size = 2
    assert proc(_attn(), x).shape == x.shape


def test_frame_layout_hook_reads_keyword_and_positional_calls(tiny_video_unet):
    from shanshui.models.motion import set_temporal_attention

    set_temporal_attention(tiny_video_unet, "spatial")
    z = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(6, 77, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = tiny_video_unet(z, 10, encoder_hidden_states=text).sample
        b = tiny_video_unet(sample=z, timestep=10, encoder_hidden_states=text).sample
    torch.testing.assert_close(a, b)
    assert tiny_video_unet._shanshui_layout_hook is not None


def test_processors_add_the_residual_when_the_layer_asks_for_it():
    from shanshui.models.attention import FrameLayout, SparseCausalAttnProcessor, SpatialSparseCausalAttnProcessor

    layout = FrameLayout()
    layout.batch_size = 2
    x = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(3))
    for proc in (SparseCausalAttnProcessor(), SpatialSparseCausalAttnProcessor(layout)):
        attn = _attn()
        plain = proc(attn, x)
        attn.residual_connection = True
        torch.testing.assert_close(proc(attn, x), plain + x)
        attn.rescale_output_factor = 2.0
        torch.testing.assert_close(proc(attn, x), (plain + x) / 2.0)


def test_null_processor_contributes_nothing():
    from shanshui.models.attention import NullAttnProcessor

    attn = _attn()
    x = torch.randn(5, 3, 8)
    torch.testing.assert_close(NullAttnProcessor()(attn, x), torch.zeros_like(x))
    attn.residual_connection = True
    torch.testing.assert_close(NullAttnProcessor()(attn, x), x)


# ------------------------------------------------------------------------------------------------ warps
def test_inside_mask_at_the_borders():
    from shanshui.flow.warp import inside_mask

    h, w = 4, 5
    still = np.zeros((h, w, 2), np.float32)
    assert inside_mask(still).all()                                    # landing on row/column 0 and h-1/w-1 is inside
    down = still.copy()
    down[..., 1] = 1.0                                                 # the last row lands on y = h: outside
    want = np.ones((h, w), bool)
    want[-1] = False
    np.testing.assert_array_equal(inside_mask(down), want)
    left = still.copy()
    left[..., 0] = -0.5                                                # column 0 lands on x = -0.5: outside
    want = np.ones((h, w), bool)
    want[:, 0] = False
    np.testing.assert_array_equal(inside_mask(left), want)
