"""Configuration of ``shanshui train-control`` (the image-to-video control model, SPEC §2.1–2.3).

Same file format and override syntax as ``shanshui train`` (:mod:`shanshui.training.config`); the optimiser,
schedule and checkpoint sections are the same dataclasses. Example::

    output_dir: runs/bundled/control
    max_minutes: 4                       # stop cleanly (checkpoint + final weights) after this wall time
    model: {base_model: runs/bundled/stage1/model}
    data: {root: data/bundled, frames: 16, size: 128}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import check
from .config import (
    LATENT_SAMPLING,
    NORM_MODES,
    SPARSE_CAUSAL_MODES,
    CheckpointConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    _non_negative,
    _positive,
    config_from_dict_as,
    load_config_as,
    validate,
    validate_run,
)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class ControlModelConfig:
    base_model: str | None = None          # diffusers folder (its scheduler/ config sets the noise schedule)
    preset: str | None = None              # "tiny" | "small": random in-code components (tests)
    preset_seed: int = 0
    motion_module: str | None = None       # optional start for the I2V model's motion modules; else fresh
    prediction_type: str | None = None     # None: what the base model's scheduler config says
    sparse_causal: str = "temporal"
    versatile: bool = True
    norm: str = "joint"
    max_seq_length: int = 32
    num_attention_heads: int | None = None
    first_frame: str = "concat"            # "none": ablation without first-frame conditioning
    motion: str = "value"                  # "none": ablation without the motion encoder
    train_motion_modules: bool = True
    encoder_channels: list[int] | None = None
    refiner_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    gradient_checkpointing: bool = False


@dataclass
class ControlDataConfig:
    root: str | None = None                # `shanshui data synth` folder (clips + exact flow)
    frames: int = 16
    size: int = 128
    limit: int | None = None               # use only the first N clips
    num_workers: int = 0
    text_dropout: float = 0.1              # caption -> "" (classifier-free guidance)
    motion_dropout: float = 0.15           # no motion field (the model also learns to animate freely)
    strength_dropout: float = 0.1          # no strength embedding
    max_arrows: int = 5                    # arrows sampled per clip for the refinement network
    latent_sampling: str = "sample"


@dataclass
class ControlLossConfig:
    lambda_diff: float = 1.0
    lambda_refine: float = 1.0             # endpoint error of T on valid pixels (px/frame)


@dataclass
class ControlTrainConfig(RunConfig):
    # output_dir keeps its first place; RunConfig's other options (seed ... log_every) follow it, then these
    output_dir: str = "runs/control"
    max_minutes: float = 0.0               # 0 = no time budget; else stop after this many minutes of training
    model: ControlModelConfig = field(default_factory=ControlModelConfig)
    data: ControlDataConfig = field(default_factory=ControlDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: ControlLossConfig = field(default_factory=ControlLossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def load_control_config(path=None, overrides=()) -> ControlTrainConfig:
    return load_config_as(ControlTrainConfig, validate_control, path, overrides)


def control_config_from_dict(data: dict) -> ControlTrainConfig:
    return config_from_dict_as(ControlTrainConfig, validate_control, data)


def validate_control(cfg: ControlTrainConfig) -> None:
    """Every check that needs no model (ranges, choices, paths)."""
    from ..models.control import FIRST_FRAME_MODES, MOTION_MODES
    from ..models.presets import preset_names

    m, d, lo = cfg.model, cfg.data, cfg.loss
    validate_run(cfg)
    check(cfg.max_minutes >= 0 and math.isfinite(cfg.max_minutes), f"max_minutes={cfg.max_minutes} must be >= 0")

    check((m.base_model is None) != (m.preset is None),
          f"set exactly one of model.base_model (a diffusers folder) and model.preset ({'|'.join(preset_names())})")
    if m.preset is not None:
        check(m.preset in preset_names(), f"model.preset='{m.preset}' must be one of {', '.join(preset_names())}")
    if m.base_model is not None:
        check(Path(m.base_model).expanduser().is_dir(), f"model.base_model '{m.base_model}' is not a folder")
    if m.motion_module is not None:
        check(Path(m.motion_module).expanduser().exists(), f"model.motion_module '{m.motion_module}' does not exist")
    if m.prediction_type is not None:
        check(m.prediction_type in PREDICTION_TYPES,
              f"model.prediction_type='{m.prediction_type}' must be one of {', '.join(PREDICTION_TYPES)} or null")
    check(m.sparse_causal in SPARSE_CAUSAL_MODES,
          f"model.sparse_causal='{m.sparse_causal}' must be one of {', '.join(SPARSE_CAUSAL_MODES)}")
    check(m.versatile, "model.versatile must be true: the motion values enter the first temporal attention")
    check(m.norm in NORM_MODES, f"model.norm='{m.norm}' must be one of {', '.join(NORM_MODES)}")
    check(m.max_seq_length >= 2, f"model.max_seq_length={m.max_seq_length} must be >= 2")
    check(m.first_frame in FIRST_FRAME_MODES,
          f"model.first_frame='{m.first_frame}' must be one of {', '.join(FIRST_FRAME_MODES)}")
    check(m.motion in MOTION_MODES, f"model.motion='{m.motion}' must be one of {', '.join(MOTION_MODES)}")
    for name in ("encoder_channels", "refiner_channels"):
        chans = getattr(m, name)
        if chans is not None:
            check(len(chans) >= 1 and all(c > 0 for c in chans), f"model.{name}={chans} must be positive integers")

    check(d.root is not None, "data.root must be set (a `shanshui data synth` folder)")
    check(Path(d.root).expanduser().is_dir(), f"data.root '{d.root}' is not a folder")
    check(2 <= d.frames <= m.max_seq_length, f"data.frames={d.frames} must be in [2, {m.max_seq_length}]")
    check(d.size >= 8 and d.size % 8 == 0, f"data.size={d.size} must be a positive multiple of 8")
    if d.limit is not None:
        _positive(d.limit, "data.limit")
    _non_negative(d.num_workers, "data.num_workers")
    for name in ("text_dropout", "motion_dropout", "strength_dropout"):
        v = getattr(d, name)
        check(0.0 <= v <= 1.0, f"data.{name}={v} must be in [0, 1]")
    _positive(d.max_arrows, "data.max_arrows")
    check(d.latent_sampling in LATENT_SAMPLING,
          f"data.latent_sampling='{d.latent_sampling}' must be one of {', '.join(LATENT_SAMPLING)}")
    _non_negative(lo.lambda_diff, "loss.lambda_diff")
    _non_negative(lo.lambda_refine, "loss.lambda_refine")
    check(lo.lambda_diff > 0 or lo.lambda_refine > 0, "loss.lambda_diff and loss.lambda_refine cannot both be 0")

    # the shared sections: borrow train's checks through a stand-in config
    from .config import TrainConfig

    stand_in = TrainConfig(output_dir=cfg.output_dir, optim=cfg.optim, schedule=cfg.schedule,
                           checkpoint=cfg.checkpoint)
    stand_in.model.preset = "tiny"
    stand_in.data.root = d.root
    stand_in.loss.lambda_con = 0.0
    validate(stand_in)
