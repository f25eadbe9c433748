"""An attribute probe for measuring what generated landscape videos show, and the numbers built on it.

The procedural clips (:mod:`shanshui.data.procedural`) come with labels, so the project can train its own
small classifier on them and ask of a generated video: does it show the mountains, fog, sun, lake ... that
its prompt asked for? The same network's pooled feature gives a Fréchet distance between generated and
real frames and a feature-space temporal-consistency measure.

* :class:`AttributeProbe` — a small CNN (about 0.3 M parameters) on 128 px RGB frames: five stride-2
  blocks with GroupNorm and SiLU, global average pooling to a feature vector, and one linear softmax head
  per *appearance* attribute (:data:`APPEARANCE_KEYS`: every key of ``ATTRIBUTES`` except ``sun_motion``
  and ``camera``, which a single frame cannot show).
* :func:`train_probe` — deterministic training on uint8 frames, with augmentation (random Gaussian blur,
  brightness/contrast jitter, small zoom and shift) so the probe also reads the softer frames a small
  diffusion model decodes.
* :func:`predict_clip` (frame-averaged probabilities -> one value per attribute), :func:`clip_features`,
  :func:`save_probe` / :func:`load_probe` (``.safetensors`` + ``.json`` sidecar).
* :func:`frechet_distance` of two feature sets (re-exported from :mod:`shanshui.metrics.distances`).
* :func:`camera_direction` — the camera label read from optical flow (see its docstring for the rule).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.procedural_scene import ATTRIBUTES
from ..errors import ShanshuiError, check

MOTION_KEYS = ("sun_motion", "camera")
APPEARANCE_KEYS = tuple(k for k in ATTRIBUTES if k not in MOTION_KEYS)
FORMAT = "shanshui-attribute-probe"
FORMAT_VERSION = 1

# Camera rule (camera_direction). In the renderer a frame pixel p shows the scroll at p + cam_k with
# cam_k = direction * pan_speed * k ("pan right": direction +1), so everything fixed on the scroll has
# forward flow dx = -direction * pan_speed: "pan right" moves the picture LEFT (dx < 0) and "pan left"
# moves it RIGHT (dx > 0). pan_speed is drawn from U(0.35, 0.9) px/frame at 128 px. Mist, clouds, boat
# and birds drift too, but they cover a minority of the pixels, so the median dx of a still clip stays
# near 0; the threshold sits halfway between 0 and the slowest pan.
PAN_THRESHOLD_128 = 0.175  # px per frame at 128 px; scaled with the frame width


# ------------------------------------------------------------------------------------------------ labels
def appearance_attributes(keys=APPEARANCE_KEYS) -> dict[str, list]:
    """The label set of the probe: ``{key: allowed values}`` in :data:`ATTRIBUTES` order."""
    return {k: list(ATTRIBUTES[k]) for k in keys}


def encode_labels(attrs: dict, label_set: dict[str, list] | None = None) -> dict[str, int]:
    """Attribute values -> value indices, e.g. ``{"fog": "dense", ...}`` -> ``{"fog": 2, ...}``."""
    label_set = label_set or appearance_attributes()
    out = {}
    for key, values in label_set.items():
        check(key in attrs, f"attributes lack '{key}' (have {sorted(attrs)})")
        value = attrs[key]
        match = [i for i, v in enumerate(values) if v == value and type(v) is type(value)]
        check(bool(match), f"attribute {key}={value!r} is not one of {values}")
        out[key] = match[0]
    return out


def decode_labels(indices: dict[str, int], label_set: dict[str, list] | None = None) -> dict:
    """Value indices -> attribute values (the inverse of :func:`encode_labels`)."""
    label_set = label_set or appearance_attributes()
    out = {}
    for key, values in label_set.items():
        check(key in indices, f"indices lack '{key}'")
        i = int(indices[key])
        check(0 <= i < len(values), f"index {i} for '{key}' is outside 0..{len(values) - 1}")
        out[key] = values[i]
    return out


def label_matrix(records: list[dict], label_set: dict[str, list]) -> np.ndarray:
    """``(N, K)`` int64 value indices of N attribute dicts, columns in ``label_set`` order."""
    keys = list(label_set)
    rows = [[encode_labels(a, label_set)[k] for k in keys] for a in records]
    return np.array(rows, np.int64).reshape(-1, len(keys))


# ------------------------------------------------------------------------------------------------ network
@dataclass
class ProbeConfig:
    """Architecture and input size of an :class:`AttributeProbe`."""

    widths: tuple[int, ...] = (16, 32, 48, 64, 128)
    groups: int = 8
    size: int = 128

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        check(len(self.widths) >= 1 and all(w > 0 and w % self.groups == 0 for w in self.widths),
              f"probe widths {self.widths} must be positive multiples of groups={self.groups}")
        check(self.size >= 2 ** len(self.widths) and self.size % 8 == 0,
              f"probe size={self.size} must be a multiple of 8 and >= 2**{len(self.widths)}")

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


def _block(cin: int, cout: int, groups: int, second: bool) -> nn.Sequential:
    """Stride-2 3x3 conv, GroupNorm, SiLU; optionally a stride-1 3x3 conv, GroupNorm, SiLU after it."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.GroupNorm(groups, cout),
                               nn.SiLU()]
    if second:
        layers += [nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(groups, cout), nn.SiLU()]
    return nn.Sequential(*layers)


class AttributeProbe(nn.Module):
    """Frames ``(B, 3, S, S)`` in [-1, 1] -> one logit vector per attribute of ``label_set``.

    :meth:`features` is the pooled ``(B, D)`` vector that every head reads; :meth:`forward` returns
    ``{key: (B, len(values))}`` logits. The first two blocks (the largest maps) have one conv each, the
    others two.
    """

    def __init__(self, label_set: dict[str, list] | None = None, config: ProbeConfig | None = None):
        super().__init__()
        self.label_set = {k: list(v) for k, v in (label_set or appearance_attributes()).items()}
        check(len(self.label_set) >= 1 and all(len(v) >= 2 for v in self.label_set.values()),
              "a probe needs at least one attribute with at least two values")
        self.config = config or ProbeConfig()
        widths = self.config.widths
        blocks, cin = [], 3
        for i, w in enumerate(widths):
            blocks.append(_block(cin, w, self.config.groups, second=i > 1))
            cin = w
        self.trunk = nn.Sequential(*blocks)
        dim = self.config.feature_dim
        self.heads = nn.ModuleDict({k: nn.Linear(dim, len(v)) for k, v in self.label_set.items()})

    @property
    def keys(self) -> list[str]:
        return list(self.label_set)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def classify(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: head(feats) for k, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(x))


def to_input(frames, size: int) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` frames -> float ``(N, 3, size, size)`` in [-1, 1] (area-resized if needed)."""
    arr = np.asarray(frames)
    check(arr.ndim == 4 and arr.shape[-1] == 3, f"frames must have shape (N, H, W, 3), got {arr.shape}")
    check(arr.dtype == np.uint8, f"frames must be uint8, got {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


# ------------------------------------------------------------------------------------------------ augment
def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """``(B, 2r+1)`` normalised 1-D Gaussian kernels; sigma 0 gives the identity kernel."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigmas.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def random_blur(x: torch.Tensor, max_sigma: float, p: float, gen: torch.Generator) -> torch.Tensor:
    """Blur each image with probability ``p`` by a Gaussian of sigma ~ U(0.3, max_sigma) px (separable)."""
    b, c, h, w = x.shape
    sig = torch.rand(b, generator=gen) * (max_sigma - 0.3) + 0.3
    sig = torch.where(torch.rand(b, generator=gen) < p, sig, torch.zeros(b))
    radius = max(1, math.ceil(2.5 * max_sigma))
    k = _gaussian_kernels(sig, radius).repeat_interleave(c, dim=0)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def random_affine(x: torch.Tensor, max_zoom: float, max_shift: float, gen: torch.Generator) -> torch.Tensor:
    """Zoom in by up to ``max_zoom`` (a random crop) and shift by up to ``max_shift`` of the side."""
    b = x.shape[0]
    scale = 1.0 - torch.rand(b, generator=gen) * max_zoom
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * max_shift * 2  # grid units span 2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_tone(x: torch.Tensor, brightness: float, contrast: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image contrast ``x·c`` around the image mean, then a brightness offset (inputs in [-1, 1])."""
    b = x.shape[0]
    c = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * contrast
    off = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * brightness * 2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + off).clamp(-1, 1)


@dataclass
class AugmentConfig:
    """Training augmentation: blur (probability, max sigma px at 128 px), tone jitter, zoom and shift."""

    blur_p: float = 0.7
    blur_max_sigma: float = 2.0
    brightness: float = 0.06
    contrast: float = 0.15
    max_zoom: float = 0.12
    max_shift: float = 0.04


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    x = random_affine(x, cfg.max_zoom, cfg.max_shift, gen)
    if cfg.blur_p > 0:
        x = random_blur(x, cfg.blur_max_sigma, cfg.blur_p, gen)
    return random_tone(x, cfg.brightness, cfg.contrast, gen)


# ------------------------------------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    """Probe training settings (AdamW, linear warm-up then cosine decay)."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0
    threads: int = 1
    class_weight_power: float = 0.5  # class weights ∝ frequency ** -power (0: plain cross-entropy)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def probe_loss(logits: dict[str, torch.Tensor], labels: torch.Tensor, keys: list[str],
               weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over attributes of the cross-entropy of each head (``labels`` ``(B, K)`` in ``keys`` order),
    optionally with per-class ``weights`` for each head."""
    weights = weights or {}
    return torch.stack([F.cross_entropy(logits[k], labels[:, i], weight=weights.get(k))
                        for i, k in enumerate(keys)]).mean()


def class_weights(labels: np.ndarray, label_set: dict[str, list], power: float) -> dict[str, torch.Tensor]:
    """Per head, class weights ``frequency ** -power`` normalised to a frequency-weighted mean of 1
    (unseen classes get the largest seen weight); empty for ``power == 0``."""
    if power == 0:
        return {}
    out = {}
    for i, (key, values) in enumerate(label_set.items()):
        freq = np.bincount(labels[:, i], minlength=len(values)) / len(labels)
        w = np.where(freq > 0, np.maximum(freq, 1e-12) ** -power, 0.0)
        w[freq == 0] = w.max()
        w = w / float((w * freq).sum())
        out[key] = torch.tensor(w, dtype=torch.float32)
    return out


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train_probe(frames, labels, label_set: dict[str, list] | None = None, config: TrainConfig | None = None,
                probe_config: ProbeConfig | None = None, log=None) -> tuple[AttributeProbe, list[float]]:
    """Train a probe on uint8 ``frames`` ``(N, H, W, 3)`` with ``labels`` ``(N, K)`` value indices.

    Deterministic for a given ``config.seed`` and thread count. Returns the probe (in eval mode) and the
    mean loss of each epoch. ``log`` (optional) is called with one line per epoch.
    """
    cfg = config or TrainConfig()
    label_set = label_set or appearance_attributes()
    frames = np.asarray(frames)
    labels = np.asarray(labels, np.int64)
    check(frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8,
          f"training frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    check(labels.shape == (len(frames), len(label_set)),
          f"labels must have shape ({len(frames)}, {len(label_set)}), got {labels.shape}")
    check(cfg.epochs >= 1 and cfg.batch_size >= 1 and cfg.threads >= 1,
          f"epochs={cfg.epochs}, batch_size={cfg.batch_size} and threads={cfg.threads} must be >= 1")
    for i, (k, values) in enumerate(label_set.items()):
        check(labels[:, i].min() >= 0 and labels[:, i].max() < len(values),
              f"labels of '{k}' must lie in 0..{len(values) - 1}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        probe = AttributeProbe(label_set, probe_config)
        size = probe.config.size
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(frames)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        y_all = torch.from_numpy(labels)
        weights = class_weights(labels, label_set, cfg.class_weight_power)
        history, step = [], 0
        probe.train()
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            losses, t0 = [], time.time()
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                x = augment(to_input(frames[idx.numpy()], size), cfg.augment, gen)
                loss = probe_loss(probe(x), y_all[idx], probe.keys, weights)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                step += 1
            history.append(float(np.mean(losses)))
            if log is not None:
                log(f"probe epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]:.4f} "
                    f"({time.time() - t0:.0f} s)")
        probe.eval()
        return probe, history
    finally:
        torch.set_num_threads(previous_threads)


# ------------------------------------------------------------------------------------------------ inference
@torch.no_grad()
def frame_outputs(probe: AttributeProbe, frames, batch: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features ``(N, D)`` and softmax probabilities ``{key: (N, V)}`` of uint8 frames ``(N, H, W, 3)``."""
    probe.eval()
    arr = np.asarray(frames)
    feats, probs = [], {k: [] for k in probe.keys}
    for start in range(0, len(arr), batch):
        f = probe.features(to_input(arr[start : start + batch], probe.config.size))
        feats.append(f.numpy())
        for k, logits in probe.classify(f).items():
            probs[k].append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in probs.items()}


def clip_features(probe: AttributeProbe, frames) -> np.ndarray:
    """Per-frame probe features ``(F, D)`` of a clip ``(F, H, W, 3)`` uint8."""
    return frame_outputs(probe, frames)[0]


def clip_probabilities(probe: AttributeProbe, frames) -> dict[str, np.ndarray]:
    """Frame-averaged class probabilities ``{key: (V,)}`` of a clip."""
    return {k: p.mean(axis=0) for k, p in frame_outputs(probe, frames)[1].items()}


def predict_clip(probe: AttributeProbe, frames) -> dict:
    """One value per probe attribute: the argmax of the frame-averaged probabilities."""
    probs = clip_probabilities(probe, frames)
    return {k: probe.label_set[k][int(np.argmax(p))] for k, p in probs.items()}


def temporal_cosine(feats: np.ndarray, centre: np.ndarray | None = None) -> float:
    """Mean cosine similarity of the features of adjacent frames (optionally after subtracting ``centre``)."""
    f = np.asarray(feats, np.float64)
    check(f.ndim == 2 and len(f) >= 2, f"features must have shape (F >= 2, D), got {f.shape}")
    if centre is not None:
        f = f - np.asarray(centre, np.float64)[None]
    a, b = f[:-1], f[1:]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.mean())


# ------------------------------------------------------------------------------------------------ files
def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_probe(probe: AttributeProbe, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``path`` (.safetensors weights) and its ``.json`` sidecar (labels, config, ``extra``)."""
    from safetensors.torch import save_file

    from ..video_io import atomic_output

    path = Path(path)
    check(path.suffix == ".safetensors", f"probe path '{path}' must end in .safetensors")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "attributes": probe.label_set,
            "config": asdict(probe.config), **({"extra": extra} if extra else {})}
    state = {k: v.detach().contiguous().clone() for k, v in probe.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    with atomic_output(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_probe(path: str | Path, label_set: dict[str, list] | None = None) -> AttributeProbe:
    """Read a probe written by :func:`save_probe`; its attributes must equal ``label_set`` (default: the
    appearance attributes of the current :data:`ATTRIBUTES`)."""
    from safetensors.torch import load_file

    path = Path(path)
    side = sidecar_path(path)
    check(path.is_file(), f"probe weights '{path}' do not exist")
    check(side.is_file(), f"probe sidecar '{side}' does not exist")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShanshuiError(f"probe sidecar '{side}' is not readable JSON: {exc}") from exc
    check(isinstance(meta, dict) and meta.get("format") == FORMAT,
          f"'{side}' is not an attribute-probe sidecar (format {FORMAT!r} expected)")
    check(meta.get("format_version") == FORMAT_VERSION,
          f"'{side}' has format_version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    expected = label_set or appearance_attributes()
    stored = meta.get("attributes")
    check(stored == expected,
          f"probe '{path}' was trained on attributes {stored}, not the expected {expected}; retrain it")
    try:
        config = ProbeConfig(**meta["config"])
    except (KeyError, TypeError) as exc:
        raise ShanshuiError(f"probe sidecar '{side}' has a bad config: {exc}") from exc
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise ShanshuiError(f"probe weights '{path}' are not a readable .safetensors file: {exc}") from exc
    probe = AttributeProbe(stored, config)
    try:
        probe.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ShanshuiError(f"probe weights '{path}' do not fit its config: {' '.join(first[:2])}") from exc
    probe.eval()
    return probe


# ------------------------------------------------------------------------------------------------ Fréchet
# One implementation for every feature network: see shanshui.metrics.distances (ddof 1 by default).
from .distances import frechet_distance  # noqa: E402,F401


# ------------------------------------------------------------------------------------------------ camera
def median_dx(flows) -> float:
    """Median horizontal flow (px/frame) over all pixels and frame pairs of ``(F-1, H, W, 2)`` flows."""
    f = np.asarray(flows)
    check(f.ndim == 4 and f.shape[-1] == 2 and len(f) >= 1,
          f"flows must have shape (F-1, H, W, 2), got {f.shape}")
    return float(np.median(f[..., 0]))


def camera_direction(flows, threshold: float | None = None) -> str:
    """The ``camera`` label from forward flows: "pan left" / "pan right" / "still".

    The median horizontal flow ``dx`` over the frames decides: ``dx > t`` -> "pan left" (the picture moves
    right), ``dx < -t`` -> "pan right", otherwise "still"; ``t`` defaults to :data:`PAN_THRESHOLD_128`
    scaled by ``width / 128``.
    """
    f = np.asarray(flows)
    dx = median_dx(f)
    t = PAN_THRESHOLD_128 * f.shape[2] / 128.0 if threshold is None else float(threshold)
    check(t > 0, f"threshold={t} must be > 0")
    return "pan left" if dx > t else "pan right" if dx < -t else "still"
