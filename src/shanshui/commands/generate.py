"""``shanshui generate``: text -> landscape-painting video."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ShanshuiError, check
from ..video_io import VIDEO_SUFFIXES
from .options import runtime_options

EXAMPLES = """\b
Examples:
  shanshui generate "Mountains, dense fog, red sun, boat on the lake." -o mist.mp4
  shanshui generate "Pines by a waterfall, light fog" --frames 16 --size 256 --seed 3 -o falls.gif
  shanshui generate "Boat on the lake" --model ~/models/sd15 --motion-module nadm.safetensors \\
      --size 512x320 --steps 25 --guidance 8 --sparse-causal temporal -o boat.webp
  shanshui generate "Misty peaks" --model ~/sd15 --motion-module mm.ckpt --size 512 --device cuda --low-vram -o peaks.mp4
  shanshui generate "Slow scroll along misty peaks" --frames 128 --gamma 0.8 -o scroll.mp4
  shanshui generate --prompts prompts.txt --seeds 0-3 --out-dir out/eval_videos
  accelerate launch --num_processes 4 -m shanshui.cli generate --prompts prompts.txt --out-dir out/eval_videos \
      --device cuda
  shanshui generate "Ink-wash peaks" --model dreamshaper.safetensors --lora moxin.safetensors:0.8 \\
      --lora zoom_in.ckpt --motion-module mm_sd_v15_v2.ckpt -o peaks.mp4
"""


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"512x320"`` -> (width 512, height 320)."""
    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ShanshuiError(f"--size '{text}' must be N or WxH with integers, e.g. 256 or 512x320") from None
    check(len(nums) in (1, 2), f"--size '{text}' must be N or WxH")
    w, h = (nums[0], nums[0]) if len(nums) == 1 else nums
    for name, v in (("width", w), ("height", h)):
        check(v > 0 and v % 8 == 0, f"--size {name}={v} must be a positive multiple of 8")
    return w, h


def output_paths(out: Path) -> None:
    from ..video_io import check_output_location

    check(out.suffix.lower() in VIDEO_SUFFIXES,
          f"output '{out}' must end in one of {', '.join(VIDEO_SUFFIXES)}")
    check_output_location(out)


def check_cheap(frames: int, steps: int, guidance: float, gamma: float = 0.8, omega: float = 0.2,
                overlap: int = 4) -> None:
    """Validate what needs no model, before any weights are loaded."""
    check(frames >= 2, f"frames={frames} must be >= 2")
    check(steps >= 1, f"steps={steps} must be >= 1")
    check(guidance >= 0 and guidance == guidance, f"guidance={guidance} must be a finite number >= 0")
    check(0.0 <= gamma <= 1.0, f"--gamma={gamma} must be in [0, 1]")
    check(omega >= 0 and omega < float("inf"), f"--omega={omega} must be a finite number >= 0")
    check(overlap >= 0, f"--overlap={overlap} must be >= 0 (and below the clip length)")


def model_options(f):
    """``--vae``, ``--ema``, ``--lora`` (personalised models), shared by generate and animate."""
    f = click.option("--lora", "loras", multiple=True, metavar="PATH[:SCALE]",
                     help="LoRA file (kohya/A1111, diffusers/peft, or AnimateDiff motion LoRA), scale default 1; "
                          "repeatable.")(f)
    f = click.option("--ema", is_flag=True, help="Use the EMA weights of a single-file checkpoint.")(f)
    f = click.option("--vae", type=click.Path(path_type=Path), default=None,
                     help="VAE folder or .safetensors/.ckpt replacing (or supplying) the model's VAE.")(f)
    return f


def keyframe_option(f):
    from ..control.keyframes import DEFAULT_GUIDANCE

    f = click.option("--keyframe-guidance", type=float, default=DEFAULT_GUIDANCE, show_default=True,
                     help="Pull the frames near a keyframe towards it, strongly in the first steps and not at "
                          "all in the last (0 = off, 1 = strongest).")(f)
    f = click.option("--keyframe-mode", type=click.Choice(["noised", "clean"]), default="noised",
                     show_default=True, help="How keyframes are pinned: noised to each step (training-free), "
                                             "or clean (motion modules trained with loss.lambda_key).")(f)
    return click.option("--keyframe", "keyframes", multiple=True, metavar="INDEX:IMAGE",
                        help="Pin frame INDEX (0-based, -1 = last) to IMAGE; repeatable.")(f)


def check_keyframes(keyframes, frames: int) -> list:
    from ..control.keyframes import parse_keyframe, resolve_indices

    return resolve_indices([parse_keyframe(k) for k in keyframes], frames)


def check_model_options(loras, vae) -> list:
    """Validate --lora/--vae before any weights are loaded; returns the parsed LoRA specs."""
    from ..models.lora import parse_lora_spec

    check(vae is None or vae.exists(), f"--vae '{vae}' does not exist")
    return [parse_lora_spec(x) for x in loras]


def show_notes(pipe) -> None:
    for note in getattr(pipe, "load_notes", []):
        click.echo(f"note: {note}", err=True)


def write_outputs(frames, paths: list[Path], fps: float) -> None:
    from ..video_io import write_video

    for path in paths:
        write_video(frames, path, fps=fps)
        click.echo(f"wrote {path}")


@click.command(epilog=EXAMPLES)
@click.argument("prompt", required=False)
@click.option("--negative", default=None, help="Negative prompt (what to avoid).")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="SD 1.5 diffusers folder or single .safetensors/.ckpt. Default: the bundled model.")
@click.option("--motion-module", type=click.Path(path_type=Path), default=None,
              help="Motion module: NADM .safetensors, AnimateDiff .ckpt/.safetensors, or diffusers folder.")
@click.option("--frames", type=int, default=16, show_default=True, help="Frames before interpolation.")
@click.option("--size", default=None, help="N or WxH, multiples of 8. Default: the model's native size.")
@click.option("--steps", type=int, default=25, show_default=True, help="DDIM steps.")
@click.option("--guidance", type=float, default=8.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sparse-causal", type=click.Choice(["temporal", "spatial", "off"]), default=None,
              help="Override the module's second temporal attention (default: as trained).")
@click.option("--interpolate/--no-interpolate", default=True, show_default=True,
              help="SOFP frame interpolation after decoding (N -> 2N-1 per doubling).")
@click.option("--interp-times", type=click.Choice(["2", "4", "8"]), default="2", show_default=True)
@click.option("--gamma", type=float, default=0.8, show_default=True,
              help="Long videos: share of the DDIM steps later clips take from clip 1 (0 = independent, 1 = copies).")
@click.option("--omega", type=float, default=0.2, show_default=True,
              help="Long videos: randomness added to the shared noise prior.")
@click.option("--overlap", type=int, default=4, show_default=True,
              help="Long videos: frames neighbouring clips share (cross-faded while denoising).")
@click.option("--fusion", type=click.Choice(["crossfade", "ccdm"]), default="crossfade", show_default=True,
              help="Long videos: how frames shared by neighbouring clips are merged (linear ramps, or CCDM's "
                   "equal-weight multi-frame fusion).")
@click.option("--fps", type=float, default=8.0, show_default=True, help="Frame rate of the written video.")
@runtime_options
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Output file: .mp4, .gif, .webp or .png (contact sheet).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None,
              help="Batch mode: a text file, one prompt per line; one video per (prompt, seed) in --out-dir.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, help="Batch mode: output folder.")
@click.option("--seeds", default="0", show_default=True, help="Batch mode: seeds, e.g. 0,1,2 or 0-99.")
@click.option("--format", "fmt", type=click.Choice(["mp4", "gif", "webp"]), default="mp4", show_default=True,
              help="Batch mode: video file format.")
@model_options
@keyframe_option
@click.pass_context
def generate(ctx, prompt, negative, model, motion_module, frames, size, steps, guidance, seed, sparse_causal,
             interpolate, interp_times, gamma, omega, overlap, fusion, fps, runtime, out, prompts_file, out_dir, seeds, fmt,
             vae, ema, loras, keyframes, keyframe_mode, keyframe_guidance):
    """Generate a landscape-painting video from PROMPT.

    More frames than the motion module's window (e.g. --frames 128) switch to the long-video path: phased
    inference with a shared noise reschedule, clips cross-faded while denoising, frames streamed to disk.

    Batch mode (--prompts FILE --out-dir DIR): one video per (prompt, seed), resumable, and shared out across
    processes under `accelerate launch`; no interpolation unless --interpolate is given. See docs/evaluation.md.
    """
    if prompts_file is not None or out_dir is not None:
        check(prompts_file is not None and out_dir is not None, "batch mode needs both --prompts FILE and --out-dir DIR")
        check(prompt is None and out is None, "give either PROMPT with -o, or --prompts with --out-dir, not both")
        from click.core import ParameterSource

        from .generate_batch import run_batch_command

        explicit = ctx.get_parameter_source("interpolate") == ParameterSource.COMMANDLINE
        width, height = parse_size(size) if size else (None, None)
        check(fps > 0, f"--fps={fps} must be > 0")
        check_cheap(frames, steps, guidance, gamma, omega, overlap)
        lora_specs = check_model_options(loras, vae)
        keys = check_keyframes(keyframes, frames)
        check(0 <= keyframe_guidance <= 1, f"--keyframe-guidance={keyframe_guidance} must be in [0, 1]")
        run_batch_command(prompts_file, out_dir, seeds, fmt, negative=negative, model=model,
                          motion_module=motion_module, frames=frames, width=width, height=height, steps=steps,
                          guidance=guidance, sparse_causal=sparse_causal,
                          interpolate_times=int(interp_times) if (interpolate and explicit) else 1,
                          gamma=gamma, omega=omega, overlap=overlap, fps=fps, device=str(runtime.device),
                          loras=lora_specs, vae=vae, ema=ema, keyframes=keys, keyframe_mode=keyframe_mode,
                          keyframe_guidance=keyframe_guidance, fusion=fusion)
        return
    check(prompt is not None, "missing PROMPT (or use --prompts FILE --out-dir DIR for a batch)")
    check(out is not None, "missing -o/--out FILE")
    output_paths(out)
    width, height = parse_size(size) if size else (None, None)
    check(fps > 0, f"--fps={fps} must be > 0")
    check_cheap(frames, steps, guidance, gamma, omega, overlap)
    lora_specs = check_model_options(loras, vae)
    keys = check_keyframes(keyframes, frames)
    check(0 <= keyframe_guidance <= 1, f"--keyframe-guidance={keyframe_guidance} must be in [0, 1]")
    from ..pipelines.text_to_video import load_pipeline

    pipe = load_pipeline(model, motion_module, sparse_causal=sparse_causal, ema=ema, vae=vae, loras=lora_specs,
                         **runtime.load_kwargs)
    show_notes(pipe)
    times = int(interp_times) if interpolate else 1
    check(not keys or frames <= pipe.max_frames, f"--keyframe works within one clip of at most {pipe.max_frames} "
                                                 f"frames (this motion module's window); --frames={frames}")
    if frames > pipe.max_frames:
        from ..video_io import open_video_writer

        total = (frames - 1) * times + 1
        with open_video_writer(out, fps=fps * times, total=total) as writer:
            pipe(prompt, negative_prompt=negative, num_frames=frames, height=height, width=width,
                 num_inference_steps=steps, guidance_scale=guidance, seed=seed, interpolate_times=times,
                 gamma=gamma, omega=omega, overlap=overlap, frame_sink=writer.append, fusion=fusion)
        click.echo(f"wrote {out} ({writer.count} frames)")
        return
    result = pipe(prompt, negative_prompt=negative, num_frames=frames, height=height, width=width,
                  num_inference_steps=steps, guidance_scale=guidance, seed=seed, interpolate_times=times,
                  keyframes=keys, keyframe_mode=keyframe_mode,
                  keyframe_guidance=keyframe_guidance)
    write_outputs(result.frames[0], [out], fps=fps * (times if times > 1 else 1))
