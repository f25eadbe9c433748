"""``shanshui ui``: the local web page (text -> video, painting -> video with drawn arrows, interpolation)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ShanshuiError, check

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
EXPOSED_WARNING = ("warning: --host {host} makes the page reachable from other computers on your network. "
                   "It has no login: anyone who can reach port {port} can run jobs on this machine and "
                   "download the results. Use it only on a network you trust.")


@click.command()
@click.option("--port", type=int, default=7860, show_default=True, help="TCP port of the page.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. The default serves this computer only; 0.0.0.0 exposes the page.")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Default base model (SD 1.5 folder or .safetensors/.ckpt). Default: the bundled model.")
@click.option("--motion-module", type=click.Path(path_type=Path), default=None, help="Default motion module.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out/ui"), show_default=True,
              help="Folder for results; every result gets a new file name.")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Jobs run at the same time; the others wait in the queue (1 suits a CPU).")
@click.option("--queue-size", type=int, default=32, show_default=True, help="Most jobs waiting at once.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps ...")
@click.option("--keep-models", type=int, default=1, show_default=True,
              help="Models kept in memory when the page switches between model paths.")
def ui(port, host, model, motion_module, out_dir, concurrency, queue_size, device, keep_models):
    """Open the Shanshui web page on this computer (needs: pip install 'shanshui[ui]')."""
    check(1 <= port <= 65535, f"--port={port} must be in [1, 65535]")
    check(concurrency >= 1, f"--concurrency={concurrency} must be >= 1")
    check(queue_size >= 1, f"--queue-size={queue_size} must be >= 1")
    check(keep_models >= 1, f"--keep-models={keep_models} must be >= 1")
    check(motion_module is None or model is not None, "--motion-module needs --model too")
    for name, p in (("model", model), ("motion-module", motion_module)):
        check(p is None or p.exists(), f"--{name} '{p}' does not exist")
    from ..video_io import check_output_location

    check_output_location(out_dir, folder=True)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ShanshuiError("the web page needs the 'ui' extra: pip install 'shanshui[ui]'") from None
    if host not in LOCAL_HOSTS:
        click.echo(EXPOSED_WARNING.format(host=host, port=port), err=True)
    from ..ui.app import build_app, launch
    from ..ui.jobs import ModelCache, Workspace

    ws = Workspace(out_dir)
    models = ModelCache(device=device, keep=keep_models, default_model=model and str(model),
                        default_motion=motion_module and str(motion_module))
    demo = build_app(models, ws, concurrency=concurrency, max_queue=queue_size)
    click.echo(f"Shanshui page: http://{'127.0.0.1' if host in LOCAL_HOSTS else host}:{port}/  "
               f"(results in {ws.out_dir}; Ctrl-C stops)", err=True)
    try:
        launch(demo, host, port, ws, block=True)
    except OSError as exc:
        raise ShanshuiError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
