"""SOFP interpolation: D_t against a hand computation, frame counts, dtypes, known-answer scenes."""

from __future__ import annotations

import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.flow import interpolate, midpoint, projection_ratio, projection_reliability
from shanshui.flow.testscenes import SCENES, render_scene, split_ground_truth
from shanshui.metrics import psnr


def test_projection_ratio_hand_computation():
    short = np.array([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]], np.float32)  # (1, 4, 2)
    long = np.array([[[3.0, 4.0], [0.0, -3.0], [2.0, 2.0], [5.0, 5.0]]], np.float32)
    # pixel 0: |long| = 5, cos θ = (3·2)/(5·2) = 0.6, |short| = 2  -> 5·0.6/2 = 1.5
    # pixel 1: opposite directions: 3·(-1)/1 = -3;  pixel 2: parallel, twice as long: 2
    # pixel 3: no short-range motion: undefined -> 0
    np.testing.assert_allclose(projection_ratio(short, long)[0], [1.5, -3.0, 2.0, 0.0], atol=1e-6)


def test_projection_ratio_equals_norm_cos_form():
    rng = np.random.default_rng(0)
    s, lg = rng.normal(size=(5, 6, 2)), rng.normal(size=(5, 6, 2))
    cos = (s * lg).sum(-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(lg, axis=-1))
    ref = np.linalg.norm(lg, axis=-1) * cos / np.linalg.norm(s, axis=-1)
    np.testing.assert_allclose(projection_ratio(s, lg), ref, rtol=1e-5)


def test_projection_reliability_ranges():
    short = np.array([[[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 0.0]]], np.float32)
    long = np.array([[[12.0, 0.0], [2.0, 0.0], [-8.0, 0.0], [7.0, 7.0]]], np.float32)
    rel = projection_reliability(short, long)[0]
    m = 16 / (16 + 0.25)  # how "moving" a 4 px step counts
    np.testing.assert_allclose(rel, [1.0, 1 - m * 0.5, 1 - m, 1.0], atol=1e-6)


def test_output_length_dtype_and_originals_kept():
    clip = render_scene("boat", 64, 5)
    for times in (2, 4, 8):
        out = interpolate(clip, times=times)
        assert out.shape == ((5 - 1) * times + 1, 64, 64, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[::times], clip)  # input frames pass through untouched
    flt = clip.astype(np.float32) / 255
    outf = interpolate(flt, 2)
    assert outf.dtype == np.float32 and outf.shape == (9, 64, 64, 3)
    np.testing.assert_allclose(outf[1::2] * 255, interpolate(clip, 2)[1::2], atol=1.0)


def test_static_clip_is_returned_exactly():
    clip = np.repeat(render_scene("static", 64, 3)[:1], 4, axis=0)
    for method in ("sofp", "halfwarp", "linear"):
        np.testing.assert_array_equal(interpolate(clip, 2, method), np.repeat(clip[:1], 7, axis=0))


def test_linear_is_the_average():
    rng = np.random.default_rng(0)
    clip = rng.random((3, 16, 16, 3)).astype(np.float32)
    out = interpolate(clip, 2, "linear")
    np.testing.assert_allclose(out[1], 0.5 * (clip[0] + clip[1]), atol=1e-6)


def test_midpoint_of_a_global_shift_is_the_half_shift():
    """A pure translation by (6, 0) px: the true middle frame is the half shift; flows given exactly."""
    from test_flow import textured

    i0 = textured(64, 96, 3).astype(np.float32)
    i1 = textured(64, 96, 3, shift=(6.0, 0.0)).astype(np.float32)
    truth = textured(64, 96, 3, shift=(3.0, 0.0)).astype(np.float32)
    f01 = np.zeros((64, 96, 2), np.float32)
    f01[..., 0] = 6.0
    mid = midpoint(i0, i1, f01, -f01, 255.0)
    inner = (slice(8, -8), slice(12, -12))
    assert np.abs(mid - truth)[inner].mean() < 1.5
    assert np.abs(0.5 * (i0 + i1) - truth)[inner].mean() > 4 * np.abs(mid - truth)[inner].mean()  # blending is far off


@pytest.mark.parametrize("scene", ["boat", "pan"])
def test_sofp_beats_blending_on_moving_scenes(scene):
    inputs, truth = split_ground_truth(render_scene(scene, 128, 5))
    sofp = interpolate(inputs, 2)[1::2]
    linear = interpolate(inputs, 2, "linear")[1::2]
    demo = interpolate(inputs, 2, "nadm-demo", "farneback")[1::2]
    assert psnr(sofp, truth) > psnr(linear, truth) + 2.0
    assert psnr(sofp, truth) > psnr(demo, truth) + 2.0


def test_projection_reliability_variant_runs_and_stays_close():
    inputs, truth = split_ground_truth(render_scene("parallax", 96, 7))
    a = interpolate(inputs, 2, reliability="projection")
    b = interpolate(inputs, 2, reliability="none")
    assert a.shape == b.shape
    assert psnr(a[1::2], truth) > psnr(interpolate(inputs, 2, "linear")[1::2], truth)


def test_scenes_are_deterministic_and_distinct():
    for name in SCENES:
        a, b = render_scene(name, 48, 3, seed=1), render_scene(name, 48, 3, seed=1)
        np.testing.assert_array_equal(a, b)
        moving = np.abs(a[0].astype(int) - a[2]).mean()
        assert (moving == 0) == (name == "static"), name


@pytest.mark.parametrize("kwargs, match", [
    (dict(times=3), "times=3"),
    (dict(method="film"), "method 'film'"),
    (dict(flow="lk"), "flow 'lk'"),
    (dict(reliability="x"), "reliability 'x'"),
])
def test_bad_arguments(kwargs, match):
    clip = render_scene("static", 32, 3)
    with pytest.raises(ShanshuiError, match=match):
        interpolate(clip, **kwargs)


def test_bad_frames():
    with pytest.raises(ShanshuiError, match="at least 2 frames"):
        interpolate(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ShanshuiError, match=r"\(F, H, W, 3\)"):
        interpolate(np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(ShanshuiError, match="dtype"):
        interpolate(np.zeros((3, 16, 16, 3), np.int32))
