"""CLIP-text and CLIP-temp with any local transformers CLIP folder (``CLIPModel`` + tokenizer files).

* **CLIP-text** (the CLIP score): ``100 · cos(E_image(frame), E_text(prompt))`` for every frame of every
  video, averaged over all frames, then clamped at 0 (as torchmetrics' ``CLIPScore`` does).
* **CLIP-temp**: no canonical code exists; here it is the cosine of the CLIP image embeddings of
  consecutive frames, averaged over the pairs of a video and then over videos (a number in [-1, 1];
  1 means the frames look alike to CLIP).

Images are prepared like ``CLIPImageProcessor`` does, in PIL/numpy (no torchvision): the shorter side is
resized to ``size`` (bicubic), the centre ``crop`` x ``crop`` is cut out, and the channels are normalised
with the folder's ``image_mean``/``image_std``. Those three come from ``preprocessor_config.json`` when the
folder has one, else from the vision config (``image_size``) and OpenAI's mean/std. Embeddings are taken
the way ``get_image_features``/``get_text_features`` compute them (pooled output through the projection),
called on the sub-models directly, because transformers 5 changed what those two methods return.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ShanshuiError, check

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipEmbedder:
    """A CLIP model and tokenizer loaded from ``folder`` (offline); see the module doc."""

    def __init__(self, folder, batch: int = 32, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder)
        check(folder.is_dir(), f"--clip '{folder}' is not a folder (give a transformers CLIP folder)")
        check((folder / "config.json").is_file(), f"--clip '{folder}' has no config.json (not a transformers model folder)")
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ShanshuiError(f"--clip '{folder}/config.json' is not readable JSON: {exc}") from exc
        check(config.get("model_type") == "clip",
              f"--clip '{folder}' holds a {config.get('model_type')!r} model, not a CLIP model (model_type 'clip')")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep stderr for our own messages
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        except Exception as exc:  # noqa: BLE001
            raise ShanshuiError(f"--clip '{folder}': the CLIP weights do not load ({str(exc).splitlines()[0]})") from exc
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ShanshuiError(f"--clip '{folder}' has no usable tokenizer files "
                                f"(vocab.json + merges.txt or tokenizer.json): {str(exc).splitlines()[0]}") from exc
        image_size = int(self.model.config.vision_config.image_size)
        pre = {}
        if (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text())
        size = pre.get("size", image_size)
        crop = pre.get("crop_size", image_size)
        self.size = int(size.get("shortest_edge", image_size) if isinstance(size, dict) else size)
        self.crop = int(crop.get("height", image_size) if isinstance(crop, dict) else crop)
        check(self.crop == image_size,
              f"--clip '{folder}': crop size {self.crop} differs from the vision model's image_size {image_size}")
        self.mean = np.array(pre.get("image_mean", OPENAI_MEAN), np.float32)
        self.std = np.array(pre.get("image_std", OPENAI_STD), np.float32)
        self.batch, self.device = batch, device
        self.model.to(device)

    def pixel_values(self, frames) -> torch.Tensor:
        arr = np.asarray(frames)
        check(arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8,
              f"frames must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        out = []
        for f in arr:
            img = Image.fromarray(f)
            w, h = img.size
            s = self.size / min(w, h)
            nw, nh = (self.size, int(h * s)) if w <= h else (int(w * s), self.size)
            img = img.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
            img = img.crop((left, top, left + self.crop, top + self.crop))
            x = (np.asarray(img, np.float32) / 255.0 - self.mean) / self.std
            out.append(x.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out))

    @torch.no_grad()
    def image_embeddings(self, frames) -> np.ndarray:
        """Unit-length image embeddings ``(N, D)`` of uint8 frames ``(N, H, W, 3)``."""
        arr = np.asarray(frames)
        out = []
        for i in range(0, len(arr), self.batch):
            px = self.pixel_values(arr[i : i + self.batch]).to(self.device)
            e = self.model.visual_projection(self.model.vision_model(pixel_values=px).pooler_output)
            out.append(torch.nn.functional.normalize(e.double(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> np.ndarray:
        """Unit-length text embeddings ``(P, D)`` (prompts truncated to the model's 77 tokens)."""
        max_len = int(self.model.config.text_config.max_position_embeddings)
        enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        out = self.model.text_model(input_ids=enc["input_ids"].to(self.device),
                                    attention_mask=enc["attention_mask"].to(self.device))
        e = self.model.text_projection(out.pooler_output)
        return torch.nn.functional.normalize(e.double(), dim=-1).cpu().numpy()


def clip_text_score(image_embs: list[np.ndarray], text_embs: np.ndarray) -> dict:
    """CLIP-text over videos: ``image_embs[i]`` ``(F_i, D)`` unit rows, ``text_embs[i]`` ``(D,)`` unit.

    Returns ``{"value": max(0, mean over all frames of 100·cos), "per_video": [...]}``.
    """
    check(len(image_embs) == len(text_embs) and len(image_embs) >= 1,
          f"{len(image_embs)} videos but {len(text_embs)} prompts")
    per_frame = [100.0 * (e @ t) for e, t in zip(image_embs, text_embs)]
    allf = np.concatenate(per_frame)
    return {"value": float(max(0.0, allf.mean())), "per_video": [float(p.mean()) for p in per_frame]}


def clip_temporal_consistency(image_embs: list[np.ndarray]) -> dict:
    """CLIP-temp: mean over videos of the mean cosine of consecutive frames' unit embeddings."""
    per = []
    for e in image_embs:
        check(len(e) >= 2, "CLIP-temp needs videos of at least 2 frames")
        per.append(float((e[1:] * e[:-1]).sum(axis=1).mean()))
    return {"value": float(np.mean(per)), "per_video": per}
