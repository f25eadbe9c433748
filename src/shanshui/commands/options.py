"""Options shared by commands.

Every command that runs a diffusion model: ``--device``, ``--dtype``, ``--low-vram``. Use
:func:`runtime_options` as a decorator; the command receives one ``runtime`` argument, a :class:`Runtime`
already checked (a device this machine lacks or fp16 on a CPU fails here, before any weights are read).

The training commands (``train``, ``train-control``): the options ``--resume``, ``--output-dir``,
``--dry-run`` and ``--no-progress`` (one decorator each, so that every command keeps its own option order),
and the steps they take alike: :func:`training_overrides`, :func:`load_training_config`,
:func:`echo_dry_run` and :func:`run_training`.
"""

from __future__ import annotations

from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Runtime:
    device: object          # torch.device
    dtype: object           # torch.dtype (compute dtype of the UNet and text encoder)
    memory: object          # MemoryOptions or None

    @property
    def load_kwargs(self) -> dict:
        """Keyword arguments for ``load_pipeline`` / ``load_painting_pipeline``."""
        return {"device": self.device, "dtype": self.dtype, "low_vram": self.memory or False}


def resolve_runtime(device: str, dtype: str, low_vram: bool) -> Runtime:
    from ..runtime import MemoryOptions, resolve_device, resolve_dtype

    dev = resolve_device(device)
    return Runtime(dev, resolve_dtype(dtype, dev), MemoryOptions.low_vram() if low_vram else None)


def runtime_options(func):
    """Add ``--device/--dtype/--low-vram`` and pass ``runtime`` (a :class:`Runtime`) to the command."""
    import functools

    @click.option("--device", default="cpu", show_default=True,
                  help="cpu, cuda, cuda:1, mps ... (must exist on this machine).")
    @click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto", show_default=True,
                  help="Compute precision of the UNet and text encoder: auto = fp16 on a GPU, fp32 on a CPU "
                       "(fp16 is refused on a CPU; use bf16). Latents, scheduler and VAE decode keep fp32 where "
                       "it matters (docs/performance.md).")
    @click.option("--low-vram", is_flag=True,
                  help="Lower peak GPU memory, same frames: VAE slicing, CFG halves in turn, split inference, "
                       "model CPU offload (slower).")
    @functools.wraps(func)
    def wrapper(*args, device, dtype, low_vram, **kwargs):
        return func(*args, runtime=resolve_runtime(device, dtype, low_vram), **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ training commands

resume_option = click.option(
    "--resume", default=None, metavar="latest|PATH",
    help="Continue from the newest checkpoint of output_dir, or from a checkpoint folder.")
output_dir_option = click.option("--output-dir", default=None, help="Override output_dir of the config.")
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Validate the config and the data, print the resolved config, stop.")
no_progress_option = click.option(
    "--no-progress", is_flag=True, help="No progress bar (logs still go to OUTPUT/logs).")


def training_overrides(overrides, output_dir: str | None, resume: str | None) -> list[str]:
    """The command's dotted overrides, then ``--output-dir`` and ``--resume`` as overrides (when given)."""
    extra = list(overrides)
    if output_dir is not None:
        extra.append(f"output_dir={output_dir}")
    if resume is not None:
        extra.append(f"checkpoint.resume={resume}")
    return extra


def load_training_config(load, config_path: str, overrides: list[str]):
    """``load(config_path, overrides)``, with its ``output_dir`` checked as a place to write a folder."""
    cfg = load(config_path, overrides)
    from ..video_io import check_output_location

    check_output_location(cfg.output_dir, folder=True)
    return cfg


def echo_dry_run(cfg, clips: int) -> None:
    """What ``--dry-run`` prints: the resolved config and the number of training clips."""
    click.echo(cfg.to_yaml().rstrip())
    click.echo(f"# config OK; {clips} training clip(s)")


def run_training(ctx, run, cfg, no_progress: bool):
    """``run(cfg, progress=...)``'s result; a diverged loss
    (:class:`~shanshui.training.monitor.TrainingDiverged`) is reported on stderr and exits with code 3."""
    from ..training.monitor import TrainingDiverged

    try:
        return run(cfg, progress=not no_progress)
    except TrainingDiverged as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(3)
