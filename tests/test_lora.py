"""LoRA files: every supported key layout changes exactly the weights it names by scale·(alpha/rank)·up@down."""

import copy

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.models.lora import apply_lora, parse_lora_spec, remove_loras
from shanshui.pipelines.text_to_video import TextToVideoPipeline
from shanshui.schedulers import make_scheduler

PROMPT = "Ink-wash mountains, mist"
SMALL = dict(num_frames=4, height=32, width=32, num_inference_steps=2, progress=False, seed=1)

# (pipeline target, module name) -> how each layout names it
ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
PROJ_IN = "down_blocks.0.attentions.0.proj_in"               # Conv2d 1x1
CONV3 = "down_blocks.0.resnets.0.conv1"                      # Conv2d 3x3 (LoCon-style LoRA)
TE_Q = "encoder.layers.0.self_attn.q_proj"
TE_OUT = "encoder.layers.1.self_attn.out_proj"
MM_Q = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q"
MM_OUT = "up_blocks.1.motion_modules.0.transformer_blocks.0.attn2.to_out.0"


@pytest.fixture()
def pipe(tiny, tiny_video_unet):
    return TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())


def module(pipe, target, name):
    return dict(getattr(pipe, target).named_modules())[name]


def factors(pipe, target, name, rank, seed):
    """Random down/up matrices shaped for the module (conv: down (r, in, kh, kw), up (out, r, 1, 1))."""
    w = module(pipe, target, name).weight
    g = torch.Generator().manual_seed(seed)
    if w.ndim == 4:
        return (torch.randn(rank, w.shape[1], *w.shape[2:], generator=g),
                torch.randn(w.shape[0], rank, 1, 1, generator=g))
    return torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)


def kohya_key(target, name):
    return ("lora_unet_" if target == "unet" else "lora_te_text_model_") + name.replace(".", "_")


def write(sd, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def build(pipe, layers, layout, path, rank=4, alpha=None, seed=0):
    """A LoRA file in ``layout`` for ``layers`` [(target, module)]; returns the path and {layer: (down, up)}."""
    sd, mats = {}, {}
    for i, (target, name) in enumerate(layers):
        down, up = factors(pipe, target, name, rank, seed + i)
        mats[(target, name)] = (down, up)
        if layout == "kohya":
            k = kohya_key(target, name)
            sd[f"{k}.lora_down.weight"], sd[f"{k}.lora_up.weight"] = down, up
            if alpha is not None:
                sd[f"{k}.alpha"] = torch.tensor(float(alpha))
        elif layout == "peft":
            k = f"{target}.{'text_model.' if target == 'text_encoder' else ''}{name}"
            sd[f"{k}.lora_A.weight"], sd[f"{k}.lora_B.weight"] = down, up
            if alpha is not None:
                sd[f"{k}.alpha"] = torch.tensor(float(alpha))
        elif layout == "diffusers":
            sd[f"{target}.{name}.lora.down.weight"], sd[f"{target}.{name}.lora.up.weight"] = down, up
        elif layout == "animatediff":  # original AnimateDiff v2 motion LoRA keys
            block = name.split(".motion_modules.0.")[0]
            head = f"{block}.motion_modules.0.temporal_transformer.transformer_blocks.0."
            which = "attention_blocks.0" if ".attn1." in name else "attention_blocks.1"
            slot = name.rsplit(".attn", 1)[1].split(".", 1)[1].replace("to_out.0", "to_out")
            k = f"{head}{which}.processor.{slot}_lora"
            sd[f"{k}.down.weight"], sd[f"{k}.up.weight"] = down, up
        else:
            raise AssertionError(layout)
    return write(sd, path), mats


def snapshot(pipe):
    return {t: {k: v.clone() for k, v in getattr(pipe, t).state_dict().items()} for t in ("unet", "text_encoder")}


def expected_weight(w, down, up, scale, alpha, rank):
    d = up.flatten(1).double() @ down.flatten(1).double()
    return (w.double() + scale * ((alpha / rank) if alpha is not None else 1.0) * d.reshape(w.shape)).float()


@pytest.mark.parametrize("layout,layers,alpha", [
    ("kohya", [("unet", ATTN), ("unet", PROJ_IN), ("unet", CONV3), ("text_encoder", TE_Q),
               ("text_encoder", TE_OUT)], 2.0),
    ("peft", [("unet", ATTN), ("unet", PROJ_IN), ("text_encoder", TE_Q)], None),
    ("peft", [("unet", ATTN), ("text_encoder", TE_OUT)], 8.0),
    ("diffusers", [("unet", MM_Q), ("unet", MM_OUT)], None),
    ("animatediff", [("unet", MM_Q), ("unet", MM_OUT)], None),
])
def test_fused_weights_equal_the_formula(pipe, tmp_path, layout, layers, alpha):
    path, mats = build(pipe, layers, layout, tmp_path / "l.safetensors", rank=4, alpha=alpha)
    before = snapshot(pipe)
    report = apply_lora(pipe, path, scale=0.7)
    after = snapshot(pipe)
    assert report.total == len(layers) and report.unmatched == []
    assert report.motion == sum(".motion_modules." in n for _, n in layers)
    touched = {(t, f"{n}.weight") for t, n in layers}
    for target in ("unet", "text_encoder"):
        for key, w in before[target].items():
            if (target, key) in touched:
                down, up = mats[(target, key[: -len(".weight")])]
                want = expected_weight(w, down, up, 0.7, alpha, 4)
                assert torch.allclose(after[target][key], want, atol=1e-6, rtol=0), key
                assert not torch.equal(after[target][key], w), key
            else:
                assert torch.equal(after[target][key], w), f"{target}.{key} changed"


def test_peft_alpha_from_diffusers_metadata(pipe, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    path, mats = build(pipe, [("unet", ATTN), ("unet", PROJ_IN), ("text_encoder", TE_Q)], "peft",
                       tmp_path / "p.safetensors")
    meta = {"unet.lora_alpha": 8, "unet.r": 4, "unet.alpha_pattern": {"attentions.0.proj_in": 2},
            "text_encoder.lora_alpha": 1, "text_encoder.r": 4}
    save_file(load_file(str(path)), str(path), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
    before = snapshot(pipe)
    apply_lora(pipe, path, scale=1.0)
    for target, name, alpha in (("unet", ATTN, 8.0), ("unet", PROJ_IN, 2.0), ("text_encoder", TE_Q, 1.0)):
        down, up = mats[(target, name)]
        want = expected_weight(before[target][f"{name}.weight"], down, up, 1.0, alpha, 4)
        assert torch.allclose(module(pipe, target, name).weight, want, atol=1e-6, rtol=0), name


def test_scale_zero_reproduces_the_plain_model(pipe, tmp_path):
    plain = pipe(PROMPT, **SMALL).frames
    before = snapshot(pipe)
    path, _ = build(pipe, [("unet", ATTN), ("unet", MM_Q), ("text_encoder", TE_Q)], "kohya", tmp_path / "z.safetensors",
                    alpha=1.0)
    apply_lora(pipe, path, scale=0.0)
    after = snapshot(pipe)
    assert all(torch.equal(after[t][k], v) for t in before for k, v in before[t].items())
    assert np.array_equal(pipe(PROMPT, **SMALL).frames, plain)
    apply_lora(pipe, path, scale=0.0, fuse=False)
    assert np.array_equal(pipe(PROMPT, **SMALL).frames, plain)


def test_several_loras_add_up_and_unfused_matches_fused(pipe, tmp_path):
    a, ma = build(pipe, [("unet", ATTN), ("text_encoder", TE_Q)], "kohya", tmp_path / "a.safetensors", alpha=2.0)
    b, mb = build(pipe, [("unet", ATTN), ("unet", MM_Q)], "peft", tmp_path / "b.safetensors", seed=9)
    fused = copy.deepcopy(pipe)
    w0 = module(pipe, "unet", ATTN).weight.detach().clone()
    apply_lora(fused, a, 0.5)
    apply_lora(fused, b, -0.25)
    da, ua = ma[("unet", ATTN)]
    db, ub = mb[("unet", ATTN)]
    want = expected_weight(expected_weight(w0, da, ua, 0.5, 2.0, 4), db, ub, -0.25, None, 4)
    assert torch.allclose(module(fused, "unet", ATTN).weight, want, atol=1e-6, rtol=0)

    plain = pipe(PROMPT, **SMALL).frames
    apply_lora(pipe, a, 0.5, fuse=False)
    apply_lora(pipe, b, -0.25, fuse=False)
    assert torch.equal(module(pipe, "unet", ATTN).weight, w0)          # unfused: weights untouched
    hooked = pipe(PROMPT, **SMALL).frames
    assert np.abs(hooked - fused(PROMPT, **SMALL).frames).max() < 1e-4
    assert np.abs(hooked - plain).max() > 1e-3
    assert remove_loras(pipe) == 4
    assert np.array_equal(pipe(PROMPT, **SMALL).frames, plain)


def test_no_silent_no_ops(pipe, tmp_path):
    sd = {"lora_unet_nowhere_to_q.lora_down.weight": torch.zeros(2, 8),
          "lora_unet_nowhere_to_q.lora_up.weight": torch.zeros(8, 2)}
    with pytest.raises(ShanshuiError, match="none of its 1 layers matches this model "
                                            r"\(first unmatched key 'lora_unet_nowhere_to_q.lora_down.weight'\)"):
        apply_lora(pipe, write(sd, tmp_path / "none.safetensors"))
    path, _ = build(pipe, [("unet", ATTN), ("text_encoder", TE_Q)], "kohya", tmp_path / "p.safetensors")
    from safetensors.torch import load_file

    sd = dict(load_file(str(path)), **sd)
    report = apply_lora(pipe, write(sd, tmp_path / "partial.safetensors"))
    assert report.patched == {"unet": 1, "text_encoder": 1}
    assert report.summary() == ("LoRA 'partial.safetensors' (scale 1): patched 2 layers (UNet 1, text encoder 1); "
                                "1 layers matched nothing in this model, first "
                                "'lora_unet_nowhere_to_q.lora_down.weight'")
    bad = {f"{kohya_key('unet', ATTN)}.lora_down.weight": torch.zeros(2, 999),
           f"{kohya_key('unet', ATTN)}.lora_up.weight": torch.zeros(32, 2)}
    with pytest.raises(ShanshuiError, match="for a weight of shape"):
        apply_lora(pipe, write(bad, tmp_path / "shape.safetensors"))
    with pytest.raises(ShanshuiError, match="is not a LoRA weight"):
        apply_lora(pipe, write({"model.diffusion_model.x": torch.zeros(1)}, tmp_path / "ckpt.safetensors"))


def test_parse_lora_spec(tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x")
    assert parse_lora_spec(str(f)) == (f, 1.0)
    assert parse_lora_spec(f"{f}:0.6") == (f, 0.6)
    assert parse_lora_spec(f"{f}:-1") == (f, -1.0)
    with pytest.raises(ShanshuiError, match="must be a number"):
        parse_lora_spec(f"{f}:strong")
    with pytest.raises(ShanshuiError, match="does not exist"):
        parse_lora_spec(str(tmp_path / "nope.safetensors:0.5"))


def test_load_pipeline_and_cli_take_loras(tmp_path, tiny_model_files, capsys):
    from shanshui.cli import main
    from shanshui.pipelines.text_to_video import load_pipeline

    model, motion = tiny_model_files
    plain = load_pipeline(model, motion)
    path, mats = build(plain, [("unet", ATTN), ("unet", MM_Q), ("text_encoder", TE_Q)], "kohya",
                       tmp_path / "style.safetensors", alpha=4.0)
    pipe = load_pipeline(model, motion, loras=[f"{path}:0.5"])
    assert pipe.load_notes == ["LoRA 'style.safetensors' (scale 0.5): patched 3 layers "
                               "(UNet 2, text encoder 1; 1 in motion modules)"]
    down, up = mats[("unet", MM_Q)]
    want = expected_weight(module(plain, "unet", MM_Q).weight, down, up, 0.5, 4.0, 4)
    assert torch.allclose(module(pipe, "unet", MM_Q).weight, want, atol=1e-6, rtol=0)
    out = tmp_path / "v.gif"
    code = main(["generate", "mist", "--model", str(model), "--motion-module", str(motion), "--lora",
                 f"{path}:0.5", "--frames", "3", "--size", "32", "--steps", "1", "--no-interpolate", "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0 and out.exists()
    assert "note: LoRA 'style.safetensors' (scale 0.5): patched 3 layers" in err


def test_loras_apply_to_long_videos(pipe, tmp_path):
    from shanshui.pipelines.long_video import generate_long

    path, _ = build(pipe, [("unet", ATTN), ("unet", MM_Q)], "kohya", tmp_path / "l.safetensors", alpha=4.0)
    kw = dict(num_frames=20, height=32, width=32, num_inference_steps=2, gamma=0.5, output_type="latent",
              progress=False)
    plain = generate_long(pipe, "mist", generator=torch.Generator().manual_seed(0), **kw).latents
    apply_lora(pipe, path, 0.0, fuse=False)
    same = generate_long(pipe, "mist", generator=torch.Generator().manual_seed(0), **kw).latents
    remove_loras(pipe)
    apply_lora(pipe, path, 1.0, fuse=False)
    styled = generate_long(pipe, "mist", generator=torch.Generator().manual_seed(0), **kw).latents
    assert torch.equal(plain, same)
    assert (plain - styled).abs().max() > 1e-3


def test_batch_mode_takes_loras_and_keyframes_and_matches_single_videos(tmp_path, tiny_model_files, capsys):
    """`generate --prompts` with --lora and --keyframe: each video equals the single `generate` with the same
    options and seed, and the plan records the options (a resume with another LoRA scale is refused)."""
    from PIL import Image

    from shanshui.cli import main
    from shanshui.pipelines.text_to_video import load_pipeline
    from shanshui.video_io import read_video

    model, motion = tiny_model_files
    path, _ = build(load_pipeline(model, motion), [("unet", ATTN), ("text_encoder", TE_Q)], "kohya",
                    tmp_path / "style.safetensors", alpha=4.0)
    key = tmp_path / "key.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(key)
    prompts = tmp_path / "p.txt"
    prompts.write_text("mist\n")
    common = ["--model", str(model), "--motion-module", str(motion), "--frames", "4", "--size", "32", "--steps",
              "2", "--lora", f"{path}:0.7", "--keyframe", f"-1:{key}", "--keyframe-guidance", "0.5"]
    out = tmp_path / "batch"
    assert main(["generate", "--prompts", str(prompts), "--out-dir", str(out), "--seeds", "3", "--format", "gif",
                 *common]) == 0
    single = tmp_path / "one.gif"
    assert main(["generate", "mist", "--seed", "3", "--no-interpolate", "-o", str(single), *common]) == 0
    assert np.array_equal(read_video(out / "p00000_s3.gif")[0], read_video(single)[0])
    capsys.readouterr()
    changed = [c if c != f"{path}:0.7" else f"{path}:0.2" for c in common]
    assert main(["generate", "--prompts", str(prompts), "--out-dir", str(out), "--seeds", "3", "--format", "gif",
                 *changed]) == 2
    assert "error:" in capsys.readouterr().err
