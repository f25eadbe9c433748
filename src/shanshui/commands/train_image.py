"""``shanshui train-image --config FILE [section.key=value ...]``: stage 1 of the bundled model.

Trains an SD-1.5-format image model (VAE, CLIP text encoder with a locally learned BPE tokenizer, UNet) from
scratch on frames of a procedural dataset, on the CPU. The result, ``OUTPUT/model/``, is the base model of
stage 2 (``shanshui train`` with ``model.base_model=OUTPUT/model``). See MODEL_CARD.md.
"""

from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Stage-1 config (YAML or JSON), e.g. configs/bundled_stage1.yaml.")
@click.option("--resume", default=None, metavar="latest|PATH",
              help="Continue from the newest checkpoint of output_dir, or from a checkpoint folder.")
@click.option("--dry-run", is_flag=True, help="Validate the config, print it resolved, stop.")
@click.argument("overrides", nargs=-1)
def train_image(config_path: str, resume: str | None, dry_run: bool, overrides: tuple[str, ...]) -> None:
    """Train the image model (VAE, text encoder, UNet) of the bundled model from scratch.

    OVERRIDES are dotted config keys, e.g. vae.steps=300 unet.batch_size=16 output_dir=runs/s1.

    \b
    Examples:
      shanshui train-image --config configs/bundled_stage1.yaml
      shanshui train-image --config configs/bundled_stage1.yaml --resume latest
    """
    import logging

    from ..training.image_stage import load_image_config, train_image_model

    extra = list(overrides)
    if resume is not None:
        extra.append(f"checkpoint.resume={resume}")
    cfg = load_image_config(config_path, extra)
    from ..video_io import check_output_location

    check_output_location(cfg.output_dir, folder=True)
    if dry_run:
        click.echo(cfg.to_yaml().rstrip())
        click.echo("# config OK")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = train_image_model(cfg)
    click.echo(f"image model written to {folder}")
