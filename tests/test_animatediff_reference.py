"""Fidelity to the original AnimateDiff motion module.

The reference below is written from the structure of the original ``TemporalTransformer3DModel`` (guoyww/
AnimateDiff, ``animatediff/models/motion_module.py``), in plain torch, reading the original-layout state dict
directly — it shares no code with Shanshui or diffusers:

    (b c f h w) -> ((b f) c h w); GroupNorm (per frame, eps 1e-6); -> ((b f), h·w, c); proj_in;
    per block: for k in (0, 1): x = x + Attn_k(LayerNorm_k(x)), where Attn_k runs over the frames of each
    pixel with the sinusoidal table ``pos_encoder.pe`` added to its input (query, key and value alike);
    then x = x + FF(ff_norm(x)) with a GEGLU feed-forward; proj_out; residual; back to (b c f h w).

The test files are v1-, v2- and v3-shaped (mid block only in v2; position tables of 24 or 32 frames) with
every parameter random, LayerNorms and GroupNorms included, 8 heads and 32 groups as in the real files.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from shanshui.models.motion import build_video_unet, motion_transformers
from shanshui.models.motion_io import load_motion_module

HEADS, GROUPS = 8, 32
# name: (has mid block, position-table length, file suffix)
VERSIONS = {"v1": (False, 24, ".ckpt"), "v2": (True, 32, ".ckpt"), "v3": (False, 32, ".safetensors"),
            "v3-ckpt": (False, 32, ".ckpt")}


def sinusoidal(length: int, dim: int) -> torch.Tensor:
    """AnimateDiff's ``PositionalEncoding.pe``: sin on even, cos on odd channels."""
    position = torch.arange(length).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


def original_module_prefixes(channels=(32, 64), layers=1, mid=False) -> dict[str, int]:
    """Original motion-module prefixes of an SD-style UNet (down: ``layers``, up: ``layers + 1``) -> channels."""
    out = {}
    for i, c in enumerate(channels):
        for j in range(layers):
            out[f"down_blocks.{i}.motion_modules.{j}"] = c
    for i, c in enumerate(reversed(channels)):
        for j in range(layers + 1):
            out[f"up_blocks.{i}.motion_modules.{j}"] = c
    if mid:
        out["mid_block.motion_modules.0"] = channels[-1]
    return out


def random_original_state_dict(prefixes: dict[str, int], length: int, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the original layout, random (norm weights around 1, everything else around 0)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape, scale=0.2: torch.randn(*shape, generator=g) * scale
    sd = {}
    for prefix, c in prefixes.items():
        t = prefix + ".temporal_transformer."
        sd[t + "norm.weight"], sd[t + "norm.bias"] = 1 + rnd(c, scale=0.5), rnd(c, scale=0.5)
        sd[t + "proj_in.weight"], sd[t + "proj_in.bias"] = rnd(c, c), rnd(c)
        b = t + "transformer_blocks.0."
        for k in (0, 1):
            a = b + f"attention_blocks.{k}."
            for name in ("to_q", "to_k", "to_v"):
                sd[a + name + ".weight"] = rnd(c, c, scale=0.5)
            sd[a + "to_out.0.weight"], sd[a + "to_out.0.bias"] = rnd(c, c), rnd(c)
            sd[a + "pos_encoder.pe"] = sinusoidal(length, c)
            sd[b + f"norms.{k}.weight"], sd[b + f"norms.{k}.bias"] = 1 + rnd(c, scale=0.5), rnd(c, scale=0.5)
        sd[b + "ff.net.0.proj.weight"], sd[b + "ff.net.0.proj.bias"] = rnd(8 * c, c), rnd(8 * c)
        sd[b + "ff.net.2.weight"], sd[b + "ff.net.2.bias"] = rnd(c, 4 * c), rnd(c)
        sd[b + "ff_norm.weight"], sd[b + "ff_norm.bias"] = 1 + rnd(c, scale=0.5), rnd(c, scale=0.5)
        sd[t + "proj_out.weight"], sd[t + "proj_out.bias"] = rnd(c, c), rnd(c)
    return sd


def reference_forward(sd: dict, prefix: str, x: torch.Tensor, heads: int = HEADS, groups: int = GROUPS):
    """The original temporal transformer on ``x`` of shape ``(b, c, f, h, w)``."""
    p = lambda name: sd[prefix + ".temporal_transformer." + name]
    b, c, f, h, w = x.shape
    x = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)               # b c f h w -> (b f) c h w
    residual = x
    y = F.group_norm(x, groups, p("norm.weight"), p("norm.bias"), eps=1e-6)
    y = y.permute(0, 2, 3, 1).reshape(b * f, h * w, c)
    y = F.linear(y, p("proj_in.weight"), p("proj_in.bias"))
    blk = lambda name: p("transformer_blocks.0." + name)
    for k in (0, 1):
        n = F.layer_norm(y, (c,), blk(f"norms.{k}.weight"), blk(f"norms.{k}.bias"), eps=1e-5)
        t = n.reshape(b, f, h * w, c).permute(0, 2, 1, 3).reshape(b * h * w, f, c)   # (b f) d c -> (b d) f c
        t = t + blk(f"attention_blocks.{k}.pos_encoder.pe")[:, :f]
        q, key, v = (F.linear(t, blk(f"attention_blocks.{k}.{m}.weight")) for m in ("to_q", "to_k", "to_v"))
        split = lambda z: z.reshape(b * h * w, f, heads, c // heads).transpose(1, 2)
        scores = split(q) @ split(key).transpose(-1, -2) * (c // heads) ** -0.5
        att = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b * h * w, f, c)
        att = F.linear(att, blk(f"attention_blocks.{k}.to_out.0.weight"), blk(f"attention_blocks.{k}.to_out.0.bias"))
        att = att.reshape(b, h * w, f, c).permute(0, 2, 1, 3).reshape(b * f, h * w, c)  # (b d) f c -> (b f) d c
        y = y + att
    n = F.layer_norm(y, (c,), blk("ff_norm.weight"), blk("ff_norm.bias"), eps=1e-5)
    hidden, gate = F.linear(n, blk("ff.net.0.proj.weight"), blk("ff.net.0.proj.bias")).chunk(2, dim=-1)
    y = y + F.linear(hidden * F.gelu(gate), blk("ff.net.2.weight"), blk("ff.net.2.bias"))
    y = F.linear(y, p("proj_out.weight"), p("proj_out.bias"))
    y = y.reshape(b * f, h, w, c).permute(0, 3, 1, 2) + residual
    return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def write(sd: dict, path) -> None:
    if path.suffix == ".ckpt":
        torch.save({"state_dict": sd}, path)
    else:
        save_file(sd, str(path))


def frames_with_distinct_statistics(b, c, f, h, w, seed=0):
    """Input whose frames differ in mean and spread, so joint and per-frame normalisation disagree."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 3.0, f).view(1, 1, f, 1, 1)
    shift = torch.linspace(-2.0, 2.0, f).view(1, 1, f, 1, 1)
    return (torch.randn(b, c, f, h, w, generator=g) * scale + shift).double()


def shanshui_unet(tiny, path, norm=None):
    """Shanshui's video UNet for the file, on the tiny image UNet rebuilt with 32 groups: diffusers'
    ``UNetMotionModel.from_unet2d`` gives the motion GroupNorms the image UNet's group count."""
    from diffusers import UNet2DConditionModel

    state, config = load_motion_module(path, norm=norm)
    config.sparse_causal = "off"  # plain AnimateDiff attention in attn2 (the reference has no sparse-causal)
    unet2d = UNet2DConditionModel.from_config({**tiny["unet"].config, "norm_num_groups": GROUPS})
    # float64: the comparison then measures the semantics, not float32 rounding of values around 10
    return build_video_unet(unet2d, config, state).double(), config


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_every_module_equals_the_original_forward(tiny, tmp_path, version):
    mid, length, suffix = VERSIONS[version]
    prefixes = original_module_prefixes(mid=mid)
    sd = random_original_state_dict(prefixes, length, seed=len(version) + int(mid))
    path = tmp_path / f"mm_{version}{suffix}"
    write(sd, path)
    sd = {k: v.double() for k, v in sd.items()}
    unet, config = shanshui_unet(tiny, path)
    assert config.norm == "frame" and config.max_seq_length == length and config.use_mid_block is mid
    assert config.num_attention_heads == HEADS and config.norm_num_groups == GROUPS
    named = {n: m for n, m in unet.named_modules() if m in motion_transformers(unet)}
    assert sorted(named) == sorted(prefixes)
    b, f, h, w = 2, 5, 3, 4
    worst_joint = 0.0
    for name, module in named.items():
        c = prefixes[name]
        x = frames_with_distinct_statistics(b, c, f, h, w, seed=c)
        with torch.no_grad():
            ref = reference_forward(sd, name, x)
            ours = module(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), num_frames=f)
            ours = ours.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        assert (ours - ref).abs().max().item() <= 1e-5, name
        assert ref.abs().max() > 1.0  # the comparison is not between near-zero tensors
    # the joint norm (diffusers' semantics) is measurably different on the same input: the test can fail
    joint, _ = shanshui_unet(tiny, path, norm="joint")
    for name, module in joint.named_modules():
        if name in prefixes:
            c = prefixes[name]
            x = frames_with_distinct_statistics(b, c, f, h, w, seed=c)
            with torch.no_grad():
                ours = module(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), num_frames=f)
            ref = reference_forward(sd, name, x).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
            worst_joint = max(worst_joint, (ours - ref).abs().max().item())
    assert worst_joint > 0.05


def test_key_map_equals_diffusers_single_file_converter(tmp_path):
    """diffusers' ``MotionAdapter.from_single_file`` on the same random file gives the same tensors."""
    from diffusers import MotionAdapter

    for version, (mid, length, suffix) in VERSIONS.items():
        prefixes = original_module_prefixes(mid=mid)
        sd = random_original_state_dict(prefixes, length, seed=7)
        path = tmp_path / f"mm_{version}.safetensors"
        save_file(sd, str(path))  # diffusers reads .safetensors without pickle
        cfg_dir = tmp_path / f"cfg_{version}"
        MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=HEADS,
                      motion_norm_num_groups=GROUPS, motion_max_seq_length=length,
                      use_motion_mid_block=mid).save_config(cfg_dir)
        theirs = MotionAdapter.from_single_file(str(path), config=str(cfg_dir), local_files_only=True).state_dict()
        ours, config = load_motion_module(path)
        theirs = {k: v for k, v in theirs.items() if not k.endswith(".pe")}
        assert ours.keys() == theirs.keys(), version
        for k in ours:
            assert torch.equal(ours[k], theirs[k]), (version, k)
        # every tensor of the file arrived somewhere (position tables are derived, not loaded)
        assert len(ours) == sum(1 for k in sd if not k.endswith(".pe"))


def test_diffusers_folder_defaults_to_per_frame_and_joint_is_selectable(tiny, tmp_path):
    from diffusers import MotionAdapter

    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16)
    adapter.save_pretrained(tmp_path / "adapter")
    assert load_motion_module(tmp_path / "adapter")[1].norm == "frame"
    assert load_motion_module(tmp_path / "adapter", norm="joint")[1].norm == "joint"
