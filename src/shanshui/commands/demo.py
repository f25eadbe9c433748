"""``shanshui demo``: the main job — a moving ink-wash landscape from a text prompt, on a CPU."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import runtime_options

DEMO_PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."
DEMO_GUIDANCE = 8.0
DEMO_STEPS = 15          # the bundled model loses nothing against 25 steps at 15 (MODEL_CARD.md, Evaluation)

RANDOM_MODEL_BANNER = """\
+--------------------------------------------------------------------------------+
| NOTE: this package has no trained bundled model yet. The demo runs the full    |
| pipeline on a tiny RANDOMLY INITIALISED model, so the video shows noise, not a |
| landscape. Pass a real model to `shanshui generate --model ... --motion-module` |
+--------------------------------------------------------------------------------+"""


def _random_pipeline():
    from ..models.motion import build_video_unet
    from ..models.presets import make_components
    from ..pipelines.text_to_video import TextToVideoPipeline

    c = make_components("tiny", seed=0)
    unet = build_video_unet(c["unet"], c["motion_config"])
    return TextToVideoPipeline(c["vae"], c["text_encoder"], c["tokenizer"], unet, c["scheduler"])


@click.command()
@click.option("--prompt", default=DEMO_PROMPT, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
              help="Folder for demo.mp4, demo.gif and demo.png.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=DEMO_STEPS, show_default=True,
              help="DDIM steps (15: enough for the bundled model; `shanshui generate` defaults to 25).")
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--guidance", type=float, default=DEMO_GUIDANCE, show_default=True,
              help="Classifier-free guidance scale (8, as in `shanshui generate`).")
@runtime_options
def demo(prompt, out_dir, seed, steps, frames, guidance, runtime):
    """Generate the demo video (mp4, gif, png contact sheet) with the bundled model.

    The bundled model (MODEL_CARD.md) makes 128x128 clips; 16 frames, 15 DDIM steps and SOFP interpolation
    to 31 frames take about 20 seconds on two CPU cores.
    """
    from ..pipelines.loading import bundled_model_available
    from ..pipelines.text_to_video import load_pipeline, place
    from .generate import write_outputs

    from ..video_io import check_output_location

    check_output_location(out_dir, folder=True)
    start = time.perf_counter()
    if bundled_model_available():
        pipe, size = load_pipeline(**runtime.load_kwargs), None
    else:
        click.echo(RANDOM_MODEL_BANNER, err=True)
        pipe, size = place(_random_pipeline(), runtime.device, runtime.dtype, runtime.memory), 64
    result = pipe(prompt, num_frames=frames, height=size, width=size, num_inference_steps=steps, seed=seed,
                  guidance_scale=guidance, interpolate_times=2)
    paths = [out_dir / "demo.mp4", out_dir / "demo.gif", out_dir / "demo.png"]
    write_outputs(result.frames[0], paths, fps=16.0)
    click.echo(f"done in {time.perf_counter() - start:.1f} s — prompt: {prompt!r}")
