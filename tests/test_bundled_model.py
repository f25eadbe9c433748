"""Stage-1 training steps, the stage-1 config, and the model bundled with the package."""

from __future__ import annotations

import json

import pytest
import torch

from shanshui.errors import ShanshuiError
from shanshui.pipelines.loading import BUNDLED_DIR, BUNDLED_MOTION, bundled_model_available
from shanshui.training.image_stage import (VAEPhaseConfig, caption_corpus, diffusion_step_loss, load_image_config,
                                           vae_loss)

DEMO_PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."
needs_bundle = pytest.mark.skipif(not bundled_model_available(), reason="no bundled model in this checkout")


def _ink_images(n: int, size: int) -> torch.Tensor:
    """Paper-coloured images with a dark ridge: a stand-in for procedural frames, in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    y = torch.linspace(0, 1, size)[:, None]
    x = torch.linspace(0, 1, size)[None, :]
    out = []
    for _ in range(n):
        a, b = torch.rand(2, generator=g)
        ridge = (y > 0.4 + 0.2 * a * torch.sin(6 * x + 3 * b)).float()
        img = torch.stack([0.9 - 0.8 * ridge, 0.88 - 0.8 * ridge, 0.8 - 0.7 * ridge])
        out.append(img * 2 - 1)
    return torch.stack(out)


def test_vae_step_reduces_reconstruction_loss(tiny):
    vae = tiny["vae"].train()
    x = _ink_images(4, 32)
    cfg = VAEPhaseConfig()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out = vae_loss(vae, x, cfg, torch.Generator().manual_seed(1))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["l1"] + out["mse"]))
    assert losses[-1] < 0.7 * losses[0]
    assert set(out) == {"loss", "l1", "mse", "edge", "kl"}


def test_diffusion_step_trains_unet_and_text_encoder(tiny):
    unet, text_encoder, tok = tiny["unet"].train(), tiny["text_encoder"].train(), tiny["tokenizer"]
    from shanshui.schedulers import make_scheduler

    sched = make_scheduler("ddpm")
    mean = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    std = torch.full_like(mean, 0.05)
    ids = tok(["red sun", "boat on the lake", "flying birds", "dense fog"], padding="max_length", max_length=77,
              return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    te_before = text_encoder.get_input_embeddings().weight.detach().clone()
    opt = torch.optim.Adam(list(unet.parameters()) + list(text_encoder.parameters()), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = diffusion_step_loss(unet, text_encoder, sched, mean, std, ids, empty, 1.0, 0.0,
                                   torch.Generator().manual_seed(3))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert not torch.equal(te_before, text_encoder.get_input_embeddings().weight)


def test_stage1_config_errors(tmp_path):
    (tmp_path / "metadata.jsonl").write_text("")
    cfg = load_image_config(None, [f"data.root={tmp_path}", "vae.crop=64"])
    assert cfg.vae.crop == 64 and cfg.model.preset == "bundled"
    with pytest.raises(ShanshuiError, match="unknown config key 'vae.crops'"):
        load_image_config(None, [f"data.root={tmp_path}", "vae.crops=64"])
    with pytest.raises(ShanshuiError, match="vae.crop=60"):
        load_image_config(None, [f"data.root={tmp_path}", "vae.crop=60"])
    with pytest.raises(ShanshuiError, match="no metadata.jsonl"):
        load_image_config(None, [f"data.root={tmp_path / 'nope'}"])


def test_caption_corpus_covers_caption_words():
    words = caption_corpus(["Steep peaks, light fog, waterfall."])
    assert {"steep", "peaks", "light", "fog", "waterfall", "mountains"} <= set(words)
    assert "," not in words and "waterfall." not in words


@needs_bundle
def test_bundle_files_are_fp16_and_small():
    from safetensors import safe_open

    files = sorted(BUNDLED_DIR.rglob("*.safetensors"))
    assert {f.parent.name for f in files} >= {"unet", "vae", "text_encoder", "bundled"}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
        assert dtypes == {"F16"}, (f, dtypes)
    total = sum(p.stat().st_size for p in BUNDLED_DIR.rglob("*") if p.is_file())
    assert total <= 60 * 1024 * 1024
    vae_cfg = json.loads((BUNDLED_DIR / "vae" / "config.json").read_text())
    # version 2 (MODEL_CARD.md): a 4x VAE (three blocks, 32x32x4 latents at 128 px), a measured scaling factor
    assert vae_cfg["latent_channels"] == 4 and len(vae_cfg["block_out_channels"]) == 3
    assert vae_cfg["sample_size"] == 128
    assert 0.05 < vae_cfg["scaling_factor"] < 20 and vae_cfg["scaling_factor"] != 0.18215
    assert max(p.stat().st_size for p in files) <= 16 * 1024 * 1024        # every weight file fits the limit
    for cfg in BUNDLED_DIR.glob("*/config.json"):
        assert "_name_or_path" not in json.loads(cfg.read_text()), cfg


@needs_bundle
def test_bundle_ships_its_own_noise_schedule_and_the_pipeline_uses_it():
    from shanshui.pipelines.text_to_video import load_pipeline

    sched = json.loads((BUNDLED_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["prediction_type"], sched["rescale_betas_zero_snr"], sched["timestep_spacing"]) == \
        ("v_prediction", True, "trailing")
    pipe = load_pipeline()
    cfg = pipe.scheduler.config
    assert (cfg.prediction_type, cfg.rescale_betas_zero_snr, cfg.timestep_spacing) == \
        ("v_prediction", True, "trailing")
    assert float(pipe.scheduler.alphas_cumprod[-1]) < 1e-6                  # zero terminal SNR (up to float eps)
    pipe.scheduler.set_timesteps(5)
    assert pipe.scheduler.timesteps.tolist() == [999, 799, 599, 399, 199]   # trailing: starts at the last step


@needs_bundle
def test_bundle_loads_strictly_in_float32():
    from safetensors.torch import load_file

    from shanshui.models.motion_io import load_motion_module
    from shanshui.pipelines.loading import load_base_components

    comps = load_base_components(BUNDLED_DIR)
    for name in ("unet", "vae", "text_encoder"):
        model = comps[name]
        on_disk = {k: v for f in sorted((BUNDLED_DIR / name).glob("*.safetensors")) for k, v in load_file(str(f)).items()}
        expected = model.state_dict()
        # every stored tensor is used and every weight of the model comes from the file
        assert set(on_disk) <= set(expected), name
        missing = [k for k in expected if k not in on_disk and not k.endswith("position_ids")]
        assert missing == [], (name, missing[:3])
        assert all(p.dtype == torch.float32 for p in model.parameters())
        key = next(iter(on_disk))
        assert torch.equal(expected[key], on_disk[key].float())
    state, config = load_motion_module(BUNDLED_MOTION)
    assert config.block_out_channels == tuple(comps["unet"].config.block_out_channels)
    assert all(v.dtype == torch.float16 for v in state.values())


@needs_bundle
def test_demo_prompt_tokens_are_whole_words():
    from shanshui.pipelines.loading import load_base_components

    tok = load_base_components(BUNDLED_DIR)["tokenizer"]
    for word in DEMO_PROMPT.lower().replace(",", " ").replace(".", " ").split():
        assert tok.tokenize(word) == [word + "</w>"], word
    ids = tok(DEMO_PROMPT).input_ids
    assert tok.unk_token_id not in ids[1:-1]


@needs_bundle
def test_bundled_pipeline_is_deterministic():
    from shanshui.pipelines.text_to_video import load_pipeline

    pipe = load_pipeline()
    assert pipe.unet.dtype == torch.float32
    kw = dict(num_frames=4, height=64, width=64, num_inference_steps=2, output_type="np", progress=False)
    a = pipe(DEMO_PROMPT, seed=5, **kw).frames
    b = pipe(DEMO_PROMPT, seed=5, **kw).frames
    c = pipe(DEMO_PROMPT, seed=6, **kw).frames
    assert a.shape == (1, 4, 64, 64, 3)
    assert (a == b).all()
    assert abs(a - c).mean() > 1e-3


# ----------------------------------------------------------------------------------------------- stage-1 runs

def _stage1_config(root, out, **overrides):
    from shanshui.training.image_stage import load_image_config

    base = {"output_dir": str(out), "threads": 1, "log_every": 1, "data.root": str(root), "data.size": 32,
            "data.frames_per_clip": 2, "model.preset": "tiny", "model.tokenizer_merges": 50, "vae.steps": 2,
            "vae.batch_size": 2, "vae.crop": 0, "vae.decoder_batch_size": 2, "unet.steps": 3,
            "unet.batch_size": 2, "unet.warmup_steps": 1, "checkpoint.every_minutes": 1000,
            "checkpoint.total_limit": 0, "checkpoint.resume": "latest", **overrides}
    return load_image_config(None, [f"{k}={v}" for k, v in base.items()])


def _weights(folder, part):
    from safetensors.torch import load_file

    return load_file(str(next((folder / "model" / part).glob("*.safetensors"))))


@pytest.fixture(scope="module")
def tiny_frames_dataset(tmp_path_factory):
    from shanshui.data.procedural import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, n=3, seed=0, size=32, frames=4, fmt="frames", workers=1, progress=False)
    return root


def test_stage1_extensions_number_checkpoints_by_progress_and_keep_the_encoder(tiny_frames_dataset, tmp_path):
    from shanshui.training.checkpoint import list_checkpoints
    from shanshui.training.image_stage import train_image_model

    out = tmp_path / "run"
    train_image_model(_stage1_config(tiny_frames_dataset, out))
    first = {k: _weights(out, k) for k in ("vae", "unet")}
    assert [s for s, _ in list_checkpoints(out)] == [2, 5]           # 2 VAE steps; then 3 UNet steps

    # the same folder asked for 2 more UNet steps and 2 decoder steps continues where it stopped
    train_image_model(_stage1_config(tiny_frames_dataset, out, **{"unet.steps": 5, "vae.decoder_steps": 2}))
    found = list_checkpoints(out)
    assert [s for s, _ in found] == [2, 5, 7, 9]
    state = json.loads((found[-1][1] / "trainer_state.json").read_text())
    assert (state["phase"], state["unet_steps"], state["decoder_steps"], state["progress"]) == ("done", 5, 2, 9)
    vae = _weights(out, "vae")
    for key, value in vae.items():
        if key.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(value, first["vae"][key]), key            # latents stay valid
    assert any(not torch.equal(vae[k], first["vae"][k]) for k in vae if k.startswith("decoder."))
    assert any(not torch.equal(v, first["unet"][k]) for k, v in _weights(out, "unet").items())
    assert (out / "samples" / "decoder_reconstructions.png").is_file()

    # nothing more to do: a rerun only re-exports
    train_image_model(_stage1_config(tiny_frames_dataset, out, **{"unet.steps": 5, "vae.decoder_steps": 2}))
    assert [s for s, _ in list_checkpoints(out)] == [2, 5, 7, 9]


def test_stage1_decoder_steps_added_later_equal_asking_up_front(tiny_frames_dataset, tmp_path):
    from shanshui.training.image_stage import train_image_model

    later, up_front = tmp_path / "later", tmp_path / "up_front"
    train_image_model(_stage1_config(tiny_frames_dataset, later))
    train_image_model(_stage1_config(tiny_frames_dataset, later, **{"vae.decoder_steps": 2}))
    train_image_model(_stage1_config(tiny_frames_dataset, up_front, **{"vae.decoder_steps": 2}))
    for part in ("vae", "unet", "text_encoder"):
        a, b = _weights(later, part), _weights(up_front, part)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{part}.{key}"


def test_stage1_decoder_config_errors(tmp_path):
    (tmp_path / "metadata.jsonl").write_text("")
    for override, word in (("vae.decoder_steps=-1", "vae.decoder_steps"), ("vae.decoder_lr=0", "vae.decoder_lr"),
                           ("vae.decoder_batch_size=0", "vae.decoder_batch_size")):
        with pytest.raises(ShanshuiError, match=word):
            load_image_config(None, [f"data.root={tmp_path}", override])
