"""Options shared by every command that runs a diffusion model: ``--device``, ``--dtype``, ``--low-vram``.

Use :func:`runtime_options` as a decorator; the command receives one ``runtime`` argument, a
:class:`Runtime` already checked (a device this machine lacks or fp16 on a CPU fails here, before any
weights are read).
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
