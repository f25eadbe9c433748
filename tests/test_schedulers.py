"""Noise schedules and parameterisations: known answers computed by hand with numpy (no diffusers)."""

import json

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.schedulers import (
    make_scheduler,
    min_snr_weights,
    read_objective,
    scheduler_config_for,
    snr,
    split_prediction,
    training_target,
)

V = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


def hand_alphas_cumprod(zero_snr: bool) -> np.ndarray:
    betas = np.linspace(0.00085, 0.012, 1000, dtype=np.float64)
    acp = np.cumprod(1 - betas)
    if zero_snr:  # shift and scale √ᾱ so that the last one is 0 and the first one is unchanged
        s = np.sqrt(acp)
        s = (s - s[-1]) * s[0] / (s[0] - s[-1])
        acp = s ** 2
    return acp


@pytest.mark.parametrize("zero_snr", [False, True])
def test_alphas_cumprod_match_the_hand_schedule(zero_snr):
    obj = V if zero_snr else {}
    sched = make_scheduler("ddpm", objective=obj)
    ref = hand_alphas_cumprod(zero_snr)
    assert np.allclose(sched.alphas_cumprod.double().numpy(), ref, rtol=1e-4, atol=1e-7)
    if zero_snr:
        assert float(sched.alphas_cumprod[-1]) == 0.0
        assert float(snr(sched, torch.tensor([999]))[0]) == 0.0
    else:
        assert float(sched.alphas_cumprod[-1]) == pytest.approx(ref[-1], rel=1e-4)


def test_trailing_spacing_starts_at_the_last_timestep():
    sched = make_scheduler(objective=V)
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 749, 499, 249]
    lead = make_scheduler()
    lead.set_timesteps(4)
    assert lead.timesteps.tolist() == [751, 501, 251, 1]


@pytest.mark.parametrize("t", [0, 37, 500, 998, 999])
def test_v_target_and_split_are_exact_inverses(t):
    sched = make_scheduler("ddpm", objective=V)
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g)
    a = hand_alphas_cumprod(True)[t]
    alpha, sigma = float(np.sqrt(a)), float(np.sqrt(1 - a))
    tt = torch.tensor([t, t])
    v = training_target(sched, x0, eps, tt)
    assert torch.allclose(v, alpha * eps - sigma * x0, atol=1e-5)
    z = alpha * x0 + sigma * eps
    x0_hat, eps_hat = split_prediction(sched, v, z, t)
    assert torch.allclose(eps_hat, eps, atol=1e-4)
    assert torch.allclose(x0_hat, x0, atol=1e-4)
    assert torch.isfinite(x0_hat).all()


def test_epsilon_split_recovers_x0_and_target_is_the_noise():
    sched = make_scheduler()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    t = torch.tensor([10, 400, 990])
    acp = torch.tensor(hand_alphas_cumprod(False)[t.numpy()], dtype=torch.float32)[:, None, None, None]
    z = acp.sqrt() * x0 + (1 - acp).sqrt() * eps
    assert torch.equal(training_target(sched, x0, eps, t), eps)
    x0_hat, eps_hat = split_prediction(sched, eps, z, t)
    assert torch.equal(eps_hat, eps)
    assert torch.allclose(x0_hat, x0, atol=1e-3)


def test_per_sample_timesteps_broadcast_per_item():
    sched = make_scheduler("ddpm", objective=V)
    x0, eps = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    v = training_target(sched, x0, eps, torch.tensor([0, 999]))
    a0 = hand_alphas_cumprod(True)[0]
    assert torch.allclose(v[0], torch.full_like(v[0], -np.sqrt(1 - a0)), atol=1e-6)
    assert torch.allclose(v[1], torch.full_like(v[1], -1.0), atol=1e-6)   # σ_T = 1: v = −x0


def test_min_snr_weights_by_hand():
    t = torch.tensor([0, 200, 600, 999])
    for obj, zero in (({}, False), (V, True)):
        sched = make_scheduler("ddpm", objective=obj)
        a = hand_alphas_cumprod(zero)[t.numpy()]
        s = a / (1 - a)
        w = min_snr_weights(sched, t, 5.0).double().numpy()
        ref = np.minimum(s, 5.0) / (s + 1) if zero else np.minimum(s, 5.0) / s
        assert np.allclose(w, ref, rtol=1e-3, atol=1e-7)
    with pytest.raises(ShanshuiError, match="gamma"):
        min_snr_weights(make_scheduler(), t, 0.0)


def test_objective_is_read_from_the_model_folder(tmp_path):
    assert read_objective(tmp_path) == {}
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config_for(V)))
    assert read_objective(tmp_path) == V
    sched = make_scheduler(objective=read_objective(tmp_path))
    assert sched.config.prediction_type == "v_prediction" and sched.config.timestep_spacing == "trailing"
    assert sched.config.beta_schedule == "linear" and sched.config.beta_end == 0.012


@pytest.mark.parametrize("bad,match", [
    ({"prediction_type": "sample"}, "prediction_type"),
    ({"timestep_spacing": "random"}, "timestep_spacing"),
    ({"rescale_betas_zero_snr": True}, "v_prediction"),
    ({"beta_end": 0.02}, "unknown schedule key"),
])
def test_bad_objectives_are_refused(bad, match):
    with pytest.raises(ShanshuiError, match=match):
        make_scheduler(objective=bad)


# ------------------------------------------------------------------------------ the pipelines honour v
@pytest.fixture()
def v_pipe(tiny, tiny_video_unet):
    from shanshui.pipelines.text_to_video import TextToVideoPipeline

    return TextToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                               make_scheduler(objective=V))


def test_predict_noise_of_a_v_model_is_sigma_z_plus_alpha_v(v_pipe):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, 3, 4, 4, generator=g)
    text = v_pipe.encode_prompt("red sun", None, cfg=False)
    for t in (999, 500):
        v = v_pipe.predict(z, torch.tensor(t), text, 1.0)
        a = hand_alphas_cumprod(True)[t]
        eps = v_pipe.predict_noise(z, torch.tensor(t), text, 1.0)
        assert torch.allclose(eps, np.sqrt(1 - a) * z + np.sqrt(a) * v, atol=1e-5)


def test_v_model_runs_text_long_and_painting_paths(v_pipe, tiny, tiny_video_unet):
    from shanshui.pipelines.painting_to_video import PaintingToVideoPipeline

    out = v_pipe("red sun", num_frames=4, height=32, width=32, num_inference_steps=3, seed=0, progress=False)
    assert np.isfinite(out.frames).all()
    long = v_pipe("red sun", num_frames=v_pipe.max_frames + 6, height=32, width=32, num_inference_steps=3,
                  seed=0, progress=False)
    assert long.frames.shape[1] == v_pipe.max_frames + 6 and np.isfinite(long.frames).all()
    paint = PaintingToVideoPipeline(tiny["vae"], tiny["text_encoder"], tiny["tokenizer"], tiny_video_unet,
                                    make_scheduler(objective=V))
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    res = paint(img, "boat", num_frames=4, num_inference_steps=4, seed=0, progress=False)
    assert np.isfinite(res.frames).all()


def test_training_step_of_a_v_model_regresses_v(tiny, tmp_path):
    """The stage-2 step's L_diff is the MSE to v = α·ε − σ·x0 when the base model predicts v."""
    from shanshui.training.config import config_from_dict
    from shanshui.training.components import build_models
    from shanshui.training.step import training_step

    cfg = config_from_dict({"model": {"preset": "tiny"}, "data": {"frames": 4, "size": 32, "root": str(tmp_path)},
                            "loss": {"lambda_con": 0.0}})
    models = build_models(cfg.model)
    sched = make_scheduler("ddpm", objective=V)
    batch = {"pixel_values": torch.rand(1, 4, 3, 32, 32) * 2 - 1, "caption": ["red sun"]}
    seen = {}
    def keep(module, inputs, output):
        seen["out"] = output.sample.detach()

    hook = models.net.unet.register_forward_hook(keep)
    terms = training_step(batch, models, sched, cfg, torch.Generator().manual_seed(0))
    hook.remove()
    # replay the step's random draws (posterior sample, dropout, noise, timesteps) to rebuild the target
    g = torch.Generator().manual_seed(0)
    from shanshui.training.step import encode_pixels

    mean, std = encode_pixels(models.vae, batch["pixel_values"])
    z0 = (mean + std * torch.randn(mean.shape, generator=g)) * models.vae.config.scaling_factor
    torch.rand(1, generator=g)
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (1,), generator=g)
    a = float(hand_alphas_cumprod(True)[int(t)])
    v = np.sqrt(a) * noise - np.sqrt(1 - a) * z0
    assert float(terms["loss_diff"]) == pytest.approx(float(((seen["out"] - v) ** 2).mean()), rel=1e-4)
