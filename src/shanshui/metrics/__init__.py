"""Evaluation metrics: pure functions on numpy arrays (see :mod:`shanshui.metrics.video`)."""

from .video import consecutive_flows, flicker_index, motion_magnitude, psnr, ssim, warping_error

__all__ = ["consecutive_flows", "flicker_index", "motion_magnitude", "psnr", "ssim", "warping_error"]
