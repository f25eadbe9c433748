"""``shanshui animate``: painting + prompt -> video (training-free), with arrows, still mask and strength."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import check
from .generate import check_cheap, output_paths, parse_size, write_outputs
from .options import runtime_options

EXAMPLES = """\b
Examples:
  shanshui animate scroll.jpg "Mist drifting over the mountains" -o scroll.mp4
  shanshui animate river.png "Boat drifting on the river" --arrow 120,300,220,300 \\
      --arrow 400,80,440,60,0.5 --mask mountains.png --strength 1.5 --seed 3 -o river.gif
  shanshui animate falls.tif "Waterfall" --arrow arrows.json --proxy falls_proxy.png \\
      --policy pad --size 512x320 --frames 16 --steps 25 -o falls.webp
"""


def gather_arrows(values: tuple[str, ...]) -> list:
    """``--arrow`` values: ``x0,y0,x1,y1[,strength]`` or a ``.json`` file of arrows."""
    from ..control.arrows import load_arrows, parse_arrow

    out = []
    for v in values:
        out.extend(load_arrows(v) if v.lower().endswith(".json") else [parse_arrow(v)])
    return out


@click.command(epilog=EXAMPLES)
@click.argument("painting", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--arrow", "arrow", multiple=True,
              help="x0,y0,x1,y1[,strength] in the painting's pixels (repeatable), or a .json file of arrows.")
@click.option("--mask", type=click.Path(path_type=Path), default=None,
              help="Image whose white (or opaque) parts must stay still.")
@click.option("--strength", type=float, default=1.0, show_default=True, help="Global motion strength (0-10).")
@click.option("--proxy", type=click.Path(path_type=Path), default=None,
              help="Your own proxy image (default: img2img of the painting with the prompt).")
@click.option("--proxy-strength", type=float, default=0.5, show_default=True, help="img2img strength (0-1].")
@click.option("--no-proxy", is_flag=True, help="Ablation: no proxy image (VSDS on the painting only).")
@click.option("--no-vsds", is_flag=True, help="Ablation: no score distillation.")
@click.option("--linear", is_flag=True, help="Ablation: linear instead of slerp fusion.")
@click.option("--motion-guidance", type=float, default=0.5, show_default=True,
              help="Fraction of denoising steps that hold the arrows' region to the warped initial latent (0-1).")
@click.option("--policy", type=click.Choice(["fit", "crop", "pad"]), default="fit", show_default=True,
              help="fit: keep aspect, longer side = --size; crop/pad: exactly --size WxH.")
@click.option("--size", default=None, help="fit: N (longer side); crop/pad: WxH. Multiples of 8. "
                                           "Default: the model's native size.")
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=25, show_default=True,
              help="DDIM steps (VSDS uses those >= 0.6 T).")
@click.option("--guidance", type=float, default=8.0, show_default=True,
              help="Classifier-free guidance scale.")
@click.option("--negative", default=None, help="Negative prompt.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="SD 1.5 diffusers folder or single .safetensors/.ckpt. Default: the bundled model.")
@click.option("--motion-module", type=click.Path(path_type=Path), default=None, help="Motion module file.")
@click.option("--fps", type=float, default=8.0, show_default=True)
@runtime_options
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output file: .mp4, .gif, .webp or .png (contact sheet).")
def animate(painting, prompt, arrow, mask, strength, proxy, proxy_strength, no_proxy, no_vsds, linear,
            motion_guidance, policy, size, frames, steps, guidance, negative, seed, model, motion_module, fps,
            runtime, out):
    """Animate PAINTING as described by PROMPT (training-free)."""
    from ..image_intake import plan_geometry, prepare_painting

    # Everything that needs no weights is checked first.
    output_paths(out)
    check(fps > 0, f"--fps={fps} must be > 0")
    check_cheap(frames, steps, guidance)
    check(steps >= 2, f"--steps={steps} must be >= 2")
    check(0 <= strength <= 10, f"--strength={strength} must be in [0, 10]")
    check(0 < proxy_strength <= 1, f"--proxy-strength={proxy_strength} must be in (0, 1]")
    check(0 <= motion_guidance <= 1, f"--motion-guidance={motion_guidance} must be in [0, 1]")
    check(not (no_proxy and proxy is not None), "--proxy and --no-proxy contradict each other")
    check(prompt.strip() != "", "PROMPT must not be empty")
    for name, p in (("mask", mask), ("proxy", proxy)):
        check(p is None or p.is_file(), f"--{name} '{p}' does not exist")
    arrows = gather_arrows(arrow)
    long_side, exact = None, None
    if size is not None:
        if policy == "fit":
            check(size.isdigit(), f"--size '{size}' must be a single number N with --policy fit")
            long_side = int(size)
            plan_geometry(64, 64, "fit", long_side)  # validates the number
        else:
            exact = parse_size(size)
    work = prepare_painting(painting, policy, long_side or 512, exact)  # fails fast on a bad painting
    for note in work.notes:
        click.echo(f"note: {note}", err=True)

    from ..pipelines.painting_to_video import load_painting_pipeline

    pipe = load_painting_pipeline(model, motion_module, **runtime.load_kwargs)
    if long_side is None and exact is None:
        work = prepare_painting(painting, policy, pipe.native_size, None)
    result = pipe(work, prompt, negative_prompt=negative, num_frames=frames, num_inference_steps=steps,
                  guidance_scale=guidance, arrows=arrows, still_mask=mask, strength=strength,
                  motion_guidance=motion_guidance, proxy=proxy, proxy_strength=proxy_strength,
                  use_proxy=not no_proxy, use_vsds=not no_vsds, fusion="linear" if linear else "slerp",
                  seed=seed)
    write_outputs(result.frames[0], [out], fps=fps)
