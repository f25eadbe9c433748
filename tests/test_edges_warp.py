"""Edges of :mod:`shanshui.flow.warp` that the mutation run (issue 18, docs/testing.md) showed untested.

Each test compares with a value computed by hand and fails when the named mistake is put back into the code."""

import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.flow.warp import backward_warp, forward_splat


def _shift_x(h, w, dx):
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = dx
    return flow


def test_backward_warp_of_dtypes_opencv_cannot_remap_is_exact_bilinear():
    """float16, int32, float64 and int16 images are warped through float32: [0, 200] read at x = 0.3 gives
    0.7·0 + 0.3·200 = 60.

    OpenCV's own float64/int16 remap (and so ``astype(None)``, float64) is fixed point: it rounds the sample
    position to 1/32 px and reads 0.3125 → 62.5."""
    flow = _shift_x(1, 2, 0.3)
    half = backward_warp(np.array([[0, 200]], np.float16), flow)
    assert half.dtype == np.float16 and half[0, 0] == np.float16(60.0)
    ints = backward_warp(np.array([[0, 200]], np.int32), flow)
    assert ints.dtype == np.int32 and ints[0, 0] == 60
    doubles = backward_warp(np.array([[0, 200]], np.float64), flow)
    assert doubles.dtype == np.float64 and doubles[0, 0] == pytest.approx(60.0, abs=1e-4)
    shorts = backward_warp(np.array([[0, 200]], np.int16), flow)
    assert shorts.dtype == np.int16 and shorts[0, 0] == 60


def test_backward_warp_keeps_a_single_channel_axis():
    """An (H, W, 1) image comes back (H, W, 1) (OpenCV itself returns (H, W)), with the warped values."""
    img = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    out = backward_warp(img, _shift_x(3, 4, 1.0))
    assert out.shape == (3, 4, 1)
    np.testing.assert_array_equal(out[..., 0], [[1, 2, 3, 3], [5, 6, 7, 7], [9, 10, 11, 11]])


@pytest.mark.parametrize("border", ["zero", "constant"])
def test_backward_warp_zero_border_of_wide_images_is_zero(border):
    """Images with more than 4 channels are warped in slices; outside samples are 0 in every slice."""
    img = np.full((3, 3, 6), 9.0, np.float32)
    out = backward_warp(img, _shift_x(3, 3, 1.0), border=border)
    np.testing.assert_array_equal(out[:, :2], 9.0)
    np.testing.assert_array_equal(out[:, 2], 0.0)                 # the right column reads x = 3: outside


def test_forward_splat_refuses_a_flow_of_another_size():
    """values (2, 3) with a (3, 2, 2) flow has the same pixel count, so only the size check stops it."""
    with pytest.raises(ShanshuiError, match=r"^flow size \(3, 2\) does not match image size \(2, 3\)$"):
        forward_splat(np.ones((2, 3, 1), np.float32), np.zeros((3, 2, 2), np.float32))


def test_forward_splat_of_a_single_pixel():
    """A 1×1 frame: the pixel lands on itself; its three other bilinear corners are outside and dropped."""
    acc, mass = forward_splat(np.full((1, 1, 2), 3.0, np.float32), np.zeros((1, 1, 2), np.float32))
    np.testing.assert_array_equal(acc, [[[3.0, 3.0]]])
    np.testing.assert_array_equal(mass, [[1.0]])
    acc, mass = forward_splat(np.full((1, 1), 4.0, np.float32), _shift_x(1, 1, 0.25))
    np.testing.assert_allclose(acc, [[[3.0]]])                    # 0.75 of the value stays, 0.25 leaves the frame
    np.testing.assert_allclose(mass, [[0.75]])


@pytest.mark.parametrize("dtype, values, expected", [
    (np.float64, [0.0, 200.0], 60.0), (np.int16, [0, 20000], 6000), (np.uint8, [0, 200], 60),
    (np.uint16, [0, 20000], 6000), (np.float32, [0.0, 200.0], 60.0), (np.float16, [0.0, 200.0], 60.0),
])
def test_backward_warp_samples_at_the_exact_position_for_every_dtype(dtype, values, expected):
    """Reading half-way between 0 and v at x = 0.3 gives 0.3·v for every dtype. OpenCV's own float64 and int16
    remaps round the position to 1/32 px (0.3125·200 = 62.5), so those go through float32."""
    out = backward_warp(np.array([values], dtype), _shift_x(1, 2, 0.3))
    assert out.dtype == dtype
    np.testing.assert_allclose(float(out[0, 0]), expected, rtol=1e-3 if dtype == np.float16 else 1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64])
def test_integer_images_are_rounded_not_truncated(dtype):
    """[0, 3] read at x = 0.25 is 0.75: every integer dtype gives 1 (OpenCV rounds uint8/uint16 itself; the
    others go through float32 and are rounded on the way back)."""
    out = backward_warp(np.array([[0, 3]], dtype), _shift_x(1, 2, 0.25))
    assert out.dtype == dtype and out[0, 0] == 1


def test_int32_extremes_survive_the_float32_round_trip():
    """float32 rounds 2**31 - 1 up to 2**31, which does not fit int32: the result saturates at the type's
    limits instead of wrapping round to the other sign."""
    info = np.iinfo(np.int32)
    img = np.array([[info.max, info.max], [info.min, info.min]], np.int32)
    out = backward_warp(img, np.zeros((2, 2, 2), np.float32))
    assert out.dtype == np.int32 and out[0].tolist() == [info.max] * 2 and out[1].tolist() == [info.min] * 2


def test_int64_extremes_saturate_too():
    info = np.iinfo(np.int64)
    out = backward_warp(np.array([[info.max, info.min]], np.int64), np.zeros((1, 2, 2), np.float32))
    assert out.dtype == np.int64 and out[0, 0] > 2**62 and out[0, 1] == info.min
