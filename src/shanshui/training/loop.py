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
from .monitor import FrozenGuard, MetricLogger, TrainingDiverged, render_samples
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
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    out = Path(cfg.output_dir).expanduser()
    try:
        # Without a GPU, run as accelerate's multi-CPU (gloo) when launched with several processes.
        use_cpu = cfg.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())
        accelerator = Accelerator(
            cpu=use_cpu,
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
            step_scheduler_with_optimizer=False,
            # sparse-causal attn2's to_q/to_k get no gradient by construction, the adapter none when λ_con = 0
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    except (ValueError, RuntimeError) as exc:
        raise ShanshuiError(f"cannot set up accelerate (mixed_precision='{cfg.mixed_precision}'): {exc}") from exc
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
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, eps=o.eps)
    lr_scheduler = get_scheduler(cfg.schedule.lr_scheduler, optimizer, num_warmup_steps=cfg.schedule.warmup_steps,
                                 num_training_steps=cfg.schedule.max_steps)
    sampler = EpochShuffleSampler(len(dataset), cfg.seed)
    loader = DataLoader(dataset, batch_size=o.batch_size, sampler=sampler, collate_fn=collate_fn,
                        num_workers=cfg.data.num_workers, drop_last=True)
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
    def save_hook(hook_models, weights, output_dir):
        weights.clear()

    def load_hook(hook_models, input_dir):
        load_trained_weights(models, input_dir)
        hook_models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    global_step, epoch, batch_in_epoch = 0, 0, 0
    if resume is not None:
        state = read_trainer_state(resume)
        accelerator.load_state(str(resume))
        global_step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if main:
            logger.info("resumed from '%s' at step %d", resume, global_step)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    metrics = MetricLogger(out, resume_step=global_step if resume is not None else None) if main else None
    accelerator.wait_for_everyone()

    last_ckpt = resume
    config_yaml = cfg.to_yaml()
    batches_per_epoch = len(loader)

    def checkpoint_now() -> Path:
        guard.verify()
        ep, b = (epoch + 1, 0) if batch_in_epoch >= batches_per_epoch else (epoch, batch_in_epoch)
        return save_checkpoint(accelerator, out, global_step,
                               {"step": global_step, "epoch": ep, "batch_in_epoch": b,
                                "processes": accelerator.num_processes, "time": time.time()},
                               config_yaml, cfg.checkpoint.total_limit,
                               write_weights=lambda folder: save_trained_weights(models, folder))

    def validate_now() -> None:
        if main and cfg.validation.prompts:
            if ema is not None:
                ema.store(params)
                ema.copy_to(params)
            try:
                render_samples(models, models.unet, cfg.validation, cfg.data, global_step, out, accelerator.device,
                               None if frozen_dtype == torch.float32 else frozen_dtype)
            finally:
                if ema is not None:
                    ema.restore(params)
        accelerator.wait_for_everyone()

    # 4. Train
    max_steps = cfg.schedule.max_steps
    bar = tqdm(total=max_steps, initial=global_step, desc="training", disable=not (progress and main))
    sums = torch.zeros(3, device=accelerator.device)
    micro, seen, t0, last_loss, checked = 0, [], time.time(), None, False
    grad_norm = None
    t_train, out_of_time = time.time(), False

    def time_is_up() -> bool:
        """``schedule.max_minutes`` reached (decided together by every process)."""
        if not cfg.schedule.max_minutes:
            return False
        late = torch.tensor(float(time.time() - t_train > cfg.schedule.max_minutes * 60), device=accelerator.device)
        return bool(accelerator.reduce(late, "sum").item() > 0)

    try:
        while global_step < max_steps:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, batch_in_epoch) if batch_in_epoch else loader
            # accelerate's loader re-applies its own epoch counter when iterated; make it agree with ours
            for shard in {id(loader): loader, id(batches): batches}.values():
                if hasattr(shard, "set_epoch"):
                    shard.set_epoch(epoch)
            sampler.set_epoch(epoch)
            for batch in batches:
                with accelerator.accumulate(net):
                    gen = step_generator(cfg.seed, accelerator.process_index, epoch, batch_in_epoch)
                    terms = step_fn(batch, models, models.noise_scheduler, cfg, gen, net=net)
                    values = torch.stack([terms["loss"].detach().float(), terms["loss_diff"].float(),
                                          terms["loss_con"].float()])
                    bad = accelerator.reduce((~torch.isfinite(values)).any().float(), "sum")
                    if bad.item() > 0:
                        raise TrainingDiverged(
                            f"loss became {values[0].item()} at step {global_step + 1} (loss_diff="
                            f"{values[1].item():.4g}, loss_con={values[2].item():.4g}); training stopped. "
                            f"Last good checkpoint: {latest_checkpoint(out) or 'none'} -- resume from it with a "
                            f"lower optim.lr (or check the data)")
                    accelerator.backward(terms["loss"])
                    if accelerator.sync_gradients and o.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(params, o.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                sums += values
                micro += 1
                seen.append(accelerator.gather(batch["index"].to(accelerator.device)))
                batch_in_epoch += 1
                if not accelerator.sync_gradients:
                    continue

                # one optimizer step done
                lr_scheduler.step()
                global_step += 1
                if ema is not None:
                    ema.step(params)
                if not checked:  # the frozen weights really are frozen (checked again at every checkpoint)
                    guard.verify()
                    checked = True
                mean = accelerator.reduce(sums / micro, "mean")
                last_loss = float(mean[0])
                if main and (global_step % cfg.log_every == 0 or global_step == max_steps or global_step == 1):
                    metrics.log({
                        "step": global_step, "loss": float(mean[0]), "loss_diff": float(mean[1]),
                        "loss_con": float(mean[2]), "lr": lr_scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm) if grad_norm is not None else "",
                        "seconds": round(time.time() - t0, 3),
                        "samples": " ".join(str(i) for i in torch.cat(seen).tolist()),
                    })
                bar.update()
                bar.set_postfix(loss=f"{last_loss:.4f}")
                sums.zero_()
                micro, seen, t0 = 0, [], time.time()
                if cfg.checkpoint.every and global_step % cfg.checkpoint.every == 0:
                    last_ckpt = checkpoint_now()
                if cfg.validation.every and global_step % cfg.validation.every == 0:
                    validate_now()
                out_of_time = global_step < max_steps and time_is_up()
                if out_of_time and main:
                    logger.warning("schedule.max_minutes=%g reached: training ends at step %d of %d",
                                   cfg.schedule.max_minutes, global_step, max_steps)
                if global_step >= max_steps or out_of_time:
                    break
            else:
                epoch += 1
                batch_in_epoch = 0
                continue
            break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()

    # 5. Final checkpoint, weights (EMA weights when enabled) and samples
    if last_ckpt is None or read_trainer_state(last_ckpt)["step"] != global_step:
        last_ckpt = checkpoint_now()
    final_dir = out / "final"
    if main:
        save_trained_weights(models, final_dir)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
            save_trained_weights(models, final_dir / "ema")
            ema.restore(params)
    accelerator.wait_for_everyone()
    if cfg.validation.prompts and (not cfg.validation.every or global_step % cfg.validation.every):
        validate_now()
    accelerator.end_training()
    return TrainResult(out, global_step, final_dir, last_ckpt, last_loss, main)


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
