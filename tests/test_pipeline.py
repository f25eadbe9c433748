"""Text-to-video pipeline: equality with diffusers' AnimateDiffPipeline, determinism, validation, loading."""

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.models.motion import set_temporal_attention
from shanshui.pipelines.text_to_video import TextToVideoPipeline, load_pipeline
from shanshui.schedulers import make_scheduler

PROMPT = "Mountains, dense fog, red sun, boat on the lake."
SMALL = dict(num_frames=6, height=32, width=32, num_inference_steps=3, progress=False)


@pytest.fixture()
def pipe(tiny, tiny_video_unet):
    return TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())


def test_equals_diffusers_animatediff_when_sparse_causal_off(pipe):
    from diffusers import AnimateDiffPipeline

    set_temporal_attention(pipe.unet, "off")
    ours = pipe(PROMPT, negative_prompt="blurry", seed=7, **SMALL).frames
    peer = AnimateDiffPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                               unet=pipe.unet, scheduler=make_scheduler(), motion_adapter=None)
    peer.set_progress_bar_config(disable=True)
    theirs = peer(PROMPT, negative_prompt="blurry", num_frames=6, height=32, width=32, num_inference_steps=3,
                  guidance_scale=8.0, generator=torch.Generator().manual_seed(7), output_type="np").frames
    assert ours.shape == (1, 6, 32, 32, 3)
    assert np.abs(np.asarray(theirs) - ours).max() <= 1e-4


def test_sparse_causal_changes_the_result(pipe):
    a = pipe(PROMPT, seed=1, **SMALL).frames
    set_temporal_attention(pipe.unet, "off")
    b = pipe(PROMPT, seed=1, **SMALL).frames
    assert np.abs(a - b).max() > 1e-3


def test_deterministic_for_a_seed(pipe):
    a = pipe(PROMPT, seed=3, **SMALL).frames
    b = pipe(PROMPT, seed=3, **SMALL).frames
    c = pipe(PROMPT, seed=4, **SMALL).frames
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_output_types(pipe):
    pt = pipe(PROMPT, seed=0, output_type="pt", **SMALL).frames
    assert pt.shape == (1, 6, 3, 32, 32) and 0 <= pt.min() and pt.max() <= 1
    pil = pipe(PROMPT, seed=0, output_type="pil", **SMALL).frames
    assert len(pil[0]) == 6 and pil[0][0].size == (32, 32)
    lat = pipe(PROMPT, seed=0, output_type="latent", **SMALL).frames
    assert lat.shape == (1, 4, 6, 4, 4)


def test_chunked_decode_equals_single_decode(pipe):
    a = pipe(PROMPT, seed=0, decode_chunk_size=1, **SMALL).frames
    b = pipe(PROMPT, seed=0, decode_chunk_size=16, **SMALL).frames
    assert np.abs(a - b).max() < 1e-5


def test_no_guidance_skips_the_unconditional_pass(pipe):
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    pipe(PROMPT, seed=0, guidance_scale=1.0, **SMALL)
    pipe(PROMPT, seed=0, guidance_scale=8.0, **SMALL)
    hook.remove()
    assert calls == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("kwargs,message", [
    (dict(height=30), "height=30 must be a positive multiple of 8"),
    (dict(width=0), "width=0 must be a positive multiple of 8"),
    (dict(num_frames=1), "frames=1 must be >= 2"),
    (dict(num_frames=33, clip_frames=33), "clip_frames=33 exceeds this motion module's window of 32 frames"),
    (dict(num_inference_steps=0), "steps=0 must be >= 1"),
    (dict(guidance_scale=-1.0), "guidance=-1.0 must be a finite number >= 0"),
    (dict(prompt=""), "prompt must be a non-empty string"),
])
def test_input_validation(pipe, kwargs, message):
    args = dict(prompt=PROMPT, num_frames=4, height=32, width=32, num_inference_steps=1, progress=False)
    args.update(kwargs)
    with pytest.raises(ShanshuiError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipe(**args)


def test_load_from_files_reproduces_in_memory(tiny_model_files, tiny):
    from shanshui.models.motion import build_video_unet
    from shanshui.models.motion_io import load_motion_module

    model_dir, motion = tiny_model_files
    loaded = load_pipeline(model_dir, motion)
    state, config = load_motion_module(motion)
    unet = build_video_unet(tiny["unet"], config, state)
    ref = TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], unet, make_scheduler())
    assert np.abs(loaded(PROMPT, seed=5, **SMALL).frames - ref(PROMPT, seed=5, **SMALL).frames).max() < 1e-6


def test_sparse_causal_override_on_load(tiny_model_files):
    from shanshui.models.attention import SpatialSparseCausalAttnProcessor

    pipe = load_pipeline(*tiny_model_files, sparse_causal="spatial")
    procs = [p for k, p in pipe.unet.attn_processors.items() if k.endswith("attn2.processor") and "motion" in k]
    assert procs and all(isinstance(p, SpatialSparseCausalAttnProcessor) for p in procs)


def test_missing_and_corrupt_models(tmp_path, tiny_model_files):
    model_dir, motion = tiny_model_files
    with pytest.raises(ShanshuiError, match="does not exist"):
        load_pipeline(tmp_path / "nothing", motion)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShanshuiError, match="lacks unet/, vae/, text_encoder/, tokenizer/"):
        load_pipeline(tmp_path / "empty", motion)
    bad = tmp_path / "sd.safetensors"
    bad.write_bytes(b"\x01" * 64)
    with pytest.raises(ShanshuiError, match="cannot load Stable Diffusion checkpoint"):
        load_pipeline(bad, motion)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    with pytest.raises(ShanshuiError, match="cannot load unet"):
        load_pipeline(broken, motion)


def test_sd15_tokenizer_is_real_clip(tmp_path, monkeypatch):
    """The shipped merge list reproduces CLIP ViT-L/14's token ids (known answer)."""
    from transformers import CLIPTokenizer

    from shanshui.pipelines.loading import sd15_config_dir

    monkeypatch.setenv("SHANSHUI_CACHE", str(tmp_path))
    tok = CLIPTokenizer.from_pretrained(sd15_config_dir() / "tokenizer", local_files_only=True)
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
