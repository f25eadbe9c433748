"""Precision (--dtype) and memory options (--low-vram) on tiny models on the CPU.

bf16 runs every path end to end on the CPU, which catches dtype mismatches without a GPU; its frames are
compared with fp32 by PSNR (data range 1). Measured on these tiny random models: ~50 dB for text -> video
(max |Δ| 0.02); version 1 of the bundled model gave 43-45 dB (docs/performance.md). The tests require
>= 35 dB. Memory options must give the same frames as the default (max |Δ| <= 1e-5 in fp32).
"""

import copy

import numpy as np
import pytest
import torch

from conftest import randomize_motion
from shanshui.errors import ShanshuiError
from shanshui.metrics.video import psnr
from shanshui.runtime import MemoryOptions, resolve_device, resolve_dtype, vae_dtype

PROMPT = "Misty mountains, a boat on the lake."
MIN_PSNR_BF16 = 35.0
T2V = dict(num_frames=6, height=32, width=32, num_inference_steps=4, progress=False, seed=1)


# ------------------------------------------------------------------------------------------ runtime
def test_devices_absent_here_are_refused_naming_what_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    if not torch.cuda.is_available():
        for spec in ("cuda", "cuda:3", "CUDA:0"):
            with pytest.raises(ShanshuiError, match=r"is not available; this machine has: cpu"):
                resolve_device(spec)
    if not torch.backends.mps.is_available():
        with pytest.raises(ShanshuiError, match="'mps' is not available"):
            resolve_device("mps")
    with pytest.raises(ShanshuiError, match="'gpu' is not a device name"):
        resolve_device("gpu")


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16  # the rule, independent of this machine
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    with pytest.raises(ShanshuiError, match="fp16 is not supported on the CPU"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ShanshuiError, match="must be one of auto, fp32, fp16, bf16"):
        resolve_dtype("int8", "cpu")
    assert vae_dtype(torch.float16) == torch.float16
    assert vae_dtype(torch.bfloat16) == torch.float32 and vae_dtype(torch.float32) == torch.float32


@pytest.mark.parametrize("args, message", [
    (["generate", "x", "-o", "{out}", "--device", "cuda:3"], "--device 'cuda:3' is not available; this machine has: cpu"),
    (["generate", "x", "-o", "{out}", "--device", "mps"], "--device 'mps' is not available"),
    (["animate", "p.png", "x", "-o", "{out}", "--dtype", "fp16"], "--dtype fp16 is not supported on the CPU"),
    (["demo", "--out", "{out}", "--dtype", "fp16"], "--dtype fp16 is not supported on the CPU"),
])
def test_cli_refuses_bad_device_or_dtype_in_one_line(capsys, tmp_path, args, message):
    from shanshui.cli import main

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    out = tmp_path / "v.mp4"
    rc = main([a.replace("{out}", str(out)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and "Traceback" not in err


# ------------------------------------------------------------------------------------------ pipelines
@pytest.fixture(scope="module")
def parts():
    from shanshui.models.motion import build_video_unet
    from shanshui.models.presets import make_components

    c = make_components("tiny", seed=0)
    unet = build_video_unet(c["unet"], c["motion_config"])
    randomize_motion(unet)
    return c, unet


def make_pipe(parts, dtype="fp32", cls=None, memory=None):
    from shanshui.pipelines.text_to_video import TextToVideoPipeline, place

    c, unet = parts
    cls = cls or TextToVideoPipeline
    pipe = cls(copy.deepcopy(c["vae"]), copy.deepcopy(c["text_encoder"]), c["tokenizer"], copy.deepcopy(unet),
               c["scheduler"].__class__.from_config(c["scheduler"].config))
    return place(pipe, "cpu", dtype, memory)


def test_bf16_places_models_and_keeps_latents_float32(parts):
    pipe = make_pipe(parts, "bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32                   # decode keeps fp32
    seen = []
    pipe.unet.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    out = pipe(PROMPT, output_type="latent", **T2V)
    assert out.latents.dtype == torch.float32                # scheduler arithmetic in fp32
    assert set(seen) == {torch.bfloat16}                     # the UNet computes in bf16


def test_text_to_video_bf16_matches_fp32(parts):
    a = make_pipe(parts, "fp32")(PROMPT, **T2V).frames
    b = make_pipe(parts, "bf16")(PROMPT, **T2V).frames
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert psnr(a, b, data_range=1.0) >= MIN_PSNR_BF16
    assert not np.array_equal(a, b)  # bf16 really ran


def test_interpolation_after_bf16_runs_on_float32_frames(parts, monkeypatch):
    import shanshui.flow as flow

    seen = []
    real = flow.interpolate

    def spy(frames, *args, **kwargs):
        seen.append(np.asarray(frames).dtype)
        return real(frames, *args, **kwargs)

    monkeypatch.setattr(flow, "interpolate", spy)
    a = make_pipe(parts, "fp32")(PROMPT, interpolate_times=2, **T2V).frames
    b = make_pipe(parts, "bf16")(PROMPT, interpolate_times=2, **T2V).frames
    assert seen == [np.float32, np.float32]
    assert a.shape[1] == b.shape[1] == 2 * T2V["num_frames"] - 1
    assert psnr(a, b, data_range=1.0) >= MIN_PSNR_BF16


def test_long_video_bf16_matches_fp32(parts):
    from shanshui.pipelines import long_video as lv

    kw = dict(num_frames=10, clip_frames=4, overlap=1, num_inference_steps=3, height=32, width=32, progress=False)
    a = lv.generate_long(make_pipe(parts, "fp32"), PROMPT, generator=torch.Generator().manual_seed(2), **kw)
    b = lv.generate_long(make_pipe(parts, "bf16"), PROMPT, generator=torch.Generator().manual_seed(2), **kw)
    assert a.frames.shape == b.frames.shape == (1, 10, 32, 32, 3)
    assert b.latents.dtype == torch.float32
    assert psnr(a.frames, b.frames, data_range=1.0) >= MIN_PSNR_BF16


def test_painting_to_video_bf16_matches_fp32(parts):
    from shanshui.control.arrows import Arrow
    from shanshui.data.procedural import render_clip, sample_scene
    from shanshui.pipelines.painting_to_video import PaintingToVideoPipeline

    painting = render_clip(sample_scene(11), frames=2, size=(48, 80))[0][0]
    kw = dict(num_frames=5, num_inference_steps=6, progress=False, seed=3, arrows=[Arrow(20, 20, 40, 20)])
    a = make_pipe(parts, "fp32", PaintingToVideoPipeline)(painting, PROMPT, **kw)
    b = make_pipe(parts, "bf16", PaintingToVideoPipeline)(painting, PROMPT, **kw)
    assert b.latents.dtype == torch.float32
    assert psnr(a.frames, b.frames, data_range=1.0) >= MIN_PSNR_BF16


def test_load_pipeline_takes_dtype_names(tiny_model_files):
    from shanshui.pipelines.painting_to_video import PaintingToVideoPipeline, load_painting_pipeline
    from shanshui.pipelines.text_to_video import load_pipeline

    model, motion = tiny_model_files
    pipe = load_pipeline(model, motion, dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert load_pipeline(model, motion).unet.dtype == torch.float32          # auto on a CPU
    p2v = load_painting_pipeline(model, motion, dtype="bf16", low_vram=True)
    assert isinstance(p2v, PaintingToVideoPipeline) and p2v.memory == MemoryOptions.low_vram()
    with pytest.raises(ShanshuiError, match="fp16 is not supported on the CPU"):
        load_pipeline(model, motion, dtype="fp16")


# ------------------------------------------------------------------------------------------ memory options
@pytest.mark.parametrize("options", [
    MemoryOptions(decode_chunk=1),
    MemoryOptions(cfg_sequential=True),
    MemoryOptions(split_inference=True, spatial_split=7, temporal_split=2),
    MemoryOptions.low_vram(),            # cpu_offload is a no-op without an accelerator
], ids=["vae-slicing", "cfg-sequential", "split-inference", "low-vram"])
def test_memory_options_give_the_same_frames(parts, options):
    ref = make_pipe(parts)(PROMPT, **T2V).frames
    out = make_pipe(parts, memory=options)(PROMPT, **T2V).frames
    assert np.abs(out - ref).max() <= 1e-5


def test_split_inference_is_exact_for_spatial_sparse_causal_and_reversible(parts):
    from shanshui.models.memory import disable_split_inference, enable_split_inference
    from shanshui.models.motion import set_temporal_attention

    pipe = make_pipe(parts)
    set_temporal_attention(pipe.unet, "spatial")
    keys = list(pipe.unet.state_dict())
    ref = pipe(PROMPT, **T2V).frames
    enable_split_inference(pipe.unet, spatial_split=5, temporal_split=2)
    wrapped = list(pipe.unet.state_dict())
    assert wrapped != keys                                   # the wrappers are really there
    assert all(".motion_modules." not in k or ".module." not in k for k in wrapped)  # motion blocks not split
    out = pipe(PROMPT, **T2V).frames
    assert np.abs(out - ref).max() <= 1e-5
    disable_split_inference(pipe.unet)
    assert list(pipe.unet.state_dict()) == keys


def test_split_inference_really_splits(parts):
    """The wrapped layers see at most the split size along the batch axis."""
    from shanshui.models.memory import enable_split_inference

    pipe = make_pipe(parts)
    sizes = {"resnet": set(), "motion": set()}
    res = pipe.unet.down_blocks[0].resnets[0]
    block = pipe.unet.down_blocks[0].motion_modules[0].transformer_blocks[0]
    res.register_forward_pre_hook(lambda m, a, k: sizes["resnet"].add(k["input_tensor"].shape[0]), with_kwargs=True)
    block.register_forward_pre_hook(lambda m, a, k: sizes["motion"].add(k["hidden_states"].shape[0]),
                                    with_kwargs=True)
    enable_split_inference(pipe.unet, spatial_split=7, temporal_split=2)
    pipe(PROMPT, output_type="latent", **T2V)
    assert max(sizes["resnet"]) == 2                          # 2 x 6 frames -> chunks of 2
    assert max(sizes["motion"]) == 7


def test_cfg_sequential_runs_two_half_batches(parts):
    pipe = make_pipe(parts, memory=MemoryOptions(cfg_sequential=True))
    batches = []
    pipe.unet.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    pipe(PROMPT, output_type="latent", **T2V)
    assert batches == [1] * (2 * T2V["num_inference_steps"])


def test_half_precision_vae_overflow_is_decoded_again_in_float32(parts, monkeypatch):
    pipe = make_pipe(parts)
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    pipe.vae.to(torch.float16).to(torch.float32)             # the weights an fp16 VAE has, in fp32
    with torch.no_grad():
        ref = pipe.decode_latents(z)
    pipe.vae.to(torch.float16)
    real = pipe.vae.decode

    def overflowing(x, *args, **kwargs):
        out = real(x, *args, **kwargs)
        if x.dtype == torch.float16:
            out.sample.fill_(float("inf"))
        return out

    monkeypatch.setattr(pipe.vae, "decode", overflowing)
    with torch.no_grad():
        out = pipe.decode_latents(z, 2)
    assert pipe.vae_upcasts == 2 and pipe.vae.dtype == torch.float16
    assert torch.allclose(out, ref, atol=1e-5)


# ------------------------------------------------------------------------------------------ training
def test_training_step_in_bf16_matches_fp32(tmp_path):
    from shanshui.data.procedural import render_clip, sample_scene
    from shanshui.training.components import build_models
    from shanshui.training.config import config_from_dict
    from shanshui.training.loop import step_generator
    from shanshui.training.step import training_step

    cfg = config_from_dict(dict(output_dir=str(tmp_path), model=dict(preset="tiny"),
                                data=dict(cache=None, root=".", frames=4, size=32), loss=dict(m=1)))
    clip = render_clip(sample_scene(3), frames=4, size=(32, 32))[0]                    # (4, 32, 32, 3) uint8
    batch = {"pixel_values": torch.from_numpy(clip).permute(0, 3, 1, 2)[None].float() / 127.5 - 1,
             "caption": [PROMPT]}
    results = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        models = build_models(cfg.model, seed=0, frozen_dtype=dtype)
        if dtype == torch.bfloat16:
            frozen = [p for _, p in models.frozen_parameters()]
            assert {p.dtype for p in frozen} == {torch.bfloat16}
            assert {p.dtype for p in models.trainable_parameters()} == {torch.float32}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = training_step(batch, models, models.noise_scheduler, cfg, step_generator(0, 0, 0, 0))
        out["loss"].backward()
        grads = [p.grad for p in models.trainable_parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        results[name] = (out["loss_diff"].item(), out["loss_con"].item(),
                         torch.cat([g.flatten() for g in grads]))
    (d32, c32, g32), (d16, c16, g16) = results["fp32"], results["bf16"]
    assert d16 == pytest.approx(d32, rel=0.02) and c16 == pytest.approx(c32, rel=0.02)
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0)
    assert cos > 0.95


def test_vae_tiling_is_wired_and_only_changes_frames_above_the_tile_size(parts):
    pipe = make_pipe(parts, memory=MemoryOptions(vae_tiling=True))
    plain = make_pipe(parts)
    assert pipe.vae.use_tiling and not plain.vae.use_tiling
    tile = pipe.vae.tile_sample_min_size                                         # the VAE's sample size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        small = torch.randn(1, 4, 2, tile // 8, tile // 8, generator=g)
        big = torch.randn(1, 4, 2, tile // 4, tile // 4, generator=g)            # 2x the tile: tiled
        assert torch.equal(pipe.decode_latents(small), plain.decode_latents(small))
        assert not torch.allclose(pipe.decode_latents(big), plain.decode_latents(big), atol=1e-4)
    pipe.set_memory_options(None)
    assert not pipe.vae.use_tiling


def test_noise_adapter_computes_in_float32_under_autocast():
    from shanshui.models.noise_adapter import NoiseAdapter

    torch.manual_seed(0)
    adapter = NoiseAdapter(in_channels=4, grid=4, hidden_dim=32, proj_dim=8)
    eps = torch.randn(1, 4, 5, 16, 16)
    ref = adapter(eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adapter(eps.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, adapter(eps.bfloat16().float()), atol=1e-6)   # only the input was rounded
    assert (out - ref).abs().max() < 0.05
