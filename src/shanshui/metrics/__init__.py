"""Evaluation metrics: pure functions on numpy arrays (see :mod:`shanshui.metrics.video`), and the
attribute probe with the measures built on it (:mod:`shanshui.metrics.probe`, imported on first use
because it needs torch).
"""

from .video import consecutive_flows, flicker_index, motion_magnitude, psnr, ssim, warping_error

_PROBE_NAMES = ("AttributeProbe", "camera_direction", "clip_features", "frechet_distance", "load_probe",
                "predict_clip", "save_probe", "temporal_cosine", "train_probe")

__all__ = ["consecutive_flows", "flicker_index", "motion_magnitude", "psnr", "ssim", "warping_error",
           *_PROBE_NAMES]


def __getattr__(name: str):
    if name in _PROBE_NAMES:
        from . import probe

        return getattr(probe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
