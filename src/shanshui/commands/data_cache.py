"""``shanshui data cache DIR``: precompute VAE latents and text embeddings of training clips."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--model", "model", default=None, help="Base model: a diffusers SD 1.5 folder or a single checkpoint file.")
@click.option("--preset", default=None, help="Use random in-code components instead of --model (tiny|small; tests).")
@click.option("--preset-seed", type=int, default=0, show_default=True, help="Seed of the --preset components.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Cache folder [default: DIRECTORY/.latent-cache].")
@click.option("--frames", type=click.IntRange(min=2), default=8, show_default=True, help="Frames per clip.")
@click.option("--stride", type=click.IntRange(min=1), default=4, show_default=True, help="Frame stride.")
@click.option("--size", type=click.IntRange(min=8), default=256, show_default=True, help="Clip size (square).")
@click.option("--clips-per-video", type=click.IntRange(min=1), default=1, show_default=True,
              help="Clips drawn from each video (epochs 0..N-1 of the training clip sampling).")
@click.option("--seed", type=int, default=0, show_default=True, help="Clip sampling seed (the training seed).")
@click.option("--device", default="cpu", show_default=True, help="torch device for the encoders, e.g. cuda:0.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
def cache(directory: Path, model: str | None, preset: str | None, preset_seed: int, output: Path | None, frames: int,
          stride: int, size: int, clips_per_video: int, seed: int, device: str, dtype: str) -> None:
    """Encode clips of the (video, caption) folder DIRECTORY into a latent cache for `shanshui train`.

    Train on it with data.cache=OUTPUT (instead of data.root) and the same frames/stride/size/model.
    """
    import torch

    from ..errors import check
    from ..training.cache import model_identity, write_latent_cache
    from ..training.config import ModelConfig

    check((model is None) != (preset is None), "give exactly one of --model PATH and --preset NAME")
    check(size % 8 == 0, f"--size={size} must be a multiple of 8")
    from ..video_io import check_output_location

    check_output_location(output or directory / ".latent-cache", folder=True)
    mcfg = ModelConfig(base_model=model, preset=preset, preset_seed=preset_seed)
    if model is not None:
        check(Path(model).expanduser().exists(), f"model '{model}' does not exist")
    from ..data.dataset import VideoTextDataset

    dataset = VideoTextDataset(directory, frames=frames, stride=stride, size=size, random_start=True, seed=seed)
    torch_dtype = getattr(torch, dtype)
    if preset is not None:
        from ..models.presets import make_components

        comps = make_components(preset, seed=preset_seed)
    else:
        from ..pipelines.loading import load_base_components

        comps = load_base_components(model, torch.float32)
    vae, text_encoder = comps["vae"].to(device, torch_dtype).eval(), comps["text_encoder"].to(device, torch_dtype).eval()
    out = write_latent_cache(dataset, vae, comps["tokenizer"], text_encoder, output or directory / ".latent-cache",
                             model_identity(mcfg), clips_per_video=clips_per_video)
    click.echo(f"wrote {clips_per_video * len(dataset)} clip(s) to {out}")
