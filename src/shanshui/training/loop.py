"""The training loop, on top of accelerate (one CPU, one GPU, many GPUs: same code).

Order of work, so that mistakes surface cheaply: (1) validate the config (done when it is loaded),
(2) open the dataset / cache and resolve ``resume``, (3) only then build the models.

Each optimizer step ``s`` draws its random numbers from a generator seeded by ``(seed, process, epoch,
batch)``, and each epoch's order and clip starts depend only on ``(seed, epoch)``, so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import ShanshuiError, check
from .checkpoint import latest_checkpoint, read_trainer_state, resolve_resume, save_checkpoint
from .config import TrainConfig
from .monitor import CSV_FIELDS, FrozenGuard, MetricLogger, TrainingDiverged, render_samples
from .step import training_step

logger = logging.getLogger("shanshui.training")

FROZEN_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class EpochShuffleSampler(Sampler):
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def step_generator(seed: int, process: int, epoch: int, batch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, process, epoch, batch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    final_dir: Path | None
    last_checkpoint: Path | None
    last_loss: float | None
    is_main_process: bool = True


# -------------------------------------------------------------- the parts `train` and `train-control` share

@dataclass
class Progress:
    """Where a run stands: optimizer steps done, and the epoch and batch it reads next (what a checkpoint
    keeps)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def make_accelerator(cfg):
    """The ``Accelerator`` for a run config (``cpu``, ``mixed_precision``,
    ``optim.gradient_accumulation_steps``).

    Without a GPU (or with ``cpu: true``) it runs on the CPU, as accelerate's multi-CPU (gloo) when launched
    with several processes. An option accelerate refuses becomes a :class:`ShanshuiError`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    try:
        use_cpu = cfg.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())
        return Accelerator(
            cpu=use_cpu,
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
            step_scheduler_with_optimizer=False,
            # some trainable weights get no gradient by construction (sparse-causal attn2's to_q/to_k, the
            # adapter when λ_con = 0), hence find_unused_parameters
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    except (ValueError, RuntimeError) as exc:
        raise ShanshuiError(f"cannot set up accelerate (mixed_precision='{cfg.mixed_precision}'): {exc}") from exc


def make_optimization(cfg, params, dataset, collate_fn):
    """AdamW over ``params``, the LR schedule, the epoch sampler and the data loader, from ``cfg.optim``,
    ``cfg.schedule``, ``cfg.seed`` and ``cfg.data.num_workers``. Returns ``(optimizer, lr_scheduler, sampler,
    loader)``, not yet prepared by accelerate."""
    from diffusers.optimization import get_scheduler

    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, eps=o.eps)
    lr_scheduler = get_scheduler(cfg.schedule.lr_scheduler, optimizer, num_warmup_steps=cfg.schedule.warmup_steps,
                                 num_training_steps=cfg.schedule.max_steps)
    sampler = EpochShuffleSampler(len(dataset), cfg.seed)
    loader = DataLoader(dataset, batch_size=o.batch_size, sampler=sampler, collate_fn=collate_fn,
                        num_workers=cfg.data.num_workers, drop_last=True)
    return optimizer, lr_scheduler, sampler, loader


def register_weight_hooks(accelerator, load_weights) -> None:
    """Keep the model out of accelerate's checkpoint files: the trained weights are written by
    :func:`~shanshui.training.checkpoint.save_checkpoint`'s ``write_weights`` in their own format, and read
    back on ``load_state`` by ``load_weights(folder)``."""

    def save_hook(hook_models, weights, output_dir):
        weights.clear()

    def load_hook(hook_models, input_dir):
        load_weights(input_dir)
        hook_models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def start_run(accelerator, cfg, out: Path, resume: Path | None, fields: tuple[str, ...] = CSV_FIELDS):
    """Load the ``resume`` checkpoint (if any) into accelerate, write ``out/config.yaml`` and open the metric
    log (main process only; ``None`` elsewhere), then wait for every process.

    Returns ``(progress, metrics)``; the log drops rows after the resumed step, which will be logged again.
    """
    main = accelerator.is_main_process
    progress = Progress()
    if resume is not None:
        state = read_trainer_state(resume)
        accelerator.load_state(str(resume))
        progress = Progress(state["step"], state["epoch"], state["batch_in_epoch"])
        if main:
            logger.info("resumed from '%s' at step %d", resume, progress.step)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    metrics = MetricLogger(out, resume_step=progress.step if resume is not None else None, fields=fields) \
        if main else None
    accelerator.wait_for_everyone()
    return progress, metrics


class RunCheckpoints:
    """Writes the checkpoints of a run: accelerate's state, ``write_weights(folder)``'s weights, the config
    and the position to resume from (an epoch read to its end resumes at the start of the next one)."""

    def __init__(self, accelerator, out: Path, cfg, guard: FrozenGuard, batches_per_epoch: int,
                 write_weights):
        self.accelerator, self.out, self.guard, self.write_weights = accelerator, out, guard, write_weights
        self.config_yaml, self.total_limit = cfg.to_yaml(), cfg.checkpoint.total_limit
        self.batches_per_epoch = batches_per_epoch

    def save(self, p: Progress) -> Path:
        """A checkpoint at ``p`` (after checking that the frozen weights did not move)."""
        self.guard.verify()
        done = p.batch_in_epoch >= self.batches_per_epoch
        ep, b = (p.epoch + 1, 0) if done else (p.epoch, p.batch_in_epoch)
        return save_checkpoint(self.accelerator, self.out, p.step,
                               {"step": p.step, "epoch": ep, "batch_in_epoch": b,
                                "processes": self.accelerator.num_processes, "time": time.time()},
                               self.config_yaml, self.total_limit, write_weights=self.write_weights)

    def final(self, last: Path | None, p: Progress) -> Path:
        """``last`` when it already holds step ``p.step``, else a new checkpoint at ``p``."""
        if last is None or read_trainer_state(last)["step"] != p.step:
            return self.save(p)
        return last


def epoch_batches(accelerator, loader, sampler, dataset, p: Progress, max_steps: int):
    """The micro-batches from position ``p`` on, epoch after epoch, while ``p.step < max_steps``.

    Each epoch's order is set from ``p.epoch`` before it starts, the ``p.batch_in_epoch`` batches already
    done are skipped, and at the end of an epoch ``p`` moves to the start of the next. The caller counts
    ``p.batch_in_epoch`` and ``p.step`` and stops iterating when it is done.
    """
    while p.step < max_steps:
        sampler.set_epoch(p.epoch)
        dataset.set_epoch(p.epoch)
        batches = accelerator.skip_first_batches(loader, p.batch_in_epoch) if p.batch_in_epoch else loader
        # accelerate's loader re-applies its own epoch counter when iterated; make it agree with ours
        for shard in {id(loader): loader, id(batches): batches}.values():
            if hasattr(shard, "set_epoch"):
                shard.set_epoch(p.epoch)
        sampler.set_epoch(p.epoch)
        yield from batches
        p.epoch += 1
        p.batch_in_epoch = 0


def any_process(accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any of them."""
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum").item() > 0)


class StepLosses:
    """The loss terms ``("loss", "loss_diff", third)`` of the micro-batches of one optimizer step: the NaN/inf
    stop, their sum and the samples they used, and the log row of the step."""

    def __init__(self, accelerator, out: Path, third: str):
        self.accelerator, self.out, self.third = accelerator, out, third
        self.sums = torch.zeros(3, device=accelerator.device)
        self.micro, self.seen, self.t0 = 0, [], time.time()

    def finite(self, terms: dict, step: int) -> torch.Tensor:
        """The three terms as a tensor; stops the run (on every process) when one is not finite anywhere."""
        values = torch.stack([terms["loss"].detach().float(), terms["loss_diff"].float(),
                              terms[self.third].float()])
        bad = self.accelerator.reduce((~torch.isfinite(values)).any().float(), "sum")
        if bad.item() > 0:
            raise TrainingDiverged(
                f"loss became {values[0].item()} at step {step + 1} (loss_diff="
                f"{values[1].item():.4g}, {self.third}={values[2].item():.4g}); training stopped. "
                f"Last good checkpoint: {latest_checkpoint(self.out) or 'none'} -- resume from it with a "
                f"lower optim.lr (or check the data)")
        return values

    def add(self, values: torch.Tensor, batch: dict) -> None:
        """Count one micro-batch: its terms and the dataset indices it held (from every process)."""
        self.sums += values
        self.micro += 1
        self.seen.append(self.accelerator.gather(batch["index"].to(self.accelerator.device)))

    def mean(self) -> torch.Tensor:
        """The step's mean terms over its micro-batches and every process."""
        return self.accelerator.reduce(self.sums / self.micro, "mean")

    def row(self, step: int, mean: torch.Tensor, lr: float, grad_norm) -> dict:
        """The metric-log row of the step (``seconds``: since the previous step ended)."""
        return {
            "step": step, "loss": float(mean[0]), "loss_diff": float(mean[1]),
            self.third: float(mean[2]), "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else "",
            "seconds": round(time.time() - self.t0, 3),
            "samples": " ".join(str(i) for i in torch.cat(self.seen).tolist()),
        }

    def reset(self) -> None:
        """Start the next optimizer step."""
        self.sums.zero_()
        self.micro, self.seen, self.t0 = 0, [], time.time()


def build_dataset(cfg: TrainConfig):
    """The training dataset and its collate function (raw videos or latent cache)."""
    d = cfg.data
    if d.cache is not None:
        from functools import partial

        from .cache import LatentCacheDataset, check_cache_matches, collate_cached

        dataset = LatentCacheDataset(d.cache)
        check_cache_matches(dataset.meta, d.cache, cfg)
        return dataset, partial(collate_cached, empty_text=dataset.empty_text)
    from ..data.dataset import VideoTextDataset, collate

    dataset = VideoTextDataset(d.root, frames=d.frames, stride=d.stride, size=d.size, random_start=d.random_start,
                               seed=cfg.seed)
    return dataset, collate


def _check_components(models, cfg: TrainConfig, dataset) -> None:
    vae_factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
    check(cfg.data.size % vae_factor == 0, f"data.size={cfg.data.size} must be a multiple of the VAE's factor {vae_factor}")
    if cfg.data.cache is not None:
        meta = dataset.meta
        check(meta["latent_channels"] == models.unet.config.in_channels,
              f"latent cache has {meta['latent_channels']} latent channels, the UNet takes {models.unet.config.in_channels}")
        check(meta["text_dim"] == models.text_encoder.config.hidden_size,
              f"latent cache has text embeddings of size {meta['text_dim']}, the UNet expects "
              f"{models.text_encoder.config.hidden_size}")


def train(cfg: TrainConfig, step_fn=None, progress: bool = True) -> TrainResult:
    """Run (or continue) the training described by ``cfg``. Returns where things were written.

    ``step_fn`` replaces :func:`~shanshui.training.step.training_step` (same signature; for tests).
    """
    step_fn = step_fn or training_step
    from tqdm.auto import tqdm

    out = Path(cfg.output_dir).expanduser()
    accelerator = make_accelerator(cfg)
    check(not (cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu"),
          "mixed_precision='fp16' needs a GPU (accelerate does not autocast to fp16 on a CPU); "
          "use bf16 or no there")
    main = accelerator.is_main_process
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # 1. Data and resume point: cheap checks before the models are built
    dataset, collate_fn = build_dataset(cfg)
    per_step = cfg.optim.batch_size * accelerator.num_processes
    check(len(dataset) >= per_step, f"the dataset has {len(dataset)} clip(s), fewer than one step's "
                                    f"{per_step} (batch_size x processes)")
    resume = resolve_resume(cfg.checkpoint.resume, out)
    if cfg.checkpoint.resume == "latest" and resume is None and main:
        logger.info("no checkpoint in '%s' yet: starting from scratch", out)

    # 2. Models (frozen parts in the mixed-precision dtype; trainable weights stay float32)
    from .components import build_models, load_trained_weights, save_trained_weights

    frozen_dtype = FROZEN_DTYPES[cfg.mixed_precision]
    models = build_models(cfg.model, seed=cfg.seed, device=accelerator.device, frozen_dtype=frozen_dtype)
    _check_components(models, cfg, dataset)
    params = models.trainable_parameters()

    # 3. Optimiser, LR schedule, data loader
    o = cfg.optim
    optimizer, lr_scheduler, sampler, loader = make_optimization(cfg, params, dataset, collate_fn)
    ema = None
    if cfg.ema.enabled:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema.decay)
        ema.to(accelerator.device)
    guard = FrozenGuard(models.frozen_parameters(), params, params)

    net, optimizer, loader, lr_scheduler = accelerator.prepare(models.net, optimizer, loader, lr_scheduler)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # Our weights go into checkpoints as a motion module + adapter file, not as a full UNet state dict.
    register_weight_hooks(accelerator, lambda folder: load_trained_weights(models, folder))
    pos, metrics = start_run(accelerator, cfg, out, resume)
    checkpoints = RunCheckpoints(accelerator, out, cfg, guard, len(loader),
                                 write_weights=lambda folder: save_trained_weights(models, folder))
    last_ckpt = resume

    def validate_now() -> None:
        if main and cfg.validation.prompts:
            if ema is not None:
                ema.store(params)
                ema.copy_to(params)
            try:
                render_samples(models, models.unet, cfg.validation, cfg.data, pos.step, out,
                               accelerator.device, None if frozen_dtype == torch.float32 else frozen_dtype)
            finally:
                if ema is not None:
                    ema.restore(params)
        accelerator.wait_for_everyone()

    # 4. Train
    max_steps = cfg.schedule.max_steps
    bar = tqdm(total=max_steps, initial=pos.step, desc="training", disable=not (progress and main))
    losses = StepLosses(accelerator, out, "loss_con")
    last_loss, checked, grad_norm = None, False, None
    t_train, out_of_time = time.time(), False

    def time_is_up() -> bool:
        """``schedule.max_minutes`` reached (decided together by every process)."""
        if not cfg.schedule.max_minutes:
            return False
        return any_process(accelerator, time.time() - t_train > cfg.schedule.max_minutes * 60)

    try:
        for batch in epoch_batches(accelerator, loader, sampler, dataset, pos, max_steps):
            with accelerator.accumulate(net):
                gen = step_generator(cfg.seed, accelerator.process_index, pos.epoch, pos.batch_in_epoch)
                terms = step_fn(batch, models, models.noise_scheduler, cfg, gen, net=net)
                values = losses.finite(terms, pos.step)
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and o.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(params, o.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.add(values, batch)
            pos.batch_in_epoch += 1
            if not accelerator.sync_gradients:
                continue

            # one optimizer step done
            lr_scheduler.step()
            pos.step += 1
            if ema is not None:
                ema.step(params)
            if not checked:  # the frozen weights really are frozen (checked again at every checkpoint)
                guard.verify()
                checked = True
            mean = losses.mean()
            last_loss = float(mean[0])
            if main and (pos.step % cfg.log_every == 0 or pos.step == max_steps or pos.step == 1):
                metrics.log(losses.row(pos.step, mean, lr_scheduler.get_last_lr()[0], grad_norm))
            bar.update()
            bar.set_postfix(loss=f"{last_loss:.4f}")
            losses.reset()
            if cfg.checkpoint.every and pos.step % cfg.checkpoint.every == 0:
                last_ckpt = checkpoints.save(pos)
            if cfg.validation.every and pos.step % cfg.validation.every == 0:
                validate_now()
            out_of_time = pos.step < max_steps and time_is_up()
            if out_of_time and main:
                logger.warning("schedule.max_minutes=%g reached: training ends at step %d of %d",
                               cfg.schedule.max_minutes, pos.step, max_steps)
            if pos.step >= max_steps or out_of_time:
                break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()

    # 5. Final checkpoint, weights (EMA weights when enabled) and samples
    last_ckpt = checkpoints.final(last_ckpt, pos)
    final_dir = out / "final"
    if main:
        save_trained_weights(models, final_dir)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
            save_trained_weights(models, final_dir / "ema")
            ema.restore(params)
    accelerator.wait_for_everyone()
    if cfg.validation.prompts and (not cfg.validation.every or pos.step % cfg.validation.every):
        validate_now()
    accelerator.end_training()
    return TrainResult(out, pos.step, final_dir, last_ckpt, last_loss, main)


def evaluate_loss(models, cfg: TrainConfig, batches: list[dict], seed: int = 1234) -> float:
    """Mean loss of fixed batches with fixed random draws (no gradient): a held-out measure of progress."""
    total = 0.0
    with torch.no_grad():
        for i, batch in enumerate(batches):
            terms = training_step(batch, models, models.noise_scheduler, cfg, step_generator(seed, 0, 0, i))
            total += float(terms["loss"])
    value = total / max(1, len(batches))
    check(math.isfinite(value), f"held-out loss is {value}")
    return value
