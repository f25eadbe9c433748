"""Reading and writing motion-module weights.

Three sources load into the same diffusers-named state dict:

* original AnimateDiff checkpoints (v1/v2/v3; ``.ckpt``/``.pt``/``.pth`` read with ``weights_only=True``, or
  ``.safetensors``) — keys like ``down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0
  .attention_blocks.1.to_v.weight``;
* a diffusers ``MotionAdapter`` folder (``config.json`` + weights);
* Shanshui/NADM files: ``.safetensors`` in the original AnimateDiff key names (so other AnimateDiff tools
  read them) with the :class:`~shanshui.models.motion.MotionConfig` stored in the file's metadata and in a
  ``.json`` sidecar.

Loading is strict: any missing or unexpected key, or a shape mismatch, is an error that names the key. The
sinusoidal frame-position tables (``pos_encoder.pe`` / ``pos_embed.pe``) are derived, not learned; they only
tell the maximum clip length and are never loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import ShanshuiError, check
from .motion import MotionConfig, motion_transformers

# original AnimateDiff name fragment -> diffusers name fragment (applied in this order)
_TO_DIFFUSERS = (
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)
_PE = re.compile(r"\.(pos_encoder|pos_embed)\.pe$")
_MM = re.compile(r"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+\.")
META_KEY = "shanshui_motion_config"


def is_position_table(key: str) -> bool:
    return bool(_PE.search(key))


def to_diffusers_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AnimateDiff names -> diffusers names (position tables dropped)."""
    out = {}
    for key, value in state_dict.items():
        if is_position_table(key):
            continue
        new = key
        for old, rep in _TO_DIFFUSERS:
            new = new.replace(old, rep)
        out[new] = value
    return out


def to_animatediff_keys(state_dict: dict[str, torch.Tensor], max_seq_length: int) -> dict[str, torch.Tensor]:
    """diffusers names -> original AnimateDiff names, adding the ``pos_encoder.pe`` tables AnimateDiff expects."""
    out = {}
    for key, value in state_dict.items():
        if is_position_table(key):
            continue
        m = _MM.match(key)
        check(m is not None, f"'{key}' is not a motion-module weight")
        head, rest = key[: m.end()], key[m.end():]
        rest = (rest.replace("attn1.", "attention_blocks.0.").replace("attn2.", "attention_blocks.1.")
                .replace("norm1.", "norms.0.").replace("norm2.", "norms.1.").replace("norm3.", "ff_norm."))
        out[head + "temporal_transformer." + rest] = value
        if rest.startswith("transformer_blocks.") and rest.endswith("attention_blocks.0.to_q.weight"):
            dim = value.shape[1]
            prefix = head + "temporal_transformer." + rest[: -len("attention_blocks.0.to_q.weight")]
            pe = sinusoidal_table(max_seq_length, dim).to(value.dtype)
            out[prefix + "attention_blocks.0.pos_encoder.pe"] = pe
            out[prefix + "attention_blocks.1.pos_encoder.pe"] = pe.clone()
    return out


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The ``(1, length, dim)`` frame-position table used by AnimateDiff and diffusers."""
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    return SinusoidalPositionalEmbedding(dim, max_seq_length=length).pe.clone()


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a weight file into a flat dict; returns ``(state_dict, safetensors metadata)``."""
    check(path.exists(), f"motion module '{path}' does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        if suffix in (".ckpt", ".pt", ".pth", ".bin"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            check(isinstance(obj, dict), f"'{path}' does not hold a state dict")
            return {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}, {}
    except ShanshuiError:
        raise
    except Exception as exc:
        raise ShanshuiError(f"cannot read motion module '{path}': {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'}") from exc
    raise ShanshuiError(f"motion module '{path}' must be .safetensors, .ckpt, .pt, .pth or .bin, or a folder")


def infer_config(state_dict: dict[str, torch.Tensor], **known) -> MotionConfig:
    """Infer the module layout from diffusers-named weights (heads and groups cannot be inferred: SD defaults)."""
    keys = list(state_dict)
    down = sorted({int(k.split(".")[1]) for k in keys if k.startswith("down_blocks.")})
    check(bool(down), "no 'down_blocks.*.motion_modules' weights found: not a motion module")
    channels = []
    for i in down:
        w = state_dict.get(f"down_blocks.{i}.motion_modules.0.proj_in.weight")
        check(w is not None, f"missing key 'down_blocks.{i}.motion_modules.0.proj_in.weight'")
        channels.append(int(w.shape[1]))
    layers = len({k.split(".")[3] for k in keys if k.startswith("down_blocks.0.motion_modules.")})
    cfg = dict(block_out_channels=tuple(channels), layers_per_block=layers,
               use_mid_block=any(k.startswith("mid_block.") for k in keys))
    cfg.update(known)
    return MotionConfig(**cfg)


def _max_seq_length(raw: dict[str, torch.Tensor]) -> int | None:
    for key, value in raw.items():
        if is_position_table(key):
            return int(value.shape[1])
    return None


def load_motion_module(path: str | Path, norm: str | None = None) -> tuple[dict[str, torch.Tensor], MotionConfig]:
    """Load motion weights from any supported source. Returns ``(diffusers-named state dict, config)``.

    The GroupNorm mode (``config.norm``) of the result:

    * original AnimateDiff files (v1, v2 and v3 alike, ``.ckpt`` or ``.safetensors``): ``"frame"``. The
      official ``TemporalTransformer3DModel.forward`` folds the frames into the batch *before* its GroupNorm,
      in every release, so each frame is normalised on its own;
    * diffusers ``MotionAdapter`` folders: ``"frame"`` too, because they are converted originals;
      ``norm="joint"`` gives what diffusers' ``AnimateDiffPipeline`` computes (exactly equal);
    * Shanshui/NADM files: what their stored config says.

    Original files and ``MotionAdapter`` folders run their second temporal attention as the full attention
    they were trained with (``sparse_causal="off"``); ``--sparse-causal temporal`` (or a training config)
    switches NADM's sparse-causal sub-layer on.

    ``norm`` (``"joint"`` or ``"frame"``) overrides the mode for any source.
    """
    from .motion import NORM_MODES

    check(norm is None or norm in NORM_MODES, f"norm='{norm}' must be one of {NORM_MODES}")
    path = Path(path).expanduser()
    check(path.exists(), f"motion module '{path}' does not exist")
    state, config = _load_diffusers_folder(path) if path.is_dir() else _load_file(path)
    if norm is not None:
        config.norm = norm
    return state, config


def _load_file(path: Path) -> tuple[dict[str, torch.Tensor], MotionConfig]:
    raw, meta = read_weights(path)
    state = to_diffusers_keys(raw)
    if META_KEY in meta:
        config = MotionConfig.from_dict(json.loads(meta[META_KEY]))
    elif path.with_suffix(".json").exists():
        config = MotionConfig.from_dict(json.loads(path.with_suffix(".json").read_text()))
    else:
        # An original AnimateDiff file (v1, v2 or v3; only v2 has a mid block): per-frame GroupNorm in all, and
        # its second temporal attention is the full attention it was trained with (sparse-causal off).
        known = dict(norm="frame", sparse_causal="off")
        length = _max_seq_length(raw)
        if length:
            known["max_seq_length"] = length
        config = infer_config(state, **known)
    return state, config


def _load_diffusers_folder(path: Path) -> tuple[dict[str, torch.Tensor], MotionConfig]:
    cfg_file = path / "config.json"
    check(cfg_file.exists(), f"folder '{path}' has no config.json: not a diffusers MotionAdapter folder")
    weights = [path / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
    weights = [w for w in weights if w.exists()]
    check(bool(weights), f"folder '{path}' has no diffusion_pytorch_model.safetensors/.bin")
    raw, _ = read_weights(weights[0])
    c = json.loads(cfg_file.read_text())
    check(not c.get("conv_in_channels"), f"'{path}' is a PIA adapter (conv_in_channels); not supported")

    def one(v, what):
        if isinstance(v, (list, tuple)):
            check(len(set(v)) == 1, f"'{path}': per-block {what} {v} not supported")
            return v[0]
        return v

    config = MotionConfig(
        block_out_channels=tuple(c.get("block_out_channels", (320, 640, 1280, 1280))),
        layers_per_block=one(c.get("motion_layers_per_block", 2), "layers"),
        use_mid_block=c.get("use_motion_mid_block", True),
        num_attention_heads=one(c.get("motion_num_attention_heads", 8), "heads"),
        norm_num_groups=c.get("motion_norm_num_groups", 32),
        max_seq_length=c.get("motion_max_seq_length", 32),
        norm="frame",  # converted originals; diffusers itself normalises jointly (load with norm="joint")
        sparse_causal="off",  # trained with full temporal attention in both sub-layers
    )
    return {k: v for k, v in raw.items() if not is_position_table(k)}, config


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict`` that reports the first missing/unexpected/mis-shaped key by name."""
    expected = {k: v for k, v in module.state_dict().items() if not is_position_table(k)}
    given = {k: v for k, v in state_dict.items() if not is_position_table(k)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing:
        raise ShanshuiError(f"{what}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    if unexpected:
        raise ShanshuiError(f"{what}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected in all)")
    for key, value in given.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ShanshuiError(f"{what}: key '{key}' has shape {tuple(value.shape)}, "
                                f"expected {tuple(expected[key].shape)}")
    module.load_state_dict(given, strict=False)  # position tables are derived buffers, everything else checked


def motion_state_dict(video_unet) -> dict[str, torch.Tensor]:
    """The motion-module weights of a video UNet, in diffusers names, without position tables."""
    return {k: v for k, v in video_unet.state_dict().items()
            if ".motion_modules." in k and not is_position_table(k)}


def save_motion_module(video_unet, path: str | Path, config: MotionConfig | None = None,
                       dtype: torch.dtype | None = None) -> Path:
    """Save the motion modules as ``.safetensors`` (AnimateDiff key names) + ``.json`` config, atomically."""
    from safetensors.torch import save_file

    from ..video_io import atomic_output

    path = Path(path)
    check(path.suffix == ".safetensors", f"motion module path '{path}' must end in .safetensors")
    config = config or getattr(video_unet, "shanshui_motion_config", None)
    check(config is not None, "save_motion_module needs a MotionConfig")
    state = motion_state_dict(video_unet)
    state = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous() for k, v in state.items()}
    tensors = to_animatediff_keys(state, config.max_seq_length)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: config.to_json(), "format": "pt"})
    with atomic_output(path.with_suffix(".json")) as tmp:
        tmp.write_text(config.to_json())
    return path


def n_motion_modules(video_unet) -> int:
    return len(motion_transformers(video_unet))
