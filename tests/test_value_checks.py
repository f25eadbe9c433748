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


# ---------------------------------------------------------------- edges found by the sampled mutation run
def _frames(seed, f=2, h=32, w=32):
    return np.random.default_rng(seed).random((f, h, w, 3)).astype(np.float32)


def test_interpolation_refuses_frames_without_three_channels():
    from shanshui.errors import ShanshuiError
    from shanshui.flow.sofp import interpolate

    for shape in [(3, 16, 16, 4), (16, 16, 3)]:
        with pytest.raises(ShanshuiError, match=r"frames must have shape \(F, H, W, 3\)"):
            interpolate(np.zeros(shape, np.float32))


def test_sofp_midpoint_is_a_convex_blend_of_the_two_half_warps():
    """Without the agreement/reliability fallbacks the half-way frame is (b0·warp0 + b1·warp1)/(b0 + b1) with
    b ≥ 0: every value lies between the two half-warped frames, also where one side sent no mass."""
    from shanshui.flow.sofp import half_way_motion, midpoint
    from shanshui.flow.warp import backward_warp

    i0, i1 = _frames(1)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    f01 = np.stack([6 * np.sin(yy / 5), 4 * np.cos(xx / 7)], -1).astype(np.float32)   # holes and overlaps
    f10 = -f01
    out = midpoint(i0, i1, f01, f10, 1.0, scale=1, check_agreement=False)
    motion = half_way_motion(i0, i1, f01, f10, 1.0, scale=1)[0]
    w0, w1 = backward_warp(i0, -0.5 * motion), backward_warp(i1, 0.5 * motion)
    assert np.all(out >= np.minimum(w0, w1) - 1e-5) and np.all(out <= np.maximum(w0, w1) + 1e-5)


def test_sofp_low_reliability_leans_towards_the_plain_average():
    from shanshui.flow.sofp import midpoint

    i0, i1 = _frames(2)
    f01 = np.full((32, 32, 2), 3.0, np.float32)
    avg = 0.5 * (i0 + i1)
    free = midpoint(i0, i1, f01, -f01, 1.0, scale=1, check_agreement=False)
    doubtful = midpoint(i0, i1, f01, -f01, 1.0, np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32),
                        scale=1, check_agreement=False)
    assert np.abs(doubtful - avg).mean() < 0.5 * np.abs(free - avg).mean()


def test_nadm_demo_midpoint_is_the_mean_of_the_full_warps():
    from shanshui.flow.sofp import midpoint_nadm_demo
    from shanshui.flow.warp import backward_warp

    i0, i1 = _frames(3)
    np.testing.assert_allclose(midpoint_nadm_demo(i0, i1, np.zeros((32, 32, 2), np.float32)), 0.5 * (i0 + i1),
                               atol=1e-6)
    f = np.full((32, 32, 2), 2.0, np.float32)
    np.testing.assert_allclose(midpoint_nadm_demo(i0, i1, f),
                               0.5 * (backward_warp(i0, -f) + backward_warp(i1, f)), atol=1e-6)


def test_forward_splat_returns_float32():
    from shanshui.flow.warp import forward_splat

    acc, mass = forward_splat(np.ones((8, 8, 2), np.float64), np.zeros((8, 8, 2), np.float32))
    assert acc.dtype == np.float32 and mass.dtype == np.float32


def test_arrows_may_start_on_the_first_row_and_column():
    from shanshui.control.arrows import Arrow, check_arrows_inside

    check_arrows_inside([Arrow(0, 0, 5, 5), Arrow(31, 0, 20, 3), Arrow(0, 23, 4, 4)], 32, 24)
    with pytest.raises(Exception, match=r"start \(0, 24\) lies outside the 32x24 image"):
        check_arrows_inside([Arrow(0, 24, 4, 4)], 32, 24)


def test_dense_field_threshold_is_relative_to_the_euclidean_length_of_the_longest_arrow():
    from shanshui.control.arrows import Arrow, default_sigma, dense_field, densify, sparse_flow, threshold

    a = [Arrow(10, 12, 13, 16)]                                   # (3, 4): length 5, not max(|dx|, |dy|) = 4
    sigma = default_sigma(32, 32)
    want = threshold(densify(sparse_flow(a, 32, 32), sigma), 0.5 * 5.0)
    np.testing.assert_array_equal(dense_field(a, 32, 32, r=0.5), want)
    one = dense_field([Arrow(5, 5, 6, 5)], 32, 32)                # exactly 1 px long: still a field
    assert one[5, 5, 0] > 0.5 and np.abs(one).sum() > 0


def test_arrow_json_refuses_points_with_three_numbers():
    from shanshui.control.arrows import parse_arrows_json
    from shanshui.errors import ShanshuiError

    with pytest.raises(ShanshuiError, match="from"):
        parse_arrows_json('[{"from": [1, 2, 3], "to": [4, 5]}]')


def test_mask_threshold_and_palette_masks(tmp_path):
    """White means still: grey 128 is still, 127 is not; a palette image uses its transparency when it has one,
    its grey values otherwise."""
    from PIL import Image

    from shanshui.control.arrows import load_mask

    gray = np.array([[127, 128], [0, 255]], np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert load_mask(tmp_path / "g.png", 2, 2).tolist() == [[False, True], [False, True]]
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)          # index 0 white, 1 black
    pal.save(tmp_path / "p.png")
    assert load_mask(tmp_path / "p.png", 2, 2).tolist() == [[True, False], [False, True]]
    pal.info["transparency"] = 0                                  # index 0 transparent: not still
    pal.save(tmp_path / "pt.png", transparency=0)
    assert load_mask(tmp_path / "pt.png", 2, 2).tolist() == [[False, True], [True, False]]


def test_motion_adapter_folders_pia_and_per_block_heads_are_refused(tmp_path, tiny_components):
    import json

    from diffusers import MotionAdapter

    from shanshui.errors import ShanshuiError
    from shanshui.models.motion_io import load_motion_module

    cfg = tiny_components["motion_config"]
    adapter = MotionAdapter(**cfg.adapter_kwargs())
    adapter.save_pretrained(tmp_path / "ok")
    conf = json.loads((tmp_path / "ok" / "config.json").read_text())
    for name, change, message in [("pia", {"conv_in_channels": 9}, "is a PIA adapter"),
                                  ("heads", {"motion_num_attention_heads": [4, 8]}, "per-block heads")]:
        folder = tmp_path / name
        adapter.save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps({**conf, **change}))
        with pytest.raises(ShanshuiError, match=message):
            load_motion_module(folder)


def test_a_ckpt_motion_module_takes_its_sidecar_config_and_drops_module_prefixes(tmp_path, tiny_components):
    """A .ckpt in diffusers names (keys under DataParallel's "module.") with a JSON sidecar: the sidecar's
    settings are used (not the inferred AnimateDiff defaults), and the weights load."""
    import copy
    import dataclasses

    from conftest import randomize_motion
    from shanshui.models.motion import build_video_unet
    from shanshui.models.motion_io import load_motion_module, motion_state_dict

    cfg = dataclasses.replace(tiny_components["motion_config"], sparse_causal="spatial", norm="frame")
    unet = build_video_unet(copy.deepcopy(tiny_components["unet"]), cfg)
    randomize_motion(unet, seed=9)
    state = motion_state_dict(unet)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "mm.ckpt")
    (tmp_path / "mm.json").write_text(cfg.to_json())
    loaded_state, loaded_cfg = load_motion_module(tmp_path / "mm.ckpt")
    assert loaded_cfg.sparse_causal == "spatial" and loaded_cfg.norm == "frame"
    assert set(loaded_state) == set(state) and all(torch.equal(loaded_state[k], state[k]) for k in state)


def test_backward_warp_dtypes_rounding_and_wide_images():
    from shanshui.errors import ShanshuiError
    from shanshui.flow.warp import backward_warp

    quarter = np.zeros((4, 4, 2), np.float32)
    quarter[..., 0] = 0.25
    img = np.tile(np.array([0, 3, 3, 3], np.uint8), (4, 1))
    out = backward_warp(img, quarter)                      # 0.75 between 0 and 3: rounds to 1, not truncated to 0
    assert out.dtype == np.uint8 and out[0, 0] == 1
    ints = np.arange(16, dtype=np.int32).reshape(4, 4)     # a dtype OpenCV cannot remap: warped as float32
    got = backward_warp(ints, quarter)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, backward_warp(ints.astype(np.float32), quarter).astype(np.int32))
    wide = np.random.default_rng(0).random((6, 6, 5)).astype(np.float32)
    flow = np.random.default_rng(1).normal(size=(6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(backward_warp(wide, flow),
                               np.stack([backward_warp(wide[..., c], flow) for c in range(5)], -1), atol=1e-6)
    with pytest.raises(ShanshuiError, match="^border='wrap' is not supported; allowed: replicate, reflect, zero, constant$"):
        backward_warp(wide, flow, border="wrap")


# ------------------------------------------------------- long-video survivors of the sampled mutation run
def test_long_video_helpers_edges(monkeypatch):
    from shanshui.errors import ShanshuiError
    from shanshui.pipelines import long_video as lv

    starts = lv.clip_starts(40, 16, 4)
    np.testing.assert_array_equal(lv.fusion_weights("ccdm", starts, 16, 40), lv.ccdm_weights(starts, 16, 40))
    np.testing.assert_array_equal(lv.fusion_weights("crossfade", starts, 16, 40), lv.overlap_weights(starts, 16, 40))
    assert not np.array_equal(lv.ccdm_weights(starts, 16, 40), lv.overlap_weights(starts, 16, 40))
    with pytest.raises(ShanshuiError):
        lv.ccdm_weights([1, 25], 16, 41)                          # the first clip must start at frame 0
    with pytest.raises(ShanshuiError, match=r"^gamma=1.5 must be in \[0, 1\]$"):
        lv.shared_steps(1.5, 10)
    with pytest.raises(ShanshuiError, match=r"^steps=0 must be >= 1$"):
        lv.shared_steps(0.5, 0)
    assert lv.to_uint8(np.array([-0.5, 0.5, 1.5, 0.0, 1.0])).tolist() == [0, 128, 255, 0, 255]
    seen = []
    monkeypatch.setattr("shanshui.flow.interpolate", lambda block, times, flow: seen.append(flow) or block)
    list(lv.iter_decoded(lambda z: torch.zeros(1, z.shape[2], 3, 8, 8), torch.zeros(1, 4, 3, 2, 2), 2,
                         interpolate_times=2, flow="farneback"))
    assert seen and set(seen) == {"farneback"}


# ------------------------------------------------------ image-intake survivors of the sampled mutation run
def test_image_intake_defaults_and_pad_geometry():
    from shanshui.image_intake import Geometry, plan_geometry, prepare_painting

    # the defaults are policy "fit" at long side 512: a 300x200 picture becomes 512x344 (nearest multiples of 8)
    assert plan_geometry(300, 200) == plan_geometry(300, 200, "fit", 512)
    assert plan_geometry(300, 200).size == (512, 344)
    img = np.zeros((200, 300, 3), np.uint8)
    assert prepare_painting(img).image.shape == (344, 512, 3)
    # "pad" of a tall picture: the height binds (s = 128/200), the width is 100·s = 64, centred
    assert plan_geometry(100, 200, "pad", size=(128, 128)) == Geometry((100, 200), (64, 128), (32, 0), (128, 128))
    assert plan_geometry(200, 100, "pad", size=(128, 128)) == Geometry((200, 100), (128, 64), (0, 32), (128, 128))


def test_apply_geometry_checks_both_sides_and_picks_the_interpolation():
    import cv2

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import apply_geometry, plan_geometry

    g = plan_geometry(64, 32, "crop", size=(128, 64))          # an exact 2x upscale
    with pytest.raises(ShanshuiError, match=r"^image is 64x33, the geometry expects 64x32$"):
        apply_geometry(np.zeros((33, 64, 3), np.uint8), g)  # only the height is wrong
    ramp = (np.random.default_rng(0).random((32, 64, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(apply_geometry(ramp, g), cv2.resize(ramp, (128, 64), interpolation=cv2.INTER_CUBIC))
    # downscaling averages areas: a 1-px checkerboard halves to flat grey
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    small = apply_geometry(checker, plan_geometry(64, 64, "crop", size=(32, 32)))
    assert set(np.unique(small).tolist()) <= {127, 128}


def test_fit_to_crops_the_centre():
    from shanshui.image_intake import fit_to

    bands = np.zeros((100, 300, 3), np.uint8)
    bands[:, :100], bands[:, 100:200], bands[:, 200:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    out = fit_to(bands, 100, 100)                              # scale 1, the middle third survives
    assert out.shape == (100, 100, 3) and (out == np.array([0, 255, 0], np.uint8)).all()
    tall = np.zeros((300, 100, 3), np.uint8)
    tall[:100], tall[100:200], tall[200:] = 10, 20, 30
    assert (fit_to(tall, 50, 50) == 20).all()                  # scale 0.5, the middle third of the height


def test_intake_notes_and_compositing(tmp_path):
    from PIL import Image

    from shanshui.image_intake import array_to_rgb, read_image

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)                             # opaque
    rgba[0, 1] = (10, 20, 30, 0)                               # fully transparent: the background shows
    rgb, notes = array_to_rgb(rgba, background=(100, 150, 200))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [100, 150, 200]
    assert notes == ["transparency composited over background (100, 150, 200)"]
    assert array_to_rgb(np.zeros((2, 2), np.uint8))[1] == ["grayscale converted to RGB"]
    # an opaque RGBA file is not reported as composited
    Image.fromarray(np.full((3, 3, 4), 255, np.uint8)).save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png")[1] == []
    # a 1-pixel-high painting is readable (not "empty")
    Image.fromarray(np.full((1, 5, 3), 7, np.uint8)).save(tmp_path / "line.png")
    rgb, notes = read_image(tmp_path / "line.png")
    assert rgb.shape == (1, 5, 3) and (rgb == 7).all() and notes == []
    # EXIF orientation 1 (upright) is no change and gets no note; 2 (mirrored) is applied and noted
    arr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    for value, expected, noted in ((1, arr, False), (2, arr[:, ::-1], True)):
        im = Image.fromarray(arr)
        exif = im.getexif()
        exif[0x0112] = value
        im.save(tmp_path / f"o{value}.png", exif=exif)
        rgb, notes = read_image(tmp_path / f"o{value}.png")
        np.testing.assert_array_equal(rgb, expected)
        assert ("EXIF orientation applied" in notes) == noted


def test_prepare_painting_from_pil_images_and_size_refusals():
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import prepare_painting

    arr = (np.random.default_rng(1).random((40, 60, 3)) * 255).astype(np.uint8)
    from_pil = prepare_painting(Image.fromarray(arr), "crop", size=(64, 64))
    np.testing.assert_array_equal(from_pil.image, prepare_painting(arr, "crop", size=(64, 64)).image)
    rgba = Image.fromarray(np.dstack([arr, np.zeros((40, 60), np.uint8)]))     # fully transparent
    out = prepare_painting(rgba, "crop", size=(64, 64), background=(100, 150, 200))
    assert (out.image == np.array([100, 150, 200], np.uint8)).all()
    assert out.notes == ["transparency composited over background (100, 150, 200)"]
    with pytest.raises(ShanshuiError, match=r"^painting is 100x100 = 0.0 MP; the limit is 0.005 MP$"):
        prepare_painting(Image.new("RGB", (100, 100)), max_pixels=5000)
    with pytest.raises(ShanshuiError, match=r"^painting of shape \(100, 100, 3\) exceeds the 0.005 MP limit$"):
        prepare_painting(np.zeros((100, 100, 3), np.uint8), max_pixels=5000)
    with pytest.raises(ShanshuiError, match=r"^float image values span \[3, 3\]; expected \[0, 1\]$"):
        prepare_painting(np.full((40, 40), 3.0))


def test_float_and_premultiplied_alpha_images(tmp_path):
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import prepare_painting, read_image

    Image.fromarray(np.full((4, 4), 0.25, np.float32)).save(tmp_path / "quarter.tif")     # mode F
    rgb, notes = read_image(tmp_path / "quarter.tif")
    assert rgb.shape == (4, 4, 3) and (rgb == 64).all()
    assert notes == ["32-bit float image scaled to 8 bit; grayscale converted to RGB"]
    Image.fromarray(np.full((4, 4), 1.5, np.float32)).save(tmp_path / "over.tif")
    with pytest.raises(ShanshuiError, match=r"float image values span \[1.5, 1.5\]"):
        read_image(tmp_path / "over.tif")
    # RGBA over a coloured background (a white one would hide a wrong scale: it saturates either way)
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(tmp_path / "clear.png")
    rgb, _ = read_image(tmp_path / "clear.png", background=(100, 150, 200))
    assert (rgb == np.array([100, 150, 200], np.uint8)).all()
    # premultiplied grey + alpha ("La"): Pillow cannot convert it to RGBA directly
    la = Image.fromarray(np.dstack([np.full((4, 4), 128, np.uint8), np.full((4, 4), 128, np.uint8)]), "LA")
    p = prepare_painting(la.convert("La"), "crop", size=(32, 32))
    assert abs(int(p.image[0, 0, 0]) - 191) <= 2 and p.image.dtype == np.uint8         # 128·½ + 255·½


def test_fit_geometry_keeps_the_uncovered_side_exact_and_errors_without_a_message(tmp_path, monkeypatch):
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import Geometry, apply_geometry, plan_geometry, read_image

    # 300x200 at long side 512: canvas 512x344, scale 1.72 covers it: 516x344, 2 px trimmed left and right
    assert plan_geometry(300, 200) == Geometry((300, 200), (516, 344), (-2, 0), (512, 344))
    padded = apply_geometry(np.zeros((20, 40, 3), np.uint8), plan_geometry(40, 20, "pad", size=(64, 64)))
    assert padded.dtype == np.uint8 and padded.shape == (64, 64, 3)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")

    def fail(*args, **kwargs):
        raise OSError()                                         # an exception without a message

    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(ShanshuiError, match=r"cannot be decoded: OSError$"):
        read_image(tmp_path / "a.png")


def test_motion_adapter_folder_config_fields_and_defaults(tmp_path, tiny_components):
    """Each field of a MotionAdapter config.json reaches the MotionConfig; missing fields get diffusers'
    defaults; uniform per-block lists are accepted; converted originals run full attention (sparse-causal off)."""
    import json

    from diffusers import MotionAdapter

    from shanshui.models.motion_io import load_motion_module

    cfg = tiny_components["motion_config"]
    adapter = MotionAdapter(**cfg.adapter_kwargs())
    adapter.save_pretrained(tmp_path / "ok")
    conf = json.loads((tmp_path / "ok" / "config.json").read_text())
    heads = conf["motion_num_attention_heads"]
    heads = heads[0] if isinstance(heads, list) else heads
    for mid in (True, False):
        (tmp_path / "ok" / "config.json").write_text(json.dumps(
            {**conf, "use_motion_mid_block": mid, "motion_num_attention_heads": [heads] * 4}))
        _, c = load_motion_module(tmp_path / "ok")
        assert c.use_mid_block is mid and c.num_attention_heads == heads
        assert c.sparse_causal == "off" and c.norm == "frame"
    (tmp_path / "ok" / "config.json").write_text(json.dumps(
        {k: v for k, v in conf.items() if k not in ("block_out_channels", "use_motion_mid_block")}))
    _, c = load_motion_module(tmp_path / "ok")
    assert c.block_out_channels == (320, 640, 1280, 1280) and c.use_mid_block is True


def test_motion_io_messages_and_weight_suffixes(tmp_path, tiny_video_unet, tiny):
    from shanshui.errors import ShanshuiError
    from shanshui.models.motion_io import (load_motion_module, motion_state_dict, read_weights, save_motion_module,
                                           to_animatediff_keys)

    with pytest.raises(ShanshuiError, match=r"^norm='group' must be one of \('joint', 'frame'\)$"):
        load_motion_module(tmp_path / "x.safetensors", norm="group")
    with pytest.raises(ShanshuiError, match=r"^'conv_in.weight' is not a motion-module weight$"):
        to_animatediff_keys({"conv_in.weight": torch.zeros(1)}, 32)
    with pytest.raises(ShanshuiError, match=r"^save_motion_module needs a MotionConfig$"):
        save_motion_module(torch.nn.Linear(1, 1), tmp_path / "m.safetensors")
    state = motion_state_dict(tiny_video_unet)
    for suffix in (".pt", ".pth", ".PTH", ".bin", ".ckpt"):
        torch.save(state, tmp_path / f"w{suffix}")
        loaded, meta = read_weights(tmp_path / f"w{suffix}")
        assert meta == {} and set(loaded) == set(state)
    # fp16 export: every tensor of the file is half precision
    from safetensors.torch import load_file

    save_motion_module(tiny_video_unet, tmp_path / "h.safetensors", tiny["motion_config"], dtype=torch.float16)
    assert {v.dtype for v in load_file(str(tmp_path / "h.safetensors")).values()} == {torch.float16}


def test_intake_integer_modes_borders_and_single_channel_geometry(tmp_path, monkeypatch):
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import Geometry, apply_geometry, array_to_rgb, plan_geometry, prepare_painting, read_image

    # 32-bit integer images whose values fit 8 bits are kept as they are (negatives clipped to 0);
    # beyond 255 they are taken as 16-bit
    Image.fromarray(np.array([[-5, 0, 100, 255]], np.int32), "I").save(tmp_path / "i8.tif")
    rgb, _ = read_image(tmp_path / "i8.tif")
    assert rgb[0, :, 0].tolist() == [0, 0, 100, 255]
    Image.fromarray(np.array([[0, 65535, 256, 1000]], np.int32), "I").save(tmp_path / "i16.tif")
    rgb, notes = read_image(tmp_path / "i16.tif")
    assert rgb[0, :, 0].tolist() == [0, 255, 1, 4] and notes[0] == "16-bit I image scaled to 8 bit"
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(tmp_path / "big.tif")
    with pytest.raises(ShanshuiError, match=r"integer image values span \[0, 70000\]"):
        read_image(tmp_path / "big.tif")
    Image.fromarray(np.array([[-1, 300]], np.int32), "I").save(tmp_path / "neg.tif")
    with pytest.raises(ShanshuiError, match=r"integer image values span \[-1, 300\]"):
        read_image(tmp_path / "neg.tif")
    assert read_image(tmp_path / "i8.tif")[1] == ["grayscale converted to RGB"]
    # in-memory floats in [0, 1]; arrays of the wrong rank
    assert array_to_rgb(np.full((2, 2), 0.5))[0].tolist() == [[[128] * 3] * 2] * 2
    with pytest.raises(ShanshuiError, match=r"^image array must be \(H, W\) or \(H, W, C\), got shape \(5,\)$"):
        prepare_painting(np.zeros(5))
    # crop/pad without a size: a long_side square
    assert plan_geometry(100, 50, "crop").size == (512, 512)
    with pytest.raises(ShanshuiError, match=r"^size width=30 must be a multiple of 8 and >= 32$"):
        plan_geometry(100, 50, "crop", size=(30, 64))
    # the pad colour is the per-channel median of the four borders
    red = np.zeros((10, 20, 3), np.uint8)
    red[..., 0] = 255
    padded = apply_geometry(red, plan_geometry(20, 10, "pad", size=(64, 64)))
    assert padded[0, 0].tolist() == [255, 0, 0]
    img = np.full((5, 3), 255, np.uint8)
    img[0] = img[1] = 0                       # top two rows dark: the bottom row and the sides' lower parts win
    assert apply_geometry(img, Geometry((3, 5), (3, 5), (0, 0), (8, 8)))[7, 7] == 255
    # single-channel images keep their channel axis through a resize
    one = apply_geometry(np.zeros((20, 40, 1), np.uint8), plan_geometry(40, 20, "crop", size=(64, 32)))
    assert one.shape == (32, 64, 1)
    # a decoding error's first line is reported
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")

    def fail(*args, **kwargs):
        raise OSError("broken data stream when reading image file\nsecond line")

    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(ShanshuiError, match=r"cannot be decoded: broken data stream when reading image file$"):
        read_image(tmp_path / "a.png")


def test_motion_adapter_folder_defaults_and_refusals(tmp_path):
    import json

    from safetensors.torch import save_file

    from shanshui.errors import ShanshuiError
    from shanshui.models.motion_io import load_motion_module

    folder = tmp_path / "adapter"
    folder.mkdir()
    with pytest.raises(ShanshuiError, match=r"has no config.json: not a diffusers MotionAdapter folder$"):
        load_motion_module(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ShanshuiError, match=r"has no diffusion_pytorch_model.safetensors/.bin$"):
        load_motion_module(folder)
    save_file({"down_blocks.0.motion_modules.0.proj_in.weight": torch.zeros(2, 2)},
              str(folder / "diffusion_pytorch_model.safetensors"))
    _, c = load_motion_module(folder)                            # an empty config: diffusers' defaults
    assert (c.block_out_channels, c.layers_per_block, c.use_mid_block, c.num_attention_heads, c.norm_num_groups,
            c.max_seq_length) == ((320, 640, 1280, 1280), 2, True, 8, 32, 32)
    (folder / "config.json").write_text(json.dumps({"motion_layers_per_block": [1, 2]}))
    with pytest.raises(ShanshuiError, match=r"per-block layers \[1, 2\] not supported$"):
        load_motion_module(folder)


def test_original_layout_files_names_and_read_errors(tmp_path, tiny_video_unet, tiny, monkeypatch):
    import re

    from safetensors.torch import load_file, save_file

    from shanshui.errors import ShanshuiError
    from shanshui.models.motion_io import load_motion_module, read_weights, save_motion_module

    save_motion_module(tiny_video_unet, tmp_path / "m.safetensors", tiny["motion_config"])
    tensors = load_file(str(tmp_path / "m.safetensors"))
    pe = [k for k in tensors if k.endswith(".pe")]
    pattern = (r"^((down|up)_blocks\.\d+\.motion_modules\.\d+|mid_block\.motion_modules\.\d+)\.temporal_transformer\."
               r"transformer_blocks\.\d+\.attention_blocks\.[01]\.pos_encoder\.pe$")
    assert pe and all(re.match(pattern, k) for k in pe)
    # the same tensors without Shanshui's metadata or sidecar = an original AnimateDiff file
    save_file(tensors, str(tmp_path / "orig.safetensors"))
    _, c = load_motion_module(tmp_path / "orig.safetensors")
    assert c.norm == "frame" and c.sparse_causal == "off"
    (tmp_path / "bad.ckpt").write_bytes(b"\x80\x02 not a pickle")
    with pytest.raises(ShanshuiError, match=r"^cannot read motion module '.*bad.ckpt': \w+: "):
        read_weights(tmp_path / "bad.ckpt")
    for exc, text in ((RuntimeError("first line\nsecond"), "RuntimeError: first line"),
                      (RuntimeError(), "RuntimeError: corrupt file")):
        monkeypatch.setattr(torch, "load", lambda *a, _e=exc, **k: (_ for _ in ()).throw(_e))
        with pytest.raises(ShanshuiError, match=re.escape(text) + "$"):
            read_weights(tmp_path / "bad.ckpt")


def test_intake_alpha_modes_16_bit_modes_ranges_and_messages():
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import (Geometry, _to_uint8_rgb, apply_geometry, array_to_rgb, plan_geometry,
                                       prepare_painting)

    bg = (100, 150, 200)
    la = Image.fromarray(np.zeros((4, 4, 2), np.uint8), "LA")                  # grey + alpha, fully clear
    pa = Image.new("PA", (4, 4))                                               # palette + alpha, alpha 0
    for im in (la, pa):
        assert (prepare_painting(im, "crop", size=(32, 32), background=bg).image == np.array(bg, np.uint8)).all()
    for mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        im = Image.frombytes(mode, (2, 1), np.array([200, 65535], ">u2" if mode == "I;16B" else "<u2").tobytes()
                             if mode != "I;16N" else np.array([200, 65535], "=u2").tobytes())
        notes = []
        rgb = _to_uint8_rgb(im, bg, notes)
        assert rgb.shape == (1, 2, 3) and rgb[0, :, 0].tolist() == [1, 255], mode     # 200 -> 1: scaled, not kept
        assert notes == [f"16-bit {mode} image scaled to 8 bit", "grayscale converted to RGB"]
    # float arrays: the ends 0 and 1 are inside the range; uint16 arrays are scaled and noted
    rgb, notes = array_to_rgb(np.array([[0.0, 1.0]]))
    assert rgb[0, :, 0].tolist() == [0, 255] and notes == ["grayscale converted to RGB"]
    rgb, notes = array_to_rgb(np.array([[0, 65535]], np.uint16))
    assert rgb[0, :, 0].tolist() == [0, 255] and notes == ["16-bit image scaled to 8 bit", "grayscale converted to RGB"]
    # an RGBA array through prepare_painting takes the given background
    clear = np.zeros((40, 40, 4), np.uint8)
    assert (prepare_painting(clear, "crop", size=(32, 32), background=bg).image == np.array(bg, np.uint8)).all()
    # messages and the exact crop geometry (the height is the side that overflows)
    with pytest.raises(ShanshuiError, match=r"^policy 'fit' takes long_side, not an exact size "
                                            r"\(use 'crop' or 'pad' for W x H\)$"):
        plan_geometry(100, 100, "fit", size=(64, 64))
    with pytest.raises(ShanshuiError, match=r"its short side would be 13 px \(< 32\); use a larger size"):
        plan_geometry(1000, 100, "fit", 128)
    assert plan_geometry(300, 200, "crop", size=(512, 256)) == Geometry((300, 200), (512, 342), (0, -43), (512, 256))
    # the pad colour reads the first column (not the second)
    img = np.array([[255, 255, 0, 0, 255], [0, 255, 0, 255, 0], [0, 255, 0, 255, 0], [0, 0, 255, 0, 255]], np.uint8)
    assert apply_geometry(img, Geometry((5, 4), (5, 4), (0, 0), (8, 8)))[7, 7] == 0


def test_saved_motion_module_uses_exactly_the_original_key_layout(tmp_path, tiny_video_unet, tiny):
    import re

    from safetensors import safe_open
    from safetensors.torch import save_file

    from shanshui.errors import ShanshuiError
    from shanshui.models.motion_io import is_position_table, load_motion_module, motion_state_dict, save_motion_module

    save_motion_module(tiny_video_unet, tmp_path / "m.safetensors", tiny["motion_config"])
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["format"] == "pt"                                   # what diffusers/transformers loaders expect
    inner = (r"(norm\.(weight|bias)|proj_(in|out)\.(weight|bias)|transformer_blocks\.\d+\.("
             r"attention_blocks\.[01]\.(to_[qkv]\.weight|to_out\.0\.(weight|bias)|pos_encoder\.pe)|"
             r"norms\.[01]\.(weight|bias)|ff_norm\.(weight|bias)|ff\.net\.(0\.proj|2)\.(weight|bias)))")
    pattern = re.compile(r"^((down|up)_blocks\.\d+|mid_block)\.motion_modules\.\d+\.temporal_transformer\." + inner + "$")
    assert keys and [k for k in keys if not pattern.match(k)] == []
    assert any(".norms.1." in k for k in keys) and any(".ff_norm." in k for k in keys)
    # a MotionAdapter folder may hold a .bin instead of safetensors
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    state = motion_state_dict(tiny_video_unet)
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    loaded, _ = load_motion_module(folder)
    kept = {k for k in state if not is_position_table(k)}
    assert kept and set(loaded) == kept and all(torch.equal(loaded[k], state[k]) for k in kept)
    # files that are not motion modules
    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "none.safetensors"))
    with pytest.raises(ShanshuiError, match=r"^no 'down_blocks\.\*\.motion_modules' weights found: not a motion module$"):
        load_motion_module(tmp_path / "none.safetensors")
    save_file({"down_blocks.0.motion_modules.0.norm.weight": torch.zeros(1)}, str(tmp_path / "part.safetensors"))
    with pytest.raises(ShanshuiError, match=r"^missing key 'down_blocks\.0\.motion_modules\.0\.proj_in\.weight'$"):
        load_motion_module(tmp_path / "part.safetensors")


def test_overlap_weights_refuse_bad_plans_and_plain_decoding_never_interpolates(monkeypatch):
    from shanshui.errors import ShanshuiError
    from shanshui.pipelines import long_video as lv

    for starts, frames in (([0, 5], 30), ([2, 14], 30)):     # the end not reached / the start not at 0
        with pytest.raises(ShanshuiError, match=r"of 16 frames do not cover 30 frames$"):
            lv.overlap_weights(starts, 16, frames)
    with pytest.raises(ShanshuiError, match=r"^clips at \[0, 20\] leave frames uncovered$"):
        lv.overlap_weights([0, 20], 16, 36)                   # a gap between the clips
    monkeypatch.setattr("shanshui.flow.interpolate", lambda *a, **k: pytest.fail("interpolated at times=1"))
    lat = torch.arange(5, dtype=torch.float32).view(1, 1, 5, 1, 1).expand(1, 4, 5, 2, 2)
    out = list(lv.iter_decoded(lambda z: z[:, :3].permute(0, 2, 1, 3, 4) / 10, lat, 2, interpolate_times=1))
    assert [len(c) for c in out] == [2, 2, 1]
    assert np.concatenate(out)[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_long_video_plan_weights_and_last_ddim_step():
    from shanshui.errors import ShanshuiError
    from shanshui.pipelines import long_video as lv
    from shanshui.schedulers import make_scheduler, split_prediction

    plan = lv.make_plan(40, 16, 4, 10, 0.5)
    assert (plan.num_frames, plan.starts) == (40, (0, 12, 24))
    np.testing.assert_array_equal(lv.ccdm_weights([0], 16, 16), np.ones((1, 16)))         # one clip is allowed
    w = lv.overlap_weights([0, 15], 16, 31)                    # a single shared frame: half and half
    assert w[0, 15] == pytest.approx(0.5) and w[1, 0] == pytest.approx(0.5) and w[0, 14] == 1.0
    with pytest.raises(ShanshuiError, match=r"^overlap=16 must be an integer in \[0, 15\] \(below clip_frames=16\)$"):
        lv.check_long_inputs(0.5, 0.1, 16, 16, 32)
    with pytest.raises(ShanshuiError, match=r"^decode_chunk_size=0 must be >= 1$"):
        list(lv.iter_decoded(lambda z: z, torch.zeros(1, 4, 2, 2, 2), 0))
    # the step that lands on timestep 0 uses ᾱ_0 (not the "final" ᾱ): the same as DDIMScheduler.step
    from diffusers import DDIMScheduler

    # timesteps 900, ..., 100, 0; with set_alpha_to_one the "final" ᾱ (1) differs from ᾱ_0
    sched = DDIMScheduler.from_config(make_scheduler("ddim").config, steps_offset=0, set_alpha_to_one=True)
    sched.set_timesteps(10)
    t = int(sched.timesteps[-2])
    assert t == 100
    g = torch.Generator().manual_seed(0)
    sample, out = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    x0, eps = split_prediction(sched, out, sample, t)
    direction = eps
    expected = sched.step(out, t, sample).prev_sample
    torch.testing.assert_close(lv.ddim_update(sched, t, x0, direction), expected, rtol=1e-5, atol=1e-5)


def test_intake_from_files_limits_palettes_and_masks(tmp_path):
    import cv2
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import (Geometry, _to_uint8_rgb, apply_geometry, array_to_rgb, plan_geometry,
                                       prepare_painting, read_image)

    bg = (100, 150, 200)
    # a file goes through read_image with the caller's background and pixel limit
    Image.fromarray(np.zeros((40, 40, 4), np.uint8)).save(tmp_path / "clear.png")
    assert (prepare_painting(tmp_path / "clear.png", "crop", size=(32, 32), background=bg).image
            == np.array(bg, np.uint8)).all()
    with pytest.raises(ShanshuiError, match=r"'clear.png' is 40x40 = 0.0 MP; the limit is 0.001 MP"):
        prepare_painting(tmp_path / "clear.png", max_pixels=1000)
    # the pixel limit is inclusive, for files, PIL images and arrays alike; the messages show the limit exactly
    assert read_image(tmp_path / "clear.png", max_pixels=1600)[0].shape == (40, 40, 3)
    assert prepare_painting(Image.new("RGB", (40, 40)), "crop", size=(32, 32), max_pixels=1600).size == (32, 32)
    assert prepare_painting(np.zeros((10, 100, 3), np.uint8), "crop", size=(32, 32), max_pixels=1000).size == (32, 32)
    with pytest.raises(ShanshuiError, match=r"^painting is 1001x1000 = 1.0 MP; the limit is 1 MP$"):
        prepare_painting(Image.new("L", (1001, 1000)), max_pixels=1_000_000)
    with pytest.raises(ShanshuiError, match=r"^painting of shape \(1000, 1001\) exceeds the 1 MP limit$"):
        prepare_painting(np.zeros((1000, 1001), np.uint8), max_pixels=1_000_000)
    Image.new("L", (1001, 1000)).save(tmp_path / "big.png")
    with pytest.raises(ShanshuiError, match=r"is 1001x1000 = 1.0 MP; the limit is 1 MP \(downscale it first\)$"):
        read_image(tmp_path / "big.png", max_pixels=1_000_000)
    # palette images: transparent index -> background; without transparency -> plain RGB
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.putdata([0, 1])
    opaque = _to_uint8_rgb(pal, bg, notes := [])
    assert opaque[0].tolist() == [[10, 20, 30], [40, 50, 60]] and notes == ["P image converted to RGB"]
    pal.info["transparency"] = 0
    clear = _to_uint8_rgb(pal, bg, notes := [])
    assert clear[0].tolist() == [list(bg), [40, 50, 60]] and notes == [f"transparency composited over background {bg}"]
    rgba_pre = Image.fromarray(np.zeros((2, 2, 4), np.uint8), "RGBA").convert("RGBa")        # premultiplied
    assert (_to_uint8_rgb(rgba_pre, bg, []) == np.array(bg, np.uint8)).all()
    # 32-bit integers: 256 is already 16-bit; 65536 is out of range; float images may reach exactly 1
    assert _to_uint8_rgb(Image.fromarray(np.array([[0, 256]], np.int32), "I"), bg, [])[0, :, 0].tolist() == [0, 1]
    with pytest.raises(ShanshuiError, match=r"span \[0, 65536\]"):
        _to_uint8_rgb(Image.fromarray(np.array([[0, 65536]], np.int32), "I"), bg, [])
    assert _to_uint8_rgb(Image.fromarray(np.array([[0.0, 1.0]], np.float32)), bg, [])[0, :, 0].tolist() == [0, 255]
    with pytest.raises(ShanshuiError, match=r"^image dtype int32 is not supported"):
        array_to_rgb(np.zeros((2, 2), np.int32))
    # sizes: both conditions of each side, and the pair itself
    for size, message in (((36, 64), "width=36"), ((24, 64), "width=24"), ((64, 36), "height=36")):
        with pytest.raises(ShanshuiError, match=rf"^size {message} must be a multiple of 8 and >= 32$"):
            plan_geometry(100, 100, "crop", size=size)
    with pytest.raises(ShanshuiError, match=r"^size=\(64,\) must be \(width, height\)$"):
        plan_geometry(100, 100, "crop", size=(64,))
    assert plan_geometry(1000, 1, "pad", size=(64, 64)).resized == (64, 1)      # a one-pixel line stays one pixel
    # EXIF orientation 0 ("unknown") is no change and no note
    im = Image.new("RGB", (4, 2))
    exif = im.getexif()
    exif[0x0112] = 0
    im.save(tmp_path / "o0.png", exif=exif)
    assert read_image(tmp_path / "o0.png")[1] == []
    # masks resize by nearest neighbour (bool in, bool out); float images are not truncated to integers
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:7] = True
    g = plan_geometry(8, 8, "crop", size=(40, 40))
    expected = cv2.resize(mask.astype(np.uint8), (40, 40), interpolation=cv2.INTER_NEAREST).astype(bool)
    np.testing.assert_array_equal(apply_geometry(mask, g, nearest=True), expected)
    smooth = np.full((8, 8), 0.25, np.float32)
    assert apply_geometry(smooth, g).dtype == np.float32 and np.allclose(apply_geometry(smooth, g), 0.25, atol=1e-3)
    # the pad colour reads the first row (not the second)
    img = np.array([[255, 255, 255, 255, 0], [0, 255, 255, 0, 0], [0, 255, 0, 255, 255]], np.uint8)
    assert apply_geometry(img, Geometry((5, 3), (5, 3), (0, 0), (8, 8)))[7, 7] == 255


def test_arrow_fields_masks_and_messages(tmp_path):
    from PIL import Image

    from shanshui.control import arrows as ar
    from shanshui.errors import ShanshuiError

    # eq. 6 by hand for a single (1, 1) vector, σ = 2: exp(-d²/σ²) at distance d
    sparse = np.zeros((5, 5, 2), np.float32)
    sparse[2, 2] = (1.0, 1.0)
    dense = ar.densify(sparse, 2.0)
    assert dense[2, 2].tolist() == [1.0, 1.0] and dense[2, 3, 0] == pytest.approx(math.exp(-0.25))
    assert dense[0, 0, 1] == pytest.approx(math.exp(-8 / 4))
    for bad in (-1.0, float("inf")):
        with pytest.raises(ShanshuiError, match=r"^sigma=.* must be a finite number > 0$"):
            ar.densify(sparse, bad)
        with pytest.raises(ShanshuiError, match=r"^threshold R=.* must be a finite number >= 0$"):
            ar.threshold(dense, bad)
    # starts on the last column/row count; beyond them they are dropped; the field is float32
    edge = ar.sparse_flow([ar.Arrow(4, 4, 6, 4), ar.Arrow(5, 0, 6, 0), ar.Arrow(0, 5, 0, 6)], 5, 5)
    assert edge.dtype == np.float32 and edge[4, 4].tolist() == [2.0, 0.0] and np.count_nonzero(edge) == 1
    # a global strength below 1 scales the field; still regions are zero
    arrows = [ar.Arrow(10, 10, 20, 10)]
    full = ar.dense_field(arrows, 32, 32)
    np.testing.assert_allclose(ar.dense_field(arrows, 32, 32, strength=0.5), full * 0.5)
    still = np.zeros((32, 32), bool)
    still[:, :12] = True
    masked = ar.dense_field(arrows, 32, 32, still=still)
    assert not masked[:, :12].any() and np.array_equal(masked[:, 12:], full[:, 12:])
    with pytest.raises(ShanshuiError, match=r"^mask size \(4, 4\) does not match the field \(32, 32\)$"):
        ar.apply_still_mask(full, np.zeros((4, 4), bool))
    # the strength limit is inclusive
    assert ar.make_arrow([0, 0, 1, 1, ar.MAX_STRENGTH]).strength == ar.MAX_STRENGTH
    # messages name where the arrow came from
    with pytest.raises(ShanshuiError, match=r"^arrow start \(9, 0\) lies outside the 8x6 image \(x in \[0, 7\], "
                                            r"y in \[0, 5\]\)$"):
        ar.check_arrows_inside([ar.Arrow(9, 0, 1, 1)], 8, 6)
    with pytest.raises(ShanshuiError, match=r"^--arrow '1,2,3' has 3 numbers"):
        ar.parse_arrow("1,2,3")
    with pytest.raises(ShanshuiError, match=r"^arrows is not valid JSON: Expecting value: line 1 column 1"):
        ar.parse_arrows_json("nope\n")
    with pytest.raises(ShanshuiError, match=r"^arrows must hold a list of arrows"):
        ar.arrows_from_data({"x": 1})
    with pytest.raises(ShanshuiError, match=r"^arrow #0 in arrows needs 'from' and 'to'"):
        ar.arrows_from_data([{"from": [1, 2]}])
    with pytest.raises(ShanshuiError, match=r"^arrow #1 in arrows must be \[x0, y0, x1, y1\(, strength\)\]"):
        ar.arrows_from_data([[0, 0, 1, 1], 7])
    with pytest.raises(ShanshuiError, match=r"^arrow #0 in arrows has 3 numbers"):
        ar.arrows_from_data([[0, 0, 1]])
    (tmp_path / "a.json").write_text("[[0, 0, 1]]")
    with pytest.raises(ShanshuiError, match=r"^arrow #0 in arrow file '.*a.json' has 3 numbers"):
        ar.load_arrows(tmp_path / "a.json")
    assert ar.parse_arrows_json("  \n") == []
    # masks: grey+alpha uses the alpha; nearest-neighbour resizing keeps a 1-px checkerboard crisp
    la = np.zeros((2, 2, 2), np.uint8)
    la[0, 0, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert ar.load_mask(tmp_path / "la.png", 2, 2).tolist() == [[True, False], [False, False]]
    board = ((np.indices((4, 4)).sum(0) % 2) * 255).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "board.png")
    expected = np.kron(board > 127, np.ones((2, 2), bool))
    np.testing.assert_array_equal(ar.load_mask(tmp_path / "board.png", 8, 8), expected)
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(ShanshuiError, match=r"^mask '.*junk.png' is not a readable image: "):
        ar.load_mask(tmp_path / "junk.png", 8, 8)


def test_sofp_consistency_weight_by_hand_and_the_drivers_branches():
    from shanshui.errors import ShanshuiError
    from shanshui.flow import estimate_flow
    from shanshui.flow import sofp

    h = w = 12
    f_ab = np.zeros((h, w, 2), np.float32)
    f_ab[..., 0] = 1.0
    f_ba = np.zeros((h, w, 2), np.float32)
    f_ba[..., 0] = -0.5                                         # not the inverse of f_ab: round trip misses by 0.5 px
    img = np.full((h, w, 3), 0.5, np.float32)
    weight = sofp.consistency_weight(f_ab, f_ba, img, img, 1.0)
    tol = sofp.FB_REL_TOL * (1.0 + 0.25) + sofp.FB_ABS_TOL
    assert weight.dtype == np.float32 and weight[6, 6] == pytest.approx(1.0 / (1.0 + 0.25 / tol) + 1e-4, rel=1e-6)
    # the driver's branches: nadm-demo, the defaults, projection reliability on the first pair
    rng = np.random.default_rng(0)
    base = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    frames = np.stack([np.roll(base, s, axis=1) for s in (0, 1, 2)])
    f = frames.astype(np.float32)
    demo = sofp.double_frames(frames, method="nadm-demo")
    np.testing.assert_allclose(demo[1], sofp.midpoint_nadm_demo(f[0], f[1], estimate_flow(frames[0], frames[1], "dis")))
    np.testing.assert_array_equal(sofp.double_frames(frames), sofp.double_frames(frames, "sofp", "dis"))
    proj = sofp.double_frames(frames, reliability="projection")
    f01, f10 = estimate_flow(frames[0], frames[1], "dis"), estimate_flow(frames[1], frames[0], "dis")
    rel0 = sofp.projection_reliability(f01, estimate_flow(frames[0], frames[2], "dis"))
    np.testing.assert_allclose(proj[1], sofp.midpoint(f[0], f[1], f01, f10, 255.0, rel0, None))
    with pytest.raises(ShanshuiError, match=r"^method 'x' is not known; allowed: sofp, halfwarp, nadm-demo, linear, "
                                            r"rife$"):
        sofp.interpolate(frames, method="x")
    with pytest.raises(ShanshuiError, match=r"^flow 'x' is not known; allowed: \w+(, \w+)+$"):
        sofp.interpolate(frames, flow="x")


def test_warps_by_hand_weights_borders_and_shapes():
    from shanshui.errors import ShanshuiError
    from shanshui.flow.warp import backward_warp, check_flow, forward_splat

    # forward splat of 2-D values with per-pixel weights, by hand: a half-pixel shift splits each value in two
    values = np.zeros((3, 4), np.float32)
    values[1, 1] = 8.0
    flow = np.zeros((3, 4, 2), np.float32)
    flow[..., 0] = 0.5
    weights = np.full((3, 4), 2.0, np.float32)
    acc, mass = forward_splat(values, flow, weights)
    acc = acc.reshape(3, 4)
    assert acc[1, 1] == pytest.approx(8.0) and acc[1, 2] == pytest.approx(8.0)         # 8 · 0.5 · 2 each
    assert mass.reshape(3, 4)[1, 2] == pytest.approx(2.0)                               # two halves of weight 2
    # the zero border really is zero outside the image
    img = np.full((4, 4), 9.0, np.float32)
    out = backward_warp(img, np.full((4, 4, 2), -10.0, np.float32), border="zero")
    assert (out == 0).all()
    with pytest.raises(ShanshuiError, match=r"^flow must have shape \(H, W, 2\), got \(4, 4, 3\)$"):
        check_flow(np.zeros((4, 4, 3)))
    with pytest.raises(ShanshuiError, match=r"^flow size \(4, 4\) does not match image size \(5, 5\)$"):
        check_flow(np.zeros((4, 4, 2)), (5, 5))
    with pytest.raises(ShanshuiError, match=r"^image must have shape \(H, W\) or \(H, W, C\), got \(4,\)$"):
        backward_warp(np.zeros(4), np.zeros((4, 4, 2)))


def test_intake_long_side_check_fit_to_scaling_pixel_limit_restored_and_map_xy(tmp_path):
    import cv2
    from PIL import Image

    from shanshui.errors import ShanshuiError
    from shanshui.image_intake import array_to_rgb, fit_to, plan_geometry, prepare_painting, read_image

    with pytest.raises(ShanshuiError, match=r"^long side=30 must be a multiple of 8 and >= 32$"):
        plan_geometry(100, 100, "fit", 30)
    with pytest.raises(ShanshuiError, match=r"^image array must have 1, 3 or 4 channels, got 2$"):
        array_to_rgb(np.zeros((2, 2, 2), np.uint8))
    # fit_to scales both sides by the same factor (0.5 here) before the centre crop
    ramp = np.repeat(np.repeat(np.arange(300, dtype=np.uint8)[:, None], 100, 1)[..., None], 3, 2) // 2 * 2
    expected = cv2.resize(ramp, (50, 150), interpolation=cv2.INTER_AREA)[50:100]
    np.testing.assert_array_equal(fit_to(ramp, 50, 50), expected)
    # Pillow's own decompression-bomb limit is put back after reading
    before = Image.MAX_IMAGE_PIXELS
    Image.new("RGB", (4, 4)).save(tmp_path / "px.png")
    read_image(tmp_path / "px.png")
    assert Image.MAX_IMAGE_PIXELS == before
    # map_xy with a horizontal offset: a tall painting padded into a square sits 16 px from the left
    p = prepare_painting(np.zeros((100, 50, 3), np.uint8), "pad", size=(64, 64))
    assert p.geometry.offset == (16, 0)
    assert p.map_xy(0, 0) == pytest.approx((0.5 * 0.64 - 0.5 + 16, 0.5 * 0.64 - 0.5))
