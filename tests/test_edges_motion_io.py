"""Edges of shanshui.models.motion_io found by the mutation run (issue 18): each test pins behaviour that a
surviving mutant changed. Equivalent mutants are listed with their reasons in the mutation notes."""

from __future__ import annotations

import fractions
import json

import pytest
import torch
from safetensors.torch import save_file

from shanshui.errors import ShanshuiError
from shanshui.models.motion_io import load_motion_module, read_weights, save_motion_module, to_animatediff_keys


def _adapter_folder(path, config: dict):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_file({"down_blocks.0.motion_modules.0.proj_in.weight": torch.zeros(2, 2)},
              str(path / "diffusion_pytorch_model.safetensors"))
    return path


def test_motion_adapter_per_block_lists_of_one_entry(tmp_path):
    """A per-block list with a single value (``[1]``) is that value, for layers and heads alike."""
    folder = _adapter_folder(tmp_path / "a", {"motion_layers_per_block": [1], "motion_num_attention_heads": [4]})
    _, c = load_motion_module(folder)
    assert c.layers_per_block == 1 and c.num_attention_heads == 4


def test_read_weights_messages(tmp_path):
    """read_weights names a missing file and a checkpoint that holds no dict."""
    with pytest.raises(ShanshuiError, match=r"^motion module '.*gone\.ckpt' does not exist$"):
        read_weights(tmp_path / "gone.ckpt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ShanshuiError, match=r"^'.*list\.pt' does not hold a state dict$"):
        read_weights(tmp_path / "list.pt")


def test_save_motion_module_names_a_wrong_suffix(tmp_path):
    with pytest.raises(ShanshuiError, match=r"^motion module path '.*m\.pt' must end in \.safetensors$"):
        save_motion_module(torch.nn.Linear(1, 1), tmp_path / "m.pt")


def test_checkpoint_saved_on_a_gpu_is_read_onto_the_cpu(tmp_path, monkeypatch):
    """A .ckpt whose tensors were saved from ``cuda:0`` loads onto the CPU (on a CPU-only machine too)."""
    import torch.serialization as ser

    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")    # as if the tensors lived on a GPU
        torch.save({"w": torch.arange(3.0)}, tmp_path / "gpu.ckpt")
    state, meta = read_weights(tmp_path / "gpu.ckpt")
    assert meta == {} and state["w"].device.type == "cpu" and state["w"].tolist() == [0.0, 1.0, 2.0]


def test_checkpoints_are_read_weights_only_even_when_the_environment_allows_pickles(tmp_path, monkeypatch):
    """weights_only=True is explicit: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which turns torch.load's *default* to
    full unpickling) does not let a checkpoint with arbitrary objects through."""
    torch.save({"w": torch.zeros(1), "x": fractions.Fraction(1, 2)}, tmp_path / "obj.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ShanshuiError, match=r"^cannot read motion module '.*obj\.ckpt': UnpicklingError: "
                                            r"Weights only load failed"):
        read_weights(tmp_path / "obj.ckpt")


def test_to_animatediff_keys_skips_position_tables_and_keeps_going():
    """A position table in the input is dropped and the keys after it are still converted."""
    head = "down_blocks.0.motion_modules.0."
    state = {head + "transformer_blocks.0.attn1.pos_embed.pe": torch.zeros(1, 4, 2),
             head + "proj_in.weight": torch.ones(2, 2),
             head + "transformer_blocks.0.norm3.bias": torch.ones(2)}
    out = to_animatediff_keys(state, 8)
    assert sorted(out) == [head + "temporal_transformer.proj_in.weight",
                           head + "temporal_transformer.transformer_blocks.0.ff_norm.bias"]
