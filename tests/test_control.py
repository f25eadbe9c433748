"""Motion control: arrows -> dense field (SPEC eq. 5-7) on hand examples, cinemagraphs, image intake, and the
control / style measures."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from shanshui.control import arrows as A
from shanshui.control.cinemagraph import animate, displacements
from shanshui.control.evaluate import control_errors, style_drift
from shanshui.errors import ShanshuiError
from shanshui.image_intake import plan_geometry, prepare_painting, read_image


# ------------------------------------------------------------------------------------------------ arrows
def test_parse_arrow_and_json(tmp_path):
    assert A.parse_arrow("1,2,5,2") == A.Arrow(1, 2, 5, 2, 1.0)
    assert A.parse_arrow(" 1.5, 2 ,5,2, 0.5").strength == 0.5
    f = tmp_path / "a.json"
    f.write_text(json.dumps([[0, 0, 3, 4], {"from": [1, 1], "to": [2, 1], "strength": 2}]))
    assert A.load_arrows(f) == [A.Arrow(0, 0, 3, 4, 1.0), A.Arrow(1, 1, 2, 1, 2.0)]
    f.write_text(json.dumps({"arrows": [[0, 0, 1, 1, 3]]}))
    assert A.load_arrows(f)[0].displacement == (3.0, 3.0)


@pytest.mark.parametrize("text,message", [
    ("1,2,3", "has 3 numbers"),
    ("1,2,a,4", "must hold numbers"),
    ("1,2,3,4,-1", "strength=-1 must be in [0, 10]"),
    ("1,2,3,nan", "non-finite"),
])
def test_bad_arrows(text, message):
    with pytest.raises(ShanshuiError, match=message.replace("[", r"\[").replace("]", r"\]")):
        A.parse_arrow(text)


def test_sparse_flow_is_eq5():
    sparse = A.sparse_flow([A.Arrow(1, 2, 4, 0, 0.5), A.Arrow(3.2, 0.6, 3.2, 2.6)], 4, 5)
    expected = np.zeros((4, 5, 2), np.float32)
    expected[2, 1] = (1.5, -1.0)       # (4-1, 0-2) * 0.5 at the start pixel (x=1, y=2)
    expected[1, 3] = (0.0, 2.0)        # start rounded to (3, 1)
    np.testing.assert_array_equal(sparse, expected)


def test_densify_and_threshold_by_hand():
    sparse = np.zeros((3, 4, 2), np.float32)
    sparse[0, 0] = (2.0, 0.0)
    sparse[2, 3] = (0.0, -1.0)
    sigma = 2.0
    dense = A.densify(sparse, sigma)
    # p = (x=1, y=1): distance² 2 to (0,0), 5 to (3,2)
    np.testing.assert_allclose(dense[1, 1], [2 * math.exp(-2 / 4), -math.exp(-5 / 4)], rtol=1e-6)
    # p = (x=3, y=0): distance² 9 to (0,0), 4 to (3,2)
    np.testing.assert_allclose(dense[0, 3], [2 * math.exp(-9 / 4), -math.exp(-4 / 4)], rtol=1e-6)
    np.testing.assert_allclose(dense[0, 0], [2.0, -math.exp(-13 / 4)], rtol=1e-6)
    kept = A.threshold(dense, 0.5)
    mags = np.linalg.norm(dense, axis=-1)
    assert np.all((np.linalg.norm(kept, axis=-1) > 0) == (mags > 0.5))
    np.testing.assert_array_equal(kept[mags > 0.5], dense[mags > 0.5])


def test_dense_field_relative_threshold_mask_and_strength():
    arrow = A.Arrow(10, 10, 20, 10)           # displacement 10 px to the right
    still = np.zeros((24, 40), bool)
    still[:, 30:] = True
    field = A.dense_field([arrow], 24, 40, sigma=6.0, r=0.05, still=still, strength=2.0)
    # eq. 6 with one arrow: 10·exp(-(d/6)²); eq. 7 keeps it where that exceeds 0.05·10; then ×2
    yy, xx = np.mgrid[0:24, 0:40]
    g = 10 * np.exp(-((xx - 10) ** 2 + (yy - 10) ** 2) / 36.0)
    expected = np.where((g > 0.5) & ~still, 2 * g, 0.0)
    np.testing.assert_allclose(field[..., 0], expected, rtol=1e-5, atol=1e-6)
    assert np.all(field[..., 1] == 0)
    assert A.default_sigma(256, 512) == 170.0 and A.default_sigma(64, 32) == pytest.approx(170 / 8)
    assert np.all(A.dense_field([], 8, 8) == 0)


def test_load_mask_white_and_alpha(tmp_path):
    m = np.zeros((10, 20), np.uint8)
    m[:, :5] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    got = A.load_mask(tmp_path / "m.png", 10, 20)
    assert got[:, :5].all() and not got[:, 5:].any()
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[5:, :, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    got = A.load_mask(tmp_path / "a.png", 5, 10)            # resized, alpha decides
    assert got[3:].all() and not got[:2].any()


# ------------------------------------------------------------------------------------------ cinemagraph
def test_uniform_field_shifts_by_k_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    v = np.zeros((16, 24, 2), np.float32)
    v[..., 0] = 1.0
    video = animate(image, v, 4)
    np.testing.assert_array_equal(video[0], image)
    for k in range(1, 4):
        np.testing.assert_array_equal(video[k][:, k:], image[:, :-k])      # content moved right by k
        np.testing.assert_array_equal(video[k][:, 0], image[:, 0])         # edge replicated
    d = displacements(v, 3)
    np.testing.assert_allclose(d[2, ..., 0], -2.0)


def test_cinemagraph_flow_matches_field_and_control_errors():
    from shanshui.data.procedural import render_clip, sample_scene

    image = render_clip(sample_scene(5), frames=2, size=96)[0][0]
    v = np.zeros((96, 96, 2), np.float32)
    v[20:76, 20:76] = (1.0, -0.5)
    video = animate(image, v, 5)
    errs = control_errors(video, v)
    assert errs["direction"] > 0.8 and errs["epe"] < 0.8
    still = np.linalg.norm(v, axis=-1) == 0
    static = control_errors(np.repeat(image[None], 5, 0), v, still=still)
    assert static["direction"] == 0.0 and static["epe"] == pytest.approx(float(np.hypot(1, 0.5)), abs=0.05)
    assert static["still_motion"] < 0.05
    drift = style_drift(np.repeat(image[None], 3, 0), image)
    assert drift["colour"] == 0 and drift["texture"] == 0
    inverted = style_drift((255 - image)[None], image)
    assert inverted["colour"] > 20


# ------------------------------------------------------------------------------------------- intake
def test_fit_keeps_aspect_on_multiples_of_8():
    g = plan_geometry(1000, 600, "fit", 512)
    assert g.size == (512, 304) and g.resized == (512, 308) and g.offset == (0, -2)
    g = plan_geometry(300, 900, "fit", 128)
    assert g.size == (40, 128)
    g = plan_geometry(100, 50, "crop", size=(64, 64))
    assert g.size == (64, 64) and g.resized == (128, 64) and g.offset == (-32, 0)
    g = plan_geometry(100, 50, "pad", size=(64, 64))
    assert g.resized == (64, 32) and g.offset == (0, 16) and g.content == (0, 16, 64, 48)
    with pytest.raises(ShanshuiError, match="too elongated"):
        plan_geometry(2000, 50, "fit", 512)
    with pytest.raises(ShanshuiError, match="policy='stretch' must be one of fit, crop, pad"):
        plan_geometry(10, 10, "stretch")


def test_read_converts_rgba_gray_16bit(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255                                     # top opaque red-ish, bottom transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgb, notes = read_image(tmp_path / "a.png")
    assert rgb[0, 0].tolist() == [200, 0, 0] and rgb[7, 7].tolist() == [255, 255, 255]
    assert any("transparency" in n for n in notes)
    Image.fromarray(np.full((6, 6), 90, np.uint8)).save(tmp_path / "g.png")
    rgb, notes = read_image(tmp_path / "g.png")
    assert rgb.shape == (6, 6, 3) and (rgb == 90).all()
    Image.fromarray(np.full((6, 6), 65535, np.uint16)).save(tmp_path / "w.png")
    arr = np.asarray(Image.open(tmp_path / "w.png"))
    assert arr.max() == 65535                                  # really a 16-bit file
    rgb, notes = read_image(tmp_path / "w.png")
    assert (rgb == 255).all() and any("16-bit" in n for n in notes)


def test_read_cmyk_palette_animated_exif(tmp_path):
    Image.new("CMYK", (5, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    rgb, notes = read_image(tmp_path / "c.jpg")
    assert rgb.shape == (4, 5, 3) and rgb.min() > 240 and "CMYK image converted to RGB" in notes
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    rgb, _ = read_image(tmp_path / "p.png")
    assert rgb[0, 0].tolist() == [10, 20, 30]
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    rgb, notes = read_image(tmp_path / "a.gif")
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 1] < 50 and any("first frame" in n for n in notes)
    im = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))
    exif = im.getexif()
    exif[0x0112] = 6                                           # rotate 90° clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    rgb, notes = read_image(tmp_path / "r.jpg")
    assert rgb.shape == (6, 4, 3) and "EXIF orientation applied" in notes


def test_refusals(tmp_path):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ShanshuiError, match=r"100x100 = 0.0 MP; the limit is 0.005 MP"):
        read_image(tmp_path / "big.png", max_pixels=5000)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ShanshuiError, match="not a readable image"):
        read_image(tmp_path / "junk.png")
    Image.fromarray(np.full((8, 8), 3.0, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ShanshuiError, match=r"float image values span \[3, 3\]"):
        read_image(tmp_path / "f.tif")
    with pytest.raises(ShanshuiError, match="does not exist"):
        read_image(tmp_path / "nope.png")


def test_prepare_painting_maps_points():
    p = prepare_painting(np.zeros((50, 100, 3), np.uint8), "pad", size=(64, 64))
    assert p.image.shape == (64, 64, 3)
    # pixel centres map to pixel centres: x' = (x + 0.5)·0.64 − 0.5 (+ 16 px of padding above)
    assert p.map_xy(0, 0) == pytest.approx((-0.18, 15.82), abs=1e-9)
    assert p.map_xy(99, 49) == pytest.approx((63.18, 47.18), abs=1e-9)
