"""``shanshui generate --prompts FILE --out-dir DIR``: the batch mode of ``generate`` (see
:mod:`shanshui.pipelines.batch`). Kept apart from ``generate.py``, which only dispatches here."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import check


def run_batch_command(prompts_file: Path, out_dir: Path, seeds_text: str, fmt: str, *, negative, model,
                      motion_module, frames, width, height, steps, guidance, sparse_causal, interpolate_times,
                      gamma, omega, overlap, fps, device, loras=(), vae=None, ema=False, keyframes=(),
                      keyframe_mode="noised", keyframe_guidance=0.0, fusion="crossfade") -> None:
    """Batch mode of ``shanshui generate``: every (prompt, seed) once, with the single-video options (LoRAs,
    VAE, EMA weights, keyframes, long-video fusion) recorded in the plan, so a resume with other settings is
    refused."""
    from ..pipelines.batch import parse_seeds, read_prompt_file, run_batch

    prompts = read_prompt_file(prompts_file)
    seeds = parse_seeds(seeds_text)
    check(not out_dir.exists() or out_dir.is_dir(), f"--out-dir '{out_dir}' exists and is not a folder")
    from ..video_io import check_output_location

    check_output_location(out_dir, folder=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    from accelerate import PartialState

    state = PartialState(cpu=(device == "cpu"))
    rank, world = state.process_index, state.num_processes
    if world > 1 and device.startswith("cuda"):
        device = str(state.device)  # one GPU per process under `accelerate launch`
    settings = {"model": str(model) if model else "bundled", "motion_module": str(motion_module) if motion_module
                else None, "negative": negative, "frames": frames, "width": width, "height": height, "steps": steps,
                "guidance": guidance, "sparse_causal": sparse_causal, "interpolate_times": interpolate_times,
                "gamma": gamma, "omega": omega, "overlap": overlap, "fps": fps,
                "loras": [[str(p), float(w)] for p, w in loras], "vae": str(vae) if vae else None, "ema": bool(ema),
                "keyframes": [[k.index, str(k.image)] for k in keyframes], "keyframe_mode": keyframe_mode,
                "keyframe_guidance": float(keyframe_guidance), "fusion": fusion}
    from ..pipelines.text_to_video import load_pipeline

    loaded = {}

    def make_video(item, path: Path) -> None:
        from ..video_io import open_video_writer, write_video

        if "pipe" not in loaded:  # loaded on the first video this process makes (none on a finished resume)
            loaded["pipe"] = load_pipeline(model, motion_module, sparse_causal=sparse_causal, device=device,
                                           ema=ema, vae=vae, loras=list(loras))
        pipe = loaded["pipe"]

        kwargs = dict(negative_prompt=negative, num_frames=frames, height=height, width=width,
                      num_inference_steps=steps, guidance_scale=guidance, seed=item.seed,
                      interpolate_times=interpolate_times, progress=False)
        if frames > pipe.max_frames:
            check(not keyframes, f"--keyframe works within one clip of at most {pipe.max_frames} frames (this "
                                 f"motion module's window); --frames={frames}")
            total = (frames - 1) * interpolate_times + 1
            with open_video_writer(path, fps=fps * interpolate_times, total=total) as writer:
                pipe(item.prompt, gamma=gamma, omega=omega, overlap=overlap, frame_sink=writer.append, fusion=fusion,
                     **kwargs)
            return
        result = pipe(item.prompt, keyframes=list(keyframes), keyframe_mode=keyframe_mode,
                      keyframe_guidance=keyframe_guidance, **kwargs)
        write_video(result.frames[0], path, fps=fps * interpolate_times)

    log = (lambda msg: click.echo(msg, err=True))  # noqa: E731
    counts = run_batch(prompts, seeds, out_dir, settings, make_video, ext=fmt, rank=rank, world=world,
                       barrier=state.wait_for_everyone, log=log)
    if rank == 0:
        click.echo(f"wrote {out_dir / 'manifest.jsonl'}: {counts['planned']} videos planned "
                   f"({len(prompts)} prompts x {len(seeds)} seeds), {world} process(es)")
