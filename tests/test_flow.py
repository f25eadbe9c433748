"""Optical-flow backends, warping and RAFT loading: known answers on synthetic shifts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.flow import backward_warp, estimate_flow, forward_splat, inside_mask


def textured(h=96, w=128, seed=0, shift=(0.0, 0.0)):
    """A smooth random texture sampled at (x - dx, y - dy): content moved by ``shift`` = (dx, dy)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = x - shift[0], y - shift[1]
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(6):
            k = rng.uniform(0.05, 0.25, 2) * rng.choice([-1, 1], 2)
            img[..., c] += np.sin(k[0] * x + k[1] * y + rng.uniform(0, 6.3))
    return np.clip((img / 6 + 0.5) * 255, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- warping
def test_backward_warp_integer_shift_exact():
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    flow = np.zeros((6, 8, 2), np.float32)
    flow[..., 0] = 2  # read 2 px to the right
    out = backward_warp(img, flow)
    np.testing.assert_array_equal(out[:, :6], img[:, 2:])
    np.testing.assert_array_equal(out[:, 6:], np.repeat(img[:, 7:8], 2, axis=1))  # replicate border
    zero = backward_warp(img, flow, border="zero")
    np.testing.assert_array_equal(zero[:, 6:], 0)


def test_backward_warp_subpixel_is_bilinear():
    img = np.array([[0, 10, 20, 30]] * 3, np.float32)
    flow = np.zeros((3, 4, 2), np.float32)
    flow[..., 0] = 0.25
    out = backward_warp(img, flow)
    np.testing.assert_allclose(out[0, :3], [2.5, 12.5, 22.5], atol=1e-3)  # linear ramp read at x + 0.25


def test_backward_warp_dtypes_shapes_and_many_channels():
    rng = np.random.default_rng(1)
    flow = rng.uniform(-2, 2, (10, 12, 2)).astype(np.float32)
    u8 = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    assert backward_warp(u8, flow).dtype == np.uint8
    f64 = u8.astype(np.float64)
    assert backward_warp(f64, flow).dtype == np.float64
    wide = rng.random((10, 12, 7)).astype(np.float32)  # > 4 channels: warped in slices
    out = backward_warp(wide, flow)
    for c in range(7):
        np.testing.assert_allclose(out[..., c], backward_warp(wide[..., c], flow), atol=1e-6)
    with pytest.raises(ShanshuiError, match="border"):
        backward_warp(u8, flow, border="wrap")
    with pytest.raises(ShanshuiError, match="does not match"):
        backward_warp(u8, flow[:5])


def test_inside_mask():
    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0] = 1.5
    m = inside_mask(flow)
    assert m[:, :3].all() and not m[:, 3:].any()


def test_forward_splat_moves_values_and_conserves_mass():
    vals = np.zeros((8, 8, 1), np.float32)
    vals[2, 2] = 5.0
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.5, 1.0  # half-way between columns 3 and 4 of row 3
    acc, mass = forward_splat(vals, flow)
    np.testing.assert_allclose(acc[3, 3, 0], 2.5, atol=1e-5)
    np.testing.assert_allclose(acc[3, 4, 0], 2.5, atol=1e-5)
    assert acc.sum() == pytest.approx(5.0)
    # every source pixel lands inside except the right column (x+1.5 > 7) and the part of column 6
    # beyond the border, and the bottom row -> mass = (#sources whose kernels stay inside)
    still = forward_splat(np.ones((8, 8, 1), np.float32), np.zeros((8, 8, 2), np.float32))[1]
    np.testing.assert_allclose(still, 1.0)


# ------------------------------------------------------------------------------------------ flows
@pytest.mark.parametrize("method", ["dis", "farneback", "tvl1"])
def test_flow_recovers_known_shift(method):
    shift = (3.0, -2.0)
    a = textured()
    b = textured(shift=shift)  # b(p) = a(p - shift), so a(p) = b(p + shift): flow = shift
    flow = estimate_flow(a, b, method)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    core = flow[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(core, axis=0), shift, atol=0.25)
    # convention check: warping b by the flow gives back a
    warped = backward_warp(b.astype(np.float32), flow)
    assert np.abs(warped - a)[16:-16, 16:-16].mean() < 3.0
    assert np.abs(b.astype(np.float32) - a)[16:-16, 16:-16].mean() > 10.0


def test_flow_errors_are_user_errors():
    a = textured()
    with pytest.raises(ShanshuiError, match="allowed: dis, farneback, tvl1, raft"):
        estimate_flow(a, a, "lucas")
    with pytest.raises(ShanshuiError, match="same shape"):
        estimate_flow(a, a[:50])
    with pytest.raises(ShanshuiError, match="no option"):
        estimate_flow(a, a, "dis", bogus=1)
    with pytest.raises(ShanshuiError, match="preset"):
        estimate_flow(a, a, "dis", preset="slowest")
    with pytest.raises(ShanshuiError, match="weights=PATH"):
        estimate_flow(a, a, "raft")


def test_tvl1_missing_contrib_names_the_package(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "optflow", raising=False)
    a = textured()
    with pytest.raises(ShanshuiError, match="opencv-contrib-python-headless"):
        estimate_flow(a, a, "tvl1")


# ------------------------------------------------------------------------------------------- RAFT
def _official_layout_checkpoint(path, seed=0):
    from shanshui.flow.raft import RAFT

    torch.manual_seed(seed)
    model = RAFT()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # nn.DataParallel key names
    torch.save(state, path)
    return model


def test_raft_layout_matches_official_key_names():
    from shanshui.flow.raft import RAFT

    keys = set(RAFT().state_dict())
    for k in ["fnet.conv1.weight", "fnet.layer2.0.downsample.0.weight", "cnet.norm1.running_mean",
              "cnet.layer3.0.norm3.weight", "update_block.encoder.convc1.weight", "update_block.gru.convq2.bias",
              "update_block.flow_head.conv2.weight", "update_block.mask.2.weight"]:
        assert k in keys, k
    n = sum(p.numel() for p in RAFT().parameters())
    assert n == 5_257_536  # parameter count of the official full RAFT model


def test_raft_loads_pth_and_safetensors_and_runs(tmp_path):
    from safetensors.torch import save_file

    from shanshui.flow import raft as raft_mod

    model = _official_layout_checkpoint(tmp_path / "raft.pth")
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "raft.safetensors"))
    a, b = textured(44, 52, 0), textured(44, 52, 0, shift=(1.0, 0.0))  # padded inside to 128x128
    f1 = estimate_flow(a, b, "raft", weights=str(tmp_path / "raft.pth"), iters=2)
    f2 = estimate_flow(a, b, "raft", weights=str(tmp_path / "raft.safetensors"), iters=2)
    assert f1.shape == (44, 52, 2) and f1.dtype == np.float32 and np.isfinite(f1).all()
    np.testing.assert_allclose(f1, f2, atol=1e-5)  # same weights, same answer
    # reference: the model itself on the replicate-padded input
    x = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.pad(x, (38, 38, 42, 42), mode="replicate")  # (left, right, top, bottom)
    with torch.no_grad():
        ref = model.eval()(x[:1], x[1:], iters=2)[0, :, 42:86, 38:90].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(f1, ref, atol=1e-4)
    assert raft_mod._CACHE  # the loaded model is reused


def test_raft_bad_checkpoint_is_a_clear_error(tmp_path):
    torch.save({"module.fnet.conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "small.pth")
    a = textured(32, 32)
    with pytest.raises(ShanshuiError, match="missing"):
        estimate_flow(a, a, "raft", weights=str(tmp_path / "small.pth"))
    with pytest.raises(ShanshuiError, match="do not exist"):
        estimate_flow(a, a, "raft", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ShanshuiError, match="cannot read"):
        estimate_flow(a, a, "raft", weights=str(tmp_path / "junk.pth"))


def test_raft_convex_upsampling_of_constant_flow_is_constant():
    from shanshui.flow.raft import RAFT

    flow = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 4, 5).contiguous()
    mask = torch.randn(1, 576, 4, 5)
    up = RAFT.upsample_flow(flow, mask)
    assert up.shape == (1, 2, 32, 40)
    # interior: a convex combination of equal vectors, scaled to full resolution (x8)
    torch.testing.assert_close(up[0, :, 8:-8, 8:-8], torch.tensor([8.0, -16.0]).view(2, 1, 1).expand(2, 16, 24))
