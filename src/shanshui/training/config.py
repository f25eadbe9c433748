"""The training configuration: a tree of dataclasses read from YAML/JSON, with dotted command-line overrides.

A config file mirrors the tree::

    output_dir: runs/nadm
    model: {base_model: ~/sd15, sparse_causal: temporal}
    loss: {lambda_con: 0.07, m: 4}

and any leaf can be overridden as ``loss.lambda_con=0`` (the value is parsed as YAML, so ``true``, ``1e-5``,
``[a, b]`` and ``null`` work). :func:`validate` checks every value, and that every named path exists,
before anything heavy is built, so a typo costs a second rather than a model load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ShanshuiError, check

SPARSE_CAUSAL_MODES = ("temporal", "spatial", "off")
NORM_MODES = ("joint", "frame")
POSITIVE_MODES = ("next", "window")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
LATENT_SAMPLING = ("sample", "mean")


@dataclass
class ModelConfig:
    """Which frozen components to train on, and the motion module's shape and attention switches."""

    base_model: str | None = None        # diffusers folder or single SD 1.5 checkpoint
    preset: str | None = None            # "tiny" | "small": random components built in code (tests, CPU recipe)
    preset_seed: int = 0
    motion_module: str | None = None     # optional initialisation (AnimateDiff / diffusers / NADM weights)
    sparse_causal: str = "temporal"      # "off" = ablation "without SC-Attn" (plain AnimateDiff attn2)
    versatile: bool = True               # False = ablation "without Ver-Attn"
    norm: str = "joint"
    max_seq_length: int = 32
    num_attention_heads: int | None = None   # None: 8 for a real base model, the preset's value otherwise
    adapter_grid: int = 8
    adapter_hidden_dim: int = 512
    adapter_proj_dim: int = 128
    gradient_checkpointing: bool = False
    lora_rank: int = 0                   # > 0: train a rank-R motion LoRA on model.motion_module instead of it


@dataclass
class DataConfig:
    root: str | None = None              # folder of (video, caption) pairs
    cache: str | None = None             # latent cache written by `shanshui data cache` (used instead of root)
    frames: int = 8
    stride: int = 4
    size: int = 256
    random_start: bool = True
    num_workers: int = 0
    text_dropout: float = 0.1            # probability of training on the empty prompt (for CFG)
    latent_sampling: str = "sample"      # draw z0 from the VAE posterior, or take its mean


@dataclass
class OptimConfig:
    lr: float = 1e-5
    batch_size: int = 1                  # per process
    gradient_accumulation_steps: int = 1
    weight_decay: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0           # 0 disables clipping


@dataclass
class ScheduleConfig:
    max_steps: int = 40000               # optimizer steps
    max_minutes: float = 0.0             # safety net: end (with the final save) after this long; 0 = never
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0


@dataclass
class LossConfig:
    lambda_diff: float = 1.0
    lambda_con: float = 0.07             # 0 = ablation "without contrastive noise" (adapter unused)
    m: int = 4
    tau: float = 0.07
    positives: str = "next"
    lambda_key: float = 0.0              # CCDM eq. 13's λ2: clean keyframes pinned in a second pass (0 = off)
    keyframes: int = 1                   # frames pinned per clip for the λ2 term


@dataclass
class CheckpointConfig:
    every: int = 500
    total_limit: int = 3                 # 0 keeps every checkpoint
    resume: str | None = None            # "latest" or a checkpoint folder


@dataclass
class ValidationConfig:
    every: int = 0                       # 0 = only at the end (if prompts are given)
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    num_frames: int | None = None        # default: data.frames
    size: int | None = None              # default: data.size
    steps: int = 25
    guidance: float = 8.0
    fps: float = 8.0


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999


@dataclass
class RunConfig:
    """The top-level options of a run, shared by ``shanshui train`` and ``shanshui train-control``; a subclass
    adds its sections (their fields follow these, in the subclass's order) and may change ``output_dir``."""

    output_dir: str = "runs/nadm"
    seed: int = 0
    mixed_precision: str = "no"
    cpu: bool = False                    # train on the CPU even when a GPU is present
    allow_tf32: bool = True
    log_every: int = 10

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclass
class TrainConfig(RunConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


# ----------------------------------------------------------------------------------------------- reading

def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints accepted for floats) and return it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        check(isinstance(value, (list, tuple)), f"{where}={value!r} must be a list")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        check(isinstance(value, bool), f"{where}={value!r} must be true or false")
        return value
    if tp is int:
        check(isinstance(value, int) and not isinstance(value, bool), f"{where}={value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}={value!r} must be a number")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/no/false as False: take the word back
            value = "on" if value else "off"
        check(isinstance(value, str), f"{where}={value!r} must be a string")
        return value
    raise ShanshuiError(f"{where}: unsupported type {tp}")  # pragma: no cover - only our own dataclasses


def _build(cls, data: dict, prefix: str):
    check(isinstance(data, dict), f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ShanshuiError(f"unknown config key '{where}{unknown[0]}' (allowed in {prefix or 'the top level'}: "
                            f"{', '.join(sorted(types))})")
    kwargs = {}
    for name, value in data.items():
        tp = types[name]
        where = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, where)
        else:
            kwargs[name] = _coerce(value, tp, where)
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (in place) and return it."""
    for item in overrides:
        check("=" in item, f"override '{item}' must look like section.key=value (e.g. loss.lambda_con=0)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        check(all(parts), f"override '{item}': empty key")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            check(isinstance(node, dict), f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = _parse_value(text)
    return data


def read_config_file(path: str | Path) -> dict:
    path = Path(path).expanduser()
    check(path.is_file(), f"config file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShanshuiError(f"cannot parse config file '{path}': {first}") from exc
    data = data or {}
    check(isinstance(data, dict), f"config file '{path}' must hold a mapping at the top level")
    return data


def load_config_as(cls, validate_fn, path: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()):
    """A ``cls`` config from ``path`` (YAML or JSON; ``None`` = defaults) with ``overrides`` applied, checked
    by ``validate_fn`` before it is returned."""
    data = read_config_file(path) if path is not None else {}
    apply_overrides(data, list(overrides))
    cfg = _build(cls, data, "")
    validate_fn(cfg)
    return cfg


def config_from_dict_as(cls, validate_fn, data: dict):
    """A ``cls`` config from a plain dict (copied through JSON, so the caller's dict is left as it is),
    checked by ``validate_fn``."""
    cfg = _build(cls, json.loads(json.dumps(data)), "")
    validate_fn(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read ``path`` (YAML or JSON; ``None`` = defaults), apply ``overrides`` and validate.

    Relative paths inside a config file are taken relative to the current directory (like every CLI path).
    """
    return load_config_as(TrainConfig, validate, path, overrides)


def config_from_dict(data: dict) -> TrainConfig:
    return config_from_dict_as(TrainConfig, validate, data)


# ----------------------------------------------------------------------------------------------- checks

def _positive(v, name: str) -> None:
    check(v > 0 and math.isfinite(v), f"{name}={v} must be > 0")


def _non_negative(v, name: str) -> None:
    check(v >= 0 and math.isfinite(v), f"{name}={v} must be >= 0")


def validate_run(cfg: RunConfig) -> None:
    """The checks of the :class:`RunConfig` options (``mixed_precision: off`` is read as ``no``)."""
    check(bool(cfg.output_dir), "output_dir must be set")
    _non_negative(cfg.seed, "seed")
    if cfg.mixed_precision == "off":
        cfg.mixed_precision = "no"
    check(cfg.mixed_precision in MIXED_PRECISION,
          f"mixed_precision='{cfg.mixed_precision}' must be one of {', '.join(MIXED_PRECISION)}")
    _positive(cfg.log_every, "log_every")


def validate(cfg: TrainConfig) -> None:
    """Every check that needs no model: ranges, choices, paths, their combinations."""
    from ..models.presets import preset_names

    m, d, o, s, lo, c, v = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.loss, cfg.checkpoint, cfg.validation
    validate_run(cfg)

    # model
    check((m.base_model is None) != (m.preset is None),
          "set exactly one of model.base_model (a local SD 1.5 folder/file) and model.preset "
          f"({'|'.join(preset_names())})")
    if m.preset is not None:
        check(m.preset in preset_names(), f"model.preset='{m.preset}' must be one of {', '.join(preset_names())}")
    if m.base_model is not None:
        check(Path(m.base_model).expanduser().exists(), f"model.base_model '{m.base_model}' does not exist")
    if m.motion_module is not None:
        check(Path(m.motion_module).expanduser().exists(), f"model.motion_module '{m.motion_module}' does not exist")
    _non_negative(m.lora_rank, "model.lora_rank")
    check(m.lora_rank == 0 or m.motion_module is not None,
          f"model.lora_rank={m.lora_rank} trains a LoRA on an existing motion module: set model.motion_module")
    check(m.sparse_causal in SPARSE_CAUSAL_MODES,
          f"model.sparse_causal='{m.sparse_causal}' must be one of {', '.join(SPARSE_CAUSAL_MODES)}")
    check(m.norm in NORM_MODES, f"model.norm='{m.norm}' must be one of {', '.join(NORM_MODES)}")
    check(m.max_seq_length >= 2, f"model.max_seq_length={m.max_seq_length} must be >= 2")
    if m.num_attention_heads is not None:
        _positive(m.num_attention_heads, "model.num_attention_heads")
    for name in ("adapter_grid", "adapter_hidden_dim", "adapter_proj_dim"):
        _positive(getattr(m, name), f"model.{name}")

    # data
    check((d.root is None) != (d.cache is None),
          "set exactly one of data.root (a folder of videos + captions) and data.cache (from `shanshui data cache`)")
    if d.root is not None:
        root = Path(d.root).expanduser()
        check(root.is_dir(), f"data.root '{d.root}' is not a folder")
    if d.cache is not None:
        check((Path(d.cache).expanduser() / "cache.json").is_file(),
              f"data.cache '{d.cache}' is not a latent cache (no cache.json; create one with `shanshui data cache`)")
    check(d.frames >= 2, f"data.frames={d.frames} must be >= 2 (the motion module needs a clip)")
    check(d.frames <= m.max_seq_length,
          f"data.frames={d.frames} exceeds model.max_seq_length={m.max_seq_length}")
    _positive(d.stride, "data.stride")
    check(d.size >= 8 and d.size % 8 == 0, f"data.size={d.size} must be a positive multiple of 8")
    _non_negative(d.num_workers, "data.num_workers")
    check(0.0 <= d.text_dropout <= 1.0, f"data.text_dropout={d.text_dropout} must be in [0, 1]")
    check(d.latent_sampling in LATENT_SAMPLING,
          f"data.latent_sampling='{d.latent_sampling}' must be one of {', '.join(LATENT_SAMPLING)}")

    # optimisation
    _positive(o.lr, "optim.lr")
    _positive(o.batch_size, "optim.batch_size")
    _positive(o.gradient_accumulation_steps, "optim.gradient_accumulation_steps")
    _non_negative(o.weight_decay, "optim.weight_decay")
    for name in ("beta1", "beta2"):
        val = getattr(o, name)
        check(0.0 <= val < 1.0, f"optim.{name}={val} must be in [0, 1)")
    _positive(o.eps, "optim.eps")
    _non_negative(o.max_grad_norm, "optim.max_grad_norm")
    _positive(s.max_steps, "schedule.max_steps")
    _non_negative(s.max_minutes, "schedule.max_minutes")
    check(s.lr_scheduler in LR_SCHEDULERS,
          f"schedule.lr_scheduler='{s.lr_scheduler}' must be one of {', '.join(LR_SCHEDULERS)}")
    _non_negative(s.warmup_steps, "schedule.warmup_steps")
    check(s.warmup_steps <= s.max_steps, f"schedule.warmup_steps={s.warmup_steps} exceeds max_steps={s.max_steps}")

    # loss
    _non_negative(lo.lambda_diff, "loss.lambda_diff")
    _non_negative(lo.lambda_con, "loss.lambda_con")
    check(lo.lambda_diff > 0 or lo.lambda_con > 0, "loss.lambda_diff and loss.lambda_con cannot both be 0")
    check(lo.m >= 1, f"loss.m={lo.m} must be >= 1")
    _non_negative(lo.lambda_key, "loss.lambda_key")
    if lo.lambda_key > 0:
        check(1 <= lo.keyframes < d.frames, f"loss.keyframes={lo.keyframes} must be in [1, {d.frames - 1}] "
                                            f"(some frames of the {d.frames}-frame clip must stay free)")
    _positive(lo.tau, "loss.tau")
    check(lo.positives in POSITIVE_MODES, f"loss.positives='{lo.positives}' must be one of {', '.join(POSITIVE_MODES)}")
    if lo.lambda_con > 0:
        check(lo.m + 1 < d.frames, f"loss.m={lo.m} leaves no negative frame in a {d.frames}-frame clip "
                                   f"(needs frames > m + 1; lower loss.m or set loss.lambda_con=0)")

    # checkpoints, validation, EMA
    _non_negative(c.every, "checkpoint.every")
    _non_negative(c.total_limit, "checkpoint.total_limit")
    if c.resume is not None and c.resume != "latest":
        check(Path(c.resume).expanduser().is_dir(), f"checkpoint.resume '{c.resume}' is not a checkpoint folder "
                                                    "(give 'latest' or a checkpoint-NNNNNN folder)")
    _non_negative(v.every, "validation.every")
    check(all(p.strip() for p in v.prompts), "validation.prompts must be non-empty strings")
    check(len(v.seeds) >= 1, "validation.seeds must list at least one seed")
    if v.num_frames is not None:
        check(2 <= v.num_frames <= m.max_seq_length,
              f"validation.num_frames={v.num_frames} must be in [2, {m.max_seq_length}]")
    if v.size is not None:
        check(v.size >= 8 and v.size % 8 == 0, f"validation.size={v.size} must be a positive multiple of 8")
    _positive(v.steps, "validation.steps")
    _non_negative(v.guidance, "validation.guidance")
    _positive(v.fps, "validation.fps")
    check(0.0 < cfg.ema.decay < 1.0, f"ema.decay={cfg.ema.decay} must be in (0, 1)")
