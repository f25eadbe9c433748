"""What a run reports while it trains: loss logs (CSV + TensorBoard), sample videos, the frozen-weight guard.

Only the main process writes; all of it lives under the run's ``output_dir``::

    logs/train.csv         step, loss, loss_diff, loss_con, lr, grad_norm, seconds, samples (clip indices)
    logs/tensorboard/      the same scalars as TensorBoard events
    samples/step-NNNNNN/   one GIF and one PNG contact sheet per (prompt, seed)
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import torch

from ..errors import ShanshuiError

logger = logging.getLogger("shanshui.training")

CSV_FIELDS = ("step", "loss", "loss_diff", "loss_con", "lr", "grad_norm", "seconds", "samples")


class MetricLogger:
    """Appends one row per logged step to ``logs/train.csv`` and mirrors the numbers to TensorBoard."""

    def __init__(self, output_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 fields: tuple[str, ...] = CSV_FIELDS):
        self.fields = tuple(fields)
        self.dir = Path(output_dir) / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "train.csv"
        if resume_step is not None and self.csv_path.exists():
            self._truncate_after(resume_step)
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._fh = open(self.csv_path, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._fh, fieldnames=self.fields)
        if new:
            self._csv.writeheader()
            self._fh.flush()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; tolerate a stripped environment
                logger.warning("tensorboard is not installed: logging to CSV only")

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
        with open(self.csv_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)

    def log(self, row: dict) -> None:
        self._csv.writerow({k: row.get(k, "") for k in self.fields})
        self._fh.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key in self.fields:
                if key in ("step", "seconds", "samples"):
                    continue
                value = row.get(key)
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}", value, step)
            self._tb.flush()

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_log(output_dir: str | Path) -> list[dict]:
    with open(Path(output_dir) / "logs" / "train.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _objective(models) -> dict:
    from ..schedulers import OBJECTIVE_KEYS

    cfg = models.noise_scheduler.config
    return {k: cfg[k] for k in OBJECTIVE_KEYS if k in cfg}


@torch.no_grad()
def render_samples(models, unet, vcfg, data_cfg, step: int, output_dir: str | Path, device,
                   autocast_dtype: torch.dtype | None = None) -> list[Path]:
    """Generate every (prompt, seed) of the validation config; write a GIF and a contact sheet each."""
    from ..pipelines.text_to_video import TextToVideoPipeline
    from ..schedulers import make_scheduler
    from ..video_io import write_video

    folder = Path(output_dir) / "samples" / f"step-{step:06d}"
    pipe = TextToVideoPipeline(vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer,
                               unet=unet, scheduler=make_scheduler(objective=_objective(models)))
    size = vcfg.size or data_cfg.size
    frames = vcfg.num_frames or data_cfg.frames
    device_type = torch.device(device).type
    was_training = unet.training
    unet.eval()
    written = []
    try:
        for i, prompt in enumerate(vcfg.prompts):
            slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "prompt"
            for seed in vcfg.seeds:
                with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    out = pipe(prompt, num_frames=frames, height=size, width=size, num_inference_steps=vcfg.steps,
                               guidance_scale=vcfg.guidance, seed=seed, output_type="np", progress=False)
                video = out.frames[0]                                                  # (f, H, W, 3) in [0, 1]
                stem = folder / f"{i:02d}-{slug}-seed{seed}"
                written.append(write_video(video, stem.with_suffix(".gif"), fps=vcfg.fps))
                written.append(write_video(video, stem.with_suffix(".png")))
    finally:
        unet.train(was_training)
    return written


class FrozenGuard:
    """Fingerprints every frozen parameter bit-exactly, and checks later that none has changed.

    The fingerprint of a tensor is a position-weighted sum of its raw bits (as integers), so any change of
    any element is caught (up to an astronomically unlikely collision) without keeping a second copy of a
    billion-parameter model in memory.
    """

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], trainable: list[torch.nn.Parameter],
                 optimizer_params: list[torch.nn.Parameter]):
        trainable_ids = {id(p) for p in trainable}
        wrong = [n for n, p in named_params if p.requires_grad]
        if wrong:
            raise RuntimeError(f"frozen parameter '{wrong[0]}' requires grad ({len(wrong)} in all)")
        leaked = [p for p in optimizer_params if id(p) not in trainable_ids]
        if leaked:
            raise RuntimeError(f"the optimizer holds {len(leaked)} parameter(s) that are not motion/adapter weights")
        self.named_params = named_params
        self.reference = [self.fingerprint(p) for _, p in named_params]

    @staticmethod
    @torch.no_grad()
    def fingerprint(t: torch.Tensor) -> tuple[int, int]:
        flat = t.detach().reshape(-1)
        int_dtype = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
        bits = flat.view(int_dtype).to(torch.int64)
        weights = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) % 65521 + 1
        return int(bits.sum()), int((bits * weights).sum())

    def verify(self) -> None:
        for (name, p), ref in zip(self.named_params, self.reference):
            if self.fingerprint(p) != ref:
                raise RuntimeError(f"frozen parameter '{name}' changed during training: this is a bug "
                                   "(only motion modules and the noise adapter may learn)")


class TrainingDiverged(ShanshuiError):
    """The loss became NaN or infinite; training stopped without saving."""
