"""Shared fixtures: tiny SD-format components built in code, never downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_components():
    from shanshui.models.presets import make_components

    return make_components("tiny", seed=0)


@pytest.fixture()
def tiny(tiny_components):
    """A fresh copy of the tiny components for tests that modify them."""
    import copy

    return {k: (copy.deepcopy(v) if k != "tokenizer" else v) for k, v in tiny_components.items()}


def randomize_motion(unet, scale: float = 0.05, seed: int = 0) -> None:
    """Give every motion-module weight a random non-zero value (fresh modules are identities)."""
    from shanshui.models.motion import motion_parameters

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in motion_parameters(unet):
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture()
def tiny_video_unet(tiny):
    from shanshui.models.motion import build_video_unet

    unet = build_video_unet(tiny["unet"], tiny["motion_config"])
    randomize_motion(unet)
    return unet


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory, tiny_components):
    """A tiny base model folder + a NADM motion-module file on disk, as a user would have them."""
    from shanshui.models.motion import build_video_unet
    from shanshui.models.motion_io import save_motion_module
    from shanshui.pipelines.loading import save_base_components

    root = tmp_path_factory.mktemp("tiny-model")
    save_base_components(tiny_components, root / "sd")
    import copy

    unet = build_video_unet(copy.deepcopy(tiny_components["unet"]), tiny_components["motion_config"])
    randomize_motion(unet, seed=1)
    save_motion_module(unet, root / "motion.safetensors")
    return root / "sd", root / "motion.safetensors"
