"""The sparse-causal processors against hand computations, and their causality."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from shanshui.models.attention import (
    FrameLayout,
    SparseCausalAttnProcessor,
    SpatialSparseCausalAttnProcessor,
    shift_to_previous_frame,
)


def make_attn(dim=16, heads=4, seed=0):
    torch.manual_seed(seed)
    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return attn.eval()


def masked_reference(attn, x, allowed):
    """Plain multi-head attention with a boolean (f, f) mask, written out step by step."""
    n, f, d = x.shape
    h = attn.heads
    q = (x @ attn.to_q.weight.T).reshape(n, f, h, -1).transpose(1, 2)
    k = (x @ attn.to_k.weight.T).reshape(n, f, h, -1).transpose(1, 2)
    v = (x @ attn.to_v.weight.T).reshape(n, f, h, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, f, -1)
    return out @ attn.to_out[0].weight.T + attn.to_out[0].bias


def previous_frame_mask(f):
    idx = torch.arange(f)
    prev = (idx - 1).clamp(min=0)
    return idx[None, :] == prev[:, None]  # allowed[i, j] iff j = max(i-1, 0)


@pytest.mark.parametrize("f", [2, 5, 16])
def test_sparse_causal_equals_hand_computation(f):
    attn = make_attn()
    x = torch.randn(7, f, 16)
    out = SparseCausalAttnProcessor()(attn, x)
    # W_O W_V x_{i-1} (+ b_O); frame 0 uses itself
    prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)
    hand = prev @ attn.to_v.weight.T @ attn.to_out[0].weight.T + attn.to_out[0].bias
    assert torch.allclose(out, hand, atol=1e-5)
    # and the same as full attention masked to M_ij = 1 iff j = i-1
    assert torch.allclose(out, masked_reference(attn, x, previous_frame_mask(f)), atol=1e-5)


def test_sparse_causal_is_causal():
    attn = make_attn()
    x = torch.randn(3, 8, 16)
    base = SparseCausalAttnProcessor()(attn, x)
    for j in range(8):
        y = x.clone()
        y[:, j] += 1.0
        out = SparseCausalAttnProcessor()(attn, y)
        changed = (out - base).abs().amax(dim=(0, 2)) > 1e-6
        expected = torch.zeros(8, dtype=torch.bool)
        if j + 1 < 8:
            expected[j + 1] = True      # only the next frame reads frame j ...
        if j == 0:
            expected[0] = True          # ... and frame 0 reads itself
        assert torch.equal(changed, expected), (j, changed)


def test_full_temporal_attention_is_not_causal():
    """Sanity check of the test itself: the default processor lets frame 0 see frame 7."""
    attn = make_attn()
    x = torch.randn(2, 8, 16)
    y = x.clone()
    y[:, 7] += 1
    a, b = AttnProcessor2_0()(attn, x), AttnProcessor2_0()(attn, y)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4


def test_spatial_variant_equals_loop_reference():
    attn = make_attn(dim=8, heads=2)
    b, hw, f, d = 2, 6, 4, 8
    x = torch.randn(b * hw, f, d)
    layout = FrameLayout()
    layout.batch_size = b
    out = SpatialSparseCausalAttnProcessor(layout)(attn, x)
    xs = x.reshape(b, hw, f, d)
    expected = torch.empty(b, hw, f, d)
    for bi in range(b):
        for i in range(f):
            q = xs[bi, :, i] @ attn.to_q.weight.T                               # (hw, d)
            kv_src = torch.cat([xs[bi, :, 0], xs[bi, :, max(i - 1, 0)]])         # (2hw, d)
            k, v = kv_src @ attn.to_k.weight.T, kv_src @ attn.to_v.weight.T
            heads = []
            for h in range(2):
                sl = slice(h * 4, (h + 1) * 4)
                w = (q[:, sl] @ k[:, sl].T / 2.0).softmax(-1)
                heads.append(w @ v[:, sl])
            expected[bi, :, i] = torch.cat(heads, -1) @ attn.to_out[0].weight.T + attn.to_out[0].bias
    assert torch.allclose(out, expected.reshape(b * hw, f, d), atol=1e-5)


def test_shift_to_previous_frame():
    x = torch.arange(5.0).reshape(1, 5, 1)
    assert shift_to_previous_frame(x).flatten().tolist() == [0, 0, 1, 2, 3]
