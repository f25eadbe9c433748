"""Evaluation metrics.

* :mod:`shanshui.metrics.video` — per-video measures on numpy arrays (PSNR, SSIM, flicker, warping error).
* :mod:`shanshui.metrics.distances` — distribution scores on feature sets: :func:`frechet_distance`,
  :func:`kernel_distance` (polynomial MMD), :func:`inception_score`.
* :mod:`shanshui.metrics.networks` — the papers' feature networks (I3D, Inception, CLIP, LPIPS-AlexNet)
  loaded from user files, and :mod:`shanshui.metrics.suite` — FVD16/KVD16/IS/CLIP/LPIPS on videos.
* :mod:`shanshui.metrics.probe` — the procedural attribute probe (imported on first use: needs torch).
"""

from .distances import feature_statistics, frechet_distance, inception_score, kernel_distance
from .video import consecutive_flows, flicker_index, motion_magnitude, psnr, ssim, warping_error

_PROBE_NAMES = ("AttributeProbe", "camera_direction", "clip_features", "load_probe",
                "predict_clip", "save_probe", "temporal_cosine", "train_probe")

__all__ = ["consecutive_flows", "feature_statistics", "flicker_index", "frechet_distance", "inception_score",
           "kernel_distance", "motion_magnitude", "psnr", "ssim", "warping_error", *_PROBE_NAMES]


def __getattr__(name: str):
    if name in _PROBE_NAMES:
        from . import probe

        return getattr(probe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
