"""Helpers shared by the web page tests: a page server on a free port, a test painting, Chromium lookup."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def page_server(out_dir: Path, concurrency: int = 1):
    """``shanshui ui`` in this process (bundled model), on 127.0.0.1 and a free port; yields
    (url, models, ws, sessions)."""
    from shanshui.ui.app import build_app, launch
    from shanshui.ui.jobs import ModelCache, Workspace

    ws = Workspace(out_dir)
    models = ModelCache()
    demo = build_app(models, ws, concurrency=concurrency)
    port = free_port()
    launch(demo, "127.0.0.1", port, ws, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", models, ws, demo.shanshui_sessions
    finally:
        demo.close()


def painting_file(path: Path, size: int = 96) -> Path:
    """A procedural ink-wash landscape (the training data's renderer), saved as PNG."""
    from PIL import Image

    from shanshui.data.procedural import render_clip, sample_scene

    frames, _ = render_clip(sample_scene(3), frames=2, size=size)
    Image.fromarray(np.asarray(frames[0], np.uint8)).save(path)
    return path


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None
