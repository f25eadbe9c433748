"""Test helper: tiny SD-1.5-topology models in diffusers form, written out as original-layout (LDM) files.

The diffusers -> LDM key mapping follows diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py``
(written out here independently of the loader, so a loader bug cannot cancel itself out). That mapping assumes
SD 1.5's topology — 4 UNet levels × 2 layers, 4 VAE levels × 2 layers — which the tiny model keeps, with small
channel counts. The text encoder is CLIP-shaped with SD 1.5's 49408-token vocabulary so that the real CLIP
tokenizer the loader attaches produces valid ids.
"""

from __future__ import annotations

import torch


def make_sd15_topology(seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from shanshui.pipelines.loading import sd15_config_dir

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 32, 64, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, norm_num_groups=32, sample_size=64, scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=77,
                                        hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                        projection_dim=64)).eval()
    # Random (non-zero) values everywhere, including norms and biases that start at 0 or 1.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for model in (unet, vae, text):
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    tokenizer = CLIPTokenizer.from_pretrained(sd15_config_dir() / "tokenizer", local_files_only=True)
    return dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer)


def _unet_layer_map() -> list[tuple[str, str]]:
    """(diffusers fragment, LDM fragment) for SD 1.5's 4 × 2 UNet."""
    m = []
    for i in range(4):
        for j in range(2):
            m.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{3 * i + j + 1}.0."))
            if i < 3:
                m.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{3 * i + j + 1}.1."))
        for j in range(3):
            m.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{3 * i + j}.0."))
            if i > 0:
                m.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{3 * i + j}.1."))
        if i < 3:
            m.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{3 * (i + 1)}.0.op."))
            m.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}."))
    m.append(("mid_block.attentions.0.", "middle_block.1."))
    for j in range(2):
        m.append((f"mid_block.resnets.{j}.", f"middle_block.{2 * j}."))
    return m


UNET_TOP = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
            "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
               ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(state: dict) -> dict:
    layer_map = _unet_layer_map()
    out = {}
    for key, v in state.items():
        new = key
        for d, l in UNET_TOP.items():
            if new.startswith(d):
                new = l + new[len(d):]
        if "resnets" in new:
            for d, l in UNET_RESNET:
                new = new.replace(f".{d}.", f".{l}.")
        for d, l in layer_map:
            if new.startswith(d):
                new = l + new[len(d):]
                break
        out["model.diffusion_model." + new] = v
    return out


def vae_to_ldm(state: dict) -> dict:
    m = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(4):
        for j in range(2):
            m.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < 3:
            m.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            m.append((f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(3):
            m.append((f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        m.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]
    out = {}
    for key, v in state.items():
        new = key
        for ldm, dif in m:
            new = new.replace(dif, ldm)
        if "attentions" in key:
            for ldm, dif in attn:
                new = new.replace(dif, ldm)
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")) and v.ndim == 2:
                v = v[:, :, None, None]  # 1x1 convs in the original layout
        out["first_stage_model." + new] = v
    return out


def text_to_ldm(state: dict) -> dict:
    return {"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v for k, v in state.items()}


def to_ldm(components: dict) -> dict:
    sd = {}
    sd.update(unet_to_ldm(components["unet"].state_dict()))
    sd.update(vae_to_ldm(components["vae"].state_dict()))
    sd.update(text_to_ldm(components["text_encoder"].state_dict()))
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def add_ema(sd: dict, ema_unet_state: dict) -> dict:
    """Add an EMA copy in LDM's dot-less naming (``model_ema.diffusion_modelinput_blocks00weight``)."""
    out = dict(sd)
    for k, v in unet_to_ldm(ema_unet_state).items():
        out["model_ema." + k[len("model."):].replace(".", "")] = v.detach().clone().contiguous()
    out["model_ema.decay"] = torch.tensor(0.9999)
    out["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    return out


def save(sd: dict, path, nest: bool = False) -> None:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "global_step": 10} if nest else sd, str(path))
