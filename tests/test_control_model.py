"""The image-to-video control module (SPEC §2.1–2.3): zero-init no-op, each part acting, strength embedding by
hand, T's training pairs (eq. 5–7), strict loading, the scheduler's prediction type, and train-control
(loss, exact resume, time budget, NaN stop, export into a bundle). Tiny components, 32-px procedural clips."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _inputs(unet, b=1, f=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, s = unet.config.in_channels, unet.config.sample_size
    x = torch.randn(b, c, f, s, s, generator=g)
    text = torch.randn(b * f, 77, unet.config.cross_attention_dim, generator=g)
    first = torch.randn(b, c, s, s, generator=g)
    motion = torch.randn(b, f, 2, s * 8, s * 8, generator=g) * 3
    return x, torch.tensor([500] * b), text, first, motion


def test_untrained_control_leaves_the_video_unet_unchanged(tiny_video_unet):
    from shanshui.models.control import build_control

    x, t, text, first, motion = _inputs(tiny_video_unet)
    with torch.no_grad():
        ref = tiny_video_unet(x, t, encoder_hidden_states=text).sample       # diffusers' own processors
        model = build_control(tiny_video_unet)
        out_none = model(x, t, text)
        out_all = model(x, t, text, first_latent=first, motion=motion, strength=torch.tensor([1.5]))
    torch.testing.assert_close(out_none, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_all, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("part", ["first_frame", "value_proj", "strength.linear_2"])
def test_each_trained_part_changes_the_output(tiny_video_unet, part):
    """Once its zero-initialised layer is non-zero, each condition acts (and only when it is given)."""
    from shanshui.models.control import build_control

    model = build_control(tiny_video_unet)
    x, t, text, first, motion = _inputs(tiny_video_unet)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.control.named_parameters():
            if name.startswith(part):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        plain = model(x, t, text)
        cond = model(x, t, text, first_latent=first, motion=motion, strength=torch.tensor([1.5]))
        without = {"first_frame": dict(motion=motion, strength=torch.tensor([1.5])),
                   "value_proj": dict(first_latent=first, strength=torch.tensor([1.5])),
                   "strength.linear_2": dict(first_latent=first, motion=motion)}[part]
        dropped = model(x, t, text, **without)
    assert (cond - plain).abs().max() > 1e-4
    if part != "value_proj":  # with no field the encoder still sees (zero field, flag 0): not a no-op there
        torch.testing.assert_close(dropped, plain, rtol=0, atol=1e-6)


def test_motion_keep_false_equals_no_field_and_cfg_rows_repeat(tiny_video_unet):
    from shanshui.models.control import build_control

    model = build_control(tiny_video_unet)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.control.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        x, t, text, first, motion = _inputs(tiny_video_unet)
        none = model(x, t, text, first_latent=first)
        dropped = model(x, t, text, first_latent=first, motion=motion, motion_keep=torch.tensor([False]))
        torch.testing.assert_close(dropped, none, rtol=0, atol=1e-6)
        still = model(x, t, text, first_latent=first, motion=torch.zeros_like(motion))   # "stay still": flag on
        assert (still - none).abs().max() > 1e-5
        one = model(x, t, text, first_latent=first, motion=motion, strength=torch.tensor([0.7]))
        two = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, text]), first_latent=first,
                    motion=motion, strength=torch.tensor([0.7]))
    torch.testing.assert_close(two[1:], one, rtol=0, atol=1e-5)


def test_strength_embedding_is_the_hand_computation():
    from shanshui.models.control import StrengthEmbedding

    emb = StrengthEmbedding(dim=4, temb_dim=3, scale=100.0)
    with torch.no_grad():
        emb.linear_1.weight.copy_(torch.arange(12.0).reshape(3, 4) / 10)
        emb.linear_1.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        emb.linear_2.weight.copy_(torch.eye(3))
        emb.linear_2.bias.zero_()
    s = 1.5
    # sinusoid: half = 2 frequencies 10000^(-0/2) = 1 and 10000^(-1/2) = 0.01, argument s·100
    sin_in = [math.cos(150.0), math.cos(1.5), math.sin(150.0), math.sin(1.5)]
    hidden = []
    for row in range(3):
        a = sum((row * 4 + j) / 10 * sin_in[j] for j in range(4)) + [0.1, -0.2, 0.3][row]
        hidden.append(a / (1 + math.exp(-a)))                                   # SiLU
    got = emb(torch.tensor([s]))[0].tolist()
    assert got == pytest.approx(hidden, abs=1e-5)


def test_refiner_starts_as_identity_and_handles_odd_sizes():
    from shanshui.models.control import FlowRefiner

    t = FlowRefiner((8, 16, 32))
    field = torch.randn(2, 2, 30, 22)
    out = t(field, torch.rand(2, 3, 30, 22) * 2 - 1)
    assert out.shape == field.shape
    torch.testing.assert_close(out, field, rtol=0, atol=0)


def test_refinement_pairs_follow_eq_5_to_7():
    """Arrows start on valid moving pixels and span (F−1)·v there; the field is the independent sum of
    Gaussians exp(−d²/σ²)·v_i thresholded at R·max|v_i| (px/frame)."""
    from shanshui.control.arrows import default_sigma
    from shanshui.control.refine import training_pair

    h, w, frames = 24, 32, 5
    flow = np.zeros((h, w, 2), np.float32)
    flow[4:12, 6:20] = (1.25, -0.5)
    flow[15:22, 20:30] = (-0.3, 0.8)
    valid = np.ones((h, w), bool)
    valid[4:6] = False
    rng = np.random.default_rng(3)
    field, arrows = training_pair(flow, valid, rng, max_arrows=4, frames=frames)
    assert 1 <= len(arrows) <= 4
    sigma = default_sigma(h, w)
    ref = np.zeros((h, w, 2))
    vs = []
    for a in arrows:
        x, y = int(a.x0), int(a.y0)
        assert a.x0 == x and a.y0 == y and valid[y, x] and np.linalg.norm(flow[y, x]) > 0
        v = np.array([a.x1 - a.x0, a.y1 - a.y0]) / (frames - 1)
        np.testing.assert_allclose(v, flow[y, x], atol=1e-6)
        vs.append(v)
        for yy in range(h):
            for xx in range(w):
                ref[yy, xx] += math.exp(-((yy - y) ** 2 + (xx - x) ** 2) / sigma**2) * v
    r = 0.05 * max(np.linalg.norm(v) for v in vs)
    ref[np.linalg.norm(ref, axis=-1) <= r] = 0
    np.testing.assert_allclose(field, ref, atol=1e-5)
    # nothing moving -> no arrows, zero field
    field0, arrows0 = training_pair(np.zeros((h, w, 2), np.float32), None, rng, 4, frames)
    assert arrows0 == [] and not field0.any()


def test_save_load_roundtrip_and_strict_loading(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    from shanshui.models.control import CONTROL_META_KEY, build_control, load_control, save_control
    from shanshui.models.motion import build_video_unet

    video = build_video_unet(copy.deepcopy(tiny["unet"]), tiny["motion_config"])
    model = build_control(video)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in list(model.control.parameters()) + [p for n, p in video.named_parameters() if "motion_modules" in n]:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    save_control(model, tmp_path / "m", tiny["motion_config"])
    loaded = load_control(tmp_path / "m", copy.deepcopy(tiny["unet"]))
    x, t, text, first, motion = _inputs(video)
    with torch.no_grad():
        a = model(x, t, text, first_latent=first, motion=motion, strength=torch.tensor([1.0]))
        b = loaded(x, t, text, first_latent=first, motion=motion, strength=torch.tensor([1.0]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    path = tmp_path / "m" / "control.safetensors"
    meta = {CONTROL_META_KEY: json.loads((tmp_path / "m" / "control.json").read_text()) and
            (tmp_path / "m" / "control.json").read_text()}
    state = load_file(str(path))
    for change, needle in ((lambda s: s.pop("strength.linear_2.weight"), "missing key 'strength.linear_2.weight'"),
                           (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "unexpected key 'extra.weight'"),
                           (lambda s: s.__setitem__("first_frame.bias", torch.zeros(3)), "'first_frame.bias' has shape")):
        bad = dict(state)
        change(bad)
        save_file(bad, str(path), metadata=meta)
        with pytest.raises(ShanshuiError, match=needle.replace("(", r"\(")):
            load_control(tmp_path / "m", copy.deepcopy(tiny["unet"]))


def test_scheduler_follows_the_model_folder(tmp_path):
    from shanshui.schedulers import make_model_scheduler, predicted_noise, training_target

    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "DDIMScheduler", "beta_start": 0.001, "beta_end": 0.02, "beta_schedule": "linear",
        "num_train_timesteps": 1000, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "trailing"}))
    s = make_model_scheduler(tmp_path, "ddpm")
    assert s.config.prediction_type == "v_prediction"
    assert float(s.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-6)               # zero terminal SNR
    z0, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    t = torch.tensor([10, 600])
    a = s.alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    v = training_target(s, z0, eps, t)
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * z0)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(predicted_noise(s, v[1:], zt[1:], 600), eps[1:], atol=1e-5, rtol=0)
    assert make_model_scheduler(tmp_path / "nothing", "ddim").config.prediction_type == "epsilon"


# ------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def flow_clips(tmp_path_factory) -> Path:
    from shanshui.data.procedural_dataset import write_dataset

    root = tmp_path_factory.mktemp("flowclips")
    write_dataset(root, n=4, seed=0, size=32, frames=6, fmt="frames", workers=1, progress=False)
    return root


def control_config(root: Path, out: Path, **sections):
    from shanshui.training.control_config import control_config_from_dict

    data = dict(output_dir=str(out), log_every=1, cpu=True, model=dict(preset="tiny", refiner_channels=[8, 16]),
                data=dict(root=str(root), frames=4, size=32, max_arrows=3), optim=dict(lr=1e-3, batch_size=2),
                schedule=dict(max_steps=4, warmup_steps=0), checkpoint=dict(every=2, total_limit=0))
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return control_config_from_dict(data)


def test_dataset_gives_clips_flow_and_a_refinement_pair(flow_clips):
    from shanshui.data.control_dataset import ControlClipDataset

    ds = ControlClipDataset(flow_clips, frames=4, size=32, seed=0)
    s = ds[1]
    raw = np.load(flow_clips / "flow" / "000001.npz")["flow"].astype(np.float32)
    assert s["pixel_values"].shape == (4, 3, 32, 32) and s["flow"].shape == (3, 32, 32, 2)
    np.testing.assert_array_equal(s["flow"].numpy(), raw[s["start"] : s["start"] + 3])
    assert s["refine_input"].shape == (32, 32, 2)
    again = ds[1]
    assert again["start"] == s["start"] and torch.equal(again["refine_input"], s["refine_input"])
    half = ControlClipDataset(flow_clips, frames=4, size=16, seed=0)[1]               # resized: flow scaled
    assert half["flow"].abs().max() == pytest.approx(float(s["flow"].abs().max()) / 2, rel=0.3)


def test_config_errors_name_the_value(flow_clips, tmp_path):
    with pytest.raises(ShanshuiError, match="model.first_frame='left' must be one of concat, none"):
        control_config(flow_clips, tmp_path, model=dict(first_frame="left"))
    with pytest.raises(ShanshuiError, match="max_minutes=-1.0 must be >= 0"):
        control_config(flow_clips, tmp_path, max_minutes=-1)
    with pytest.raises(ShanshuiError, match="optim.lr=0.0 must be > 0"):
        control_config(flow_clips, tmp_path, optim=dict(lr=0))


def test_train_control_learns_resumes_exactly_and_only_touches_its_parts(flow_clips, tmp_path):
    from safetensors.torch import load_file

    from shanshui.training.checkpoint import list_checkpoints
    from shanshui.training.control_loop import train_control
    from shanshui.training.monitor import read_log

    full = train_control(control_config(flow_clips, tmp_path / "full"), progress=False)
    assert full.step == 4 and [s for s, _ in list_checkpoints(full.output_dir)] == [2, 4]
    rows = read_log(full.output_dir)
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    state = load_file(str(full.final_dir / "control.safetensors"))
    assert state["first_frame.weight"].abs().max() > 0          # zero-initialised, now learned
    assert any(state[k].abs().max() > 0 for k in state if k.startswith("value_proj."))

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(full.output_dir / "checkpoints" / "checkpoint-000002",
                    resumed_dir / "checkpoints" / "checkpoint-000002")
    resumed = train_control(control_config(flow_clips, resumed_dir, checkpoint=dict(every=2, resume="latest")),
                            progress=False)
    for name in ("control.safetensors", "motion_module.safetensors"):
        a, b = load_file(str(full.final_dir / name)), load_file(str(resumed.final_dir / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert [r["loss"] for r in read_log(resumed_dir) if r["step"] in ("3", "4")] == \
           [r["loss"] for r in rows if r["step"] in ("3", "4")]


def test_time_budget_stops_cleanly_with_a_final_save(flow_clips, tmp_path):
    from shanshui.training.checkpoint import list_checkpoints
    from shanshui.training.control_loop import train_control

    res = train_control(control_config(flow_clips, tmp_path / "run", max_minutes=1e-6,
                                       schedule=dict(max_steps=50)), progress=False)
    assert res.step == 1
    assert [s for s, _ in list_checkpoints(res.output_dir)] == [1]
    assert (res.final_dir / "control.safetensors").is_file()


def test_nan_loss_exits_3_and_keeps_the_last_good_checkpoint(flow_clips, tmp_path, monkeypatch, capsys):
    import shanshui.training.control_loop as loop
    from shanshui.cli import main
    from shanshui.training.checkpoint import list_checkpoints

    real = loop.control_step
    calls = {"n": 0}

    def poisoned(batch, models, cfg, generator, net=None):
        calls["n"] += 1
        out = real(batch, models, cfg, generator, net=net)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(loop, "control_step", poisoned)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"output_dir": str(tmp_path / "run"), "cpu": True,
                               "model": {"preset": "tiny", "refiner_channels": [8, 16]},
                               "data": {"root": str(flow_clips), "frames": 4, "size": 32},
                               "optim": {"batch_size": 2}, "schedule": {"max_steps": 5, "warmup_steps": 0},
                               "checkpoint": {"every": 2}}))
    assert main(["train-control", "--config", str(cfg), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "loss became nan at step 3" in err and "checkpoint-000002" in err
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert not (tmp_path / "run" / "final").exists()


def test_bad_config_is_one_line_exit_2(flow_clips, tmp_path, capsys):
    from shanshui.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{preset: tiny}}\ndata: {{root: {flow_clips}, frames: 40}}\n")
    assert main(["train-control", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: data.frames=40 must be in [2, 32]"]


def test_export_into_a_bundle_as_fp16(tiny, tiny_model_files, tmp_path):
    from safetensors.torch import load_file

    from shanshui.models.control import build_control, load_control, save_control
    from shanshui.models.motion import build_video_unet
    from shanshui.training.bundle import export_control

    sd, _ = tiny_model_files
    bundle = tmp_path / "bundle"
    shutil.copytree(sd, bundle)
    model = build_control(build_video_unet(copy.deepcopy(tiny["unet"]), tiny["motion_config"]))
    save_control(model, tmp_path / "ctl", tiny["motion_config"])
    final = export_control(tmp_path / "ctl", bundle)
    assert final == bundle / "i2v"
    assert {v.dtype for v in load_file(str(final / "control.safetensors")).values()} == {torch.float16}
    assert {v.dtype for v in load_file(str(final / "motion_module.safetensors")).values()} == {torch.float16}
    load_control(final, copy.deepcopy(tiny["unet"]))
    with pytest.raises(ShanshuiError, match="over the 0 MiB limit"):
        export_control(tmp_path / "ctl", bundle, max_bytes=1)
    assert (bundle / "i2v" / "control.safetensors").is_file()                   # the old copy survives


def test_heldout_loss_decreases(flow_clips, tmp_path):
    from shanshui.data.procedural_dataset import write_dataset
    from shanshui.training.control_loop import evaluate_control_loss, train_control

    heldout = tmp_path / "heldout"
    write_dataset(heldout, n=2, seed=5, size=32, frames=6, fmt="frames", workers=1, progress=False)
    cfg = control_config(flow_clips, tmp_path / "run", log_every=10, schedule=dict(max_steps=20, warmup_steps=0),
                         checkpoint=dict(every=0), data=dict(text_dropout=0.0, motion_dropout=0.0))
    before = evaluate_control_loss(cfg, None, heldout, clips=2)
    res = train_control(cfg, progress=False)
    after = evaluate_control_loss(cfg, res.final_dir, heldout, clips=2)
    assert after["loss_diff"] < 0.95 * before["loss_diff"]     # T is measured by benchmarks/control.py
