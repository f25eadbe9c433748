"""``shanshui evaluate``: FVD/KVD, IS, CLIP-text, CLIP-temp, LPIPS of a folder of generated videos."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import check

EXAMPLES = """\b
Examples:
  shanshui evaluate out/videos --real data/real_clips --i3d ~/weights/i3d_torchscript.pt \\
      --inception ~/weights/pt_inception-2015-12-05-6726825d.pth --clip ~/weights/clip-vit-b32 --json eval.json
  shanshui evaluate out/videos --real data/real_clips --i3d ~/weights/i3d_pretrained_400.pt --metrics fvd,kvd
  shanshui evaluate out/recon --real data/gt --lpips-alexnet ~/weights/alexnet-owt-7be5be79.pth

Only the metrics whose weights are given run; the others are listed as skipped. See docs/evaluation.md.
"""


def parse_metrics(text: str) -> list[str]:
    from ..metrics.suite import METRICS

    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    check(not bad and bool(names), f"--metrics '{text}' must be a comma list of {', '.join(METRICS)}")
    return names


@click.command(epilog=EXAMPLES)
@click.argument("generated_dir", type=click.Path(path_type=Path))
@click.option("--real", "real_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of real videos (FVD/KVD reference; LPIPS pairs by file name).")
@click.option("--prompts", type=click.Path(path_type=Path), default=None,
              help="Text file, one prompt per generated video in sorted name order (CLIP-text). "
                   "Default: GENERATED_DIR/manifest.jsonl from 'shanshui generate --prompts'.")
@click.option("--i3d", type=click.Path(path_type=Path), default=None,
              help="i3d_torchscript.pt (StyleGAN-V protocol) or i3d_pretrained_400.pt state dict (TATS protocol).")
@click.option("--inception", type=click.Path(path_type=Path), default=None,
              help="pytorch-fid pt_inception-2015-12-05-*.pth or StyleGAN2-ADA inception-2015-12-05.pt (IS).")
@click.option("--clip", "clip_dir", type=click.Path(path_type=Path), default=None,
              help="Local transformers CLIP folder (CLIP-text, CLIP-temp).")
@click.option("--lpips-alexnet", type=click.Path(path_type=Path), default=None,
              help="AlexNet state dict (alexnet-owt-7be5be79.pth) for LPIPS.")
@click.option("--lpips-linear", type=click.Path(path_type=Path), default=None,
              help="LPIPS v0.1 alex.pth linear weights (default: from the installed lpips wheel).")
@click.option("--metrics", "metric_list", default="fvd,kvd,is,clip-text,clip-temp,lpips", show_default=True,
              help="Comma list of metrics to compute.")
@click.option("--frames", type=int, default=16, show_default=True,
              help="Frames per clip (the first N of each video); 16 gives FVD16/KVD16.")
@click.option("--is-splits", type=int, default=10, show_default=True)
@click.option("--kid-subsets", type=int, default=None,
              help="KVD as the mean over this many random subsets of up to 1000 videos (default: all videos once).")
@click.option("--batch", type=int, default=8, show_default=True, help="Videos per I3D batch.")
@click.option("--device", default="cpu", show_default=True, help="Device for the feature networks.")
@click.option("--name", default=None, help="Row name in the table (default: GENERATED_DIR's name).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the results here.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def evaluate(generated_dir, real_dir, prompts, i3d, inception, clip_dir, lpips_alexnet, lpips_linear, metric_list,
             frames, is_splits, kid_subsets, batch, device, name, json_out, progress):
    """Evaluate the videos in GENERATED_DIR with the seed papers' metrics (NADM Table I)."""
    metrics = parse_metrics(metric_list)
    check(frames >= 2, f"--frames={frames} must be >= 2")
    check(is_splits >= 1, f"--is-splits={is_splits} must be >= 1")
    check(batch >= 1, f"--batch={batch} must be >= 1")
    check(kid_subsets is None or kid_subsets >= 1, f"--kid-subsets={kid_subsets} must be >= 1")
    check(Path(generated_dir).is_dir(), f"GENERATED_DIR '{generated_dir}' is not a folder of videos")
    check(real_dir is None or Path(real_dir).is_dir(), f"--real '{real_dir}' is not a folder of videos")
    if json_out is not None:
        check(json_out.suffix.lower() == ".json", f"--json '{json_out}' must end in .json")
        from ..video_io import check_output_location

        check_output_location(json_out)
    _check_device(device)
    given = {"fvd": i3d, "kvd": i3d, "is": inception, "clip-text": clip_dir, "clip-temp": clip_dir,
             "lpips": lpips_alexnet}
    check(any(given[m] is not None for m in metrics),
          f"no metric of --metrics {','.join(metrics)} can be computed: give the weights of at least one "
          f"(--i3d, --inception, --clip, --lpips-alexnet)")
    from ..metrics.suite import Networks, evaluate_folders, format_table

    nets = Networks()
    wanted = set(metrics)
    if i3d is not None and wanted & {"fvd", "kvd"}:
        from ..metrics.networks import load_i3d

        nets.video, nets.paths["i3d"] = load_i3d(i3d, device), str(i3d)
    if inception is not None and "is" in wanted:
        from ..metrics.networks import load_inception

        nets.image, nets.paths["inception"] = load_inception(inception, device), str(inception)
    if clip_dir is not None and wanted & {"clip-text", "clip-temp"}:
        from ..metrics.clip import ClipEmbedder

        nets.clip, nets.paths["clip"] = ClipEmbedder(clip_dir, device=device), str(clip_dir)
    if lpips_alexnet is not None and "lpips" in wanted:
        from ..metrics.lpips import load_lpips

        nets.lpips, nets.paths["lpips-alexnet"] = load_lpips(lpips_alexnet, lpips_linear).to(device), str(lpips_alexnet)
    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    result = evaluate_folders(generated_dir, real_dir, nets, metrics, frames=frames, prompts=prompts,
                              is_splits=is_splits, kid_subsets=kid_subsets, batch=batch, progress=progress, log=log)
    for metric, why in result["skipped"].items():
        click.echo(f"skipped {metric}: {why}", err=True)
    check(bool(result["metrics"]), "no metric could be computed (see the skipped lines above)")
    row = name or Path(generated_dir).name
    click.echo(format_table({row: result["metrics"]}))
    if json_out is not None:
        from ..video_io import atomic_output

        json_out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(json_out) as tmp:
            tmp.write_text(json.dumps({**result, "name": row, "weights": nets.paths}, indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    import torch

    check(device.startswith(("cuda", "mps")), f"--device '{device}' must be cpu, cuda, cuda:N or mps")
    check(not device.startswith("cuda") or torch.cuda.is_available(), f"--device {device}: no CUDA device is available")
