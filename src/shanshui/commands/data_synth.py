"""``shanshui data synth``: write a procedural ink-wash landscape video dataset."""

from __future__ import annotations

import click

FORMAT_HELP = (
    "How clips are stored. 'mp4': H.264 files, small, lossy (what real datasets look like). "
    "'frames': a folder of lossless PNG frames per clip, larger on disk but free of compression "
    "artefacts - the better choice for training tiny models."
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--n", "n", type=int, default=1000, show_default=True, help="Number of clips.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Dataset folder (created; an existing one with the same settings is resumed or extended).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Master seed; clip i uses a seed derived from it.")
@click.option("--size", type=int, default=128, show_default=True,
              help="Frame height = width, a multiple of 8 in 32..1024.")
@click.option("--frames", type=int, default=16, show_default=True, help="Frames per clip (>= 2), at 8 fps.")
@click.option("--format", "fmt", type=click.Choice(["mp4", "frames"]), default="mp4", show_default=True,
              help=FORMAT_HELP)
@click.option("--workers", type=int, default=None, help="Parallel processes [default: number of CPUs].")
def synth(n: int, out: str, seed: int, size: int, frames: int, fmt: str, workers: int | None) -> None:
    """Write a procedural ink-wash landscape video dataset.

    Each clip is a seeded scene (layered mountains in graded ink, mist, sun or moon, lake, boat, birds,
    pines, waterfall, rain, camera pan) with an LPV-HD-style caption, attribute labels and exact optical
    flow. The trainer reads OUT/metadata.jsonl directly; see docs/dataset-format.md for the layout.

    \b
    Example:
      shanshui data synth --n 2000 --out data/ink --format frames --seed 0
    """
    from ..data.procedural_dataset import check_settings, write_dataset

    from ..video_io import check_output_location

    check_settings(n, seed, size, frames, fmt)
    check_output_location(out, folder=True)
    metadata = write_dataset(out, n=n, seed=seed, size=size, frames=frames, fmt=fmt, workers=workers)
    click.echo(f"wrote {n} clips: {metadata}")
