"""Packing a trained image model + motion module into the package as its bundled model (fp16 safetensors).

    python -m shanshui.training.bundle runs/bundled/stage1/model runs/bundled/stage2/final/motion_module.safetensors

writes ``src/shanshui/assets/bundled/`` (or ``--out``): the diffusers folder of the image model and
``motion_module.safetensors`` + ``.json``, every tensor stored as float16 (half the size; the loaders upcast
to the dtype they are asked for, float32 on a CPU). The folder is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import check

MAX_BYTES = 60 * 1024 * 1024
MAX_FILE_BYTES = 16 * 1024 * 1024      # every file of the bundle stays below this (weights are sharded)
SHARD = "15MB"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def export_bundled(image_model: str | Path, motion_module: str | Path, out: str | Path,
                   max_bytes: int = MAX_BYTES) -> Path:
    """Write the fp16 bundle to ``out``; returns ``out``. Fails if it would exceed ``max_bytes``."""
    from safetensors.torch import save_file

    from ..models.motion_io import META_KEY, read_weights
    from ..pipelines.loading import load_base_components, save_base_components

    out = Path(out)
    motion_module = Path(motion_module)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    comps = load_base_components(image_model, torch.float32)
    sched_file = Path(image_model) / "scheduler" / "scheduler_config.json"
    sched_cfg = json.loads(sched_file.read_text()) if sched_file.is_file() else None
    save_base_components(comps, tmp, dtype=torch.float16, scheduler_config=sched_cfg, max_shard_size=SHARD)
    raw, meta = read_weights(motion_module)
    check(META_KEY in meta, f"'{motion_module}' has no Shanshui motion config in its metadata")
    tensors = {k: v.to(torch.float16).contiguous() for k, v in raw.items()}
    save_file(tensors, str(tmp / "motion_module.safetensors"), metadata=meta)
    config = json.loads(meta[META_KEY])
    (tmp / "motion_module.json").write_text(json.dumps(config, indent=2))
    biggest = max((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    check(biggest.stat().st_size <= MAX_FILE_BYTES, f"'{biggest.name}' is {biggest.stat().st_size / 2**20:.1f} MiB, "
                                                     f"over the {MAX_FILE_BYTES / 2**20:.0f} MiB per-file limit")
    size = folder_bytes(tmp)
    check(size <= max_bytes, f"bundle is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    from ..pipelines.loading import BUNDLED_DIR

    ap = argparse.ArgumentParser(description="Pack an image model + motion module as the bundled model (fp16).")
    ap.add_argument("image_model", help="diffusers folder from `shanshui train-image` (OUTPUT/model)")
    ap.add_argument("motion_module", help="motion_module.safetensors from `shanshui train` (OUTPUT/final)")
    ap.add_argument("--out", default=str(BUNDLED_DIR), help="target folder [default: the package's bundled/]")
    args = ap.parse_args(argv)
    out = export_bundled(args.image_model, args.motion_module, args.out)
    print(f"bundled model written to {out} ({folder_bytes(out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
