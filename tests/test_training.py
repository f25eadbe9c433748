"""The trainer: config checks, frozen/trainable split, loss decrease, exact resume, atomic checkpoints,
NaN guard, latent cache equivalence, and a two-process run. Tiny components, 32-px synthetic clips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shanshui.errors import ShanshuiError

CAPTIONS = ["mountains in mist", "a boat on the lake", "pines by a waterfall", "red sun over peaks",
            "birds over the river", "rain on the hills"]
SCENES = ["parallax", "mist", "boat", "pan", "flicker", "parallax"]


def _write_clips(root: Path, seeds: range) -> Path:
    from shanshui.flow.testscenes import render_scene
    from shanshui.video_io import write_video

    root.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(seeds):
        write_video(render_scene(SCENES[i % len(SCENES)], size=32, frames=10, seed=i), root / f"clip{k}.gif")
        (root / f"clip{k}.txt").write_text(CAPTIONS[i % len(CAPTIONS)])
    return root


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return _write_clips(tmp_path_factory.mktemp("clips"), range(6))


@pytest.fixture(scope="module")
def heldout_clips(tmp_path_factory) -> Path:
    return _write_clips(tmp_path_factory.mktemp("heldout"), range(20, 22))


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def tiny_config(clips: Path, out: Path, **sections):
    from shanshui.training.config import config_from_dict

    data = dict(output_dir=str(out), log_every=1, model=dict(preset="tiny"),
                data=dict(root=str(clips), frames=4, stride=2, size=32),
                optim=dict(lr=1e-3), schedule=dict(max_steps=4, warmup_steps=0), loss=dict(m=1),
                checkpoint=dict(every=2, total_limit=0))
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return config_from_dict(data)


# ------------------------------------------------------------------------------------------------ config

def test_config_file_overrides_and_defaults(clips, tmp_path):
    from shanshui.training.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(f"output_dir: {tmp_path}/run\nmodel: {{preset: tiny}}\ndata: {{root: {clips}}}\n")
    cfg = load_config(path, ["loss.lambda_con=0", "optim.lr=1e-4", "model.sparse_causal=off",
                             "validation.prompts=[a misty peak]", "loss.positives=window"])
    assert cfg.loss.lambda_con == 0.0 and cfg.optim.lr == 1e-4 and cfg.model.sparse_causal == "off"
    assert cfg.validation.prompts == ["a misty peak"] and cfg.loss.positives == "window"
    # SPEC §1.2 / §1.3 defaults
    assert (cfg.loss.m, cfg.loss.tau, cfg.loss.lambda_diff) == (4, 0.07, 1.0)
    assert (cfg.data.frames, cfg.data.stride, cfg.data.size, cfg.data.text_dropout) == (8, 4, 256, 0.1)


@pytest.mark.parametrize("override, message", [
    ("loss.lamda_con=0", "unknown config key 'loss.lamda_con'"),
    ("loss.tau=0", "loss.tau=0.0 must be > 0"),
    ("loss.m=7", "loss.m=7 leaves no negative frame in a 8-frame clip"),
    ("model.sparse_causal=sideways", "model.sparse_causal='sideways' must be one of temporal, spatial, off"),
    ("data.size=100", "data.size=100 must be a positive multiple of 8"),
    ("optim.lr=fast", "optim.lr='fast' must be a number"),
    ("data.root=/no/such/folder", "data.root '/no/such/folder' is not a folder"),
    ("model.motion_module=/no/mm.safetensors", "model.motion_module '/no/mm.safetensors' does not exist"),
    ("model.base_model=/x", "set exactly one of model.base_model"),
    ("checkpoint.resume=/no/ckpt", "checkpoint.resume '/no/ckpt' is not a checkpoint folder"),
    ("loss", "override 'loss' must look like section.key=value"),
])
def test_config_errors_name_the_value(clips, tmp_path, override, message):
    from shanshui.training.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "model": {"preset": "tiny"}, "data": {"root": str(clips)}}))
    with pytest.raises(ShanshuiError) as err:
        load_config(path, [override])
    assert message in str(err.value)


def test_cli_reports_config_errors_with_exit_code_2(clips, tmp_path, capsys):
    from shanshui.cli import main

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path / "run"), "model": {"preset": "tiny"},
                                "data": {"root": str(clips)}, "optim": {"lr": -1}}))
    assert main(["train", "--config", str(path)]) == 2
    assert "optim.lr=-1.0 must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


# ------------------------------------------------------------------------------------------------ step

def _batch(dataset, idx, collate):
    return collate([dataset[i] for i in idx])


def test_only_motion_modules_and_adapter_learn(clips, tmp_path):
    from shanshui.models.motion import motion_parameters
    from shanshui.training.components import build_models
    from shanshui.training.loop import build_dataset, step_generator
    from shanshui.training.monitor import FrozenGuard
    from shanshui.training.step import training_step

    cfg = tiny_config(clips, tmp_path)
    dataset, collate = build_dataset(cfg)
    models = build_models(cfg.model, seed=0)
    frozen = {n: p.detach().clone() for n, p in models.frozen_parameters()}
    motion_before = [p.detach().clone() for p in motion_parameters(models.unet)]
    adapter_before = [p.detach().clone() for p in models.adapter.parameters()]
    params = models.trainable_parameters()
    guard = FrozenGuard(models.frozen_parameters(), params, params)
    opt = torch.optim.AdamW(params, lr=1e-3)
    for step in range(2):
        out = training_step(_batch(dataset, [step], collate), models, models.noise_scheduler, cfg,
                            step_generator(0, 0, 0, step))
        assert torch.isclose(out["loss"], out["loss_diff"] + 0.07 * out["loss_con"])
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
    guard.verify()
    for name, p in models.frozen_parameters():
        assert torch.equal(p, frozen[name]), name  # bit-identical
    assert sum(not torch.equal(a, b) for a, b in zip(motion_before, motion_parameters(models.unet))) > 0
    assert all(not torch.equal(a, b) for a, b in zip(adapter_before, models.adapter.parameters()))
    # the guard notices a frozen weight that moves
    name, p = models.frozen_parameters()[3]
    with torch.no_grad():
        p.view(-1)[0] += 1e-7
    with pytest.raises(RuntimeError, match="changed during training"):
        guard.verify()


def test_contrastive_off_skips_the_adapter(clips, tmp_path):
    from shanshui.training.components import build_models
    from shanshui.training.loop import build_dataset, step_generator
    from shanshui.training.step import training_step

    cfg = tiny_config(clips, tmp_path, loss=dict(lambda_con=0.0))
    dataset, collate = build_dataset(cfg)
    models = build_models(cfg.model, seed=0)
    out = training_step(_batch(dataset, [0], collate), models, models.noise_scheduler, cfg, step_generator(0, 0, 0, 0))
    out["loss"].backward()
    assert out["loss_con"].item() == 0.0 and torch.equal(out["loss"].detach(), out["loss_diff"])
    assert all(p.grad is None for p in models.adapter.parameters())


def test_cached_and_uncached_steps_give_the_same_loss(clips, tmp_path):
    from shanshui.training.cache import LatentCacheDataset, collate_cached, model_identity, write_latent_cache
    from shanshui.training.components import build_models
    from shanshui.training.loop import build_dataset, step_generator
    from shanshui.training.step import training_step

    cfg = tiny_config(clips, tmp_path / "run", data=dict(text_dropout=0.5))
    dataset, collate = build_dataset(cfg)
    models = build_models(cfg.model, seed=0)
    cache_dir = write_latent_cache(dataset, models.vae, models.tokenizer, models.text_encoder, tmp_path / "cache",
                                   model_identity(cfg.model), shard_size=2, progress=False)
    cached = LatentCacheDataset(cache_dir)
    assert len(cached) == len(dataset) and len(cached.meta["shards"]) == 3
    dataset.set_epoch(0)
    raw_batch = _batch(dataset, [0, 1, 2, 3], collate)
    cached_batch = collate_cached([cached[i] for i in range(4)], cached.empty_text)
    for seed in range(3):  # different draws: some captions dropped, some kept
        raw = training_step(raw_batch, models, models.noise_scheduler, cfg, step_generator(seed, 0, 0, 0))
        cac = training_step(cached_batch, models, models.noise_scheduler, cfg, step_generator(seed, 0, 0, 0))
        for key in ("loss", "loss_diff", "loss_con"):
            torch.testing.assert_close(cac[key], raw[key], rtol=1e-5, atol=1e-6)

    # the trainer reads the cache, and refuses one made for other clips
    from shanshui.training.loop import train

    cfg_cached = tiny_config(clips, tmp_path / "run-cached", schedule=dict(max_steps=2),
                             data=dict(root=None, cache=str(cache_dir)))
    assert train(cfg_cached, progress=False).step == 2
    bad = tiny_config(clips, tmp_path / "run-bad", data=dict(root=None, cache=str(cache_dir), stride=3))
    with pytest.raises(ShanshuiError, match="holds stride=2 but data.stride=3"):
        train(bad, progress=False)


# ------------------------------------------------------------------------------------------------ runs

def test_loss_decreases_on_a_heldout_batch(clips, heldout_clips, tmp_path):
    from shanshui.training.components import build_models, load_trained_weights
    from shanshui.training.loop import build_dataset, evaluate_loss, train

    cfg = tiny_config(clips, tmp_path / "run", optim=dict(lr=3e-3), schedule=dict(max_steps=40),
                      data=dict(text_dropout=0.0), checkpoint=dict(every=0), loss=dict(lambda_con=0.07))
    held_cfg = tiny_config(heldout_clips, tmp_path / "held", data=dict(random_start=False))
    held, collate = build_dataset(held_cfg)
    batches = [_batch(held, [0, 1], collate)] * 8  # same clips, 8 fixed (t, ε) draws
    models = build_models(cfg.model, seed=cfg.seed)
    before = evaluate_loss(models, cfg, batches)
    result = train(cfg, progress=False)
    load_trained_weights(models, result.final_dir)
    after = evaluate_loss(models, cfg, batches)
    print(f"held-out loss before {before:.4f} after {after:.4f}")
    assert after < before * 0.97


def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_reproduces_the_uninterrupted_run_exactly(clips, tmp_path):
    """4 steps straight vs. 2 steps, checkpoint, resume for 2 more: identical weights (tolerance 0)."""
    from shanshui.training.checkpoint import list_checkpoints
    from shanshui.training.loop import train
    from shanshui.training.monitor import read_log

    extra = dict(optim=dict(gradient_accumulation_steps=2), ema=dict(enabled=True, decay=0.9),
                 schedule=dict(max_steps=4, lr_scheduler="linear", warmup_steps=1))
    full = train(tiny_config(clips, tmp_path / "full", **extra), progress=False)
    assert [s for s, _ in list_checkpoints(full.output_dir)] == [2, 4]

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(full.output_dir / "checkpoints" / "checkpoint-000002",
                    resumed_dir / "checkpoints" / "checkpoint-000002")
    resumed = train(tiny_config(clips, resumed_dir, checkpoint=dict(every=2, total_limit=0, resume="latest"), **extra),
                    progress=False)
    assert resumed.step == 4
    for name in ("motion_module.safetensors", "noise_adapter.safetensors", "ema/motion_module.safetensors"):
        a, b = _read(full.final_dir / name), _read(resumed.final_dir / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    rows_full = {r["step"]: r for r in read_log(full.output_dir)}
    rows_res = {r["step"]: r for r in read_log(resumed_dir)}
    for step in ("3", "4"):
        assert rows_res[step]["loss"] == rows_full[step]["loss"]
        assert rows_res[step]["samples"] == rows_full[step]["samples"]  # same clips, epoch 1 included


def test_interrupted_save_keeps_the_latest_good_checkpoint(tmp_path):
    from shanshui.training.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint

    class FakeAccelerator:
        is_main_process = True
        fail = False

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            (Path(folder) / "optimizer.bin").write_bytes(b"x" * 100)
            if self.fail:
                raise KeyboardInterrupt  # killed mid-save

    acc = FakeAccelerator()
    for step in (1, 2, 3):
        save_checkpoint(acc, tmp_path, step, {"step": step}, "cfg: 1\n", total_limit=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]  # pruned to the limit
    acc.fail = True
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(acc, tmp_path, 4, {"step": 4}, "cfg: 1\n", total_limit=2)
    assert latest_checkpoint(tmp_path).name == "checkpoint-000003"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]  # nothing pruned by the failed save
    assert (tmp_path / "checkpoints" / ".checkpoint-000004.tmp").exists()  # hidden, ignored
    acc.fail = False
    save_checkpoint(acc, tmp_path, 4, {"step": 4}, "cfg: 1\n", total_limit=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-000003", "checkpoint-000004"]


def test_nan_loss_stops_with_a_clear_message_and_exit_code_3(clips, tmp_path, monkeypatch, capsys):
    import shanshui.training.loop as loop
    from shanshui.cli import main
    from shanshui.training.checkpoint import list_checkpoints
    from shanshui.training.step import training_step

    calls = {"n": 0}

    def poisoned(batch, models, scheduler, cfg, generator, net=None):
        calls["n"] += 1
        out = training_step(batch, models, scheduler, cfg, generator, net=net)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(loop, "training_step", poisoned)
    path = tmp_path / "c.json"
    out_dir = tmp_path / "run"
    path.write_text(json.dumps({"output_dir": str(out_dir), "model": {"preset": "tiny"},
                                "data": {"root": str(clips), "frames": 4, "stride": 2, "size": 32},
                                "loss": {"m": 1}, "schedule": {"max_steps": 5, "warmup_steps": 0},
                                "checkpoint": {"every": 2}}))
    assert main(["train", "--config", str(path), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "loss became nan at step 3" in err and "checkpoint-000002" in err
    assert [s for s, _ in list_checkpoints(out_dir)] == [2]
    assert not (out_dir / "final").exists()


def test_two_processes_shard_the_data_and_write_one_checkpoint(clips, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine = two gloo processes."""
    out_dir = tmp_path / "mp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "shanshui.cli", "train", "--config", str(Path(__file__).parents[1] / "configs" / "tiny_cpu.yaml"),
           f"data.root={clips}", f"output_dir={out_dir}", "schedule.max_steps=3", "schedule.warmup_steps=0",
           "checkpoint.every=3", "log_every=1", "validation.prompts=[]", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: 3 steps") == 1  # only the main process reports
    from shanshui.training.checkpoint import list_checkpoints
    from shanshui.training.monitor import read_log

    rows = read_log(out_dir)
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    seen = [int(i) for r in rows for i in r["samples"].split()]
    assert len(seen) == 6 and sorted(seen) == list(range(6))  # one epoch, every clip once, 2 per step
    [(step, folder)] = list_checkpoints(out_dir)
    assert step == 3 and {p.name for p in folder.glob("random_states_*.pkl")} == {"random_states_0.pkl",
                                                                                "random_states_1.pkl"}
    assert not [p for p in (out_dir / "checkpoints").iterdir() if p.name.startswith(".")]


def test_training_runs_end_to_end_in_bf16_mixed_precision(clips, tmp_path):
    from safetensors.torch import load_file

    from shanshui.training.loop import train
    from shanshui.training.monitor import read_log

    result = train(tiny_config(clips, tmp_path / "bf16", mixed_precision="bf16", schedule=dict(max_steps=2),
                               checkpoint=dict(every=0)), progress=False)
    assert result.step == 2
    rows = read_log(result.output_dir)
    assert rows and all(np.isfinite(float(r["loss"])) for r in rows)
    weights = load_file(str(result.final_dir / "motion_module.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # trainable weights are kept in fp32


def test_fp16_mixed_precision_is_refused_on_a_cpu(clips, tmp_path, capsys):
    from shanshui.cli import main
    from shanshui.training.loop import train

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ShanshuiError, match="mixed_precision='fp16' needs a GPU"):
        train(tiny_config(clips, tmp_path / "fp16", mixed_precision="fp16"), progress=False)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path / "run"), "model": {"preset": "tiny"},
                                "data": {"root": str(clips)}}))
    assert main(["train", "--config", str(path), "--dtype", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mixed_precision='fp16' needs a GPU") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
