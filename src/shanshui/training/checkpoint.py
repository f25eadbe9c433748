"""Checkpoint folders: atomic writing, finding the latest, pruning.

A checkpoint is ``OUTPUT/checkpoints/checkpoint-NNNNNN/`` holding what accelerate saves (optimizer, LR
schedule, grad scaler, every process's RNG states, EMA weights if any), the trainable weights written by
us (``motion_module.safetensors`` + ``.json``, ``noise_adapter.safetensors``), the resolved ``config.yaml``
and ``trainer_state.json`` (step, epoch, position in the epoch).

It is first written to a hidden ``.checkpoint-NNNNNN.tmp`` folder, and only renamed to its final name once
complete (``trainer_state.json`` is written last). A process killed while saving leaves at most a hidden
temporary folder, which :func:`list_checkpoints` ignores and the next save replaces: the latest good
checkpoint is never touched. Older checkpoints are pruned only after the new one is in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

from ..errors import ShanshuiError, check

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def is_complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir``, oldest first, as ``(step, folder)``."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _NAME.match(child.name)
        if m and child.is_dir() and is_complete(child):
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(spec: str | None, output_dir: str | Path) -> Path | None:
    """``None`` -> no resume; ``"latest"`` -> newest complete checkpoint or ``None``; else a checked folder."""
    if spec is None:
        return None
    if spec == "latest":
        return latest_checkpoint(output_dir)
    folder = Path(spec).expanduser()
    check(folder.is_dir(), f"resume checkpoint '{folder}' is not a folder")
    check(is_complete(folder), f"resume checkpoint '{folder}' is incomplete (no {STATE_FILE}): "
                               "it was interrupted while being written; use an older one")
    return folder


def read_trainer_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except Exception as exc:
        raise ShanshuiError(f"checkpoint '{folder}': cannot read {STATE_FILE}: {exc}") from exc


def prune(output_dir: str | Path, total_limit: int) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``total_limit`` (0 = keep all); returns what was removed."""
    if total_limit <= 0:
        return []
    found = list_checkpoints(output_dir)
    removed = []
    for _, folder in found[: max(0, len(found) - total_limit)]:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def save_checkpoint(accelerator, output_dir: str | Path, step: int, trainer_state: dict, config_yaml: str,
                    total_limit: int, write_weights: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` atomically. Must be called on every process (accelerate saves RNG per process).

    ``write_weights(folder)`` is called on the main process to write the trainable weights; accelerate's own
    model file is suppressed by the save hook the training loop registers.
    """
    root = checkpoint_dir(output_dir)
    final = root / checkpoint_name(step)
    tmp = root / f".{checkpoint_name(step)}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)   # left over by a save that was killed
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if write_weights is not None:
            write_weights(tmp)
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        _write_synced(tmp / STATE_FILE, json.dumps(trainer_state, indent=2))   # completeness marker, last
        _fsync_dir(tmp)
        replace_dir(tmp, final)  # the same step may be saved again (e.g. after resuming from it)
        _fsync_dir(root)
        prune(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` onto ``final``; an existing ``final`` is swapped out, then removed.

    The published folder gets the umask's permissions (a ``mkdtemp`` folder and safetensors files are
    private otherwise)."""
    from ..video_io import normal_permissions

    normal_permissions(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
