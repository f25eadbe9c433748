"""Edges of the arithmetic in :mod:`shanshui.flow.sofp` that the mutation run (issue 18, docs/testing.md) showed
untested: ``D_t`` and its reliability, the trust weights, the half-way motion (its coarse grid and its fallbacks),
the midpoint blend and the half-warp baseline.

Each test compares with a value computed by hand (or by numpy/OpenCV directly) and fails when the named mistake is
put back into the code."""

import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.flow.sofp import (
    FILL_WEIGHT,
    _resize,
    _resize_flow,
    agreement,
    consistency_weight,
    half_way_motion,
    midpoint,
    midpoint_halfwarp,
    projection_ratio,
    projection_reliability,
)
from shanshui.flow.warp import backward_warp


def _const_flow(h, w, dx, dy=0.0):
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def _blocks(a, by, bx):
    """Mean over ``by``×``bx`` blocks (what area averaging gives for an integer shrink factor)."""
    h, w = a.shape[:2]
    return a.reshape(h // by, by, w // bx, bx, *a.shape[2:]).mean((1, 3))


# ------------------------------------------------------------------------------------------- D_t
def test_projection_ratio_and_reliability_are_float32_for_float64_flows():
    """Both are documented to return float32, also when the caller's flows are float64 (not ``astype(None)``)."""
    short = np.array([[[2.0, 0.0], [1.0, 1.0]]])
    long = np.array([[[3.0, 4.0], [2.0, 2.0]]])
    ratio = projection_ratio(short, long)
    assert ratio.dtype == np.float32
    np.testing.assert_allclose(ratio, [[1.5, 2.0]], atol=1e-6)
    rel = projection_reliability(short, long)
    assert rel.dtype == np.float32 and rel.shape == (1, 2)


def test_projection_ratio_counts_a_squared_length_equal_to_eps_as_motion():
    """``|V_short|² >= eps`` is defined: at exactly ``eps`` the ratio is computed (3), not set to 0."""
    short = np.array([[[1.0, 0.0]]], np.float32)
    long = np.array([[[3.0, 5.0]]], np.float32)
    assert projection_ratio(short, long, eps=1.0)[0, 0] == pytest.approx(3.0)
    assert projection_ratio(short, long, eps=1.5)[0, 0] == 0.0


def test_projection_ratio_refuses_mismatched_or_flat_flows_by_name():
    """Different sizes (even when they would broadcast) and 2-D arrays are refused with both shapes named."""
    with pytest.raises(ShanshuiError, match=r"^flows must both be \(H, W, 2\), got \(1, 3, 2\) and \(4, 3, 2\)$"):
        projection_ratio(np.ones((1, 3, 2)), np.ones((4, 3, 2)))
    with pytest.raises(ShanshuiError, match=r"^flows must both be \(H, W, 2\), got \(4, 2\) and \(4, 2\)$"):
        projection_ratio(np.ones((4, 2)), np.ones((4, 2)))


def test_half_precision_flows_are_measured_in_float32():
    """float16 flows (e.g. from a half-precision flow network) of a 200 px step: |V|² = 80000 does not fit in
    float16 (max 65504). Computed in float32 the ratio of a parallel, half as long long-range flow is 0.5 and the
    reliability ~0.5; in float16 arithmetic |V|² overflows to inf (ratio 0, reliability NaN)."""
    short = np.array([[[200.0, 200.0], [3.1, -1.7]]], np.float16)
    long = np.array([[[100.0, 100.0], [5.3, 2.9]]], np.float16)
    s, lg = short.astype(np.float64), long.astype(np.float64)  # the exact float16 values
    ref = (s * lg).sum(-1) / (s * s).sum(-1)
    np.testing.assert_allclose(projection_ratio(short, long), ref, rtol=1e-6)
    m2 = (s * s).sum(-1)
    moving = m2 / (m2 + 0.25)
    rel_ref = 1 - moving * (1 - np.clip(ref, 0, 1))
    np.testing.assert_allclose(projection_reliability(short, long), rel_ref, rtol=1e-6)


# -------------------------------------------------------------------------------------- trust weights
def test_consistency_weight_photometric_term_by_hand():
    """Zero flows close every round trip (fb = 1); one pixel of ``b`` differs by 0.6 in one of three channels, so
    its mean error is 0.2, i.e. 0.1 of the data range 2: weight exp(-0.1/0.1) + 1e-4 there, 1 + 1e-4 elsewhere."""
    a = np.ones((8, 8, 3), np.float32)
    b = a.copy()
    b[3, 4, 0] = 1.6
    zero = np.zeros((8, 8, 2), np.float32)
    weight = consistency_weight(zero, zero, a, b, 2.0)
    expected = np.full((8, 8), 1.0 + 1e-4)
    expected[3, 4] = np.exp(-1.0) + 1e-4
    np.testing.assert_allclose(weight, expected, rtol=1e-6)


def test_agreement_floor_scales_with_the_data_range():
    """Unchanged neighbours (d_blend = 0) and half-warps that differ by 0.255 on a 0-255 scale: the floor
    (1e-3·255)^4 equals d_warp^4, so the agreement is eps / (eps + 2·eps) = 1/3 (not ~0). Identical half-warps
    and neighbours give exactly 1/2."""
    zeros = np.zeros((9, 9, 3), np.float32)
    off = np.full((9, 9, 3), 0.255, np.float32)
    np.testing.assert_allclose(agreement(zeros, off, zeros, zeros, 255.0), 1 / 3, rtol=1e-4)
    np.testing.assert_allclose(agreement(zeros, zeros, zeros, zeros, 255.0), 0.5, rtol=1e-6)


# ------------------------------------------------------------------------------- coarse-grid resampling
def test_resize_uses_area_to_shrink_and_linear_to_grow():
    """Shrinking by 4 averages blocks (area), whatever the aspect ratio, also when only the width shrinks or the new
    width is larger than the old height; growing 2×2 -> 4×4 is bilinear; a trailing channel axis of 1 is kept."""
    rng = np.random.default_rng(0)
    img = rng.random((8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_resize(img, (2, 2)), _blocks(img, 4, 4), atol=1e-6)
    wide = rng.random((8, 64)).astype(np.float32)
    np.testing.assert_allclose(_resize(wide, (2, 16)), _blocks(wide, 4, 4), atol=1e-6)
    flat = rng.random((4, 16)).astype(np.float32)  # same height, 4× narrower
    np.testing.assert_allclose(_resize(flat, (4, 4)), _blocks(flat, 1, 4), atol=1e-6)
    tall = rng.random((16, 2)).astype(np.float32)
    np.testing.assert_allclose(_resize(tall, (4, 1)), _blocks(tall, 4, 2), atol=1e-6)
    small = np.array([[0, 4], [8, 12]], np.float32)
    np.testing.assert_allclose(_resize(small, (4, 4)), [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]],
                               atol=1e-6)
    grey = rng.random((8, 8, 1)).astype(np.float32)
    out = _resize(grey, (2, 2))
    assert out.shape == (2, 2, 1)
    np.testing.assert_allclose(out, _blocks(grey, 4, 4), atol=1e-6)


def test_resize_flow_resamples_and_rescales_vectors_per_axis():
    """Area averaging to shrink, bilinear to grow, and dx, dy scaled by the width and height ratios; float32 out."""
    rng = np.random.default_rng(1)
    cases = [((8, 8), (2, 2), (0.25, 0.25)), ((8, 64), (2, 16), (0.25, 0.25)), ((4, 16), (4, 4), (0.25, 1.0))]
    for (h, w), hw, (sx, sy) in cases:
        flow = rng.normal(size=(h, w, 2)).astype(np.float32)
        out = _resize_flow(flow, hw)
        assert out.dtype == np.float32 and out.shape == hw + (2,)
        ref = _blocks(flow, h // hw[0], w // hw[1]) * np.array([sx, sy])
        np.testing.assert_allclose(out, ref, atol=1e-5)
    small = np.stack([np.array([[0, 4], [8, 12]], np.float32)] * 2, -1)
    grown = _resize_flow(small, (4, 4))
    assert grown.dtype == np.float32
    lin = np.array([[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]], np.float32)
    np.testing.assert_allclose(grown, 2 * np.stack([lin, lin], -1), atol=1e-5)


def _pair(h, w, seed=0):
    rng = np.random.default_rng(seed)
    i0 = rng.random((h, w, 3)).astype(np.float32)
    i1 = rng.random((h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f01 = np.stack([3 * np.sin(yy / 3) + 1.5, 2 * np.cos(xx / 2)], -1).astype(np.float32)
    f10 = np.stack([-3 * np.sin(xx / 4), np.cos(yy / 3) - 1.0], -1).astype(np.float32)
    return i0, i1, f01, f10


def test_half_way_motion_stays_at_full_resolution_below_sixteen_times_scale():
    """With the default scale 2 a 16×16 or 31×40 pair is splatted at full size: the same as ``scale=1``."""
    for h, w in [(16, 16), (31, 40)]:
        i0, i1, f01, f10 = _pair(h, w)
        got = half_way_motion(i0, i1, f01, f10, 1.0)
        ref = half_way_motion(i0, i1, f01, f10, 1.0, scale=1)
        for g, r in zip(got[:3], ref[:3]):
            np.testing.assert_array_equal(g, r)


def test_half_way_motion_on_the_coarse_grid_from_thirty_two_px():
    """At min(H, W) = 16·scale = 32 the splatting runs on the (16, 20) grid: inputs shrunk, the reliabilities of
    *both* frames included, and motion, visibility and reliability resampled back to (32, 40)."""
    h, w, hw = 32, 40, (16, 20)
    i0, i1, f01, f10 = _pair(h, w, seed=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rel0 = (0.5 + 0.5 * np.sin(xx / 5) ** 2).astype(np.float32)
    rel1 = (0.1 + 0.3 * np.cos(yy / 6) ** 2).astype(np.float32)
    motion, vis0, vis1, rel = half_way_motion(i0, i1, f01, f10, 1.0, rel0, rel1)
    small = half_way_motion(_resize(i0, hw), _resize(i1, hw), _resize_flow(f01, hw), _resize_flow(f10, hw), 1.0,
                            _resize(rel0, hw), _resize(rel1, hw), scale=1)
    assert motion.dtype == np.float32 and rel is not None and rel.shape == (h, w)
    np.testing.assert_allclose(motion, _resize_flow(small[0], (h, w)), atol=1e-5)
    np.testing.assert_allclose(vis0, _resize(small[1], (h, w)), atol=1e-5)
    np.testing.assert_allclose(vis1, _resize(small[2], (h, w)), atol=1e-5)
    np.testing.assert_allclose(rel, _resize(small[3], (h, w)), atol=1e-5)
    full = half_way_motion(i0, i1, f01, f10, 1.0, rel0, rel1, scale=1)
    assert np.abs(full[0] - motion).max() > 0.1  # the coarse grid is visibly different from full resolution


def test_half_way_motion_of_single_channel_frames_matches_grey_rgb():
    """(H, W, 1) frames on the coarse grid keep their channel axis and give what the same grey as RGB gives."""
    i0, i1, f01, f10 = _pair(32, 40, seed=4)
    g0, g1 = i0[..., :1], i1[..., :1]
    grey = half_way_motion(g0, g1, f01, f10, 1.0)
    rgb = half_way_motion(np.repeat(g0, 3, -1), np.repeat(g1, 3, -1), f01, f10, 1.0)
    for g, r in zip(grey[:3], rgb[:3]):
        np.testing.assert_allclose(g, r, atol=1e-5)


def test_half_way_motion_falls_back_where_nothing_lands():
    """Flows that carry every pixel out of the 16-px frame: nothing arrives (visibility 0), so the motion is the
    same-location average of f01 and -f10, (40 + 60)/2 = 50 px, and the reliability is the fill value 1."""
    f01, f10 = _const_flow(16, 16, 40.0, 2.0), _const_flow(16, 16, -60.0, 4.0)
    img = np.full((16, 16, 3), 0.5, np.float32)
    motion, vis0, vis1, rel = half_way_motion(img, img, f01, f10, 1.0, np.full((16, 16), 0.3, np.float32))
    assert vis0.max() == 0 and vis1.max() == 0
    np.testing.assert_allclose(motion[..., 0], 50.0, rtol=1e-6)
    np.testing.assert_allclose(motion[..., 1], -1.0, rtol=1e-6)
    np.testing.assert_allclose(rel, 1.0, rtol=1e-6)


def test_half_way_reliability_is_the_trust_weighted_mean_of_both_sides():
    """Zero flows and equal frames: each side sends trust w = 1 + 1e-4 onto its own pixel, so the reliability is
    (r0·w + r1·w + FILL) / (2w + FILL), with r1 = 1 when only ``rel0`` is given."""
    rng = np.random.default_rng(5)
    img = rng.random((12, 12, 3)).astype(np.float32)
    zero = np.zeros((12, 12, 2), np.float32)
    w = 1.0 + 1e-4
    for r1, rel1 in [(0.25, np.full((12, 12), 0.25, np.float32)), (1.0, None)]:
        _, vis0, vis1, rel = half_way_motion(img, img, zero, zero, 1.0, np.full((12, 12), 0.5, np.float32), rel1)
        np.testing.assert_allclose(vis0, w, rtol=1e-6)
        np.testing.assert_allclose(vis1, w, rtol=1e-6)
        np.testing.assert_allclose(rel, (0.5 * w + r1 * w + FILL_WEIGHT) / (2 * w + FILL_WEIGHT), rtol=1e-6)


# ---------------------------------------------------------------------------------------- midpoints
def test_midpoint_trust_is_agreement_times_reliability():
    """With both the agreement check and a reliability, the half-way frame is ``t·blend + (1 - t)·average`` with
    ``t = agreement · rel`` (not the reliability alone, not agreement / rel)."""
    i0, i1, f01, f10 = _pair(24, 24, seed=6)
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float32)
    rel0 = (0.2 + 0.8 * (xx / 23)).astype(np.float32)
    out = midpoint(i0, i1, f01, f10, 1.0, rel0, scale=1)
    motion, vis0, vis1, rel = half_way_motion(i0, i1, f01, f10, 1.0, rel0, None, scale=1)
    w0, w1 = backward_warp(i0, -0.5 * motion), backward_warp(i1, 0.5 * motion)
    b0, b1 = (vis0 + 1e-3)[..., None], (vis1 + 1e-3)[..., None]
    blend = (b0 * w0 + b1 * w1) / (b0 + b1)
    trust = (agreement(w0, w1, i0, i1, 1.0) * rel)[..., None]
    np.testing.assert_allclose(out, trust * blend + (1 - trust) * 0.5 * (i0 + i1), atol=1e-5)
    assert 0.05 < trust.mean() < 0.95 and rel.min() < 0.9  # neither factor is trivially 1


def test_halfwarp_baseline_moves_each_neighbour_half_way():
    """A 4-px pan to the right with exact flows (f01 = +4, f10 = -4): the half-warp baseline is the first frame
    moved by 2 px, exactly (integer sample positions), away from the borders."""
    rng = np.random.default_rng(7)
    i0 = rng.random((10, 24, 3)).astype(np.float32)
    i1 = np.empty_like(i0)
    i1[:, 4:] = i0[:, :-4]
    i1[:, :4] = rng.random((10, 4, 3))
    out = midpoint_halfwarp(i0, i1, _const_flow(10, 24, 4.0), _const_flow(10, 24, -4.0))
    np.testing.assert_allclose(out[:, 2:-2], i0[:, :-4], atol=1e-6)


def test_midpoint_of_half_precision_flows_matches_float32_flows():
    """float16 flows of ~190 px (16x400 frames, full-resolution splat) used to overflow the squared lengths of the
    round-trip check and return NaN frames; they now give the float32 answer exactly (190 is exact in float16).
    Both flows point the same way, so the round trip misses by 380 px (380² > 65504, float16's largest value)."""
    rng = np.random.default_rng(0)
    i0 = rng.random((16, 400, 3), dtype=np.float32)
    i1 = np.roll(i0, 190, axis=1)
    f01 = np.zeros((16, 400, 2), np.float32)
    f01[..., 0] = 190.0
    f10 = f01.copy()
    ref = midpoint(i0, i1, f01, f10, 1.0, scale=1)
    half = midpoint(i0, i1, f01.astype(np.float16), f10.astype(np.float16), 1.0, scale=1)
    assert np.isfinite(half).all()
    np.testing.assert_array_equal(half, ref)
