"""Painting -> video, training-free (Every Painting Awakened, SPEC §4), with arrow/strength control
(SPEC §2.2–2.3).

The same base model and motion module as text-to-video; no new weights. Stages of ``__call__``:

1. Intake: the painting is converted to 8-bit RGB and fitted to a size the model accepts
   (:mod:`shanshui.image_intake`); the latent grid follows its aspect ratio.
2. Motion field: arrows (in the original painting's pixels) -> sparse flow -> Gaussian densification ->
   threshold -> still mask -> × strength (:mod:`shanshui.control.arrows`), divided by ``L − 1`` to a
   per-frame velocity.
3. Proxy image (§4.1): img2img of the painting with the same prompt — the painting latent is noised to
   ``proxy_strength·T`` and denoised by DDIM with the *video* UNet on a one-frame clip. Its spatial layers
   are SD's image model; the motion modules see a single frame, so they cannot move anything and act as a
   small residual that was zero-initialised in training. Using the loaded UNet avoids keeping a second
   (2D) copy in memory. A user-supplied proxy image replaces this stage.
4. Static -> moving latents: painting and proxy are each animated along the field as an Eulerian
   cinemagraph (:mod:`shanshui.control.cinemagraph`) and VAE-encoded frame by frame; without a field they
   are simply replicated over the ``L`` frames.
5. Dual-path VSDS (§4.2): both latent videos are refined with one fixed noise sample over the sampler's
   timesteps in ``[p·T, T]`` (``p = 0.6``) with stepwise-decreasing weights
   (:func:`shanshui.latent_ops.vsds`).
6. Hybrid latent fusion (§4.3): slerp over frames, ``β_l = l/(L−1)`` (or linear, for the ablation).
7. Image-to-video denoising: the fused latent is noised with the same ``ε`` to the first timestep below
   ``p·T`` and DDIM-denoised over the remaining timesteps. Before every step, frame 0 is overwritten with
   the painting's latent noised to the current level (the known-region replacement of inpainting samplers,
   along the time axis), and so are the still-mask region (in every frame) and, during the first
   ``motion_guidance`` fraction of the steps, the moving region (with the fused latent of stage 6, which
   carries the cinemagraph's motion together with what VSDS and the proxy added; re-imposing the plain
   cinemagraph there would erase both, since with the paper's σ the region covers most of the frame).
   After the last step the clean latents are put back, so frame 0 decodes to the VAE reconstruction of
   the painting exactly.
8. Decode; inside the still mask every frame takes decoded frame 0's pixels (3 px feathered edge, see
   :func:`hold_still`; ``still_composite=False`` turns it off); with ``policy="pad"`` the padding is
   cropped away again.

Ablations: ``use_proxy=False`` (VSDS on the painting only, no fusion), ``use_vsds=False`` (fusion of the
static latents), ``fusion="linear"``. Defaults are listed and explained in ``docs/painting_to_video.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ..control import arrows as arrow_ops
from ..control.cinemagraph import animate
from ..errors import check
from ..image_intake import POLICIES, Painting, fit_to, prepare_painting, read_image
from ..latent_ops import P_VSDS, alpha_schedule, slerp_frames, vsds, vsds_timesteps
from ..runtime import DEFAULT_DECODE_CHUNK
from .text_to_video import DEFAULT_FRAMES, DEFAULT_GUIDANCE, DEFAULT_STEPS, TextToVideoPipeline

DEFAULT_PROXY_STRENGTH = 0.5
DEFAULT_MOTION_GUIDANCE = 0.5
STILL_FEATHER = 3
FUSIONS = ("slerp", "linear")
CONTROLS = ("trained", "training-free", "none")
MAX_SPEED = 32.0          # px/frame; and at most a quarter of the canvas' shorter side
MIN_SIDE = 16             # px: smaller paintings are refused (nothing to animate at 1/8 latent resolution)


@dataclass
class PaintingVideoOutput:
    """``frames`` as in :class:`~shanshui.pipelines.text_to_video.VideoOutput`, plus what was built:
    ``painting`` (the working :class:`Painting`), ``proxy`` uint8 ``(H, W, 3)`` or None, ``velocity`` float32
    ``(H, W, 2)`` px/frame on the working canvas, ``still`` bool ``(H, W)`` or None, ``fused`` the initial
    latent video after VSDS and fusion ``(1, c, L, h, w)``."""

    frames: object
    latents: torch.Tensor
    painting: Painting
    proxy: np.ndarray | None
    velocity: np.ndarray
    still: np.ndarray | None
    fused: torch.Tensor | None = None


def scale_to_speed(velocity: np.ndarray, speed: float, r: float = arrow_ops.THRESHOLD) -> np.ndarray:
    """Scale ``velocity`` ``(H, W, 2)`` px/frame so that its mean speed over the region where it moves (speed
    above ``r`` × its maximum, eq. 7's relative threshold) is ``speed``. A zero field stays zero."""
    mag = np.linalg.norm(velocity, axis=-1)
    top = float(mag.max()) if mag.size else 0.0
    if top == 0.0:
        return velocity
    region = mag > r * top
    return (velocity * np.float32(speed / float(mag[region].mean()))).astype(np.float32)


def check_animatable(painting: Painting) -> None:
    """Refuse paintings too small to animate (below ``MIN_SIDE`` px on a side, before any resizing)."""
    w, h = painting.geometry.original
    check(min(w, h) >= MIN_SIDE, f"the painting is {w}x{h} px, too small to animate: it needs at least "
                                 f"{MIN_SIDE} px on each side")


def _latent_mask(mask: np.ndarray, h: int, w: int, device, dtype) -> torch.Tensor:
    """A pixel mask ``(H, W)`` -> soft latent mask ``(1, 1, 1, h, w)`` (area fraction per latent cell)."""
    small = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).to(device, dtype)[None, None, None]


def hold_still(video: torch.Tensor, still: np.ndarray, feather: int = STILL_FEATHER) -> torch.Tensor:
    """Copy decoded frame 0 into every frame where ``still`` (bool ``(H, W)``) holds. The weight ramps from 0
    at the mask's edge to 1 at ``feather`` px inside it (so nothing outside the mask changes). The latents
    there are already the painting's, but a decoder's receptive field reaches across the mask border; this
    makes "still" exact in pixels without a visible seam."""
    inside = cv2.distanceTransform(still.astype(np.uint8), cv2.DIST_L2, 3)           # px to the nearest 0
    m = np.clip(inside / max(feather, 1), 0, 1).astype(np.float32)
    m = torch.from_numpy(m).to(video.device, video.dtype)[None, None, None]          # (1, 1, 1, H, W)
    return video[:, :1] * m + video * (1 - m)


class PaintingToVideoPipeline(TextToVideoPipeline):
    """Painting + prompt -> video with the text-to-video components (see the module docstring)."""

    # ------------------------------------------------------------------ helpers
    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, chunk: int = 8) -> torch.Tensor:
        """uint8 ``(n, H, W, 3)`` -> latents ``(1, c, n, H/8, W/8)`` (posterior mean × scaling factor)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self._execution_device, self.vae.dtype)
        x = x.permute(0, 3, 1, 2) / 127.5 - 1.0                                       # (n, 3, H, W)
        was_training = self.vae.training
        self.vae.eval()  # as decode_latents: the same numbers whether the model was built or loaded
        try:
            z = torch.cat([self.vae.encode(x[i : i + chunk]).latent_dist.mean for i in range(0, len(x), chunk)])
        finally:
            self.vae.train(was_training)
        z = z.float() * self.vae.config.scaling_factor                                # (n, c, h, w), float32
        return z.permute(1, 0, 2, 3).unsqueeze(0)                                     # (1, c, n, h, w)

    def noise_to(self, z0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``√ᾱ_t·z0 + √(1−ᾱ_t)·ε`` with the sampler's schedule."""
        return self.scheduler.add_noise(z0, noise, torch.as_tensor([int(t)], device=z0.device))

    def make_proxy(self, z_paint: torch.Tensor, text_embeds, strength: float, steps: int, guidance: float,
                   generator) -> torch.Tensor:
        """img2img on a one-frame latent ``(1, c, 1, h, w)``: noise to ``strength·T``, denoise by DDIM."""
        self.scheduler.set_timesteps(steps, device=self._execution_device)
        n = min(steps, max(1, int(round(steps * strength))))
        timesteps = self.scheduler.timesteps[steps - n :]
        noise = randn_tensor(z_paint.shape, generator=generator, device=self._execution_device,
                             dtype=z_paint.dtype)
        z = self.noise_to(z_paint, noise, timesteps[0])
        for t in timesteps:
            z = self.scheduler.step(self.predict(z, t, text_embeds, guidance), t, z).prev_sample
        return z

    def motion_field(self, painting: Painting, arrows, still_mask, strength: float, frames: int,
                     sigma: float | None, r: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Velocity ``(H, W, 2)`` in px/frame on the working canvas, and the still mask there (or None)."""
        w, h = painting.size
        still = None
        if still_mask is not None:
            still = arrow_ops.load_mask(still_mask, *painting.geometry.original[::-1]) \
                if isinstance(still_mask, (str, Path)) else np.asarray(still_mask, bool)
            check(still.shape == painting.geometry.original[::-1],
                  f"still mask is {still.shape[1]}x{still.shape[0]}; the painting is "
                  f"{painting.geometry.original[0]}x{painting.geometry.original[1]}")
            from ..image_intake import apply_geometry

            still = apply_geometry(still, painting.geometry, nearest=True, fill=False)
        ow, oh = painting.geometry.original
        arrow_ops.check_arrows_inside(list(arrows or []), ow, oh, "arrow")
        mapped = []  # starts cropped away by the geometry drop out in sparse_flow
        for a in arrows or []:
            x0, y0 = painting.map_xy(a.x0, a.y0)
            x1, y1 = painting.map_xy(a.x1, a.y1)
            mapped.append(arrow_ops.Arrow(x0, y0, x1, y1, a.strength))
        field = arrow_ops.dense_field(mapped, h, w, sigma=sigma, r=r, still=still, strength=strength)
        return field / np.float32(frames - 1), still

    # ------------------------------------------------------------------ trained control (I2V model)
    i2v = None              # ImageToVideoUNet, set by load_painting_pipeline when the model has one
    i2v_scheduler = None    # the noise schedule it was trained with (DDIM)
    _i2v_ctx = None

    def predict(self, latents, t, text_embeds, guidance_scale) -> torch.Tensor:
        """As the text-to-video pipeline (the network's own parameterisation, ε or v), or with the I2V model and
        its conditions while a trained/none control call is running; ``predict_noise`` converts either to ε."""
        ctx = self._i2v_ctx
        if ctx is None:
            return super().predict(latents, t, text_embeds, guidance_scale)
        cfg = guidance_scale > 1.0
        model_in = torch.cat([latents] * 2) if cfg else latents
        model_in = self.scheduler.scale_model_input(model_in, t)
        frames = latents.shape[2]
        cond = text_embeds.repeat_interleave(frames, dim=0)
        motion = ctx["motion"]
        if motion is not None and motion.shape[1] != frames:
            motion = motion[:, :1].expand(-1, frames, -1, -1, -1)
        timestep = torch.as_tensor(t, device=model_in.device).reshape(-1).expand(model_in.shape[0])
        out = self.i2v(model_in.to(self.i2v.dtype), timestep, cond.to(self.i2v.dtype), first_latent=ctx["first"],
                       motion=motion, strength=ctx["strength"]).to(latents.dtype)
        if cfg:
            out_u, out_c = out.chunk(2)
            out = out_u + guidance_scale * (out_c - out_u)
        return out

    def flow_field(self, painting: Painting, flow, still_mask, frames: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A user's dense field (``(H, W, 2)`` px/frame in the painting's pixels, or ``(frames − 1, H, W, 2)``,
        whose mean over time is used) -> velocity on the working canvas, still mask applied."""
        from ..image_intake import apply_geometry

        arr = np.asarray(flow, np.float32)
        ow, oh = painting.geometry.original
        if arr.ndim == 4:
            check(arr.shape[0] == frames - 1 and arr.shape[1:] == (oh, ow, 2),
                  f"flow has shape {arr.shape}; expected ({oh}, {ow}, 2) or ({frames - 1}, {oh}, {ow}, 2) "
                  f"(px/frame, (dx, dy), the painting's size)")
            arr = arr.mean(axis=0)
        check(arr.shape == (oh, ow, 2), f"flow has shape {arr.shape}; expected ({oh}, {ow}, 2) or "
                                        f"({frames - 1}, {oh}, {ow}, 2) (px/frame, (dx, dy), the painting's size)")
        check(bool(np.isfinite(arr).all()), "flow holds non-finite values")
        geom = painting.geometry
        sx, sy = painting.map_xy(1.0, 1.0)
        ox, oy = painting.map_xy(0.0, 0.0)
        field = apply_geometry(arr, geom, fill=0.0) * np.array([sx - ox, sy - oy], np.float32)
        _, still = self.motion_field(painting, [], still_mask, 1.0, frames, None, arrow_ops.THRESHOLD)
        return arrow_ops.apply_still_mask(field.astype(np.float32), still), still

    @torch.no_grad()
    def refine_field(self, velocity: np.ndarray, image: np.ndarray, still: np.ndarray | None) -> np.ndarray:
        """The refinement network T: Gaussian field + the painting -> dense flow (still mask re-applied)."""
        refiner = self.i2v.control.refiner
        p = next(refiner.parameters())
        field = torch.from_numpy(velocity).permute(2, 0, 1)[None].to(p.device, p.dtype)
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(p.device, p.dtype) / 127.5 - 1
        out = refiner(field, img)[0].permute(1, 2, 0).float().cpu().numpy()
        return arrow_ops.apply_still_mask(out, still)

    def check_painting_inputs(self, num_frames, steps, p_vsds, proxy_strength, strength, motion_guidance,
                              fusion, policy, guidance, long_ok: bool = False) -> None:
        if long_ok:
            check(isinstance(num_frames, int) and num_frames >= 2, f"frames={num_frames} must be an integer >= 2")
        else:
            check(isinstance(num_frames, int) and 2 <= num_frames <= self.max_frames,
                  f"frames={num_frames} must be in [2, {self.max_frames}] (this motion module's window; longer "
                  f"videos need the image-to-video module: control trained or none)")
        check(isinstance(steps, int) and steps >= 2, f"steps={steps} must be an integer >= 2")
        check(0.0 < p_vsds < 1.0, f"p_vsds={p_vsds} must be in (0, 1)")
        check(0.0 < proxy_strength <= 1.0, f"proxy_strength={proxy_strength} must be in (0, 1]")
        check(0.0 <= strength <= 10.0 and strength == strength, f"strength={strength} must be in [0, 10]")
        check(0.0 <= motion_guidance <= 1.0, f"motion_guidance={motion_guidance} must be in [0, 1]")
        check(fusion in FUSIONS, f"fusion='{fusion}' must be one of {', '.join(FUSIONS)}")
        check(policy in POLICIES, f"policy='{policy}' must be one of {', '.join(POLICIES)}")
        check(guidance >= 0 and np.isfinite(guidance), f"guidance={guidance} must be a finite number >= 0")

    def _keyframe_pins(self, keyframes, painting: Painting, num_frames: int, noise: torch.Tensor, decay: float,
                       mode: str = "noised", guidance: float | None = None):
        """:class:`~shanshui.control.keyframes.KeyframePins` on the painting's canvas, sharing ``noise``."""
        from ..control.keyframes import (DEFAULT_GUIDANCE, KeyframePins, as_keyframes, encode_rgb, keyframe_rgb,
                                         resolve_indices)

        keys = resolve_indices(as_keyframes(keyframes), num_frames)
        if not keys:
            return None
        check(keys[0].index != 0, "keyframe index 0 is the painting itself; pin frames 1.."
                                  f"{num_frames - 1} (or -1 for the last)")
        x0, y0, x1, y1 = painting.content
        images = []
        for k in keys:
            canvas = painting.image.copy()
            canvas[y0:y1, x0:x1] = keyframe_rgb(k.image, x1 - x0, y1 - y0)
            images.append(canvas)
        idx = [k.index for k in keys]
        z = encode_rgb(self, np.stack(images)).to(noise.dtype)
        return KeyframePins(self.scheduler, idx, z, noise[:, :, idx], num_frames, decay, mode,
                            DEFAULT_GUIDANCE if guidance is None else guidance)

    # ------------------------------------------------------------------ main
    @torch.no_grad()
    def __call__(
        self,
        painting,
        prompt: str,
        negative_prompt: str | None = None,
        num_frames: int = DEFAULT_FRAMES,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        arrows: list | None = None,
        still_mask=None,
        strength: float = 1.0,
        sigma: float | None = None,
        threshold: float = arrow_ops.THRESHOLD,
        motion_guidance: float = DEFAULT_MOTION_GUIDANCE,
        still_composite: bool = True,
        proxy=None,
        proxy_strength: float = DEFAULT_PROXY_STRENGTH,
        use_proxy: bool = True,
        use_vsds: bool = True,
        fusion: str = "slerp",
        p_vsds: float = P_VSDS,
        vsds_alphas: list[float] | None = None,
        policy: str = "fit",
        long_side: int | None = None,
        size: tuple[int, int] | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
        progress: bool = True,
        control: str | None = None,
        flow=None,
        speed: float | None = None,
        refine: bool = True,
        keyframes=None,
        keyframe_decay: float = 2.0,
        keyframe_mode: str = "noised",
        keyframe_guidance: float | None = None,
    ) -> PaintingVideoOutput:
        """Animate ``painting`` (path, PIL image, array or :class:`Painting`) as described by ``prompt``.

        ``control``: ``None`` = ``"trained"`` when the pipeline has an I2V model, else ``"training-free"``;
        ``"training-free"`` (the T2V model, the field imposed through cinemagraph latents),
        ``"trained"`` (the image-to-video model conditioned on the painting, the field — refined by T when it
        comes from arrows and ``refine`` — and its strength), ``"none"`` (the I2V model without a field).
        ``flow``: a dense field instead of arrows (px/frame in the painting's pixels). ``speed``: px/frame;
        the field is scaled so that its mean speed where it moves is ``speed`` (with no field, under
        ``"none"``, it is the requested mean motion of the frame).

        ``keyframes``: ``(index, image)`` pairs or ``"INDEX:IMAGE"`` strings pinning frames 1..L-1 (frame 0 is
        the painting) to images fitted to the painting's canvas, as in :mod:`shanshui.control.keyframes`:
        pinned with the same fixed noise as frame 0, and neighbours start from the fused latent pulled
        towards the keyframe by ``exp(−d/keyframe_decay)``; ``keyframe_mode="clean"`` pins the clean latent;
        ``keyframe_guidance`` is the neighbour guidance of :meth:`~shanshui.control.keyframes.KeyframePins.guide`."""

        # 1. Check inputs, bring the painting in
        check(isinstance(prompt, str) and prompt.strip() != "", "prompt must be a non-empty string")
        check(output_type in ("np", "pt", "pil", "latent"),
              f"output_type='{output_type}' must be np|pt|pil|latent")
        if control is None:
            control = "trained" if self.i2v is not None else "training-free"
        self.check_painting_inputs(num_frames, num_inference_steps, p_vsds, proxy_strength, strength,
                                   motion_guidance, fusion, policy, guidance_scale,
                                   long_ok=control in ("trained", "none") and self.i2v is not None)
        check(decode_chunk_size >= 1, f"decode_chunk_size={decode_chunk_size} must be >= 1")
        check(control in CONTROLS, f"control='{control}' must be one of {', '.join(CONTROLS)}")
        check(control == "training-free" or self.i2v is not None,
              f"control='{control}' needs a model with an image-to-video module (i2v/); this one has none")
        check(flow is None or not arrows, "give arrows or a dense flow, not both")
        if speed is not None:
            check(np.isfinite(speed) and 0 <= speed <= MAX_SPEED, f"strength={speed} px/frame must be in "
                                                                   f"[0, {MAX_SPEED:g}]")
        if keyframes:
            from ..control.keyframes import as_keyframes, resolve_indices

            keys = resolve_indices(as_keyframes(keyframes), num_frames)
            check(keys[0].index != 0, "keyframe index 0 is the painting itself; pin frames 1.."
                                      f"{num_frames - 1} (or -1 for the last)")
        if not isinstance(painting, Painting):
            painting = prepare_painting(painting, policy, long_side or self.native_size, size)
        check_animatable(painting)
        if speed is not None:
            limit = min(painting.size) / 4
            check(speed <= limit, f"strength={speed:g} px/frame is absurd for a {painting.size[0]}x"
                                  f"{painting.size[1]} canvas (at most {limit:g}: a quarter of its shorter side)")
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(0 if seed is None else int(seed))
        device, L = self._execution_device, num_frames
        W, H = painting.size
        text_embeds = self.encode_prompt(prompt, negative_prompt, cfg=guidance_scale > 1.0)
        dtype = torch.float32  # latents and scheduler arithmetic stay float32 (the UNet casts its input)

        # 2. Motion field (px/frame on the working canvas) and still mask
        if flow is not None:
            velocity, still = self.flow_field(painting, flow, still_mask, L)
            velocity = velocity * np.float32(strength)
        else:
            velocity, still = self.motion_field(painting, arrows, still_mask, strength, L, sigma, threshold)
        trained = control != "training-free"
        if control == "trained" and refine and flow is None and np.any(velocity != 0):
            velocity = self.refine_field(velocity, painting.image, still)
        if control == "none":
            velocity = np.zeros_like(velocity)
        if speed is not None:
            velocity = scale_to_speed(velocity, speed)
        moving = bool(np.any(velocity != 0)) and not trained
        if num_frames > self.max_frames:
            check(not keyframes, f"keyframes are not supported for long videos (frames={num_frames} > "
                                 f"{self.max_frames}); generate at most {self.max_frames} frames to pin keyframes")
            return self._call_long_i2v(painting, prompt, negative_prompt, text_embeds, velocity, still, control,
                                       speed, num_frames, num_inference_steps, guidance_scale, generator,
                                       output_type, decode_chunk_size, still_composite, progress)

        # 3. Proxy image
        z_paint = self.encode_images(painting.image[None])                             # (1, c, 1, h, w)
        proxy_img, z_proxy = None, None
        if use_proxy:
            if proxy is not None:
                rgb = read_image(proxy)[0] if isinstance(proxy, (str, Path)) else np.asarray(proxy, np.uint8)
                x0, y0, x1, y1 = painting.content
                proxy_img = painting.image.copy()
                proxy_img[y0:y1, x0:x1] = fit_to(rgb, x1 - x0, y1 - y0)
                z_proxy = self.encode_images(proxy_img[None])
            else:
                z_proxy = self.make_proxy(z_paint, text_embeds, proxy_strength, num_inference_steps,
                                          guidance_scale, generator)
                proxy_img = (self.decode_latents(z_proxy)[0, 0].permute(1, 2, 0).cpu().float().numpy()
                             * 255 + 0.5).astype(np.uint8)

        # 4. Static or cinemagraph latent videos
        def video_latents(image: np.ndarray, z_still: torch.Tensor) -> torch.Tensor:
            if not moving:
                return z_still.repeat(1, 1, L, 1, 1)
            z = self.encode_images(animate(image, velocity, L))
            return torch.cat([z_still, z[:, :, 1:]], dim=2)   # frame 0 is the image itself, bit for bit
        z_r = video_latents(painting.image, z_paint)                                    # (1, c, L, h, w)
        z_s = video_latents(proxy_img, z_proxy) if use_proxy else None

        # 5. Dual-path VSDS with one fixed noise sample (with the I2V model and its schedule when trained)
        base_scheduler = self.scheduler
        if trained:
            self._i2v_ctx = self._i2v_context(z_paint[:, :, 0], velocity, control, speed, L)
            self.scheduler = self.i2v_scheduler
        try:
            return self._vsds_and_denoise(painting, velocity, still, moving, z_paint, z_r, z_s, text_embeds,
                                          num_inference_steps, guidance_scale, p_vsds, use_vsds, vsds_alphas,
                                          fusion, motion_guidance, generator, output_type, decode_chunk_size,
                                          still_composite, progress, proxy_img, L, keyframes, keyframe_decay,
                                          keyframe_mode, keyframe_guidance)
        finally:
            self.scheduler = base_scheduler
            self._i2v_ctx = None

    def _i2v_context(self, z_first, velocity, control, speed, frames):
        device = self._execution_device
        H, W = velocity.shape[:2]
        m_s = None
        if np.any(velocity != 0):
            m_s = float(np.linalg.norm(velocity, axis=-1).mean())
        elif speed is not None:
            m_s = float(speed)
        motion = None
        if control == "trained":
            v = torch.from_numpy(velocity).permute(2, 0, 1).to(device)                      # (2, H, W)
            motion = v[None, None].expand(1, frames, 2, H, W)
        return {"first": z_first, "motion": motion, "strength": None if m_s is None else torch.tensor([m_s])}

    def _call_long_i2v(self, painting, prompt, negative_prompt, text_embeds, velocity, still, control, speed,
                       num_frames, steps, guidance, generator, output_type, chunk, still_composite, progress):
        """Longer than the window: phased inference + shared noise reschedule (SPEC §2.4,
        :func:`~shanshui.pipelines.long_video.generate_long`) with the I2V model, every clip conditioned on the
        painting, its field and strength (the paper conditions every clip on the input image); frame 0 is the
        painting's latent. The proxy / VSDS / fusion initialisation applies to single clips only."""
        from .long_video import DEFAULT_CLIP_FRAMES, DEFAULT_OVERLAP, generate_long

        check(output_type in ("np", "latent"), f"output_type='{output_type}' must be np or latent for long videos")
        W, H = painting.size
        z_paint = self.encode_images(painting.image[None])                                  # (1, c, 1, h, w)
        clip = min(DEFAULT_CLIP_FRAMES, self.max_frames)
        self._i2v_ctx = self._i2v_context(z_paint[:, :, 0], velocity, control, speed, clip)
        base_scheduler, self.scheduler = self.scheduler, self.i2v_scheduler
        try:
            result = generate_long(self, prompt, negative_prompt, num_frames, H, W, steps, guidance, generator,
                                   clip_frames=clip, overlap=min(DEFAULT_OVERLAP, clip // 2), output_type="latent",
                                   progress=progress)
        finally:
            self.scheduler = base_scheduler
            self._i2v_ctx = None
        latents = result.latents.clone()
        latents[:, :, :1] = z_paint
        extras = dict(latents=latents, painting=painting, proxy=None, velocity=velocity, still=still, fused=None)
        if output_type == "latent":
            return PaintingVideoOutput(frames=latents, **extras)
        video = self.decode_latents(latents, chunk)
        if still is not None and still_composite:
            video = hold_still(video, still)
        x0, y0, x1, y1 = painting.content
        if (x0, y0, x1, y1) != (0, 0, W, H):
            video = video[..., y0:y1, x0:x1]
        return PaintingVideoOutput(frames=self._postprocess(video, "np"), **extras)

    def _vsds_and_denoise(self, painting, velocity, still, moving, z_paint, z_r, z_s, text_embeds,
                          num_inference_steps, guidance_scale, p_vsds, use_vsds, vsds_alphas, fusion,
                          motion_guidance, generator, output_type, decode_chunk_size, still_composite, progress,
                          proxy_img, L, keyframes=None, keyframe_decay: float = 2.0,
                          keyframe_mode: str = "noised",
                          keyframe_guidance: float | None = None) -> PaintingVideoOutput:
        device, dtype = self._execution_device, text_embeds.dtype
        W, H = painting.size
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        train_T = int(self.scheduler.config.num_train_timesteps)
        t_vsds = vsds_timesteps(timesteps, p_vsds, train_T)
        t_denoise = [int(t) for t in timesteps if int(t) < p_vsds * train_T]
        check(len(t_denoise) >= 1, f"steps={num_inference_steps} leaves no denoising step below p·T")
        noise = randn_tensor(z_r.shape, generator=generator, device=device, dtype=dtype)
        if use_vsds and t_vsds:
            eps_fn = lambda z, t: self.predict_noise(z, t, text_embeds, guidance_scale)  # noqa: E731
            alphas = vsds_alphas if vsds_alphas is not None else alpha_schedule(len(t_vsds))
            acp = self.scheduler.alphas_cumprod
            z_r = vsds(z_r, noise, t_vsds, eps_fn, acp, alphas)
            if z_s is not None:
                z_s = vsds(z_s, noise, t_vsds, eps_fn, acp, alphas)

        # 6. Hybrid latent fusion over frames
        fused = z_r if z_s is None else slerp_frames(z_r, z_s, linear=(fusion == "linear"))

        # 7. Image-to-video denoising with known-region replacement
        h, w = z_r.shape[-2:]
        known_still = z_paint.repeat(1, 1, L, 1, 1)
        frame0 = torch.zeros(1, 1, L, 1, 1, device=device, dtype=dtype)
        frame0[:, :, 0] = 1
        m_still = _latent_mask(still, h, w, device, dtype) if still is not None else None
        m_move = _latent_mask(np.linalg.norm(velocity, axis=-1) > 0, h, w, device, dtype) if moving else None
        n_guided = int(round(motion_guidance * len(t_denoise)))

        pins = self._keyframe_pins(keyframes, painting, L, noise, keyframe_decay, keyframe_mode, keyframe_guidance)
        if pins is not None:
            which, dist = pins.nearest()
            from ..control.keyframes import correlation

            r = torch.as_tensor(correlation(dist, keyframe_decay), device=device, dtype=dtype).view(1, 1, -1, 1, 1)
            start = fused + r * (pins.z[:, :, which] - fused)
        else:
            start = fused

        def impose(z: torch.Tensor, t, i: int | None) -> torch.Tensor:
            def put(z, known, mask):
                target = known if t is None else self.noise_to(known, noise, t)
                return torch.where(mask >= 1, target, z + mask * (target - z))
            if m_move is not None and (i is None or i < n_guided):
                z = put(z, fused, m_move)
            if m_still is not None:
                z = put(z, known_still, m_still)
            z = put(z, known_still, frame0)
            # a pinned frame is the whole keyframe latent (the VAE decoder's attention sees the whole latent,
            # so only a complete latent decodes to the keyframe); still regions are held again in pixels
            return z if pins is None else pins.pin(z, t)

        latents = self.noise_to(start, noise, t_denoise[0])
        step_kwargs = self._step_kwargs(generator, 0.0)
        with tqdm(total=len(t_denoise), desc="animating", disable=not progress, leave=False) as bar:
            for i, t in enumerate(t_denoise):
                latents = impose(latents, t, i)
                out = self.predict(latents, t, text_embeds, guidance_scale)
                stepped = self.scheduler.step(out, t, latents, **step_kwargs).prev_sample
                if pins is not None and pins.guidance > 0:
                    t_next = t_denoise[i + 1] if i + 1 < len(t_denoise) else None
                    stepped = pins.guide(stepped, self.split(out, latents, t)[0], t_next,
                                         1 - (i + 1) / len(t_denoise))
                latents = stepped
                bar.update()
        latents = impose(latents, None, None if motion_guidance >= 1.0 else len(t_denoise))
        extras = dict(latents=latents, painting=painting, proxy=proxy_img, velocity=velocity, still=still,
                      fused=fused)
        if output_type == "latent":
            return PaintingVideoOutput(frames=latents, **extras)

        # 8. Decode, hold still regions in pixels too, crop the padding away
        video = self.decode_latents(latents, decode_chunk_size)                        # (1, L, 3, H, W)
        if still is not None and still_composite:
            video = hold_still(video, still)
        x0, y0, x1, y1 = painting.content
        if (x0, y0, x1, y1) != (0, 0, W, H):
            video = video[..., y0:y1, x0:x1]
        return PaintingVideoOutput(frames=self._postprocess(video, output_type), **extras)


def load_painting_pipeline(model: str | Path | None = None, motion_module: str | Path | None = None,
                           sparse_causal: str | None = None, device: str | torch.device = "cpu",
                           dtype: str | torch.dtype | None = "auto", low_vram=False, i2v: str | Path | None = None,
                           **load_options) -> PaintingToVideoPipeline:
    """:func:`~shanshui.pipelines.text_to_video.load_pipeline` (same files and defaults), for paintings, plus
    the image-to-video module from ``i2v`` (a ``train-control`` output folder) or, by default, the model's own
    ``i2v/`` folder when it has one. ``load_options``: ``ema``, ``vae``, ``loras``, ``lora_fuse`` of
    :func:`~shanshui.pipelines.text_to_video.load_pipeline`."""
    from .text_to_video import load_pipeline

    pipe = load_pipeline(model, motion_module, sparse_causal=sparse_causal, device=device, dtype=dtype,
                         low_vram=low_vram, pipeline_class=PaintingToVideoPipeline, **load_options)
    from .loading import BUNDLED_DIR

    folder = i2v_folder(model) if i2v is None else Path(i2v)
    if folder is not None:
        image_model = BUNDLED_DIR if model is None else Path(model)
        check(image_model.is_dir(), f"an image-to-video module needs a diffusers model folder, not '{image_model}'")
        attach_i2v(pipe, folder, image_model, device=pipe.unet.device, dtype=pipe.unet.dtype)
    return pipe


def i2v_folder(model: str | Path | None) -> Path | None:
    """Where a model keeps its image-to-video module (``MODEL/i2v``; the bundled one for ``None``), if any."""
    from ..models.control import has_control
    from .loading import BUNDLED_DIR

    root = BUNDLED_DIR if model is None else Path(model)
    folder = root / "i2v" if root.is_dir() else None
    return folder if folder is not None and has_control(folder) else None


def attach_i2v(pipe: PaintingToVideoPipeline, folder: str | Path, image_model: str | Path, device="cpu",
               dtype=torch.float32) -> None:
    """Load the I2V model of ``folder`` (strict) on the image UNet of ``image_model`` (a diffusers folder),
    with the noise schedule it was trained with."""
    from diffusers import UNet2DConditionModel

    from ..models.control import control_scheduler, has_control, load_control

    folder = Path(folder)
    check(has_control(folder), f"'{folder}' holds no image-to-video module (control.safetensors + "
                               f"motion_module.safetensors)")
    unet2d = UNet2DConditionModel.from_pretrained(Path(image_model) / "unet", local_files_only=True)
    model = load_control(folder, unet2d)
    pipe.i2v = model.to(device=device, dtype=dtype).eval()
    pipe.i2v_scheduler = control_scheduler(folder, "ddim")
