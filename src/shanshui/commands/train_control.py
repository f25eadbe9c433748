"""``shanshui train-control --config FILE [section.key=value ...]``: train the image-to-video control model.

Exit codes as ``shanshui train``: 0 done (also when ``max_minutes`` stopped it; resume with
``--resume latest``), 2 bad config or data (reported before any model is loaded), 3 the loss diverged
(NaN/inf; the last good checkpoint is kept).
"""

from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Control training config (YAML or JSON), e.g. configs/bundled_control.yaml.")
@click.option("--resume", default=None, metavar="latest|PATH",
              help="Continue from the newest checkpoint of output_dir, or from a checkpoint folder.")
@click.option("--output-dir", default=None, help="Override output_dir of the config.")
@click.option("--max-minutes", type=float, default=None,
              help="Stop cleanly (checkpoint + final weights) after this many minutes of training.")
@click.option("--dry-run", is_flag=True, help="Validate the config and the data, print the resolved config, stop.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to OUTPUT/logs).")
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
    from ..training.monitor import TrainingDiverged

    extra = list(overrides)
    if output_dir is not None:
        extra.append(f"output_dir={output_dir}")
    if resume is not None:
        extra.append(f"checkpoint.resume={resume}")
    if max_minutes is not None:
        extra.append(f"max_minutes={max_minutes}")
    cfg = load_control_config(config_path, extra)
    from ..video_io import check_output_location

    check_output_location(cfg.output_dir, folder=True)
    if dry_run:
        from ..data.control_dataset import ControlClipDataset

        d = cfg.data
        dataset = ControlClipDataset(d.root, frames=d.frames, size=d.size, seed=cfg.seed, limit=d.limit)
        click.echo(cfg.to_yaml().rstrip())
        click.echo(f"# config OK; {len(dataset)} training clip(s)")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..training.control_loop import train_control as run

    try:
        result = run(cfg, progress=not no_progress)
    except TrainingDiverged as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(3)
    if result.is_main_process:
        click.echo(f"done: {result.step} steps; control model in {result.final_dir}; "
                   f"last checkpoint {result.last_checkpoint}")
