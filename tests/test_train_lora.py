"""``shanshui train --lora-rank R``: a motion LoRA learns while the motion module stays frozen, is saved in
diffusers layout, and ``--lora`` reads it back to exactly the network that was trained."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from test_training import _fresh_accelerate, clips, tiny_config  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def motion_file(tmp_path_factory):
    from conftest import randomize_motion
    from shanshui.models.motion import build_video_unet
    from shanshui.models.motion_io import save_motion_module
    from shanshui.models.presets import make_components

    comps = make_components("tiny", seed=0)
    unet = build_video_unet(comps["unet"], comps["motion_config"])
    randomize_motion(unet, seed=3)
    path = tmp_path_factory.mktemp("mm") / "motion.safetensors"
    save_motion_module(unet, path)
    return path


def test_motion_lora_training_saves_what_lora_loading_reproduces(clips, tmp_path, motion_file):  # noqa: F811
    from safetensors.torch import load_file

    from shanshui.models.lora import apply_lora
    from shanshui.models.motion import motion_parameters
    from shanshui.training.components import build_models
    from shanshui.training.loop import train

    cfg = tiny_config(clips, tmp_path / "run", model=dict(preset="tiny", motion_module=str(motion_file),
                                                          lora_rank=4, max_seq_length=24),
                      schedule=dict(max_steps=3, warmup_steps=0))
    fresh = build_models(cfg.model, seed=0)
    motion_before = [p.detach().clone() for p in motion_parameters(fresh.unet)]
    result = train(cfg, progress=False)
    lora_file = result.final_dir / "motion_lora.safetensors"
    assert lora_file.is_file() and not (result.final_dir / "motion_module.safetensors").exists()
    sd = load_file(str(lora_file))
    assert all(k.startswith("unet.") and ".motion_modules." in k and k.endswith(("lora_A.weight", "lora_B.weight"))
               for k in sd)
    n_layers = len(sd) // 2
    assert n_layers == 4 * 2 * sum(1 for n, _ in fresh.unet.named_modules()
                                   if n.endswith(".attn1") and ".motion_modules." in n)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in sd.items())   # up moved off 0

    # The trained network (frozen motion weights + LoRA hooks) equals the frozen network with the saved
    # LoRA fused in by the --lora loader.
    models = build_models(cfg.model, seed=0)
    from shanshui.training.components import load_trained_weights

    load_trained_weights(models, result.final_dir)
    for a, b in zip(motion_before, motion_parameters(models.unet)):
        assert torch.equal(a, b)                                                          # module frozen
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 4, 4, generator=g)
    text = torch.randn(4, 77, 32, generator=g)
    with torch.no_grad():
        hooked = models.unet(x, 500, encoder_hidden_states=text).sample
        models.net.lora.remove_hooks()
        plain = models.unet(x, 500, encoder_hidden_states=text).sample
        target = SimpleNamespace(unet=models.unet, text_encoder=models.text_encoder)
        name = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q"
        w0 = dict(models.unet.named_modules())[name].weight.detach().clone()
        report = apply_lora(target, lora_file)
        fused = models.unet(x, 500, encoder_hidden_states=text).sample
    assert report.total == n_layers and report.motion == n_layers and report.unmatched == []
    want = w0 + sd[f"unet.{name}.lora_B.weight"] @ sd[f"unet.{name}.lora_A.weight"]
    assert torch.allclose(dict(models.unet.named_modules())[name].weight, want, atol=1e-6, rtol=0)
    assert (hooked - plain).abs().max() > 1e-6
    assert torch.allclose(hooked, fused, atol=1e-5, rtol=0)


def test_lora_rank_needs_a_motion_module(clips, tmp_path):  # noqa: F811
    from shanshui.errors import ShanshuiError

    with pytest.raises(ShanshuiError, match="model.lora_rank=4 trains a LoRA on an existing motion module"):
        tiny_config(clips, tmp_path, model=dict(preset="tiny", lora_rank=4))
