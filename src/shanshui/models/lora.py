"""LoRA files on the video pipeline: spatial (UNet image layers, text encoder) and motion (motion modules).

A LoRA layer adds a low-rank update to one ``Linear``/``Conv2d`` weight::

    W' = W + scale · (alpha / rank) · up @ down

(``down``: ``(rank, in[, kh, kw])``, ``up``: ``(out, rank[, 1, 1])``; without an ``alpha`` the factor is 1).
Key layouts read, and how they name the layer:

* kohya / A1111 / CivitAI: ``lora_unet_<module_with_underscores>.lora_down.weight`` / ``.lora_up.weight`` /
  ``.alpha``; ``lora_te_text_model_encoder_layers_0_self_attn_q_proj...`` for the text encoder.
* diffusers / peft: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (``lora_A.<adapter>.weight`` too),
  older diffusers ``<module>.lora.down.weight`` / ``.lora.up.weight``, ``text_encoder.<module>...``; the
  alpha comes from ``.alpha`` tensors or, as diffusers writes it, from the safetensors metadata
  ``lora_adapter_metadata`` (``lora_alpha`` / ``unet.lora_alpha``, with ``alpha_pattern`` overrides).
* AnimateDiff motion LoRAs (v2 zoom/pan...): ``down_blocks.0.motion_modules.0.temporal_transformer.
  transformer_blocks.0.attention_blocks.0.processor.to_q_lora.down.weight`` — renamed the way diffusers'
  ``convert_animatediff_motion_lora_to_diffusers.py`` does (``attention_blocks.0/1`` -> ``attn1/2``,
  ``.temporal_transformer`` dropped, ``processor.to_q_lora`` -> ``to_q``).

Silent no-ops are the known failure of LoRA loaders (unmatched keys only logged). Here every LoRA layer must
find its module; a file none of whose layers match is an error naming the first unmatched key, a partial
match is reported, a shape mismatch is an error. ``fuse=True`` adds the update into the weights;
``fuse=False`` leaves the weights alone and adds ``scale·(alpha/rank)·up(down(x))`` to the module's output
through a forward hook (:func:`remove_loras` takes the hooks off again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ShanshuiError, check
from .motion_io import _TO_DIFFUSERS

TARGETS = ("unet", "text_encoder")
_MOTION_RENAMES = _TO_DIFFUSERS     # original AnimateDiff motion-module names -> diffusers names
_UNET_STARTS = ("down_blocks.", "up_blocks.", "mid_block.", "conv_in", "conv_out", "time_embedding.")

# (regex, role): role "down"/"up"/"alpha"; group "name" is the layer, group "proc" an attention processor slot
_PATTERNS = (
    (re.compile(r"^(?P<name>lora_(?:unet|te\d?)_.+)\.lora_(?P<role>down|up)\.weight$"), None),
    (re.compile(r"^(?P<name>lora_(?:unet|te\d?)_.+)\.(?P<role>alpha)$"), None),
    (re.compile(r"^(?P<name>.+)\.processor\.(?P<proc>to_q|to_k|to_v|to_out)_lora\.(?P<role>down|up)\.weight$"),
     None),
    (re.compile(r"^(?P<name>.+)\.lora_(?P<role>A|B)(?:\.[\w-]+)?\.weight$"), {"A": "down", "B": "up"}),
    (re.compile(r"^(?P<name>.+)\.lora\.(?P<role>down|up)\.weight$"), None),
    (re.compile(r"^(?P<name>.+)\.lora_(?P<role>down|up)\.weight$"), None),
    (re.compile(r"^(?P<name>.+)\.(?P<role>alpha)$"), None),
)


@dataclass
class LoraLayer:
    key: str                 # the file's key of the ``down`` matrix (for messages)
    name: str                # layer name as written in the file, normalised
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def factor(self) -> float:
        return 1.0 if self.alpha is None else float(self.alpha) / self.rank


@dataclass
class LoraReport:
    path: Path
    scale: float
    patched: dict[str, int] = field(default_factory=dict)
    motion: int = 0
    unmatched: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.patched.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {self.patched.get(t, 0)}" for t, n in (("unet", "UNet"), ("text_encoder", "text encoder"))
                          if self.patched.get(t))
        text = (f"LoRA '{self.path.name}' (scale {self.scale:g}): patched {self.total} layers ({parts}"
                f"{f'; {self.motion} in motion modules' if self.motion else ''})")
        if self.unmatched:
            text += f"; {len(self.unmatched)} layers matched nothing in this model, first '{self.unmatched[0]}'"
        return text


def parse_lora_spec(spec) -> tuple[Path, float]:
    """``"PATH[:SCALE]"`` (or ``(path, scale)``) -> ``(Path, scale)``; the scale defaults to 1."""
    if isinstance(spec, (tuple, list)):
        check(len(spec) == 2, f"LoRA spec {spec!r} must be (path, scale)")
        path, scale = Path(spec[0]), spec[1]
    else:
        text = str(spec)
        path, scale = Path(text), 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head and not Path(text).exists():
            try:
                scale = float(tail)
                path = Path(head)
            except ValueError:
                raise ShanshuiError(f"--lora '{text}': the part after the last ':' must be a number "
                                    f"(PATH[:SCALE], e.g. moxin.safetensors:0.8)") from None
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ShanshuiError(f"LoRA scale {scale!r} must be a number") from None
    check(scale == scale and abs(scale) < float("inf"), f"--lora '{spec}': scale must be a finite number")
    check(path.is_file(), f"--lora '{path}' does not exist (give a .safetensors/.ckpt/.pt LoRA file)")
    return path, scale


def read_lora(path: Path) -> dict[str, torch.Tensor]:
    from ..pipelines.single_file import read_state_dict

    return read_state_dict(path, what="LoRA")


def read_peft_metadata(path: Path) -> dict:
    """diffusers' ``lora_adapter_metadata`` (the peft ``LoraConfig`` as JSON) of a ``.safetensors`` LoRA, or {}."""
    import json

    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("lora_adapter_metadata")
        meta = json.loads(raw) if raw else {}
    except Exception:
        return {}
    return meta if isinstance(meta, dict) else {}


def metadata_alpha(meta: dict, target: str, module_name: str) -> float | None:
    """``lora_alpha`` for a module from peft metadata (``alpha_pattern`` first, then the adapter's value)."""
    for prefix in (f"{target}.", ""):
        pattern = meta.get(f"{prefix}alpha_pattern") or {}
        for key, value in pattern.items():
            if module_name == key or module_name.endswith("." + key):
                return float(value)
        if meta.get(f"{prefix}lora_alpha") is not None:
            return float(meta[f"{prefix}lora_alpha"])
    return None


def _layer_name(m: re.Match) -> str:
    name = m.group("name")
    proc = m.groupdict().get("proc")
    if proc:
        name = f"{name}.{'to_out.0' if proc == 'to_out' else proc}"
    for old, new in _MOTION_RENAMES:
        name = name.replace(old, new)
    return name


def parse_layers(sd: dict[str, torch.Tensor], path: Path) -> list[LoraLayer]:
    """Group a LoRA state dict into layers (down, up, alpha). Keys that fit no LoRA layout are an error."""
    parts: dict[str, dict] = {}
    for key, value in sd.items():
        for regex, roles in _PATTERNS:
            m = regex.match(key)
            if m:
                role = m.group("role")
                role = roles[role] if roles else role
                entry = parts.setdefault(_layer_name(m), {})
                entry[role] = value
                if role == "down":
                    entry["key"] = key
                break
        else:
            raise ShanshuiError(f"LoRA '{path}': key '{key}' is not a LoRA weight (expected lora_down/lora_up/"
                                f"alpha, lora_A/lora_B or lora.down/lora.up keys)")
    layers = []
    for name, entry in parts.items():
        if "down" not in entry and "up" not in entry:
            continue  # an alpha whose layer is stored under another naming; checked through its layer
        check("down" in entry and "up" in entry,
              f"LoRA '{path}': layer '{name}' has a {'down' if 'down' in entry else 'up'} matrix but no "
              f"{'up' if 'down' in entry else 'down'} matrix")
        down, up = entry["down"], entry["up"]
        check(down.shape[0] == up.shape[1],
              f"LoRA '{path}': layer '{name}' has rank {down.shape[0]} (down) but {up.shape[1]} (up)")
        alpha = entry.get("alpha")
        layers.append(LoraLayer(entry["key"], name, down, up, None if alpha is None else float(alpha)))
    check(bool(layers), f"LoRA '{path}' holds no LoRA layers")
    return layers


def _index(model: torch.nn.Module) -> tuple[dict[str, str], dict[str, torch.nn.Module]]:
    mods = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    return {n.replace(".", "_"): n for n in mods}, mods


def resolve(name: str, indexes: dict) -> tuple[str, str] | None:
    """A file's layer name -> ``(target, module name)`` in the pipeline, or None."""
    if name.startswith(("lora_unet_", "lora_te")):
        target = "unet" if name.startswith("lora_unet_") else "text_encoder"
        flat = name.split("_", 2)[2]
        if target == "text_encoder":
            flat = flat.removeprefix("text_model_")
        found = indexes[target][0].get(flat)
        return (target, found) if found else None
    for prefix in ("base_model.model.", ""):
        name = name.removeprefix(prefix)
    if name.startswith("unet."):
        target, name = "unet", name[len("unet."):]
    elif name.startswith("text_encoder."):
        target, name = "text_encoder", name[len("text_encoder."):]
    elif name.startswith(_UNET_STARTS):
        target = "unet"
    else:
        target = "text_encoder"
    if target == "text_encoder":
        name = name.removeprefix("text_model.")
    return (target, name) if name in indexes[target][1] else None


def delta(module: torch.nn.Module, layer: LoraLayer, scale: float, key: str) -> torch.Tensor:
    """``scale·(alpha/rank)·up@down`` shaped like ``module.weight`` (float32)."""
    w = module.weight
    up = layer.up.float().flatten(1)
    down = layer.down.float().flatten(1)
    d = (up @ down) * (scale * layer.factor)
    if d.numel() != w.numel() or d.shape[0] != w.shape[0]:
        raise ShanshuiError(f"LoRA layer '{key}' makes a {tuple(d.shape)} update for a weight of shape "
                            f"{tuple(w.shape)} (a LoRA for a different base model?)")
    return d.reshape(w.shape)


class _Hook:
    """Forward hook adding ``scale·(alpha/rank)·up(down(x))`` to a Linear/Conv2d output (unfused LoRA)."""

    def __init__(self, module, layer: LoraLayer, scale: float):
        w = module.weight
        self.factor = scale * layer.factor
        self.conv = isinstance(module, torch.nn.Conv2d)
        down, up = layer.down.to(w.device, w.dtype), layer.up.to(w.device, w.dtype)
        if self.conv:
            self.down = down if down.ndim == 4 else down[:, :, None, None]
            self.up = up if up.ndim == 4 else up[:, :, None, None]
            self.stride, self.padding, self.dilation = module.stride, module.padding, module.dilation
        else:
            self.down, self.up = down.flatten(1), up.flatten(1)

    def __call__(self, module, args, output):
        x = args[0]
        if self.conv:
            h = F.conv2d(x, self.down, stride=self.stride, padding=self.padding, dilation=self.dilation)
            return output + self.factor * F.conv2d(h, self.up)
        return output + self.factor * F.linear(F.linear(x, self.down), self.up)


def apply_lora(pipe, path: Path, scale: float = 1.0, fuse: bool = True) -> LoraReport:
    """Apply one LoRA file to ``pipe.unet`` and ``pipe.text_encoder``; returns what was patched."""
    path = Path(path)
    layers = parse_layers(read_lora(path), path)
    meta = read_peft_metadata(path)
    indexes = {t: _index(getattr(pipe, t)) for t in TARGETS}
    report = LoraReport(path, scale)
    plan = []
    for layer in layers:
        where = resolve(layer.name, indexes)
        if where is None:
            report.unmatched.append(layer.key)
            continue
        target, module_name = where
        module = indexes[target][1][module_name]
        if layer.alpha is None and meta:
            layer.alpha = metadata_alpha(meta, target, module_name)
        plan.append((target, module_name, module, layer, delta(module, layer, scale, layer.key)))
    if not plan:
        raise ShanshuiError(f"LoRA '{path}': none of its {len(layers)} layers matches this model "
                            f"(first unmatched key '{report.unmatched[0]}')")
    hooks = getattr(pipe, "_lora_hooks", None)
    if hooks is None:
        hooks = []
        pipe._lora_hooks = hooks
    with torch.no_grad():
        for target, module_name, module, layer, d in plan:
            if fuse:
                module.weight.copy_((module.weight.float() + d.to(module.weight.device)).to(module.weight.dtype))
            else:
                hooks.append(module.register_forward_hook(_Hook(module, layer, scale)))
            report.patched[target] = report.patched.get(target, 0) + 1
            report.motion += ".motion_modules." in module_name
    return report


def apply_loras(pipe, specs, fuse: bool = True) -> list[LoraReport]:
    """Apply several ``(path, scale)`` LoRAs in order (their updates add up)."""
    return [apply_lora(pipe, path, scale, fuse=fuse) for path, scale in (parse_lora_spec(s) for s in specs)]


def remove_loras(pipe) -> int:
    """Take unfused LoRA hooks off ``pipe`` again; returns how many were removed (fused LoRAs stay)."""
    hooks = getattr(pipe, "_lora_hooks", None) or []
    for h in hooks:
        h.remove()
    n = len(hooks)
    pipe._lora_hooks = []
    return n


# ------------------------------------------------------------------------------------------ training
MOTION_LORA_TARGETS = re.compile(r"\.motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


class MotionLoRA(torch.nn.Module):
    """Trainable rank-``r`` LoRA on every motion-module attention projection (``attn1/attn2`` ``to_q``, ``to_k``,
    ``to_v``, ``to_out.0``) — the layers AnimateDiff's motion LoRAs adapt. ``down`` starts random (Kaiming
    uniform, as peft), ``up`` at zero, so a fresh LoRA leaves the network unchanged. The update enters through
    forward hooks (the motion weights themselves stay frozen); alpha = rank, i.e. factor 1.

    :meth:`diffusers_state_dict` writes peft/diffusers keys (``unet.<module>.lora_A.weight`` /
    ``lora_B.weight``), which ``--lora`` and :func:`apply_lora` read back."""

    def __init__(self, unet: torch.nn.Module, rank: int):
        super().__init__()
        import math

        check(isinstance(rank, int) and rank >= 1, f"LoRA rank={rank} must be an integer >= 1")
        self.rank = rank
        self.names = [n for n, m in unet.named_modules()
                      if isinstance(m, torch.nn.Linear) and MOTION_LORA_TARGETS.search(n)]
        check(bool(self.names), "the UNet has no motion-module attention layers to put a LoRA on")
        modules = dict(unet.named_modules())
        self.down = torch.nn.ParameterDict()
        self.up = torch.nn.ParameterDict()
        self._handles = []
        for name in self.names:
            lin = modules[name]
            key = name.replace(".", "_")
            down = torch.empty(rank, lin.in_features, device=lin.weight.device, dtype=torch.float32)
            torch.nn.init.kaiming_uniform_(down, a=math.sqrt(5))
            self.down[key] = torch.nn.Parameter(down)
            self.up[key] = torch.nn.Parameter(torch.zeros(lin.out_features, rank, device=lin.weight.device))
            self._handles.append(lin.register_forward_hook(self._hook(key)))

    def _hook(self, key: str):
        def hook(module, args, output):
            x = args[0]
            down, up = self.down[key], self.up[key]
            return output + F.linear(F.linear(x, down.to(x.dtype)), up.to(x.dtype)).to(output.dtype)
        return hook

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def diffusers_state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.names:
            key = name.replace(".", "_")
            out[f"unet.{name}.lora_A.weight"] = self.down[key].detach().cpu().contiguous()
            out[f"unet.{name}.lora_B.weight"] = self.up[key].detach().cpu().contiguous()
        return out

    def load_diffusers_state_dict(self, sd: dict[str, torch.Tensor], where: str) -> None:
        expected = set(self.diffusers_state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:
            key = (missing or unexpected)[0]
            raise ShanshuiError(f"{where}: motion LoRA key '{key}' is {'missing' if missing else 'unexpected'}")
        with torch.no_grad():
            for name in self.names:
                key = name.replace(".", "_")
                for part, store in (("lora_A", self.down), ("lora_B", self.up)):
                    value = sd[f"unet.{name}.{part}.weight"]
                    check(value.shape == store[key].shape, f"{where}: '{name}.{part}' has shape "
                                                           f"{tuple(value.shape)}, expected {tuple(store[key].shape)}")
                    store[key].copy_(value)

    def save(self, path: str | Path) -> Path:
        """Write the LoRA as ``.safetensors`` with diffusers' ``lora_adapter_metadata`` (alpha = rank)."""
        import json

        from safetensors.torch import save_file

        from ..video_io import atomic_output

        path = Path(path)
        meta = {"unet.r": self.rank, "unet.lora_alpha": self.rank,
                "unet.target_modules": sorted({n.rsplit(".", 1)[-1] if not n.endswith("to_out.0") else "to_out.0"
                                               for n in self.names})}
        with atomic_output(path) as tmp:
            save_file(self.diffusers_state_dict(), str(tmp),
                      metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta, sort_keys=True)})
        return path
