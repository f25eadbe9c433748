"""Single-file SD 1.5 checkpoints: exact round trip from a diffusers model, and refusals of other files."""

import copy

import numpy as np
import pytest
import torch

from ldm_layout import add_ema, make_sd15_topology, save, to_ldm, unet_to_ldm, vae_to_ldm
from shanshui.errors import ShanshuiError
from shanshui.pipelines.loading import load_base_components
from shanshui.pipelines.text_to_video import TextToVideoPipeline, load_pipeline
from shanshui.schedulers import make_scheduler

PROMPT = "Mountains, dense fog, red sun, boat on the lake."
RUN = dict(num_frames=4, height=64, width=64, num_inference_steps=2, progress=False, seed=5)
PARTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def ref():
    return make_sd15_topology(seed=3)


@pytest.fixture(scope="module")
def motion_file(ref, tmp_path_factory):
    from conftest import randomize_motion
    from shanshui.models.motion import MotionConfig, build_video_unet
    from shanshui.models.motion_io import save_motion_module

    cfg = MotionConfig.for_unet(ref["unet"].config, num_attention_heads=4, max_seq_length=8)
    unet = build_video_unet(copy.deepcopy(ref["unet"]), cfg)
    randomize_motion(unet, seed=2)
    path = tmp_path_factory.mktemp("mm") / "motion.safetensors"
    save_motion_module(unet, path)
    return path


def half_round_trip(components):
    """The reference an fp16 file must reproduce: every weight rounded to fp16 and back."""
    out = dict(components)
    for name in PARTS:
        m = copy.deepcopy(components[name])
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.half().float())
        out[name] = m
    return out


def assert_same_weights(a: dict, b: dict):
    for name in PARTS:
        sa, sb = a[name].state_dict(), b[name].state_dict()
        assert set(sa) == set(sb), name
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"{name}: {k}"


@pytest.mark.parametrize("suffix,half,nest", [(".safetensors", False, False), (".ckpt", False, True),
                                              (".safetensors", True, False), (".ckpt", True, False)])
def test_single_file_reproduces_the_diffusers_model_exactly(ref, tmp_path, suffix, half, nest):
    expected = half_round_trip(ref) if half else ref
    sd = to_ldm(ref)
    if half:
        sd = {k: v.half() for k, v in sd.items()}
    path = tmp_path / f"model{suffix}"
    save(sd, path, nest=nest)
    notes = []
    loaded = load_base_components(path, notes=notes)
    assert_same_weights(expected, loaded)
    assert loaded["tokenizer"]("a boat").input_ids == ref["tokenizer"]("a boat").input_ids
    assert notes == []


def test_ema_weights_are_selected_with_ema(ref, tmp_path):
    plain = copy.deepcopy(ref["unet"])
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01)
    parts = dict(ref, unet=plain)
    sd = add_ema(to_ldm(parts), ref["unet"].state_dict())
    path = tmp_path / "ema.ckpt"
    save(sd, path, nest=True)
    notes = []
    with_ema = load_base_components(path, ema=True, notes=notes)
    assert_same_weights(ref, with_ema)
    assert notes == ["using the EMA weights of 'ema.ckpt'"]
    notes = []
    without = load_base_components(path, notes=notes)
    assert_same_weights(parts, without)
    assert "--ema selects them" in notes[0]
    # a file without EMA weights and --ema: an error, not a silent fallback
    save(to_ldm(ref), tmp_path / "plain.safetensors")
    with pytest.raises(ShanshuiError, match="has no EMA weights"):
        load_base_components(tmp_path / "plain.safetensors", ema=True)


def test_identical_frames_for_a_seed(ref, motion_file, tmp_path):
    from shanshui.models.motion import build_video_unet
    from shanshui.models.motion_io import load_motion_module

    path = tmp_path / "model.safetensors"
    save(to_ldm(ref), path)
    state, cfg = load_motion_module(motion_file)
    reference = TextToVideoPipeline(ref["vae"], ref["text_encoder"], ref["tokenizer"],
                                    build_video_unet(copy.deepcopy(ref["unet"]), cfg, state), make_scheduler())
    expected = reference(PROMPT, **RUN).frames
    loaded = load_pipeline(path, motion_file)
    got = loaded(PROMPT, **RUN).frames
    assert got.shape == (1, 4, 64, 64, 3)
    assert np.array_equal(expected, got)
    assert loaded.load_notes == []


def test_vae_from_elsewhere(ref, tmp_path):
    sd = {k: v for k, v in to_ldm(ref).items() if not k.startswith("first_stage_model.")}
    path = tmp_path / "no_vae.safetensors"
    save(sd, path)
    with pytest.raises(ShanshuiError, match=r"has no VAE weights .* pass one with --vae PATH"):
        load_base_components(path)
    # a stand-alone VAE file in LDM names without the prefix (as VAE downloads are), and a diffusers folder
    vae_file = tmp_path / "vae.safetensors"
    save({k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(ref["vae"].state_dict()).items()}, vae_file)
    ref["vae"].save_pretrained(tmp_path / "vae_folder")
    for vae in (vae_file, tmp_path / "vae_folder"):
        notes = []
        loaded = load_base_components(path, vae=vae, notes=notes)
        assert_same_weights(ref, loaded)
        assert notes == [f"VAE taken from '{vae}'"]
    # --vae replaces a VAE baked into the checkpoint, and says so
    other = copy.deepcopy(ref["vae"])
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    save(to_ldm(dict(ref, vae=other)), tmp_path / "full.safetensors")
    notes = []
    loaded = load_base_components(tmp_path / "full.safetensors", vae=vae_file, notes=notes)
    assert_same_weights(ref, loaded)
    assert "replacing the one inside the checkpoint" in notes[0]


def test_missing_text_encoder_and_truncated_unet(ref, tmp_path):
    sd = to_ldm(ref)
    save({k: v for k, v in sd.items() if not k.startswith("cond_stage_model.")}, tmp_path / "a.safetensors")
    with pytest.raises(ShanshuiError, match="has no text encoder"):
        load_base_components(tmp_path / "a.safetensors")
    drop = "model.diffusion_model.middle_block.1.proj_out.weight"
    save({k: v for k, v in sd.items() if k != drop}, tmp_path / "b.safetensors")
    with pytest.raises(ShanshuiError, match="missing tensor 'mid_block.attentions.0.proj_out.weight'"):
        load_base_components(tmp_path / "b.safetensors")


def _kind_files(ref, tmp_path, motion_file):
    base = to_ldm(ref)
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    to_k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    files = {}
    sd2 = {k: v for k, v in base.items() if not k.startswith("cond_stage_model.")}
    sd2["cond_stage_model.model.token_embedding.weight"] = torch.zeros(8, 4)
    files["SD 2.x checkpoint (OpenCLIP"] = sd2
    files["SD 2.x checkpoint (cross-attention width 1024"] = {conv_in: torch.zeros(32, 4, 3, 3),
                                                             to_k: torch.zeros(32, 1024)}
    files["SDXL checkpoint"] = {conv_in: torch.zeros(32, 4, 3, 3),
                                "conditioner.embedders.0.transformer.text_model.x": torch.zeros(1)}
    inpaint = dict(base)
    inpaint[conv_in] = torch.zeros(32, 9, 3, 3)
    files["inpainting checkpoint (9 input channels)"] = inpaint
    files["a LoRA (pass it with --lora"] = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight":
                                            torch.zeros(4, 32, 1, 1)}
    files["a VAE on its own (pass it with --vae)"] = {
        k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(ref["vae"].state_dict()).items()}
    files["a diffusers-layout weight file"] = dict(ref["unet"].state_dict())
    return files


def test_other_files_are_refused_with_one_line(ref, tmp_path, motion_file):
    for i, (kind, sd) in enumerate(_kind_files(ref, tmp_path, motion_file).items()):
        path = tmp_path / f"f{i}.safetensors"
        save({k: v.contiguous() for k, v in sd.items()}, path)
        with pytest.raises(ShanshuiError) as info:
            load_base_components(path)
        msg = str(info.value)
        assert kind in msg and "--model expects an SD 1.5 image checkpoint" in msg and "\n" not in msg, msg
    with pytest.raises(ShanshuiError, match="is a motion module \\(pass it with --motion-module\\)"):
        load_base_components(motion_file)


def test_cli_refuses_a_lora_as_model(capsys, tmp_path, motion_file):
    from shanshui.cli import main

    path = tmp_path / "style.safetensors"
    save({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32, 1, 1),
          "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4, 1, 1)}, path)
    code = main(["generate", "boats", "--model", str(path), "--motion-module", str(motion_file),
                 "-o", str(tmp_path / "x.gif")])
    err = capsys.readouterr().err
    assert code == 2 and "is a LoRA (pass it with --lora PATH[:SCALE])" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.gif").exists()


def test_ema_on_a_folder_is_an_error(tmp_path, tiny_model_files):
    model, _ = tiny_model_files
    with pytest.raises(ShanshuiError, match="--ema applies to single-file checkpoints"):
        load_base_components(model, ema=True)
