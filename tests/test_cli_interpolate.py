"""``shanshui interpolate``: end to end on small files; bad input -> one line, exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from shanshui.cli import main
from shanshui.flow.testscenes import render_scene
from shanshui.video_io import read_video, write_video


@pytest.fixture()
def gif(tmp_path):
    path = tmp_path / "in.gif"
    write_video(render_scene("boat", 64, 4), path, fps=4)
    return path


def test_interpolate_gif_to_mp4(tmp_path, gif, capsys):
    out = tmp_path / "out.mp4"
    assert main(["interpolate", str(gif), "-o", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (7, 64, 64, 3)
    assert fps == pytest.approx(8.0, rel=0.01)  # input 4 fps x 2: same duration
    assert "4 -> 7 frames" in capsys.readouterr().out


def test_interpolate_times_4_with_farneback(tmp_path, gif):
    out = tmp_path / "out.gif"
    assert main(["interpolate", str(gif), "-o", str(out), "--times", "4", "--flow", "farneback"]) == 0
    frames, _ = read_video(out)
    assert len(frames) == 13
    src, _ = read_video(gif)
    assert np.abs(frames[::4].astype(int) - src).mean() < 3  # originals kept (up to gif palette)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    return err[0]


def test_missing_file(tmp_path, capsys):
    assert main(["interpolate", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "does not exist" in _error_line(capsys)


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    out = tmp_path / "o.mp4"
    assert main(["interpolate", str(bad), "-o", str(out)]) == 2
    assert "cannot read video" in _error_line(capsys)
    assert not out.exists()


def test_single_frame_video(tmp_path, capsys):
    one = tmp_path / "one.gif"
    write_video(render_scene("static", 32, 3)[:1], one)
    assert main(["interpolate", str(one), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "at least 2" in _error_line(capsys)


def test_mismatched_frame_sizes(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "0.png")
    Image.new("RGB", (40, 32)).save(folder / "1.png")
    assert main(["interpolate", str(folder), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "different sizes" in _error_line(capsys)


def test_raft_needs_weights_and_bad_choices(tmp_path, gif, capsys):
    assert main(["interpolate", str(gif), "-o", str(tmp_path / "o.mp4"), "--flow", "raft"]) == 2
    assert "--raft-weights" in _error_line(capsys)
    assert main(["interpolate", str(gif), "-o", str(tmp_path / "o.mp4"), "--times", "3"]) == 2
    _error_line(capsys)
    assert main(["interpolate", str(gif), "-o", str(tmp_path / "o.avi")]) == 2
    assert "must end in" in _error_line(capsys)
