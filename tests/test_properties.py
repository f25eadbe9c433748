"""Property-based tests (hypothesis) for the invariants of the core: slerp endpoints, norms and angles; the
densified arrow field's support and threshold; Fréchet-distance identities; long-video frame bookkeeping;
interpolation frame indices."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------- slerp
@st.composite
def latent_pairs(draw):
    b, f = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(b, 2, f, 2, 3, generator=g, dtype=torch.float64)
    s = torch.randn(b, 2, f, 2, 3, generator=g, dtype=torch.float64)
    return r, s


@FAST
@given(latent_pairs())
def test_slerp_starts_at_the_painting_path_and_ends_at_the_proxy(pair):
    from shanshui.latent_ops import slerp_frames

    r, s = pair
    for linear in (False, True):
        out = slerp_frames(r, s, linear=linear)
        torch.testing.assert_close(out[:, :, 0], r[:, :, 0], atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out[:, :, -1], s[:, :, -1], atol=1e-9, rtol=1e-9)


@FAST
@given(latent_pairs(), st.floats(0.0, 1.0))
def test_slerp_keeps_the_norm_and_splits_the_angle(pair, beta):
    """With one β for every frame, slerp of two equal-norm videos keeps the norm, and the result lies at angle
    β·θ from the first and (1−β)·θ from the second (θ = the angle between them)."""
    from shanshui.latent_ops import slerp_frames

    r, s = pair
    b = r.shape[0]
    s = s * (r.reshape(b, -1).norm(dim=1) / s.reshape(b, -1).norm(dim=1)).view(b, 1, 1, 1, 1)  # equal norms
    f = r.shape[2]
    out = slerp_frames(r, s, betas=torch.full((f,), beta, dtype=torch.float64))
    flat = lambda t: t.reshape(b, -1)
    angle = lambda u, v: torch.arccos(((flat(u) * flat(v)).sum(1) / (flat(u).norm(dim=1) * flat(v).norm(dim=1))
                                       ).clamp(-1, 1))
    theta = angle(r, s)
    torch.testing.assert_close(flat(out).norm(dim=1), flat(r).norm(dim=1), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(angle(r, out), beta * theta, atol=1e-5, rtol=1e-6)   # arccos near 0: ~1e-8 → 1e-4
    torch.testing.assert_close(angle(out, s), (1 - beta) * theta, atol=1e-5, rtol=1e-6)


# ------------------------------------------------------------------------------------- arrow field
@st.composite
def arrow_sets(draw):
    from shanshui.control.arrows import make_arrow

    h, w = draw(st.integers(6, 20)), draw(st.integers(6, 20))
    n = draw(st.integers(1, 4))
    arrows = []
    for _ in range(n):
        x0, y0 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        dx, dy = draw(st.integers(-8, 8)), draw(st.integers(-8, 8))
        strength = draw(st.sampled_from([0.5, 1.0, 2.0]))
        arrows.append(make_arrow([x0, y0, x0 + dx, y0 + dy, strength]))
    return arrows, h, w


@FAST
@given(arrow_sets(), st.floats(0.5, 12.0), st.floats(0.0, 1.0))
def test_densified_field_support_and_threshold(case, sigma, r):
    from shanshui.control.arrows import densify, sparse_flow, threshold

    arrows, h, w = case
    sparse = sparse_flow(arrows, h, w)
    dense = densify(sparse, sigma)
    # the sparse field is non-zero only at arrow starts, and holds the strength-weighted displacement sums
    starts = {(int(round(a.y0)), int(round(a.x0))) for a in arrows}
    nz = {tuple(p) for p in np.argwhere(np.any(sparse != 0, axis=-1))}
    assert nz <= starts
    for y, x in starts:
        want = sum(np.float32(a.displacement) for a in arrows if (int(round(a.y0)), int(round(a.x0))) == (y, x))
        np.testing.assert_allclose(sparse[y, x], want, atol=1e-5)
    # at each start the dense field is at least the sparse value's Gaussian-weighted self-term
    # (exactly equal when the start is the only one): checked against a direct sum
    yy, xx = np.mgrid[0:h, 0:w]
    ref = np.zeros((h, w, 2))
    for y, x in nz:
        ref += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / sigma**2)[..., None] * sparse[y, x]
    np.testing.assert_allclose(dense, ref, atol=1e-4, rtol=1e-4)
    # thresholding keeps exactly the pixels whose magnitude exceeds R (values unchanged), zeroes the rest
    big = float(np.linalg.norm(dense, axis=-1).max()) * r
    kept = threshold(dense, big)
    mag = np.linalg.norm(dense, axis=-1)
    assert np.array_equal(np.any(kept != 0, axis=-1), (mag > big) & np.any(dense != 0, axis=-1))
    np.testing.assert_array_equal(kept[mag > big], dense[mag > big])


# ------------------------------------------------------------------------------------------- Fréchet
@FAST
@given(st.integers(0, 10_000), st.integers(1, 4), st.floats(-3, 3))
def test_frechet_distance_identities(seed, d, shift):
    from shanshui.metrics.probe import frechet_distance

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(30, d)), rng.normal(size=(25, d)) * 1.5
    assert frechet_distance(a, a) < 1e-8                                                 # d(X, X) = 0
    assert math.isclose(frechet_distance(a, b), frechet_distance(b, a), rel_tol=1e-6, abs_tol=1e-9)
    # a pure shift of the mean adds |Δμ|² (the covariances are unchanged)
    delta = np.full(d, shift)
    assert math.isclose(frechet_distance(a, a + delta), float(delta @ delta), rel_tol=1e-6, abs_tol=1e-8)
    assert frechet_distance(a, b) >= 0


# ------------------------------------------------------------------------------------- long videos
@FAST
@given(st.integers(1, 200), st.integers(2, 24), st.data())
def test_long_video_clip_plan_and_weights(n, length, data):
    from shanshui.pipelines import long_video as lv

    overlap = data.draw(st.integers(0, length - 1))
    starts = lv.clip_starts(n, length, overlap)
    if n <= length:
        assert starts == [0]
        return
    assert starts[0] == 0 and starts[-1] + length == n and starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:]):
        assert b - a <= length - overlap                                 # neighbours share >= overlap frames
    k = len(starts)
    assert k == math.ceil((n - overlap) / (length - overlap))
    w = lv.overlap_weights(starts, length, n)
    total = np.zeros(n)
    for c, s in enumerate(starts):
        total[s:s + length] += w[c]
    np.testing.assert_allclose(total, 1.0, atol=1e-12)                    # every frame's weights sum to 1
    assert (w > 0).all()
    video = torch.randn(2, n, 1, 1, dtype=torch.float64)
    clips = lv.split_clips(video, starts, length)
    torch.testing.assert_close(lv.blend_clips(clips, starts, w, n), video)   # split then blend is the identity


@FAST
@given(st.floats(0.0, 1.0), st.integers(1, 60))
def test_shared_steps_bounds(gamma, steps):
    from shanshui.pipelines import long_video as lv

    m = lv.shared_steps(gamma, steps)
    assert 0 <= m <= steps and m >= gamma * steps - 1e-6 and m - 1 < gamma * steps + 1e-6


# ----------------------------------------------------------------------------------- interpolation
@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.sampled_from([1, 2, 4, 8]), st.integers(0, 1000))
def test_interpolation_frame_indices(frames, times, seed):
    from shanshui.flow import interpolate

    clip = np.random.default_rng(seed).integers(0, 256, (frames, 8, 8, 3), dtype=np.uint8)
    out = interpolate(clip, times, method="linear")
    assert out.shape == ((frames - 1) * times + 1, 8, 8, 3)
    np.testing.assert_array_equal(out[::times], clip)                     # originals at every times-th index
    if times > 1:                                                         # the middle of each gap: the average
        mid = out[times // 2::times].astype(float)
        np.testing.assert_allclose(mid, (clip[:-1].astype(float) + clip[1:]) / 2, atol=1.0)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.sampled_from([1, 2, 4]))
def test_chunked_decoding_keeps_every_frame_once(n, chunk, times):
    """Decoding in chunks with per-chunk interpolation yields (N−1)·times + 1 frames, the decoded originals at
    every times-th position, whatever the chunk size."""
    from shanshui.pipelines.long_video import iter_decoded

    g = torch.Generator().manual_seed(n * 31 + chunk)
    latents = torch.rand(1, 3, n, 16, 16, generator=g)
    decode = lambda z: z.permute(0, 2, 1, 3, 4)                            # (1, c, k, h, w) -> (1, k, 3, H, W)
    frames = np.concatenate(list(iter_decoded(decode, latents, chunk, interpolate_times=times)))
    assert frames.shape == ((n - 1) * times + 1, 16, 16, 3)
    originals = latents[0].permute(1, 2, 3, 0).numpy()                    # (n, h, w, 3)
    np.testing.assert_allclose(frames[::times], originals, atol=1e-6)
