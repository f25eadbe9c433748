"""CCDM multi-frame fusion (eq. 11-12) for overlapping clips of long videos, next to the cross-fade."""

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.pipelines import long_video as lv
from shanshui.pipelines.text_to_video import TextToVideoPipeline
from shanshui.schedulers import make_scheduler

PROMPT = "Slow scroll along misty peaks, a boat on the river."
TINY = dict(height=32, width=32, progress=False)


@pytest.fixture()
def pipe(tiny, tiny_video_unet):
    return TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())


def test_eq11_has_the_fixed_point_one():
    w = np.array([0.01, 0.5, 1.0, 3.0, 100.0])
    np.testing.assert_allclose(lv.ccdm_weight_update(w), 1.0, atol=1e-12)


def test_ccdm_weights_are_equal_over_the_overlap_and_sum_to_one():
    starts, length, n = [0, 12, 24], 16, 40
    w = lv.ccdm_weights(starts, length, n)
    assert w.shape == (3, 16)
    np.testing.assert_allclose(w[0, :12], 1.0)
    np.testing.assert_allclose(w[0, 12:], 0.5)            # frames 12-15: clips 0 and 1, half each
    np.testing.assert_allclose(w[1, :4], 0.5)
    np.testing.assert_allclose(w[1, 4:12], 1.0)
    total = np.zeros(n)
    for c, s in enumerate(starts):
        total[s : s + length] += w[c]
    np.testing.assert_allclose(total, 1.0)
    cross = lv.overlap_weights(starts, length, n)
    assert np.abs(cross - w).max() > 0.1                   # the cross-fade ramps instead
    with pytest.raises(ShanshuiError, match="fusion='blend' must be one of crossfade, ccdm"):
        lv.fusion_weights("blend", starts, length, n)


def test_long_video_with_ccdm_fusion(pipe):
    kw = dict(num_frames=28, overlap=4, num_inference_steps=3, gamma=0.5, output_type="latent", **TINY)
    a = lv.generate_long(pipe, PROMPT, generator=torch.Generator().manual_seed(2), fusion="ccdm", **kw)
    b = lv.generate_long(pipe, PROMPT, generator=torch.Generator().manual_seed(2), fusion="crossfade", **kw)
    clips, starts = a.clip_latents, a.plan.starts
    for i in range(len(starts) - 1):                      # shared frames agree after the last fusion
        shared = starts[i] + 16 - starts[i + 1]
        assert torch.allclose(clips[i][:, 16 - shared :], clips[i + 1][:, :shared], atol=1e-6)
    # the stitched video is the clips' mean on shared frames
    s1 = starts[1]
    torch.testing.assert_close(a.latents[0, :, s1], clips[1][:, 0], atol=1e-6, rtol=0)
    assert (a.latents - b.latents).abs().max() > 1e-4
    out = pipe(PROMPT, num_frames=28, num_inference_steps=2, seed=1, fusion="ccdm", **TINY).frames
    assert out.shape == (1, 28, 32, 32, 3)
