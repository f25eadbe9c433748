"""A latent cache: VAE posteriors and text embeddings of training clips, precomputed once.

``shanshui data cache DIR --model PATH`` draws ``clips_per_video`` clips from every video (the same clip
sampling as training, epochs ``0..clips_per_video-1``), encodes each with the frozen VAE and text encoder,
and writes safetensors shards::

    CACHE/cache.json                  what was cached, from which model, shard list (written last)
    CACHE/shard-00000.safetensors     "{k}.latent_mean", "{k}.latent_std": (c, f, h, w); "{k}.text_embeds": (77, d)
    CACHE/empty_text.safetensors      the embedding of "" (text dropout in cached training)

The posterior's mean and standard deviation are stored (not a sample), so a cached step draws
``z0 = mean + std·n`` with the same random numbers as a step on raw videos and gives the same loss.
The cache is built in a hidden temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import ShanshuiError, check
from .checkpoint import replace_dir

CACHE_VERSION = 1
CACHE_FILE = "cache.json"


def model_identity(model_cfg) -> str:
    """A string naming the frozen components, stored in the cache and compared when training."""
    if model_cfg.preset is not None:
        return f"preset:{model_cfg.preset}:seed{model_cfg.preset_seed}"
    return str(Path(model_cfg.base_model).expanduser().resolve())


def write_latent_cache(dataset, vae, tokenizer, text_encoder, output: str | Path, model_id: str,
                       clips_per_video: int = 1, shard_size: int = 256, progress: bool = True) -> Path:
    """Encode ``clips_per_video`` clips of every item of a :class:`VideoTextDataset` into ``output``."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from .step import encode_captions, encode_pixels

    check(len(dataset) > 0, "the dataset is empty: nothing to cache")
    check(clips_per_video >= 1, f"clips_per_video={clips_per_video} must be >= 1")
    check(shard_size >= 1, f"shard_size={shard_size} must be >= 1")
    output = Path(output).expanduser()
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    entries, shards, buffer = [], [], {}

    def flush():
        if not buffer:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        save_file(dict(buffer), str(tmp / name))
        shards.append(name)
        buffer.clear()

    total = clips_per_video * len(dataset)
    with torch.no_grad(), tqdm(total=total, desc="caching latents", disable=not progress) as bar:
        for epoch in range(clips_per_video):
            dataset.set_epoch(epoch)
            for i in range(len(dataset)):
                sample = dataset[i]
                mean, std = encode_pixels(vae, sample["pixel_values"][None])          # (1, c, f, h, w)
                text = encode_captions(tokenizer, text_encoder, [sample["caption"]])  # (1, 77, d)
                k = len(entries)
                buffer[f"{k}.latent_mean"] = mean[0].cpu().contiguous()
                buffer[f"{k}.latent_std"] = std[0].cpu().contiguous()
                buffer[f"{k}.text_embeds"] = text[0].float().cpu().contiguous()
                entries.append({"caption": sample["caption"], "index": int(sample["index"]),
                                "start": int(sample["start"]), "epoch": epoch, "shard": len(shards)})
                if len(buffer) >= 3 * shard_size:
                    flush()
                bar.update()
        flush()
        empty = encode_captions(tokenizer, text_encoder, [""])[0].float().cpu().contiguous()
    save_file({"empty_text": empty}, str(tmp / "empty_text.safetensors"))
    meta = {
        "version": CACHE_VERSION, "model": model_id, "count": len(entries),
        "frames": dataset.frames, "stride": dataset.stride, "size": dataset.size,
        "latent_channels": int(vae.config.latent_channels),
        "text_dim": int(empty.shape[-1]), "scaling_factor": float(vae.config.scaling_factor),
        "source": str(Path(dataset.root).resolve()), "shards": shards, "entries": entries,
    }
    (tmp / CACHE_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    if output.exists():
        check(output.is_dir() and (output / CACHE_FILE).is_file(),
              f"'{output}' exists and is not a latent cache; refusing to replace it")
    replace_dir(tmp, output)
    return output


def read_cache_meta(root: str | Path) -> dict:
    root = Path(root).expanduser()
    file = root / CACHE_FILE
    check(file.is_file(), f"'{root}' is not a latent cache (no {CACHE_FILE}; create one with `shanshui data cache`)")
    try:
        meta = json.loads(file.read_text())
    except Exception as exc:
        raise ShanshuiError(f"latent cache '{root}': cannot read {CACHE_FILE}: {exc}") from exc
    check(meta.get("version") == CACHE_VERSION,
          f"latent cache '{root}' has version {meta.get('version')}, expected {CACHE_VERSION}: rebuild it")
    return meta


def check_cache_matches(meta: dict, root: str | Path, cfg) -> None:
    """The cache must hold clips of the configured shape, made by the configured model."""
    d = cfg.data
    for key, want in (("frames", d.frames), ("stride", d.stride), ("size", d.size)):
        check(meta[key] == want, f"latent cache '{root}' holds {key}={meta[key]} but data.{key}={want}; "
                                 f"rebuild the cache or change data.{key}")
    want_model = model_identity(cfg.model)
    check(meta["model"] == want_model, f"latent cache '{root}' was made with model '{meta['model']}', "
                                       f"but this run uses '{want_model}'; rebuild the cache")
    check(meta["count"] > 0, f"latent cache '{root}' is empty")


class LatentCacheDataset(Dataset):
    """Reads a latent cache; samples are ``{"latent_mean", "latent_std", "text_embeds", "caption", ...}``."""

    def __init__(self, root: str | Path):
        from safetensors.torch import load_file

        self.root = Path(root).expanduser()
        self.meta = read_cache_meta(self.root)
        self.frames, self.stride, self.size = self.meta["frames"], self.meta["stride"], self.meta["size"]
        self.entries = self.meta["entries"]
        self.empty_text = load_file(str(self.root / "empty_text.safetensors"))["empty_text"]
        self._handles: dict[int, object] = {}
        for name in self.meta["shards"]:
            check((self.root / name).is_file(), f"latent cache '{self.root}' lacks shard '{name}'")

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Clips are fixed in a cache; kept for interface parity with :class:`VideoTextDataset`."""

    def _shard(self, index: int):
        from safetensors import safe_open

        if index not in self._handles:
            self._handles[index] = safe_open(str(self.root / self.meta["shards"][index]), framework="pt")
        return self._handles[index]

    def __getitem__(self, i: int) -> dict:
        check(0 <= i < len(self.entries), f"index {i} out of range for a cache of {len(self.entries)}")
        entry = self.entries[i]
        f = self._shard(entry["shard"])
        return {"latent_mean": f.get_tensor(f"{i}.latent_mean"), "latent_std": f.get_tensor(f"{i}.latent_std"),
                "text_embeds": f.get_tensor(f"{i}.text_embeds"), "caption": entry["caption"],
                "index": i, "start": entry["start"]}

    def __getstate__(self):  # DataLoader workers reopen the shards themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def collate_cached(samples: list[dict], empty_text: torch.Tensor) -> dict:
    check(len(samples) > 0, "cannot collate an empty batch")
    return {
        "latent_mean": torch.stack([s["latent_mean"] for s in samples]),
        "latent_std": torch.stack([s["latent_std"] for s in samples]),
        "text_embeds": torch.stack([s["text_embeds"] for s in samples]),
        "empty_text": empty_text,
        "caption": [s["caption"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "start": torch.tensor([s["start"] for s in samples], dtype=torch.long),
    }
