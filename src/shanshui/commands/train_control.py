"""``shanshui train-control --config FILE [section.key=value ...]``: train the image-to-video control model.

Exit codes as ``shanshui train``: 0 done (also when ``max_minutes`` stopped it; resume with
``--resume latest``), 2 bad config or data (reported before any model is loaded), 3 the loss diverged
(NaN/inf; the last good checkpoint is kept).
"""

from __future__ import annotations

import click

from . import options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Control training config (YAML or JSON), e.g. configs/bundled_control.yaml.")
@options.resume_option
@options.output_dir_option
@click.option("--max-minutes", type=float, default=None,
              help="Stop cleanly (checkpoint + final weights) after this many minutes of training.")
@options.dry_run_option
@options.no_progress_option
@click.argument("overrides", nargs=-1)
@click.pass_context
def train_control(ctx, config_path, resume, output_dir, max_minutes, dry_run, no_progress, overrides) -> None:
    """Train the image-to-video model's control parts: first-frame conditioning, motion-field encoder,
    motion-strength embedding, refinement network T (and its own motion modules), on clips with exact flow.

    OVERRIDES are dotted config keys, e.g. optim.lr=1e-4 data.limit=64 model.first_frame=none.

    \b
    Examples:
      shanshui train-control --config configs/bundled_control.yaml
      shanshui train-control --config configs/bundled_control.yaml --max-minutes 3 optim.batch_size=8
      shanshui train-control --config configs/tiny_control_cpu.yaml --resume latest
    """
    import logging

    from ..training.control_config import load_control_config

    extra = options.training_overrides(overrides, output_dir, resume)
    if max_minutes is not None:
        extra.append(f"max_minutes={max_minutes}")
    cfg = options.load_training_config(load_control_config, config_path, extra)
    if dry_run:
        from ..data.control_dataset import ControlClipDataset

        d = cfg.data
        dataset = ControlClipDataset(d.root, frames=d.frames, size=d.size, seed=cfg.seed, limit=d.limit)
        options.echo_dry_run(cfg, len(dataset))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..training.control_loop import train_control as run

    result = options.run_training(ctx, run, cfg, no_progress)
    if result.is_main_process:
        click.echo(f"done: {result.step} steps; control model in {result.final_dir}; "
                   f"last checkpoint {result.last_checkpoint}")
