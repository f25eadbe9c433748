"""Long videos: phase split, clip plan, blend weights, noise reschedule, UNet-evaluation count, γ = 1 copies,
seams, chunked decoding/interpolation, streaming writer and the CLI path."""

import math

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


def count_unet_calls(pipe):
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls, hook


# ------------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize("gamma,steps,m", [(0.8, 25, 20), (0.8, 10, 8), (0.75, 10, 8), (0.5, 3, 2), (0.0, 7, 0),
                                           (1.0, 7, 7), (0.7, 10, 7), (0.1, 1, 1)])
def test_shared_steps_is_ceil_gamma_t(gamma, steps, m):
    assert lv.shared_steps(gamma, steps) == m


@pytest.mark.parametrize("n,length,overlap,starts", [
    (40, 16, 4, [0, 12, 24]),
    (128, 16, 4, [0, 11, 22, 34, 45, 56, 67, 78, 90, 101, 112]),
    (12, 4, 0, [0, 4, 8]),
    (10, 16, 4, [0]),
    (17, 16, 0, [0, 1]),
])
def test_clip_starts_cover_the_video_with_enough_overlap(n, length, overlap, starts):
    got = lv.clip_starts(n, length, overlap)
    assert got == starts
    assert got[0] == 0 and got[-1] + min(length, n) == max(n, min(length, n))
    assert all(a + length - b >= overlap for a, b in zip(got, got[1:]))


def test_overlap_weights_cross_fade_and_sum_to_one():
    starts = [0, 12, 24]
    w = lv.overlap_weights(starts, 16, 40)
    total = np.zeros(40)
    for c, s in enumerate(starts):
        total[s : s + 16] += w[c]
    assert np.allclose(total, 1.0)
    # 4 shared frames between clips 0 and 1: clip 1 rises 1/5 .. 4/5, clip 0 falls 4/5 .. 1/5
    assert np.allclose(w[1, :4], [0.2, 0.4, 0.6, 0.8]) and np.allclose(w[0, 12:], [0.8, 0.6, 0.4, 0.2])
    assert np.allclose(w[0, :12], 1.0) and np.allclose(w[2, 4:], 1.0)
    # no overlap: every frame has one owner with weight 1
    assert np.allclose(lv.overlap_weights([0, 4, 8], 4, 12), 1.0)


def test_blend_split_round_trip_and_fusion_makes_shared_frames_agree():
    g = torch.Generator().manual_seed(0)
    starts, n = [0, 12, 24], 40
    w = lv.overlap_weights(starts, 16, n)
    video = torch.randn(4, n, 3, 3, generator=g)
    clips = lv.split_clips(video, starts, 16)
    assert torch.allclose(lv.blend_clips(clips, starts, w, n), video, atol=1e-6)
    noisy = clips + 0.1 * torch.randn(clips.shape, generator=g)
    fused = lv.fuse_overlaps(noisy, starts, w, n)
    assert torch.equal(fused[0, :, 12:], fused[1, :, :4]) and torch.equal(fused[1, :, 12:], fused[2, :, :4])
    assert torch.equal(fused[1, :, 4:12], noisy[1, :, 4:12])                 # unshared frames untouched
    expected = 0.8 * noisy[0, :, 12] + 0.2 * noisy[1, :, 0]
    assert torch.allclose(fused[1, :, 0], expected, atol=1e-6)


def test_shuffling_keeps_the_multiset_of_noise_sequences():
    pool = lv.noise_pool(6, (4, 16, 2, 2), torch.Generator().manual_seed(1))
    again = lv.noise_pool(6, (4, 16, 2, 2), torch.Generator().manual_seed(1))
    assert torch.equal(pool, again)                                           # seeded
    g = torch.Generator().manual_seed(2)
    shuffled = [lv.shuffle_sequences(pool, g) for _ in range(5)]
    key = lambda t: sorted(tuple(s.flatten()[:8].tolist()) for s in t)
    for s in shuffled:
        assert s.shape == pool.shape and key(s) == key(pool)
        matches = [[torch.equal(a, b) for b in pool] for a in s]
        assert all(sum(row) == 1 for row in matches)                          # a permutation of whole sequences
    assert any(not torch.equal(s, pool) for s in shuffled)                    # and not always the identity


def test_reschedule_direction_keeps_unit_variance():
    g = torch.Generator().manual_seed(0)
    prior, eps = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    d = lv.reschedule_direction(prior, eps, 0.2)
    assert abs(d.std().item() - 1.0) < 0.01
    assert torch.allclose(d, (prior + 0.2 * eps) / math.sqrt(1.04))
    assert torch.equal(lv.reschedule_direction(prior, eps, 0.0), prior)


V_OBJECTIVE = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


@pytest.mark.parametrize("objective", [{}, V_OBJECTIVE], ids=["epsilon", "v-zero-snr"])
def test_ddim_update_equals_the_scheduler_step(objective):
    from shanshui.schedulers import split_prediction

    sched = make_scheduler(objective=objective)
    sched.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 3, 2, 2, generator=g)
    for t in sched.timesteps:
        out = torch.randn(z.shape, generator=g)
        ref = sched.step(out, t, z).prev_sample
        x0, eps = split_prediction(sched, out, z, t)
        z2 = lv.ddim_update(sched, t, x0, eps)
        assert torch.isfinite(z2).all()
        assert torch.allclose(z2, ref, atol=1e-5)
        z = ref


# ------------------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("gamma,steps", [(0.5, 4), (0.75, 4), (0.0, 3), (1.0, 3)])
def test_unet_evaluations_equal_t_plus_k_minus_1_times_t_minus_m(pipe, gamma, steps):
    calls, hook = count_unet_calls(pipe)
    r = lv.generate_long(pipe, PROMPT, num_frames=20, clip_frames=8, overlap=2, num_inference_steps=steps,
                         gamma=gamma, output_type="latent", **TINY)
    hook.remove()
    k, m = r.plan.num_clips, math.ceil(gamma * steps)
    assert k == 3
    assert len(calls) == r.unet_evaluations == steps + (k - 1) * (steps - m)


def test_gamma_one_reproduces_clip_one_for_every_clip(pipe):
    g = lambda: torch.Generator().manual_seed(11)
    r = lv.generate_long(pipe, PROMPT, num_frames=12, clip_frames=4, overlap=0, num_inference_steps=3, gamma=1.0,
                         generator=g(), output_type="latent", **TINY)
    z = r.latents[0]                                                          # (c, 12, h, w)
    assert torch.equal(z[:, 0:4], z[:, 4:8]) and torch.equal(z[:, 0:4], z[:, 8:12])
    # ... and clip 1 is exactly what the ordinary 4-frame pipeline produces for the same seed
    short = pipe(PROMPT, num_frames=4, num_inference_steps=3, generator=g(), output_type="latent", **TINY).frames
    assert torch.allclose(z[:, 0:4], short[0], atol=1e-5)


def test_gamma_below_one_varies_the_clips_and_is_seeded(pipe):
    kw = dict(num_frames=12, clip_frames=4, overlap=0, num_inference_steps=4, gamma=0.5, output_type="latent",
              **TINY)
    a = lv.generate_long(pipe, PROMPT, generator=torch.Generator().manual_seed(3), **kw).latents[0]
    b = lv.generate_long(pipe, PROMPT, generator=torch.Generator().manual_seed(3), **kw).latents[0]
    assert torch.equal(a, b)
    assert (a[:, 0:4] - a[:, 4:8]).abs().max() > 1e-3 and (a[:, 4:8] - a[:, 8:12]).abs().max() > 1e-3
    # ω = 0 and γ = 0.5 still copy clip 1 (nothing else tells the clips apart): the randomness is what varies them
    c = lv.generate_long(pipe, PROMPT, generator=torch.Generator().manual_seed(3), omega=0.0, **kw).latents[0]
    assert torch.allclose(c[:, 0:4], c[:, 4:8], atol=1e-6)


def test_shared_frames_agree_and_seams_are_no_larger_than_within_clips(pipe):
    r = lv.generate_long(pipe, PROMPT, num_frames=40, overlap=4, num_inference_steps=4, gamma=0.5,
                         generator=torch.Generator().manual_seed(5), output_type="latent", **TINY)
    clips, starts = r.clip_latents, r.plan.starts
    for i in range(len(starts) - 1):
        shared = starts[i] + 16 - starts[i + 1]
        assert torch.allclose(clips[i][:, 16 - shared :], clips[i + 1][:, :shared], atol=1e-6)
    z = r.latents[0]                                                          # (c, N, h, w)
    step = (z[:, 1:] - z[:, :-1]).abs().mean(dim=(0, 2, 3))                   # change from frame f to f+1
    seams = {s - 1 for s in starts[1:]} | {starts[i] + 15 for i in range(len(starts) - 1)}
    inside = [d for f, d in enumerate(step.tolist()) if f not in seams]
    assert max(step[sorted(seams)].tolist()) <= max(inside) + 1e-6


def test_pipeline_dispatches_long_videos(pipe):
    calls, hook = count_unet_calls(pipe)
    out = pipe(PROMPT, num_frames=40, num_inference_steps=2, seed=0, gamma=0.5, **TINY)
    hook.remove()
    assert out.frames.shape == (1, 40, 32, 32, 3) and 0 <= out.frames.min() and out.frames.max() <= 1
    assert len(calls) == 2 + 2 * 1                                            # K = 3, T = 2, M = 1
    pil = pipe(PROMPT, num_frames=34, num_inference_steps=1, seed=0, output_type="pil", **TINY).frames
    assert len(pil[0]) == 34


@pytest.mark.parametrize("kwargs,message", [
    (dict(gamma=1.5), "gamma=1.5 must be in [0, 1]"),
    (dict(omega=-0.1), "omega=-0.1 must be a finite number >= 0"),
    (dict(overlap=16), "overlap=16 must be an integer in [0, 15]"),
    (dict(clip_frames=33), "clip_frames=33 exceeds this motion module's window of 32 frames"),
    (dict(eta=0.5), "eta=0.5 is not supported for long videos"),
])
def test_long_input_validation(pipe, kwargs, message):
    with pytest.raises(ShanshuiError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pipe(PROMPT, num_frames=40, num_inference_steps=1, **TINY, **kwargs)


# ------------------------------------------------------------------------------------ streaming
def test_chunked_decode_and_interpolation_equal_whole_video(pipe):
    from shanshui.flow import interpolate

    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, 7, 4, 4, generator=g)
    decode = lambda z: pipe.decode_latents(z, 16)
    with torch.no_grad():
        whole = decode(lat)[0].permute(0, 2, 3, 1).numpy()
    chunks = list(lv.iter_decoded(decode, lat, 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert np.allclose(np.concatenate(chunks), whole, atol=1e-5)
    ref = interpolate(whole, times=2)
    got = np.concatenate(list(lv.iter_decoded(decode, lat, 3, interpolate_times=2)))
    assert got.shape == ref.shape == (13, 32, 32, 3)
    assert np.allclose(got, ref, atol=1e-4)


def test_long_video_streams_to_a_sink(pipe):
    seen = []
    out = pipe(PROMPT, num_frames=40, num_inference_steps=1, seed=0, decode_chunk_size=8,
               frame_sink=lambda f: seen.append(f), **TINY)
    assert out.frames is None and [len(f) for f in seen] == [8] * 5
    assert all(f.dtype == np.uint8 and f.shape[1:] == (32, 32, 3) for f in seen)
    ref = pipe(PROMPT, num_frames=40, num_inference_steps=1, seed=0, **TINY).frames[0]
    assert np.abs(np.concatenate(seen).astype(int) - lv.to_uint8(ref).astype(int)).max() <= 1


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".webp", ".png"])
def test_streaming_writer_is_atomic_and_complete(tmp_path, suffix):
    from shanshui.video_io import open_video_writer, read_video

    rng = np.random.default_rng(0)
    frames = (rng.random((10, 16, 24, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"v{suffix}"
    with open_video_writer(path, fps=8, total=10, sheet_tiles=4) as w:
        w.append(frames[:6])
        w.append(frames[6:])
        assert not path.exists()                                              # nothing visible until done
    assert w.count == 10 and path.exists()
    if suffix == ".png":
        from PIL import Image

        sheet = np.asarray(Image.open(path))
        assert sheet.shape == (2 * 16 + 3 * 2, 2 * 24 + 3 * 2, 3)            # 4 tiles of 0, 3, 6, 9
        assert np.array_equal(sheet[2 + 16 + 2 : 2 + 32 + 2, 2 + 24 + 2 : 2 + 48 + 2], frames[9])
    else:
        back, _ = read_video(path)
        assert back.shape == frames.shape
    with pytest.raises(RuntimeError):
        with open_video_writer(tmp_path / f"broken{suffix}") as w:
            w.append(frames[:3])
            raise RuntimeError("interrupted")
    assert not (tmp_path / f"broken{suffix}").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_long_video(capsys, tmp_path, tiny_model_files):
    from shanshui.cli import main
    from shanshui.video_io import read_video

    model, motion = tiny_model_files
    out = tmp_path / "long.mp4"
    code = main(["generate", "misty peaks", "--model", str(model), "--motion-module", str(motion), "--frames", "36",
                 "--size", "32", "--steps", "2", "--gamma", "0.5", "--overlap", "2", "--no-interpolate",
                 "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "(36 frames)" in stdout
    assert read_video(out)[0].shape == (36, 32, 32, 3)
    code = main(["generate", "x", "--model", str(model), "--motion-module", str(motion), "--gamma", "2",
                 "-o", str(tmp_path / "y.mp4")])
    _, err = capsys.readouterr()
    assert code == 2 and "--gamma=2.0 must be in [0, 1]" in err
