"""Text -> landscape-painting video (NADM): a frozen SD 1.5 image model inflated with a NADM motion module,
sampled with DDIM and classifier-free guidance, decoded in chunks, optionally smoothed by SOFP interpolation.

Defaults (NADM §IV-A-2): 25 DDIM steps, guidance 8, linear betas 0.00085–0.012, 16 frames. More frames than
the motion module's window switch to the long-video path (:mod:`shanshui.pipelines.long_video`).

Precision: the UNet and text encoder may run in fp16/bf16, but latents and every scheduler update stay float32
(the UNet's input is cast down, its noise prediction cast back up); the VAE's dtype is chosen by
:func:`shanshui.runtime.vae_dtype`. Memory: :meth:`TextToVideoPipeline.set_memory_options` (``--low-vram``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ..errors import ShanshuiError, check
from ..runtime import DEFAULT_DECODE_CHUNK, MemoryOptions

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 8.0
DEFAULT_FRAMES = 16


@dataclass
class VideoOutput:
    """``frames``: ``(b, f, h, w, 3)`` float32 in [0, 1] (numpy), torch ``(b, f, 3, h, w)``, PIL lists, or
    latents ``(b, c, f, h/8, w/8)``, depending on ``output_type``."""

    frames: object
    latents: torch.Tensor | None = None


class TextToVideoPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)
        self.memory = MemoryOptions()

    # ------------------------------------------------------------------ memory options
    def set_memory_options(self, options: MemoryOptions | None = None, device=None) -> "TextToVideoPipeline":
        """Apply :class:`~shanshui.runtime.MemoryOptions` (``None`` = all off). ``cpu_offload`` needs the
        accelerator ``device`` the models should visit (it is ignored on a CPU: there is nothing to offload to)."""
        from ..models.memory import disable_split_inference, enable_split_inference

        options = options or MemoryOptions()
        disable_split_inference(self.unet)
        if options.split_inference:
            enable_split_inference(self.unet, options.spatial_split, options.temporal_split)
        if options.vae_tiling:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        if options.cpu_offload and device is not None and torch.device(device).type != "cpu":
            self.enable_model_cpu_offload(device=device)
        self.memory = options
        return self

    def enable_low_vram(self, device=None) -> "TextToVideoPipeline":
        """``--low-vram``: :meth:`MemoryOptions.low_vram` (every exact memory option)."""
        return self.set_memory_options(MemoryOptions.low_vram(), device=device)

    # ------------------------------------------------------------------ helpers
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def max_frames(self) -> int:
        return int(self.unet.config.motion_max_seq_length)

    def check_inputs(self, prompt, negative_prompt, num_frames, height, width, steps, guidance, chunk) -> None:
        check(isinstance(prompt, str) and prompt.strip() != "", "prompt must be a non-empty string")
        check(negative_prompt is None or isinstance(negative_prompt, str), "negative_prompt must be a string")
        for name, v in (("height", height), ("width", width)):
            check(isinstance(v, int) and v > 0 and v % 8 == 0, f"{name}={v} must be a positive multiple of 8")
            check(v % self.vae_scale_factor == 0, f"{name}={v} must be a multiple of {self.vae_scale_factor}")
        check(isinstance(num_frames, int) and num_frames >= 2, f"frames={num_frames} must be >= 2")
        check(isinstance(steps, int) and steps >= 1, f"steps={steps} must be >= 1")
        check(guidance >= 0 and np.isfinite(guidance), f"guidance={guidance} must be a finite number >= 0")
        check(chunk >= 1, f"decode_chunk_size={chunk} must be >= 1")

    def encode_prompt(self, prompt: str, negative_prompt: str | None, cfg: bool) -> torch.Tensor:
        """``(1 or 2, 77, d)`` text embeddings, ``[negative, positive]`` when guidance is on."""
        def embed(text: str) -> torch.Tensor:
            ids = self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            return self.text_encoder(ids.to(self._execution_device))[0]

        pos = embed(prompt)
        if not cfg:
            return pos.to(self.text_encoder.dtype)
        neg = embed(negative_prompt or "")
        return torch.cat([neg, pos]).to(self.text_encoder.dtype)

    def prepare_latents(self, shape, dtype, generator, latents=None) -> torch.Tensor:
        """Initial noise; ``dtype`` is the latents' dtype (float32 in every pipeline here)."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        else:
            check(tuple(latents.shape) == tuple(shape), f"latents shape {tuple(latents.shape)} != {tuple(shape)}")
            latents = latents.to(self._execution_device, dtype)
        return latents * self.scheduler.init_noise_sigma

    def predict(self, latents, t, text_embeds, guidance_scale) -> torch.Tensor:
        """One guided network output for a latent video ``(b, c, f, h, w)``, in the scheduler's
        parameterisation (ε or v: ``self.scheduler.config.prediction_type``; guidance is linear in either), in
        the latents' dtype.

        The UNet runs in its own dtype; guidance is combined in float32. With ``memory.cfg_sequential`` the
        unconditional and conditional halves run one after the other (same numbers, half the activations)."""
        cfg = guidance_scale > 1.0
        unet_dtype = self.unet.dtype
        frames = latents.shape[2]
        model_in = self.scheduler.scale_model_input(latents, t).to(unet_dtype)
        embeds = text_embeds.to(unet_dtype)

        def run(x, emb):
            cond = emb.repeat_interleave(frames, dim=0)
            return self.unet(x, t, encoder_hidden_states=cond).sample.float()

        if not cfg:
            out = run(model_in, embeds)
        elif self.memory.cfg_sequential:
            out_u, out_c = run(model_in, embeds[:1]), run(model_in, embeds[1:])
            out = out_u + guidance_scale * (out_c - out_u)
        else:
            out_u, out_c = run(torch.cat([model_in] * 2), embeds).chunk(2)
            out = out_u + guidance_scale * (out_c - out_u)
        return out.to(latents.dtype)

    def predict_noise(self, latents, t, text_embeds, guidance_scale) -> torch.Tensor:
        """One guided ε prediction for a latent video ``(b, c, f, h, w)`` (converted from v when needed)."""
        return self.split(self.predict(latents, t, text_embeds, guidance_scale), latents, t)[1]

    def split(self, output: torch.Tensor, latents: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, ε)`` implied by a network output at ``t`` (stable for ε and v models alike)."""
        from ..schedulers import split_prediction

        return split_prediction(self.scheduler, output, latents, t)

    def decode_latents(self, latents: torch.Tensor, chunk: int = DEFAULT_DECODE_CHUNK) -> torch.Tensor:
        """``(b, c, f, h, w)`` latents -> ``(b, f, 3, H, W)`` float32 images in [0, 1], ``chunk`` frames at a time.

        The VAE decodes in eval mode (its previous mode is restored): the same weights left in training mode
        decode to slightly different numbers (measured ~1e-6 on the tiny test model), so a freshly built and a
        loaded model would not agree."""
        b, c, f, h, w = latents.shape
        chunk = self.memory.decode_chunk or chunk
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / self.vae.config.scaling_factor
        was_training = self.vae.training
        self.vae.eval()
        try:
            images = torch.cat([self._decode_chunk(z[i : i + chunk]) for i in range(0, b * f, chunk)])
        finally:
            self.vae.train(was_training)
        images = (images / 2 + 0.5).clamp(0, 1)
        return images.reshape(b, f, *images.shape[1:])

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        """Decode in the VAE's dtype; a half-precision chunk that overflows is decoded again in float32."""
        vae_dtype = self.vae.dtype
        out = self.vae.decode(z.to(vae_dtype)).sample.float()
        if vae_dtype != torch.float32 and not torch.isfinite(out).all():
            self.vae_upcasts = getattr(self, "vae_upcasts", 0) + 1
            self.vae.to(torch.float32)
            try:
                out = self.vae.decode(z.float()).sample.float()
            finally:
                self.vae.to(vae_dtype)
        return out

    # ------------------------------------------------------------------ main
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        num_frames: int = DEFAULT_FRAMES,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
        interpolate_times: int = 1,
        interpolation_flow: str = "dis",
        progress: bool = True,
        gamma: float = 0.8,
        omega: float = 0.2,
        overlap: int = 4,
        clip_frames: int | None = None,
        frame_sink=None,
        keyframes=None,
        keyframe_decay: float = 2.0,
        keyframe_mode: str = "noised",
        keyframe_guidance: float | None = None,
        fusion: str = "crossfade",
    ) -> VideoOutput:
        """Generate a video for ``prompt``. See the module docstring for defaults.

        Videos longer than ``self.max_frames`` go through :func:`~shanshui.pipelines.long_video.generate_long`
        (``gamma``, ``omega``, ``overlap``, ``clip_frames``, ``fusion`` apply there only); with ``frame_sink`` its
        frames are handed over as uint8 chunks instead of being returned (``frames`` is then ``None``).

        ``keyframes``: ``(index, image)`` pairs or ``"INDEX:IMAGE"`` strings pinning frames to images
        (:mod:`shanshui.control.keyframes`); ``keyframe_decay``: how many frames the keyframe's influence on the
        neighbours' starting noise takes to fall to 1/e; ``keyframe_mode``: ``"noised"`` (training-free) or
        ``"clean"`` (for motion modules trained with ``loss.lambda_key``); ``keyframe_guidance``: neighbour
        guidance ``g`` in [0, 1] (default :data:`~shanshui.control.keyframes.DEFAULT_GUIDANCE`).
        """
        # 1. Check inputs
        native = self.unet.config.sample_size * self.vae_scale_factor
        height = native if height is None else height
        width = native if width is None else width
        self.check_inputs(prompt, negative_prompt, num_frames, height, width, num_inference_steps,
                          guidance_scale, decode_chunk_size)
        check(output_type in ("np", "pt", "pil", "latent"), f"output_type='{output_type}' must be np|pt|pil|latent")
        check(interpolate_times in (1, 2, 4, 8), f"interpolate_times={interpolate_times} must be 1, 2, 4 or 8")
        if generator is None and seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
        if keyframes:
            from ..control.keyframes import check_not_long

            check_not_long(keyframes, num_frames, self.max_frames)
        if num_frames > self.max_frames:
            return self._call_long(prompt, negative_prompt, num_frames, height, width, num_inference_steps,
                                   guidance_scale, generator, eta, latents, output_type, decode_chunk_size,
                                   interpolate_times, interpolation_flow, progress, gamma, omega, overlap,
                                   clip_frames, frame_sink, fusion)

        # 2. Encode the prompt
        text_embeds = self.encode_prompt(prompt, negative_prompt, cfg=guidance_scale > 1.0)

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        timesteps = self.scheduler.timesteps

        # 4. Initial noise
        shape = (1, self.unet.config.in_channels, num_frames,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = self.prepare_latents(shape, torch.float32, generator, latents)
        pins = None
        if keyframes:
            from ..control.keyframes import make_pins

            pins = make_pins(self, keyframes, num_frames, width, height, generator, latents.dtype, keyframe_decay,
                             mode=keyframe_mode, **({} if keyframe_guidance is None else
                                                    {"guidance": keyframe_guidance}))
            latents = pins.start(latents, timesteps[0])
        step_kwargs = self._step_kwargs(generator, eta)

        # 5. Denoise (keyframes: pinned frames re-imposed before every UNet call and after every step)
        with tqdm(total=len(timesteps), desc="denoising", disable=not progress, leave=False) as bar:
            for i, t in enumerate(timesteps):
                if pins is not None:
                    latents = pins.pin(latents, t)
                out = self.predict(latents, t, text_embeds, guidance_scale)
                stepped = self.scheduler.step(out, t, latents, **step_kwargs).prev_sample
                if pins is not None:
                    t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
                    if pins.guidance > 0:
                        stepped = pins.guide(stepped, self.split(out, latents, t)[0], t_next,
                                             1 - (i + 1) / len(timesteps))
                    stepped = pins.pin(stepped, t_next)
                latents = stepped
                bar.update()
        if output_type == "latent":
            return VideoOutput(frames=latents, latents=latents)

        # 6. Decode
        video = self.decode_latents(latents, decode_chunk_size)                 # (b, f, 3, H, W)

        # 7. Optional frame interpolation (SOFP), on decoded RGB frames
        if interpolate_times > 1:
            video = self._interpolate(video, interpolate_times, interpolation_flow)
        if frame_sink is not None:
            from .long_video import to_uint8

            frame_sink(to_uint8(video[0].permute(0, 2, 3, 1).cpu().float().numpy()))
            return VideoOutput(frames=None, latents=latents)
        return VideoOutput(frames=self._postprocess(video, output_type), latents=latents)

    def _call_long(self, prompt, negative_prompt, num_frames, height, width, steps, guidance, generator, eta,
                   latents, output_type, chunk, interpolate_times, flow, progress, gamma, omega, overlap,
                   clip_frames, frame_sink, fusion="crossfade") -> VideoOutput:
        from .long_video import generate_long

        check(latents is None, "latents cannot be given for long videos (frames > the motion module's window)")
        check(eta == 0, f"eta={eta} is not supported for long videos (deterministic DDIM only; use 0)")
        result = generate_long(self, prompt, negative_prompt, num_frames, height, width, steps, guidance,
                               generator, gamma=gamma, omega=omega, overlap=overlap, clip_frames=clip_frames,
                               decode_chunk_size=chunk, interpolate_times=interpolate_times,
                               interpolation_flow=flow, output_type="latent" if output_type == "latent" else "np",
                               frame_sink=frame_sink, progress=progress, fusion=fusion)
        if output_type == "latent":
            return VideoOutput(frames=result.latents, latents=result.latents)
        if result.frames is None:
            return VideoOutput(frames=None, latents=result.latents)
        video = torch.from_numpy(result.frames).permute(0, 1, 4, 2, 3)              # (1, F, 3, H, W)
        return VideoOutput(frames=self._postprocess(video, output_type), latents=result.latents)

    def _step_kwargs(self, generator, eta) -> dict:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    @staticmethod
    def _interpolate(video: torch.Tensor, times: int, flow: str) -> torch.Tensor:
        from ..flow import interpolate

        out = []
        for clip in video:                                                       # (f, 3, H, W)
            frames = clip.permute(0, 2, 3, 1).cpu().numpy()                     # (f, H, W, 3)
            out.append(torch.from_numpy(np.ascontiguousarray(interpolate(frames, times=times, flow=flow))))
        return torch.stack(out).permute(0, 1, 4, 2, 3)                            # (b, f', 3, H, W)

    @staticmethod
    def _postprocess(video: torch.Tensor, output_type: str):
        if output_type == "pt":
            return video
        frames = video.permute(0, 1, 3, 4, 2).cpu().float().numpy()              # (b, f, H, W, 3)
        if output_type == "np":
            return frames
        from PIL import Image

        return [[Image.fromarray((f * 255).round().astype(np.uint8)) for f in clip] for clip in frames]


def model_objective(model) -> dict:
    """The model folder's objective (prediction type, terminal SNR, spacing); {} for single files."""
    from ..schedulers import read_objective

    path = Path(model).expanduser()
    return read_objective(path) if path.is_dir() else {}


def load_pipeline(model: str | Path | None = None, motion_module: str | Path | None = None,
                  sparse_causal: str | None = None, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype | None = "auto", low_vram: bool | MemoryOptions = False,
                  pipeline_class: type | None = None, ema: bool = False, vae: str | Path | None = None,
                  loras=(), lora_fuse: bool = True, norm: str | None = None) -> TextToVideoPipeline:
    """Build the pipeline from local files. ``model=None`` -> the bundled model (and its motion module).

    ``dtype``: ``"auto" | "fp16" | "bf16" | "fp32"`` or a torch dtype (see :mod:`shanshui.runtime`);
    ``low_vram``: ``True`` for :meth:`MemoryOptions.low_vram`, or explicit :class:`MemoryOptions`.
    ``ema``: a single-file checkpoint's EMA UNet weights. ``vae``: a VAE folder/file replacing (or supplying)
    the model's VAE. ``loras``: ``(path, scale)`` pairs or ``"PATH[:SCALE]"`` strings, applied in order (in
    float32, before the cast to ``dtype``) to the UNet (spatial and motion layers) and text encoder — fused
    into the weights, or as removable hooks with ``lora_fuse=False`` (see :mod:`shanshui.models.lora`). What
    was loaded is described in ``pipe.load_notes`` (a list of one-line messages). ``norm`` overrides the motion
    GroupNorm mode chosen by :func:`~shanshui.models.motion_io.load_motion_module` (``"joint"`` reproduces
    diffusers' ``AnimateDiffPipeline`` on a ``MotionAdapter`` folder).
    """
    from ..runtime import resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    memory = MemoryOptions.low_vram() if low_vram is True else (low_vram or None)
    from ..models.motion import build_video_unet, set_temporal_attention
    from ..models.motion_io import load_motion_module
    from ..schedulers import make_scheduler
    from .loading import BUNDLED_DIR, BUNDLED_MOTION, bundled_model_available, load_base_components

    if model is None:
        if not bundled_model_available():
            raise ShanshuiError("no bundled model is installed in this package; pass --model PATH")
        model, motion_module = BUNDLED_DIR, motion_module or BUNDLED_MOTION
    check(motion_module is not None, "a motion module is required (--motion-module PATH)")
    lora_specs = [parse_lora(x) for x in loras]
    notes: list[str] = []
    components = load_base_components(model, torch.float32, ema=ema, vae=vae, notes=notes)
    state, config = load_motion_module(motion_module, norm=norm)
    video_unet = build_video_unet(components["unet"], config, state)
    if sparse_causal is not None:
        set_temporal_attention(video_unet, sparse_causal, config.versatile)
    pipe = (pipeline_class or TextToVideoPipeline)(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=video_unet, scheduler=make_scheduler(objective=model_objective(model)))
    if lora_specs:
        from ..models.lora import apply_loras

        for report in apply_loras(pipe, lora_specs, fuse=lora_fuse):
            notes.append(report.summary())
    pipe.load_notes = notes
    return place(pipe, device, dtype, memory)


def place(pipe, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = "auto",
          memory: MemoryOptions | None = None):
    """Cast a pipeline's models (UNet and text encoder to ``dtype``, the VAE to :func:`vae_dtype`), move them
    to ``device`` (or set up CPU offload) and apply ``memory``. Returns ``pipe``."""
    from ..runtime import resolve_device, resolve_dtype, vae_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    pipe.unet.to(dtype=dtype)
    pipe.text_encoder.to(dtype=dtype)
    pipe.vae.to(dtype=vae_dtype(dtype))
    offload = memory is not None and memory.cpu_offload and device.type != "cpu"
    if not offload:
        pipe.to(device)
    pipe.set_memory_options(memory, device=device if offload else None)
    return pipe


def parse_lora(spec) -> tuple[Path, float]:
    """``"PATH[:SCALE]"`` or ``(path, scale)`` -> ``(Path, float)``."""
    from ..models.lora import parse_lora_spec

    return parse_lora_spec(spec)
