"""``shanshui animate``: painting + prompt -> video, with arrows or a dense flow, still mask and strength.

Control: ``trained`` (the model's image-to-video module: conditioned on the painting, the field refined by
the network T, the strength embedded), ``training-free`` (the text-to-video model steered through
cinemagraph latents), ``none`` (the image-to-video module without a field). Default: ``trained`` when the
model has the module, else ``training-free`` (with a one-line note).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import check
from .generate import (check_cheap, check_keyframes, check_model_options, keyframe_option, model_options,
                       output_paths, parse_size, show_notes, write_outputs)
from .options import runtime_options

EXAMPLES = """\b
Examples:
  shanshui animate scroll.jpg "Mist drifting over the mountains" -o scroll.mp4
  shanshui animate river.png "Boat drifting on the river" --arrow 120,300,220,300 \\
      --arrow 400,80,440,60,0.5 --mask mountains.png --strength 1.5 --seed 3 -o river.gif
  shanshui animate falls.tif "Waterfall" --arrow arrows.json --proxy falls_proxy.png \\
      --policy pad --size 512x320 --frames 16 --steps 25 -o falls.webp
  shanshui animate lake.png "Boat on the lake" --flow lake_flow.npy --control trained -o lake.mp4
"""

MAX_STRENGTH_PX = 32.0
MASK_ASPECT_TOLERANCE = 0.02


def check_mask_size(mask, width: int, height: int) -> str | None:
    """A mask of the painting's size passes; one of the same aspect ratio (within 2 %) is resized, with the
    note returned; any other size is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(mask) as im:
            mw, mh = im.size
    except (UnidentifiedImageError, OSError) as exc:
        check(False, f"--mask '{mask}' is not a readable image: {exc}")
    if (mw, mh) == (width, height):
        return None
    check(abs(mw / mh - width / height) <= MASK_ASPECT_TOLERANCE * (width / height),
          f"--mask is {mw}x{mh} but the painting is {width}x{height}: give a mask of the painting's size "
          f"(or of the same aspect ratio, which is resized)")
    return f"the mask ({mw}x{mh}) is resized to the painting's {width}x{height}"


def load_flow(path, width: int, height: int, frames: int):
    """A dense field from ``.npy``: ``(H, W, 2)`` or ``(frames − 1, H, W, 2)`` px/frame, (dx, dy)."""
    import numpy as np

    check(str(path).lower().endswith(".npy"), f"--flow '{path}' must be a .npy file")
    check(path.is_file(), f"--flow '{path}' does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        check(False, f"--flow '{path}' is not a readable .npy array: {exc}")
    shapes = f"({height}, {width}, 2) or ({frames - 1}, {height}, {width}, 2)"
    check(arr.shape in ((height, width, 2), (frames - 1, height, width, 2)),
          f"--flow has shape {tuple(arr.shape)}; expected {shapes} (px/frame, (dx, dy), the painting's size)")
    check(np.issubdtype(arr.dtype, np.number), f"--flow holds {arr.dtype} values, not numbers")
    arr = arr.astype(np.float32)
    check(bool(np.isfinite(arr).all()), f"--flow '{path}' holds non-finite values")
    return arr


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
@click.option("--flow", "flow_path", type=click.Path(path_type=Path), default=None,
              help="Dense motion field .npy, (H, W, 2) or (frames-1, H, W, 2) px/frame in the painting's pixels "
                   "(instead of arrows).")
@click.option("--control", type=click.Choice(["trained", "training-free", "none"]), default=None,
              help="trained: the image-to-video module; training-free: the T2V model steered by the field; "
                   "none: the I2V module without a field. [default: trained if the model has the module]")
@click.option("--strength", type=float, default=None,
              help="Motion speed in px/frame at the output size: the field is scaled so that its mean speed "
                   "where it moves is this (with no field: the frame's mean motion). Default: as drawn.")
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
@model_options
@keyframe_option
def animate(painting, prompt, arrow, mask, flow_path, control, strength, proxy, proxy_strength, no_proxy, no_vsds,
            linear, motion_guidance, policy, size, frames, steps, guidance, negative, seed, model, motion_module,
            fps, runtime, out, vae, ema, loras, keyframes, keyframe_mode, keyframe_guidance):
    """Animate PAINTING as described by PROMPT."""
    from ..image_intake import plan_geometry, prepare_painting

    # Everything that needs no weights is checked first.
    output_paths(out)
    check(fps > 0, f"--fps={fps} must be > 0")
    check_cheap(frames, steps, guidance)
    check(steps >= 2, f"--steps={steps} must be >= 2")
    check(strength is None or 0 <= strength <= MAX_STRENGTH_PX,
          f"--strength={strength} px/frame must be in [0, {MAX_STRENGTH_PX:g}]")
    check(0 < proxy_strength <= 1, f"--proxy-strength={proxy_strength} must be in (0, 1]")
    check(0 <= motion_guidance <= 1, f"--motion-guidance={motion_guidance} must be in [0, 1]")
    check(not (no_proxy and proxy is not None), "--proxy and --no-proxy contradict each other")
    check(prompt.strip() != "", "PROMPT must not be empty")
    for name, p in (("mask", mask), ("proxy", proxy)):
        check(p is None or p.is_file(), f"--{name} '{p}' does not exist")
    arrows = gather_arrows(arrow)
    lora_specs = check_model_options(loras, vae)
    keys = check_keyframes(keyframes, frames)
    check(0 <= keyframe_guidance <= 1, f"--keyframe-guidance={keyframe_guidance} must be in [0, 1]")
    check(not keys or keys[0].index != 0, "--keyframe 0 is the painting itself; pin frames 1.."
                                          f"{frames - 1} (or -1 for the last)")
    long_side, exact = None, None
    if size is not None:
        if policy == "fit":
            check(size.isdigit(), f"--size '{size}' must be a single number N with --policy fit")
            long_side = int(size)
            plan_geometry(64, 64, "fit", long_side)  # validates the number
        else:
            exact = parse_size(size)
    check(not (arrows and flow_path is not None), "--arrow and --flow contradict each other: give one")
    check(not (control == "none" and (arrows or flow_path is not None)),
          "--control none animates without a field: drop --arrow/--flow (or use trained/training-free)")
    from ..control.arrows import check_arrows_inside
    from ..pipelines.painting_to_video import check_animatable

    work = prepare_painting(painting, policy, long_side or 512, exact)  # fails fast on a bad painting
    check_animatable(work)
    ow, oh = work.geometry.original
    check_arrows_inside(arrows, ow, oh, "--arrow")
    for a in arrows:
        check((a.x1, a.y1) != (a.x0, a.y0) and a.strength > 0,
              f"--arrow ({a.x0:g},{a.y0:g})->({a.x1:g},{a.y1:g}) has zero length (or strength 0): it asks for "
              f"no motion; drop it, or use --mask to keep a region still")
    if strength is not None and (long_side is not None or exact is not None):   # canvas known: check now
        limit = min(work.size) / 4
        check(strength <= limit, f"strength={strength:g} px/frame is absurd for a {work.size[0]}x{work.size[1]} "
                                 f"canvas (at most {limit:g}: a quarter of its shorter side)")
    flow = load_flow(flow_path, ow, oh, frames) if flow_path is not None else None
    notes = list(work.notes)
    if mask is not None:
        note = check_mask_size(mask, ow, oh)
        if note:
            notes.append(note)
    for note in notes:
        click.echo(f"note: {note}", err=True)

    from ..pipelines.painting_to_video import load_painting_pipeline

    pipe = load_painting_pipeline(model, motion_module, ema=ema, vae=vae, loras=lora_specs, **runtime.load_kwargs)
    show_notes(pipe)
    if control is None:
        control = "trained" if pipe.i2v is not None else "training-free"
        if pipe.i2v is None:
            click.echo("note: this model has no image-to-video module (i2v/); using training-free control", err=True)
    if long_side is None and exact is None:
        work = prepare_painting(painting, policy, pipe.native_size, None)
    result = pipe(work, prompt, negative_prompt=negative, num_frames=frames, num_inference_steps=steps,
                  guidance_scale=guidance, arrows=arrows, still_mask=mask, speed=strength, flow=flow,
                  control=control, motion_guidance=motion_guidance, proxy=proxy, proxy_strength=proxy_strength,
                  use_proxy=not no_proxy, use_vsds=not no_vsds, fusion="linear" if linear else "slerp",
                  seed=seed, keyframes=keys, keyframe_mode=keyframe_mode,
                  keyframe_guidance=keyframe_guidance)
    write_outputs(result.frames[0], [out], fps=fps)
