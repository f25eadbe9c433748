"""Long videos from a short-window motion module: phased inference + shared noise reschedule (SPEC §2.4).

A motion module only ever sees ``clip_frames`` frames (16 by default). A video of ``N`` frames is covered by
``K`` overlapping clips of that length. The work is split in two phases (eq. 9 of the controllable-longer
animation paper):

1. **Shared phase.** Clip 1 is denoised alone for the first ``M = ⌈γ·T⌉`` of the ``T`` DDIM steps. Layout and
   contours are settled in these early, noisy steps, so every other clip simply *inherits* clip 1's state
   after step ``M`` instead of recomputing it.
2. **Per-clip phase.** All ``K`` clips then run the remaining ``T − M`` steps in lock-step. After every step
   the frames two neighbouring clips share are replaced by a cross-faded consensus (linear ramps), so the
   clips are stitched while they are still being denoised and no seam survives to the end.

UNet evaluations: ``T + (K − 1)(T − M)`` instead of ``K·T``. γ = 1 makes every clip a copy of clip 1; γ = 0
shares no step (each clip starts from its own noise), though the reschedule below still pulls every clip's
noise towards clip 1's.

**Shared noise reschedule** (eq. 10–12). In a per-clip step a DDIM update is
``z' = √ᾱ'·x̂0 + √(1−ᾱ')·d`` where ``x̂0`` comes from the clip's own noise prediction and ``d`` is the
direction back to the noise. Clip 1 uses its own prediction for ``d``. Clips 2…K use the *shared prior*
``n(t)`` — clip 1's noise prediction at the same step — plus fresh randomness:
``d = (n(t) + ω·ε) / √(1 + ω²)`` (rescaled so ``d`` keeps unit variance). ``n(t)`` is eq. 10's
``ε_θ(z_t, t, c)`` with the conditioning image noised to step ``t``: text-to-video has no input image, so the
conditioning is clip 1's own result; under deterministic DDIM clip 1's state at step ``t`` *is* that result
noised to ``t``, and its prediction there is computed anyway — the prior costs no extra UNet evaluation.
The randomness comes from a pool of ``K − 1`` noise sequences (one ``(c, L, h, w)`` sequence per later clip,
eq. 12), drawn once from a seeded generator and shuffled among the clips at every step: each clip gets
different randomness at each step, but all clips draw from the same finite pool, which keeps far-apart clips
correlated.

Decoding streams: the stitched latent video (small: 4 channels at 1/8 resolution) is decoded a chunk at a time
and handed to a sink, optionally interpolated (SOFP) per chunk with one shared boundary frame, so the full
video is never held as decoded float frames. Everything here except :func:`generate_long` is a pure function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import check
from ..runtime import DEFAULT_DECODE_CHUNK

DEFAULT_GAMMA = 0.8
DEFAULT_OMEGA = 0.2
DEFAULT_OVERLAP = 4
DEFAULT_CLIP_FRAMES = 16


# ------------------------------------------------------------------------------------------ planning
def shared_steps(gamma: float, steps: int) -> int:
    """``M = ⌈γ·T⌉``: the DDIM steps every clip takes from clip 1's trajectory (clamped to ``[0, T]``)."""
    check(0.0 <= gamma <= 1.0, f"gamma={gamma} must be in [0, 1]")
    check(steps >= 1, f"steps={steps} must be >= 1")
    return min(steps, max(0, math.ceil(gamma * steps - 1e-9)))


def clip_starts(num_frames: int, clip_frames: int, overlap: int) -> list[int]:
    """First frame of each clip: ``K = ⌈(N − O)/(L − O)⌉`` clips of ``L`` frames spread evenly over ``N``
    frames, so neighbours share at least ``O`` frames and the last clip ends on the last frame."""
    check(clip_frames >= 2, f"clip_frames={clip_frames} must be >= 2")
    check(0 <= overlap < clip_frames, f"overlap={overlap} must be in [0, {clip_frames - 1}] (clip_frames - 1)")
    check(num_frames >= 1, f"frames={num_frames} must be >= 1")
    if num_frames <= clip_frames:
        return [0]
    k = math.ceil((num_frames - overlap) / (clip_frames - overlap))
    return [int(round(s)) for s in np.linspace(0, num_frames - clip_frames, k)]


@dataclass(frozen=True)
class LongPlan:
    """How a long video is cut into clips and steps."""

    num_frames: int
    clip_frames: int
    overlap: int
    starts: tuple[int, ...]
    steps: int
    shared: int  # M

    @property
    def num_clips(self) -> int:
        return len(self.starts)

    @property
    def unet_evaluations(self) -> int:
        """``T + (K − 1)(T − M)``."""
        return self.steps + (self.num_clips - 1) * (self.steps - self.shared)


def make_plan(num_frames: int, clip_frames: int, overlap: int, steps: int, gamma: float) -> LongPlan:
    starts = clip_starts(num_frames, clip_frames, overlap)
    return LongPlan(num_frames, min(clip_frames, num_frames), overlap, tuple(starts), steps,
                    shared_steps(gamma, steps))


# ------------------------------------------------------------------------------------------ blending
def overlap_weights(starts, clip_frames: int, num_frames: int) -> np.ndarray:
    """Per-clip, per-frame blend weights ``(K, L)``: linear cross-fades over each shared stretch.

    In a stretch of ``o`` frames shared by two neighbours the outgoing clip's weight falls as
    ``(o − i)/(o + 1)`` while the incoming one's rises as ``(i + 1)/(o + 1)``; frames a single clip covers
    get weight 1. The weights are normalised so that, at every frame of the video, those of the clips
    covering it sum to 1.
    """
    starts = list(starts)
    k, length = len(starts), clip_frames
    check(k >= 1 and starts[0] == 0 and starts[-1] + length == num_frames,
          f"clips at {starts} of {length} frames do not cover {num_frames} frames")
    j = np.arange(length, dtype=np.float64)
    raw = np.ones((k, length))
    for c in range(k):
        left = starts[c - 1] + length - starts[c] if c > 0 else 0
        right = starts[c] + length - starts[c + 1] if c < k - 1 else 0
        if left > 0:
            raw[c] = np.minimum(raw[c], np.minimum(1.0, (j + 1) / (left + 1)))
        if right > 0:
            raw[c] = np.minimum(raw[c], np.minimum(1.0, (length - j) / (right + 1)))
    total = np.zeros(num_frames)
    for c, s in enumerate(starts):
        total[s : s + length] += raw[c]
    check(bool(np.all(total > 0)), f"clips at {starts} leave frames uncovered")
    return np.stack([raw[c] / total[s : s + length] for c, s in enumerate(starts)])


FUSIONS = ("crossfade", "ccdm")


def ccdm_weight_update(w: np.ndarray) -> np.ndarray:
    """CCDM eq. 11 as printed: ``w ← w/(w + 1) + 1/(w + 1)``.

    The two terms add up to ``(w + 1)/(w + 1) = 1``: after one update every weight is 1, whatever it was.
    Kept as a function so that this reading is explicit and tested."""
    w = np.asarray(w, dtype=np.float64)
    return w / (w + 1.0) + 1.0 / (w + 1.0)


def ccdm_weights(starts, clip_frames: int, num_frames: int) -> np.ndarray:
    """Per-clip, per-frame weights ``(K, L)`` of CCDM's multi-frame fusion (eq. 11–12).

    Every clip covering a frame starts with weight 1 (``w^{(0)}``), eq. 11 updates it (to 1 again, see
    :func:`ccdm_weight_update`), and eq. 12 normalises over the clips covering the frame: a shared frame is
    the plain mean of the clips' results — equal weights over the whole overlap, where the cross-fade of
    :func:`overlap_weights` ramps."""
    starts = list(starts)
    check(len(starts) >= 1 and starts[0] == 0 and starts[-1] + clip_frames == num_frames,
          f"clips at {starts} of {clip_frames} frames do not cover {num_frames} frames")
    raw = ccdm_weight_update(np.ones((len(starts), clip_frames)))
    total = np.zeros(num_frames)
    for c, s in enumerate(starts):
        total[s : s + clip_frames] += raw[c]
    return np.stack([raw[c] / total[s : s + clip_frames] for c, s in enumerate(starts)])


def fusion_weights(fusion: str, starts, clip_frames: int, num_frames: int) -> np.ndarray:
    check(fusion in FUSIONS, f"fusion='{fusion}' must be one of {', '.join(FUSIONS)}")
    if fusion == "ccdm":
        return ccdm_weights(starts, clip_frames, num_frames)
    return overlap_weights(starts, clip_frames, num_frames)


def blend_clips(clips: torch.Tensor, starts, weights: np.ndarray, num_frames: int) -> torch.Tensor:
    """Stitch clip latents ``(K, c, L, h, w)`` into one video ``(c, N, h, w)`` with ``weights`` ``(K, L)``."""
    k, c, length, h, w = clips.shape
    out = torch.zeros((c, num_frames, h, w), dtype=clips.dtype, device=clips.device)
    wt = torch.as_tensor(weights, dtype=clips.dtype, device=clips.device)            # (K, L)
    for i, s in enumerate(starts):
        out[:, s : s + length] += clips[i] * wt[i].view(1, length, 1, 1)
    return out


def split_clips(video: torch.Tensor, starts, clip_frames: int) -> torch.Tensor:
    """Cut a video latent ``(c, N, h, w)`` back into clips ``(K, c, L, h, w)``."""
    return torch.stack([video[:, s : s + clip_frames] for s in starts])


def fuse_overlaps(clips: torch.Tensor, starts, weights: np.ndarray, num_frames: int) -> torch.Tensor:
    """Replace every shared frame in every clip by the weighted consensus of the clips that hold it."""
    return split_clips(blend_clips(clips, starts, weights, num_frames), starts, clips.shape[2])


# ------------------------------------------------------------------------------------------ noise
def noise_pool(num_sequences: int, shape, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """``num_sequences`` standard-normal noise sequences of ``shape`` (eq. 11's ε), from a seeded generator."""
    return torch.randn((num_sequences, *shape), generator=generator, dtype=torch.float32).to(dtype)


def shuffle_sequences(pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly permute the sequences of ``pool`` along its first axis (eq. 12's shuffle)."""
    return pool[torch.randperm(pool.shape[0], generator=generator)]


def reschedule_direction(prior: torch.Tensor, randomness: torch.Tensor, omega: float) -> torch.Tensor:
    """``(n(t) + ω·ε) / √(1 + ω²)`` — the shared prior with extra randomness, kept at unit variance."""
    return (prior + omega * randomness) / math.sqrt(1.0 + omega * omega)


def ddim_update(scheduler, t, x0: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from the predicted clean latent ``x0`` whose "direction pointing to
    x_t" is ``direction``; with ``(x0, direction)`` from :func:`~shanshui.schedulers.split_prediction` of the
    same output it equals ``DDIMScheduler.step(output, t, sample)`` (for ε and v models alike)."""
    t = int(t)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_prev = (scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod).to(
        x0.device, torch.float32)
    return (a_prev.sqrt() * x0.float() + (1 - a_prev).sqrt() * direction.float()).to(x0.dtype)


# ------------------------------------------------------------------------------------------ decoding
def iter_decoded(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, chunk: int,
                 interpolate_times: int = 1, flow: str = "dis") -> Iterator[np.ndarray]:
    """Decode a latent video ``(1, c, N, h, w)`` ``chunk`` frames at a time; yield float32 ``(n, H, W, 3)``
    frames in [0, 1].

    With ``interpolate_times > 1`` each chunk is SOFP-interpolated together with the last frame of the
    previous chunk (the shared boundary frame, not yielded twice), giving ``(N − 1)·times + 1`` frames in all.
    """
    from ..flow import interpolate

    check(chunk >= 1, f"decode_chunk_size={chunk} must be >= 1")
    n = latents.shape[2]
    last = None
    for a in range(0, n, chunk):
        with torch.no_grad():
            frames = decode(latents[:, :, a : a + chunk])[0].permute(0, 2, 3, 1).cpu().float().numpy()  # (n, H, W, 3)
        if interpolate_times > 1:
            block = frames if last is None else np.concatenate([last[None], frames])
            last = frames[-1]
            if len(block) >= 2:
                out = interpolate(block, times=interpolate_times, flow=flow)
                frames = out if a == 0 else out[1:]
        yield np.ascontiguousarray(frames, dtype=np.float32)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------ entry point
@dataclass
class LongVideoResult:
    """``latents``: the stitched latent video ``(1, c, N, h, w)``; ``frames``: decoded ``(1, F, H, W, 3)``
    float32 (``None`` when streamed to a sink or when only latents were asked for); ``plan``: the clip/step plan;
    ``clip_latents``: the per-clip latents ``(K, c, L, h, w)`` after denoising; ``unet_evaluations``: counted."""

    latents: torch.Tensor
    frames: np.ndarray | None
    plan: LongPlan
    clip_latents: torch.Tensor
    unet_evaluations: int


def check_long_inputs(gamma: float, omega: float, overlap: int, clip_frames: int, max_frames: int) -> None:
    check(isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0, f"gamma={gamma} must be in [0, 1]")
    check(isinstance(omega, (int, float)) and math.isfinite(omega) and omega >= 0,
          f"omega={omega} must be a finite number >= 0")
    check(isinstance(clip_frames, int) and clip_frames >= 2, f"clip_frames={clip_frames} must be an integer >= 2")
    check(clip_frames <= max_frames,
          f"clip_frames={clip_frames} exceeds this motion module's window of {max_frames} frames")
    check(isinstance(overlap, int) and 0 <= overlap < clip_frames,
          f"overlap={overlap} must be an integer in [0, {clip_frames - 1}] (below clip_frames={clip_frames})")


@torch.no_grad()
def generate_long(pipe, prompt: str, negative_prompt: str | None = None, num_frames: int = 128,
                  height: int | None = None, width: int | None = None, num_inference_steps: int = 25,
                  guidance_scale: float = 8.0, generator: torch.Generator | None = None,
                  gamma: float = DEFAULT_GAMMA, omega: float = DEFAULT_OMEGA, overlap: int = DEFAULT_OVERLAP,
                  clip_frames: int | None = None, decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
                  interpolate_times: int = 1, interpolation_flow: str = "dis", output_type: str = "np",
                  frame_sink: Callable[[np.ndarray], None] | None = None, progress: bool = True,
                  fusion: str = "crossfade") -> LongVideoResult:
    """Generate a video of any length with ``pipe`` (a :class:`TextToVideoPipeline`).

    ``frame_sink``: called with uint8 ``(n, H, W, 3)`` chunks in order as they are decoded; the frames are then
    not kept (``result.frames`` is ``None``), so memory does not grow with the length of the video.
    ``output_type="latent"`` skips decoding. ``fusion``: how shared frames are merged after every per-clip
    step — ``"crossfade"`` (linear ramps, :func:`overlap_weights`) or ``"ccdm"`` (CCDM eq. 11–12, equal
    weights, :func:`ccdm_weights`).
    """
    from diffusers import DDIMScheduler

    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    height = native if height is None else height
    width = native if width is None else width
    clip_frames = min(DEFAULT_CLIP_FRAMES, pipe.max_frames) if clip_frames is None else clip_frames
    pipe.check_inputs(prompt, negative_prompt, num_frames, height, width, num_inference_steps, guidance_scale,
                      decode_chunk_size)
    check_long_inputs(gamma, omega, overlap, clip_frames, pipe.max_frames)
    check(isinstance(pipe.scheduler, DDIMScheduler),
          f"long videos need the DDIM scheduler, got {type(pipe.scheduler).__name__}")
    check(output_type in ("np", "latent"), f"output_type='{output_type}' must be np or latent for long videos")
    check(interpolate_times in (1, 2, 4, 8), f"interpolate_times={interpolate_times} must be 1, 2, 4 or 8")
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(0)
    plan = make_plan(num_frames, clip_frames, overlap, num_inference_steps, gamma)
    length, k = plan.clip_frames, plan.num_clips
    weights = fusion_weights(fusion, plan.starts, length, num_frames)

    # 1. Prompt and timesteps
    text_embeds = pipe.encode_prompt(prompt, negative_prompt, cfg=guidance_scale > 1.0)
    pipe.scheduler.set_timesteps(num_inference_steps, device=pipe._execution_device)
    timesteps = pipe.scheduler.timesteps

    # 2. Clip 1's starting noise, then a separate seeded stream for the reschedule randomness
    shape = (1, pipe.unet.config.in_channels, length, height // pipe.vae_scale_factor,
             width // pipe.vae_scale_factor)
    z = pipe.prepare_latents(shape, torch.float32, generator)                  # (1, c, L, h, w)
    noise_gen = torch.Generator(device="cpu").manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    pool = noise_pool(k - 1, shape[1:], noise_gen).to(z.device, z.dtype)          # (K-1, c, L, h, w)

    evaluations = 0
    bar = tqdm(total=plan.unet_evaluations, desc=f"clip 1/{k}", unit="eval", disable=not progress, leave=False)

    # 3. Shared phase: clip 1 alone for the first M steps
    for step, t in enumerate(timesteps[: plan.shared]):
        bar.set_postfix_str(f"step {step + 1}/{plan.steps}")
        x0, eps = pipe.split(pipe.predict(z, t, text_embeds, guidance_scale), z, t)
        evaluations += 1
        z = ddim_update(pipe.scheduler, t, x0, eps)
        bar.update()

    # 4. Per-clip phase: every clip starts from clip 1's state, then K clips step together
    clips = z.expand(k, *z.shape[1:]).clone()                                      # (K, c, L, h, w)
    if plan.shared == 0 and k > 1:  # γ = 0: nothing is shared, each clip starts from its own noise
        clips[1:] = pipe.prepare_latents((k - 1, *shape[1:]), torch.float32, generator)
    if k > 1:
        bar.set_description(f"clips 1-{k}")
    for step, t in enumerate(timesteps[plan.shared :], start=plan.shared):
        bar.set_postfix_str(f"step {step + 1}/{plan.steps}")
        eps, x0 = torch.empty_like(clips), torch.empty_like(clips)
        for i in range(k):
            out = pipe.predict(clips[i : i + 1], t, text_embeds, guidance_scale)
            x0[i], eps[i] = (v[0] for v in pipe.split(out, clips[i : i + 1], t))
            evaluations += 1
            bar.update()
        directions = eps.clone()
        if k > 1:
            randomness = shuffle_sequences(pool, noise_gen)                         # (K-1, c, L, h, w)
            directions[1:] = reschedule_direction(eps[0:1], randomness, omega)
        clips = ddim_update(pipe.scheduler, t, x0, directions)
        if k > 1:
            clips = fuse_overlaps(clips, plan.starts, weights, num_frames)
    bar.close()

    # 5. Stitch (shared frames already agree unless no per-clip step ran) and decode in chunks
    latents = blend_clips(clips, plan.starts, weights, num_frames)[None]          # (1, c, N, h, w)
    frames = None
    if output_type != "latent":
        decode = lambda zz: pipe.decode_latents(zz, decode_chunk_size)
        kept = []
        for chunk in iter_decoded(decode, latents, decode_chunk_size, interpolate_times, interpolation_flow):
            if frame_sink is not None:
                frame_sink(to_uint8(chunk))
            else:
                kept.append(chunk)
        if frame_sink is None:
            frames = np.concatenate(kept)[None]
    return LongVideoResult(latents=latents, frames=frames, plan=plan, clip_latents=clips,
                           unet_evaluations=evaluations)
