"""Keyframes (training-free): pinned frames decode to the keyframe's VAE round trip, the start noise of the
neighbours follows the stated formula, errors are one line; and control works on checkpoint + LoRA models."""

import copy

import numpy as np
import pytest
import torch

from shanshui.control.arrows import Arrow
from shanshui.control.keyframes import KeyframePins, correlation, encode_rgb, parse_keyframe
from shanshui.errors import ShanshuiError
from shanshui.pipelines.text_to_video import TextToVideoPipeline
from shanshui.schedulers import make_scheduler

SMALL = dict(num_frames=6, height=32, width=32, num_inference_steps=3, progress=False, seed=1)


@pytest.fixture()
def pipe(tiny, tiny_video_unet):
    return TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())


def image(seed, h=32, w=32):
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8, w // 8, 3))
    return (np.kron(base, np.ones((8, 8, 1))) * 255).astype(np.uint8)   # blocky: survives the tiny VAE better


def roundtrip(pipe, rgb):
    with torch.no_grad():
        return pipe.decode_latents(encode_rgb(pipe, rgb[None]))[0, 0].permute(1, 2, 0).numpy()


def test_pinned_frames_decode_to_the_keyframes_vae_round_trip(pipe):
    a, b = image(1), image(2)
    out = pipe("mist over peaks", keyframes=[(0, a), (-1, b)], **SMALL)
    # Stated tolerance: a pinned frame equals the VAE reconstruction of its keyframe to 1e-5.
    np.testing.assert_allclose(out.frames[0, 0], roundtrip(pipe, a), atol=1e-5)
    np.testing.assert_allclose(out.frames[0, 5], roundtrip(pipe, b), atol=1e-5)
    assert np.abs(out.frames[0, 2] - out.frames[0, 0]).max() > 1e-3        # unpinned frames are generated
    plain = pipe("mist over peaks", **SMALL).frames
    assert np.abs(plain[0, 0] - out.frames[0, 0]).max() > 1e-2            # ...and the pin did something
    again = pipe("mist over peaks", keyframes=[(0, a), (-1, b)], **SMALL).frames
    assert np.array_equal(out.frames, again)


def test_start_noise_follows_the_formula():
    sched = make_scheduler()
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(1, 4, 1, 2, 2, generator=g), torch.randn(1, 4, 1, 2, 2, generator=g)
    lat = torch.randn(1, 4, 7, 2, 2, generator=g)
    t = 981
    a = float(sched.alphas_cumprod[t])
    pins = KeyframePins(sched, [2], z, eps, 7, decay=2.0)
    out = pins.start(lat, t)
    for f in range(7):
        rho = np.exp(-abs(f - 2) / 2.0)
        noise = rho * eps[:, :, 0] + np.sqrt(1 - rho ** 2) * lat[:, :, f]
        want = np.sqrt(a) * rho * z[:, :, 0] + np.sqrt(1 - a) * noise
        torch.testing.assert_close(out[:, :, f], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :, 2], np.sqrt(a) * z[:, :, 0] + np.sqrt(1 - a) * eps[:, :, 0],
                               atol=1e-6, rtol=0)
    assert correlation([0, 1, 3], 0.0).tolist() == [1.0, 0.0, 0.0]


def test_keyframe_errors(pipe, tmp_path):
    with pytest.raises(ShanshuiError, match="keyframe index 6 is outside the video's 6 frames"):
        pipe("x", keyframes=[(6, image(0))], **SMALL)
    with pytest.raises(ShanshuiError, match="keyframe index 5 is given twice"):
        pipe("x", keyframes=[(5, image(0)), (-1, image(1))], **SMALL)
    with pytest.raises(ShanshuiError, match="must be INDEX:IMAGE"):
        parse_keyframe("first.png")
    with pytest.raises(ShanshuiError, match="does not exist"):
        parse_keyframe(f"3:{tmp_path / 'nope.png'}")
    with pytest.raises(ShanshuiError, match="keyframes work within one clip"):
        pipe("x", keyframes=[(0, image(0))], **dict(SMALL, num_frames=40))


def test_cli_keyframe(capsys, tmp_path, tiny_model_files):
    from PIL import Image

    from shanshui.cli import main

    model, motion = tiny_model_files
    key = tmp_path / "key.png"
    Image.fromarray(image(3)).save(key)
    out = tmp_path / "k.gif"
    base = ["generate", "mist", "--model", str(model), "--motion-module", str(motion), "--frames", "4", "--size",
            "32", "--steps", "2", "--no-interpolate", "-o", str(out)]
    assert main(base + ["--keyframe", f"-1:{key}"]) == 0 and out.exists()
    capsys.readouterr()
    out.unlink()
    code = main(base + ["--keyframe", f"9:{key}"])
    err = capsys.readouterr().err
    assert code == 2 and "keyframe index 9 is outside the video's 4 frames" in err and err.count("\n") == 1
    assert not out.exists()
    code = main(["animate", str(key), "mist", "--model", str(model), "--motion-module", str(motion),
                 "--keyframe", f"0:{key}", "-o", str(tmp_path / "a.gif")])
    err = capsys.readouterr().err
    assert code == 2 and "--keyframe 0 is the painting itself" in err and not (tmp_path / "a.gif").exists()
    for cmd in (base, ["animate", str(key), "mist", "--model", str(model), "--motion-module", str(motion),
                       "-o", str(out)]):
        code = main(cmd + ["--keyframe", f"-1:{key}", "--keyframe-guidance", "1.5"])
        err = capsys.readouterr().err
        assert code == 2 and err == "error: --keyframe-guidance=1.5 must be in [0, 1]\n" and not out.exists()


# ------------------------------------------------------------------------------------------ personalised models
@pytest.fixture(scope="module")
def personalised(tmp_path_factory):
    """A single-file checkpoint of the SD-1.5-topology tiny model, a motion module and a style LoRA on disk."""
    from ldm_layout import make_sd15_topology, save, to_ldm
    from conftest import randomize_motion
    from safetensors.torch import save_file
    from shanshui.models.motion import MotionConfig, build_video_unet
    from shanshui.models.motion_io import save_motion_module

    root = tmp_path_factory.mktemp("personal")
    ref = make_sd15_topology(seed=4)
    save(to_ldm(ref), root / "community.safetensors")
    cfg = MotionConfig.for_unet(ref["unet"].config, num_attention_heads=4, max_seq_length=8)
    unet = build_video_unet(copy.deepcopy(ref["unet"]), cfg)
    randomize_motion(unet, seed=5)
    save_motion_module(unet, root / "motion.safetensors")
    g = torch.Generator().manual_seed(6)
    lora = {}
    for name, (o, i) in {"down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v": (32, 64),
                         "up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2": (32, 128)}.items():
        lora[f"lora_unet_{name}.lora_down.weight"] = torch.randn(4, i, generator=g)
        lora[f"lora_unet_{name}.lora_up.weight"] = torch.randn(o, 4, generator=g) * 0.5
        lora[f"lora_unet_{name}.alpha"] = torch.tensor(4.0)
    lora["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.randn(4, 64, generator=g)
    lora["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.randn(128, 4, generator=g)
    save_file(lora, str(root / "style.safetensors"))
    return root


def test_arrows_still_mask_and_keyframes_on_checkpoint_plus_lora(personalised):
    from shanshui.pipelines.painting_to_video import load_painting_pipeline

    root = personalised
    pipe = load_painting_pipeline(root / "community.safetensors", root / "motion.safetensors",
                                  loras=[f"{root / 'style.safetensors'}:0.8"])
    assert pipe.load_notes == ["LoRA 'style.safetensors' (scale 0.8): patched 3 layers (UNet 2, text encoder 1)"]
    plain = load_painting_pipeline(root / "community.safetensors", root / "motion.safetensors")
    painting, key = image(7, 64, 64), image(8, 64, 64)
    still = np.zeros((64, 64), bool)
    still[:, 40:] = True
    kw = dict(num_frames=4, num_inference_steps=4, progress=False, seed=2, long_side=64, arrows=[Arrow(8, 20, 28, 20)],
              still_mask=still, keyframes=[(-1, key)])
    out = pipe(painting, "ink mountains", **kw)
    frames = out.frames[0]
    np.testing.assert_allclose(frames[0], roundtrip(pipe, painting), atol=1e-5)          # frame 0: the painting
    # the pinned last frame is the keyframe's round trip wherever the still mask does not hold it
    np.testing.assert_allclose(frames[3][:, :32], roundtrip(pipe, key)[:, :32], atol=1e-5)
    np.testing.assert_array_equal(frames[1:, :, 44:], np.broadcast_to(frames[:1, :, 44:], frames[1:, :, 44:].shape))
    assert out.velocity[..., 0].max() > 0 and out.velocity[:, 40:].max() == 0            # arrows moved, mask held
    other = plain(painting, "ink mountains", **kw).frames[0]
    assert np.abs(other[1:3, :, :32] - frames[1:3, :, :32]).max() > 1e-3                 # the LoRA took effect


def test_neighbour_guidance_follows_the_formula():
    """guide() adds √ᾱ_next·g·ρ(d)·left·(z_k − x̂0) to each unpinned frame, nothing to pinned ones."""
    sched = make_scheduler()
    g = torch.Generator().manual_seed(4)
    z, eps = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    lat, x0 = torch.randn(1, 4, 8, 3, 3, generator=g), torch.randn(1, 4, 8, 3, 3, generator=g)
    pins = KeyframePins(sched, [1, 6], z, eps, 8, decay=1.5, guidance=0.6)
    out = pins.guide(lat, x0, 501, 0.75)
    a = float(sched.alphas_cumprod[501])
    for f in range(8):
        k = 0 if abs(f - 1) <= abs(f - 6) else 1
        d = min(abs(f - 1), abs(f - 6))
        w = 0.0 if d == 0 else 0.6 * np.exp(-d / 1.5) * 0.75
        want = lat[:, :, f] + np.sqrt(a) * w * (z[:, :, k] - x0[:, :, f])
        torch.testing.assert_close(out[:, :, f], want, atol=1e-6, rtol=0)
    assert torch.equal(pins.guide(lat, x0, 501, 0.0), lat)                       # the last step: no pull
    assert torch.equal(KeyframePins(sched, [1], z[:, :, :1], eps[:, :, :1], 8, guidance=0.0).guide(lat, x0, 501, 1.0),
                       lat)
    with pytest.raises(ShanshuiError, match=r"keyframe guidance=1.5 must be in \[0, 1\]"):
        KeyframePins(sched, [1], z[:, :, :1], eps[:, :, :1], 8, guidance=1.5)


def test_neighbour_guidance_is_a_ddim_step_from_the_blended_clean_latent():
    """For DDIM (η = 0) the guided latent equals a step taken from (1 − w)·x̂0 + w·z_k with the frame's own ε."""
    from shanshui.schedulers import split_prediction

    sched = make_scheduler()
    sched.set_timesteps(10)
    t, t_next = sched.timesteps[3], sched.timesteps[4]
    g = torch.Generator().manual_seed(5)
    z, eps = torch.randn(1, 4, 1, 2, 2, generator=g), torch.randn(1, 4, 1, 2, 2, generator=g)
    lat, out = torch.randn(1, 4, 5, 2, 2, generator=g), torch.randn(1, 4, 5, 2, 2, generator=g)
    pins = KeyframePins(sched, [0], z, eps, 5, decay=2.0, guidance=1.0)
    x0, e = split_prediction(sched, out, lat, t)
    guided = pins.guide(sched.step(out, t, lat).prev_sample, x0, t_next, 0.5)
    a = sched.alphas_cumprod[int(t_next)]
    w = torch.tensor([0.0] + [0.5 * np.exp(-d / 2.0) for d in range(1, 5)], dtype=torch.float32).view(1, 1, 5, 1, 1)
    blended = (1 - w) * x0 + w * z[:, :, [0] * 5]
    torch.testing.assert_close(guided[:, :, 1:], (a.sqrt() * blended + (1 - a).sqrt() * e)[:, :, 1:],
                               atol=1e-5, rtol=0)


def test_pipeline_guidance_default_and_nonzero_moves_neighbours(pipe):
    from shanshui.control.keyframes import DEFAULT_GUIDANCE

    a = image(1)
    default = pipe("mist over peaks", keyframes=[(2, a)], **SMALL).frames
    assert DEFAULT_GUIDANCE == 0.75
    assert np.array_equal(default, pipe("mist over peaks", keyframes=[(2, a)], keyframe_guidance=0.75, **SMALL).frames)
    base = pipe("mist over peaks", keyframes=[(2, a)], keyframe_guidance=0.0, **SMALL).frames
    guided = pipe("mist over peaks", keyframes=[(2, a)], keyframe_guidance=1.0, **SMALL).frames
    np.testing.assert_allclose(guided[0, 2], roundtrip(pipe, a), atol=1e-5)       # the pin still holds
    assert np.abs(guided[0, 3] - base[0, 3]).max() > 1e-3                          # neighbours were pulled


def test_painting_keyframe_guidance_keeps_the_pin_and_moves_neighbours(tiny, tiny_video_unet):
    from shanshui.pipelines.painting_to_video import PaintingToVideoPipeline

    pipe = PaintingToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                                   make_scheduler())
    kw = dict(num_frames=5, num_inference_steps=4, long_side=32, progress=False, seed=2, use_vsds=False,
              use_proxy=False, output_type="latent")
    painting, key = image(7), image(8)
    plain = pipe(painting, "mist", keyframes=[(3, key)], **kw).frames
    guided = pipe(painting, "mist", keyframes=[(3, key)], keyframe_guidance=1.0, **kw).frames
    torch.testing.assert_close(guided[:, :, 3], plain[:, :, 3])          # the pinned latent is the keyframe's
    assert (guided[:, :, 2] - plain[:, :, 2]).abs().max() > 1e-4
    torch.testing.assert_close(guided[:, :, 0], plain[:, :, 0])          # frame 0 stays the painting
