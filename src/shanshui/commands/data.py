"""``shanshui data``: dataset tools. Each subcommand lives in its own module."""

from __future__ import annotations

import click

from ..cli import LazyGroup

DATA_COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("shanshui.commands.data_check:check", "Validate a (video, caption) folder and print its statistics."),
    "cache": ("shanshui.commands.data_cache:cache", "Precompute VAE latents + text embeddings for training."),
    "synth": ("shanshui.commands.data_synth:synth", "Write a procedural ink-wash landscape video dataset."),
}


@click.group(cls=LazyGroup, lazy_commands=DATA_COMMANDS)
def data() -> None:
    """Dataset tools: synthesise procedural ink-wash clips, check a (video, caption) folder, cache latents."""
