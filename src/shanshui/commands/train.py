"""``shanshui train --config FILE [section.key=value ...]``: train a NADM motion module.

Runs as is on one device, or under ``accelerate launch`` on several processes/GPUs. Exit codes: 0 done,
2 bad config or data (reported before any model is loaded), 3 the loss diverged (NaN/inf; the last good
checkpoint is kept), 130 interrupted.
"""

from __future__ import annotations

import click

from . import options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Training config (YAML or JSON); see configs/ and docs/training.md.")
@options.resume_option
@options.output_dir_option
@options.dry_run_option
@options.no_progress_option
@click.option("--lora-rank", type=int, default=None, metavar="R",
              help="Train a rank-R motion LoRA on model.motion_module instead of the full module "
                   "(saved as motion_lora.safetensors, diffusers layout; use it with --lora).")
@click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto", show_default=True,
              help="Mixed precision (overrides the config's mixed_precision; auto = as in the config). Trainable "
                   "weights, optimiser state and losses stay fp32; frozen weights are stored in this dtype.")
@click.argument("overrides", nargs=-1)
@click.pass_context
def train(ctx, config_path: str, resume: str | None, output_dir: str | None, dry_run: bool, no_progress: bool,
          lora_rank: int | None, dtype: str, overrides: tuple[str, ...]) -> None:
    """Train a NADM motion module (+ noise adapter) on frozen Stable Diffusion components.

    OVERRIDES are dotted config keys, e.g. loss.lambda_con=0 model.sparse_causal=off optim.lr=1e-4.

    \b
    Examples:
      shanshui train --config configs/tiny_cpu.yaml
      shanshui train --config configs/nadm_sd15_256.yaml model.base_model=~/sd15 data.root=~/lpv
      shanshui train --config configs/nadm_sd15_256.yaml --resume latest
      shanshui train --config configs/nadm_sd15_256.yaml --lora-rank 16 model.motion_module=mm_sd_v15_v2.ckpt
      accelerate launch --multi_gpu --num_processes 2 -m shanshui.cli train --config configs/tiny_cpu.yaml
    """
    import logging

    from ..training.config import load_config

    extra = options.training_overrides(overrides, output_dir, resume)
    if lora_rank is not None:
        extra.append(f"model.lora_rank={lora_rank}")
    if dtype != "auto":
        extra.append(f"mixed_precision={ {'fp32': 'no'}.get(dtype, dtype)}")
    cfg = options.load_training_config(load_config, config_path, extra)
    if dry_run:
        from ..training.loop import build_dataset

        dataset, _ = build_dataset(cfg)
        options.echo_dry_run(cfg, len(dataset))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..training.loop import train as run

    result = options.run_training(ctx, run, cfg, no_progress)
    if result.is_main_process:
        what = "motion LoRA" if cfg.model.lora_rank else "motion module"
        click.echo(f"done: {result.step} steps; {what} in {result.final_dir}; "
                   f"last checkpoint {result.last_checkpoint}")
