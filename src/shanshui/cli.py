"""The ``shanshui`` command.

Subcommands live in :mod:`shanshui.commands`, one file each, and are imported only when invoked, so that
``shanshui --help`` answers instantly. Any :class:`~shanshui.errors.ShanshuiError` (bad user input) or
click usage error becomes a one-line message on stderr and exit code 2, and so does an ``OSError`` (a folder
that cannot be created, a full disk); Ctrl-C exits with 130.
"""

from __future__ import annotations

import importlib
import sys

import click

from .errors import ShanshuiError

# name -> ("module:attribute", one-line help). Add a subcommand by adding a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("shanshui.commands.generate:generate", "Text -> landscape-painting video (NADM)."),
    "demo": ("shanshui.commands.demo:demo", "Generate the demo video with the bundled model."),
    "data": ("shanshui.commands.data:data", "Dataset tools: synth, check, cache."),
    "train": ("shanshui.commands.train:train", "Train a NADM motion module (runs under accelerate launch too)."),
    "train-control": ("shanshui.commands.train_control:train_control",
                      "Train the image-to-video control model (first frame, motion field, strength, T)."),
    "train-image": ("shanshui.commands.train_image:train_image", "Train the bundled model's image model (stage 1)."),
    "interpolate": ("shanshui.commands.interpolate:interpolate", "SOFP frame interpolation of a video."),
    "animate": ("shanshui.commands.animate:animate", "Painting -> video (training-free), with arrows and strength."),
    "evaluate": ("shanshui.commands.evaluate:evaluate", "FVD/KVD, IS, CLIP-text/temp, LPIPS of generated videos."),
    "ui": ("shanshui.commands.ui:ui", "Local web page: text/painting -> video, arrows drawn by hand."),
}

EPILOG = """\b
Examples:
  shanshui demo
  shanshui generate "Mountains, dense fog, red sun, boat on the lake." -o mist.mp4
  shanshui generate "Pines by a waterfall" --model ~/sd15 --motion-module nadm.safetensors \\
      --size 256 --frames 16 --steps 25 --guidance 8 --seed 7 -o falls.gif
"""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use, from a ``name -> (target, help)`` map."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = COMMANDS if lazy_commands is None else lazy_commands

    def list_commands(self, ctx):
        return sorted(self.lazy_commands)

    def get_command(self, ctx, name):
        if name not in self.lazy_commands:
            return None
        module, attr = self.lazy_commands[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(n, self.lazy_commands[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shanshui")
def cli() -> None:
    """Shanshui (山水): bring landscape paintings to life with diffusion models."""


def _quiet_libraries() -> None:
    """Keep the terminal for our own messages: no weight-loading bars or hub chatter from dependencies."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError`` that no command turned into a :class:`ShanshuiError` itself."""
    import errno
    from pathlib import Path

    from .video_io import write_error

    if exc.filename and exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOSPC, errno.EFBIG, errno.EDQUOT,
                                      errno.EROFS):
        return str(write_error(Path(str(exc.filename)), exc))
    what = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if exc.errno == errno.EFBIG:
        what += " (file-size limit reached)"
    names = [n for n in (exc.filename, exc.filename2) if n]
    return what[:1].lower() + what[1:] + "".join(f": '{n}'" for n in names)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    _quiet_libraries()
    try:
        rc = cli.main(args=argv, prog_name="shanshui", standalone_mode=False)
    except ShanshuiError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()} (see 'shanshui --help')", err=True)
        return 2
    except click.Abort:
        click.echo("interrupted", err=True)
        return 130
    except OSError as exc:  # a file or folder the command could not create, write or read
        click.echo(f"error: {os_error_line(exc)}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
