"""The inflated video UNet: identity at init, processors in place, norm modes, freezing."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from shanshui.models.attention import NullAttnProcessor, SparseCausalAttnProcessor, SpatialSparseCausalAttnProcessor
from shanshui.models.motion import (
    FramewiseGroupNorm,
    build_video_unet,
    freeze_image_layers,
    motion_parameters,
    motion_transformers,
    set_norm_mode,
    set_temporal_attention,
)


def test_fresh_module_reproduces_image_unet_per_frame(tiny):
    unet2d = tiny["unet"].eval()
    video = build_video_unet(unet2d, tiny["motion_config"]).eval()
    b, f, h = 2, 5, 8
    z = torch.randn(b, 4, f, h, h)
    text = torch.randn(b, 77, 32)
    t = torch.tensor([500])
    with torch.no_grad():
        out = video(z, t, encoder_hidden_states=text.repeat_interleave(f, 0)).sample          # (b, c, f, h, w)
        frames = z.permute(0, 2, 1, 3, 4).reshape(b * f, 4, h, h)
        ref = unet2d(frames, t, encoder_hidden_states=text.repeat_interleave(f, 0)).sample
    ref = ref.reshape(b, f, 4, h, h).permute(0, 2, 1, 3, 4)
    assert torch.allclose(out, ref, atol=1e-5)


def test_random_module_is_not_the_identity(tiny_video_unet, tiny):
    """Guards the previous test: with non-zero proj_out the frames interact."""
    z = torch.randn(1, 4, 4, 8, 8)
    text = torch.randn(4, 77, 32)
    with torch.no_grad():
        a = tiny_video_unet(z, 10, encoder_hidden_states=text).sample
        z2 = z.clone()
        z2[:, :, 3] += 1
        b = tiny_video_unet(z2, 10, encoder_hidden_states=text).sample
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-5  # versatile attention lets frame 0 see frame 3


@pytest.mark.parametrize("mode,cls2", [("temporal", SparseCausalAttnProcessor),
                                       ("spatial", SpatialSparseCausalAttnProcessor),
                                       ("off", AttnProcessor2_0)])
def test_processors_installed_on_second_attention_only(tiny_video_unet, mode, cls2):
    set_temporal_attention(tiny_video_unet, mode)
    procs = tiny_video_unet.attn_processors
    mm = {k: v for k, v in procs.items() if ".motion_modules." in k}
    assert len(mm) == 2 * len(motion_transformers(tiny_video_unet))
    for name, proc in mm.items():
        expected = cls2 if name.endswith("attn2.processor") else AttnProcessor2_0
        assert type(proc) is expected, name
    image = [v for k, v in procs.items() if ".motion_modules." not in k]
    assert image and not any(isinstance(p, (SparseCausalAttnProcessor, SpatialSparseCausalAttnProcessor))
                             for p in image)


def test_versatile_off_ablation(tiny_video_unet):
    set_temporal_attention(tiny_video_unet, "temporal", versatile=False)
    # the joint GroupNorm mixes statistics of all frames; per-frame norm isolates the attention's effect
    set_norm_mode(tiny_video_unet, "frame")
    attn1 = [v for k, v in tiny_video_unet.attn_processors.items() if k.endswith("attn1.processor")
             and ".motion_modules." in k]
    assert attn1 and all(isinstance(p, NullAttnProcessor) for p in attn1)
    # with versatile off, sparse-causal on and per-frame norm, the whole UNet becomes causal in time
    z = torch.randn(1, 4, 4, 8, 8)
    text = torch.randn(4, 77, 32)
    with torch.no_grad():
        a = tiny_video_unet(z, 10, encoder_hidden_states=text).sample
        z2 = z.clone()
        z2[:, :, 3] += 1
        b = tiny_video_unet(z2, 10, encoder_hidden_states=text).sample
    assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-6)
    assert (a[:, :, 3] - b[:, :, 3]).abs().max() > 1e-4


def test_spatial_mode_runs_with_guidance_batch(tiny_video_unet):
    set_temporal_attention(tiny_video_unet, "spatial")
    z = torch.randn(2, 4, 3, 8, 8)  # batch 2 as with classifier-free guidance
    out = tiny_video_unet(z, 10, encoder_hidden_states=torch.randn(6, 77, 32)).sample
    assert out.shape == z.shape and torch.isfinite(out).all()


def test_framewise_group_norm_matches_per_frame_norm():
    norm = FramewiseGroupNorm(4, 16)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 16, 5, 3, 3)
    ref = torch.stack([torch.nn.functional.group_norm(x[:, :, i], 4, norm.weight, norm.bias, norm.eps)
                       for i in range(5)], dim=2)
    assert torch.allclose(norm(x), ref, atol=1e-5)


def test_set_norm_mode_keeps_weights(tiny_video_unet):
    before = {k: v.clone() for k, v in tiny_video_unet.state_dict().items()}
    set_norm_mode(tiny_video_unet, "frame")
    assert all(type(m.norm) is FramewiseGroupNorm for m in motion_transformers(tiny_video_unet))
    after = tiny_video_unet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_freeze_image_layers(tiny_video_unet):
    freeze_image_layers(tiny_video_unet)
    trainable = {id(p) for p in tiny_video_unet.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in motion_parameters(tiny_video_unet)}
    names = [n for n, p in tiny_video_unet.named_parameters() if p.requires_grad]
    assert names and all(".motion_modules." in n for n in names)


def test_mismatched_unet_is_a_clear_error(tiny):
    from shanshui.errors import ShanshuiError
    from shanshui.models.motion import MotionConfig

    bad = MotionConfig(block_out_channels=(32, 32), layers_per_block=1, num_attention_heads=4, norm_num_groups=8)
    with pytest.raises(ShanshuiError, match=r"block channels \(32, 32\)"):
        build_video_unet(tiny["unet"], bad)
