"""The papers' feature networks, loaded from files the user already has (never downloaded).

* :func:`load_i3d` — FVD/KVD features (400 Kinetics logits) from StyleGAN-V's ``i3d_torchscript.pt``
  (protocol ``stylegan-v``) or the ``i3d_pretrained_400.pt`` state dict of TATS/cd-fvd (protocol ``tats``).
* :func:`load_inception` — Inception-v3 class logits/probabilities for the Inception Score, from
  pytorch-fid's ``pt_inception-2015-12-05-*.pth`` state dict or StyleGAN2-ADA's ``inception-2015-12-05.pt``
  TorchScript.

The file format is read from the file itself (a TorchScript archive holds ``code/`` and ``constants.pkl``;
anything else is read as a weights-only state dict), and each loader checks that the network is the one
it expects — a TorchScript model by the argument names of its ``forward``, a state dict by its keys — so
that e.g. an Inception file given for I3D fails with a message that says what it is.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ShanshuiError, check

I3D_ARGS = {"rescale", "resize", "return_features"}
INCEPTION_TS_ARGS = {"no_output_bias"}


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_weights(path, flag: str) -> tuple[str, object]:
    """``("torchscript", module)`` or ``("state_dict", {name: tensor})`` for the file at ``path``."""
    path = Path(path)
    check(path.is_file(), f"{flag} '{path}' does not exist or is not a file")
    if is_torchscript(path):
        try:
            return "torchscript", torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad file
            raise ShanshuiError(f"{flag} '{path}' is a TorchScript archive that does not load: {exc}") from exc
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShanshuiError(f"{flag} '{path}' is neither a TorchScript model nor a PyTorch state dict "
                            f"({first})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    check(isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()),
          f"{flag} '{path}' holds a {type(state).__name__}, not a state dict of tensors")
    return "state_dict", state


def forward_args(module) -> set[str]:
    """Argument names of a TorchScript module's ``forward`` (without ``self``)."""
    try:
        return {a.name for a in module.forward.schema.arguments} - {"self"}
    except Exception:  # noqa: BLE001
        return set()


def _describe(kind: str, obj) -> str:
    """What a loaded weight file looks like, for error messages."""
    if kind == "torchscript":
        args = forward_args(obj)
        if I3D_ARGS <= args:
            return "the StyleGAN-V I3D TorchScript"
        if INCEPTION_TS_ARGS <= args:
            return "the StyleGAN2-ADA Inception TorchScript"
        return f"a TorchScript model whose forward takes {sorted(args)}"
    from .i3d import FIRST_KEY as I3D_KEY
    from .inception import FIRST_KEY as INC_KEY

    if I3D_KEY in obj:
        return "an Inception-I3D state dict"
    if INC_KEY in obj:
        return "an Inception-v3 state dict"
    if "features.0.weight" in obj:
        return "an AlexNet-like state dict"
    return f"a state dict with keys like {list(obj)[:3]}"


# ------------------------------------------------------------------------------------------------ I3D
@dataclass
class VideoFeatureNet:
    """A loaded FVD feature network: ``features(clips)`` on uint8 ``(B, T, H, W, 3)`` -> ``(B, D)`` float64.

    ``protocol`` names the reference implementation it follows; ``ddof`` and ``fd_method`` are that
    reference's covariance normalisation and trace-term route.
    """

    protocol: str
    ddof: int
    fd_method: str
    run: Callable[[torch.Tensor], torch.Tensor]
    resize_rule: str

    @torch.no_grad()
    def features(self, clips) -> np.ndarray:
        arr = np.asarray(clips)
        check(arr.ndim == 5 and arr.shape[-1] == 3 and arr.dtype == np.uint8,
              f"clips must be uint8 (B, T, H, W, 3), got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 4, 1, 2, 3)  # B, 3, T, H, W uint8
        return self.run(x).double().numpy()


def tats_preprocess(x: torch.Tensor, resolution: int = 224) -> torch.Tensor:
    """TATS ``preprocess``: uint8 ``(B, 3, T, H, W)`` -> float in [-1, 1]; the shorter side is scaled to
    ``resolution`` (bilinear, ``align_corners=False``, the longer side rounded up), then centre-cropped."""
    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).float() / 255.0
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (frames.shape[2] - resolution) // 2, (frames.shape[3] - resolution) // 2
    frames = frames[:, :, top : top + resolution, left : left + resolution]
    frames = frames.reshape(b, t, c, resolution, resolution).permute(0, 2, 1, 3, 4)
    return (frames - 0.5) * 2.0


def load_i3d(path, device: str = "cpu") -> VideoFeatureNet:
    """The FVD network at ``path`` (see the module doc); the protocol follows from the file format."""
    kind, obj = read_weights(path, "--i3d")
    obj = obj.to(device) if kind == "torchscript" else obj
    if kind == "torchscript":
        if not I3D_ARGS <= forward_args(obj):
            raise ShanshuiError(f"--i3d '{path}' is {_describe(kind, obj)}, not the StyleGAN-V I3D "
                                f"(i3d_torchscript.pt) or an i3d_pretrained_400.pt state dict")

        def run_ts(x):
            return obj(x.to(device), rescale=True, resize=True, return_features=True).cpu()

        return VideoFeatureNet("stylegan-v", 0, "sqrtm", run_ts,
                               "uint8 frames as decoded; the TorchScript rescales to [-1, 1] and resizes to 224x224")
    from .i3d import FIRST_KEY, i3d_from_state_dict

    if FIRST_KEY not in obj:
        raise ShanshuiError(f"--i3d '{path}' is {_describe(kind, obj)}, not the StyleGAN-V I3D "
                            f"(i3d_torchscript.pt) or an i3d_pretrained_400.pt state dict")
    model = i3d_from_state_dict(obj, f"--i3d '{path}'").to(device)

    def run_sd(x):
        return model(tats_preprocess(x.to(device))).cpu()

    return VideoFeatureNet("tats", 1, "eigen", run_sd,
                           "shorter side to 224 (bilinear), centre crop 224x224, x/255*2-1")


# ------------------------------------------------------------------------------------------------ Inception
@dataclass
class ImageClassNet:
    """A loaded Inception for the IS: ``outputs(frames)`` on uint8 ``(N, H, W, 3)`` -> ``(N, classes)``
    logits (``kind == "logits"``) or probabilities (``kind == "probs"``)."""

    source: str
    kind: str
    run: Callable[[torch.Tensor], torch.Tensor]
    batch: int = 32

    @torch.no_grad()
    def outputs(self, frames) -> np.ndarray:
        arr = np.asarray(frames)
        check(arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8,
              f"frames must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        out = []
        for i in range(0, len(arr), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(arr[i : i + self.batch])).permute(0, 3, 1, 2)
            out.append(self.run(x).double().numpy())
        return np.concatenate(out)


def inception_preprocess(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> 299x299 (bilinear, ``align_corners=False``), ``(x - 128) / 128``."""
    x = x.float()
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return (x - 128.0) / 128.0


def load_inception(path, device: str = "cpu") -> ImageClassNet:
    kind, obj = read_weights(path, "--inception")
    obj = obj.to(device) if kind == "torchscript" else obj
    if kind == "torchscript":
        if not INCEPTION_TS_ARGS <= forward_args(obj):
            raise ShanshuiError(f"--inception '{path}' is {_describe(kind, obj)}, not the StyleGAN2-ADA "
                                f"inception-2015-12-05.pt or a pytorch-fid pt_inception state dict")
        return ImageClassNet("stylegan2-ada-torchscript", "probs", lambda x: obj(x.to(device), no_output_bias=True).cpu())
    from .inception import FIRST_KEY, inception_from_state_dict

    if FIRST_KEY not in obj:
        raise ShanshuiError(f"--inception '{path}' is {_describe(kind, obj)}, not the StyleGAN2-ADA "
                            f"inception-2015-12-05.pt or a pytorch-fid pt_inception state dict")
    model = inception_from_state_dict(obj, f"--inception '{path}'").to(device)
    return ImageClassNet("pytorch-fid-state-dict", "logits",
                         lambda x: model(inception_preprocess(x.to(device)))[1].cpu())
