"""Tiny stand-ins for the evaluation networks, saved in the real file formats (never downloaded).

The TorchScript stand-ins have the same ``forward`` signatures as StyleGAN-V's ``i3d_torchscript.pt``
and StyleGAN2-ADA's ``inception-2015-12-05.pt``; the state-dict stand-ins are the project's own plain-torch
networks at a reduced width, saved with ``torch.save(model.state_dict())`` like the real files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class TinyI3DScript(nn.Module):
    """forward(x uint8 (B,3,T,H,W), rescale, resize, return_features) -> (B, 8)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(12, 8, generator=g))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        y = x.float()
        if rescale:
            y = y / 255.0 * 2.0 - 1.0
        if resize:
            y = F.interpolate(y, size=(y.shape[2], 16, 16), mode="trilinear", align_corners=False)
        stats = torch.cat([y.mean(dim=(2, 3, 4)), y.std(dim=(2, 3, 4)), (y[:, :, 1:] - y[:, :, :-1]).abs().mean(dim=(2, 3, 4)),
                           y.amax(dim=(2, 3, 4))], dim=1)
        out = stats @ self.proj
        if return_features:
            return out
        return torch.softmax(out, dim=1)


class TinyInceptionScript(nn.Module):
    """forward(img uint8 (N,3,H,W), return_features, use_fp16, no_output_bias) -> probs (N, 10)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(6, 10, generator=g) * 3)
        self.b = nn.Parameter(torch.randn(10, generator=g))

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = (img.float() - 128.0) / 128.0
        f = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        if return_features:
            return f
        logits = f @ self.w
        if not no_output_bias:
            logits = logits + self.b
        return torch.softmax(logits, dim=1)


def save_script(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def tiny_i3d_state(path: Path, width: float = 1 / 16, seed: int = 0) -> Path:
    from shanshui.metrics.i3d import InceptionI3d

    torch.manual_seed(seed)
    model = InceptionI3d(num_classes=400, width=width)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in trained weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), path)
    return path


def tiny_inception_state(path: Path, width: float = 1 / 8, seed: int = 0) -> Path:
    from shanshui.metrics.inception import FIDInceptionV3

    torch.manual_seed(seed)
    model = FIDInceptionV3(num_classes=1008, width=width)
    with torch.no_grad():
        model.fc.weight.mul_(20.0)  # spread the logits so that the IS is not trivially 1
        model.fc.bias.fill_(50.0)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)  # like pytorch-fid's file: no num_batches_tracked
    return path


def tiny_alexnet_state(path: Path, seed: int = 0) -> Path:
    from shanshui.metrics.lpips import AlexNetFeatures

    torch.manual_seed(seed)
    net = AlexNetFeatures()
    state = {k: v for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state["classifier.1.weight"] = torch.randn(4, 4, generator=g)  # real files carry the classifier too
    torch.save(state, path)
    return path


def tiny_lpips_linear(path: Path, seed: int = 0) -> Path:
    from shanshui.metrics.lpips import CHANNELS

    g = torch.Generator().manual_seed(seed)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(CHANNELS)}, path)
    return path


def tiny_clip_folder(folder: Path, image_size: int = 32) -> Path:
    """A random tiny CLIPModel + the CLIP tokenizer + a preprocessor config, as ``save_pretrained`` writes."""
    from transformers import CLIPConfig, CLIPModel

    from shanshui.models.tokenizer import load_tokenizer, write_tokenizer

    tok = load_tokenizer(write_tokenizer(folder, num_merges=200))  # a small CLIP BPE tokenizer, same file format
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    CLIPModel(cfg).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "do_convert_rgb": True}))
    return folder
