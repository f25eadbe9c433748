"""Edges of shanshui.control.arrows found by the mutation run (issue 18): each test pins behaviour that a
surviving mutant changed. Equivalent mutants are listed with their reasons in the mutation notes."""

from __future__ import annotations

import locale
import math

import numpy as np
import pytest
from PIL import Image

from shanshui.control import arrows as ar
from shanshui.errors import ShanshuiError


def test_make_arrow_default_place_name_and_zero_strength():
    """Called without ``where`` the message says "arrow"; strength 0 (an arrow that does not move) is allowed,
    the range is [0, MAX] with both ends inclusive."""
    with pytest.raises(ShanshuiError, match=r"^arrow has 3 numbers; expected x0,y0,x1,y1\[,strength\]$"):
        ar.make_arrow([1, 2, 3])
    with pytest.raises(ShanshuiError, match=r"^arrow strength=10\.5 must be in \[0, 10\]$"):
        ar.make_arrow([0, 0, 1, 1, 10.5])
    assert ar.make_arrow([0, 0, 4, 4, 0]) == ar.Arrow(0, 0, 4, 4, 0.0)
    assert ar.parse_arrow("1, 2, 3, 4, 0").strength == 0.0


def test_arrow_objects_without_strength_get_strength_one():
    """``{"from": .., "to": ..}`` without ``strength`` is an arrow of strength 1 (as the list form)."""
    got = ar.arrows_from_data([{"from": [1, 2], "to": [4, 6]}, {"from": [0, 0], "to": [1, 0], "strength": 3}])
    assert got == [ar.Arrow(1, 2, 4, 6, 1.0), ar.Arrow(0, 0, 1, 0, 3.0)]
    assert got[0].displacement == (3.0, 4.0)
    assert ar.parse_arrows_json('{"arrows": [{"from": [1, 2], "to": [4, 6]}]}') == [ar.Arrow(1, 2, 4, 6, 1.0)]


def test_arrow_file_missing_and_undecodable_bytes(tmp_path):
    """A missing file is named; bytes that are not UTF-8 are replaced, not an exception: an arrow file with a
    stray Latin-1 byte inside a string it ignores still loads, and one after the data is a JSON error."""
    with pytest.raises(ShanshuiError, match=r"^arrow file '.*nope\.json' does not exist$"):
        ar.load_arrows(tmp_path / "nope.json")
    (tmp_path / "latin1.json").write_bytes(b'[{"from": [1, 2], "to": [3, 4], "label": "caf\xe9"}]')
    assert ar.load_arrows(tmp_path / "latin1.json") == [ar.Arrow(1, 2, 3, 4, 1.0)]
    (tmp_path / "tail.json").write_bytes(b"[[0, 0, 1, 1]]\xff")
    with pytest.raises(ShanshuiError, match=r"^arrow file '.*tail\.json' is not valid JSON: "
                                            r"Extra data: line 1 column 15 \(char 14\)$"):
        ar.load_arrows(tmp_path / "tail.json")


def test_arrow_files_are_read_as_utf8_whatever_the_locale(tmp_path):
    """JSON files are UTF-8: under an ASCII locale a two-character CJK label still counts as two characters
    (the error column would move by four if the file were decoded with the locale's encoding)."""
    text = '{"note": "山水", "arrows": [[0, 0, 1, 1]],}'
    (tmp_path / "a.json").write_bytes(text.encode("utf-8"))
    col = text.index("}") + 1
    want = (rf"^arrow file '.*a\.json' is not valid JSON: Expecting property name enclosed in double quotes: "
            rf"line 1 column {col} \(char {col - 1}\)$")
    old = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        if locale.getencoding().lower().replace("-", "") == "utf8":
            pytest.skip("the C locale is UTF-8 here")
        with pytest.raises(ShanshuiError, match=want):
            ar.load_arrows(tmp_path / "a.json")
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_densify_refuses_sigma_zero():
    """σ must be > 0: σ = 0 would divide by zero (NaN at the arrow's own pixel)."""
    sparse = np.zeros((3, 3, 2), np.float32)
    sparse[1, 1] = (1.0, 0.0)
    with pytest.raises(ShanshuiError, match=r"^sigma=0\.0 must be a finite number > 0$"):
        ar.densify(sparse, 0.0)


def test_fields_are_float32_at_every_step():
    """threshold, apply_still_mask and dense_field (with and without a still mask) return float32 fields, also
    for float64 input."""
    dense = np.zeros((4, 5, 2), np.float64)
    dense[1, 2] = (3.0, 4.0)
    kept = ar.threshold(dense, 1.0)
    assert kept.dtype == np.float32 and kept[1, 2].tolist() == [3.0, 4.0] and np.count_nonzero(kept) == 2
    still = np.zeros((4, 5), bool)
    still[1, 2] = True
    for field in (dense, dense.astype(np.float32)):
        masked = ar.apply_still_mask(field, still)
        assert masked.dtype == np.float32 and not masked.any()
    arrows = [ar.Arrow(2, 2, 6, 2)]
    plain = ar.dense_field(arrows, 8, 8)
    assert plain.dtype == np.float32 and plain[2, 2].tolist() == [4.0, 0.0]
    assert ar.dense_field(arrows, 8, 8, still=np.zeros((8, 8), bool)).dtype == np.float32


def test_dense_field_threshold_uses_the_longest_single_arrow_of_several():
    """R is relative to the longest *arrow*, not to the norm of all arrows together: with arrows of lengths 10
    and 5 and R = 0.9 the cut is at 9 px (the norm of both would be 11.2 px and zero everything)."""
    arrows = [ar.Arrow(2, 2, 12, 2), ar.Arrow(20, 20, 20, 25)]
    sigma = 4.0
    want = ar.threshold(ar.densify(ar.sparse_flow(arrows, 32, 32), sigma), 0.9 * 10.0)
    got = ar.dense_field(arrows, 32, 32, sigma=sigma, r=0.9)
    np.testing.assert_array_equal(got, want)
    assert got[2, 2, 0] == 10.0 and abs(got[2, 2, 1]) < 1e-6 and not got[20, 20].any()


def test_dense_field_global_strength_zero_and_its_checks():
    """A global strength of 0 gives a still field; negative or non-finite strengths are refused by name."""
    arrows = [ar.Arrow(4, 4, 8, 4)]
    zero = ar.dense_field(arrows, 8, 8, strength=0.0)
    assert zero.shape == (8, 8, 2) and zero.dtype == np.float32 and not zero.any()
    for bad in (-1.0, math.inf):
        with pytest.raises(ShanshuiError, match=rf"^strength={bad} must be a finite number >= 0$"):
            ar.dense_field(arrows, 8, 8, strength=bad)


def test_dense_field_without_arrows_is_a_zero_field_of_the_requested_size():
    """No arrows (or none that moves): a float32 (H, W, 2) zero field at once. σ and R are not used then, so a
    σ of 0 (refused when there are arrows) is no error, and an empty size gives an empty field."""
    for arrows in ([], [ar.Arrow(1, 1, 1, 1)]):
        none = ar.dense_field(arrows, 6, 5)
        assert none.shape == (6, 5, 2) and none.dtype == np.float32 and not none.any()
    assert not ar.dense_field([], 6, 5, sigma=0.0).any()
    assert ar.dense_field([], 0, 5).shape == (0, 5, 2)
    with pytest.raises(ShanshuiError, match=r"^sigma=0\.0 must be"):
        ar.dense_field([ar.Arrow(1, 1, 3, 1)], 6, 5, sigma=0.0)


def test_still_masks_missing_file_and_nearest_resizing(tmp_path):
    """A missing mask file is named. Resizing is nearest-neighbour also when shrinking: a 3x3 mask with only
    its centre white becomes one still pixel (a bicubic shrink would blur it to grey 39, "not still")."""
    with pytest.raises(ShanshuiError, match=r"^mask '.*none\.png' does not exist$"):
        ar.load_mask(tmp_path / "none.png", 4, 4)
    dot = np.zeros((3, 3), np.uint8)
    dot[1, 1] = 255
    Image.fromarray(dot, "L").save(tmp_path / "dot.png")
    assert ar.load_mask(tmp_path / "dot.png", 1, 1).tolist() == [[True]]
    ring = 255 - dot
    Image.fromarray(ring, "L").save(tmp_path / "ring.png")
    assert ar.load_mask(tmp_path / "ring.png", 1, 1).tolist() == [[False]]
