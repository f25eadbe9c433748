"""Metrics: PSNR/SSIM equal scikit-image on the same inputs; flow metrics on known motions."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from shanshui.errors import ShanshuiError
from shanshui.metrics import flicker_index, motion_magnitude, psnr, ssim, warping_error


def _pair(dtype=np.uint8, shape=(40, 48, 3), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    noise = rng.normal(0, 12, shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    if dtype != np.uint8:
        return (a / 255).astype(dtype), (b / 255).astype(dtype)
    return a, b


def test_psnr_matches_skimage():
    a, b = _pair()
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    fa, fb = _pair(np.float64)
    assert psnr(fa, fb, data_range=1.0) == pytest.approx(peak_signal_noise_ratio(fa, fb, data_range=1.0), rel=1e-9)
    assert psnr(a, a) == float("inf")
    # hand value: every pixel off by 1 on a 255 scale -> 10·log10(255²) = 48.13 dB
    assert psnr(np.zeros((4, 4)), np.ones((4, 4))) == pytest.approx(20 * np.log10(255))


@pytest.mark.parametrize("shape", [(40, 48), (40, 48, 3)])
def test_ssim_matches_skimage(shape):
    a, b = _pair(shape=shape, seed=1)
    ref = structural_similarity(a, b, data_range=255, channel_axis=-1 if len(shape) == 3 else None)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)
    fa, fb = _pair(np.float32, shape=shape, seed=2)
    ref = structural_similarity(fa, fb, data_range=1.0, channel_axis=-1 if len(shape) == 3 else None)
    assert ssim(fa, fb) == pytest.approx(ref, abs=1e-5)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_of_video_is_mean_over_frames():
    a, b = _pair(shape=(3, 24, 24, 3), seed=3)
    ref = np.mean([structural_similarity(x, y, data_range=255, channel_axis=-1) for x, y in zip(a, b)])
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)


def test_shape_mismatch_is_user_error():
    with pytest.raises(ShanshuiError, match="same shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ShanshuiError, match="at least 2 frames"):
        motion_magnitude(np.zeros((1, 8, 8, 3), np.uint8))


def _moving_clip(step=(2.0, 1.0), n=4):
    from test_flow import textured

    return np.stack([textured(64, 80, 5, shift=(k * step[0], k * step[1])) for k in range(n)])


def test_motion_magnitude_of_known_translation():
    clip = _moving_clip((2.0, 1.0))
    assert motion_magnitude(clip) == pytest.approx(np.hypot(2, 1), rel=0.08)
    static = np.repeat(clip[:1], 3, axis=0)
    assert motion_magnitude(static) == pytest.approx(0.0, abs=1e-3)


def test_motion_magnitude_from_given_flows_exact():
    clip = np.zeros((3, 10, 12, 3), np.uint8)
    flows = np.zeros((2, 10, 12, 2), np.float32)
    flows[0, ..., 0] = 3.0
    flows[1, ..., 1] = 4.0
    assert motion_magnitude(clip, flows) == pytest.approx(3.5)
    # flicker index = mean flow / diagonal, in percent
    assert flicker_index(clip, flows) == pytest.approx(100 * 3.5 / np.hypot(10, 12))
    with pytest.raises(ShanshuiError, match="flows must have shape"):
        motion_magnitude(clip, flows[:1])


def test_flicker_index_orders_calm_and_jittery_clips():
    clip = _moving_clip((1.0, 0.0), n=5)
    rng = np.random.default_rng(0)
    from test_flow import textured

    jitter = np.stack([textured(64, 80, 5, shift=tuple(rng.uniform(-4, 4, 2))) for _ in range(5)])
    assert flicker_index(jitter) > 2 * flicker_index(clip) > 0


def test_warping_error_small_for_consistent_motion_large_for_noise():
    clip = _moving_clip((2.0, 0.0))
    assert warping_error(clip) < 2e-3
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, clip.shape).astype(np.uint8)
    assert warping_error(noise) > 10 * warping_error(clip)
