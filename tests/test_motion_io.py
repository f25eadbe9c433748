"""Motion-module files: NADM round trip, original AnimateDiff layouts, diffusers folders, strict errors."""

import json

import pytest
import torch
from diffusers import MotionAdapter
from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
from safetensors.torch import save_file

from shanshui.errors import ShanshuiError
from shanshui.models.motion import MotionConfig, build_video_unet
from shanshui.models.motion_io import (
    load_motion_module,
    motion_state_dict,
    save_motion_module,
    to_animatediff_keys,
    to_diffusers_keys,
)


def test_nadm_round_trip_is_exact(tiny_video_unet, tiny, tmp_path):
    path = save_motion_module(tiny_video_unet, tmp_path / "nadm.safetensors")
    assert path.with_suffix(".json").exists()
    state, config = load_motion_module(path)
    assert config == tiny_video_unet.shanshui_motion_config
    original = motion_state_dict(tiny_video_unet)
    assert state.keys() == original.keys()
    assert all(torch.equal(state[k], original[k]) for k in state)
    rebuilt = build_video_unet(tiny["unet"], config, state)
    z, text = torch.randn(1, 4, 4, 8, 8), torch.randn(4, 77, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(z, 5, encoder_hidden_states=text).sample,
                           tiny_video_unet(z, 5, encoder_hidden_states=text).sample)


def test_saved_file_uses_animatediff_key_names(tiny_video_unet, tmp_path):
    from safetensors import safe_open

    path = save_motion_module(tiny_video_unet, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.1.to_v.weight" in k for k in keys)
    assert any(k.endswith("attention_blocks.0.pos_encoder.pe") for k in keys)
    assert not any(".attn1." in k or ".norm1." in k for k in keys)
    assert json.loads(meta["shanshui_motion_config"])["sparse_causal"] == "temporal"


def test_key_maps_agree_with_diffusers_converter(tiny_video_unet):
    ours = motion_state_dict(tiny_video_unet)
    original = to_animatediff_keys(ours, max_seq_length=32)
    theirs = convert_animatediff_checkpoint_to_diffusers(original)
    assert theirs.keys() == ours.keys() == to_diffusers_keys(original).keys()


@pytest.mark.parametrize("mid,suffix", [(False, ".ckpt"), (True, ".ckpt"), (True, ".safetensors")])
def test_original_animatediff_checkpoints(tiny, tmp_path, mid, suffix):
    """v1 (no mid block, 24-frame table) and v2/v3 (mid block) layouts, as .ckpt or .safetensors."""
    length = 24 if not mid else 32
    cfg = MotionConfig.for_unet(tiny["unet"].config, num_attention_heads=4, use_mid_block=mid,
                                max_seq_length=length)
    unet = build_video_unet(tiny["unet"], cfg)
    torch.nn.init.normal_(next(p for n, p in unet.named_parameters() if "proj_out.weight" in n))
    original = to_animatediff_keys(motion_state_dict(unet), max_seq_length=length)
    path = tmp_path / f"mm{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": original}, path)
    else:
        save_file(original, str(path))
    state, config = load_motion_module(path)
    assert config.use_mid_block is mid
    assert config.max_seq_length == length
    assert config.norm == "frame"  # the original code normalises per frame in every release
    assert config.block_out_channels == (32, 64) and config.layers_per_block == 1
    ref = motion_state_dict(unet)
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in state)


def test_diffusers_motion_adapter_folder(tiny, tmp_path):
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16)
    adapter.save_pretrained(tmp_path / "adapter")
    state, config = load_motion_module(tmp_path / "adapter")
    assert config.max_seq_length == 16 and config.num_attention_heads == 4 and config.norm_num_groups == 8
    unet = build_video_unet(tiny["unet"], config, state)
    for k, v in adapter.state_dict().items():
        if not k.endswith(".pe"):
            assert torch.equal(unet.state_dict()[k], v), k
    assert unet.config.motion_max_seq_length == 16


def test_strict_loading_names_the_key(tiny_video_unet, tiny, tmp_path):
    state = motion_state_dict(tiny_video_unet)
    config = tiny_video_unet.shanshui_motion_config
    key = sorted(state)[3]
    broken = dict(state)
    del broken[key]
    with pytest.raises(ShanshuiError, match=f"missing key '{key}'"):
        build_video_unet(tiny["unet"], config, broken)
    extra = dict(state, **{"down_blocks.0.motion_modules.0.bogus.weight": torch.zeros(1)})
    with pytest.raises(ShanshuiError, match="unexpected key 'down_blocks.0.motion_modules.0.bogus.weight'"):
        build_video_unet(tiny["unet"], config, extra)
    wrong = dict(state)
    wrong[key] = torch.zeros(3, 3)
    with pytest.raises(ShanshuiError, match=f"key '{key}' has shape \\(3, 3\\)"):
        build_video_unet(tiny["unet"], config, wrong)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ShanshuiError, match="cannot read motion module"):
        load_motion_module(bad)
    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_bytes(b"not a pickle")
    with pytest.raises(ShanshuiError, match="cannot read motion module"):
        load_motion_module(bad_ckpt)
    with pytest.raises(ShanshuiError, match="does not exist"):
        load_motion_module(tmp_path / "nope.safetensors")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ShanshuiError, match="must be .safetensors"):
        load_motion_module(tmp_path / "w.txt")


def test_pickled_code_is_refused(tmp_path):
    """.ckpt files are read with weights_only=True: arbitrary objects are not unpickled."""
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ShanshuiError, match="cannot read motion module"):
        load_motion_module(path)
