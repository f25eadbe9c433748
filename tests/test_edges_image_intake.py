"""Edges of the painting intake (shanshui.image_intake) found by the mutation run (issue 18).

Each test pins behaviour a caller can see: values against hand-computed answers or OpenCV, and exact messages.
"""

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from shanshui.errors import ShanshuiError
from shanshui.image_intake import (Geometry, apply_geometry, array_to_rgb, plan_geometry, prepare_painting,
                                   read_image)


def test_background_channels_outside_0_255_saturate_instead_of_wrapping():
    """A background colour beyond the 8-bit range is clipped to 0 or 255 (never wrapped around), for arrays,
    PIL images and files alike."""
    bg = (300, -20, 128)
    clear = np.zeros((2, 2, 4), np.uint8)                      # fully transparent: the background shows
    rgb, _ = array_to_rgb(clear, background=bg)
    assert rgb.dtype == np.uint8 and (rgb == np.array([255, 0, 128], np.uint8)).all()
    out = prepare_painting(Image.fromarray(np.zeros((40, 40, 4), np.uint8)), "crop", size=(32, 32), background=bg)
    assert (out.image == np.array([255, 0, 128], np.uint8)).all()
    # half-transparent red over a redder-than-red background: about 0.5·255 + 0.5·400 = 327 -> 255 (not 327 - 256)
    half = np.zeros((2, 2, 4), np.uint8)
    half[..., 0], half[..., 3] = 255, 128
    assert array_to_rgb(half, background=(400, 0, 0))[0][0, 0].tolist() == [255, 0, 0]


def test_float32_file_values_round_exactly_at_half_levels(tmp_path):
    """A 32-bit float image is scaled in double precision: a value a hair under half a level rounds down
    (float32 arithmetic would round 0.0019607842·255 = 0.49999997 up to 1)."""
    values = np.array([[0.0019607841968536377, 0.5039215683937073, 0.0019607844, 1.0]], np.float32)
    exact = values.astype(np.float64) * 255.0
    assert exact[0, 0] < 0.5 and exact[0, 1] < 128.5 and exact[0, 2] > 0.5   # the first two are just below
    Image.fromarray(values).save(tmp_path / "f.tif")
    rgb, _ = read_image(tmp_path / "f.tif")
    assert rgb[0, :, 0].tolist() == [0, 128, 1, 255]


@pytest.mark.parametrize("source, message", [
    (Image.new("RGB", (0, 0)), r"^painting is empty \(0x0\)$"),
    (Image.new("I;16", (5, 0)), r"^painting is empty \(5x0\)$"),
    (Image.new("F", (0, 4)), r"^painting is empty \(0x4\)$"),
    (Image.new("L", (5, 0)), r"^painting is empty \(5x0\)$"),
    (np.zeros((0, 0, 3), np.uint8), r"^image array is empty \(shape \(0, 0, 3\)\)$"),
    (np.zeros((0, 5), np.float32), r"^image array is empty \(shape \(0, 5, 1\)\)$"),
    (np.zeros((4, 0, 4), np.uint16), r"^image array is empty \(shape \(4, 0, 4\)\)$"),
])
def test_empty_images_are_refused_with_one_line(source, message):
    """A painting with a zero side, as a PIL image of any mode or as an array of any dtype, is refused by name
    before any conversion (it used to end in a ZeroDivisionError or a numpy reduction error)."""
    with pytest.raises(ShanshuiError, match=message):
        prepare_painting(source)


def test_plan_geometry_refuses_an_empty_size():
    for w, h in ((0, 10), (10, 0), (-3, 8)):
        with pytest.raises(ShanshuiError, match=rf"^an image of {w}x{h} px is empty: nothing to place$"):
            plan_geometry(w, h, "crop", size=(32, 32))


def test_an_array_rounds_like_the_same_picture_read_from_a_float_file(tmp_path):
    """array_to_rgb and read_image agree value for value on a float32 picture whose values sit a hair from
    half a level, and on a uint16 RGBA pixel whose exact composite is just under a half level."""
    values = np.array([[0.0019607841968536377, 0.5039215683937073, 0.0019607844, 1.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    from_file, _ = read_image(tmp_path / "f.tif")
    from_array, _ = array_to_rgb(values)
    assert from_array.tolist() == from_file.tolist() and from_array[0, :, 0].tolist() == [0, 128, 1, 255]
    # 27482/65535 · 31694/65535 · 255 + 170 · (1 − 31694/65535) = 139.49998…: 139, not 140
    px = np.array([[[27482, 27482, 27482, 31694]]], np.uint16)
    exact = 27482 / 65535 * 31694 / 65535 * 255 + 170 * (1 - 31694 / 65535)
    assert 139.49 < exact < 139.5
    assert array_to_rgb(px, background=(170, 170, 170))[0][0, 0].tolist() == [139, 139, 139]


def test_float_arrays_of_any_precision_and_their_range():
    """float16/float32/float64 arrays in [0, 1] are all accepted; 1.5 is refused with the exact message; an
    array of the wrong rank is refused by array_to_rgb itself with the shape in the message."""
    for dtype in (np.float16, np.float32, np.float64):
        rgb, notes = array_to_rgb(np.full((2, 2), 0.5, dtype))
        assert (rgb == 128).all() and rgb.shape == (2, 2, 3), dtype
        assert notes == ["grayscale converted to RGB"]
    with pytest.raises(ShanshuiError, match=r"^float image values span \[1.5, 1.5\]; expected \[0, 1\]$"):
        array_to_rgb(np.full((2, 2), 1.5))
    with pytest.raises(ShanshuiError, match=r"^image array must be \(H, W\) or \(H, W, C\), got shape \(5,\)$"):
        array_to_rgb(np.zeros(5, np.uint8))


def test_fit_long_side_and_short_side_bounds_are_inclusive():
    """long_side 32 is allowed (24, a multiple of 8 below 32, and 32.0, not an int, are not); a canvas whose
    short side comes out at exactly 32 is allowed."""
    assert plan_geometry(100, 100, "fit", 32).size == (32, 32)
    for bad in (24, 32.0):
        with pytest.raises(ShanshuiError, match=rf"^long side={bad} must be a multiple of 8 and >= 32$"):
            plan_geometry(100, 100, "fit", bad)
    # 200x50 at long side 128: s = 0.64, short side 32 exactly
    assert plan_geometry(200, 50, "fit", 128) == Geometry((200, 50), (128, 32), (0, 0), (128, 32))


def test_pad_keeps_a_one_pixel_wide_line_one_pixel_wide():
    # s = 64/1000: the width 1·s rounds to 0 and is kept at 1 px, centred
    assert plan_geometry(1, 1000, "pad", size=(64, 64)) == Geometry((1, 1000), (1, 64), (31, 0), (64, 64))


def test_size_limit_messages_show_megapixels_to_one_decimal(tmp_path):
    """1050x1000 = 1.05 MP shows as 1.1 MP (a divisor of 1000001 would give 1.0)."""
    with pytest.raises(ShanshuiError, match=r"^painting is 1050x1000 = 1.1 MP; the limit is 1 MP$"):
        prepare_painting(Image.new("L", (1050, 1000)), max_pixels=1_000_000)
    Image.new("L", (1050, 1000)).save(tmp_path / "wide.png")
    with pytest.raises(ShanshuiError, match=r"^painting 'wide.png' is 1050x1000 = 1.1 MP; the limit is 1 MP "
                                            r"\(downscale it first\)$"):
        read_image(tmp_path / "wide.png", max_pixels=1_000_000)


def test_read_image_restores_the_callers_pillow_pixel_limit(tmp_path, monkeypatch):
    """Whatever limit the caller had set in Pillow is back after reading (and did not apply during it)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 12345)
    Image.new("RGB", (200, 200)).save(tmp_path / "a.png")     # 40000 px: over twice that (Pillow's bomb error)
    assert read_image(tmp_path / "a.png")[0].shape == (200, 200, 3)
    assert Image.MAX_IMAGE_PIXELS == 12345


def test_read_image_messages_for_directories_non_images_and_one_pixel_wide_files(tmp_path):
    with pytest.raises(ShanshuiError, match=rf"^painting '{re.escape(str(tmp_path))}' is not a file$"):
        read_image(tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ShanshuiError, match=r"^painting '.*notes.png' is not a readable image "
                                            r"\(UnidentifiedImageError\)$"):
        read_image(tmp_path / "notes.png")
    # a 1-pixel-wide painting is readable (not "empty")
    Image.fromarray(np.full((5, 1, 3), 9, np.uint8)).save(tmp_path / "column.png")
    rgb, notes = read_image(tmp_path / "column.png")
    assert rgb.shape == (5, 1, 3) and (rgb == 9).all() and notes == []


def test_read_image_refuses_an_image_with_a_zero_side(tmp_path, monkeypatch):
    """Pillow's own formats never report a zero side, but a decoder that did would get the 'empty' message."""
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: Image.new("RGB", (0, 5)))
    with pytest.raises(ShanshuiError, match=r"^painting 'a.png' is empty \(0x5\)$"):
        read_image(tmp_path / "a.png")


def test_wide_downscale_averages_areas_and_equal_pixel_counts_are_bicubic():
    """Area averaging is used when the pixel count shrinks (also for wide images), bicubic otherwise, including
    a reshaping that keeps the pixel count (one side up, the other down)."""
    img = (np.random.default_rng(3).random((32, 128, 3)) * 255).astype(np.uint8)
    g = plan_geometry(128, 32, "pad", size=(64, 64))            # 128x32 -> 64x16, centred vertically
    assert g.resized == (64, 16) and g.offset == (0, 24)
    out = apply_geometry(img, g)
    np.testing.assert_array_equal(out[24:40], cv2.resize(img, (64, 16), interpolation=cv2.INTER_AREA))
    swap = Geometry((128, 32), (32, 128), (0, 0), (32, 128))    # same 4096 px, transposed shape
    np.testing.assert_array_equal(apply_geometry(img, swap), cv2.resize(img, (32, 128), interpolation=cv2.INTER_CUBIC))


def test_bool_masks_resized_smoothly_are_thresholded_at_one_half():
    """A bool mask resized without ``nearest`` is averaged as 0/1 and rounded: a 2x2 block a quarter covered
    turns off, one three quarters covered turns on."""
    mask = np.zeros((64, 64), bool)
    mask[::2, ::2] = True                                      # left half: one pixel of each 2x2 block
    mask[:, 32:] = True
    mask[1::2, 33::2] = False                                  # right half: three pixels of each block
    out = apply_geometry(mask, plan_geometry(64, 64, "crop", size=(32, 32)))
    assert out.dtype == bool and not out[:, :16].any() and out[:, 16:].all()


def test_pad_colour_reads_the_last_column():
    """The pad colour is the median of the four outer borders: the last column (not the one before it)."""
    img = np.array([[0, 0, 0, 0, 0],
                    [100, 0, 0, 0, 100],
                    [200, 200, 200, 200, 200]], np.uint8)
    # borders: 0 x5, 200 x5, first column (0, 100, 200), last column (0, 100, 200): median 100
    # (the column before the last, (0, 0, 200), would give (0 + 100) / 2 = 50)
    assert apply_geometry(img, Geometry((5, 3), (5, 3), (0, 0), (8, 8)))[7, 7] == 100


def test_one_pixel_wide_or_high_pil_paintings_are_not_empty():
    """A 1-px-wide or 1-px-high PIL image is a (thin) painting: with policy "pad" it lands on the canvas as a
    line of its colour; only a zero side is empty."""
    for size in ((1, 40), (40, 1)):
        out = prepare_painting(Image.new("RGB", size, (200, 10, 10)), "pad", size=(32, 32), background=(255, 255, 255))
        assert out.image.shape == (32, 32, 3)
        assert (out.image.reshape(-1, 3) == [200, 10, 10]).all(axis=1).any()
