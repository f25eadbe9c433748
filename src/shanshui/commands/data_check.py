"""``shanshui data check DIR``: validate a (video, caption) folder and print its statistics."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import check as require


def _fmt(summary: dict | None, unit: str = "", digits: int = 1) -> str:
    if not summary:
        return "-"
    return " / ".join(f"{summary[k]:.{digits}f}{unit}" for k in ("min", "median", "max"))


def _histogram(hist: dict[str, int], suffix: str = "", limit: int = 6) -> str:
    parts = [f"{k}{suffix} x{v}" for k, v in list(hist.items())[:limit]]
    if len(hist) > limit:
        parts.append(f"(+{len(hist) - limit} more)")
    return ", ".join(parts) or "-"


def render(stats: dict, console) -> None:
    """Print the statistics as a two-column table, then the problem lists."""
    from rich.table import Table

    table = Table(title=f"Dataset {stats['root']}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    dur = stats["duration_s"]
    clip = stats["clip"]
    table.add_row("source", stats["source"])
    table.add_row("entries", str(stats["entries"]))
    table.add_row("readable pairs", str(stats["count"]))
    table.add_row("duration min/median/max", _fmt(dur, " s", 2))
    table.add_row("total duration", f"{dur['total']:.1f} s" if dur else "-")
    if stats["duration_unknown"]:
        table.add_row("duration unknown (no fps)", str(stats["duration_unknown"]))
    table.add_row("frames min/median/max" + ("" if stats["frame_count_exact"] else " (header)"),
                  _fmt(stats["num_frames"], "", 0))
    table.add_row("resolutions", _histogram(stats["resolutions"]))
    table.add_row("frame rates", _histogram(stats["fps"], " fps"))
    table.add_row("caption words min/median/max", _fmt(stats["caption_words"], "", 1))
    table.add_row(f"too short for {clip['frames']}x stride {clip['stride']} ({clip['span']} frames)",
                  str(len(stats["too_short"])))
    table.add_row("unreadable", str(len(stats["unreadable"])))
    table.add_row("skipped (manifest/caption)", str(len(stats["skipped"])))
    console.print(table)
    for title, rows in (("unreadable", stats["unreadable"]), ("skipped", stats["skipped"]),
                        ("too short", [[p, f"{n} frames < {clip['span']}"] for p, n in stats["too_short"]])):
        for path, reason in rows:
            console.print(f"  {title}: {path} -- {reason}", markup=False, highlight=False)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the statistics to this JSON file.")
@click.option("--frames", type=click.IntRange(min=1), default=8, show_default=True,
              help="Clip length used to flag videos that are too short.")
@click.option("--stride", type=click.IntRange(min=1), default=4, show_default=True,
              help="Frame stride used to flag videos that are too short.")
@click.option("--deep", is_flag=True,
              help="Decode every frame: exact frame counts, and corrupt streams are found (slow).")
@click.option("--strict", is_flag=True, help="Fail (exit code 2) if any entry is unusable.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads probing videos.")
def check(directory: Path, json_out: Path | None, frames: int, stride: int, deep: bool, strict: bool,
          workers: int) -> None:
    """Validate the (video, caption) folder DIRECTORY and print its statistics.

    Exit code 0 when at least one pair is usable; 2 when the folder is missing, holds no pairs, none of
    its pairs is usable, or (with --strict) any entry is unusable.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..data.index import dataset_stats, empty_dataset_message, scan_dataset
    from ..video_io import atomic_output, check_output_location

    if json_out is not None:
        check_output_location(json_out)
    index = scan_dataset(directory)
    require(bool(index.items or index.skipped), empty_dataset_message(index))
    err_console = Console(stderr=True)
    with Progress(TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task("probe", total=len(index.items))
        stats = dataset_stats(index, frames=frames, stride=stride, count_frames=deep, workers=workers,
                              on_done=lambda: progress.advance(task))
    render(stats, Console(width=120, soft_wrap=True))
    if json_out is not None:
        with atomic_output(json_out) as tmp:
            tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_out}")
    usable = stats["count"] - len(stats["too_short"])
    problems = len(stats["unreadable"]) + len(stats["skipped"]) + len(stats["too_short"])
    require(usable > 0,
            f"no usable (video, caption) pair in '{directory}' ({problems} problem(s) listed above)")
    require(not (strict and problems),
            f"'{directory}': {problems} unusable entr{'y' if problems == 1 else 'ies'} "
            "(listed above; --strict)")
