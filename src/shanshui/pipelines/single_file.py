"""Single-file Stable Diffusion 1.5 checkpoints (the ``.safetensors``/``.ckpt`` files model-sharing sites hand out).

Such a file holds the UNet, VAE and text encoder in the original (LDM) key layout::

    model.diffusion_model.*                    UNet
    first_stage_model.*                        VAE
    cond_stage_model.transformer.text_model.*  CLIP text encoder
    model_ema.*                                EMA copy of the UNet (optional; names without dots)

Reading it:

1. :func:`read_state_dict` — safetensors, or a pickle read with ``weights_only=True``; ``state_dict`` nesting
   (one or more levels) is unwrapped.
2. :func:`identify` — decide what the file is. Files that are not SD 1.5 image models (SD 2.x, SDXL,
   inpainting, a LoRA, a motion module, a VAE alone, a diffusers weight file) are refused with one line that
   names what the file is and what is expected. The tell-tales are listed next to each test below.
3. The component configurations are *inferred from tensor shapes* (channels, blocks, layers, vocabulary),
   starting from the SD 1.5 configs shipped in ``shanshui/assets/sd15`` for what shapes cannot tell
   (attention heads, group-norm groups, activation, VAE scaling factor). A real SD 1.5 file therefore gets
   exactly SD 1.5's configuration, and smaller files with the same topology load too.
4. The weights are renamed with diffusers' own LDM converters and loaded *strictly*: a missing or
   unexpected tensor is an error naming it, never a silently random weight.

``--ema`` takes the UNet from the ``model_ema.*`` copy (an error if the file has none). A checkpoint without
VAE weights needs ``vae=PATH`` (a diffusers VAE folder or a VAE ``.safetensors``/``.ckpt`` in LDM or
diffusers layout); ``vae`` also replaces a VAE baked into the file. The tokenizer is SD 1.5's CLIP tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ShanshuiError, check

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
TEXT_PREFIX = "cond_stage_model.transformer."
EMA_PREFIX = "model_ema."
SD15_CROSS_ATTENTION = 768


# ------------------------------------------------------------------------------------------ reading
def read_state_dict(path: Path, what: str = "Stable Diffusion checkpoint") -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from ``.safetensors`` or a ``.ckpt``/``.pt``/``.pth``/``.bin`` pickle."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ShanshuiError(f"cannot load {what} '{path}': {type(exc).__name__}: "
                            f"{text[0][:200] if text else 'corrupt file'}") from exc
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    check(isinstance(obj, dict), f"{what} '{path}' does not hold a state dict")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


# ------------------------------------------------------------------------------------------ identification
def _has(keys, *fragments: str) -> bool:
    return any(any(f in k for f in fragments) for k in keys)


def identify(sd: dict[str, torch.Tensor]) -> str:
    """What a state dict holds, as a short phrase; ``"sd15"`` for an SD 1.5-layout image model."""
    keys = list(sd)
    if not keys:
        return "an empty file (no tensors)"
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys) or _has(
            keys, ".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.", "_lora.down."):
        return "a LoRA (pass it with --lora PATH[:SCALE])"
    if _has(keys, "motion_modules.", "temporal_transformer."):
        return "a motion module (pass it with --motion-module)"
    if any(k.startswith("conditioner.embedders.") for k in keys) or f"{UNET_PREFIX}label_emb.0.0.weight" in sd:
        return "an SDXL checkpoint"
    unet_keys = [k for k in keys if k.startswith(UNET_PREFIX)]
    if not unet_keys:
        if any(k.startswith(VAE_PREFIXES) for k in keys) or (
                any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys)):
            return "a VAE on its own (pass it with --vae)"
        if "conv_in.weight" in sd and any(k.startswith("down_blocks.") for k in keys):
            return "a diffusers-layout weight file (pass the whole diffusers folder instead)"
        return f"not a Stable Diffusion checkpoint (no '{UNET_PREFIX}*' tensors; first key '{keys[0]}')"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "an SD 2.x checkpoint (OpenCLIP text encoder)"
    k_proj = next((v for k, v in sd.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
    if k_proj is not None and int(k_proj.shape[1]) == 1024:
        return "an SD 2.x checkpoint (cross-attention width 1024)"
    if k_proj is not None and int(k_proj.shape[1]) == 2048:
        return "an SDXL checkpoint (cross-attention width 2048)"
    conv_in = sd.get(f"{UNET_PREFIX}input_blocks.0.0.weight")
    if conv_in is None:
        return f"an incomplete UNet (no '{UNET_PREFIX}input_blocks.0.0.weight')"
    channels = int(conv_in.shape[1])
    if channels == 9:
        return "an inpainting checkpoint (9 input channels)"
    if channels != 4:
        return f"a {channels}-input-channel model (e.g. depth or InstructPix2Pix)"
    return "sd15"


def refuse_unless_sd15(sd: dict[str, torch.Tensor], path: Path) -> None:
    kind = identify(sd)
    check(kind == "sd15", f"model '{path}' is {kind}; --model expects an SD 1.5 image checkpoint "
                          f"(LDM keys '{UNET_PREFIX}*', 4 input channels) or a diffusers folder")


# ------------------------------------------------------------------------------------------ configs
def _sd15_config(name: str) -> dict:
    from .loading import ASSETS

    return json.loads((ASSETS / "sd15" / name / "config.json").read_text())


def _indices(keys, prefix: str) -> list[int]:
    return sorted({int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)})


def unet_config(unet: dict[str, torch.Tensor]) -> dict:
    """Diffusers ``UNet2DConditionModel`` config for LDM UNet tensors (keys without the prefix)."""
    cfg = _sd15_config("unet")
    keys = list(unet)
    inputs = _indices(keys, "input_blocks.")
    downs = [i for i in inputs if f"input_blocks.{i}.0.op.weight" in unet]
    levels = len(downs) + 1
    layers = (len(inputs) - 1 - len(downs)) // levels
    check(layers >= 1 and 1 + levels * layers + len(downs) == len(inputs),
          f"UNet has {len(inputs)} input blocks, which no SD-style block layout explains")
    channels, down_types = [], []
    for level in range(levels):
        first = 1 + level * (layers + 1)
        channels.append(int(unet[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        down_types.append("CrossAttnDownBlock2D" if f"input_blocks.{first}.1.proj_in.weight" in unet
                          else "DownBlock2D")
    up_types = ["CrossAttnUpBlock2D" if t.startswith("CrossAttn") else "UpBlock2D" for t in reversed(down_types)]
    proj_in = next(v for k, v in unet.items() if k.endswith(".proj_in.weight"))
    k_proj = next(v for k, v in unet.items() if k.endswith("attn2.to_k.weight"))
    depth = len(_indices([k for k in keys if k.startswith("input_blocks.1.1.")], "input_blocks.1.1.transformer_blocks."))
    check(depth == 1, f"UNet has {depth} transformer layers per attention block; SD 1.5 has 1")
    cfg.update(block_out_channels=channels, layers_per_block=layers, down_block_types=down_types,
               up_block_types=up_types, in_channels=int(unet["input_blocks.0.0.weight"].shape[1]),
               out_channels=int(unet["out.2.weight"].shape[0]), cross_attention_dim=int(k_proj.shape[1]),
               use_linear_projection=proj_in.ndim == 2)
    return cfg


def vae_config(vae: dict[str, torch.Tensor]) -> dict:
    """Diffusers ``AutoencoderKL`` config for LDM VAE tensors (keys without the prefix)."""
    cfg = _sd15_config("vae")
    keys = list(vae)
    levels = _indices(keys, "encoder.down.")
    channels = [int(vae[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels]
    layers = len(_indices(keys, "encoder.down.0.block."))
    cfg.update(block_out_channels=channels, layers_per_block=layers,
               down_block_types=["DownEncoderBlock2D"] * len(levels),
               up_block_types=["UpDecoderBlock2D"] * len(levels),
               latent_channels=int(vae["quant_conv.weight"].shape[0]) // 2,
               in_channels=int(vae["encoder.conv_in.weight"].shape[1]),
               out_channels=int(vae["decoder.conv_out.weight"].shape[0]))
    return cfg


def text_config(text: dict[str, torch.Tensor]) -> dict:
    """``CLIPTextConfig`` fields for CLIP text tensors (keys without ``text_model.``); heads = width / 64."""
    cfg = _sd15_config("text_encoder")
    emb = text["embeddings.token_embedding.weight"]
    hidden = int(emb.shape[1])
    check(hidden % 64 == 0, f"text encoder width {hidden} is not a multiple of CLIP's head size 64")
    cfg.update(vocab_size=int(emb.shape[0]), hidden_size=hidden, num_attention_heads=hidden // 64,
               intermediate_size=int(text["encoder.layers.0.mlp.fc1.weight"].shape[0]),
               num_hidden_layers=len(_indices(list(text), "encoder.layers.")),
               max_position_embeddings=int(text["embeddings.position_embedding.weight"].shape[0]),
               projection_dim=hidden)
    return cfg


# ------------------------------------------------------------------------------------------ components
def _strict_load(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise ShanshuiError(f"{what} in '{path}': missing tensor '{missing[0]}' ({len(missing)} missing in all)")
    if unexpected:
        raise ShanshuiError(f"{what} in '{path}': unexpected tensor '{unexpected[0]}' "
                            f"({len(unexpected)} unexpected in all)")
    for k, v in state.items():
        check(tuple(v.shape) == tuple(expected[k].shape),
              f"{what} in '{path}': tensor '{k}' has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True)


def _cast(model, dtype: torch.dtype):
    return model if dtype == torch.float32 else model.to(dtype)


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def ema_unet(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The UNet's EMA copy: ``model.diffusion_model.a.b.c`` is stored as ``model_ema.diffusion_modelabc``."""
    out = {}
    for key in (k for k in sd if k.startswith(UNET_PREFIX)):
        ema_key = EMA_PREFIX + key[len("model."):].replace(".", "")
        if ema_key not in sd:
            raise ShanshuiError(f"checkpoint '{path}' has no EMA weights ('{ema_key}' missing); drop --ema")
        out[key[len(UNET_PREFIX):]] = sd[ema_key]
    return out


def has_ema(sd: dict) -> bool:
    return any(k.startswith(EMA_PREFIX + "diffusion_model") for k in sd)


def build_unet(unet_sd: dict, path: Path, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    cfg = unet_config(unet_sd)
    cfg.pop("_class_name", None)
    prefixed = {UNET_PREFIX + k: v for k, v in unet_sd.items()}
    state = convert_ldm_unet_checkpoint(prefixed, cfg)
    unet = UNet2DConditionModel.from_config(cfg)
    _strict_load(unet, state, "UNet", path)
    return _cast(unet, dtype)


def build_vae(vae_sd: dict, path: Path, dtype: torch.dtype):
    """``vae_sd``: LDM VAE tensors without prefix (``encoder.down.0...``) or diffusers VAE tensors."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if "encoder.down_blocks.0.resnets.0.conv1.weight" in vae_sd:  # already diffusers names
        return _vae_from_diffusers(vae_sd, path, dtype)
    check("encoder.down.0.block.0.conv1.weight" in vae_sd and "quant_conv.weight" in vae_sd,
          f"'{path}' has no complete VAE (expected 'encoder.down.0.block.0.conv1.weight' and 'quant_conv.weight')")
    cfg = vae_config(vae_sd)
    cfg.pop("_class_name", None)
    state = convert_ldm_vae_checkpoint({VAE_PREFIXES[0] + k: v for k, v in vae_sd.items()}, cfg)
    vae = AutoencoderKL.from_config(cfg)
    _strict_load(vae, state, "VAE", path)
    return _cast(vae, dtype)


def _vae_from_diffusers(state: dict, path: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    cfg = _sd15_config("vae")
    cfg.pop("_class_name", None)
    levels = _indices(list(state), "encoder.down_blocks.")
    cfg.update(block_out_channels=[int(state[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0])
                                   for i in levels],
               layers_per_block=len(_indices(list(state), "encoder.down_blocks.0.resnets.")),
               down_block_types=["DownEncoderBlock2D"] * len(levels),
               up_block_types=["UpDecoderBlock2D"] * len(levels),
               latent_channels=int(state["quant_conv.weight"].shape[0]) // 2)
    vae = AutoencoderKL.from_config(cfg)
    _strict_load(vae, state, "VAE", path)
    return _cast(vae, dtype)


def load_vae(path: str | Path, dtype: torch.dtype = torch.float32):
    """A VAE from a diffusers folder, or a ``.safetensors``/``.ckpt`` in LDM (with or without
    ``first_stage_model.``) or diffusers layout."""
    from diffusers import AutoencoderKL

    path = Path(path).expanduser()
    check(path.exists(), f"--vae '{path}' does not exist (give a diffusers VAE folder or a .safetensors/.ckpt)")
    if path.is_dir():
        try:
            return AutoencoderKL.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        except Exception as exc:
            raise ShanshuiError(f"cannot load VAE folder '{path}': {type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}") from exc
    sd = read_state_dict(path, "VAE")
    for prefix in VAE_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = _strip(sd, prefix)
            break
    else:
        check(not any(k.startswith(UNET_PREFIX) for k in sd),
              f"--vae '{path}' is a full checkpoint without a VAE inside; give a VAE file or folder")
    return build_vae(sd, path, dtype)


def build_text_encoder(text_sd: dict, path: Path, dtype: torch.dtype):
    from transformers import CLIPTextConfig, CLIPTextModel

    text_sd = {k.removeprefix("text_model."): v for k, v in text_sd.items() if not k.endswith("position_ids")}
    check("embeddings.token_embedding.weight" in text_sd,
          f"text encoder in '{path}' lacks 'embeddings.token_embedding.weight'")
    model = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text_config(text_sd).items() if k != "architectures"}))
    _strict_load(model, text_sd, "text encoder", path)
    return _cast(model, dtype).eval()


def load_single_file(path: Path, dtype: torch.dtype = torch.float32, ema: bool = False,
                     vae: str | Path | None = None, notes: list[str] | None = None) -> dict:
    """``unet`` (2D), ``vae``, ``text_encoder``, ``tokenizer`` from an SD 1.5 single-file checkpoint."""
    from transformers import CLIPTokenizer

    from .loading import sd15_config_dir

    notes = notes if notes is not None else []
    sd = read_state_dict(path)
    refuse_unless_sd15(sd, path)
    if ema:
        unet_sd = ema_unet(sd, path)
        notes.append(f"using the EMA weights of '{path.name}'")
    else:
        unet_sd = _strip(sd, UNET_PREFIX)
        if has_ema(sd):
            notes.append(f"'{path.name}' also holds EMA weights; --ema selects them")
    out = {"unet": build_unet(unet_sd, path, dtype)}

    vae_sd = {}
    for prefix in VAE_PREFIXES:
        vae_sd = vae_sd or _strip(sd, prefix)
    if vae is not None:
        out["vae"] = load_vae(vae, dtype)
        notes.append(f"VAE taken from '{vae}'" + (" (replacing the one inside the checkpoint)" if vae_sd else ""))
    else:
        check(bool(vae_sd), f"checkpoint '{path}' has no VAE weights ('first_stage_model.*'); "
                            f"pass one with --vae PATH (a VAE .safetensors/.ckpt or diffusers folder)")
        out["vae"] = build_vae(vae_sd, path, dtype)

    text_sd = _strip(sd, TEXT_PREFIX)
    check(bool(text_sd), f"checkpoint '{path}' has no text encoder ('{TEXT_PREFIX}*'); "
                         f"convert it to a diffusers folder with a CLIP text encoder and pass that as --model")
    out["text_encoder"] = build_text_encoder(text_sd, path, dtype)
    out["tokenizer"] = CLIPTokenizer.from_pretrained(sd15_config_dir() / "tokenizer", local_files_only=True)
    check(out["text_encoder"].config.vocab_size == len(out["tokenizer"]),
          f"text encoder in '{path}' has {out['text_encoder'].config.vocab_size} tokens; "
          f"SD 1.5's CLIP tokenizer has {len(out['tokenizer'])}")
    return out
