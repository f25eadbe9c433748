"""Packing a trained image model + motion module into the package as its bundled model (fp16 safetensors).

    python -m shanshui.training.bundle runs/bundled/stage1/model runs/bundled/stage2/final/motion_module.safetensors

writes ``src/shanshui/assets/bundled/`` (or ``--out``): the diffusers folder of the image model and
``motion_module.safetensors`` + ``.json``, every tensor stored as float16 (half the size; the loaders upcast
to the dtype they are asked for, float32 on a CPU). The folder is replaced atomically.

The image-to-video control model (``shanshui train-control``) goes into the bundle's ``i2v/`` folder, with
the rest or on its own (into an existing bundle)::

    python -m shanshui.training.bundle IMAGE_MODEL MOTION_MODULE --control runs/bundled/control/final
    python -m shanshui.training.bundle --control runs/bundled/control/final
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from ..errors import check
from .checkpoint import replace_dir

MAX_BYTES = 60 * 1024 * 1024
MAX_FILE_BYTES = 16 * 1024 * 1024      # every file of the bundle stays below this (weights are sharded)
SHARD = "15MB"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


I2V_DIR = "i2v"


def write_control_fp16(control_dir: str | Path, target: str | Path) -> Path:
    """Copy a ``train-control`` output (``control.safetensors`` + ``motion_module.safetensors`` and their JSON)
    into ``target`` with every tensor as float16; checks that it loads first."""
    from safetensors.torch import save_file

    from ..models.control import CONTROL_META_KEY, read_control
    from ..models.motion_io import META_KEY, read_weights

    control_dir, target = Path(control_dir), Path(target)
    state, config = read_control(control_dir)                    # validates the control config
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(target / "control.safetensors"),
              metadata={CONTROL_META_KEY: config.to_json(), "format": "pt"})
    (target / "control.json").write_text(config.to_json() + "\n")
    raw, meta = read_weights(control_dir / "motion_module.safetensors")
    check(META_KEY in meta, f"'{control_dir}/motion_module.safetensors' has no Shanshui motion config")
    save_file({k: v.to(torch.float16).contiguous() for k, v in raw.items()},
              str(target / "motion_module.safetensors"), metadata=meta)
    (target / "motion_module.json").write_text(json.dumps(json.loads(meta[META_KEY]), indent=2))
    sched = control_dir / "scheduler_config.json"
    if sched.is_file():
        shutil.copy(sched, target / "scheduler_config.json")
    return target


def export_control(control_dir: str | Path, out: str | Path, max_bytes: int = MAX_BYTES) -> Path:
    """Put the control model (fp16) into the existing bundle ``out`` as ``out/i2v`` (replaced atomically)."""
    out = Path(out)
    check((out / "model_index.json").is_file(), f"'{out}' holds no bundled model to add the control model to")
    final = out / I2V_DIR
    tmp = out / (I2V_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_control_fp16(control_dir, tmp)
    others = folder_bytes(out) - folder_bytes(tmp) - (folder_bytes(final) if final.exists() else 0)
    size = others + folder_bytes(tmp)
    if size > max_bytes:
        shutil.rmtree(tmp, ignore_errors=True)
        check(False, f"bundle with the control model is {size / 2**20:.1f} MiB, over the "
                     f"{max_bytes / 2**20:.0f} MiB limit")
    replace_dir(tmp, final)
    return final


def export_bundled(image_model: str | Path, motion_module: str | Path, out: str | Path,
                   max_bytes: int = MAX_BYTES, control: str | Path | None = None) -> Path:
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
    for cfg_file in tmp.glob("*/config.json"):      # diffusers records where the weights came from: not shipped
        cfg = json.loads(cfg_file.read_text())
        if cfg.pop("_name_or_path", None) is not None:
            cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    raw, meta = read_weights(motion_module)
    check(META_KEY in meta, f"'{motion_module}' has no Shanshui motion config in its metadata")
    tensors = {k: v.to(torch.float16).contiguous() for k, v in raw.items()}
    save_file(tensors, str(tmp / "motion_module.safetensors"), metadata=meta)
    config = json.loads(meta[META_KEY])
    (tmp / "motion_module.json").write_text(json.dumps(config, indent=2))
    if control is not None:
        write_control_fp16(control, tmp / I2V_DIR)
    biggest = max((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    check(biggest.stat().st_size <= MAX_FILE_BYTES, f"'{biggest.name}' is {biggest.stat().st_size / 2**20:.1f} MiB, "
                                                     f"over the {MAX_FILE_BYTES / 2**20:.0f} MiB per-file limit")
    size = folder_bytes(tmp)
    check(size <= max_bytes, f"bundle is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    replace_dir(tmp, out)
    return out


def main(argv: list[str] | None = None) -> None:
    from ..pipelines.loading import BUNDLED_DIR

    ap = argparse.ArgumentParser(description="Pack an image model + motion module as the bundled model (fp16).")
    ap.add_argument("image_model", nargs="?", help="diffusers folder from `shanshui train-image` (OUTPUT/model)")
    ap.add_argument("motion_module", nargs="?",
                    help="motion_module.safetensors from `shanshui train` (OUTPUT/final)")
    ap.add_argument("--control", default=None,
                    help="`shanshui train-control` output folder (OUTPUT/final), stored as i2v/; alone, it is "
                         "added to the existing bundle in --out")
    ap.add_argument("--out", default=str(BUNDLED_DIR), help="target folder [default: the package's bundled/]")
    args = ap.parse_args(argv)
    if args.image_model is None and args.motion_module is None:
        if args.control is None:
            ap.error("give IMAGE_MODEL MOTION_MODULE, --control DIR, or both")
        final = export_control(args.control, args.out)
        print(f"control model written to {final} (bundle {folder_bytes(Path(args.out)) / 2**20:.1f} MiB)")
        return
    if args.motion_module is None:
        ap.error("IMAGE_MODEL needs MOTION_MODULE too")
    out = export_bundled(args.image_model, args.motion_module, args.out, control=args.control)
    print(f"bundled model written to {out} ({folder_bytes(out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
