"""Clips with their exact flow, for training the image-to-video control model (``shanshui train-control``).

Reads a dataset written by ``shanshui data synth`` (``metadata.jsonl`` with ``video`` and ``flow`` per
clip; ``flow/NNNNNN.npz`` holds ``flow`` float16 ``(F−1, H, W, 2)`` px, ``(dx, dy)``, frame k -> k+1, and
``valid`` bool ``(F−1, H, W)``). A sample is ``frames`` consecutive frames starting at a position drawn from
``(seed, epoch, index)`` — so a resumed run sees the same clips — resized to ``size`` (flow scaled with
it), plus one training pair for the refinement network T (:mod:`shanshui.control.refine`) drawn from the
same generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..control.refine import training_pair
from ..errors import ShanshuiError, check
from .decode import read_frames


class ControlClipDataset(Dataset):
    """Samples: ``pixel_values`` float32 ``(F, 3, S, S)`` in [-1, 1], ``flow`` float32 ``(F−1, S, S, 2)``
    px/frame at size ``S``, ``valid`` bool ``(F−1, S, S)``, ``refine_input`` float32 ``(S, S, 2)`` (Gaussian
    field of sampled arrows), ``caption``, ``index``, ``start``."""

    def __init__(self, root: str | Path, frames: int = 16, size: int = 128, seed: int = 0, max_arrows: int = 5,
                 limit: int | None = None, skip: int = 0):
        root = Path(root)
        meta = root / "metadata.jsonl"
        check(meta.is_file(), f"data.root '{root}' has no metadata.jsonl with flow (make one with "
                              f"`shanshui data synth --format frames`)")
        records = []
        for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ShanshuiError(f"'{meta}' line {n} is not JSON: {exc.msg}") from None
            check("flow" in rec and "video" in rec,
                  f"'{meta}' line {n} has no 'flow' entry: train-control needs clips with exact flow "
                  f"(`shanshui data synth`)")
            records.append(rec)
        records = records[skip:]
        if limit is not None:
            records = records[:limit]
        check(records, f"'{meta}' lists no clips" + (f" after skipping {skip}" if skip else ""))
        for rec in records:
            check(int(rec.get("frames", frames)) >= frames,
                  f"clip '{rec['video']}' has {rec.get('frames')} frames, fewer than data.frames={frames}")
        self.root, self.records = root, records
        self.frames, self.size, self.seed, self.max_arrows = frames, size, seed, max_arrows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, 13])

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        rng = self.rng(index)
        with np.load(self.root / rec["flow"]) as z:
            flow_all = z["flow"].astype(np.float32)                                    # (N−1, H, W, 2)
            valid_all = z["valid"] if "valid" in z.files else np.ones(flow_all.shape[:3], bool)
        n = flow_all.shape[0] + 1
        check(n >= self.frames, f"clip '{rec['video']}' has {n} frames, fewer than {self.frames}")
        start = int(rng.integers(0, n - self.frames + 1))
        idx = list(range(start, start + self.frames))
        frames = np.stack(read_frames(self.root / rec["video"], idx))                  # (F, H, W, 3)
        flow = flow_all[start : start + self.frames - 1]
        valid = valid_all[start : start + self.frames - 1]
        h, w = frames.shape[1:3]
        check(h == w, f"clip '{rec['video']}' is {w}x{h}; train-control needs square clips")
        if h != self.size:
            s = self.size / h
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
            frames = np.stack([cv2.resize(f, (self.size, self.size), interpolation=interp) for f in frames])
            flow = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
                             for f in flow]) * np.float32(s)
            valid = np.stack([cv2.resize(v.astype(np.uint8), (self.size, self.size),
                                         interpolation=cv2.INTER_NEAREST) for v in valid]).astype(bool)
        field, _ = training_pair(flow[0], valid[0], rng, self.max_arrows, self.frames)
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return {"pixel_values": pixels, "flow": torch.from_numpy(np.ascontiguousarray(flow)),
                "valid": torch.from_numpy(np.ascontiguousarray(valid)), "refine_input": torch.from_numpy(field),
                "caption": rec.get("caption", ""), "index": index, "start": start}


def collate_control(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in ("pixel_values", "flow", "valid", "refine_input")}
    out["caption"] = [it["caption"] for it in items]
    out["index"] = torch.tensor([it["index"] for it in items])
    out["start"] = torch.tensor([it["start"] for it in items])
    return out
