"""CCDM's trained keyframe term (λ2, ``loss.lambda_key``) and the matching clean-pin inference mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_training import _batch, _fresh_accelerate, clips, tiny_config  # noqa: F401  (fixtures)


class Recorder(torch.nn.Module):
    """Wraps the trainable net and records every input it is called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, noisy, timesteps, text, with_embeddings=True):
        self.inputs.append(noisy.detach().clone())
        return self.net(noisy, timesteps, text, with_embeddings=with_embeddings)


def test_keyframe_term_pins_clean_frames_and_leaves_the_other_terms_alone(clips, tmp_path):  # noqa: F811
    from shanshui.training.components import build_models
    from shanshui.training.loop import build_dataset, step_generator
    from shanshui.training.step import masked_mse, training_step

    base = tiny_config(clips, tmp_path)
    keyed = tiny_config(clips, tmp_path, loss=dict(lambda_key=0.5, keyframes=2))
    dataset, collate = build_dataset(base)
    models = build_models(base.model, seed=0)
    batch = _batch(dataset, [0, 1], collate)
    plain = training_step(batch, models, models.noise_scheduler, base, step_generator(0, 0, 0, 0))
    rec = Recorder(models.net)
    out = training_step(batch, models, models.noise_scheduler, keyed, step_generator(0, 0, 0, 0), net=rec)
    # the first pass and its terms are unchanged; the keyframe term is added with its weight
    assert torch.equal(out["loss_diff"], plain["loss_diff"]) and torch.equal(out["loss_con"], plain["loss_con"])
    assert "loss_key" not in plain and out["loss_key"] > 0
    torch.testing.assert_close(out["loss"].detach(), plain["loss"].detach() + 0.5 * out["loss_key"])
    # second pass: exactly 2 frames per clip differ from the first pass's noisy input (they are clean latents)
    first, second = rec.inputs
    differs = (first != second).flatten(3).any(-1).any(1)                  # (b, f)
    assert differs.sum(1).tolist() == [2, 2]
    # masked_mse is the mean over the kept frames only
    pred, target = torch.zeros(1, 2, 3, 1, 1), torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1, 1).expand(1, 2, 3, 1, 1)
    keep = torch.tensor([True, False, True]).view(1, 1, 3, 1, 1)
    assert masked_mse(pred, target, keep).item() == pytest.approx((1 + 9) / 2)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in models.trainable_parameters())


def test_keyframe_term_config_checks(clips, tmp_path):  # noqa: F811
    from shanshui.errors import ShanshuiError

    with pytest.raises(ShanshuiError, match=r"loss.keyframes=4 must be in \[1, 3\]"):
        tiny_config(clips, tmp_path, loss=dict(lambda_key=1.0, keyframes=4))
    with pytest.raises(ShanshuiError, match="loss.lambda_key"):
        tiny_config(clips, tmp_path, loss=dict(lambda_key=-1.0))


def test_clean_pin_mode(tiny, tiny_video_unet):
    from shanshui.control.keyframes import encode_rgb
    from shanshui.pipelines.text_to_video import TextToVideoPipeline
    from shanshui.schedulers import make_scheduler

    pipe = TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler())
    key = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    kw = dict(num_frames=5, height=32, width=32, num_inference_steps=3, progress=False, seed=2,
              keyframes=[(2, key)])
    clean = pipe("mist", keyframe_mode="clean", **kw)
    noised = pipe("mist", **kw)
    with torch.no_grad():
        rt = pipe.decode_latents(encode_rgb(pipe, key[None]))[0, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(clean.frames[0, 2], rt, atol=1e-5)
    assert np.abs(clean.frames[0, 1] - noised.frames[0, 1]).max() > 1e-4     # neighbours see a different anchor
    from shanshui.errors import ShanshuiError

    with pytest.raises(ShanshuiError, match="keyframe mode='soft' must be one of noised, clean"):
        pipe("mist", keyframe_mode="soft", **kw)
