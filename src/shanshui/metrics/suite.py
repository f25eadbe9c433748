"""The papers' evaluation suite on folders of videos: FVD/KVD, IS, CLIP-text, CLIP-temp, LPIPS.

A video set is a folder whose entries are video files (mp4, webm, mov, mkv, avi, gif, webp) or
sub-folders of frame images; entries are taken in sorted name order, not recursively. Every video is
decoded to its first ``frames`` frames (16 for FVD16/KVD16) as uint8 RGB, at its stored size; resizing
is the feature network's own protocol (see :mod:`shanshui.metrics.networks`): StyleGAN-V's I3D resizes
to 224x224 inside the TorchScript, TATS scales the shorter side to 224 and centre-crops, the Inception
resizes frames to 299x299, CLIP resizes the shorter side and centre-crops.

Videos are streamed (decoded one at a time, features kept), so thousands of clips fit in memory.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import check
from ..video_io import IMAGE_SUFFIXES, READABLE_VIDEO_SUFFIXES
from .distances import covariance_warning, frechet_distance, inception_score, kernel_distance

METRICS = ("fvd", "kvd", "is", "clip-text", "clip-temp", "lpips")
MANIFEST = "manifest.jsonl"


def list_videos(root, flag: str) -> list[Path]:
    """The video entries of a folder (see the module doc), sorted by name."""
    root = Path(root)
    check(root.is_dir(), f"{flag} '{root}' is not a folder of videos")
    out = []
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in READABLE_VIDEO_SUFFIXES:
            out.append(p)
        elif p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
            out.append(p)
    check(bool(out), f"{flag} '{root}' holds no videos ({', '.join(READABLE_VIDEO_SUFFIXES)} "
                     f"or folders of frames)")
    return out


def read_clip(path: Path, frames: int) -> np.ndarray:
    """The first ``frames`` frames of a video, uint8 ``(frames, H, W, 3)``; too short -> ShanshuiError."""
    from ..video_io import read_video

    clip, _ = read_video(path, max_frames=frames)
    check(len(clip) >= frames,
          f"video '{path}' has {len(clip)} frames; the protocol needs {frames} (FVD16 uses the first 16 "
          f"frames; pass --frames {len(clip)} for a shorter, differently named protocol)")
    return clip[:frames]


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="video", file=sys.stderr, leave=False)


@dataclass
class VideoSet:
    """A folder of videos, read ``frames`` frames at a time; checks that all share one frame size."""

    root: Path
    paths: list[Path]
    frames: int
    flag: str
    size: tuple[int, int] | None = None
    _first: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, root, frames: int, flag: str) -> "VideoSet":
        return cls(Path(root), list_videos(root, flag), frames, flag)

    def __len__(self) -> int:
        return len(self.paths)

    def clips(self, desc: str = "", progress: bool = False) -> Iterator[tuple[Path, np.ndarray]]:
        for path in _progress(self.paths, len(self.paths), desc or self.flag, progress):
            clip = read_clip(path, self.frames)
            hw = clip.shape[1:3]
            if self.size is None:
                self.size, self._first = hw, path.name
            check(hw == self.size, f"{self.flag}: '{path.name}' is {hw[1]}x{hw[0]} but '{self._first}' is "
                                   f"{self.size[1]}x{self.size[0]}; all videos of a set must share one size")
            yield path, clip


def read_prompts(videos: VideoSet, prompts_file: Path | None) -> list[str]:
    """One prompt per video: from ``prompts_file`` (one line per video, in sorted video order) or from
    the folder's ``manifest.jsonl`` written by ``shanshui generate --prompts``."""
    if prompts_file is not None:
        prompts_file = Path(prompts_file)
        check(prompts_file.is_file(), f"--prompts '{prompts_file}' does not exist")
        lines = [ln.strip() for ln in prompts_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        check(len(lines) == len(videos), f"--prompts '{prompts_file}' has {len(lines)} prompts for "
                                         f"{len(videos)} videos (one line per video, in sorted file-name order)")
        return lines
    manifest = videos.root / MANIFEST
    check(manifest.is_file(), f"CLIP-text needs the prompts: pass --prompts FILE or evaluate a folder written by "
                              f"'shanshui generate --prompts' (it has {MANIFEST})")
    by_name = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            by_name[rec["file"]] = rec["prompt"]
    missing = [p.name for p in videos.paths if p.name not in by_name]
    check(not missing, f"{manifest} has no prompt for {missing[:3]}")
    return [by_name[p.name] for p in videos.paths]


# ------------------------------------------------------------------------------------------------ metrics
def distribution_scores(feats_gen: np.ndarray, feats_real: np.ndarray, ddof: int, fd_method: str,
                        kid_subsets: int | None = None, kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """Fréchet and kernel distance of two feature sets, with the covariance warning when it applies."""
    fd = frechet_distance(feats_gen, feats_real, ddof=ddof, method=fd_method)
    kd = kernel_distance(feats_gen, feats_real, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    return {"fd": fd, "kd": kd, "warning": covariance_warning(len(feats_gen), len(feats_real), feats_gen.shape[1])}


@dataclass
class Networks:
    """What to evaluate with; ``None`` skips the metrics that need it."""

    video: object | None = None  # networks.VideoFeatureNet
    image: object | None = None  # networks.ImageClassNet
    clip: object | None = None  # clip.ClipEmbedder
    lpips: object | None = None  # lpips.LPIPS
    paths: dict = field(default_factory=dict)


def evaluate_folders(generated, real, nets: Networks, metrics=METRICS, frames: int = 16, prompts=None,
                     is_splits: int = 10, kid_subsets: int | None = None, batch: int = 8,
                     progress: bool = False, log: Callable[[str], None] = lambda s: None) -> dict:
    """Compute the requested metrics; returns the result dict that ``shanshui evaluate`` writes as JSON."""
    from .clip import clip_temporal_consistency, clip_text_score

    metrics = [m for m in METRICS if m in set(metrics)]
    gen = VideoSet.open(generated, frames, "GENERATED_DIR")
    needs_real = any(m in metrics for m in ("fvd", "kvd", "lpips"))
    real = VideoSet.open(real, frames, "--real") if (real is not None and needs_real) else None
    results, skipped = {}, {}
    need = {"fvd": ("video", "--i3d"), "kvd": ("video", "--i3d"), "is": ("image", "--inception"),
            "clip-text": ("clip", "--clip"), "clip-temp": ("clip", "--clip"), "lpips": ("lpips", "--lpips-alexnet")}
    active = []
    for m in metrics:
        attr, flag = need[m]
        if getattr(nets, attr) is None:
            skipped[m] = f"no {flag} given"
        elif m in ("fvd", "kvd", "lpips") and real is None:
            skipped[m] = "no --real folder given"
        else:
            active.append(m)
    text_embs = None
    if "clip-text" in active:
        prompt_list = read_prompts(gen, prompts)
        text_embs = nets.clip.text_embeddings(prompt_list)

    # one pass over the generated videos for every metric that reads them
    gen_video, gen_image, gen_clip = [], [], []
    if any(m in active for m in ("fvd", "kvd", "is", "clip-text", "clip-temp")):
        pending = []
        for _, clip in gen.clips("generated", progress):
            if nets.video is not None and ("fvd" in active or "kvd" in active):
                pending.append(clip)
                if len(pending) == batch:
                    gen_video.append(nets.video.features(np.stack(pending)))
                    pending = []
            if "is" in active:
                gen_image.append(nets.image.outputs(clip))
            if "clip-text" in active or "clip-temp" in active:
                gen_clip.append(nets.clip.image_embeddings(clip))
        if pending:
            gen_video.append(nets.video.features(np.stack(pending)))

    name = f"{frames}"
    if "fvd" in active or "kvd" in active:
        real_video, pending = [], []
        for _, clip in real.clips("real", progress):
            pending.append(clip)
            if len(pending) == batch:
                real_video.append(nets.video.features(np.stack(pending)))
                pending = []
        if pending:
            real_video.append(nets.video.features(np.stack(pending)))
        fg, fr = np.concatenate(gen_video), np.concatenate(real_video)
        if gen.size != real.size:
            log(f"warning: generated videos are {gen.size[1]}x{gen.size[0]}, real ones {real.size[1]}x{real.size[0]}; "
                f"the {nets.video.protocol} protocol resizes both to 224, but from different sizes")
        scores = distribution_scores(fg, fr, nets.video.ddof, nets.video.fd_method, kid_subsets)
        common = {"protocol": nets.video.protocol, "network": nets.paths.get("i3d"), "n_generated": len(fg),
                  "n_real": len(fr), "frames": frames, "feature_dim": int(fg.shape[1]),
                  "resize": nets.video.resize_rule}
        if scores["warning"]:
            log(f"warning: FVD{name}: {scores['warning']}")
            common["warning"] = scores["warning"]
        if "fvd" in active:
            results[f"FVD{name}"] = {"value": scores["fd"], "covariance": "biased (/N)" if nets.video.ddof == 0
                                     else "unbiased (/N-1)", **common}
        if "kvd" in active:
            kd = scores["kd"]
            results[f"KVD{name}"] = {"value": kd["value"], "std": kd["std"], "subsets": kd["subsets"],
                                     "kernel": "(x.y/d + 1)^3, unbiased MMD^2", **common}
    if "is" in active:
        outs = np.concatenate(gen_image)
        check(len(outs) >= is_splits, f"IS with {is_splits} splits needs at least {is_splits} frames, got {len(outs)}")
        mean, std = inception_score(outs, splits=is_splits, kind=nets.image.kind)
        results["IS"] = {"value": mean, "std": std, "splits": is_splits, "n_frames": int(len(outs)),
                         "protocol": nets.image.source, "network": nets.paths.get("inception"),
                         "input": "every decoded frame, resized to 299x299 (bilinear), (x-128)/128"}
    if "clip-text" in active:
        r = clip_text_score(gen_clip, text_embs)
        results["CLIP-text"] = {"value": r["value"], "per_video": r["per_video"], "network": nets.paths.get("clip"),
                                "definition": "100 * cos(image, text) per frame, mean over all frames, clamped at 0"}
    if "clip-temp" in active:
        r = clip_temporal_consistency(gen_clip)
        results["CLIP-temp"] = {"value": r["value"], "per_video": r["per_video"], "network": nets.paths.get("clip"),
                                "definition": "cos(image_t, image_t+1), mean over pairs, then over videos"}
    if "lpips" in active:
        r = lpips_pairs(gen, real, nets.lpips, progress)
        if r is None:
            skipped["lpips"] = "no generated video has a real video of the same file name to compare with"
        else:
            results["LPIPS"] = {**r, "network": nets.paths.get("lpips-alexnet"),
                                "definition": "LPIPS v0.1 AlexNet per frame of same-name video pairs, mean"}
    return {"generated": str(gen.root), "real": str(real.root) if real is not None else None,
            "n_generated": len(gen), "n_real": len(real) if real is not None else None, "frames": frames,
            "metrics": results, "skipped": skipped}


def lpips_pairs(gen: VideoSet, real: VideoSet, model, progress: bool = False) -> dict | None:
    """Mean per-frame LPIPS over generated/real videos with the same file stem (None if none match)."""
    from .lpips import lpips_frames

    real_by_stem = {p.stem: p for p in real.paths}
    pairs = [(g, real_by_stem[g.stem]) for g in gen.paths if g.stem in real_by_stem]
    if not pairs:
        return None
    per = []
    for g, r in _progress(pairs, len(pairs), "lpips", progress):
        a, b = read_clip(g, gen.frames), read_clip(r, real.frames)
        check(a.shape == b.shape, f"LPIPS pair '{g.name}' / '{r.name}': sizes {a.shape[2]}x{a.shape[1]} and "
                                  f"{b.shape[2]}x{b.shape[1]} differ; LPIPS compares frames of equal size")
        per.append(float(lpips_frames(model, a, b).mean()))
    return {"value": float(np.mean(per)), "n_pairs": len(pairs), "per_video": per}


# ------------------------------------------------------------------------------------------------ table
COLUMNS = (("FVD", "↓"), ("KVD", "↓"), ("IS", "↑"), ("CLIP-text", "↑"), ("CLIP-temp", "↑"), ("LPIPS", "↓"))


def format_table(rows: dict[str, dict], note: str | None = None) -> str:
    """A Markdown table like NADM's Table I: one row per method, one column per metric found.

    ``rows`` maps a method name to a result's ``metrics`` dict; the header carries each metric's
    protocol (e.g. ``FVD16 [stylegan-v] ↓``) so numbers from different protocols are never mixed up.
    """
    keys: list[str] = []
    for metrics in rows.values():
        for k in metrics:
            if k not in keys:
                keys.append(k)
    order = {prefix: i for i, (prefix, _) in enumerate(COLUMNS)}
    keys.sort(key=lambda k: next((order[p] for p in order if k.startswith(p)), 99))
    header = []
    for k in keys:
        proto = next((m[k].get("protocol") for m in rows.values() if k in m and m[k].get("protocol")), None)
        arrow = next((a for p, a in COLUMNS if k.startswith(p)), "")
        header.append((f"{k} [{proto}] {arrow}" if proto else f"{k} {arrow}").strip())
    lines = ["| Method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(keys)]
    for name, metrics in rows.items():
        cells = []
        for k in keys:
            if k not in metrics:
                cells.append("–")
                continue
            v, s = metrics[k]["value"], metrics[k].get("std")
            cells.append(_fmt(v) + (f" ± {_fmt(s)}" if s is not None and k.startswith("IS") else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if note:
        lines.append("")
        lines.append(note)
    return "\n".join(lines)


def _fmt(v: float) -> str:
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.3e}"
    return f"{v:.2f}" if a >= 10 else f"{v:.4f}"
