"""Edges of :mod:`shanshui.pipelines.long_video` that the mutation run (issue 18, docs/testing.md) showed untested.

Each test compares with a value computed by hand or an exact message and fails when the named mistake is put back
into the code."""

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.pipelines import long_video as lv
from shanshui.schedulers import make_scheduler


def test_clip_starts_messages_and_the_overlap_bound():
    """Each refusal names the value and the allowed range; an overlap equal to the clip length is refused."""
    with pytest.raises(ShanshuiError, match=r"^clip_frames=1 must be >= 2$"):
        lv.clip_starts(40, 1, 0)
    for overlap in (16, -1):
        with pytest.raises(ShanshuiError, match=rf"^overlap={overlap} must be in \[0, 15\] \(clip_frames - 1\)$"):
            lv.clip_starts(40, 16, overlap)
    with pytest.raises(ShanshuiError, match=r"^overlap=16 must be in \[0, 15\] \(clip_frames - 1\)$"):
        lv.clip_starts(8, 16, 16)                                  # refused even when one clip would cover the video
    with pytest.raises(ShanshuiError, match=r"^frames=0 must be >= 1$"):
        lv.clip_starts(0, 16, 4)
    assert lv.clip_starts(40, 16, 15) == list(range(25))            # the largest overlap is allowed


def test_make_plan_keeps_every_field():
    """The plan a caller gets back (also ``LongVideoResult.plan``) holds the overlap it was made with."""
    assert lv.make_plan(40, 16, 4, 10, 0.5) == lv.LongPlan(40, 16, 4, (0, 12, 24), 10, 5)
    assert lv.make_plan(10, 16, 3, 8, 1.0) == lv.LongPlan(10, 10, 3, (0,), 8, 8)   # a video shorter than a clip


def test_overlap_weights_of_one_clip_and_of_a_full_overlap():
    """One clip covering the video gets weight 1 everywhere; two clips sharing all L frames cross-fade with the
    documented ramps ``(o − i)/(o + 1)`` and ``(i + 1)/(o + 1)`` right to the first and the last frame."""
    np.testing.assert_array_equal(lv.overlap_weights([0], 16, 16), np.ones((1, 16)))
    np.testing.assert_array_equal(lv.fusion_weights("crossfade", [0], 5, 5), np.ones((1, 5)))
    w = lv.overlap_weights([0, 0], 4, 4)
    np.testing.assert_allclose(w, [[4 / 5, 3 / 5, 2 / 5, 1 / 5], [1 / 5, 2 / 5, 3 / 5, 4 / 5]], atol=1e-15)


def test_ccdm_weights_message_and_update_precision():
    """The coverage refusal names the plan; eq. 11 gives float64 ones even for float32 weights."""
    with pytest.raises(ShanshuiError, match=r"^clips at \[1, 25\] of 16 frames do not cover 41 frames$"):
        lv.ccdm_weights([1, 25], 16, 41)
    got = lv.ccdm_weight_update(np.array([0.7, 3.3, 0.1], np.float32))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-12)       # in float32 0.7 and 3.3 give 1 − 6e-8


def test_check_long_inputs_bounds_types_and_messages():
    """γ in [0, 1] (also for floats), clip_frames an int >= 2 up to the module's window (inclusive)."""
    for gamma in (1.5, -0.1, 2.0):
        with pytest.raises(ShanshuiError, match=rf"^gamma={gamma} must be in \[0, 1\]$"):
            lv.check_long_inputs(gamma, 0.2, 0, 16, 32)
    with pytest.raises(ShanshuiError, match=r"^clip_frames=1 must be an integer >= 2$"):
        lv.check_long_inputs(0.5, 0.2, 0, 1, 32)
    with pytest.raises(ShanshuiError, match=r"^clip_frames=16\.0 must be an integer >= 2$"):
        lv.check_long_inputs(0.5, 0.2, 0, 16.0, 32)                # a float is refused for its type
    with pytest.raises(ShanshuiError, match=r"^overlap=2\.0 must be an integer in \[0, 15\] \(below clip_frames=16\)$"):
        lv.check_long_inputs(0.5, 0.2, 2.0, 16, 32)
    lv.check_long_inputs(1.0, 0.2, 1, 2, 32)                       # the smallest clip, with the largest overlap
    lv.check_long_inputs(0.0, 0.0, 0, 16, 16)                      # a clip as long as the module's window
    with pytest.raises(ShanshuiError, match=r"^clip_frames=17 exceeds this motion module's window of 16 frames$"):
        lv.check_long_inputs(0.5, 0.2, 0, 17, 16)


def test_noise_pool_dtype_and_independence_from_the_default_dtype():
    """The pool is drawn in float32 and then cast, so the same seed gives the same noise whatever dtype is asked
    for and whatever torch's default dtype is."""
    ref = lv.noise_pool(2, (3, 4), torch.Generator().manual_seed(5))
    assert ref.dtype == torch.float32 and ref.shape == (2, 3, 4)
    torch.testing.assert_close(ref, torch.randn((2, 3, 4), generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)
    half = lv.noise_pool(2, (3, 4), torch.Generator().manual_seed(5), dtype=torch.float16)
    assert half.dtype == torch.float16
    assert torch.equal(half, ref.half())
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again = lv.noise_pool(2, (3, 4), torch.Generator().manual_seed(5))
    finally:
        torch.set_default_dtype(before)
    assert again.dtype == torch.float32 and torch.equal(again, ref)


def test_ddim_update_returns_the_latents_dtype():
    """Half-precision latents come back in half precision: the step computed in float32, then cast."""
    sched = make_scheduler()
    sched.set_timesteps(5)
    t = int(sched.timesteps[1])
    prev = t - sched.config.num_train_timesteps // 5
    g = torch.Generator().manual_seed(0)
    x0, d = torch.randn(1, 4, 2, 3, 3, generator=g).half(), torch.randn(1, 4, 2, 3, 3, generator=g).half()
    a = sched.alphas_cumprod[prev].double()
    expected = (a.sqrt() * x0.double() + (1 - a).sqrt() * d.double()).half()
    got = lv.ddim_update(sched, t, x0, d)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
