"""The web page below the browser: its job functions (bundled model, tiny settings), its checks and command
lines, cancellation, the model cache, and the gradio API of a server started here on a free port."""

from __future__ import annotations

import importlib.util
import json
import shlex
import threading
import time

import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.ui.jobs import (
    InterpolateSettings, JobCancelled, JobControl, ModelCache, PaintingSettings, TextSettings, Workspace,
    parse_size_text, run_interpolate, run_painting, run_text,
)
from shanshui.video_io import read_video
from ui_server import page_server, painting_file

TINY_TEXT = dict(frames=4, size="64", steps=2, times=1)
needs_gradio = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                  reason="the 'ui' extra (gradio) is not installed: "
                                         "pip install 'shanshui[ui]'")
TINY_PAINT = dict(frames=4, size=64, steps=2)


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture()
def ws(tmp_path):
    return Workspace(tmp_path / "out")


@pytest.fixture(scope="module")
def painting(tmp_path_factory):
    return painting_file(tmp_path_factory.mktemp("painting") / "scroll.png", size=96)


# ------------------------------------------------------------------------------------------ pure checks
@pytest.mark.parametrize("settings, message", [
    (TextSettings("  "), "prompt must not be empty"),
    (TextSettings("a", frames=1), "frames=1 must be in [2, 512]"),
    (TextSettings("a", frames="ten"), "frames='ten' must be a whole number"),
    (TextSettings("a", frames=4.5), "must be a whole number"),
    (TextSettings("a", size="4000"), "too large for this page"),
    (TextSettings("a", size="60"), "multiple of 8"),
    (TextSettings("a", steps=0), "steps=0 must be in [1, 200]"),
    (TextSettings("a", guidance=float("nan")), "guidance=nan must be a number"),
    (TextSettings("a", times=3), "interpolation=3 must be one of 1, 2, 4, 8"),
    (InterpolateSettings(None), "upload a video first"),
    (InterpolateSettings("v.mp4", times=3), "times=3 must be 2, 4 or 8"),
    (PaintingSettings(None, "a"), "upload a painting first"),
])
def test_bad_values_give_one_line_messages(settings, message):
    with pytest.raises(ShanshuiError) as err:
        settings.check()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_painting_checks_image_and_arrows(tmp_path, painting):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ShanshuiError, match="not a readable image"):
        PaintingSettings(str(junk), "a").check()
    with pytest.raises(ShanshuiError, match=r"start \(120, 10\) lies outside the 96x96 image"):
        PaintingSettings(str(painting), "a", arrows="[[120, 10, 130, 10]]").check()
    with pytest.raises(ShanshuiError, match="arrows is not valid JSON"):
        PaintingSettings(str(painting), "a", arrows="[[1, 2, 3").check()
    with pytest.raises(ShanshuiError, match=r"strength=11 must be in \[0, 10\]"):
        PaintingSettings(str(painting), "a", arrows="[[1, 2, 3, 4, 11]]").check()
    arrows = '[{"from": [1, 2], "to": [3, 4]}, [5, 6, 7, 8, 0.5]]'
    s = PaintingSettings(str(painting), "a", arrows=arrows).check()
    assert [(a.x0, a.y1, a.strength) for a in s.parsed_arrows] == [(1, 4, 1.0), (5, 8, 0.5)]
    assert s.painting_size == (96, 96)


def test_command_lines_round_trip_through_the_cli_parser():
    from shanshui.commands.generate import generate
    from shanshui.commands.interpolate import interpolate

    s = TextSettings("Boat on the lake, 'misty'", negative="blurry", frames=40, size="128x64", steps=7,
                     guidance=6.5, seed=3, times=4, gamma=0.5, model="/m/sd15",
                     motion_module="/m/mm.safetensors")
    argv = shlex.split(s.check().command("x.mp4"))
    assert argv[:2] == ["shanshui", "generate"]
    ctx = generate.make_context("generate", argv[2:])
    p = ctx.params
    assert (p["prompt"], p["negative"], p["frames"], p["size"], p["steps"], p["guidance"], p["seed"]) == \
        ("Boat on the lake, 'misty'", "blurry", 40, "128x64", 7, 6.5, 3)
    assert (p["interpolate"], p["interp_times"], p["gamma"], p["omega"], p["overlap"]) == \
        (True, "4", 0.5, 0.2, 4)
    assert (str(p["model"]), str(p["motion_module"]), str(p["out"])) == \
        ("/m/sd15", "/m/mm.safetensors", "x.mp4")
    off = generate.make_context("generate", shlex.split(TextSettings("a", times=1).check().command())[2:])
    assert off.params["interpolate"] is False
    i = shlex.split(InterpolateSettings("/tmp/a b.gif", times=8, flow="tvl1").check().command("o.gif"))
    ip = interpolate.make_context("interpolate", i[2:]).params
    assert (str(ip["video"]), ip["times"], ip["flow"], str(ip["output"])) == ("a b.gif", "8", "tvl1", "o.gif")


def test_size_text():
    assert parse_size_text("") is None and parse_size_text(" 64 ") == (64, 64)
    assert parse_size_text("128x64") == (128, 64)


def test_new_names_are_unique_across_threads(ws):
    stems, lock = [], threading.Lock()

    def grab():
        for _ in range(50):
            s = ws.new_stem("text")
            with lock:
                stems.append(s)
    threads = [threading.Thread(target=grab) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(stems)) == 200 and all(s.parent == ws.out_dir for s in stems)


# ------------------------------------------------------------------------------------------ page helpers
@needs_gradio
def test_arrow_pad_helpers(painting):
    from shanshui.ui.app import format_arrows, mask_from_editor, merge_arrows, pad_value

    pad = json.loads(pad_value(str(painting)))
    assert (pad["width"], pad["height"], pad["arrows"]) == (96, 96, [])
    assert pad["image"].startswith("data:image/jpeg;base64,")
    # two arrows drawn; the first already had a typed strength of 2.5, the new one takes the slider's 0.7
    pad["arrows"] = [[1, 2, 3, 4], [10, 20, 30, 40]]
    merged = json.loads(merge_arrows(json.dumps(pad), format_arrows([[1, 2, 3, 4, 2.5]]), 0.7))
    assert merged == [[1, 2, 3, 4, 2.5], [10, 20, 30, 40, 0.7]]
    assert json.loads(merge_arrows(json.dumps(pad), "not json", 1.0))[0][4] == 1.0
    layer = np.zeros((8, 10, 4), np.uint8)
    layer[2:4, 3:6, 3] = 255
    m = mask_from_editor({"background": None, "layers": [layer, np.zeros_like(layer)], "composite": None})
    assert m.shape == (8, 10) and m.sum() == 6 and m[2:4, 3:6].all()
    assert mask_from_editor({"layers": [np.zeros_like(layer)]}) is None and mask_from_editor(None) is None


@needs_gradio
def test_launch_is_local_and_private(monkeypatch, tmp_path):
    import os

    from shanshui.ui import app

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    seen = {}

    class FakeBlocks:
        def launch(self, **kw):
            seen.update(kw)
    app.launch(FakeBlocks(), "127.0.0.1", 7861, Workspace(tmp_path))
    assert seen["share"] is False and seen["server_name"] == "127.0.0.1" and seen["server_port"] == 7861
    assert seen["allowed_paths"] == [str(tmp_path.resolve())] and seen["mcp_server"] is False


@needs_gradio
def test_cli_ui_host_warning_and_bad_values(monkeypatch, tmp_path, capsys):
    from shanshui import cli
    from shanshui.ui import app

    calls = []
    monkeypatch.setattr(app, "build_app", lambda models, ws, concurrency, max_queue: ("app", concurrency))
    monkeypatch.setattr(app, "launch", lambda demo, host, port, ws, block: calls.append((demo, host, port)))
    assert cli.main(["ui", "--out", str(tmp_path / "o"), "--concurrency", "2"]) == 0
    assert calls[-1] == (("app", 2), "127.0.0.1", 7860)
    assert "warning:" not in capsys.readouterr().err
    assert cli.main(["ui", "--host", "0.0.0.0", "--port", "8123", "--out", str(tmp_path / "o")]) == 0
    assert calls[-1][1:] == ("0.0.0.0", 8123)
    assert "warning: --host 0.0.0.0 makes the page reachable" in capsys.readouterr().err
    assert cli.main(["ui", "--port", "0"]) == 2
    assert "error: --port=0 must be in [1, 65535]" in capsys.readouterr().err
    assert cli.main(["ui", "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------ real jobs
def test_text_job_makes_new_files_and_reuses_the_model(models, ws):
    a = run_text(models, ws, TextSettings("Mountains, dense fog", seed=1, **{**TINY_TEXT, "times": 2}))
    b = run_text(models, ws, TextSettings("Mountains, dense fog", seed=1, **{**TINY_TEXT, "times": 2}))
    assert models.loads == 1
    assert len({*a.files, *b.files}) == 6 and all(p.is_file() for p in [*a.files, *b.files])
    frames, fps = read_video(a.mp4)
    assert frames.shape == (7, 64, 64, 3) and a.frames == 7 and fps == pytest.approx(16.0)
    assert read_video(a.gif)[0].shape[0] == 7
    # same settings and seed: the same video, in a file of its own
    assert np.array_equal(frames, read_video(b.mp4)[0])
    assert a.command.endswith(f"--interp-times 2 -o {a.mp4.name}")
    p1, p2 = models.text(), models.painting()
    assert p1.unet is p2.unet and p1.vae is p2.vae and p1.scheduler is not p2.scheduler


def test_painting_job_with_arrows_and_mask_equals_its_command_line(models, ws, painting, tmp_path):
    from shanshui import cli

    mask = np.zeros((48, 48), bool)          # a mask at another size (the editor's), scaled to the painting
    mask[:12, :] = True
    s = PaintingSettings(str(painting), "Boat drifting on the river", arrows="[[20, 70, 50, 70, 1.5], "
                         "[60, 40, 75, 30]]", seed=2, **TINY_PAINT)
    window = models.painting().max_frames
    with pytest.raises(ShanshuiError, match=f"frames={window + 1} must be at most {window}"):
        too_long = PaintingSettings(str(painting), "river", frames=window + 1, size=64, steps=2)
        run_painting(models, ws, too_long, mask=mask)
    assert list(ws.out_dir.iterdir()) == []              # a refused job leaves no file behind
    r = run_painting(models, ws, s, mask=mask)
    assert r.extra[0].name.endswith("-mask.png") and r.frames == 4
    ui_frames = read_video(r.mp4)[0]
    assert ui_frames.shape == (4, 64, 64, 3)
    argv = shlex.split(r.command)
    assert argv.count("--arrow") == 2 and "20,70,50,70,1.5" in argv and "60,40,75,30,1" in argv
    argv = [str(painting) if a == painting.name else a for a in argv]
    argv[argv.index("--mask") + 1] = str(r.extra[0])
    argv[argv.index("-o") + 1] = str(tmp_path / "cli.mp4")
    assert cli.main(argv[1:]) == 0
    assert np.array_equal(read_video(tmp_path / "cli.mp4")[0], ui_frames)
    # the still band (top quarter of the painting) does not move, up to the mp4 codec
    top = ui_frames[:, :12].astype(int)
    assert np.abs(top - top[:1]).mean() < 1.0


def test_cancel_stops_a_running_job_and_frees_the_worker(models, ws):
    control = JobControl()
    outcome = {}

    def job():
        try:
            run_text(models, ws, TextSettings("mist", frames=4, size="64", steps=200, times=1), control)
        except JobCancelled:
            outcome["cancelled"] = True
    t = threading.Thread(target=job)
    t.start()
    deadline = time.time() + 60
    while control.unet_calls < 2 and time.time() < deadline:
        time.sleep(0.01)
    control.cancel()
    t.join(timeout=60)
    assert not t.is_alive() and outcome == {"cancelled": True}
    assert control.unet_calls < 200
    assert list(ws.out_dir.iterdir()) == []          # nothing half-written
    assert run_text(models, ws, TextSettings("mist", **TINY_TEXT)).mp4.is_file()


def test_interpolate_job(models, ws):
    src = run_text(models, ws, TextSettings("river", **TINY_TEXT))
    r = run_interpolate(ws, InterpolateSettings(str(src.mp4), times=4))
    frames, fps = read_video(r.mp4)
    assert frames.shape == (13, 64, 64, 3) and fps == pytest.approx(32.0)
    assert np.abs(frames[::4].astype(int) - read_video(src.mp4)[0].astype(int)).mean() < 3


# ------------------------------------------------------------------------------------------ gradio API
@pytest.fixture()
def outside_connections(monkeypatch):
    """Every network connection or name lookup of this process that is not for this machine."""
    import socket

    seen = []
    local = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            seen.append(address)
        return connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in local and host is not None:
            seen.append(host)
        return getaddrinfo(host, *args, **kwargs)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return seen


@needs_gradio
def test_gradio_api_two_jobs_at_once_and_errors(tmp_path, painting, outside_connections):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    with page_server(tmp_path / "out", concurrency=1) as (url, models, ws, sessions):
        a, b = Client(url, verbose=False), Client(url, verbose=False)
        text_args = ("Pines by a waterfall", "", 4, "64", 2, 8, 0, 1, 0.8, 0.2, 4, "", "")
        ja = a.submit(*text_args, api_name="/text_to_video")
        jb = b.submit(handle_file(str(painting)), "river", "[[20, 70, 50, 70, 2]]", 1, True, True, 0.5, 0.5,
                      "", 4, 64, 2, 8, 0, "", "", None, api_name="/painting_to_video")
        ra, rb = ja.result(timeout=300), jb.result(timeout=300)
        assert ra[0] != rb[0]
        assert "--arrow 20,70,50,70,2" in rb[2]
        assert models.loads == 1
        made = sorted(p.name for p in ws.out_dir.glob("*.mp4"))
        assert len(made) == 2 and any("-text-" in m for m in made) and any("-painting-" in m for m in made)
        # the same text job twice at once: two distinct files
        j1 = a.submit(*text_args, api_name="/text_to_video")
        j2 = b.submit(*text_args, api_name="/text_to_video")
        r1, r2 = j1.result(timeout=300), j2.result(timeout=300)
        assert r1[2] != r2[2] and len(list(ws.out_dir.glob("*.mp4"))) == 4
        # bad input: a readable message, and the server keeps working
        with pytest.raises(AppError, match="prompt must not be empty"):
            a.predict("", *text_args[1:], api_name="/text_to_video")
        with pytest.raises(AppError, match="lies outside the 96x96 image"):
            a.predict(handle_file(str(painting)), "river", "[[500, 10, 510, 10]]", 1, True, True, 0.5, 0.5,
                      "", 4, 64, 2, 8, 0, "", "", None, api_name="/painting_to_video")
        with pytest.raises(AppError, match="does not exist"):
            a.predict("x", *text_args[1:-2], str(tmp_path / "no-model"), "", api_name="/text_to_video")
        assert a.predict(*text_args, api_name="/text_to_video")[3].startswith("4 frames in")
    assert outside_connections == []          # the server (and its clients) talked to this machine only


def test_model_paths_are_checked_then_switching_loads_the_other_model(tmp_path, tiny_model_files, ws):
    cache = ModelCache()
    with pytest.raises(ShanshuiError, match="model '.*nope' does not exist"):
        cache.base(str(tmp_path / "nope"), None)
    sd, motion = tiny_model_files
    with pytest.raises(ShanshuiError, match="needs a motion module path too"):
        cache.base(str(sd), "")
    with pytest.raises(ShanshuiError, match="needs a model path too"):
        cache.base("", str(motion))
    assert cache.loads == 0
    r = run_text(cache, ws, TextSettings("a", frames=4, steps=2, times=1, model=str(sd),
                                         motion_module=str(motion)))
    assert cache.loads == 1 and r.mp4.is_file()
    assert f"--model {sd} --motion-module {motion}" in r.command
    again = run_text(cache, ws, TextSettings("b", frames=4, steps=2, times=1, model=f" {sd} ",
                                             motion_module=str(motion)))
    assert cache.loads == 1 and again.mp4 != r.mp4
