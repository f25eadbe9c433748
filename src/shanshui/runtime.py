"""Where and in what precision a model runs: devices, dtypes and memory options, checked up front.

* :func:`resolve_device` turns ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a ``torch.device`` or
  refuses, naming the devices this machine has (instead of a torch assertion deep inside ``.to()``).
* :func:`resolve_dtype` turns ``"auto" | "fp16" | "bf16" | "fp32"`` into the *compute* dtype of the UNet and
  the text encoder. ``auto`` is fp16 on CUDA and MPS, fp32 on a CPU. fp16 on a CPU is refused: PyTorch's CPU
  half-precision kernels are slow or missing; bf16 is the CPU's half precision.
* :func:`vae_dtype` is where precision is kept: the VAE runs in fp32 unless the compute dtype is fp16 (the
  SD 1.5 VAE is routinely run in fp16 on GPUs, and a chunk that overflows is decoded again in fp32). bf16's
  8-bit mantissa is too coarse for the final pixels, so a bf16 run decodes in fp32.
* Latents, the scheduler arithmetic and SOFP stay float32 whatever the compute dtype: only the UNet's input
  is cast down and its output cast back (see ``TextToVideoPipeline.predict_noise``).
* :class:`MemoryOptions` collects the low-memory switches; :meth:`MemoryOptions.low_vram` is ``--low-vram``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ShanshuiError, check

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# Frames per VAE decode call by default. Decoding is per frame, so the chunk changes memory, not the result;
# at 512x512 in fp16 every frame in flight costs a few hundred MiB of decoder activations.
DEFAULT_DECODE_CHUNK = 8


def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    found = ["cpu"]
    try:
        if torch.cuda.is_available():
            found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver counts as no CUDA
        pass
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``"cuda"`` -> ``cuda:0`` if present; anything absent or malformed -> :class:`ShanshuiError`."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "cpu" if spec is None else str(spec).strip().lower()
    have = available_devices()
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ShanshuiError(f"--device '{spec}' is not a device name; this machine has: {', '.join(have)}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        index = 0 if device.index is None else device.index
        if f"cuda:{index}" in have:
            return torch.device("cuda", index)
    elif device.type == "mps" and "mps" in have and device.index in (None, 0):
        return torch.device("mps")
    raise ShanshuiError(f"--device '{spec}' is not available; this machine has: {', '.join(have)}")


def resolve_dtype(spec: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype for ``spec`` on ``device`` (see the module docstring for ``auto``)."""
    device = torch.device(device)
    if isinstance(spec, torch.dtype):
        check(spec in DTYPE_NAMES, f"dtype {spec} must be one of torch.float32, torch.float16, torch.bfloat16")
        name = DTYPE_NAMES[spec]
    else:
        name = "auto" if spec is None else str(spec).strip().lower()
        name = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}.get(name, name)
        check(name in DTYPE_CHOICES, f"--dtype '{spec}' must be one of {', '.join(DTYPE_CHOICES)}")
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name == "fp16" and device.type == "cpu":
        raise ShanshuiError("--dtype fp16 is not supported on the CPU (PyTorch's CPU fp16 kernels are slow or "
                            "missing); use --dtype bf16 or fp32 there")
    return DTYPES[name]


def vae_dtype(compute: torch.dtype) -> torch.dtype:
    """The VAE's dtype for a compute dtype: fp16 stays fp16, everything else decodes in fp32."""
    return torch.float16 if compute == torch.float16 else torch.float32


@dataclass
class MemoryOptions:
    """Switches that trade speed for memory. All but ``vae_tiling`` leave the result unchanged (up to float
    rounding, see docs/performance.md); tiling blends overlapping tiles and changes pixels slightly.

    ``decode_chunk``: frames per VAE decode call (None: the caller's ``decode_chunk_size``; 1 = VAE slicing).
    ``vae_tiling``: decode each frame in overlapping tiles (only pays above ~512 px).
    ``cfg_sequential``: run the unconditional and the conditional half of classifier-free guidance one
    after the other instead of as one batch of two.
    ``split_inference``: run the UNet's spatial layers ``temporal_split`` frames at a time and the motion
    modules ``spatial_split`` pixel sequences at a time (diffusers' ``SplitInferenceModule``).
    ``cpu_offload``: keep each model on the CPU until it runs (accelerate hooks; CUDA only).
    """

    decode_chunk: int | None = None
    vae_tiling: bool = False
    cfg_sequential: bool = False
    split_inference: bool = False
    spatial_split: int = 256
    temporal_split: int = 4
    cpu_offload: bool = False

    @classmethod
    def low_vram(cls) -> "MemoryOptions":
        """``--low-vram``: every exact option on; tiling stays off (it changes pixels)."""
        return cls(decode_chunk=1, cfg_sequential=True, split_inference=True, cpu_offload=True)

    def __post_init__(self) -> None:
        check(self.decode_chunk is None or self.decode_chunk >= 1, f"decode_chunk={self.decode_chunk} must be >= 1")
        check(self.spatial_split >= 1 and self.temporal_split >= 1, "split sizes must be >= 1")
