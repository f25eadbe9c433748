"""Loading base models (SD 1.5 layout) and motion modules from local paths only.

A base model is either a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``) or a
single ``.safetensors``/``.ckpt`` checkpoint in the original SD layout; the latter is read by
:mod:`shanshui.pipelines.single_file` against the SD 1.5 configuration shipped in ``shanshui/assets/sd15``
(so nothing is fetched from a hub). When no model is given, the model bundled with the package is used.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from importlib import resources
from pathlib import Path

import torch

from ..errors import ShanshuiError, check
from ..models.tokenizer import build_vocab

ASSETS = Path(str(resources.files("shanshui") / "assets"))
BUNDLED_DIR = ASSETS / "bundled"
BUNDLED_MOTION = BUNDLED_DIR / "motion_module.safetensors"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")


def cache_dir() -> Path:
    root = Path(os.environ.get("SHANSHUI_CACHE", Path.home() / ".cache" / "shanshui"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def bundled_model_available() -> bool:
    return (BUNDLED_DIR / "model_index.json").exists() and BUNDLED_MOTION.exists()


def sd15_config_dir() -> Path:
    """A complete SD 1.5 config folder (JSONs + CLIP tokenizer files), built once in the cache."""
    target = cache_dir() / "sd15-config"
    if (target / "tokenizer" / "merges.txt").exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ASSETS / "sd15", tmp, ignore=shutil.ignore_patterns("*.gz", "*.md"))
    lines = gzip.open(ASSETS / "sd15" / "clip_bpe_merges.txt.gz").read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = build_vocab(merges)
    check(len(vocab) == 49408, f"CLIP vocabulary has {len(vocab)} tokens, expected 49408")
    (tmp / "tokenizer" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "tokenizer" / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def load_base_components(path: str | Path, dtype: torch.dtype = torch.float32, ema: bool = False,
                         vae: str | Path | None = None, notes: list[str] | None = None) -> dict:
    """Load ``unet`` (2D), ``vae``, ``text_encoder``, ``tokenizer`` from a folder or a single checkpoint.

    ``ema``: use a single file's EMA UNet weights. ``vae``: take the VAE from this folder/file instead.
    Messages worth showing the user (which weights were used) are appended to ``notes``."""
    path = Path(path).expanduser()
    check(path.exists(), f"model '{path}' does not exist (give a diffusers folder or a .safetensors/.ckpt file)")
    if path.is_dir():
        check(not ema, f"--ema applies to single-file checkpoints; '{path}' is a folder")
        out = _load_folder(path, dtype)
        if vae is not None:
            from .single_file import load_vae

            out["vae"] = load_vae(vae, dtype)
            if notes is not None:
                notes.append(f"VAE taken from '{vae}'")
        return out
    check(path.suffix.lower() in (".safetensors", ".ckpt"),
          f"model file '{path}' must be .safetensors or .ckpt (or pass a diffusers folder)")
    from .single_file import load_single_file

    return load_single_file(path, dtype, ema=ema, vae=vae, notes=notes)


def _load_folder(path: Path, dtype: torch.dtype) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    check(not missing, f"model folder '{path}' lacks {', '.join(f'{m}/' for m in missing)} "
                       f"(expected a diffusers Stable Diffusion folder)")
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype, local_files_only=True),
        "vae": lambda: AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype, local_files_only=True),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype,
                                                              local_files_only=True),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True),
    }
    out = {}
    for name, load in loaders.items():
        try:
            out[name] = load()
        except Exception as exc:
            raise ShanshuiError(f"cannot load {name} from '{path / name}': {_short(exc)}") from exc
    return out


def save_base_components(components: dict, folder: str | Path, dtype: torch.dtype | None = None,
                         scheduler_config: dict | None = None, max_shard_size: str | None = None) -> Path:
    """Write components as a diffusers folder (safetensors) that :func:`load_base_components` reads back.

    ``scheduler_config``: the ``scheduler/scheduler_config.json`` to write (default: the SD 1.5 video
    schedule); it carries the model's objective (ε or v, terminal SNR, spacing). ``max_shard_size`` (e.g.
    ``"15MB"``) splits large weight files into shards with an index, as diffusers does.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder"):
        model = components[name]
        if dtype is not None:
            model = model.to(dtype)
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(folder / name, safe_serialization=True, **kwargs)
    components["tokenizer"].save_pretrained(folder / "tokenizer")
    index = json.loads((ASSETS / "sd15" / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    sched = folder / "scheduler"
    sched.mkdir(exist_ok=True)
    if scheduler_config is None:
        shutil.copy(ASSETS / "sd15" / "scheduler" / "scheduler_config.json", sched / "scheduler_config.json")
    else:
        (sched / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    from ..video_io import normal_permissions

    for name in ("unet", "vae", "text_encoder", "tokenizer"):  # safetensors writes its files as 0600
        normal_permissions(folder / name)
    return folder
